"""The tool runner against a real DuckDB file and the real sample data."""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time

import duckdb
import numpy as np
import pandas as pd
import pytest

from quantorch.data.calendar import decision_time, normalise_asof
from quantorch.errors import (
    DataSourceUnavailableError,
    DateRangeError,
    PluginError,
    UnknownTickerError,
    UserInputError,
)
from quantorch.store import Store
from quantorch.toolkit.base import PanelTool
from quantorch.toolkit.registry import get_tool
from quantorch.toolkit.runner import ToolRunner
from quantorch.toolkit.spec import (
    MarketData,
    OutputField,
    ProviderSpec,
    ToolRequest,
    ToolResult,
    ToolSpec,
)
from tests._tool_data import stock_market, window

ASOF = dt.datetime(2021, 3, 1)


def _spec(name: str, **provider: object) -> ToolSpec:
    return ToolSpec(
        name=name,
        description=f"test tool {name}",
        parameters={"type": "object", "properties": {"window": {"type": "integer", "minimum": 2}},
                    "additionalProperties": False},
        outputs=(OutputField(name="last_close", description="close of the last bar seen", unit="USD"),
                 OutputField(name="bars_seen", description="bars seen", unit="count")),
        providers=(ProviderSpec(name="only", description="the only one", usd_per_call=0.01,
                                expected_latency_ms=1, **provider),),
        default_provider="only",
    )


class LastBar(PanelTool):
    """Reports what it saw: the last close and how many bars (checks the cut at asof)."""

    def __init__(self, name: str = "lastbar", **provider: object) -> None:
        self.spec = _spec(name, **provider)
        self.calls = 0
        self.arguments: list[dict] = []

    def series(self, data, provider, tickers):
        close = data.prices.close.reindex(columns=tickers)
        return {"last_close": close, "bars_seen": close.notna().cumsum().where(close.notna())}

    def run(self, request, data, provider):
        self.calls += 1
        self.arguments.append(dict(request.arguments))
        return super().run(request, data, provider)


class Faulty(LastBar):
    def __init__(self, error: BaseException) -> None:
        super().__init__("faulty")
        self.error = error

    def run(self, request, data, provider):
        self.calls += 1
        raise self.error

    def series(self, data, provider, tickers):
        raise self.error


class Sleepy(LastBar):
    def __init__(self, seconds: float) -> None:
        super().__init__("sleepy")
        self.seconds = seconds
        self.finished = threading.Event()

    def run(self, request, data, provider):
        time.sleep(self.seconds)
        self.finished.set()
        return super().run(request, data, provider)


class Liar(LastBar):
    def __init__(self, answer) -> None:
        super().__init__("liar")
        self.answer = answer

    def run(self, request, data, provider):
        return self.answer(request, provider)


@pytest.fixture(scope="module")
def market() -> MarketData:
    return window(stock_market(), "2018-01-01", "2022-12-31", ["AAPL", "KO", "MSFT"])


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "tools.duckdb")


def _rows(store: Store) -> pd.DataFrame:
    with store.connect(read_only=True) as con:
        return con.execute("SELECT * FROM tool_calls ORDER BY created_at").df()


def test_asof_is_the_close_and_the_tool_sees_nothing_later(store, market):
    tool = LastBar()
    runner = ToolRunner(store, tools={"lastbar": tool})
    close = market.prices.close["AAPL"]
    at_close = runner.run(ToolRequest(tool="lastbar", ticker="AAPL", asof=ASOF), market)
    assert at_close.asof == decision_time(ASOF.date()) == dt.datetime(2021, 3, 1, 21, 0)
    assert at_close.features["last_close"] == close.loc["2021-03-01"]
    morning = pd.Timestamp("2021-03-01 10:00", tz="America/New_York")
    before_close = runner.run(ToolRequest(tool="lastbar", ticker="AAPL", asof=morning), market)
    assert before_close.features["last_close"] == close.loc["2021-02-26"]  # Friday's close
    weekend = runner.run(ToolRequest(tool="lastbar", ticker="AAPL", asof=dt.datetime(2021, 2, 28)), market)
    assert weekend.features["last_close"] == close.loc["2021-02-26"]
    assert normalise_asof("2021-07-01") == dt.datetime(2021, 7, 1, 20, 0)  # summer time


