"""Performance measures, checked by hand on known series and on real prices."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from quantorch.backtest.metrics import (
    METRIC_KEYS,
    RELATIVE_METRIC_KEYS,
    ROLLING_WINDOW,
    alpha_beta,
    annual_returns,
    annualised_volatility,
    cagr,
    cagr_from_returns,
    downside_deviation,
    drawdown,
    drawdown_periods,
    drawdown_series,
    information_ratio,
    max_drawdown,
    monthly_returns,
    paired_block_bootstrap,
    performance_metrics,
    relative_metrics,
    rolling_beta,
    rolling_downside_deviation,
    rolling_sharpe,
    rolling_volatility,
    sharpe_ratio,
    sortino_ratio,
    stationary_block_bootstrap,
    stationary_bootstrap_indices,
    tracking_error,
    worst_drawdowns,
)


def test_constant_growth_series():
    dates = pd.bdate_range("2020-01-01", periods=505)
    equity = pd.Series(100.0 * 1.001 ** np.arange(len(dates)), index=dates)
    m = performance_metrics(equity)
    assert tuple(m) == METRIC_KEYS
    years = (dates[-1] - dates[0]).days / 365.25
    assert m["total_return"] == pytest.approx(1.001**504 - 1, rel=1e-12)
    assert m["cagr"] == pytest.approx(1.001 ** (504 / years) - 1, rel=1e-9)
    assert m["volatility"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(m["sharpe"]) and math.isnan(m["sortino"])  # no risk, no ratio
    assert m["max_drawdown"] == 0.0 and math.isnan(m["calmar"])
    # A benchmark: no fills, fully invested.
    assert m["turnover"] == 0.0 and m["fees_paid"] == 0.0 and m["slippage_paid"] == 0.0
    assert m["exposure"] == 1.0


def test_series_with_a_known_drawdown():
    dates = pd.to_datetime(
        ["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-07", "2021-01-08", "2021-01-11",
         "2021-01-12"]
    )  # fmt: skip
    values = np.array([100.0, 120.0, 90.0, 110.0, 130.0, 65.0, 100.0])
    equity = pd.Series(values, index=dates)
    m = performance_metrics(equity)

    returns = np.array([0.2, -0.25, 20 / 90, 20 / 110, -0.5, 35 / 65])
    mean, std = returns.mean(), returns.std(ddof=1)
    downside = math.sqrt(((-0.25) ** 2 + (-0.5) ** 2) / 6)
    years = 8 / 365.25
    assert m["total_return"] == pytest.approx(0.0, abs=1e-15)
    assert m["volatility"] == pytest.approx(std * math.sqrt(252), rel=1e-12)
    assert m["sharpe"] == pytest.approx(mean / std * math.sqrt(252), rel=1e-12)
    assert m["sortino"] == pytest.approx(mean / downside * math.sqrt(252), rel=1e-12)
    assert m["max_drawdown"] == pytest.approx(-0.5, rel=1e-15)  # 130 -> 65
    assert m["cagr"] == pytest.approx(1.0 ** (1 / years) - 1, abs=1e-12)
    assert m["calmar"] == pytest.approx(m["cagr"] / 0.5, abs=1e-12)
    np.testing.assert_allclose(
        drawdown_series(equity), [0, 0, -0.25, -10 / 120, 0, -0.5, -30 / 130], atol=1e-15
    )


def test_turnover_costs_and_exposure_from_fills():
    dates = pd.bdate_range("2020-01-01", "2022-01-01")
    equity = pd.Series(1_000.0, index=dates)
    fills = pd.DataFrame(
        {
            "notional": [1_000.0, 600.0, 400.0],
            "fees": [0.1, 0.06, 0.04],
            "slippage_cost": [0.5, 0.3, 0.2],
        }
    )
    exposure = pd.Series(0.8, index=dates)
    m = performance_metrics(equity, fills, exposure)
    years = (dates[-1] - dates[0]).days / 365.25
    assert m["turnover"] == pytest.approx(2_000 / 1_000 / years, rel=1e-12)
    assert m["fees_paid"] == pytest.approx(0.2) and m["slippage_paid"] == pytest.approx(1.0)
    assert m["exposure"] == pytest.approx(0.8)


def test_monthly_returns_compound_within_each_month():
    dates = pd.to_datetime(["2021-11-29", "2021-11-30", "2021-12-15", "2021-12-31", "2022-01-31"])
    equity = pd.Series([100.0, 110.0, 99.0, 121.0, 108.9], index=dates)
    table = monthly_returns(equity)
    assert list(table.columns) == list(range(1, 13)) and list(table.index) == [2021, 2022]
    assert table.loc[2021, 11] == pytest.approx(0.10)  # from the first value
    assert table.loc[2021, 12] == pytest.approx(0.10)  # 110 -> 121
    assert table.loc[2022, 1] == pytest.approx(-0.10)
    assert table.loc[2021, 1:10].isna().all() and table.loc[2022, 2:].isna().all()


def test_on_real_prices_metrics_match_pandas(sp500_closes):
    close = sp500_closes["JPM"].loc["2007-01-01":"2012-12-31"]
    equity = close / close.iloc[0] * 1e6
    m = performance_metrics(equity)
    returns = close.pct_change().dropna()
    assert m["volatility"] == pytest.approx(returns.std() * math.sqrt(252), rel=1e-9)
    assert m["sharpe"] == pytest.approx(returns.mean() / returns.std() * math.sqrt(252), rel=1e-9)
    assert m["max_drawdown"] == pytest.approx((close / close.cummax() - 1).min(), rel=1e-12)
    assert -0.95 < m["max_drawdown"] < -0.5  # the 2008 crisis hit JPM hard
    growth = close.iloc[-1] / close.iloc[0]
    years = (close.index[-1] - close.index[0]).days / 365.25
    assert m["cagr"] == pytest.approx(growth ** (1 / years) - 1, rel=1e-12)


# --------------------------------------------------------------------------- tear-sheet measures


@pytest.fixture(scope="module")
def jpm_vs_market(sp500_closes):
    """Daily returns of JPM and of the 20 stocks' equal-weight mean, 2015-2019."""
    closes = sp500_closes.loc["2015-01-01":"2019-12-31"]
    returns = closes.pct_change().iloc[1:]
    return returns["JPM"].to_numpy(), returns.mean(axis=1).to_numpy()


