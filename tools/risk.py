"""Risk: realised and forecast volatility, VaR/CVaR, drawdown, beta and correlation.

Providers: ``fast`` (rolling measures) and ``full`` (adds 99% VaR/CVaR and a GARCH(1,1)
one-day-ahead volatility forecast from the ``arch`` package).

GARCH refit rule: parameters are fitted at the last session of each quarter on the 500 daily
returns up to and including it (fewer at the start of the data, at least 250), and the
conditional variance is filtered forward day by day with those parameters until the next
refit. The value at t therefore uses only returns up to t, and a single call on data
truncated at t, which refits at the same quarter ends, gives the same number.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from quantorch.toolkit.base import PanelTool
from quantorch.toolkit.spec import MarketData, OutputField, ProviderSpec, ToolSpec

ANNUAL = math.sqrt(252)
_FAST = (
    OutputField(name="vol21", description="realised volatility, 21 sessions", unit="annualised fraction"),
    OutputField(name="vol63", description="realised volatility, 63 sessions", unit="annualised fraction"),
    OutputField(name="vol252", description="realised volatility, 252 sessions", unit="annualised fraction"),
    OutputField(name="ewma_vol", description="EWMA volatility, lambda 0.94 (RiskMetrics)", unit="annualised fraction"),
    OutputField(name="var95", description="historical 1-day 95% VaR over 252 sessions (a loss, > 0)", unit="fraction"),
    OutputField(name="cvar95", description="historical 1-day 95% CVaR over 252 sessions (a loss, > 0)", unit="fraction"),
    OutputField(name="drawdown", description="close / running peak - 1 (<= 0)", unit="fraction"),
    OutputField(name="beta252", description="beta to the benchmark over 252 sessions", unit="ratio"),
    OutputField(name="corr252", description="correlation with the benchmark over 252 sessions", unit="ratio"),
    OutputField(name="downside_dev63", description="downside deviation (target 0), 63 sessions", unit="annualised fraction"),
)
_FULL_ONLY = (
    OutputField(name="var99", description="historical 1-day 99% VaR over 252 sessions (a loss, > 0)", unit="fraction"),
    OutputField(name="cvar99", description="historical 1-day 99% CVaR over 252 sessions (a loss, > 0)", unit="fraction"),
    OutputField(name="garch_vol", description="GARCH(1,1) one-day-ahead volatility forecast", unit="annualised fraction"),
)

SPEC = ToolSpec(
    name="risk",
    description=(
        "Risk of holding the stock, from its returns up to the decision close: realised and "
        "EWMA volatility, historical VaR/CVaR, current drawdown, beta and correlation to the "
        "benchmark, downside deviation; 'full' adds 99% tail risk and a GARCH(1,1) forecast."
    ),
    outputs=_FAST + _FULL_ONLY,
    providers=(
        ProviderSpec(name="fast", description="rolling risk measures", usd_per_call=0.001,
                     expected_latency_ms=5, outputs=tuple(f.name for f in _FAST)),
        ProviderSpec(name="full", description="adds 99% tail risk and a GARCH(1,1) forecast",
                     usd_per_call=0.005, expected_latency_ms=60),
    ),
    default_provider="fast",
)


def _tail(returns: np.ndarray, window: int, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Rolling historical VaR and CVaR (positive losses) of one return series."""
    n = len(returns)
    var = np.full(n, np.nan)
    cvar = np.full(n, np.nan)
    if n < window:
        return var, cvar
    windows = np.lib.stride_tricks.sliding_window_view(returns, window)
    k = max(1, int(math.ceil(window * (1 - level))))
    worst = np.partition(windows, k - 1, axis=1)[:, :k]
    ok = np.isfinite(windows).all(axis=1)
    var[window - 1 :] = np.where(ok, -worst.max(axis=1), np.nan)
    cvar[window - 1 :] = np.where(ok, -worst.mean(axis=1), np.nan)
    return var, cvar


def _quarter_end_sessions(index: pd.DatetimeIndex) -> np.ndarray:
    """True where the date is the last XNYS session of its quarter (calendar, not data)."""
    from quantorch.data import calendar

    if len(index) == 0:
        return np.zeros(0, dtype=bool)
    quarters = index.to_period("Q")
    last_session = {}
    for quarter in quarters.unique():
        sessions = calendar.sessions(quarter.start_time, quarter.end_time.normalize())
        last_session[quarter] = sessions[-1] if len(sessions) else None
    return np.array([last_session[q] == d for q, d in zip(quarters, index, strict=True)])


