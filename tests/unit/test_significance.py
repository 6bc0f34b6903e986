"""Paired Sharpe difference and the Deflated Sharpe Ratio (quantorch.backtest.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from quantorch.backtest.metrics import (
    SharpeDifference,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    paired_block_bootstrap,
    probabilistic_sharpe_ratio,
    sharpe_difference,
    sharpe_ratio,
)


@pytest.fixture(scope="module")
def two_stocks(sp500_closes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Daily returns of two real, correlated stocks over 2010-2019 (skfolio's S&P 500 set)."""
    closes = sp500_closes.loc["2010":"2019", ["JPM", "BAC"]]
    returns = closes.pct_change().dropna()
    return returns["JPM"].to_numpy(), returns["BAC"].to_numpy()


# --------------------------------------------------------------------------- Sharpe difference


def test_difference_is_the_difference_of_annualised_sharpes(two_stocks) -> None:
    a, b = two_stocks
    result = sharpe_difference(a, b, resamples=200)
    assert isinstance(result, SharpeDifference)
    assert result.difference == pytest.approx(sharpe_ratio(a) - sharpe_ratio(b), rel=1e-12)
    assert result.sharpe_a == pytest.approx(sharpe_ratio(a))
    assert result.sessions == len(a)
    assert result.resamples == 200 and result.block_mean == 21
    assert result.low < result.difference < result.high


def test_deterministic_for_a_seed(two_stocks) -> None:
    a, b = two_stocks
    first = sharpe_difference(a, b, resamples=300, seed=7)
    assert sharpe_difference(a, b, resamples=300, seed=7) == first
    assert sharpe_difference(a, b, resamples=300, seed=8) != first


def test_paired_same_days_for_both_series(two_stocks) -> None:
    a, b = two_stocks
    # a series against itself: every resample's difference is exactly 0
    same = sharpe_difference(a, a.copy(), resamples=200)
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)
    # swapping the series mirrors the interval (the same days were drawn for both)
    ab = sharpe_difference(a, b, resamples=400, seed=3)
    ba = sharpe_difference(b, a, resamples=400, seed=3)
    assert ba.difference == pytest.approx(-ab.difference)
    assert ba.low == pytest.approx(-ab.high) and ba.high == pytest.approx(-ab.low)


def test_pairing_narrows_the_interval(two_stocks) -> None:
    """Correlated series: a paired interval is much narrower than independent resamples'."""
    a, b = two_stocks
    paired = sharpe_difference(a, b, resamples=500, seed=1)
    rng = np.random.default_rng(0)
    unpaired = []
    for _ in range(500):
        ia = rng.integers(len(a), size=len(a))
        ib = rng.integers(len(b), size=len(b))
        unpaired.append(sharpe_ratio(a[ia]) - sharpe_ratio(b[ib]))
    lo, hi = np.quantile(unpaired, [0.025, 0.975])
    assert paired.high - paired.low < 0.8 * (hi - lo)


def test_agrees_with_the_hand_written_stationary_bootstrap(two_stocks) -> None:
    """arch's engine and quantorch's own (used by evaluate) give the same interval, up to
    Monte Carlo error: both are Politis-Romano stationary bootstraps of the same statistic."""
    a, b = two_stocks
    ours = sharpe_difference(a, b, resamples=2000, seed=11)
    low, high = paired_block_bootstrap(
        a, b, lambda x, y: sharpe_ratio(x) - sharpe_ratio(y), 21, 2000, seed=5
    )
    width = ours.high - ours.low
    assert ours.low == pytest.approx(low, abs=0.08 * width)
    assert ours.high == pytest.approx(high, abs=0.08 * width)


def test_detects_a_real_edge_and_misses_none() -> None:
    rng = np.random.default_rng(42)
    base = rng.normal(0.0002, 0.01, 2520)
    better = base + 0.0008  # the same days plus 20% a year: a sure edge
    assert sharpe_difference(better, base, resamples=300).low > 0
    assert sharpe_difference(better, base, resamples=300).significant
    noise = base + rng.normal(0, 0.002, len(base))  # no edge
    null = sharpe_difference(noise, base, resamples=300)
    assert null.low < 0 < null.high and not null.significant


def test_nan_sessions_are_dropped_pairwise_and_short_series_give_nan(two_stocks) -> None:
    a, b = two_stocks
    a2 = a.copy()
    a2[10] = np.nan
    result = sharpe_difference(a2, b, resamples=100)
    assert result.sessions == len(a) - 1
    assert math.isfinite(result.low)
    short = sharpe_difference(np.array([0.01]), np.array([0.02]))
    assert math.isnan(short.difference) and math.isnan(short.low)
    with pytest.raises(ValueError, match="same length|align"):
        sharpe_difference(a, b[:-1])
    with pytest.raises(ValueError, match="block_mean"):
        sharpe_difference(a, b, block_mean=0.5)


