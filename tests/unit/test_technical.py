"""The technical tool on real data: values against independent computations, coverage rules."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from quantorch.tools.technical import SPEC, TOOL

from quantorch.data.panel import PricePanel
from quantorch.toolkit.runner import ToolRunner
from quantorch.toolkit.spec import MarketData, ToolRequest
from tests._tool_data import index_market, stock_market

RUNNER = ToolRunner(None, cache=False, timeout_s=None)
ASOF = pd.Timestamp("2021-03-01")


def _call(data: MarketData, ticker: str, provider: str, asof=ASOF):
    result = RUNNER.run(ToolRequest(tool="technical", ticker=ticker, asof=asof, provider=provider), data)
    assert result.error is None, result.error
    return result


def test_close_indicators_match_independent_computations():
    data = stock_market()
    close = data.prices.close["AAPL"].loc[:ASOF].dropna()
    f = _call(data, "AAPL", "full").features
    assert f["close_vs_sma20"] == pytest.approx(close.iloc[-1] / close.iloc[-20:].mean() - 1, rel=1e-9)
    assert f["close_vs_sma50"] == pytest.approx(close.iloc[-1] / close.iloc[-50:].mean() - 1, rel=1e-9)
    assert f["close_vs_sma200"] == pytest.approx(close.iloc[-1] / close.iloc[-200:].mean() - 1, rel=1e-9)
    assert f["roc10"] == pytest.approx(close.iloc[-1] / close.iloc[-11] - 1, rel=1e-9)
    assert f["roc20"] == pytest.approx(close.iloc[-1] / close.iloc[-21] - 1, rel=1e-9)
    last20 = close.iloc[-20:]
    mean, sd = last20.mean(), last20.std(ddof=0)  # TA-Lib bands use the population sd
    assert f["bollinger_pctb"] == pytest.approx((close.iloc[-1] - (mean - 2 * sd)) / (4 * sd), rel=1e-6)
    assert f["zscore20"] == pytest.approx((close.iloc[-1] - mean) / sd, rel=1e-6)
    sma50 = close.rolling(50).mean()
    assert f["sma50_slope"] == pytest.approx(sma50.iloc[-1] / sma50.iloc[-6] - 1, rel=1e-6)
    # Wilder's RSI: after 30 years of history the seed no longer matters
    change = close.diff()
    gain = change.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    loss = (-change.clip(upper=0)).ewm(alpha=1 / 14, adjust=False).mean()
    rsi = 100 - 100 / (1 + gain.iloc[-1] / loss.iloc[-1])
    assert f["rsi14"] == pytest.approx(rsi / 100 - 0.5, abs=1e-6)
    ema = lambda s, n: s.ewm(span=n, adjust=False).mean()
    macd = ema(close, 12) - ema(close, 26)
    hist = macd - ema(macd, 9)
    assert f["macd_hist"] == pytest.approx(hist.iloc[-1] / close.iloc[-1], abs=1e-6)


def test_close_only_series_work_and_say_what_is_not_covered():
    full = _call(stock_market(), "KO", "full")
    assert full.coverage
    for name in ("natr14", "adx14", "obv_slope20", "volume_z20"):
        assert math.isnan(full.features[name])
    assert "ATR/ADX not covered" in full.summary and "volume indicators not covered" in full.summary
    assert all(math.isfinite(full.features[n]) for n in SPEC.provider_outputs("basic"))


def test_basic_fills_only_its_outputs():
    basic = _call(stock_market(), "KO", "basic")
    assert set(basic.features) == set(SPEC.output_names)
    filled = {k for k, v in basic.features.items() if math.isfinite(v)}
    assert filled == set(SPEC.provider_outputs("basic"))
    assert basic.cost_usd == SPEC.provider("basic").usd_per_call < SPEC.provider("full").usd_per_call


def test_ohlcv_series_get_atr_adx_and_volume_indicators():
    data = index_market()
    asof = pd.Timestamp("2008-10-15")
    f = _call(data, "^GSPC", "full", asof).features
    bars = pd.DataFrame({n: getattr(data.prices, n)["^GSPC"] for n in ("high", "low", "close", "volume")})
    bars = bars.loc[:asof]
    true_range = pd.concat(
        [bars.high - bars.low, (bars.high - bars.close.shift()).abs(), (bars.low - bars.close.shift()).abs()],
        axis=1,
    ).max(axis=1)
    atr = true_range.iloc[1:].ewm(alpha=1 / 14, adjust=False).mean()  # Wilder, converged
    assert f["natr14"] == pytest.approx(atr.iloc[-1] / bars.close.iloc[-1], rel=1e-4)
    assert 0 < f["adx14"] < 1
    volume = bars.volume
    assert f["volume_z20"] == pytest.approx(
        (volume.iloc[-1] - volume.iloc[-20:].mean()) / volume.iloc[-20:].std(ddof=0), rel=1e-6
    )
    direction = np.sign(bars.close.diff()).fillna(0)
    obv = (direction * volume).cumsum()
    assert f["obv_slope20"] == pytest.approx(
        (obv.iloc[-1] - obv.iloc[-21]) / (20 * volume.iloc[-20:].mean()), rel=1e-6
    )
    assert f["natr14"] > 0.03  # October 2008: days of 5% ranges


def test_missing_bars_are_skipped_not_filled():
    """A ticker's indicators run on its own bars: sessions without a bar are left out."""
    close = stock_market().prices.close[["AAPL"]].loc["2019":"2021-03-01"].copy()
    gappy = close.copy()
    gappy.iloc[100:110] = np.nan  # a 10-session halt
    data = MarketData(prices=PricePanel.from_close(gappy))
    compact = MarketData(prices=PricePanel.from_close(gappy.dropna()))
    a = _call(data, "AAPL", "full").features
    b = _call(compact, "AAPL", "full").features
    for name in SPEC.provider_outputs("full"):
        assert (math.isnan(a[name]) and math.isnan(b[name])) or a[name] == b[name]
    halted = RUNNER.run(ToolRequest(tool="technical", ticker="AAPL", asof=gappy.index[105]), data)
    assert halted.error is None and not halted.coverage  # no bar that session: no value