def _garch(returns: pd.Series) -> np.ndarray:
    """One-day-ahead GARCH(1,1) volatility (daily) per session; quarter-end refits."""
    from arch import arch_model

    values = returns.to_numpy(dtype=np.float64)
    out = np.full(len(values), np.nan)
    ends = np.flatnonzero(_quarter_end_sessions(returns.index))
    params = None
    variance = np.nan
    end_pointer = 0
    for t in range(len(values)):
        if params is not None and np.isfinite(values[t]):
            omega, alpha, beta = params
            variance = omega + alpha * (values[t] * 100) ** 2 + beta * variance
            out[t] = math.sqrt(variance) / 100
        if end_pointer < len(ends) and ends[end_pointer] == t:
            end_pointer += 1
            history = values[max(0, t - 499) : t + 1]
            history = history[np.isfinite(history)]
            if len(history) < 250:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = arch_model(history * 100, mean="Zero", vol="GARCH", p=1, q=1,
                                 rescale=False).fit(disp="off", show_warning=False)
            omega, alpha, beta = (float(fit.params[k]) for k in ("omega", "alpha[1]", "beta[1]"))
            params = (omega, alpha, beta)
            variance = float(fit.conditional_volatility[-1] ** 2)
            variance = omega + alpha * (history[-1] * 100) ** 2 + beta * variance
            out[t] = math.sqrt(variance) / 100
    return out


class RiskTool(PanelTool):
    spec = SPEC

    def series(self, data: MarketData, provider: ProviderSpec, tickers: list[str]) -> dict[str, pd.DataFrame]:
        close = data.prices.close.reindex(columns=tickers)
        returns = close.pct_change(fill_method=None)
        out: dict[str, pd.DataFrame] = {}
        out["vol21"] = returns.rolling(21, min_periods=21).std() * ANNUAL
        out["vol63"] = returns.rolling(63, min_periods=63).std() * ANNUAL
        out["vol252"] = returns.rolling(252, min_periods=252).std() * ANNUAL
        squared = (returns**2).ewm(alpha=0.06, adjust=False, ignore_na=True).mean()
        out["ewma_vol"] = np.sqrt(squared).where(returns.notna().cumsum() >= 21) * ANNUAL
        levels = [0.95, 0.99] if provider.name == "full" else [0.95]
        for level in levels:
            var = np.full(close.shape, np.nan)
            cvar = np.full(close.shape, np.nan)
            for j, ticker in enumerate(tickers):
                var[:, j], cvar[:, j] = _tail(returns[ticker].to_numpy(dtype=np.float64), 252, level)
            tag = int(round(level * 100))
            out[f"var{tag}"] = pd.DataFrame(var, index=close.index, columns=tickers)
            out[f"cvar{tag}"] = pd.DataFrame(cvar, index=close.index, columns=tickers)
        out["drawdown"] = close / close.cummax() - 1
        if data.benchmark is not None:
            bench = data.benchmark.reindex(close.index).pct_change(fill_method=None)
            covariance = returns.rolling(252, min_periods=252).cov(bench)
            out["beta252"] = covariance / bench.rolling(252, min_periods=252).var().to_numpy()[:, None]
            out["corr252"] = returns.rolling(252, min_periods=252).corr(bench)
        else:
            out["beta252"] = pd.DataFrame(np.nan, index=close.index, columns=tickers)
            out["corr252"] = out["beta252"].copy()
        downside = np.minimum(returns, 0.0) ** 2
        out["downside_dev63"] = np.sqrt(downside.rolling(63, min_periods=63).mean()) * ANNUAL
        if provider.name == "full":
            garch = np.full(close.shape, np.nan)
            for j, ticker in enumerate(tickers):
                garch[:, j] = _garch(returns[ticker]) * ANNUAL
            out["garch_vol"] = pd.DataFrame(garch, index=close.index, columns=tickers)
        return out

    def summarise(self, ticker: str, features: dict[str, float], provider: ProviderSpec) -> str:
        def pct(key: str) -> str:
            value = features.get(key, float("nan"))
            return f"{value:.1%}" if math.isfinite(value) else "n/a"

        text = (f"risk ({provider.name}) {ticker}: vol 21d {pct('vol21')}, 1y {pct('vol252')}, "
                f"95% VaR {pct('var95')}, drawdown {pct('drawdown')}")
        beta = features.get("beta252", float("nan"))
        if math.isfinite(beta):
            text += f", beta {beta:.2f}"
        if provider.name == "full":
            text += f", GARCH vol {pct('garch_vol')}"
        return text


TOOL = RiskTool()
