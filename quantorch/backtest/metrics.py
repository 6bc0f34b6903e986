"""Performance measures of an equity curve.

The measures are pure functions on numpy arrays (skfolio's ``measures`` style);
:func:`performance_metrics` is the thin pandas wrapper the runner and the report use.

Conventions
-----------
- Returns are daily simple returns of the equity curve; every figure is a fraction
  (0.12 = 12%). Annualisation uses ``periods_per_year`` (252).
- ``volatility``: sample standard deviation (ddof=1) x sqrt(252).
- ``sharpe``: mean / standard deviation x sqrt(252), risk-free rate zero.
- ``sortino``: mean / downside deviation x sqrt(252); the downside deviation is
  sqrt(mean(min(r, 0)^2)) over all periods (target 0), as in empyrical.
- ``cagr``: compound growth over calendar time, years = days between the first and last
  equity dates / 365.25.
- ``max_drawdown``: the worst peak-to-trough fall, negative (-0.34) or 0.
- ``calmar``: cagr / |max_drawdown|; NaN when there is no drawdown (the runner turns NaN into
  JSON null).
- ``turnover``: traded notional per year over mean equity,
  sum(|notional| of every fill) / mean(equity) / years. Each fill counts once, so switching
  the whole book from one stock to another counts 2.0 (the sell and the buy), and the initial
  all-cash purchase counts 1.0. 0 without fills (the benchmark).
- ``exposure``: mean gross exposure (sum |position value| / equity); 1.0 for the benchmark.
- ``fees_paid``, ``slippage_paid``: USD totals over the fills; 0 without fills.

A ratio whose denominator is zero (no volatility, no downside, no time) is NaN; a standard
deviation below 1e-9 of the mean return (rounding noise of a constant series) counts as zero.

Rolling and relative measures (the tear sheet)
----------------------------------------------
- ``rolling_*`` take daily returns and a trailing ``window`` (126 sessions, about six months,
  by default) and return an array as long as the returns: value ``i`` uses returns
  ``i - window + 1 .. i``; the first ``window - 1`` values, and every window holding a NaN,
  are NaN. ``rolling_sharpe`` and ``rolling_volatility`` annualise like ``sharpe`` and
  ``volatility``; ``rolling_beta`` is cov(r, b) / var(b) over the window.
- ``alpha_beta``: ordinary least squares of the strategy's daily simple returns on the
  comparison's, ``r = a + beta * b``, risk-free rate zero (CAPM); alpha is annualised as
  ``a x 252`` (arithmetic, not compounded).
- ``tracking_error``: sample standard deviation (ddof=1) of the active return ``r - b`` x
  sqrt(252); ``information_ratio``: mean(r - b) / std(r - b) x sqrt(252).
- Relative measures use only the sessions where both returns are finite (pairwise), and are
  NaN with fewer than two such sessions or a comparison without variance.
- ``annual_returns``: compounded return of each calendar year, the first year from the first
  equity value, later years from the previous year's last value (as ``monthly_returns``).
- ``worst_drawdowns``: each drawdown runs from its peak (the last high before the fall) to its
  recovery (the first session back at or above the peak; none while still under water);
  ``depth`` is trough / peak - 1 (negative) and ``length`` counts the sessions from peak to
  recovery, or to the last session when not recovered.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = [
    "METRIC_KEYS",
    "RELATIVE_METRIC_KEYS",
    "ROLLING_WINDOW",
    "alpha_beta",
    "annual_returns",
    "annualised_volatility",
    "cagr",
    "calmar_ratio",
    "downside_deviation",
    "drawdown",
    "drawdown_periods",
    "drawdown_series",
    "information_ratio",
    "max_drawdown",
    "monthly_returns",
    "performance_metrics",
    "relative_metrics",
    "rolling_beta",
    "rolling_sharpe",
    "rolling_volatility",
    "sharpe_ratio",
    "simple_returns",
    "sortino_ratio",
    "total_return",
    "tracking_error",
    "turnover",
    "worst_drawdowns",
]

METRIC_KEYS = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "turnover",
    "exposure",
    "fees_paid",
    "slippage_paid",
)

#: Keys of :func:`relative_metrics`, in order.
RELATIVE_METRIC_KEYS = ("alpha", "beta", "correlation", "tracking_error", "information_ratio")
#: Default trailing window of the rolling measures: 126 sessions, about six months.
ROLLING_WINDOW = 126

_NAN = float("nan")
_DAYS_PER_YEAR = 365.25


# --------------------------------------------------------------------------- array measures


def simple_returns(equity: np.ndarray) -> np.ndarray:
    """Period-over-period simple returns (one fewer than ``equity``)."""
    equity = np.asarray(equity, dtype=np.float64)
    return equity[1:] / equity[:-1] - 1.0


def total_return(equity: np.ndarray) -> float:
    """Last value over first value, minus one."""
    equity = np.asarray(equity, dtype=np.float64)
    if len(equity) == 0 or equity[0] == 0:
        return _NAN
    return float(equity[-1] / equity[0] - 1.0)


def cagr(equity: np.ndarray, years: float) -> float:
    """Compound annual growth rate of ``equity`` over ``years`` of calendar time."""
    growth = total_return(equity) + 1.0
    if not years > 0 or not growth >= 0:
        return _NAN
    return float(growth ** (1.0 / years) - 1.0)


def annualised_volatility(returns: np.ndarray, periods_per_year: int = 252) -> float:
    """Sample standard deviation (ddof=1) of ``returns`` x sqrt(periods_per_year)."""
    returns = np.asarray(returns, dtype=np.float64)
    if len(returns) < 2:
        return _NAN
    return float(np.std(returns, ddof=1) * math.sqrt(periods_per_year))


def sharpe_ratio(returns: np.ndarray, periods_per_year: int = 252) -> float:
    """Annualised mean over standard deviation of ``returns`` (risk-free rate zero)."""
    returns = np.asarray(returns, dtype=np.float64)
    if len(returns) < 2:
        return _NAN
    mean = np.mean(returns)
    std = np.std(returns, ddof=1)
    # A constant series has a "std" of rounding noise (~1e-15); its ratio means nothing.
    if not std > 1e-9 * abs(mean):
        return _NAN
    return float(mean / std * math.sqrt(periods_per_year))


def downside_deviation(returns: np.ndarray) -> float:
    """sqrt(mean(min(r, 0)^2)): the root mean square of the losses, target 0."""
    returns = np.asarray(returns, dtype=np.float64)
    if len(returns) == 0:
        return _NAN
    return float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))


def sortino_ratio(returns: np.ndarray, periods_per_year: int = 252) -> float:
    """Annualised mean over downside deviation of ``returns`` (target 0)."""
    downside = downside_deviation(returns)
    if not downside > 0:
        return _NAN
    return float(np.mean(returns) / downside * math.sqrt(periods_per_year))


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Equity over its running peak, minus one (0 at a new high, negative below it)."""
    equity = np.asarray(equity, dtype=np.float64)
    if len(equity) == 0:
        return equity.copy()
    return equity / np.maximum.accumulate(equity) - 1.0