def test_partial_ohlc_counts_bars_with_a_range_from_when_they_exist():
    data = index_market()
    prices = data.prices.select(["^GSPC"])
    high, low = prices.high.copy(), prices.low.copy()
    high.loc[:"2004-12-31"] = np.nan  # highs and lows only from 2005 (e.g. a file import)
    low.loc[:"2004-12-31"] = np.nan
    partial = MarketData(prices=PricePanel(prices.close, prices.open, high, low, prices.volume))
    assert math.isnan(_call(partial, "^GSPC", "full", pd.Timestamp("2004-06-01")).features["natr14"])
    late = _call(partial, "^GSPC", "full", pd.Timestamp("2006-06-01")).features["natr14"]
    assert late == pytest.approx(_call(data, "^GSPC", "full", pd.Timestamp("2006-06-01")).features["natr14"],
                                 rel=1e-3)


def test_short_history_has_no_coverage():
    close = stock_market().prices.close[["AAPL"]].loc["2021-01-04":"2021-01-12"]
    result = _call(MarketData(prices=PricePanel.from_close(close)), "AAPL", "basic",
                   pd.Timestamp("2021-01-12"))
    assert not result.coverage and result.summary.endswith("not enough history")


def test_panel_is_vectorised_over_tickers():
    data = stock_market()
    frames = TOOL.panel(data, SPEC.provider("basic"), ["AAPL", "KO", "NOPE"], data.prices.dates[-5:])
    assert set(frames) == set(SPEC.provider_outputs("basic"))
    assert frames["rsi14"].shape == (5, 3) and frames["rsi14"]["NOPE"].isna().all()
    assert frames["rsi14"][["AAPL", "KO"]].notna().all().all()
