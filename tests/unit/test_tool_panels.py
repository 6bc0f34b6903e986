"""Property: a panel value at t equals a single call on data truncated at t (BRIEF section 3).

For every provider of ``technical``, ``risk`` and ``cross_section``, on real data: the 20 S&P 500 stocks
(close-only, 1990-2022) and the ^GSPC/^IXIC OHLCV bars (1999-2018). Panels come from
``ToolRunner.panel`` (what backtests and training use); single calls go through
``ToolRunner.run``, which cuts the data at ``asof``. Numbers must be identical, not close.
"""

from __future__ import annotations

import functools

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quantorch.toolkit.registry import get_tool
from quantorch.toolkit.runner import ToolRunner
from quantorch.toolkit.spec import MarketData, ToolRequest
from tests._tool_data import index_market, same, stock_market, window

RUNNER = ToolRunner(None, cache=False, timeout_s=None)

# risk:full refits a GARCH model every quarter: its panel runs on a shorter window of the data
CASES = {
    ("technical", "basic", "stocks"): stock_market,
    ("technical", "full", "stocks"): stock_market,
    ("technical", "full", "indices"): index_market,
    ("risk", "fast", "stocks"): stock_market,
    ("risk", "fast", "indices"): index_market,
    ("risk", "full", "stocks"): lambda: window(stock_market(), "2011-06-01", "2016-12-31",
                                               ["AAPL", "GE", "RRC", "JNJ"]),
    # ranks within the 20 stocks; AMD, RRC and UNH start later, so the cross-section grows
    ("cross_section", "basic", "stocks"): stock_market,
}


@functools.cache
def _panel(tool: str, provider: str, dataset: str) -> tuple[MarketData, dict[str, pd.DataFrame]]:
    data = CASES[(tool, provider, dataset)]()
    frames = RUNNER.panel(tool, provider, data, data.prices.tickers, data.prices.dates,
                          on_error="raise")
    return data, frames


@pytest.mark.parametrize(("tool", "provider", "dataset"), list(CASES), ids=[":".join(c) for c in CASES])
@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(pick=st.data())
def test_panel_value_equals_single_call_on_truncated_data(tool, provider, dataset, pick):
    data, frames = _panel(tool, provider, dataset)
    dates = data.prices.dates
    # mostly dates with enough history, sometimes the very first sessions (NaN must match too)
    position = pick.draw(st.one_of(st.integers(0, 30), st.integers(0, len(dates) - 1)), label="row")
    ticker = pick.draw(st.sampled_from(data.prices.tickers), label="ticker")
    asof = dates[position]
    result = RUNNER.run(ToolRequest(tool=tool, ticker=ticker, asof=asof, provider=provider), data)
    assert result.error is None, result.error
    for name in get_tool(tool).spec.provider_outputs(provider):
        single, panel = result.features[name], frames[name].at[asof, ticker]
        assert same(single, panel), f"{name} at {asof.date()} {ticker}: single {single} != panel {panel}"


def test_panel_between_sessions_takes_the_last_session():
    data, frames = _panel("technical", "basic", "stocks")
    weekend = pd.DatetimeIndex(["2021-02-26", "2021-02-27", "2021-02-28", "2021-03-01"])
    out = RUNNER.panel("technical", "basic", data, ["AAPL"], weekend)
    rsi = out["rsi14"]["AAPL"]
    assert rsi.iloc[0] == rsi.iloc[1] == rsi.iloc[2] == frames["rsi14"].at[pd.Timestamp("2021-02-26"), "AAPL"]
    assert rsi.iloc[3] == frames["rsi14"].at[pd.Timestamp("2021-03-01"), "AAPL"]
    single = RUNNER.run(ToolRequest(tool="technical", ticker="AAPL", asof=weekend[1]), data)
    assert single.features["rsi14"] == rsi.iloc[1]
