"""Performance and risk measures: the one place quantorch computes them.

The measures are pure functions on numpy arrays (skfolio's ``measures`` style);
:func:`performance_metrics` is the thin pandas wrapper the runner and the report use, the
``risk`` tool reads its volatility, downside deviation and drawdown from here, and
``quantorch evaluate`` its Sharpe, CAGR and bootstrap intervals.

Shapes and missing values
-------------------------
- ``drawdown``, ``max_drawdown``, ``annualised_volatility``, ``sharpe_ratio``,
  ``downside_deviation``, ``sortino_ratio``, ``rolling_volatility`` and
  ``rolling_downside_deviation`` take a 1-D series or a 2-D (sessions x series) array and work
  along axis 0: a 2-D input gives, column by column, exactly (bit for bit) what each column
  gives alone. Reductions return a float for 1-D input and one value per column for 2-D
  input; ``drawdown`` and the rolling measures return an array of the input's shape. The other
  measures take 1-D input.
- A NaN return makes a reduction NaN (nothing is skipped) and a rolling window holding it NaN.
  ``drawdown`` is NaN where the value is NaN, and the running peak carries over the gap (the
  peak of the finite values so far), so a missing bar does not reset it.

Conventions
-----------
- Returns are daily simple returns of the equity curve; every figure is a fraction
  (0.12 = 12%). Annualisation uses ``periods_per_year`` (252).
- ``volatility``: sample standard deviation (ddof=1) x sqrt(252).
- ``sharpe``: mean / standard deviation x sqrt(252), risk-free rate zero.
- ``sortino``: mean / downside deviation x sqrt(252); the downside deviation is
  sqrt(mean(min(r, 0)^2)) over all periods (target 0), as in empyrical.
- ``cagr``: compound growth over calendar time, years = days between the first and last
  equity dates / 365.25. :func:`cagr_from_returns` is the session-count convention
  ``quantorch evaluate`` uses on resampled returns (years = number of returns / 252).
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
deviation below 1e-9 of the mean return (rounding noise of a constant series) counts as zero
(``sharpe_ratio(..., noise_floor=...)``; ``quantorch evaluate``'s bootstrap passes 0, the
convention it has always used: only an exactly zero deviation is NaN).

Rolling and relative measures (the tear sheet)
----------------------------------------------
- ``rolling_*`` take daily returns and a trailing ``window`` (126 sessions, about six months,
  by default) and return an array as long as the returns: value ``i`` uses returns
  ``i - window + 1 .. i``; the first ``window - 1`` values, and every window holding a NaN,
  are NaN. ``rolling_sharpe`` and ``rolling_volatility`` annualise like ``sharpe`` and
  ``volatility``, ``rolling_downside_deviation`` annualises the downside deviation the same
  way (x sqrt(252), unlike the full-period ``downside_deviation`` the Sortino ratio divides
  by); ``rolling_beta`` is cov(r, b) / var(b) over the window. ``rolling_volatility`` and
  ``rolling_downside_deviation`` use pandas' O(n) rolling kernels (a 20-stock, 33-year panel
  would need gigabytes as explicit windows); ``rolling_sharpe`` and ``rolling_beta`` use
  explicit windows (1-D only).
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

Resampling
----------
- :func:`stationary_block_bootstrap`: Politis and Romano's stationary bootstrap. A resample
  is as long as the series and made of blocks that start at a uniformly drawn session and
  run on (wrapping around at the end) for a geometric number of sessions with mean ``block``
  (21 by default, about a month). The interval is the 2.5% and 97.5% quantiles of the
  statistic over ``resamples`` resamples (1,000), leaving out resamples where it is not
  finite; a series shorter than two sessions, or no finite value, gives (NaN, NaN). The draws
  depend only on the series length and ``seed``.
- Rows are resampled whole: a 2-D (sessions x series) input keeps its series paired on the
  same days, which is what a difference of two strategies' Sharpe ratios needs
  (:func:`paired_block_bootstrap`).
- :func:`sharpe_difference`: the annualised Sharpe difference of two aligned daily return
  series with a paired stationary-bootstrap 95% percentile interval, drawn by
  ``arch.bootstrap.StationaryBootstrap`` (both series indexed by the same resampled days).

Selection bias (Bailey and Lopez de Prado)
------------------------------------------
- :func:`probabilistic_sharpe_ratio`, :func:`expected_max_sharpe` and
  :func:`deflated_sharpe_ratio` follow Bailey and Lopez de Prado, "The Deflated Sharpe Ratio:
  Correcting for Selection Bias, Backtest Overfitting and Non-Normality" (Journal of Portfolio
  Management, 2014). They take *per-period* (not annualised) Sharpe ratios, the number of
  returns ``T``, the skewness and the (Pearson, non-excess: 3 for a normal) kurtosis of the
  returns: ``scipy.stats.skew(r)`` and ``scipy.stats.kurtosis(r, fisher=False)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
    "cagr_from_returns",
    "calmar_ratio",
    "downside_deviation",
    "drawdown",
    "drawdown_periods",
    "drawdown_series",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "information_ratio",
    "max_drawdown",
    "monthly_returns",
    "paired_block_bootstrap",
    "performance_metrics",
    "probabilistic_sharpe_ratio",
    "relative_metrics",
    "rolling_beta",
    "rolling_downside_deviation",
    "rolling_sharpe",
    "rolling_volatility",
    "SharpeDifference",
    "sharpe_difference",
    "sharpe_ratio",
    "simple_returns",
    "sortino_ratio",
    "stationary_block_bootstrap",
    "stationary_bootstrap_indices",
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


def cagr_from_returns(returns: np.ndarray, periods_per_year: int = 252) -> float:
    """Compound annual growth rate of daily ``returns``, counting sessions, not calendar days.

    Growth is prod(1 + r) and years = len(returns) / ``periods_per_year``. This is the
    convention of ``quantorch evaluate``'s bootstrap, whose resampled days have no dates;
    :func:`cagr` (calendar time) is the one the run metrics report.

    Returns
    -------
    float
        NaN without returns or unless the growth is positive (a resample that loses
        everything has no geometric rate and is left out of the interval), where :func:`cagr`
        gives -1.0 for a curve that ends at exactly zero.
    """
    returns = np.asarray(returns, dtype=np.float64)
    growth = float(np.prod(1 + returns))
    years = len(returns) / periods_per_year
    return growth ** (1 / years) - 1 if growth > 0 and years > 0 else _NAN


def _series_or_panel(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim not in (1, 2):
        raise ValueError(
            f"expected a 1-D series or a 2-D (sessions x series) array, got {values.ndim}-D"
        )
    return values


def _per_column(
    kernel: Callable[..., float], values: np.ndarray, *args: object
) -> float | np.ndarray:
    """``kernel`` on a 1-D series, or on each column of a 2-D array (one value per column).

    Each column goes through the 1-D kernel as a contiguous copy, so a column of a panel gives
    the same bits as the series alone (numpy sums a 2-D array along axis 0 in another order).
    """
    values = _series_or_panel(values)
    if values.ndim == 1:
        return kernel(values, *args)
    return np.array(
        [kernel(np.ascontiguousarray(values[:, j]), *args) for j in range(values.shape[1])],
        dtype=np.float64,
    )


def _volatility(returns: np.ndarray, periods_per_year: int) -> float:
    if len(returns) < 2:
        return _NAN
    return float(np.std(returns, ddof=1) * math.sqrt(periods_per_year))


def annualised_volatility(returns: np.ndarray, periods_per_year: int = 252) -> float | np.ndarray:
    """Sample standard deviation (ddof=1) of ``returns`` x sqrt(periods_per_year).

    1-D: a float; 2-D (sessions x series): one value per column. NaN with fewer than two
    returns or a NaN among them.
    """
    return _per_column(_volatility, returns, periods_per_year)


def _sharpe(returns: np.ndarray, periods_per_year: int, noise_floor: float) -> float:
    if len(returns) < 2:
        return _NAN
    mean = np.mean(returns)
    std = np.std(returns, ddof=1)
    if not std > noise_floor * abs(mean):
        return _NAN
    return float(mean / std * math.sqrt(periods_per_year))


def sharpe_ratio(
    returns: np.ndarray, periods_per_year: int = 252, *, noise_floor: float = 1e-9
) -> float | np.ndarray:
    """Annualised mean over standard deviation (ddof=1) of ``returns`` (risk-free rate zero).

    Parameters
    ----------
    returns
        Daily simple returns: 1-D (a float back) or 2-D sessions x series (one per column).
    periods_per_year
        Sessions per year used to annualise.
    noise_floor
        A standard deviation at or below ``noise_floor x |mean|`` counts as zero and the ratio
        is NaN: a constant series has a "std" of rounding noise (~1e-15) and its ratio means
        nothing. The run metrics use the default 1e-9; ``quantorch evaluate``'s bootstrap
        passes 0 (its convention: only an exactly zero deviation gives NaN).
    """
    return _per_column(_sharpe, returns, periods_per_year, noise_floor)


def _downside(returns: np.ndarray, target: float) -> float:
    if len(returns) == 0:
        return _NAN
    return float(np.sqrt(np.mean(np.minimum(returns - target, 0.0) ** 2)))


def downside_deviation(returns: np.ndarray, target: float = 0.0) -> float | np.ndarray:
    """sqrt(mean(min(r - target, 0)^2)): the root mean square of the shortfalls, per period.

    Not annualised (the Sortino ratio annualises its quotient); see
    :func:`rolling_downside_deviation` for the annualised trailing-window version. 1-D: a
    float; 2-D: one value per column.
    """
    return _per_column(_downside, returns, target)


def _sortino(returns: np.ndarray, periods_per_year: int) -> float:
    downside = _downside(returns, 0.0)
    if not downside > 0:
        return _NAN
    return float(np.mean(returns) / downside * math.sqrt(periods_per_year))


def sortino_ratio(returns: np.ndarray, periods_per_year: int = 252) -> float | np.ndarray:
    """Annualised mean over downside deviation of ``returns`` (target 0); per column for 2-D."""
    return _per_column(_sortino, returns, periods_per_year)


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Equity over its running peak, minus one (0 at a new high, negative below it).

    ``equity`` is 1-D or 2-D (sessions x series, each column on its own). The peak is the
    highest finite value so far: a NaN value gives NaN and the peak carries over it.
    """
    equity = np.asarray(equity, dtype=np.float64)
    if len(equity) == 0:
        return equity.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return equity / np.fmax.accumulate(equity, axis=0) - 1.0