def test_every_call_is_logged_in_batches_without_holding_the_file(store, market):
    runner = ToolRunner(store, run_id="run-1", batch_size=3, cache=False)
    days = pd.bdate_range("2021-03-01", periods=5)
    for day in days[:3]:
        runner.run(ToolRequest(tool="technical", ticker="KO", asof=day), market)
    assert len(_rows(store)) == 3  # the third call flushed the batch
    runner.run(ToolRequest(tool="technical", ticker="KO", asof=days[3]), market)
    duckdb.connect(str(store.path)).close()  # a writer can open the file between flushes
    assert len(_rows(store)) == 3
    with runner:
        runner.run(ToolRequest(tool="risk", ticker="KO", asof=days[4], provider="full"), market)
    rows = _rows(store)
    assert len(rows) == 5 and set(rows["run_id"]) == {"run-1"}
    last = rows.iloc[-1]
    assert (last["tool"], last["provider"], last["ticker"]) == ("risk", "full", "KO")
    assert last["as_of"] == pd.Timestamp(decision_time(days[4]))
    assert last["cost_usd"] == get_tool("risk").spec.provider("full").usd_per_call
    assert last["latency_ms"] > 0 and not last["cache_hit"] and last["error"] is None
    outputs = json.loads(last["outputs"])
    assert outputs["garch_vol"] > 0 and set(outputs) == set(get_tool("risk").spec.output_names)
    assert json.loads(rows.iloc[0]["outputs"])["natr14"] is None  # NaN is stored as null
    assert runner.flush() == 0


def test_a_repeat_is_a_free_cache_hit_and_is_logged(store, market):
    request = ToolRequest(tool="technical", ticker="MSFT", asof=ASOF, provider="full")
    with ToolRunner(store, run_id="a") as first:
        paid = first.run(request, market)
        again = first.run(request, market)
    assert not paid.cache_hit and paid.cost_usd == 0.002
    assert again.cache_hit and again.cost_usd == 0
    assert again.finite_features() == paid.finite_features() and len(paid.finite_features()) == 10
    with ToolRunner(store, run_id="b") as second:  # a new process: the answer comes from DuckDB
        stored = second.run(request, market)
    assert stored.cache_hit and stored.cost_usd == 0 and stored.summary == paid.summary
    assert all(
        (math.isnan(a) and math.isnan(b)) or a == b
        for a, b in zip(stored.features.values(), paid.features.values(), strict=True)
    )
    rows = _rows(store)
    assert list(rows["cache_hit"]) == [False, True, True] and list(rows["cost_usd"]) == [0.002, 0, 0]
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM tool_cache").fetchone()[0] == 1


def test_the_cache_key_covers_the_data(store, market):
    request = ToolRequest(tool="technical", ticker="MSFT", asof=ASOF)
    shorter = window(market, "2020-06-01", "2022-12-31")  # another history window
    with ToolRunner(store) as runner:
        first = runner.run(request, market)
        other = runner.run(request, shorter)
        later = runner.run(request, window(market, "2018-01-01", "2021-12-31"))  # data after asof only
    assert not first.cache_hit and not other.cache_hit
    assert later.cache_hit  # what the call can see did not change


def test_nondeterministic_providers_are_never_cached(store, market):
    tool = LastBar("coin", deterministic=False)
    with ToolRunner(store, tools={"coin": tool}) as runner:
        for _ in range(2):
            result = runner.run(ToolRequest(tool="coin", ticker="KO", asof=ASOF), market)
            assert not result.cache_hit and result.cost_usd == 0.01
    assert tool.calls == 2


