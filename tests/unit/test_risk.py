"""Risk measures on real returns against independent computations; the GARCH refit rule.

Realised volatility, downside deviation and drawdown are the measures module's
(:mod:`quantorch.backtest.metrics`), on the tool's (sessions x tickers) arrays.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from quantorch.tools.risk import (
    ANNUAL,
    SPEC,
    beta_correlation,
    ewma_volatility,
    garch_volatility,
    historical_var_cvar,
    quarter_end_sessions,
)
from skfolio.measures import value_at_risk

from quantorch.backtest.metrics import drawdown, rolling_downside_deviation, rolling_volatility
from quantorch.toolkit.runner import ToolRunner
from quantorch.toolkit.spec import MarketData, ToolRequest
from tests._tool_data import stock_market, window

RUNNER = ToolRunner(None, cache=False, timeout_s=None)


@pytest.fixture(scope="module")
def returns() -> pd.DataFrame:
    close = stock_market().prices.close[["AAPL", "KO", "RRC"]].loc["2014":"2021"]
    return close.pct_change(fill_method=None).iloc[1:]


def test_realised_volatility_is_the_annualised_sample_sd(returns):
    vol = rolling_volatility(returns.to_numpy(), 63)
    for row in (62, 500, len(returns) - 1):
        expected = returns.iloc[row - 62 : row + 1].std(ddof=1).to_numpy() * math.sqrt(252)
        np.testing.assert_allclose(vol[row], expected, rtol=1e-10)
    assert np.isnan(vol[61]).all()


def test_ewma_follows_the_riskmetrics_recursion(returns):
    r = returns["KO"].to_numpy()
    variance = r[0] ** 2
    for value in r[1:]:
        variance = 0.94 * variance + 0.06 * value**2
    got = ewma_volatility(r[:, None])[-1, 0]
    assert got == pytest.approx(math.sqrt(variance) * ANNUAL, rel=1e-10)
    assert np.isnan(ewma_volatility(r[:, None])[19, 0])  # fewer than 21 returns


@pytest.mark.parametrize("level", [0.95, 0.99])
def test_historical_var_matches_skfolio_and_cvar_the_mean_of_the_worst(returns, level):
    values = returns.to_numpy()
    var, cvar = historical_var_cvar(values, 252, level)
    k = math.ceil(round(252 * (1 - level), 9))
    for row in (251, 1000, len(values) - 1):
        sample = values[row - 251 : row + 1]
        np.testing.assert_allclose(var[row], value_at_risk(sample, beta=level), rtol=1e-12)
        worst = np.sort(sample, axis=0)[:k]
        np.testing.assert_allclose(cvar[row], -worst.mean(axis=0), rtol=1e-12)
    assert (cvar[251:] >= var[251:]).all() and (var[251:] > 0).all()


def test_tail_windows_with_a_missing_return_are_nan(returns):
    values = returns[["AAPL"]].to_numpy().copy()
    values[400] = np.nan
    var, _ = historical_var_cvar(values, 252, 0.95)
    assert np.isnan(var[400:652]).all() and np.isfinite(var[652]).all()
    brute = -np.sort(values[401:653, 0])[12]
    assert var[652, 0] == brute


def test_drawdown_is_from_the_running_peak(returns):
    close = stock_market().prices.close[["RRC"]].loc["2014":"2021"].to_numpy()
    dd = drawdown(close)
    assert dd[-1, 0] == pytest.approx(close[-1, 0] / np.nanmax(close) - 1)
    assert (dd <= 0).all() and dd.min() < -0.9  # RRC lost over 90% from its 2014 peak


def test_beta_and_correlation_match_numpy(returns):
    bench = stock_market().benchmark.loc["2014":"2021"].pct_change(fill_method=None).iloc[1:].to_numpy()
    beta, corr = beta_correlation(returns.to_numpy(), bench, 252)
    row = len(returns) - 1
    x, y = returns.to_numpy()[row - 251 : row + 1], bench[row - 251 : row + 1]
    for j in range(3):
        cov = np.cov(x[:, j], y)
        assert beta[row, j] == pytest.approx(cov[0, 1] / cov[1, 1], rel=1e-8)
        assert corr[row, j] == pytest.approx(np.corrcoef(x[:, j], y)[0, 1], rel=1e-8)
    assert np.isnan(beta[250]).all()


def test_downside_deviation(returns):
    r = returns["AAPL"].to_numpy()
    got = rolling_downside_deviation(r[:, None], 63)[-1, 0]
    assert got == pytest.approx(math.sqrt(np.mean(np.minimum(r[-63:], 0) ** 2)) * ANNUAL, rel=1e-10)


def test_the_tool_takes_volatility_downside_and_drawdown_from_the_measures_module():
    """One measures module: the risk tool defines no volatility, downside deviation or
    drawdown of its own, and its panel columns are the measures module's, bit for bit."""
    from quantorch.tools import risk

    tree = ast.parse(Path(risk.__file__).read_text())
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert not defined & {"realised_volatility", "downside_deviation", "drawdown", "sharpe_ratio"}
    data = window(stock_market(), "2006-01-01", "2012-12-31", ["AAPL", "BAC", "RRC"])
    close = data.prices.close.copy()
    close.iloc[300:310, 1] = np.nan  # a gap: windows holding it are NaN, the peak carries over
    data = MarketData(prices=type(data.prices).from_close(close), benchmark=data.benchmark)
    tickers = list(close.columns)
    frames = RUNNER.panel("risk", "fast", data, tickers, data.prices.dates, on_error="raise")
    returns = close.pct_change(fill_method=None).to_numpy()
    expected = {
        "vol21": rolling_volatility(returns, 21),
        "vol252": rolling_volatility(returns, 252),
        "downside_dev63": rolling_downside_deviation(returns, 63),
        "drawdown": drawdown(close.to_numpy()),
    }
    for name, values in expected.items():
        np.testing.assert_array_equal(frames[name].to_numpy(), values, err_msg=name)
    assert np.isnan(frames["drawdown"].to_numpy()[300:310, 1]).all()
    assert np.isfinite(frames["drawdown"].to_numpy()[310:, 1]).all()