def max_drawdown(equity: np.ndarray) -> float:
    """The most negative value of :func:`drawdown` (0 for a curve that never falls)."""
    dd = drawdown(equity)
    return float(dd.min()) if len(dd) else _NAN


def calmar_ratio(cagr_value: float, max_drawdown_value: float) -> float:
    """CAGR over |max drawdown|; NaN when there was no drawdown."""
    if not abs(max_drawdown_value) > 0:
        return _NAN
    return float(cagr_value / abs(max_drawdown_value))


def turnover(traded_notional: np.ndarray, mean_equity: float, years: float) -> float:
    """sum(|traded notional|) / mean equity / years (see the module docstring)."""
    traded = float(np.abs(np.asarray(traded_notional, dtype=np.float64)).sum())
    if traded == 0.0:
        return 0.0
    if not years > 0 or not mean_equity > 0:
        return _NAN
    return traded / mean_equity / years


def _check_window(window: int) -> None:
    if window < 2:
        raise ValueError(f"window must be at least 2 sessions, got {window}")


def _windows(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing windows of ``values``: row ``j`` holds ``values[j : j + window]``."""
    return np.lib.stride_tricks.sliding_window_view(values, window)


def _pad(values: np.ndarray, n: int) -> np.ndarray:
    """``values`` of the complete windows, preceded by NaN up to length ``n``."""
    out = np.full(n, np.nan)
    if len(values):
        out[n - len(values) :] = values
    return out


def rolling_volatility(
    returns: np.ndarray, window: int = ROLLING_WINDOW, periods_per_year: int = 252
) -> np.ndarray:
    """Annualised volatility over a trailing window.

    Parameters
    ----------
    returns
        Daily simple returns.
    window
        Sessions per window (at least 2).
    periods_per_year
        Sessions per year used to annualise.

    Returns
    -------
    numpy.ndarray
        As long as ``returns``; NaN until the first complete window and for windows with a NaN.
    """
    returns = np.asarray(returns, dtype=np.float64)
    n = len(returns)
    _check_window(window)
    if n < window:
        return np.full(n, np.nan)
    std = np.std(_windows(returns, window), axis=1, ddof=1)
    return _pad(std * math.sqrt(periods_per_year), n)


def rolling_sharpe(
    returns: np.ndarray, window: int = ROLLING_WINDOW, periods_per_year: int = 252
) -> np.ndarray:
    """Annualised Sharpe ratio (risk-free rate zero) over a trailing window.

    Parameters
    ----------
    returns
        Daily simple returns.
    window
        Sessions per window (at least 2).
    periods_per_year
        Sessions per year used to annualise.

    Returns
    -------
    numpy.ndarray
        As long as ``returns``; NaN until the first complete window, for windows with a NaN
        and for windows without variance (see :func:`sharpe_ratio`).
    """
    returns = np.asarray(returns, dtype=np.float64)
    n = len(returns)
    _check_window(window)
    if n < window:
        return np.full(n, np.nan)
    rows = _windows(returns, window)
    mean = rows.mean(axis=1)
    std = rows.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(std > 1e-9 * np.abs(mean), mean / std, np.nan)
    return _pad(ratio * math.sqrt(periods_per_year), n)


def rolling_beta(
    returns: np.ndarray, benchmark_returns: np.ndarray, window: int = ROLLING_WINDOW
) -> np.ndarray:
    """Beta of ``returns`` to ``benchmark_returns`` over a trailing window.

    Parameters
    ----------
    returns, benchmark_returns
        Daily simple returns on the same sessions (equal lengths).
    window
        Sessions per window (at least 2).

    Returns
    -------
    numpy.ndarray
        cov(r, b) / var(b) per window, as long as ``returns``; NaN until the first complete
        window, for windows with a NaN in either series and where ``b`` has no variance.
    """
    returns, benchmark_returns = _pair(returns, benchmark_returns)
    n = len(returns)
    _check_window(window)
    if n < window:
        return np.full(n, np.nan)
    r = _windows(returns, window)
    b = _windows(benchmark_returns, window)
    b_dev = b - b.mean(axis=1, keepdims=True)
    cov = np.sum((r - r.mean(axis=1, keepdims=True)) * b_dev, axis=1)
    var = np.sum(b_dev**2, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.where(var > 0, cov / var, np.nan)
    return _pad(beta, n)


def _pair(returns: np.ndarray, benchmark_returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    returns = np.asarray(returns, dtype=np.float64)
    benchmark_returns = np.asarray(benchmark_returns, dtype=np.float64)
    if returns.shape != benchmark_returns.shape:
        raise ValueError(
            f"returns and benchmark_returns differ in length ({len(returns)} vs "
            f"{len(benchmark_returns)}): align them on the same sessions first"
        )
    return returns, benchmark_returns


def _finite_pairs(
    returns: np.ndarray, benchmark_returns: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    returns, benchmark_returns = _pair(returns, benchmark_returns)
    both = np.isfinite(returns) & np.isfinite(benchmark_returns)
    return returns[both], benchmark_returns[both]


def alpha_beta(
    returns: np.ndarray, benchmark_returns: np.ndarray, periods_per_year: int = 252
) -> tuple[float, float]:
    """CAPM regression ``r = a + beta * b`` of daily simple returns (risk-free rate zero).

    Parameters
    ----------
    returns, benchmark_returns
        Daily simple returns of the strategy and the comparison on the same sessions;
        sessions where either is NaN are left out.
    periods_per_year
        Sessions per year: alpha is ``a x periods_per_year``.

    Returns
    -------
    tuple of float
        ``(alpha, beta)``: annualised alpha and beta; both NaN with fewer than two sessions
        or a comparison without variance.
    """
    r, b = _finite_pairs(returns, benchmark_returns)
    if len(r) < 2:
        return _NAN, _NAN
    b_dev = b - b.mean()
    var = float(np.sum(b_dev**2))
    if not var > 0:
        return _NAN, _NAN
    beta = float(np.sum((r - r.mean()) * b_dev) / var)
    alpha = float(r.mean() - beta * b.mean())
    return alpha * periods_per_year, beta


def tracking_error(
    returns: np.ndarray, benchmark_returns: np.ndarray, periods_per_year: int = 252
) -> float:
    """Annualised standard deviation (ddof=1) of the active return ``r - b``.

    Parameters
    ----------
    returns, benchmark_returns
        Daily simple returns on the same sessions; sessions where either is NaN are left out.
    periods_per_year
        Sessions per year used to annualise.
    """
    r, b = _finite_pairs(returns, benchmark_returns)
    return annualised_volatility(r - b, periods_per_year)


def information_ratio(
    returns: np.ndarray, benchmark_returns: np.ndarray, periods_per_year: int = 252
) -> float:
    """Annualised mean over standard deviation (ddof=1) of the active return ``r - b``.

    Parameters
    ----------
    returns, benchmark_returns
        Daily simple returns on the same sessions; sessions where either is NaN are left out.
    periods_per_year
        Sessions per year used to annualise.
    """
    r, b = _finite_pairs(returns, benchmark_returns)
    return sharpe_ratio(r - b, periods_per_year)


def drawdown_periods(equity: np.ndarray) -> np.ndarray:
    """Every drawdown of ``equity``, in time order.

    Parameters
    ----------
    equity
        Portfolio values (finite).

    Returns
    -------
    numpy.ndarray
        One row per drawdown, integer columns ``peak, trough, recovery``: the positions of the
        last high before the fall, of the lowest value, and of the first value back at or
        above the peak (-1 while still under water). The depth is
        ``equity[trough] / equity[peak] - 1``.
    """
    dd = drawdown(equity)
    if len(dd) == 0:
        return np.empty((0, 3), dtype=np.int64)
    under = dd < 0
    edges = np.diff(np.concatenate(([False], under, [False])).astype(np.int8))
    first_under = np.flatnonzero(edges == 1)
    back = np.flatnonzero(edges == -1)  # first position at a high again (len(dd) if never)
    rows = np.empty((len(first_under), 3), dtype=np.int64)
    for k, (i, j) in enumerate(zip(first_under, back, strict=True)):
        rows[k] = (i - 1, i + int(np.argmin(dd[i:j])), j if j < len(dd) else -1)
    return rows


# --------------------------------------------------------------------------- pandas wrappers


def _years(index: pd.Index) -> float:
    if len(index) < 2:
        return 0.0
    return (pd.Timestamp(index[-1]) - pd.Timestamp(index[0])).days / _DAYS_PER_YEAR


def performance_metrics(
    equity: pd.Series,
    fills: pd.DataFrame | None = None,
    gross_exposure: pd.Series | None = None,
    periods_per_year: int = 252,
) -> dict[str, float]:
    """All of :data:`METRIC_KEYS` for one equity curve (see the module docstring).

    Parameters
    ----------
    equity
        Portfolio value at each session close, indexed by date. NaNs are dropped.
    fills
        The engine's fills (``notional``, ``fees``, ``slippage_cost``); None for a benchmark.
    gross_exposure
        Gross exposure per session; None means fully invested (1.0).
    periods_per_year
        Sessions per year used to annualise volatility, Sharpe and Sortino.
    """
    equity = equity.dropna()
    values = equity.to_numpy(dtype=np.float64)
    returns = simple_returns(values)
    years = _years(equity.index)
    growth = cagr(values, years)
    worst = max_drawdown(values)
    if fills is None or fills.empty:
        fees = slipped = 0.0
        notional = np.empty(0)
    else:
        notional = fills["notional"].to_numpy(dtype=np.float64)
        fees = float(fills["fees"].sum())
        slipped = float(fills["slippage_cost"].sum())
    if gross_exposure is None:
        exposure = 1.0
    else:
        exposure = float(gross_exposure.reindex(equity.index).mean()) if len(equity) else _NAN
    mean_equity = float(values.mean()) if len(values) else _NAN
    return {
        "total_return": total_return(values),
        "cagr": growth,
        "volatility": annualised_volatility(returns, periods_per_year),
        "sharpe": sharpe_ratio(returns, periods_per_year),
        "sortino": sortino_ratio(returns, periods_per_year),
        "max_drawdown": worst,
        "calmar": calmar_ratio(growth, worst),
        "turnover": turnover(notional, mean_equity, years),
        "exposure": exposure,
        "fees_paid": fees,
        "slippage_paid": slipped,
    }


def drawdown_series(equity: pd.Series) -> pd.Series:
    """:func:`drawdown` of ``equity`` as a Series on its index."""
    equity = equity.dropna()
    return pd.Series(drawdown(equity.to_numpy()), index=equity.index, name="drawdown")


def monthly_returns(equity: pd.Series) -> pd.DataFrame:
    """Compounded return of each calendar month, years x months (1..12), NaN where no data.

    The first month's return is measured from the first equity value, every later month's
    from the previous month's last value.
    """
    equity = equity.dropna()
    columns = pd.Index(range(1, 13), name="month")
    if equity.empty:
        return pd.DataFrame(columns=columns, dtype=np.float64).rename_axis(index="year")
    index = pd.DatetimeIndex(equity.index)
    month_end = equity.groupby([index.year, index.month]).last()
    previous = month_end.shift(1)
    previous.iloc[0] = equity.iloc[0]
    returns = month_end / previous - 1.0
    returns.index = returns.index.set_names(["year", "month"])
    table = returns.unstack("month").reindex(columns=columns)
    return table.astype(np.float64)


def annual_returns(equity: pd.Series) -> pd.Series:
    """Compounded return of each calendar year, indexed by year (see the module docstring)."""
    equity = equity.dropna()
    if equity.empty:
        return pd.Series(dtype=np.float64, index=pd.Index([], name="year"), name="annual_return")
    year_end = equity.groupby(pd.DatetimeIndex(equity.index).year).last()
    previous = year_end.shift(1)
    previous.iloc[0] = equity.iloc[0]
    returns = (year_end / previous - 1.0).astype(np.float64)
    return returns.rename_axis("year").rename("annual_return")


def worst_drawdowns(equity: pd.Series, n: int = 5) -> pd.DataFrame:
    """The ``n`` deepest drawdowns of ``equity``, deepest first.

    Parameters
    ----------
    equity
        Portfolio value at each session close, indexed by date. NaNs are dropped.
    n
        How many drawdowns to return at most.

    Returns
    -------
    pandas.DataFrame
        Columns ``start`` (the peak's date), ``trough``, ``recovery`` (NaT while not
        recovered), ``depth`` (negative fraction) and ``length`` (sessions from peak to
        recovery, or to the last session when not recovered); see :func:`drawdown_periods`.
    """
    equity = equity.dropna()
    values = equity.to_numpy(dtype=np.float64)
    periods = drawdown_periods(values)
    columns = ["start", "trough", "recovery", "depth", "length"]
    if len(periods) == 0 or n <= 0:
        empty = {c: pd.Series(dtype="datetime64[ns]") for c in columns[:3]}
        return pd.DataFrame({**empty, "depth": pd.Series(dtype=np.float64),
                             "length": pd.Series(dtype=np.int64)})  # fmt: skip
    peak, trough, recovery = periods.T
    depth = values[trough] / values[peak] - 1.0
    order = np.argsort(depth, kind="stable")[:n]
    dates = pd.DatetimeIndex(equity.index)
    recovered = recovery >= 0
    end = np.where(recovered, recovery, len(values) - 1)
    recovery_dates = dates[np.maximum(recovery, 0)].where(recovered)
    return pd.DataFrame(
        {
            "start": dates[peak[order]],
            "trough": dates[trough[order]],
            "recovery": recovery_dates[order],
            "depth": depth[order],
            "length": (end - peak)[order].astype(np.int64),
        }
    )


def relative_metrics(
    equity: pd.Series, benchmark_equity: pd.Series, periods_per_year: int = 252
) -> dict[str, float]:
    """:data:`RELATIVE_METRIC_KEYS` of ``equity`` against ``benchmark_equity``.

    Both curves are reduced to the sessions where both have a value, then turned into daily
    simple returns. ``correlation`` is Pearson's, of those returns.

    Parameters
    ----------
    equity, benchmark_equity
        Portfolio values at each session close, indexed by date.
    periods_per_year
        Sessions per year used to annualise alpha, tracking error and information ratio.
    """
    both = pd.concat([equity, benchmark_equity], axis=1, join="inner").dropna()
    r = simple_returns(both.iloc[:, 0].to_numpy(dtype=np.float64))
    b = simple_returns(both.iloc[:, 1].to_numpy(dtype=np.float64))
    alpha, beta = alpha_beta(r, b, periods_per_year)
    if len(r) >= 2 and np.std(r) > 0 and np.std(b) > 0:
        correlation = float(np.corrcoef(r, b)[0, 1])
    else:
        correlation = _NAN
    return {
        "alpha": alpha,
        "beta": beta,
        "correlation": correlation,
        "tracking_error": tracking_error(r, b, periods_per_year),
        "information_ratio": information_ratio(r, b, periods_per_year),
    }
