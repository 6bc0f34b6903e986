"""Fundamental view of a stock.

Provider ``factor`` (offline default): **factor-implied** style exposures, not accounting data.
Over the 252 sessions up to the decision, the stock's daily returns are regressed on the
market (the benchmark) and on the style-factor ETFs' returns in excess of the market
(VLUE value, QUAL quality, MTUM momentum, SIZE size, USMV low volatility):

    r_stock = a + b_mkt * r_mkt + sum_k b_k * (r_k - r_mkt) + e

so ``b_k`` is the stock's tilt towards style k beyond its market beta. The ETFs start in 2014:
before enough overlapping history (126 sessions) the output has no coverage.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from quantorch.toolkit.base import PanelTool
from quantorch.toolkit.spec import MarketData, OutputField, ProviderSpec, ToolSpec

WINDOW = 252
MIN_OBS = 126
STYLES = (("value", "VLUE"), ("quality", "QUAL"), ("momentum", "MTUM"), ("size", "SIZE"), ("low_volatility", "USMV"))

_FACTOR_OUTPUTS = (
    *(OutputField(name=f"{style}_tilt", description=f"factor-implied {style} exposure beyond the market "
                  f"({etf} minus market), 252-session regression", unit="beta")
      for style, etf in STYLES),
    OutputField(name="market_beta", description="beta to the market in the same regression", unit="beta"),
    OutputField(name="factor_r2", description="share of return variance the factors explain", unit="fraction"),
)

SPEC = ToolSpec(
    name="fundamental",
    description=(
        "Fundamental profile of the stock. Offline it is factor-implied: the stock's value, "
        "quality, momentum, size and low-volatility tilts estimated from the style-factor ETFs' "
        "returns over the past year (not accounting data)."
    ),
    outputs=_FACTOR_OUTPUTS,
    providers=(
        ProviderSpec(name="factor", description="factor-implied style exposures (offline)",
                     usd_per_call=0.002, expected_latency_ms=5),
    ),
    default_provider="factor",
)


def _rolling_sum(values: np.ndarray, window: int) -> np.ndarray:
    """Sum over the last ``window`` rows (axis 0), from cumulative sums."""
    cumulative = np.cumsum(values, axis=0)
    out = cumulative.copy()
    out[window:] = cumulative[window:] - cumulative[:-window]
    return out


def factor_exposures(
    stock_returns: pd.DataFrame, market_returns: pd.Series, factor_returns: pd.DataFrame
) -> dict[str, pd.DataFrame]:
    """Rolling OLS of each stock on [1, market, factor - market] (see module docs)."""
    index = stock_returns.index
    mkt = market_returns.reindex(index).to_numpy(dtype=np.float64)
    styles = factor_returns.reindex(index).to_numpy(dtype=np.float64) - mkt[:, None]
    design = np.column_stack([np.ones(len(index)), mkt, styles])  # (n, 7)
    x_ok = np.isfinite(design).all(axis=1)
    names = [f"{style}_tilt" for style, _ in STYLES]
    out = {name: np.full(stock_returns.shape, np.nan) for name in [*names, "market_beta", "factor_r2"]}
    for j, ticker in enumerate(stock_returns.columns):
        y = stock_returns[ticker].to_numpy(dtype=np.float64)
        ok = x_ok & np.isfinite(y)
        x = np.where(ok[:, None], design, 0.0)
        yy = np.where(ok, y, 0.0)
        count = _rolling_sum(ok.astype(np.float64), WINDOW)
        xtx = _rolling_sum(np.einsum("ni,nj->nij", x, x), WINDOW)
        xty = _rolling_sum(x * yy[:, None], WINDOW)
        yty = _rolling_sum(yy * yy, WINDOW)
        ysum = _rolling_sum(yy, WINDOW)
        usable = (count >= MIN_OBS) & np.isfinite(y)
        rows = np.flatnonzero(usable)
        if len(rows) == 0:
            continue
        a = xtx[rows]
        well_posed = np.linalg.cond(a) < 1e10
        rows, a = rows[well_posed], a[well_posed]
        if len(rows) == 0:
            continue
        beta = np.linalg.solve(a, xty[rows][:, :, None])[:, :, 0]
        sse = yty[rows] - np.einsum("ni,ni->n", beta, xty[rows])
        sst = yty[rows] - ysum[rows] ** 2 / count[rows]
        r2 = np.where(sst > 0, 1 - sse / sst, np.nan)
        out["market_beta"][rows, j] = beta[:, 1]
        for k, name in enumerate(names):
            out[name][rows, j] = beta[:, 2 + k]
        out["factor_r2"][rows, j] = r2
    return {k: pd.DataFrame(v, index=index, columns=stock_returns.columns) for k, v in out.items()}


class FundamentalTool(PanelTool):
    spec = SPEC

    def series(self, data: MarketData, provider: ProviderSpec, tickers: list[str]) -> dict[str, pd.DataFrame]:
        close = data.prices.close.reindex(columns=tickers)
        empty = {f.name: pd.DataFrame(np.nan, index=close.index, columns=tickers) for f in _FACTOR_OUTPUTS}
        if data.factors is None or data.benchmark is None:
            return empty
        etfs = [etf for _, etf in STYLES]
        if not set(etfs) <= set(data.factors.columns):
            return empty
        returns = close.pct_change(fill_method=None)
        market = data.benchmark.reindex(close.index).pct_change(fill_method=None)
        factors = data.factors.reindex(close.index)[etfs].pct_change(fill_method=None)
        return factor_exposures(returns, market, factors)

    def summarise(self, ticker: str, features: dict[str, float], provider: ProviderSpec) -> str:
        tilts = [(s, features.get(f"{s}_tilt", float("nan"))) for s, _ in STYLES]
        tilts = [(s, v) for s, v in tilts if math.isfinite(v)]
        if not tilts:
            return f"fundamental (factor-implied) {ticker}: not covered (factor ETFs start in 2014)"
        strongest = sorted(tilts, key=lambda sv: -abs(sv[1]))[:2]
        text = ", ".join(f"{s} {v:+.2f}" for s, v in strongest)
        return (f"fundamental (factor-implied, not accounting data) {ticker}: strongest tilts {text}; "
                f"market beta {features.get('market_beta', float('nan')):.2f}")


TOOL = FundamentalTool()