def test_rolling_measures_match_pandas_rolling(jpm_vs_market):
    r, b = jpm_vs_market
    window = ROLLING_WINDOW
    assert window == 126
    frame = pd.DataFrame({"r": r, "b": b})
    rolling = frame.rolling(window)
    expected_vol = rolling["r"].std() * math.sqrt(252)
    expected_sharpe = rolling["r"].mean() / rolling["r"].std() * math.sqrt(252)
    expected_beta = rolling["r"].cov(frame["b"]) / rolling["b"].var()
    np.testing.assert_allclose(rolling_volatility(r), expected_vol, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(rolling_sharpe(r), expected_sharpe, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(rolling_beta(r, b), expected_beta, rtol=1e-9, equal_nan=True)
    for values in (rolling_volatility(r), rolling_sharpe(r), rolling_beta(r, b)):
        assert len(values) == len(r)
        assert np.isnan(values[: window - 1]).all() and np.isfinite(values[window - 1 :]).all()


def test_rolling_measures_by_hand_and_edge_cases():
    r = np.array([0.01, -0.02, 0.03, 0.0, 0.01])
    b = np.array([0.02, -0.01, 0.01, 0.01, 0.0])
    window = 3
    last = r[2:]
    assert rolling_volatility(r, window)[-1] == pytest.approx(last.std(ddof=1) * math.sqrt(252))
    assert rolling_sharpe(r, window)[-1] == pytest.approx(
        last.mean() / last.std(ddof=1) * math.sqrt(252)
    )
    bl = b[2:]
    beta = np.sum((last - last.mean()) * (bl - bl.mean())) / np.sum((bl - bl.mean()) ** 2)
    assert rolling_beta(r, b, window)[-1] == pytest.approx(beta)
    # Shorter than the window, empty: all NaN, same length.
    assert np.isnan(rolling_sharpe(r[:2], window)).all() and len(rolling_sharpe(r[:2], window)) == 2
    assert len(rolling_volatility(np.empty(0))) == 0 and len(rolling_beta([], [])) == 0
    # A NaN spoils only the windows that hold it.
    holed = r.copy()
    holed[1] = np.nan
    vol = rolling_volatility(holed, window)
    assert np.isnan(vol[:4]).all() and np.isfinite(vol[4])
    # No variance: no Sharpe, no beta (not inf).
    flat = np.full(5, 0.001)
    assert np.isnan(rolling_sharpe(flat, window)).all()
    assert np.isnan(rolling_beta(r, np.zeros(5), window)).all()
    with pytest.raises(ValueError, match="at least 2"):
        rolling_sharpe(r, 1)
    with pytest.raises(ValueError, match="align them"):
        rolling_beta(r, b[:4], window)


def test_alpha_beta_match_polyfit_and_active_risk_by_hand(jpm_vs_market):
    r, b = jpm_vs_market
    slope, intercept = np.polyfit(b, r, 1)
    alpha, beta = alpha_beta(r, b)
    assert beta == pytest.approx(slope, rel=1e-9)
    assert alpha == pytest.approx(intercept * 252, rel=1e-9)
    assert 0.8 < beta < 1.6  # a bank against the market: roughly market risk
    active = r - b
    assert tracking_error(r, b) == pytest.approx(active.std(ddof=1) * math.sqrt(252), rel=1e-12)
    assert information_ratio(r, b) == pytest.approx(
        active.mean() / active.std(ddof=1) * math.sqrt(252), rel=1e-12
    )


def test_alpha_beta_of_a_known_line_and_degenerate_inputs():
    b = np.array([0.01, -0.02, 0.015, 0.0, -0.005])
    r = 0.0002 + 1.5 * b
    alpha, beta = alpha_beta(r, b)
    assert beta == pytest.approx(1.5, rel=1e-12) and alpha == pytest.approx(0.0002 * 252, rel=1e-9)
    # NaN sessions are left out pairwise.
    r_holed, b_holed = np.append(r, np.nan), np.append(b, 0.03)
    assert alpha_beta(r_holed, b_holed) == pytest.approx((alpha, beta))
    assert tracking_error(r_holed, b_holed) == pytest.approx(tracking_error(r, b))
    # Identical series: no active risk, no information ratio.
    assert tracking_error(b, b) == 0.0 and math.isnan(information_ratio(b, b))
    for degenerate in ((np.empty(0), np.empty(0)), (r[:1], b[:1]), (r, np.zeros(5))):
        assert all(math.isnan(v) for v in alpha_beta(*degenerate))
    assert math.isnan(tracking_error(np.empty(0), np.empty(0)))


def test_relative_metrics_align_the_two_curves(sp500_closes):
    closes = sp500_closes.loc["2015-01-01":"2019-12-31"]
    equity = closes["JPM"] / closes["JPM"].iloc[0] * 1e6
    market = (closes.pct_change().mean(axis=1).fillna(0.0) + 1).cumprod() * 1e6
    m = relative_metrics(equity, market.iloc[10:])  # a comparison that starts later
    assert tuple(m) == RELATIVE_METRIC_KEYS
    r = equity.iloc[10:].pct_change().dropna().to_numpy()
    b = market.iloc[10:].pct_change().dropna().to_numpy()
    assert (m["alpha"], m["beta"]) == pytest.approx(alpha_beta(r, b))
    assert m["correlation"] == pytest.approx(np.corrcoef(r, b)[0, 1])
    empty = relative_metrics(equity.iloc[:1], market.iloc[:1])
    assert all(math.isnan(v) for v in empty.values())


def test_annual_returns_compound_from_the_previous_year_end():
    dates = pd.to_datetime(["2020-06-01", "2020-12-31", "2021-03-01", "2021-12-31", "2022-01-03"])
    equity = pd.Series([100.0, 120.0, np.nan, 90.0, 99.0], index=dates)
    years = annual_returns(equity)
    assert list(years.index) == [2020, 2021, 2022]
    np.testing.assert_allclose(years, [0.2, 90 / 120 - 1, 0.1])
    assert annual_returns(equity.iloc[:0]).empty


def test_worst_drawdowns_by_hand():
    dates = pd.bdate_range("2021-01-04", periods=10)
    values = [100, 90, 100, 110, 77, 88, 110, 115, 103.5, 105]
    table = worst_drawdowns(pd.Series(values, index=dates, dtype=float), n=5)
    assert list(table.columns) == ["start", "trough", "recovery", "depth", "length"]
    assert len(table) == 3
    deepest, first, open_ = table.itertuples(index=False)
    assert (deepest.start, deepest.trough, deepest.recovery) == (dates[3], dates[4], dates[6])
    assert deepest.depth == pytest.approx(-0.3) and deepest.length == 3
    assert (
        first.start == dates[0]
        and first.recovery == dates[2]
        and first.depth == pytest.approx(-0.1)
    )
    assert open_.start == dates[7] and open_.trough == dates[8] and pd.isna(open_.recovery)
    assert open_.depth == pytest.approx(-0.1) and open_.length == 2  # to the last session
    assert len(worst_drawdowns(pd.Series(values, index=dates, dtype=float), n=1)) == 1
    np.testing.assert_array_equal(
        drawdown_periods(np.array(values, float)), [[0, 1, 2], [3, 4, 6], [7, 8, -1]]
    )
    rising = pd.Series([1.0, 2.0, 3.0], index=dates[:3])
    for equity in (rising, rising.iloc[:1], rising.iloc[:0]):
        assert worst_drawdowns(equity).empty


def test_worst_drawdown_is_the_max_drawdown_on_real_prices(sp500_closes):
    close = sp500_closes["JPM"].loc["2007-01-01":"2012-12-31"]
    table = worst_drawdowns(close)
    assert len(table) == 5 and table["depth"].is_monotonic_increasing
    assert table["depth"].iloc[0] == pytest.approx(performance_metrics(close)["max_drawdown"])
    assert (table["start"] < table["trough"]).all()
    assert ((table["recovery"] > table["trough"]) | table["recovery"].isna()).all()


# --------------------------------------------------------------------------- panels (axis 0)


@pytest.fixture(scope="module")
def panel_with_gaps(sp500_closes):
    """Closes of five stocks 2005-2012 with real-looking gaps: a missing week in one, a late
    listing (leading NaN) in another."""
    closes = sp500_closes.loc["2005-01-01":"2012-12-31", ["AAPL", "BAC", "JPM", "KO", "RRC"]]
    closes = closes.copy()
    closes.iloc[400:405, 1] = np.nan
    closes.iloc[:60, 4] = np.nan
    return closes.to_numpy()


_REDUCTIONS = {
    "annualised_volatility": annualised_volatility,
    "sharpe_ratio": sharpe_ratio,
    "sharpe_ratio_without_floor": lambda r: sharpe_ratio(r, noise_floor=0.0),
    "downside_deviation": downside_deviation,
    "downside_below_target": lambda r: downside_deviation(r, target=0.001),
    "sortino_ratio": sortino_ratio,
}
_ROLLING = {
    "rolling_volatility_21": lambda r: rolling_volatility(r, 21),
    "rolling_volatility": rolling_volatility,
    "rolling_downside_deviation_63": lambda r: rolling_downside_deviation(r, 63),
}


@pytest.mark.parametrize("name", list(_REDUCTIONS))
def test_a_panel_gives_each_column_what_the_column_gives_alone(name, panel_with_gaps):
    closes = panel_with_gaps[:, [0, 2, 3]]  # complete columns
    returns = closes[1:] / closes[:-1] - 1
    measure = _REDUCTIONS[name]
    together = measure(returns)
    assert together.shape == (3,)
    for j in range(3):
        alone = measure(returns[:, j])
        assert isinstance(alone, float) and math.isfinite(alone)
        assert together[j] == alone  # bit for bit


@pytest.mark.parametrize("name", list(_ROLLING))
def test_rolling_measures_on_a_panel_equal_each_column_alone(name, panel_with_gaps):
    returns = panel_with_gaps[1:] / panel_with_gaps[:-1] - 1
    measure = _ROLLING[name]
    together = measure(returns)
    assert together.shape == returns.shape
    for j in range(returns.shape[1]):
        np.testing.assert_array_equal(together[:, j], measure(returns[:, j]))


def test_drawdown_of_a_panel_equals_each_column_and_carries_the_peak_over_gaps(panel_with_gaps):
    dd = drawdown(panel_with_gaps)
    for j in range(panel_with_gaps.shape[1]):
        np.testing.assert_array_equal(dd[:, j], drawdown(panel_with_gaps[:, j]))
    # The same as pandas' running maximum, which skips NaN.
    frame = pd.DataFrame(panel_with_gaps)
    np.testing.assert_array_equal(dd, (frame / frame.cummax() - 1).to_numpy())
    # A gap is NaN and does not reset the peak: after it, the drawdown is from the old high.
    bac = panel_with_gaps[:, 1]
    assert np.isnan(dd[400:405, 1]).all()
    assert dd[405, 1] == bac[405] / np.nanmax(bac[:406]) - 1
    assert np.isnan(dd[:60, 4]).all() and dd[60, 4] == 0.0  # the first value is its own peak
    worst = max_drawdown(panel_with_gaps)
    assert worst.shape == (5,)
    np.testing.assert_array_equal(worst, np.nanmin(dd, axis=0))
    assert worst[1] == max_drawdown(bac) < -0.9  # BAC in 2008-2009
    assert math.isnan(max_drawdown(np.full(3, np.nan)))


def test_a_missing_return_spoils_reductions_and_only_the_windows_that_hold_it(sp500_closes):
    returns = sp500_closes["KO"].loc["2015":"2016"].pct_change().iloc[1:].to_numpy()
    holed = returns.copy()
    holed[100] = np.nan
    panel = np.column_stack([returns, holed])
    for measure in (annualised_volatility, sharpe_ratio, downside_deviation, sortino_ratio):
        values = measure(panel)
        assert math.isfinite(values[0]) and math.isnan(values[1]), measure.__name__
    vol = rolling_volatility(panel, 21)
    down = rolling_downside_deviation(panel, 21)
    for values in (vol, down):
        np.testing.assert_array_equal(values[:100, 1], values[:100, 0])
        assert np.isnan(values[100:121, 1]).all() and np.isfinite(values[121:, 1]).all()
        # pandas' O(n) kernel carries sums from window to window: equal to rounding after a gap
        np.testing.assert_allclose(values[121:, 1], values[121:, 0], rtol=1e-12)
    # By hand and against pandas.
    frame = pd.Series(returns)
    expected = np.sqrt((np.minimum(frame, 0) ** 2).rolling(21).mean()) * math.sqrt(252)
    np.testing.assert_allclose(down[:, 0], expected, rtol=1e-12, equal_nan=True)
    last = returns[-21:]
    assert down[-1, 0] == pytest.approx(math.sqrt(np.mean(np.minimum(last, 0) ** 2) * 252))
    assert down[-1, 0] > 0 and downside_deviation(returns) < down[-1, 0]  # per day vs per year
    assert rolling_volatility(np.empty((0, 3)), 21).shape == (0, 3)
    with pytest.raises(ValueError, match="2-D"):
        sharpe_ratio(np.zeros((3, 2, 2)))


def test_the_noise_floor_is_the_callers_choice():
    """Rounding noise of a constant series is no risk by default; evaluate's bootstrap keeps
    its own convention (only an exactly zero deviation is NaN), explicitly."""
    constant = np.full(300, 0.001)
    assert 0 < np.std(constant, ddof=1) < 1e-15
    assert math.isnan(sharpe_ratio(constant))
    assert sharpe_ratio(constant, noise_floor=0.0) > 1e15
    assert math.isnan(sharpe_ratio(np.zeros(300), noise_floor=0.0))
    r = np.array([0.01, -0.02, 0.015, 0.003])
    assert (
        sharpe_ratio(r, noise_floor=0.0)
        == sharpe_ratio(r)
        == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252), rel=1e-15)
    )