def test_quarter_end_sessions_come_from_the_exchange_calendar():
    dates = stock_market().prices.dates
    ends = dates[quarter_end_sessions(dates)]
    in_2021 = [d.strftime("%Y-%m-%d") for d in ends if d.year == 2021]
    assert in_2021 == ["2021-03-31", "2021-06-30", "2021-09-30", "2021-12-31"]
    assert pd.Timestamp("2022-12-30") not in ends  # the data stops on 2022-12-28


def test_garch_at_a_refit_equals_arch_own_forecast(returns):
    from arch import arch_model

    r = returns["KO"]
    refit = quarter_end_sessions(pd.DatetimeIndex(r.index))
    vol = garch_volatility(r.to_numpy(), refit)
    row = int(np.flatnonzero(refit)[-1])
    fit = arch_model(r.iloc[row - 499 : row + 1] * 100, mean="Zero", vol="GARCH", p=1, q=1,
                     rescale=False).fit(disp="off", show_warning=False)
    forecast = math.sqrt(fit.forecast(horizon=1).variance.iloc[-1, 0]) / 100 * ANNUAL
    assert vol[row] == pytest.approx(forecast, rel=1e-6)
    # between refits, the variance is filtered with the last parameters
    omega, alpha, beta = (fit.params[k] for k in ("omega", "alpha[1]", "beta[1]"))
    variance = (vol[row] / ANNUAL * 100) ** 2
    for t in range(row + 1, len(r)):
        variance = omega + alpha * (r.iloc[t] * 100) ** 2 + beta * variance
    assert vol[-1] == pytest.approx(math.sqrt(variance) / 100 * ANNUAL, rel=1e-6)


