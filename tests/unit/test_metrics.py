"""Performance measures, checked by hand on known series and on real prices."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from quantorch.backtest.metrics import (
    METRIC_KEYS,
    drawdown_series,
    monthly_returns,
    performance_metrics,
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
