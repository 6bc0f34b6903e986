"""Progress reporting from the core to whoever drives it (the CLI, a test, a scheduler).

Long work is a sequence of *phases*; a phase may have a known number of steps. The core calls
:meth:`Progress.phase` when a phase starts and :meth:`Progress.advance` after each step; the CLI
turns that into a progress bar with counts and an ETA, a test can record it, and library use
passes nothing (:data:`SILENT`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Progress", "SILENT", "Recorder"]


class Progress(Protocol):
    """Receives the phases and steps of long work."""

    def phase(self, description: str, total: int | None = None) -> None:
        """A new phase starts: ``total`` steps when known (None: an unknown amount)."""

    def advance(self, steps: int = 1, detail: str | None = None) -> None:
        """``steps`` more steps of the current phase are done; ``detail`` says which."""


class _Silent:
    def phase(self, description: str, total: int | None = None) -> None:
        return None

    def advance(self, steps: int = 1, detail: str | None = None) -> None:
        return None


#: A progress sink that ignores everything.
SILENT: Progress = _Silent()


class Recorder:
    """Keeps every phase with its total and the steps reported (for tests)."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, int | None]] = []
        self.steps: list[int] = []

    def phase(self, description: str, total: int | None = None) -> None:
        self.phases.append((description, total))
        self.steps.append(0)

    def advance(self, steps: int = 1, detail: str | None = None) -> None:
        if self.steps:
            self.steps[-1] += steps
