"""Cross-section: where the stock stands within its universe today, not against its own past.

The other price tools read one ticker's own history, so a market-wide fall looks like a
reversal signal for every stock at once. This tool ranks the stock among the universe's
tickers at the decision close on the classic cross-sectional anomalies of the literature,
chosen before any measurement on this product's data: short-term reversal (the 5-session
return; Jegadeesh 1990, Lehmann 1990), the month's return, 12-1 momentum (the return from 252
to 21 sessions ago; Jegadeesh and Titman 1993) and low volatility (63-session realised
volatility; Ang et al. 2006), plus the stock's 5-session return in excess of the universe's
median (what is left of its move once the market's is taken out).

A rank is the percentile within the tickers that have the measure at t, centred: -0.5 for
the lowest, +0.5 for the highest (ties share the mean rank). Row t uses closes up to t of
every ticker, so a bar after t never changes a value at t (the poisoned-future tests check
this); the answer for a ticker does not depend on which tickers were *asked about*, only on
the universe in the data, so one :meth:`run_batch` serves a session.

The universe is the data's tickers: the config's universe in backtests, training and paper
trading. ``quantorch tools run cross_section`` loads the config's universe beside the ticker.
Coverage: a measure needs at least ``MIN_PEERS`` (5) tickers with it at t; with fewer (a
single-ticker data set, the first year of momentum) it is NaN, and with none finite the call
is not covered and not charged. Not cached: the answer depends on the other tickers' bars,
which the cache key does not fingerprint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from quantorch.data.panel import PricePanel
from quantorch.toolkit.base import PanelTool
from quantorch.toolkit.spec import (
    MarketData,
    OutputField,
    ProviderSpec,
    ToolRequest,
    ToolResult,
    ToolSpec,
)

__all__ = ["SPEC", "TOOL", "CrossSectionTool", "centred_rank", "MIN_PEERS"]

#: Fewest tickers with a measure at t for a rank to mean anything.
MIN_PEERS = 5
#: Sessions a value at t reads (12-1 momentum: the close 252 sessions back), with a margin.
LOOKBACK = 260

_OUTPUTS = (
    OutputField(name="rank_return_5d", description="rank of the 5-session return in the universe "
                "(-0.5 lowest, +0.5 highest; short-term reversal)", unit="centred rank"),
    OutputField(name="rank_return_21d", description="rank of the 21-session return in the "
                "universe", unit="centred rank"),
    OutputField(name="rank_momentum_12_1", description="rank of the return from 252 to 21 "
                "sessions ago (12-1 momentum)", unit="centred rank"),
    OutputField(name="rank_volatility_63", description="rank of the 63-session realised "
                "volatility (low-volatility anomaly)", unit="centred rank"),
    OutputField(name="excess_return_5d", description="5-session return minus the universe's "
                "median 5-session return", unit="fraction"),
)

SPEC = ToolSpec(
    name="cross_section",
    description=(
        "Where the stock ranks within the trading universe at the decision close: its "
        "5-session and 21-session returns (short-term reversal), 12-1 momentum and 63-session "
        "volatility as centred ranks, and its 5-session return in excess of the universe's "
        "median."
    ),
    outputs=_OUTPUTS,
    providers=(
        # Price and latency (measured p50 of a single call on the 20-stock sample): docs/tools.md.
        ProviderSpec(name="basic", description="5 cross-sectional measures from the closes",
                     usd_per_call=0.0005, expected_latency_ms=30, deterministic=False),
    ),
    default_provider="basic",
)


def centred_rank(frame: pd.DataFrame, min_peers: int = MIN_PEERS) -> pd.DataFrame:
    """Per row, the percentile rank among the finite values, in [-0.5, 0.5]; NaN where fewer
    than ``min_peers`` values are finite (a single finite value would otherwise rank 0)."""
    finite = frame.where(np.isfinite(frame))
    count = finite.notna().sum(axis=1)
    ranks = finite.rank(axis=1, method="average")
    denominator = (count - 1).where(count >= min_peers)
    return ranks.sub(1).div(denominator, axis=0) - 0.5


class CrossSectionTool(PanelTool):
    spec = SPEC
    #: ``quantorch tools run`` loads the config's universe beside the ticker asked about.
    reads_universe = True

    def series(self, data: MarketData, provider: ProviderSpec, tickers: list[str]) -> dict[str, pd.DataFrame]:
        close = data.prices.close
        close = close.where(close > 0)  # a non-positive close is a bad bar, not a price
        with np.errstate(divide="ignore", invalid="ignore"):
            returns = close.pct_change(fill_method=None)
            return_5d = close.pct_change(5, fill_method=None)
            measures = {
                "rank_return_5d": return_5d,
                "rank_return_21d": close.pct_change(21, fill_method=None),
                "rank_momentum_12_1": close.shift(21) / close.shift(252) - 1,
                "rank_volatility_63": returns.rolling(63, min_periods=42).std(),
            }
            out = {name: centred_rank(frame) for name, frame in measures.items()}
            finite = return_5d.where(np.isfinite(return_5d))
            median = finite.median(axis=1).where(finite.notna().sum(axis=1) >= MIN_PEERS)
            out["excess_return_5d"] = finite.sub(median, axis=0)
        return {name: frame.reindex(columns=tickers) for name, frame in out.items()}

    def run_batch(
        self, requests: Sequence[ToolRequest], data: MarketData, provider: ProviderSpec
    ) -> list[ToolResult]:
        """As the base class, on the last ``LOOKBACK`` sessions only: every measure at t reads
        at most 253 rows, so the values are the same and a call does not rank decades."""
        prices = data.prices
        if len(prices.dates) > LOOKBACK:
            rows = prices.dates[-LOOKBACK:]
            prices = PricePanel(*(getattr(prices, f.name).loc[rows]
                                  for f in dataclasses.fields(PricePanel)))
            data = dataclasses.replace(data, prices=prices)
        return super().run_batch(requests, data, provider)

    def summarise(self, ticker: str, features: dict[str, float], provider: ProviderSpec) -> str:
        labels = {"rank_return_5d": "5-day return", "rank_momentum_12_1": "12-1 momentum",
                  "rank_volatility_63": "volatility"}
        parts = [f"{label} at percentile {100 * (features[name] + 0.5):.0f}"
                 for name, label in labels.items() if math.isfinite(features.get(name, math.nan))]
        excess = features.get("excess_return_5d", math.nan)
        if math.isfinite(excess):
            parts.append(f"5-day return {excess:+.1%} vs the universe's median")
        return f"cross-section for {ticker}: " + ("; ".join(parts) or "no cross-section (too few tickers)")


TOOL = CrossSectionTool()