def _max_drawdown(equity: np.ndarray) -> float:
    dd = drawdown(equity)
    dd = dd[~np.isnan(dd)]
    return float(dd.min()) if len(dd) else _NAN


def max_drawdown(equity: np.ndarray) -> float | np.ndarray:
    """The most negative value of :func:`drawdown` (0 for a curve that never falls).

    NaN values are left out; NaN for a curve with no value. 2-D: one value per column.
    """
    return _per_column(_max_drawdown, equity)


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


def _rolling(values: np.ndarray, window: int, stat: str) -> np.ndarray:
    """pandas' rolling ``stat`` (``std`` with ddof=1, or ``mean``) over complete windows only,
    column by column, in the input's shape."""
    values = _series_or_panel(values)
    _check_window(window)
    if len(values) == 0:
        return np.full(values.shape, np.nan)
    frame = pd.DataFrame(values.reshape(len(values), -1))
    rolling = frame.rolling(window, min_periods=window)
    out = (rolling.std(ddof=1) if stat == "std" else rolling.mean()).to_numpy()
    return out.reshape(values.shape)


def rolling_volatility(
    returns: np.ndarray, window: int = ROLLING_WINDOW, periods_per_year: int = 252
) -> np.ndarray:
    """Annualised volatility (sample standard deviation, ddof=1) over a trailing window.

    Parameters
    ----------
    returns
        Daily simple returns: 1-D, or 2-D sessions x series (each column on its own).
    window
        Sessions per window (at least 2).
    periods_per_year
        Sessions per year used to annualise.

    Returns
    -------
    numpy.ndarray
        The shape of ``returns``; NaN until the first complete window and for windows with a
        NaN.
    """
    return _rolling(returns, window, "std") * math.sqrt(periods_per_year)


