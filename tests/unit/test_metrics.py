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
    drawdown_periods,
    drawdown_series,
    information_ratio,
    monthly_returns,
    performance_metrics,
    relative_metrics,
    rolling_beta,
    rolling_sharpe,
    rolling_volatility,
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
