"""Risk: realised and forecast volatility, VaR/CVaR, drawdown, beta and correlation.

Providers: ``fast`` (rolling measures) and ``full`` (adds 99% VaR/CVaR and a GARCH(1,1)
one-day-ahead volatility forecast from the ``arch`` package).

The measures are plain functions on (sessions x tickers) arrays of simple daily returns, in
the style of ``skfolio.measures``; the tool class only moves data in and out. Realised
volatility, downside deviation and drawdown come from the one measures module,
:mod:`quantorch.backtest.metrics` (``rolling_volatility``, ``rolling_downside_deviation``,
``drawdown``); the measures only this tool uses (EWMA volatility, historical VaR/CVaR, beta
and correlation, GARCH) are here. Every function is causal: row t uses rows up to t only.

GARCH refit rule. Parameters are fitted at the last XNYS session of each calendar quarter on
the (at most) 500 daily returns up to and including it (at least 250), and the conditional
variance is filtered forward day by day with those parameters until the next refit. A
quarter's refit day comes from the exchange calendar, not from the data, so it does not move
when more or less history is loaded. The value at t depends only on the last refit on or
before t and the returns between it and t, so a single call on data truncated at t fits
exactly once (at that refit) and gives the same number as the whole-panel computation, which
fits at every quarter end.

Coverage: the tool has data for a ticker once a return-based measure exists (21 returns give
realised and EWMA volatility); before that only the drawdown, 0 at the first bar, is finite,
and the call is not covered (and not charged).
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import math
import warnings

import numpy as np
import pandas as pd

from quantorch.backtest import metrics
from quantorch.toolkit.base import PanelTool
from quantorch.toolkit.spec import (
    MarketData,
    OutputField,
    ProviderSpec,
    ToolResult,
    ToolSpec,
    any_finite,
)

__all__ = [
    "SPEC",
    "TOOL",
    "RiskTool",
    "beta_correlation",
    "ewma_volatility",
    "garch_volatility",
    "historical_var_cvar",
    "quarter_end_sessions",
]

ANNUAL = math.sqrt(252)
EWMA_LAMBDA = 0.94
TAIL_WINDOW = 252
BETA_WINDOW = 252
GARCH_WINDOW = 500
GARCH_MIN_OBS = 250

_FAST = (
    OutputField(name="vol21", description="realised volatility, 21 sessions", unit="annualised fraction"),
    OutputField(name="vol63", description="realised volatility, 63 sessions", unit="annualised fraction"),
    OutputField(name="vol252", description="realised volatility, 252 sessions", unit="annualised fraction"),
    OutputField(name="ewma_vol", description="EWMA volatility, lambda 0.94 (RiskMetrics)", unit="annualised fraction"),
    OutputField(name="var95", description="historical 1-day 95% VaR over 252 sessions (a loss, > 0)", unit="fraction"),
    OutputField(name="cvar95", description="historical 1-day 95% CVaR over 252 sessions (a loss, > 0)", unit="fraction"),
    OutputField(name="drawdown", description="close / running peak close of the history - 1 (<= 0)", unit="fraction"),
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
        # Prices and latencies (measured p50 of a single call): see docs/tools.md. `full` pays
        # for one GARCH maximum-likelihood fit per call.
        ProviderSpec(name="fast", description="rolling risk measures", usd_per_call=0.001,
                     expected_latency_ms=12, outputs=tuple(f.name for f in _FAST)),
        ProviderSpec(name="full", description="adds 99% tail risk and a GARCH(1,1) forecast",
                     usd_per_call=0.005, expected_latency_ms=40),
    ),
    default_provider="fast",
    # 2: a first bar's drawdown alone is not coverage (cached answers of 1 said covered)
    version="2",
)


# ---- measures: functions on (sessions x tickers) arrays of simple returns -------------------


def _frame(values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(values, dtype=np.float64).reshape(len(values), -1))


def ewma_volatility(returns: np.ndarray, lam: float = EWMA_LAMBDA, min_obs: int = 21) -> np.ndarray:
    """Annualised RiskMetrics EWMA volatility: s2_t = lam * s2_{t-1} + (1 - lam) * r_t^2.

    Seeded with the first squared return; a missing return leaves the estimate unchanged. NaN
    until ``min_obs`` returns have been seen.
    """
    frame = _frame(returns)
    squared = (frame**2).ewm(alpha=1 - lam, adjust=False, ignore_na=True).mean()
    seen = frame.notna().cumsum()
    return (np.sqrt(squared).where(seen >= min_obs) * ANNUAL).to_numpy()


@functools.cache
def _tail_kernel():
    import numba

    @numba.njit(cache=True, nogil=True)
    def kernel(returns, window, k, var_out, cvar_out):  # pragma: no cover - compiled
        # Keeps the k smallest finite returns of the window, sorted. A new return enters if it
        # is smaller than the largest kept; when a kept return leaves the window (chance about
        # k / window), the k smallest are selected again from the whole window.
        n, m = returns.shape
        smallest = np.empty(k)
        for j in range(m):
            size = 0
            missing = 0
            for t in range(n):
                rebuild = False
                if t >= window:
                    old = returns[t - window, j]
                    if not np.isfinite(old):
                        missing -= 1
                    elif size > 0 and old <= smallest[size - 1]:
                        rebuild = True
                value = returns[t, j]
                if not np.isfinite(value):
                    missing += 1
                if rebuild:
                    size = 0
                    for row in range(max(0, t - window + 1), t + 1):
                        candidate = returns[row, j]
                        if np.isfinite(candidate) and (size < k or candidate < smallest[size - 1]):
                            pos = size if size < k else k - 1
                            while pos > 0 and smallest[pos - 1] > candidate:
                                if pos < k:
                                    smallest[pos] = smallest[pos - 1]
                                pos -= 1
                            smallest[pos] = candidate
                            if size < k:
                                size += 1
                elif np.isfinite(value) and (size < k or value < smallest[size - 1]):
                    pos = size if size < k else k - 1
                    while pos > 0 and smallest[pos - 1] > value:
                        if pos < k:
                            smallest[pos] = smallest[pos - 1]
                        pos -= 1
                    smallest[pos] = value
                    if size < k:
                        size += 1
                if t >= window - 1 and missing == 0:
                    var_out[t, j] = -smallest[k - 1]
                    total = 0.0
                    for i in range(k):
                        total += smallest[i]
                    cvar_out[t, j] = -total / k

    return kernel


def historical_var_cvar(
    returns: np.ndarray, window: int = TAIL_WINDOW, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Rolling historical VaR and CVaR at ``level`` as positive losses.

    Over each window of ``window`` returns (NaN if any is missing) with the k = ceil(window *
    (1 - level)) worst returns, VaR is minus the k-th worst and CVaR minus their mean (for 252
    sessions: the 13th worst day at 95%, the 3rd worst at 99%).
    """
    values = np.ascontiguousarray(_frame(returns).to_numpy())
    var = np.full(values.shape, np.nan)
    cvar = np.full(values.shape, np.nan)
    k = max(1, math.ceil(round(window * (1 - level), 9)))
    if len(values) >= window:
        _tail_kernel()(values, window, k, var, cvar)
    return var, cvar


