"""Coverage is honest and a call without it is not charged (issue 13).

A tool has data for a (ticker, date) by its own rule: sentiment needs news in the window (no
news is a finite, neutral 0 and not coverage), risk a return-based measure (a first bar's
drawdown of 0 is not), technical and fundamental one finite output (they are NaN without data).
A call without coverage costs nothing in every path: the stored tool-call row (runner and both
kernel executors), the decision core's budget and the reward's tool-cost term. Single calls,
panels and the decision dataset agree on coverage for the same (tool, ticker, date).

Prices: 20 S&P 500 stocks' real closes (skfolio); a few headlines are planted for KO, as in
tests/unit/test_sentiment.py, so news and no news both occur at known decisions.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
import pytest

from quantorch.data.calendar import decision_time, decision_times
from quantorch.kernel.executor import PanelExecutor, RunnerExecutor
from quantorch.orchestrator.dataset import build_dataset
from quantorch.orchestrator.env import POSITION_BUCKETS, DecisionCore, EnvConfig
from quantorch.orchestrator.orchestrators import ScriptedRouter, decide
from quantorch.orchestrator.profiles import load_profile
from quantorch.orchestrator.slots import resolve_slots, slot_panels
from quantorch.store import Store
from quantorch.toolkit.registry import get_tool
from quantorch.toolkit.runner import ToolRunner
from quantorch.toolkit.spec import ToolRequest, charged_cost, covered
from tests._tool_data import stock_market, window

TICKERS = ["KO", "XOM", "JPM", "PG"]
NEWS_DAY = pd.Timestamp("2015-02-02")
SLOTS = ("sentiment:lexicon", "risk:fast", "technical:basic", "fundamental:factor")


@functools.cache
def market():
    """KO, XOM, JPM and PG from 2015-01-02 (so their first sessions are a warm-up), with two KO
    headlines before the 2015-02-02 close and one published at that close (not yet known)."""
    data = window(stock_market(), "2015-01-02", "2015-06-30", TICKERS)
    close = decision_time(NEWS_DAY)
    news = pd.DataFrame(
        {
            "published_at": [close - pd.Timedelta(hours=5), close - pd.Timedelta(days=1), close],
            "ticker": ["KO", "KO", "KO"],
            "headline": [
                "Coca-Cola beats profit estimates and raises its dividend",
                "Coca-Cola shares fall after weak sales in Europe",
                "Coca-Cola announces record profit",
            ],
            "body": ["", "", ""],
            "source": ["planted"] * 3,
        }
    )
    news["published_at"] = pd.to_datetime(news["published_at"]).astype("datetime64[ns]")
    return dataclasses.replace(data, news=news)


def _request(tool: str, ticker: str, day: pd.Timestamp, provider: str) -> ToolRequest:
    return ToolRequest(tool=tool, ticker=ticker, asof=decision_time(day), provider=provider)


# ---- the rule ---------------------------------------------------------------------------------


def test_charged_cost_is_the_price_with_data_and_nothing_without():
    assert charged_cost(0.002, True) == 0.002 and charged_cost(0.002, False) == 0.0
    prices = np.array([0.001, 0.005, 0.002])
    assert charged_cost(prices, np.array([True, False, True])).tolist() == [0.001, 0.0, 0.002]


def test_each_tool_defines_no_data():
    sentiment, risk = get_tool("sentiment"), get_tool("risk")
    lexicon, fast = sentiment.spec.provider("lexicon"), risk.spec.provider("fast")
    no_news = {
        "sentiment_score": 0.0,
        "news_count": 0.0,
        "positive_share": 0.0,
        "negative_share": 0.0,
    }
    assert not covered(sentiment, lexicon, no_news)
    assert covered(sentiment, lexicon, {**no_news, "news_count": np.log1p(2)})
    first_bar = {name: np.nan for name in risk.spec.provider_outputs("fast")} | {"drawdown": 0.0}
    assert not covered(risk, fast, first_bar)
    assert covered(risk, fast, first_bar | {"vol21": 0.2})


# ---- single calls: stored coverage and cost -----------------------------------------------------


def test_sentiment_without_news_is_not_covered_and_not_charged(tmp_path):
    store = Store(tmp_path / "calls.duckdb")
    later = NEWS_DAY + pd.Timedelta(days=10)  # KO's items are out of the 3-day window by then
    with ToolRunner(store, cache=False) as runner:
        results = runner.run_many(
            [
                _request("sentiment", "KO", NEWS_DAY, "lexicon"),
                _request("sentiment", "XOM", NEWS_DAY, "lexicon"),
                _request("sentiment", "KO", later, "lexicon"),
            ],
            market(),
        )
    with store.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT ticker, coverage, cost_usd, outputs FROM tool_calls ORDER BY as_of, ticker"
        ).fetchall()
    price = get_tool("sentiment").spec.provider("lexicon").usd_per_call
    with_news, without, gone = results
    assert with_news.coverage and with_news.cost_usd == price
    assert with_news.features["news_count"] == pytest.approx(np.log1p(2))  # not the item at t
    for result in (without, gone):
        assert result.error is None and not result.coverage and result.cost_usd == 0
        assert result.features["news_count"] == 0 and result.features["sentiment_score"] == 0
    assert [(t, c, x) for t, c, x, _ in rows] == [
        ("KO", True, price),
        ("XOM", False, 0.0),
        ("KO", False, 0.0),
    ]


def test_risk_on_a_first_bar_is_not_covered_and_not_charged():
    runner = ToolRunner(None, cache=False)
    sessions = market().prices.dates
    early, later = (
        runner.run(_request("risk", "KO", sessions[i], "fast"), market()) for i in (3, 40)
    )
    assert early.features["drawdown"] <= 0 and np.isnan(early.features["vol21"])
    assert not early.coverage and early.cost_usd == 0
    assert later.coverage and later.cost_usd == get_tool("risk").spec.provider("fast").usd_per_call


# ---- panels and real calls agree ----------------------------------------------------------------


def _sessions() -> pd.DatetimeIndex:
    dates = market().prices.dates
    # warm-up sessions, the news day, after it, and well into the history
    return pd.DatetimeIndex([dates[2], dates[12], dates[25], NEWS_DAY, dates[45], dates[100]])


def test_panel_and_live_calls_agree_on_coverage_and_cost():
    slots = resolve_slots(SLOTS)
    sessions = _sessions()
    panels = PanelExecutor.build(market(), slots, TICKERS, sessions)
    live = RunnerExecutor(ToolRunner(None, cache=False, timeout_s=None), market())
    seen = set()
    for slot in slots:
        for session in sessions:
            from_panels = panels.call(slot, TICKERS, session)
            from_calls = live.call(slot, TICKERS, session)
            for a, b in zip(from_panels, from_calls, strict=True):
                assert b.error is None, b.error
                assert a.coverage == b.coverage, (slot.key, session, a.ticker)
                assert a.cost_usd == b.cost_usd == charged_cost(slot.price_usd, b.coverage)
                seen.add((slot.tool, b.coverage))
    # each tool was seen without data (warm-up, no news, factor ETFs absent) and sentiment,
    # risk and technical with data too
    assert {
        ("sentiment", False),
        ("sentiment", True),
        ("risk", False),
        ("risk", True),
        ("technical", False),
        ("technical", True),
        ("fundamental", False),
    } <= seen


def test_the_decision_dataset_has_the_coverage_of_single_calls():
    slots = resolve_slots(SLOTS)
    sessions = _sessions()
    panels, _ = slot_panels(market(), slots, TICKERS, sessions)
    dataset = build_dataset(market().prices, panels, sessions, TICKERS, horizon=5)
    runner = ToolRunner(None, cache=False, timeout_s=None)
    requests = [
        ToolRequest(tool=s.tool, ticker=str(t), asof=when.to_pydatetime(), provider=s.provider)
        for t, when in zip(
            dataset.tickers, decision_times(pd.DatetimeIndex(dataset.dates)), strict=True
        )
        for s in slots
    ]
    single = np.array([r.coverage for r in runner.run_many(requests, market())])
    assert np.array_equal(dataset.slot_coverage, single.reshape(len(dataset), len(slots)))
    sentiment = dataset.slot_coverage[:, 0]
    assert sentiment.sum() == 1  # KO on the news day only: finite zeros elsewhere are not data


# ---- the decision core: an uncovered call spends nothing ----------------------------------------


def _news_day_dataset():
    """Sentiment and technical on the news day: KO had news, XOM none; their rows."""
    slots = resolve_slots(["sentiment:lexicon", "technical:basic"])
    sessions = pd.DatetimeIndex([NEWS_DAY])
    panels, _ = slot_panels(market(), slots, TICKERS, sessions)
    dataset = build_dataset(market().prices, panels, sessions, TICKERS, horizon=5)
    ko, xom = (int(np.flatnonzero(dataset.tickers == t)[0]) for t in ("KO", "XOM"))
    return slots, dataset, ko, xom


def test_a_call_without_coverage_spends_nothing_and_costs_no_reward():
    slots, dataset, ko, xom = _news_day_dataset()
    assert dataset.slot_coverage[ko].tolist() == [True, True]
    assert dataset.slot_coverage[xom].tolist() == [False, True]
    profile = load_profile("neutral")
    core = DecisionCore(dataset, [profile], EnvConfig(), n=2, auto_reset=False)
    core.load(np.array([ko, xom]), np.zeros(2, dtype=np.int64), np.zeros(2))
    obs, reward, _, _ = core.step(np.array([0, 0]))  # sentiment for both
    price = slots[0].price_usd
    assert core.spent.tolist() == [price, 0.0]
    assert reward[0] < 0 and reward[1] == 0
    _, end = core._slices[3]  # the sentiment slot's features, then "called" and "coverage"
    assert obs[:, end - 2].tolist() == [1, 1] and obs[:, end - 1].tolist() == [1, 0]
    hold = core.n_slots + int(np.flatnonzero(POSITION_BUCKETS == 0)[0])
    _, _, done, info = core.step(np.array([hold, hold]))
    assert done.all() and info["terms"]["tool_cost"][1] == 0 < info["terms"]["tool_cost"][0]

    # through decide, as a backtest and the llm training reward run it: XOM pays technical only
    router = ScriptedRouter("script", ((0, 1), (0, 1)), np.array([2, 2]))
    batch = decide(
        router,
        dataset,
        [profile],
        EnvConfig(),
        np.array([ko, xom]),
        np.zeros(2, dtype=np.int64),
        np.zeros(2),
    )
    assert batch.spent.tolist() == pytest.approx([price + slots[1].price_usd, slots[1].price_usd])


def test_a_call_without_coverage_earns_no_preference_bonus():
    """The tool fit counts tools that answered: calling an empty preferred slot is no free bonus."""
    slots, dataset, ko, xom = _news_day_dataset()
    neutral = load_profile("neutral")
    fan = neutral.model_copy(update={  # ungated, so the outcome of a flat book does not matter
        "name": "news-fan", "tool_preferences": {"sentiment": 1.0},
        "reward": neutral.reward.model_copy(update={"gate_preference": False})})
    # both call sentiment and keep a flat book
    router = ScriptedRouter("script", ((0,), (0,)), np.array([2, 2]))
    batch = decide(router, dataset, [fan], EnvConfig(), np.array([ko, xom]),
                   np.zeros(2, dtype=np.int64), np.zeros(2))
    bonus = batch.terms["preference"]
    assert bonus[0] > 0 and bonus[1] == 0  # KO had news; XOM's call answered "no data"


def test_run_summary_counts_the_calls_that_answered():
    """A backtest's tool summary tells calls with data from free, empty ones."""
    from quantorch.backtest.runner import tool_usage

    decisions = pd.DataFrame({"decision_date": pd.to_datetime(["2020-01-02"] * 2),
                              "target_weight": [0.5, 0.0], "tools_called": [["sentiment:lexicon",
                              "technical:basic"], ["sentiment:lexicon"]]})
    calls = pd.DataFrame({"tool": ["sentiment", "technical", "sentiment"],
                          "provider": ["lexicon", "basic", "lexicon"],
                          "cost_usd": [0.0, 0.001, 0.0], "coverage": [False, True, False]})
    usage = tool_usage(decisions, calls, pd.DataFrame({"notional": [1000.0]}),
                       pd.Series([1e5], index=pd.to_datetime(["2020-01-02"])))
    assert usage["tool_calls"] == 3 and usage["answered_calls"] == 1
    assert usage["tool_cost_usd"] == pytest.approx(0.001)