# --------------------------------------------------------------------------- Deflated Sharpe


def _dsr_reference(sr, t, skew, kurt, n, var):
    """Independent implementation from the paper's equations, with scipy only."""
    g = np.euler_gamma
    sr0 = math.sqrt(var) * (
        (1 - g) * stats.norm.ppf(1 - 1 / n) + g * stats.norm.ppf(1 - 1 / (n * math.e))
    )
    z = (sr - sr0) * math.sqrt(t - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    return sr0, stats.norm.cdf(z)


def test_paper_numerical_example() -> None:
    """Bailey and Lopez de Prado (2014), section "A numerical example": 100 trials with an
    annualised Sharpe variance of 1/2; the best has an annualised Sharpe of 2.5 over five
    years of daily returns (T = 1250, 250 a year), skewness -3 and kurtosis 10. The paper
    gives SR0 = 0.1132 (per day) and DSR = 0.9004."""
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = deflated_sharpe_ratio(
        2.5 / math.sqrt(250), 1250, trials=100, sharpe_variance=0.5 / 250,
        skewness=-3.0, kurtosis=10.0,
    )
    assert dsr == pytest.approx(0.9004, abs=5e-4)


@pytest.mark.parametrize(
    ("sr", "t", "skew", "kurt", "n", "var"),
    [
        (0.1581, 1250, -3.0, 10.0, 100, 0.002),
        (0.05, 2520, 0.0, 3.0, 10, 0.0004),
        (0.08, 750, 0.5, 6.0, 1000, 0.001),
        (-0.02, 500, -1.0, 4.0, 3, 0.0001),
    ],
)
def test_matches_an_independent_implementation(sr, t, skew, kurt, n, var) -> None:
    sr0, dsr = _dsr_reference(sr, t, skew, kurt, n, var)
    assert expected_max_sharpe(n, var) == pytest.approx(sr0, rel=1e-12)
    got = deflated_sharpe_ratio(sr, t, trials=n, sharpe_variance=var, skewness=skew,
                                kurtosis=kurt)  # fmt: skip
    assert got == pytest.approx(dsr, rel=1e-10)


def test_limiting_cases() -> None:
    # one trial: nothing was selected, the DSR is the PSR against zero
    assert expected_max_sharpe(1, 0.01) == 0.0
    assert deflated_sharpe_ratio(0.05, 1000, trials=1, sharpe_variance=0.01) == pytest.approx(
        probabilistic_sharpe_ratio(0.05, 1000)
    )
    # normal returns: the PSR is Phi(SR sqrt(T-1) / sqrt(1 + SR^2 / 2))
    expected = stats.norm.cdf(0.05 * math.sqrt(999) / math.sqrt(1 + 0.05**2 / 2))
    assert probabilistic_sharpe_ratio(0.05, 1000) == pytest.approx(expected)
    # a Sharpe equal to the benchmark is a coin toss
    assert probabilistic_sharpe_ratio(0.1, 500, benchmark_sharpe=0.1) == pytest.approx(0.5)
    # no dispersion among trials: no deflation
    assert expected_max_sharpe(50, 0.0) == 0.0
    # more trials, a higher bar: the DSR falls
    values = [deflated_sharpe_ratio(0.08, 1000, trials=n, sharpe_variance=0.001)
              for n in (2, 10, 100, 1000)]  # fmt: skip
    assert all(x > y for x, y in zip(values, values[1:], strict=False))
    # negative skew and fat tails lower the confidence in a positive Sharpe
    assert probabilistic_sharpe_ratio(0.08, 1000, skewness=-2, kurtosis=9) < (
        probabilistic_sharpe_ratio(0.08, 1000)
    )
    assert math.isnan(probabilistic_sharpe_ratio(0.1, 1))
    with pytest.raises(ValueError, match="trials"):
        expected_max_sharpe(0, 0.1)


def test_expected_max_matches_monte_carlo() -> None:
    """The paper's approximation of E[max] of N standard normals, against simulation."""
    rng = np.random.default_rng(0)
    for n in (10, 100, 1000):
        simulated = rng.standard_normal((4000, n)).max(axis=1).mean()
        assert expected_max_sharpe(n, 1.0) == pytest.approx(simulated, abs=0.06)