def beta_correlation(
    returns: np.ndarray, benchmark_returns: np.ndarray, window: int = BETA_WINDOW
) -> tuple[np.ndarray, np.ndarray]:
    """Rolling beta and correlation of each column to the benchmark over ``window`` sessions.

    A window counts only if the stock and the benchmark both have all ``window`` returns.
    """
    stock = _frame(returns)
    bench = pd.Series(np.asarray(benchmark_returns, dtype=np.float64))
    paired = stock.notna() & bench.notna().to_numpy()[:, None]
    x = stock.where(paired)
    y = pd.DataFrame(np.broadcast_to(bench.to_numpy()[:, None], x.shape)).where(paired)

    def mean(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.rolling(window, min_periods=window).mean()

    mx, my = mean(x), mean(y)
    covariance = mean(x * y) - mx * my
    var_x = (mean(x * x) - mx * mx).clip(lower=0)
    var_y = (mean(y * y) - my * my).clip(lower=0)
    beta = (covariance / var_y.where(var_y > 0)).to_numpy()
    corr = (covariance / np.sqrt(var_x * var_y).where((var_x > 0) & (var_y > 0))).clip(-1, 1)
    return beta, corr.to_numpy()


@functools.cache
def _last_session_of_quarter(quarter: pd.Period) -> pd.Timestamp | None:
    from quantorch.data import calendar

    sessions = calendar.sessions(quarter.start_time, quarter.end_time.normalize())
    return sessions[-1] if len(sessions) else None


def quarter_end_sessions(dates: pd.DatetimeIndex) -> np.ndarray:
    """True where the date is the last XNYS session of its calendar quarter."""
    if len(dates) == 0:
        return np.zeros(0, dtype=bool)
    quarters = dates.to_period("Q")
    last = {q: _last_session_of_quarter(q) for q in quarters.unique()}
    return np.array([last[q] == d for q, d in zip(quarters, dates, strict=True)], dtype=bool)


#: Fits already made in this process, by the bytes of their return window. A fit depends on
#: its window only, so a walk-forward fold's training, validation and test panels, and later
#: folds in the same worker, fit each (ticker, quarter end) once; the results are the same
#: numbers as fitting again. Bounded: the oldest entries go first.
_GARCH_FITS: dict[bytes, tuple[tuple[float, float, float], float] | None] = {}
_GARCH_FITS_MAX = 250_000


def _garch_fit(history: np.ndarray) -> tuple[tuple[float, float, float], float] | None:
    """GARCH(1,1) parameters on percent returns and the variance forecast for the next day
    (remembered per window: see ``_GARCH_FITS``)."""
    window = np.ascontiguousarray(history, dtype=np.float64)
    key = hashlib.blake2b(window.tobytes(), digest_size=20).digest()
    if key in _GARCH_FITS:
        return _GARCH_FITS[key]
    fitted = _garch_fit_uncached(window)
    if len(_GARCH_FITS) >= _GARCH_FITS_MAX:
        del _GARCH_FITS[next(iter(_GARCH_FITS))]
    _GARCH_FITS[key] = fitted
    return fitted


def _garch_fit_uncached(history: np.ndarray) -> tuple[tuple[float, float, float], float] | None:
    from arch import arch_model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = arch_model(history * 100, mean="Zero", vol="GARCH", p=1, q=1,
                             rescale=False).fit(disp="off", show_warning=False)
    except Exception:  # noqa: BLE001 - an optimiser failure: keep the previous parameters
        return None
    omega, alpha, beta = (float(fit.params[k]) for k in ("omega", "alpha[1]", "beta[1]"))
    if not all(math.isfinite(v) for v in (omega, alpha, beta)):
        return None
    last_variance = float(fit.conditional_volatility[-1]) ** 2
    return (omega, alpha, beta), omega + alpha * (history[-1] * 100) ** 2 + beta * last_variance


def garch_volatility(
    returns: np.ndarray,
    refit: np.ndarray,
    *,
    window: int = GARCH_WINDOW,
    min_obs: int = GARCH_MIN_OBS,
    last_only: bool = False,
) -> np.ndarray:
    """Annualised GARCH(1,1) one-day-ahead volatility for one return series (1-D).

    Parameters are fitted at the rows where ``refit`` is True on the last ``window`` finite
    returns (skipped with fewer than ``min_obs`` or a failed fit: the previous parameters go
    on), then the variance is filtered forward. ``last_only`` computes just what the last row
    needs (the last successful refit onwards) and gives the same last value.
    """
    values = np.asarray(returns, dtype=np.float64)
    out = np.full(len(values), np.nan)
    refits = np.flatnonzero(refit)

    def fit_at(row: int):
        history = values[max(0, row - window + 1) : row + 1]
        history = history[np.isfinite(history)]
        return _garch_fit(history) if len(history) >= min_obs else None

    fits: dict[int, tuple[tuple[float, float, float], float]] = {}
    if last_only:
        for row in refits[::-1]:
            fitted = fit_at(int(row))
            if fitted is not None:
                fits[int(row)] = fitted
                break
    else:
        for row in refits:
            fitted = fit_at(int(row))
            if fitted is not None:
                fits[int(row)] = fitted
    if not fits:
        return out
    start = min(fits)
    params, variance = fits[start]
    out[start] = math.sqrt(variance)
    for t in range(start + 1, len(values)):
        if t in fits:
            params, variance = fits[t]
            out[t] = math.sqrt(variance)
            continue
        if np.isfinite(values[t]):
            omega, alpha, beta = params
            variance = omega + alpha * (values[t] * 100) ** 2 + beta * variance
            out[t] = math.sqrt(variance)
    return out / 100 * ANNUAL


# ---- the tool ---------------------------------------------------------------------------------

#: Set while a single call runs: GARCH fits only the refit its last row needs.
_SINGLE_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("risk_single_call", default=False)


class RiskTool(PanelTool):
    spec = SPEC

    def covered(self, features, provider: ProviderSpec) -> np.ndarray:
        """A return-based measure is finite (21 returns give the first): the drawdown alone
        is 0 from a ticker's first bar and says nothing yet."""
        names = [n for n in self.spec.provider_outputs(provider.name) if n != "drawdown"]
        return any_finite(features, names)

    def run_batch(self, requests, data: MarketData, provider: ProviderSpec) -> list[ToolResult]:
        # The runner passes data already cut at asof; cutting again costs little and keeps a
        # direct call on whole data correct, since GARCH then computes only the last row.
        token = _SINGLE_CALL.set(True)
        try:
            cut = data.truncate(requests[0].asof) if requests else data
            return super().run_batch(requests, cut, provider)
        finally:
            _SINGLE_CALL.reset(token)

    def series(self, data: MarketData, provider: ProviderSpec, tickers: list[str]) -> dict[str, pd.DataFrame]:
        with np.errstate(divide="ignore", invalid="ignore"):  # bad bars give NaN, not warnings
            return self._series(data, provider, tickers)

    def _series(self, data: MarketData, provider: ProviderSpec, tickers: list[str]) -> dict[str, pd.DataFrame]:
        close_frame = data.prices.close.reindex(columns=tickers)
        index = close_frame.index
        close = close_frame.to_numpy(dtype=np.float64)
        returns = close_frame.pct_change(fill_method=None).to_numpy()
        out: dict[str, np.ndarray] = {
            "vol21": metrics.rolling_volatility(returns, 21),
            "vol63": metrics.rolling_volatility(returns, 63),
            "vol252": metrics.rolling_volatility(returns, 252),
            "ewma_vol": ewma_volatility(returns),
        }
        full = provider.name == "full"
        for level in (0.95, 0.99) if full else (0.95,):
            tag = round(level * 100)
            out[f"var{tag}"], out[f"cvar{tag}"] = historical_var_cvar(returns, TAIL_WINDOW, level)
        out["drawdown"] = metrics.drawdown(close)
        if data.benchmark is not None:
            bench = data.benchmark.reindex(index).pct_change(fill_method=None).to_numpy()
            out["beta252"], out["corr252"] = beta_correlation(returns, bench, BETA_WINDOW)
        else:
            out["beta252"] = np.full(close.shape, np.nan)
            out["corr252"] = np.full(close.shape, np.nan)
        out["downside_dev63"] = metrics.rolling_downside_deviation(returns, 63)
        if full:
            refit = quarter_end_sessions(pd.DatetimeIndex(index))
            last_only = _SINGLE_CALL.get()
            out["garch_vol"] = np.column_stack(
                [garch_volatility(returns[:, j], refit, last_only=last_only) for j in range(len(tickers))]
            ) if tickers else np.full(close.shape, np.nan)
        return {
            name: pd.DataFrame(values, index=index, columns=tickers, copy=False)
            for name, values in out.items()
        }

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
            text += f", 99% VaR {pct('var99')}, GARCH vol {pct('garch_vol')}"
        return text


TOOL = RiskTool()
