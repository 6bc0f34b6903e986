"""The tool-executor port: how an orchestrator's tool calls are answered.

An orchestrator decides *which* slot (tool, provider) to call for which tickers; an executor
answers with :class:`~quantorch.toolkit.spec.ToolResult` s, the same type whichever way:

- :class:`PanelExecutor` reads whole-period panels computed once (fast: training, backtests,
  evaluation). Each value at (session, ticker) equals a single call on data truncated at that
  session's close (the tool panel and poisoned-future tests prove it per tool).
- :class:`RunnerExecutor` makes real calls through the :class:`~quantorch.toolkit.runner.ToolRunner`:
  the asof cut, argument checks, the timeout, the cache, real arguments and latency (paper
  trading, the LLM orchestrator, ``quantorch backtest --tool-calls live``).

The two give the same features and the same coverage for the same (ticker, session); a test
holds them to it. Coverage is the tool's own rule (:func:`~quantorch.toolkit.spec.covered`),
and a call without it costs nothing (:func:`~quantorch.toolkit.spec.charged_cost`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from quantorch.data.calendar import decision_time
from quantorch.orchestrator.dataset import ToolSlot, coverage_of
from quantorch.orchestrator.slots import slot_panels
from quantorch.progress import SILENT, Progress
from quantorch.toolkit.runner import ToolRunner
from quantorch.toolkit.spec import MarketData, ToolRequest, ToolResult, charged_cost

__all__ = ["EXECUTORS", "PanelExecutor", "RunnerExecutor", "ToolExecutor", "coverage"]

#: Names of the executors, as ``--tool-calls`` and ``tool_calls.executor`` spell them.
EXECUTORS = ("panel", "live")


class ToolExecutor(Protocol):
    """Answers one slot's calls for some tickers at one session's decision time."""

    name: str

    def call(self, slot: ToolSlot, tickers: Sequence[str], session: pd.Timestamp) -> list[ToolResult]:
        """One result per ticker, in order."""
        ...


def coverage(result: ToolResult, features: Sequence[str]) -> bool:
    """Whether a call had data: the result says so (by its tool's own rule, which the decision
    dataset's ``slot_coverage`` applies too) and one of the slot's features is a number."""
    return bool(result.coverage) and any(
        np.isfinite(result.features.get(name, np.nan)) for name in features
    )


class PanelExecutor:
    """Tool results from whole-period panels (one computation per slot for all sessions)."""

    name = "panel"

    def __init__(
        self,
        panels: Mapping[str, Mapping[str, pd.DataFrame]],
        latency_ms: Mapping[str, float] | None = None,
        extra_dirs: Iterable[str | Path] = (),
    ) -> None:
        self.panels = {key: dict(frames) for key, frames in panels.items()}
        self.latency_ms = dict(latency_ms or {})
        self.extra_dirs = tuple(extra_dirs)  # where a plug-in tool's coverage rule lives

    @classmethod
    def build(
        cls,
        market: MarketData,
        slots: Sequence[ToolSlot],
        tickers: Sequence[str],
        dates: pd.DatetimeIndex,
        *,
        progress: Progress = SILENT,
        extra_dirs: Iterable[str | Path] = (),
    ) -> PanelExecutor:
        panels, latency = slot_panels(market, list(slots), list(tickers), pd.DatetimeIndex(dates),
                                      progress, extra_dirs)
        return cls({slot.key: frames for slot, frames in panels}, latency, extra_dirs)

    def values(self, slot: ToolSlot, tickers: Sequence[str], session: pd.Timestamp) -> np.ndarray:
        """(len(tickers), len(slot.features)) raw feature values at the session's close."""
        frames = self.panels[slot.key]
        columns = []
        for name in slot.features:
            frame = frames[name]
            row = frame.index.get_indexer([pd.Timestamp(session)])[0]
            if row < 0:
                columns.append(np.full(len(tickers), np.nan))
                continue
            cols = frame.columns.get_indexer(list(tickers))
            values = frame.to_numpy(dtype=np.float64)[row]
            columns.append(np.where(cols >= 0, values[np.maximum(cols, 0)], np.nan))
        return np.stack(columns, axis=1) if columns else np.zeros((len(tickers), 0))

    def call(self, slot: ToolSlot, tickers: Sequence[str], session: pd.Timestamp) -> list[ToolResult]:
        asof = decision_time(session)
        values = self.values(slot, tickers, session)
        has_data = coverage_of(slot, values, self.extra_dirs)
        latency = self.latency_ms.get(slot.key, 0.0)
        results = []
        for ticker, row, covered in zip(tickers, values, has_data, strict=True):
            features = {name: float(v) for name, v in zip(slot.features, row, strict=True)}
            results.append(
                ToolResult(
                    tool=slot.tool,
                    provider=slot.provider,
                    ticker=str(ticker),
                    asof=asof,
                    features=features,
                    summary="",
                    coverage=bool(covered),
                    cost_usd=charged_cost(slot.price_usd, bool(covered)),
                    latency_ms=latency,
                )
            )
        return results


class RunnerExecutor:
    """Real calls through the ToolRunner on the data known at each decision time."""

    name = "live"

    def __init__(self, runner: ToolRunner, market: MarketData) -> None:
        self.runner = runner
        self.market = market

    def call(self, slot: ToolSlot, tickers: Sequence[str], session: pd.Timestamp) -> list[ToolResult]:
        asof = decision_time(session)
        requests = [
            ToolRequest(tool=slot.tool, ticker=str(t), asof=asof, provider=slot.provider)
            for t in tickers
        ]
        return self.runner.run_many(requests, self.market)
