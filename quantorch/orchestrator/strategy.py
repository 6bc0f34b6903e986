"""An orchestrator as a backtest strategy: the same decision path as training and paper trading.

At each decision date, for every ticker with a price, the orchestrator routes between the tool
slots of its checkpoint and picks a position; the RiskGuard turns positions into target weights
within the profile's limits. Tool outputs come from whole-panel computations (each value at t
equals a single call on data truncated at t, which the tool panel tests prove); each call the
orchestrator makes is priced and recorded as a ``tool_calls`` row, and each decision as a
``decisions`` row.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from quantorch.data.panel import PricePanel
from quantorch.errors import UserInputError
from quantorch.orchestrator.dataset import DecisionDataset, ToolSlot, build_dataset
from quantorch.orchestrator.env import EnvConfig, observation_names
from quantorch.orchestrator.guard import apply_risk_guard
from quantorch.orchestrator.orchestrators import Orchestrator, decide
from quantorch.orchestrator.policy import PolicyCheckpoint
from quantorch.orchestrator.profiles import TraderProfile
from quantorch.progress import SILENT, Progress
from quantorch.toolkit.spec import MarketData

__all__ = ["OrchestratorStrategy", "DecisionLog", "slot_panels", "DECISION_TIME"]

#: Decisions are taken at the close: 16:00 New York on the decision date.
DECISION_TIME = dt.time(16, 0)


def _decision_timestamp_utc(day: pd.Timestamp) -> dt.datetime:
    local = pd.Timestamp.combine(day.date(), DECISION_TIME).tz_localize("America/New_York")
    return local.tz_convert("UTC").tz_localize(None).to_pydatetime()


def slot_panels(
    market: MarketData,
    slots: Sequence[ToolSlot],
    tickers: list[str],
    dates: pd.DatetimeIndex,
    progress: Progress = SILENT,
) -> tuple[list[tuple[ToolSlot, dict[str, pd.DataFrame]]], dict[str, float]]:
    """Whole panels of every slot's features, and the amortised latency (ms) per value."""
    from quantorch.toolkit.registry import get_tool

    out, latency = [], {}
    progress.phase(f"tool panels for {len(tickers)} tickers x {len(dates)} dates", len(slots))
    for slot in slots:
        tool = get_tool(slot.tool)
        provider = tool.spec.provider(slot.provider)
        started = time.perf_counter()
        frames = tool.panel(market, provider, tickers, dates)
        elapsed_ms = (time.perf_counter() - started) * 1000
        latency[slot.key] = elapsed_ms / max(1, len(tickers) * len(dates))
        out.append((slot, {name: frames[name] for name in slot.features}))
        progress.advance(detail=slot.key)
    return out, latency


@dataclass
class DecisionLog:
    """Decisions and tool calls a strategy pass produced, ready for the store."""

    decisions: list[dict] = field(default_factory=list)
    tool_calls: list[dict] = field(default_factory=list)

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        return pd.DataFrame(self.decisions), pd.DataFrame(self.tool_calls)


