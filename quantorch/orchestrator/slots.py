"""Tool slots: the (tool, provider) actions an orchestrator routes between, and their panels.

One place for what training, backtests, evaluation and paper trading all need to know about the
slots: how a configured name (``technical:full``) becomes a priced :class:`ToolSlot` (the tools of
``tools.extra_dirs`` included), how much history the tools need before the first decision, and
the whole-period feature panels a :class:`~quantorch.kernel.executor.PanelExecutor` serves.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from quantorch.errors import UserInputError
from quantorch.orchestrator.dataset import ToolSlot
from quantorch.progress import SILENT, Progress
from quantorch.toolkit.registry import get_tool
from quantorch.toolkit.spec import MarketData

__all__ = ["WARMUP_SESSIONS", "available_slots", "resolve_slots", "slot_panels"]

#: History loaded before a period so every tool has its look-back (252-session windows).
WARMUP_SESSIONS = 300


def resolve_slots(
    names: Sequence[str], extra_dirs: Iterable[str | Path] = ()
) -> list[ToolSlot]:
    """``["technical:basic", ...]`` -> slots with the provider's price and the tool's outputs.

    Tools come from the built-in package and the config's ``tools.extra_dirs``.
    """
    extra = tuple(extra_dirs)
    slots = []
    for name in names:
        tool_name, _, provider_name = name.partition(":")
        tool = get_tool(tool_name, extra)
        try:
            provider = tool.spec.provider(provider_name or None)
        except KeyError:
            valid = ", ".join(p.name for p in tool.spec.providers)
            raise UserInputError(
                f"unknown provider '{provider_name}' for tool {tool_name}; providers: {valid}"
            ) from None
        if provider.online:
            raise UserInputError(
                f"{tool_name}:{provider.name} needs the network and cannot be precomputed for "
                "the compact policy; remove it from orchestrator.tools"
            )
        slots.append(
            ToolSlot(
                tool_name,
                provider.name,
                provider.expected_cost_usd,
                tool.spec.provider_outputs(provider.name),
            )
        )
    return slots


def available_slots(
    slots: Sequence[ToolSlot], extra_dirs: Iterable[str | Path] = ()
) -> list[ToolSlot]:
    """``slots`` as the installed tools describe them now (tools no longer installed left out),
    so a checkpoint can check that what it was trained on still exists unchanged."""
    found = []
    for slot in slots:
        try:
            found += resolve_slots([slot.key], extra_dirs)
        except UserInputError:
            continue
    return found


def slot_panels(
    market: MarketData,
    slots: Sequence[ToolSlot],
    tickers: list[str],
    dates: pd.DatetimeIndex,
    progress: Progress = SILENT,
    extra_dirs: Iterable[str | Path] = (),
) -> tuple[list[tuple[ToolSlot, dict[str, pd.DataFrame]]], dict[str, float]]:
    """Whole panels of every slot's features, and the amortised latency (ms) per value."""
    extra = tuple(extra_dirs)
    out, latency = [], {}
    progress.phase(f"tool panels for {len(tickers)} tickers x {len(dates)} dates", len(slots))
    for slot in slots:
        tool = get_tool(slot.tool, extra)
        provider = tool.spec.provider(slot.provider)
        started = time.perf_counter()
        frames = tool.panel(market, provider, tickers, dates)
        elapsed_ms = (time.perf_counter() - started) * 1000
        latency[slot.key] = elapsed_ms / max(1, len(tickers) * len(dates))
        out.append((slot, {name: frames[name] for name in slot.features}))
        progress.advance(detail=slot.key)
    return out, latency