def test_cagr_from_returns_counts_sessions_and_refuses_a_total_loss(sp500_closes):
    close = sp500_closes["JPM"].loc["2019":"2021"]
    r = close.pct_change().dropna().to_numpy()
    growth = close.iloc[-1] / close.iloc[0]
    assert cagr_from_returns(r) == pytest.approx(growth ** (252 / len(r)) - 1, rel=1e-12)
    # The same path on calendar time (the run metrics) is another figure, on purpose.
    years = (close.index[-1] - close.index[0]).days / 365.25
    calendar = cagr(close.to_numpy(), years)
    assert calendar == pytest.approx(growth ** (1 / years) - 1, rel=1e-12)
    assert calendar != cagr_from_returns(r)
    ruined = np.append(r, -1.0)
    assert math.isnan(cagr_from_returns(ruined)) and math.isnan(cagr_from_returns(np.empty(0)))
    assert cagr(np.array([100.0, 0.0]), 1.0) == -1.0


# --------------------------------------------------------------------------- bootstrap


@pytest.fixture(scope="module")
def jpm_2019_2021(sp500_closes):
    return sp500_closes["JPM"].loc["2019":"2021"].pct_change().dropna().to_numpy()


def test_bootstrap_intervals_are_the_ones_evaluate_always_reported(jpm_2019_2021):
    """Pinned from the copy that lived in quantorch/evaluation.py before it moved here: the
    same draws, the same statistic, the same bits."""
    r = jpm_2019_2021
    assert len(r) == 756

    def evaluate_sharpe(x):
        return sharpe_ratio(x, noise_floor=0.0)

    assert stationary_block_bootstrap(r, evaluate_sharpe) == (
        -0.33118204860215816,
        1.8543197842131858,
    )
    assert stationary_block_bootstrap(r, cagr_from_returns) == (
        -0.20293299670344334,
        0.6495562349606905,
    )
    assert stationary_block_bootstrap(r, evaluate_sharpe, block=5, resamples=300, seed=7) == (
        -0.22304524867147216,
        1.7598252274576078,
    )
    from quantorch import evaluation

    assert evaluation.block_bootstrap(r, evaluation._sharpe, seed=0) == (
        stationary_block_bootstrap(r, evaluate_sharpe, seed=0)
    )
    assert evaluation._cagr(r) == cagr_from_returns(r) and evaluation._sharpe(r) == sharpe_ratio(r)