@dataclass
class OrchestratorStrategy:
    """Runs an orchestrator under a profile at every decision date (Strategy protocol)."""

    orchestrator: Orchestrator
    profile: TraderProfile
    slots: list[ToolSlot]
    normalisation: dict[str, tuple[list[float], list[float]]] | None
    horizon: int
    market: Callable[[PricePanel], MarketData]
    env_config: EnvConfig
    warmup_sessions: int = 300
    policy: PolicyCheckpoint | None = None
    log: DecisionLog = field(default_factory=DecisionLog)
    #: Shared between strategies over the same data (``quantorch evaluate``): the tool panels
    #: and dataset are computed once.
    cache: dict | None = None
    #: The checkpoint's observation layout, checked before deciding (None: not checked).
    observation_names: list[str] | None = None
    #: Where the tool panels and the decision walk report their progress.
    progress: Progress = SILENT

    @property
    def name(self) -> str:
        return f"{self.orchestrator.name}[{self.profile.name}]"

    def target_weights(self, panel: PricePanel, decision_dates: pd.DatetimeIndex) -> pd.DataFrame:
        tickers = panel.tickers
        key = (
            tuple(s.key for s in self.slots), tuple(tickers), tuple(panel.dates[[0, -1]]),
            tuple(decision_dates), self.horizon, id(self.normalisation),
        )
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is None:
            market = self.market(panel)
            panels, latency = slot_panels(
                market, self.slots, tickers, decision_dates, self.progress
            )
            dataset = build_dataset(
                panel, panels, decision_dates, tickers, self.horizon, normalisation=self.normalisation
            )
            cached = (dataset, {slot.key: frames for slot, frames in panels}, latency)
            if self.cache is not None:
                self.cache[key] = cached
        dataset, raw, latency = cached
        if self.observation_names is not None:
            have = observation_names(dataset, sorted({s.tool for s in dataset.slots}))
            if have != self.observation_names:
                changed = next(
                    (a for a, b in zip(self.observation_names, have, strict=False) if a != b),
                    f"{len(self.observation_names)} vs {len(have)} inputs",
                )
                raise UserInputError(
                    "the checkpoint was trained on another observation layout (first difference: "
                    f"{changed}); retrain it with `quantorch train`"
                )
        prepare = getattr(self.orchestrator, "prepare", None)
        if prepare is not None:  # e.g. the random router matches the policy's cost here
            prepare(dataset, [self.profile], self.env_config)
        return self._walk(panel, decision_dates, dataset, raw, latency)

    def _walk(
        self,
        panel: PricePanel,
        decision_dates: pd.DatetimeIndex,
        dataset: DecisionDataset,
        raw: dict[str, dict[str, pd.DataFrame]],
        latency: dict[str, float],
    ) -> pd.DataFrame:
        tickers = panel.tickers
        col = {t: i for i, t in enumerate(tickers)}
        limits = self.profile.limits
        weights_out = pd.DataFrame(np.nan, index=decision_dates, columns=tickers)
        book = np.zeros(len(tickers))
        equity, peak = 1.0, 1.0
        returns = panel.close.pct_change(fill_method=None).fillna(0.0)
        sessions = panel.close.index
        next_session = dict(zip(sessions[:-1], sessions[1:], strict=True))
        previous_date = None
        row_dates = pd.DatetimeIndex(dataset.dates)
        cooldown_until: pd.Timestamp | None = None
        self.progress.phase(f"{self.name}: deciding", len(decision_dates))
        for date in decision_dates:
            self.progress.advance(detail=str(date.date()))
            if previous_date is not None:  # mark the book to market since the last decision
                window = returns.loc[(returns.index > previous_date) & (returns.index <= date)]
                for day_returns in window.to_numpy():
                    growth = book * day_returns
                    equity *= 1 + growth.sum()
                    book = book * (1 + day_returns) / (1 + growth.sum())
                peak = max(peak, equity)
            previous_date = date
            rows = np.flatnonzero(row_dates == date)
            if len(rows) == 0:
                continue
            idx = np.array([col[t] for t in dataset.tickers[rows]])
            previous = np.clip(book[idx] / limits.max_position, -1, 1)
            batch = decide(
                self.orchestrator, dataset, [self.profile], self.env_config, rows,
                np.zeros(len(rows), dtype=np.int64), previous,
            )
            proposed = book.copy()
            proposed[idx] = batch.position * limits.max_position
            if cooldown_until is not None and date >= cooldown_until:
                cooldown_until, peak = None, equity  # the kill switch re-arms from here
            drawdown = -1.0 if cooldown_until is not None else equity / peak - 1
            guard = apply_risk_guard(proposed, book, limits, drawdown=drawdown)
            if guard.killed and cooldown_until is None:
                position = sessions.get_loc(date) + limits.kill_cooldown_sessions
                cooldown_until = sessions[min(position, len(sessions) - 1)]
            book = guard.weights
            weights_out.loc[date] = book
            self._record(date, next_session.get(date), rows, idx, batch, guard, dataset, raw, latency)
        return weights_out

    def _record(self, date, fill_date, rows, idx, batch, guard, dataset, raw, latency) -> None:
        asof = _decision_timestamp_utc(date)
        for j, row in enumerate(rows):
            ticker = str(dataset.tickers[row])
            called = [s for k, s in enumerate(dataset.slots) if batch.called[j, k]]
            decision_id = len(self.log.decisions)
            reward = batch.terms.get("total", np.full(len(rows), np.nan))[j]
            known = math.isfinite(dataset.forward_return[row])
            self.log.decisions.append({
                "decision_id": decision_id,
                "orchestrator": self.orchestrator.name,
                "profile": self.profile.name,
                "ticker": ticker,
                "decision_date": date.date(),
                "fill_date": fill_date.date() if fill_date is not None else None,
                "horizon": self.horizon,
                "tools_called": [s.key for s in called],
                "n_calls": len(called),
                "tool_cost_usd": float(batch.spent[j]),
                "proposed_position": float(batch.position[j]),
                "target_weight": float(guard.weights[idx[j]]),
                "guard_note": guard.notes[idx[j]] or None,
                "rationale": None,
                "reward": float(reward) if known else None,
                "forward_return": float(dataset.forward_return[row]) if known else float("nan"),
            })
            for slot in called:
                outputs = {}
                for feature in slot.features:
                    value = raw[slot.key][feature].at[date, ticker]
                    outputs[feature] = float(value) if np.isfinite(value) else None
                self.log.tool_calls.append({
                    "tool": slot.tool,
                    "provider": slot.provider,
                    "ticker": ticker,
                    "as_of": asof,
                    "arguments": json.dumps({}),
                    "outputs": json.dumps(outputs),
                    "summary": None,
                    "coverage": any(v is not None for v in outputs.values()),
                    "cost_usd": slot.price_usd,
                    "latency_ms": latency.get(slot.key, 0.0),
                    "cache_hit": False,
                    "error": None,
                    "decision_id": decision_id,
                })
