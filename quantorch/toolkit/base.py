"""A base for tools whose features are causal series: one computation serves both APIs.

A subclass implements :meth:`PanelTool.series`: feature name -> (dates x tickers) frame on
the whole history it is given, where the row for t uses only rows up to t. Then

- ``panel(data, provider, tickers, dates)`` is that frame at the decision dates, and
- ``run(request, data, provider)`` is the same computation on data the runner already cut at
  the decision time, read at its last session,

so a single call equals the panel value at t by construction (and the panel property tests
check the causality of ``series``).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from quantorch.toolkit.spec import (
    MarketData,
    ProviderSpec,
    ToolRequest,
    ToolResult,
    ToolSpec,
    any_finite,
    charged_cost,
)

__all__ = ["PanelTool"]


class PanelTool(ABC):
    """Subclass, set ``spec`` and implement :meth:`series` (and optionally :meth:`summarise`)."""

    spec: ToolSpec
    #: The runner may answer several tickers' calls of one session with one :meth:`run_batch`.
    batches = True

    @abstractmethod
    def series(
        self, data: MarketData, provider: ProviderSpec, tickers: list[str]
    ) -> dict[str, pd.DataFrame]:
        """Feature name -> (dates x tickers) frame; row t may use only rows up to t."""

    def covered(
        self, features: Mapping[str, float | np.ndarray], provider: ProviderSpec
    ) -> np.ndarray:
        """Whether the tool had data, per point (see :func:`quantorch.toolkit.spec.covered`).

        By default one of the provider's outputs is finite; a tool whose "no data" output is a
        finite neutral value (a count of 0, a first bar's drawdown of 0) overrides this.
        """
        return any_finite(features, self.spec.provider_outputs(provider.name))

    def summarise(self, ticker: str, features: dict[str, float], provider: ProviderSpec) -> str:
        shown = ", ".join(f"{k} {v:+.3g}" for k, v in features.items() if math.isfinite(v))
        return f"{self.spec.name} for {ticker}: {shown or 'no data'}"

    def panel(
        self, data: MarketData, provider: ProviderSpec, tickers: list[str], dates: pd.DatetimeIndex
    ) -> dict[str, pd.DataFrame]:
        frames = self.series(data, provider, list(tickers))
        return {
            name: frame.reindex(index=dates, columns=list(tickers)) for name, frame in frames.items()
        }

    def run(self, request: ToolRequest, data: MarketData, provider: ProviderSpec) -> ToolResult:
        return self.run_batch([request], data, provider)[0]

    def run_batch(
        self, requests: Sequence[ToolRequest], data: MarketData, provider: ProviderSpec
    ) -> list[ToolResult]:
        """Several tickers' calls at one decision time from one :meth:`series` computation.

        Each result is what :meth:`run` gives for its request alone (the series of a ticker
        never depends on the other tickers); the runner batches the calls of one session this
        way. The requests must share their ``asof``.
        """
        started = time.perf_counter()
        if not requests:
            return []
        asof = requests[0].asof
        if any(r.asof != asof for r in requests):
            raise ValueError("run_batch needs requests of one decision time")
        tickers = list(dict.fromkeys(r.ticker for r in requests))
        frames = self.series(data, provider, tickers)
        day = pd.Timestamp(asof).normalize()
        if getattr(day, "tzinfo", None) is not None:
            day = day.tz_localize(None)
        last = _last_session(data, day)
        values: dict[str, dict[str, float]] = {t: {} for t in tickers}
        for name in self.spec.output_names:
            frame = frames.get(name)
            for ticker in tickers:
                column = frame[ticker].loc[:day] if frame is not None else pd.Series(dtype=float)
                value = column.iloc[-1] if len(column) and column.index[-1] == last else np.nan
                values[ticker][name] = float(value) if pd.notna(value) else float("nan")
        stamp = asof if isinstance(asof, dt.datetime) else pd.Timestamp(asof).to_pydatetime()
        latency = (time.perf_counter() - started) * 1000 / len(requests)
        has_data = {t: bool(self.covered(values[t], provider)) for t in tickers}
        return [
            ToolResult(
                tool=self.spec.name,
                provider=provider.name,
                ticker=request.ticker,
                asof=stamp,
                features=dict(values[request.ticker]),
                summary=self.summarise(request.ticker, values[request.ticker], provider),
                coverage=has_data[request.ticker],
                cost_usd=charged_cost(provider.usd_per_call, has_data[request.ticker]),
                latency_ms=latency,
            )
            for request in requests
        ]


def _last_session(data: MarketData, day: pd.Timestamp) -> pd.Timestamp | None:
    dates = data.prices.dates
    dates = dates[dates <= day]
    return dates[-1] if len(dates) else None