def test_bootstrap_resamples_are_wrapped_blocks_of_the_mean_length():
    n, block = 500, 21
    lengths = []
    for idx in stationary_bootstrap_indices(n, block=block, resamples=200, seed=3):
        assert idx.shape == (n,) and idx.min() >= 0 and idx.max() < n
        steps = np.diff(idx) % n  # inside a block each day is the next one (wrapping around)
        breaks = np.flatnonzero(steps != 1)
        lengths.extend(np.diff(np.concatenate(([-1], breaks, [n - 1]))).tolist())
    assert np.mean(lengths) == pytest.approx(block, rel=0.15)
    first = list(stationary_bootstrap_indices(50, resamples=3, seed=9))
    again = list(stationary_bootstrap_indices(50, resamples=3, seed=9))
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
    with pytest.raises(ValueError, match="block"):
        next(stationary_bootstrap_indices(50, block=0.5))


def test_bootstrap_degenerate_inputs():
    assert all(math.isnan(v) for v in stationary_block_bootstrap(np.array([0.01]), sharpe_ratio))
    flat = np.zeros(100)
    assert all(math.isnan(v) for v in stationary_block_bootstrap(flat, sharpe_ratio))


def test_paired_bootstrap_resamples_both_series_on_the_same_days(jpm_2019_2021, sp500_closes):
    r = jpm_2019_2021
    market = sp500_closes.loc["2019":"2021"].pct_change().dropna().mean(axis=1).to_numpy()

    def sharpe_difference(a, b):
        return sharpe_ratio(a) - sharpe_ratio(b)

    paired = paired_block_bootstrap(r, market, sharpe_difference, seed=0)
    stacked = stationary_block_bootstrap(
        np.column_stack([r, market]), lambda x: sharpe_difference(x[:, 0], x[:, 1]), seed=0
    )
    assert paired == stacked
    assert paired_block_bootstrap(r, r, sharpe_difference) == (0.0, 0.0)
    # Independent resamples lose the correlation of the two (0.8 for a bank and its market)
    # and give a much wider interval for the difference.
    independent = np.array(
        [
            sharpe_difference(r[i], market[j])
            for i, j in zip(
                stationary_bootstrap_indices(len(r), seed=1),
                stationary_bootstrap_indices(len(r), seed=2),
                strict=True,
            )
        ]
    )
    wide = np.quantile(independent, 0.975) - np.quantile(independent, 0.025)
    assert paired[1] - paired[0] < 0.6 * wide
    with pytest.raises(ValueError, match="align them"):
        paired_block_bootstrap(r, market[:-1], sharpe_difference)