def test_garch_single_call_fits_once_and_agrees_with_the_panel(returns, monkeypatch):
    from quantorch.tools import risk

    r = returns["AAPL"].to_numpy()
    refit = quarter_end_sessions(pd.DatetimeIndex(returns.index))
    everything = garch_volatility(r, refit)
    fits = []
    real_fit = risk._garch_fit
    monkeypatch.setattr(risk, "_garch_fit", lambda h: fits.append(len(h)) or real_fit(h))
    for end in (300, 700, 1200, len(r)):  # cuts between refits, like a single call at t
        fits.clear()
        last = garch_volatility(r[:end], refit[:end], last_only=True)
        assert len(fits) == 1 and fits[0] == min(500, np.flatnonzero(refit[:end])[-1] + 1)
        assert last[-1] == everything[end - 1]


def test_garch_fits_each_window_once_per_process(returns, monkeypatch):
    """A fit is remembered by its window's bytes: computing the panel again (a walk-forward's
    validation and test panels, a later fold) fits nothing and gives the same numbers."""
    from quantorch.tools import risk

    monkeypatch.setattr(risk, "_GARCH_FITS", {})
    r = returns["KO"].to_numpy()
    refit = quarter_end_sessions(pd.DatetimeIndex(returns.index))
    fits = []
    real_fit = risk._garch_fit_uncached
    monkeypatch.setattr(risk, "_garch_fit_uncached", lambda h: fits.append(len(h)) or real_fit(h))
    first = garch_volatility(r, refit)
    assert len(fits) == len(risk._GARCH_FITS) > 0
    fits.clear()
    again = garch_volatility(r.copy(), refit)
    assert fits == [] and np.array_equal(first, again, equal_nan=True)
    shorter = garch_volatility(r[:900], refit[:900])  # a fold that ends earlier
    assert fits == [] and np.array_equal(shorter, first[:900], equal_nan=True)
    monkeypatch.setattr(risk, "_GARCH_FITS_MAX", 2)  # bounded: the oldest entries go
    oldest = next(iter(risk._GARCH_FITS))
    risk._garch_fit(r[:300] * 1.5)
    assert oldest not in risk._GARCH_FITS


def test_garch_needs_250_returns():
    r = stock_market().prices.close["KO"].loc["2014-01-01":"2014-09-30"].pct_change().to_numpy()
    refit = quarter_end_sessions(stock_market().prices.dates[
        (stock_market().prices.dates >= "2014-01-01") & (stock_market().prices.dates <= "2014-09-30")])
    assert np.isnan(garch_volatility(r, refit)).all()


def test_fast_and_full_providers_through_the_runner():
    data = window(stock_market(), "2017-01-01", "2021-12-31", ["AAPL", "KO"])
    asof = pd.Timestamp("2021-03-01")
    fast = RUNNER.run(ToolRequest(tool="risk", ticker="AAPL", asof=asof), data)
    full = RUNNER.run(ToolRequest(tool="risk", ticker="AAPL", asof=asof, provider="full"), data)
    assert fast.provider == "fast" and fast.error is None and full.error is None
    for name in SPEC.provider_outputs("fast"):
        assert fast.features[name] == full.features[name]
    assert all(math.isnan(fast.features[n]) for n in ("var99", "cvar99", "garch_vol"))
    assert full.features["var99"] > full.features["var95"] > 0
    assert 0.1 < full.features["garch_vol"] < 1.0 and "GARCH vol" in full.summary
    assert full.cost_usd > fast.cost_usd


def test_without_a_benchmark_beta_is_not_covered_but_the_rest_is():
    data = window(stock_market(), "2019-01-01", "2021-12-31", ["KO"])
    data = MarketData(prices=data.prices)
    result = RUNNER.run(ToolRequest(tool="risk", ticker="KO", asof=pd.Timestamp("2021-06-01")), data)
    assert math.isnan(result.features["beta252"]) and math.isnan(result.features["corr252"])
    assert result.coverage and math.isfinite(result.features["vol252"])