def test_a_faulty_tool_gives_an_error_result_not_an_exception(store, market):
    tool = Faulty(ZeroDivisionError("division by zero"))
    with ToolRunner(store, tools={"faulty": tool}) as runner:
        results = [runner.run(ToolRequest(tool="faulty", ticker="KO", asof=ASOF), market) for _ in range(2)]
    for result in results:
        assert result.error == "tool fault: faulty:only raised ZeroDivisionError: division by zero"
        assert not result.coverage and math.isnan(result.features["last_close"])
        assert result.cost_usd == 0.01  # the provider was invoked
    assert tool.calls == 2  # errors are not cached
    assert list(_rows(store)["error"].str.startswith("tool fault")) == [True, True]


def test_a_temporary_failure_says_so(market):
    tool = Faulty(DataSourceUnavailableError("endpoint http://localhost:9/v1 unreachable"))
    result = ToolRunner(None, tools={"faulty": tool}).run(
        ToolRequest(tool="faulty", ticker="KO", asof=ASOF), market)
    assert result.error.startswith("temporary failure: faulty:only raised DataSourceUnavailableError")


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda request, provider: {"last_close": 1.0}, "returned dict, not a ToolResult"),
        (lambda request, provider: ToolResult(
            tool="liar", provider="only", ticker="KO", asof=request.asof, features={"secret": 1.0},
            summary="", coverage=True, cost_usd=0, latency_ms=0), "features ['secret']"),
    ],
)
def test_a_malformed_result_is_a_tool_fault(market, answer, message):
    result = ToolRunner(None, tools={"liar": Liar(answer)}).run(
        ToolRequest(tool="liar", ticker="KO", asof=ASOF), market)
    assert result.error.startswith("tool fault") and message in result.error


def test_a_slow_tool_times_out(store, market):
    tool = Sleepy(5.0)
    runner = ToolRunner(store, tools={"sleepy": tool}, timeout_s=0.2)
    started = time.perf_counter()
    result = runner.run(ToolRequest(tool="sleepy", ticker="KO", asof=ASOF), market)
    assert time.perf_counter() - started < 2.0
    assert result.error == "timeout: sleepy:only took longer than 0.2s"
    assert result.cost_usd == 0.01 and not tool.finished.is_set()
    quick = ToolRunner(None, tools={"sleepy": Sleepy(0.0)}, timeout_s=0.2)
    assert quick.run(ToolRequest(tool="sleepy", ticker="KO", asof=ASOF), market).error is None
    runner.close()
    assert _rows(store)["error"].iloc[0].startswith("timeout")


def test_arguments_are_validated_against_the_schema(store, market):
    tool = LastBar()
    with ToolRunner(store, tools={"lastbar": tool}) as runner:
        bad = runner.run(ToolRequest(tool="lastbar", ticker="KO", asof=ASOF, arguments={"window": "20"}), market)
        small = runner.run(ToolRequest(tool="lastbar", ticker="KO", asof=ASOF, arguments={"window": 1}), market)
        extra = runner.run(ToolRequest(tool="lastbar", ticker="KO", asof=ASOF, arguments={"span": 3}), market)
        good = runner.run(ToolRequest(tool="lastbar", ticker="KO", asof=ASOF, arguments={"window": 20}), market)
    assert bad.error == ("rejected: invalid arguments for tool lastbar at window: '20' is not of type "
                         "'integer' (allowed arguments: window)")
    assert "1 is less than the minimum of 2" in small.error
    assert "'span' was unexpected" in extra.error
    assert bad.cost_usd == small.cost_usd == extra.cost_usd == 0  # nothing ran
    assert good.error is None and tool.arguments == [{"window": 20}]
    rows = _rows(store)
    assert json.loads(rows.iloc[0]["arguments"]) == {"window": "20"} and len(rows) == 4


