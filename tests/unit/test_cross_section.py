"""The cross_section tool: ranks within the universe, known at t, whoever is asked about.

(Its panel equals single calls and sees no future: tests/unit/test_tool_panels.py and
tests/unit/test_poisoned_future.py run it with the other tools.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quantorch.toolkit.runner import ToolRunner
from quantorch.toolkit.spec import ToolRequest
from tests._tool_data import stock_market, window
from tools.cross_section import LOOKBACK, MIN_PEERS, centred_rank

RUNNER = ToolRunner(None, cache=False, timeout_s=None)
DAY = pd.Timestamp("2015-03-02")


def test_centred_rank_by_hand():
    frame = pd.DataFrame(
        [[1.0, 2.0, 3.0, 4.0, 5.0, np.nan],   # five values: -0.5 .. +0.5 in quarters
         [5.0, 5.0, 1.0, 2.0, 3.0, 4.0],      # a tie shares the mean rank
         [1.0, 2.0, np.inf, 3.0, np.nan, 4.0]],  # four finite values: too few to rank
        columns=list("abcdef"))
    out = centred_rank(frame)
    assert out.iloc[0].tolist()[:5] == [-0.5, -0.25, 0.0, 0.25, 0.5] and np.isnan(out.iat[0, 5])
    assert out.iat[1, 0] == out.iat[1, 1] == pytest.approx(0.4) and out.iat[1, 2] == -0.5
    assert out.iloc[2].isna().all()
    assert MIN_PEERS == 5


def test_the_ranks_are_of_the_closes_known_at_t():
    data = stock_market()
    result = RUNNER.run(ToolRequest(tool="cross_section", ticker="KO", asof=DAY), data)
    close = data.prices.close.loc[:DAY]
    five = close.iloc[-1] / close.iloc[-6] - 1
    expected = (five.rank()["KO"] - 1) / (five.notna().sum() - 1) - 0.5
    assert result.features["rank_return_5d"] == pytest.approx(expected, abs=1e-12)
    assert result.features["excess_return_5d"] == pytest.approx(five["KO"] - five.median(), abs=1e-12)
    assert result.coverage and result.cost_usd == 0.0005
    assert "percentile" in result.summary


def test_the_answer_does_not_depend_on_who_else_was_asked():
    data = stock_market()
    alone = RUNNER.run_many([ToolRequest(tool="cross_section", ticker="KO", asof=DAY)], data)[0]
    among = RUNNER.run_many([ToolRequest(tool="cross_section", ticker=t, asof=DAY)
                             for t in ("AAPL", "KO", "XOM")], data)[1]
    assert among.ticker == "KO" and among.features == alone.features


def test_a_call_ranks_only_the_last_sessions_and_gets_the_same_numbers():
    data = stock_market()
    short = window(data, str(data.prices.dates[-LOOKBACK].date()), "2022-12-31")
    asof = data.prices.dates[-1]
    whole = RUNNER.run(ToolRequest(tool="cross_section", ticker="JPM", asof=asof), data)
    cut = RUNNER.run(ToolRequest(tool="cross_section", ticker="JPM", asof=asof), short)
    assert whole.features == cut.features
    assert np.isfinite(list(whole.features.values())).all()


def test_a_single_ticker_has_no_cross_section_and_is_not_charged():
    data = window(stock_market(), "2014-01-01", "2015-12-31", ["KO", "PEP", "XOM", "CVX"])
    result = RUNNER.run(ToolRequest(tool="cross_section", ticker="KO", asof=DAY), data)
    assert result.error is None
    assert not result.coverage and result.cost_usd == 0
    assert all(np.isnan(v) for v in result.features.values())
    assert "no cross-section" in result.summary
