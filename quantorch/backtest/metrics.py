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
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = [
    "METRIC_KEYS",
    "annualised_volatility",
    "cagr",
    "calmar_ratio",
    "downside_deviation",
    "drawdown",
    "drawdown_series",
    "max_drawdown",
    "monthly_returns",
    "performance_metrics",
    "sharpe_ratio",
    "simple_returns",
    "sortino_ratio",
    "total_return",
    "turnover",
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