@pytest.mark.parametrize(
    ("request_fields", "error", "kind"),
    [
        ({"asof": dt.datetime(2017, 6, 1)}, "before the first AAPL bar; the AAPL data runs from 2018-01-02 to 2022-12-28", DateRangeError),
        ({"asof": dt.datetime(2023, 1, 5)}, "after the last AAPL session available", DateRangeError),
        ({"ticker": "APPL"}, "no price data for ticker 'APPL' (did you mean AAPL?)", UnknownTickerError),
        ({"tool": "risky"}, "unknown tool 'risky' (did you mean risk?)", UserInputError),
        ({"provider": "fastest"}, "unknown provider 'fastest' for tool risk (did you mean fast?); providers: fast, full", UserInputError),
    ],
)
def test_bad_requests_are_rejected_and_logged(store, market, request_fields, error, kind):
    fields = {"tool": "risk", "ticker": "AAPL", "asof": ASOF, **request_fields}
    request = ToolRequest(**fields)
    with ToolRunner(store) as runner:
        result = runner.run(request, market)
        with pytest.raises(kind, match=None) as raised:
            runner.check(request, market)
    assert error in result.error and result.error.startswith("rejected: ")
    assert error in str(raised.value)
    assert result.cost_usd == 0 and not result.coverage
    assert _rows(store)["error"].iloc[0] == result.error


def test_last_session_of_the_data_is_fine_and_the_next_holiday_too(market):
    runner = ToolRunner(None)
    last = runner.run(ToolRequest(tool="risk", ticker="AAPL", asof=dt.datetime(2022, 12, 28)), market)
    assert last.error is None and last.coverage
    after = runner.run(ToolRequest(tool="risk", ticker="AAPL", asof=dt.datetime(2022, 12, 29)), market)
    assert after.error.startswith("rejected: asof 2022-12-29 (close) is after the last AAPL session")


def test_run_many_answers_in_order_with_one_lookup(store, market):
    requests = [ToolRequest(tool="technical", ticker=t, asof=ASOF) for t in ("AAPL", "KO", "AAPL")]
    requests.insert(1, ToolRequest(tool="technical", ticker="NOPE", asof=ASOF))
    with ToolRunner(store) as runner:
        results = runner.run_many(requests, market)
    assert [r.ticker for r in results] == ["AAPL", "NOPE", "KO", "AAPL"]
    assert [r.cache_hit for r in results] == [False, False, False, True]
    assert results[1].error.startswith("rejected: no price data for ticker 'NOPE'")


def test_panel_matches_single_calls_and_survives_a_faulty_tool(market):
    runner = ToolRunner(None, cache=False)
    dates = pd.DatetimeIndex(["2021-02-26", "2021-02-27", "2021-03-01"])
    frames = runner.panel("technical", "full", market, ["AAPL", "KO"], dates)
    assert set(frames) == set(get_tool("technical").spec.provider_outputs("full"))
    single = runner.run(ToolRequest(tool="technical", ticker="KO", asof=dates[1], provider="full"), market)
    assert frames["macd_hist"].at[dates[1], "KO"] == single.features["macd_hist"]

    broken = ToolRunner(None, tools={"faulty": Faulty(ValueError("bad panel"))})
    with pytest.warns(RuntimeWarning, match="faulty:only panel failed: ValueError: bad panel"):
        nan_frames = broken.panel("faulty", None, market, ["KO"], dates)
    assert nan_frames["last_close"].isna().all().all() and "faulty:only" in broken.panel_errors
    with pytest.raises(PluginError, match="bad panel"):
        broken.panel("faulty", None, market, ["KO"], dates, on_error="raise")
    with pytest.raises(DateRangeError, match="panel dates run to 2023-06-30"):
        runner.panel("technical", None, market, ["KO"], pd.DatetimeIndex(["2023-06-30"]))
    with pytest.raises(UnknownTickerError):
        runner.panel("technical", None, market, ["NOPE"], dates)
    assert np.isfinite(frames["rsi14"].to_numpy()).all()
