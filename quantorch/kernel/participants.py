"""Who decides in a backtest: an orchestrator or a rule strategy, both through the kernel.

A participant prepares what it needs for a period once (a rule strategy's weights; an
orchestrator's decision points, its tool executor and, for the random router, its cost
calibration) and then answers :func:`~quantorch.kernel.step.decision_step` for each decision
date of the walk. Either way the RiskGuard of the trader profile guards the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

from quantorch.data.panel import PricePanel
from quantorch.errors import UserInputError
from quantorch.kernel.book import BookState
from quantorch.kernel.executor import PanelExecutor, RunnerExecutor, ToolExecutor
from quantorch.kernel.step import RoutingSetup, RuleWeights, StepResult, decision_step, session_rows
from quantorch.orchestrator.dataset import DecisionDataset, build_dataset, decision_points
from quantorch.orchestrator.env import observation_names
from quantorch.orchestrator.profiles import TraderProfile
from quantorch.orchestrator.slots import WARMUP_SESSIONS
from quantorch.progress import SILENT, Progress
from quantorch.store import Store
from quantorch.strategies import Strategy
from quantorch.toolkit.spec import MarketData

__all__ = ["OrchestratorParticipant", "Participant", "RuleParticipant"]


class Participant(Protocol):
    """The decider of a backtest (see the module docstring)."""

    name: str
    warmup_sessions: int
    profile: TraderProfile

    def prepare(self, panel: PricePanel, decision_dates: pd.DatetimeIndex,
                progress: Progress = SILENT) -> None: ...

    def step(self, book: BookState, session: pd.Timestamp, first_decision_id: int) -> StepResult:
        ...

    def close(self) -> None: ...


@dataclass
class RuleParticipant:
    """A rule strategy's target weights, guarded by the profile's RiskGuard."""

    strategy: Strategy
    profile: TraderProfile
    weights: RuleWeights | None = None
    sessions: pd.DatetimeIndex | None = None

    @property
    def name(self) -> str:
        return self.strategy.name

    @property
    def warmup_sessions(self) -> int:
        return self.strategy.warmup_sessions

    def prepare(self, panel, decision_dates, progress=SILENT) -> None:
        progress.phase(f"{self.name}: target weights for {len(decision_dates)} decision dates")
        self.weights = RuleWeights(self.name, self.strategy.target_weights(panel, decision_dates))
        self.sessions = pd.DatetimeIndex(panel.dates)

    def step(self, book, session, first_decision_id) -> StepResult:
        return decision_step(book, session, None, self.profile, self.weights, None,
                             first_decision_id=first_decision_id, sessions=self.sessions)

    def close(self) -> None:
        return None


@dataclass
class OrchestratorParticipant:
    """A routing orchestrator under a profile, its tool calls answered by an executor.

    ``tool_calls`` is ``panel`` (whole-period panels, computed once) or ``live`` (real calls
    through the ToolRunner at each decision time, cached in the store).
    """

    setup: RoutingSetup
    profile: TraderProfile
    market: Callable[[PricePanel], MarketData]
    tool_calls: str = "panel"
    store: Store | None = None
    timeout_s: float | None = 30.0
    extra_dirs: tuple[str | Path, ...] = ()
    #: The checkpoint's observation layout, checked before deciding (None: not checked).
    expected_observation: list[str] | None = None
    #: Shared between participants over the same data (``quantorch evaluate``): panels and
    #: decision points are computed once.
    cache: dict | None = None
    warmup_sessions: int = WARMUP_SESSIONS
    executor: ToolExecutor | None = field(default=None, init=False)
    points: DecisionDataset | None = field(default=None, init=False)
    sessions: pd.DatetimeIndex | None = field(default=None, init=False)
    _runner: object | None = field(default=None, init=False)

    @property
    def name(self) -> str:
        return f"{self.setup.orchestrator.name}[{self.profile.name}]"

    def prepare(self, panel, decision_dates, progress=SILENT) -> None:
        tickers = list(panel.tickers)
        setup = self.setup
        self.sessions = pd.DatetimeIndex(panel.dates)
        key = (tuple(s.key for s in setup.slots), tuple(tickers), tuple(panel.dates[[0, -1]]),
               tuple(decision_dates), setup.horizon, id(setup.normalisation))
        shared = self.cache.get(key) if self.cache is not None else None
        if shared is None:
            market = self.market(panel)
            points = decision_points(panel, decision_dates, tickers, setup.horizon,
                                     setup.slots, setup.normalisation)
            shared = {"market": market, "points": points}
            if self.cache is not None:
                self.cache[key] = shared
        self.points = shared["points"]
        self._check_layout()
        needs_panels = self.tool_calls == "panel" or hasattr(setup.orchestrator, "prepare")
        if needs_panels and "panels" not in shared:
            shared["panels"] = PanelExecutor.build(
                shared["market"], setup.slots, tickers, decision_dates, progress=progress,
                extra_dirs=self.extra_dirs,
            )
        if self.tool_calls == "panel":
            self.executor = shared["panels"]
        elif self.tool_calls == "live":
            from quantorch.toolkit.runner import ToolRunner

            self._runner = ToolRunner(self.store, timeout_s=self.timeout_s,
                                      extra_dirs=self.extra_dirs, log=False)
            self.executor = RunnerExecutor(self._runner, shared["market"])
        else:
            raise UserInputError(f"unknown --tool-calls '{self.tool_calls}': use panel or live")
        prepare = getattr(setup.orchestrator, "prepare", None)
        if prepare is not None:  # the random router calibrates its spend on these points
            if "calibration" not in shared:
                panels = shared["panels"]
                shared["calibration"] = build_dataset(
                    panel, [(s, panels.panels[s.key]) for s in setup.slots], decision_dates,
                    tickers, setup.horizon, normalisation=setup.normalisation,
                    extra_dirs=self.extra_dirs,
                )
            prepare(shared["calibration"], [self.profile], setup.env_config)

    def _check_layout(self) -> None:
        if self.expected_observation is None:
            return
        have = observation_names(self.points, sorted({s.tool for s in self.setup.slots}))
        if have != self.expected_observation:
            changed = next(
                (a for a, b in zip(self.expected_observation, have, strict=False) if a != b),
                f"{len(self.expected_observation)} vs {len(have)} inputs",
            )
            raise UserInputError(
                "the checkpoint was trained on another observation layout (first difference: "
                f"{changed}); retrain it with `quantorch train`"
            )

    def step(self, book, session, first_decision_id) -> StepResult:
        rows = session_rows(self.points, session)
        return decision_step(book, session, rows, self.profile, self.setup, self.executor,
                             first_decision_id=first_decision_id, sessions=self.sessions)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()