def rolling_downside_deviation(
    returns: np.ndarray,
    window: int = ROLLING_WINDOW,
    target: float = 0.0,
    periods_per_year: int = 252,
) -> np.ndarray:
    """Annualised downside deviation over a trailing window: sqrt(mean(min(r - target, 0)^2))
    x sqrt(periods_per_year).

    Parameters
    ----------
    returns
        Daily simple returns: 1-D, or 2-D sessions x series (each column on its own).
    window
        Sessions per window (at least 2).
    target
        The return below which a session counts as a shortfall.
    periods_per_year
        Sessions per year used to annualise (the full-period :func:`downside_deviation` is
        not annualised).

    Returns
    -------
    numpy.ndarray
        The shape of ``returns``; NaN until the first complete window and for windows with a
        NaN.
    """
    shortfall = np.minimum(np.asarray(returns, dtype=np.float64) - target, 0.0) ** 2
    return np.sqrt(_rolling(shortfall, window, "mean")) * math.sqrt(periods_per_year)


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


# --------------------------------------------------------------------------- resampling


def stationary_bootstrap_indices(
    n: int, *, block: float = 21, resamples: int = 1000, seed: int = 0
) -> Iterator[np.ndarray]:
    """Row indices of stationary-bootstrap resamples (Politis-Romano) of ``n`` sessions.

    Yields ``resamples`` integer arrays of length ``n``. Each resample is made of blocks: a
    block starts at a uniformly drawn session and runs on, wrapping around after the last
    session, until a new block starts, which happens at each session with probability
    1 / ``block`` (so blocks are geometric with mean ``block`` sessions). The draws depend only
    on ``n``, ``block``, ``resamples`` and ``seed``: indexing several series with the same
    arrays resamples them on the same days.
    """
    if n < 1:
        raise ValueError(f"need at least one session to resample, got {n}")
    if not block >= 1:
        raise ValueError(f"block must be at least 1 session on average, got {block}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    p = 1.0 / block
    positions = np.arange(n)
    for _ in range(resamples):
        starts = rng.integers(n, size=n)
        new_block = rng.random(n) < p
        new_block[0] = True
        # index = start of the current block + offset within it, wrapping around
        block_id = np.cumsum(new_block) - 1
        first_pos = np.flatnonzero(new_block)
        offset = positions - first_pos[block_id]
        yield (starts[first_pos][block_id] + offset) % n


def _interval(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return (_NAN, _NAN)
    return (float(np.quantile(finite, 0.025)), float(np.quantile(finite, 0.975)))


def stationary_block_bootstrap(
    returns: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    block: float = 21,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% interval of ``statistic`` under a stationary block bootstrap of ``returns``.

    Parameters
    ----------
    returns
        Daily returns, 1-D, or 2-D sessions x series: rows (days) are resampled whole, so the
        series stay paired on the same days.
    statistic
        Called on each resample (same shape as ``returns``), e.g. :func:`sharpe_ratio`.
    block
        Mean block length in sessions (see :func:`stationary_bootstrap_indices`).
    resamples
        Number of resamples.
    seed
        Seed of the draws: the same seed and length give the same resamples.

    Returns
    -------
    tuple of float
        The 2.5% and 97.5% quantiles of the finite values of ``statistic`` over the resamples;
        (NaN, NaN) with fewer than two sessions or no finite value.
    """
    returns = np.asarray(returns, dtype=np.float64)
    n = len(returns)
    if n < 2:
        return (_NAN, _NAN)
    values = np.empty(resamples)
    for b, idx in enumerate(
        stationary_bootstrap_indices(n, block=block, resamples=resamples, seed=seed)
    ):
        values[b] = statistic(returns[idx])
    return _interval(values)


def paired_block_bootstrap(
    returns: np.ndarray,
    other_returns: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], float],
    block: float = 21,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% interval of ``statistic(a, b)`` with both series resampled on the same days.

    For a difference of two strategies' figures over one period, e.g. the Sharpe difference
    ``lambda a, b: sharpe_ratio(a) - sharpe_ratio(b)``: resampling the days jointly keeps the
    correlation between the two, which independent resamples would throw away (and widen the
    interval). Same draws as :func:`stationary_block_bootstrap` for the same length and seed.

    Parameters
    ----------
    returns, other_returns
        Daily returns of the two series on the same sessions (equal lengths).
    statistic
        Called as ``statistic(a, b)`` on each pair of resamples.
    block, resamples, seed
        As in :func:`stationary_block_bootstrap`.
    """
    returns, other_returns = _pair(returns, other_returns)
    if returns.ndim != 1:
        raise ValueError("paired_block_bootstrap takes two 1-D series of returns")
    both = np.column_stack([returns, other_returns])
    return stationary_block_bootstrap(
        both, lambda rows: statistic(rows[:, 0], rows[:, 1]), block, resamples, seed
    )


@dataclass(frozen=True)
class SharpeDifference:
    """The annualised Sharpe difference ``a - b`` with its paired bootstrap 95% interval.

    ``low`` and ``high`` are the 2.5% and 97.5% quantiles of the difference over the
    ``resamples`` resamples (NaN when no resample gave a finite difference); ``block_mean`` is
    the mean block length in sessions; ``sessions`` the number of paired sessions used.
    """

    difference: float
    low: float
    high: float
    resamples: int
    block_mean: float
    sessions: int
    sharpe_a: float
    sharpe_b: float

    @property
    def significant(self) -> bool:
        """True when the whole interval lies on one side of zero."""
        return bool(self.low > 0 or self.high < 0)


def sharpe_difference(
    returns_a: np.ndarray,
    returns_b: np.ndarray,
    *,
    block_mean: float = 21,
    resamples: int = 1000,
    seed: int = 0,
    periods_per_year: int = 252,
) -> SharpeDifference:
    """Annualised Sharpe of ``returns_a`` minus that of ``returns_b``, with a paired interval.

    The interval comes from Politis and Romano's stationary bootstrap, drawn by
    ``arch.bootstrap.StationaryBootstrap``: each resample picks the *same* day indices for
    both series (geometric blocks of mean ``block_mean`` sessions, wrapping around), so the
    correlation between the two strategies is kept, and the interval is the 2.5% and 97.5%
    percentiles of the resampled differences (non-finite resamples left out).

    Parameters
    ----------
    returns_a, returns_b
        Daily simple returns of the two series on the same sessions (equal lengths). Sessions
        where either is NaN are left out of both (pairwise).
    block_mean
        Mean block length in sessions (21, about a month).
    resamples
        Number of bootstrap resamples.
    seed
        Seed of the draws: the same inputs and seed give the same interval.
    periods_per_year
        Sessions per year used to annualise both Sharpe ratios.

    Returns
    -------
    SharpeDifference
        NaN difference and interval with fewer than two paired sessions.
    """
    from arch.bootstrap import StationaryBootstrap

    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not block_mean >= 1:
        raise ValueError(f"block_mean must be at least 1 session, got {block_mean}")
    a, b = _finite_pairs(returns_a, returns_b)
    if a.ndim != 1:
        raise ValueError("sharpe_difference takes two 1-D series of returns")
    n = len(a)
    if n < 2:
        return SharpeDifference(_NAN, _NAN, _NAN, resamples, float(block_mean), n, _NAN, _NAN)
    sharpe_a = float(sharpe_ratio(a, periods_per_year))
    sharpe_b = float(sharpe_ratio(b, periods_per_year))

    def difference(x: np.ndarray, y: np.ndarray) -> float:  # the 1-D kernel: no per-call checks
        return _sharpe(x, periods_per_year, 1e-9) - _sharpe(y, periods_per_year, 1e-9)

    bootstrap = StationaryBootstrap(block_mean, a, b, seed=np.random.default_rng(seed))
    values = np.fromiter(
        (difference(x, y) for (x, y), _ in bootstrap.bootstrap(resamples)),
        dtype=np.float64,
        count=resamples,
    )
    low, high = _interval(values)
    return SharpeDifference(
        sharpe_a - sharpe_b, low, high, resamples, float(block_mean), n, sharpe_a, sharpe_b
    )


#: Euler-Mascheroni constant (the expected maximum of Gaussians, Bailey and Lopez de Prado).
_EULER_GAMMA = 0.5772156649015329


def probabilistic_sharpe_ratio(
    sharpe: float,
    sessions: int,
    *,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
    benchmark_sharpe: float = 0.0,
) -> float:
    """Probability that the true Sharpe ratio exceeds ``benchmark_sharpe`` (PSR).

    ``PSR = Phi((SR - SR*) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1) / 4 SR^2))``
    (Bailey and Lopez de Prado 2012, eq. 2 of the 2014 paper), with per-period (not
    annualised) Sharpe ratios ``sharpe`` and ``benchmark_sharpe`` of ``sessions`` returns
    whose skewness and Pearson kurtosis (3 for a normal) are given.

    Returns
    -------
    float
        In [0, 1]; NaN with fewer than two sessions, a non-finite input, or a variance term
        that is not positive (an impossible skewness/kurtosis pair).
    """
    values = (sharpe, skewness, kurtosis, benchmark_sharpe)
    if sessions < 2 or not all(math.isfinite(v) for v in values):
        return _NAN
    variance = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if not variance > 0:
        return _NAN
    from scipy.stats import norm

    z = (sharpe - benchmark_sharpe) * math.sqrt(sessions - 1) / math.sqrt(variance)
    return float(norm.cdf(z))


def expected_max_sharpe(trials: int, sharpe_variance: float, mean_sharpe: float = 0.0) -> float:
    """Expected maximum Sharpe ratio of ``trials`` independent trials whose true Sharpe is 0.

    ``E[max SR] ~ mean + sqrt(V) ((1 - g) Phi^-1(1 - 1/N) + g Phi^-1(1 - 1/(N e)))``, ``g``
    the Euler-Mascheroni constant, ``V`` the variance of the trials' Sharpe ratios (in the
    same units as the Sharpe compared with it: per period for :func:`deflated_sharpe_ratio`).
    One trial gives ``mean_sharpe`` (nothing was selected).
    """
    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if not sharpe_variance >= 0:
        raise ValueError(f"sharpe_variance must be >= 0, got {sharpe_variance}")
    if trials == 1:
        return float(mean_sharpe)
    from scipy.stats import norm

    z = (1 - _EULER_GAMMA) * norm.ppf(1 - 1 / trials) + _EULER_GAMMA * norm.ppf(
        1 - 1 / (trials * math.e)
    )
    return float(mean_sharpe + math.sqrt(sharpe_variance) * z)


def deflated_sharpe_ratio(
    sharpe: float,
    sessions: int,
    *,
    trials: int,
    sharpe_variance: float,
    skewness: float = 0.0,
    kurtosis: float = 3.0,
) -> float:
    """Deflated Sharpe Ratio: the PSR against the expected maximum Sharpe of ``trials`` trials.

    ``DSR = PSR(SR0)`` with ``SR0 = expected_max_sharpe(trials, sharpe_variance)`` (Bailey and
    Lopez de Prado 2014, eq. 2-3): the probability that the selected strategy's true Sharpe
    beats what the best of ``trials`` skill-less trials would show by luck.

    Parameters
    ----------
    sharpe
        Observed per-period (not annualised) Sharpe ratio of the selected strategy.
    sessions
        Number of returns ``T`` behind it.
    trials
        Number of independent trials (orchestrators x profiles tried).
    sharpe_variance
        Variance of the trials' per-period Sharpe ratios (annualised variance / 252).
    skewness, kurtosis
        Skewness and Pearson kurtosis (3 for a normal) of the selected strategy's returns.

    Notes
    -----
    The unit test reproduces the paper's numerical example (N = 100 trials, annualised
    variance 0.5, annualised SR 2.5 over 5 years of 250 daily returns, skewness -3,
    kurtosis 10: SR0 = 0.1132 per day and DSR = 0.9004) and checks an independent
    scipy implementation and the limiting cases (one trial: DSR = PSR(0)).
    """
    threshold = expected_max_sharpe(trials, sharpe_variance)
    return probabilistic_sharpe_ratio(
        sharpe, sessions, skewness=skewness, kurtosis=kurtosis, benchmark_sharpe=threshold
    )


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
