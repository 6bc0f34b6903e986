"""The query core and the research views, on small databases built from real closes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from quantorch import query
from quantorch.backtest.metrics import drawdown_series
from quantorch.errors import UserInputError
from quantorch.store import Store
from quantorch.store._schema import LATEST_VERSION

VIEWS = ("v_runs", "v_equity", "v_tool_usage", "v_decisions", "v_pnl_attribution")
SESSIONS = 501  # skfolio sessions from 2021-01-04 to 2022-12-28, the end of its data
DOCS = Path(__file__).resolve().parents[2] / "docs" / "schema.md"


@pytest.fixture
def store(tmp_path) -> Store:
    store = Store(tmp_path / "q.duckdb", lock_timeout=1)
    store.migrate()
    return store


@pytest.fixture
def priced(store, sp500_closes) -> Store:
    """AAPL and KO adjusted closes of 2021-2022 from skfolio as the `sample` source."""
    closes = sp500_closes.loc["2021":"2022", ["AAPL", "KO"]]
    long = closes.stack().rename("adj_close").reset_index()
    long.columns = ["date", "ticker", "adj_close"]
    long["date"] = long["date"].dt.date
    with store.transaction() as con:
        con.register("_long", long)
        con.execute(
            "INSERT INTO prices SELECT ticker, date, 'sample', NULL, NULL, NULL, adj_close, "
            "adj_close, NULL FROM _long"
        )
    return store


def _insert_run(con, run_id: str, *, config: dict | None = None, metrics: dict | None = None,
                benchmark_metrics: dict | None = None) -> None:
    con.execute(
        "INSERT INTO runs (run_id, kind, created_at, strategy, source, universe, benchmark, "
        "start_date, end_date, rebalance, seed, config_hash, config, code_version, metrics, "
        "benchmark_metrics, report_path) "
        "VALUES (?, 'evaluate', TIMESTAMP '2024-01-01', 'policy', 'sample', "
        "['AAPL', 'KO'], 'SP500', DATE '2021-01-04', DATE '2022-12-28', 'weekly', 1, 'h', ?, "
        "'test', ?, ?, NULL)",
        [run_id, json.dumps(config or {}), json.dumps(metrics or {}),
         json.dumps(benchmark_metrics) if benchmark_metrics is not None else None],
    )


def _insert_decision(con, run_id, decision_id, ticker, decision_date, fill_date, *, horizon=5,
                     tools=(), weight=0.05, profile="neutral", cost=0.0):
    con.execute(
        "INSERT INTO decisions (run_id, decision_id, orchestrator, profile, ticker, decision_date, "
        "fill_date, horizon, tools_called, n_calls, tool_cost_usd, proposed_position, "
        "target_weight, guard_note, rationale, reward) VALUES (?, ?, 'policy', ?, ?, ?, ?, ?, ?, "
        "?, ?, 0.5, ?, NULL, NULL, NULL)",
        [run_id, decision_id, profile, ticker, decision_date, fill_date, horizon, list(tools),
         len(tools), cost, weight],
    )


def _insert_call(con, call_id, run_id, tool, ticker, as_of, *, cost=0.001, latency=10.0,
                 cache_hit=False, error=None, provider="p"):
    con.execute(
        "INSERT INTO tool_calls (call_id, run_id, tool, provider, ticker, as_of, arguments, "
        "outputs, summary, coverage, cost_usd, latency_ms, cache_hit, error, input_tokens, "
        "output_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, '{}', '{\"score\": 1}', NULL, true, "
        "?, ?, ?, ?, NULL, NULL, now())",
        [call_id, run_id, tool, provider, ticker, as_of, cost, latency, cache_hit, error],
    )


# ---- running SQL --------------------------------------------------------------------------------


def test_select_returns_rows_types_and_counts_what_it_cut(priced):
    result = query.run_query(priced, "SELECT ticker, date, adj_close FROM prices ORDER BY 1, 2",
                             limit=10)
    assert result.columns == ["ticker", "date", "adj_close"]
    assert result.types == ("VARCHAR", "DATE", "DOUBLE")
    assert result.table.num_rows == 10 and result.truncated
    assert result.total_rows == 2 * SESSIONS
    assert result.rows()[0][:2] == ("AAPL", dt.date(2021, 1, 4))


def test_several_statements_return_the_last(priced):
    result = query.run_query(priced, "SELECT 1; SELECT count(*) AS n FROM prices;")
    assert result.rows() == [(2 * SESSIONS,)]


def test_a_write_is_refused_with_the_write_hint(priced):
    with pytest.raises(UserInputError) as info:
        query.run_query(priced, "DELETE FROM prices")
    message = str(info.value)
    assert "DELETE changes the database" in message and "--write" in message
    assert "\n" not in message
    assert query.run_query(priced, "SELECT count(*) FROM prices").rows() == [(2 * SESSIONS,)]


def test_write_runs_in_one_transaction(priced):
    query.run_query(priced, "DELETE FROM prices WHERE ticker = 'KO'", write=True)
    assert query.run_query(priced, "SELECT count(*) FROM prices").rows() == [(SESSIONS,)]
    with pytest.raises(UserInputError):
        query.run_query(priced, "DELETE FROM prices; SELECT nosuch FROM prices", write=True)
    assert query.run_query(priced, "SELECT count(*) FROM prices").rows() == [(SESSIONS,)]


@pytest.mark.parametrize(
    ("sql", "where", "words"),
    [
        ("SELECT nosuch FROM prices", "line 1, column 8 (near 'nosuch')", "Binder Error"),
        ("SELECT 1;\n\nSELECT ticker\n  FROM pricez", "line 4, column 8 (near 'pricez')",
         "does not exist"),
        ("SELEC 1", "line 1, column 1", "syntax error"),
        ("SELECT 'é€' AS x,\n  nosuch", "line 2, column 3 (near 'nosuch')", "nosuch"),
    ],
)
def test_sql_errors_are_one_line_with_position(priced, sql, where, words):
    with pytest.raises(UserInputError) as info:
        query.run_query(priced, sql)
    message = str(info.value)
    assert "\n" not in message
    assert f"at {where}" in message, message
    assert words.lower() in message.lower()


def test_unknown_table_points_at_the_schema(priced):
    with pytest.raises(UserInputError, match=r"v_runs.*--schema"):
        query.run_query(priced, "SELECT * FROM v_run")


def test_missing_database_is_an_error_not_an_empty_file(tmp_path):
    store = Store(tmp_path / "typo.duckdb")
    with pytest.raises(UserInputError, match="no database at .*typo.duckdb"):
        query.run_query(store, "SELECT 1")
    assert not store.path.exists()
    result = query.run_query(store, "SELECT count(*) FROM runs", write=True)
    assert result.rows() == [(0,)] and "created database" in result.notices[0]


def test_a_query_is_confined_unless_files_are_allowed(store, tmp_path):
    signals = tmp_path / "signals.csv"
    signals.write_text("ticker,score\nAAPL,0.5\n")
    sql = f"SELECT * FROM read_csv('{signals}')"
    with pytest.raises(UserInputError, match="confined to the database.*--allow-files") as info:
        query.run_query(store, sql)
    assert "\n" not in str(info.value)
    assert query.run_query(store, sql, allow_files=True).rows() == [("AAPL", 0.5)]


def test_the_sandbox_ends_with_the_query(store, tmp_path):
    """DuckDB settings belong to the open database, so the next unit of work must not inherit
    them once the query's connection is closed."""
    signals = tmp_path / "signals.csv"
    signals.write_text("ticker\nAAPL\n")
    query.run_query(store, "SELECT 1")
    with store.connect(read_only=True) as con:
        con.execute("SET threads = 1")
        assert con.execute(f"SELECT count(*) FROM read_csv('{signals}')").fetchone() == (1,)


@pytest.mark.parametrize("sql", ["", "   ", "-- just a comment"])
def test_empty_sql(store, sql):
    with pytest.raises(UserInputError, match="no SQL statement"):
        query.run_query(store, sql)


@pytest.mark.parametrize("view", VIEWS)
def test_views_work_on_an_empty_database(store, view):
    result = query.run_query(store, f"SELECT * FROM {view}")
    assert result.total_rows == 0 and len(result.columns) >= 6


# ---- output formats -----------------------------------------------------------------------------

_MIXED = """
SELECT 1 AS n, 2.5 AS x, 'NaN'::DOUBLE AS nan, DATE '2021-03-04' AS day,
       ['AAPL', 'KO'] AS tickers, '{"a": [1, 2]}'::JSON AS payload, 'say "hi", ok' AS text,
       NULL::INTEGER AS missing, 1.25::DECIMAL(10, 2) AS price
"""


def test_csv_json_parquet_files(store, tmp_path):
    result = query.run_query(store, _MIXED)
    query.write_result(result, "csv", tmp_path / "r.csv")
    frame = pd.read_csv(tmp_path / "r.csv")
    assert list(frame.columns) == result.columns
    assert frame.loc[0, "text"] == 'say "hi", ok' and frame.loc[0, "day"] == "2021-03-04"
    query.write_result(result, "json", tmp_path / "r.json")
    rows = json.loads((tmp_path / "r.json").read_text())
    assert rows == [{"n": 1, "x": 2.5, "nan": None, "day": "2021-03-04", "tickers": ["AAPL", "KO"],
                     "payload": {"a": [1, 2]}, "text": 'say "hi", ok', "missing": None,
                     "price": 1.25}]
    query.write_result(result, "parquet", tmp_path / "r.parquet")
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.column_names == result.columns and table.num_rows == 1
    assert table.column("tickers").to_pylist() == [["AAPL", "KO"]]
    assert not list(tmp_path.glob(".*partial"))


def test_text_formats_to_a_stream_and_parquet_needs_a_file(store, capsys):
    result = query.run_query(store, "SELECT 1 AS a UNION ALL SELECT 2 ORDER BY a")
    query.write_result(result, "csv")
    assert capsys.readouterr().out == "a\n1\n2\n"
    with pytest.raises(UserInputError, match="--output FILE.parquet"):
        query.write_result(result, "parquet")


def test_output_into_a_missing_folder(store, tmp_path):
    result = query.run_query(store, "SELECT 1")
    with pytest.raises(UserInputError, match="does not exist"):
        query.write_result(result, "csv", tmp_path / "nope" / "r.csv")


def test_check_output_refuses_what_a_result_must_not_replace(store, tmp_path):
    with pytest.raises(UserInputError, match="is the database itself"):
        query.check_output(store.path, store)
    with pytest.raises(UserInputError, match="write-ahead log of the database"):
        query.check_output(Path(f"{store.path}.wal"), store)  # it does not exist yet
    with pytest.raises(UserInputError, match="is a DuckDB database"):
        query.check_output(store.path)  # without the store the header still tells
    with pytest.raises(UserInputError, match=".duckdb names are kept"):
        query.check_output(tmp_path / "answer.duckdb")
    query.check_output(tmp_path / "answer.csv", store)
    result = query.run_query(store, "SELECT 1")
    with pytest.raises(UserInputError, match="is a DuckDB database"):
        query.write_result(result, "csv", store.path)
    assert query.run_query(store, "SELECT count(*) FROM runs").rows() == [(0,)]


def test_a_failed_write_keeps_the_file_that_was_there(store, tmp_path, monkeypatch):
    target = tmp_path / "r.csv"
    target.write_text("old\n")

    def full_disk(result, fmt, path):
        path.write_text("half a fi")
        raise UserInputError("cannot write csv to r.csv: no space left on device")

    monkeypatch.setattr(query, "_copy", full_disk)
    with pytest.raises(UserInputError, match="no space left"):
        query.write_result(query.run_query(store, "SELECT 1"), "csv", target)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.duckdb", "r.csv"]


@pytest.mark.parametrize(
    ("output", "fmt", "expected"),
    [(None, None, "table"), ("a.CSV", None, "csv"), ("a.parquet", None, "parquet"),
     ("a.json", None, "json"), ("a.txt", "csv", "csv"), (None, "json", "json")],
)
def test_format_for(output, fmt, expected):
    assert query.format_for(Path(output) if output else None, fmt) == expected


def test_format_for_unknown_suffix():
    with pytest.raises(UserInputError, match="--format"):
        query.format_for(Path("out.xlsx"), None)


# ---- schema -------------------------------------------------------------------------------------


def test_schema_describes_every_table_and_view():
    objects = {o.name: o for o in query.schema()}
    assert set(VIEWS) <= objects.keys()
    assert {"prices", "runs", "equity", "fills", "tool_calls", "decisions", "schema_version"} <= (
        objects.keys()
    )
    for obj in objects.values():
        assert obj.description, f"{obj.name} has no COMMENT ON"
        assert obj.columns
        undocumented = [c.name for c in obj.columns if not c.description]
        assert not undocumented, f"{obj.name}: {undocumented}"
    for view in VIEWS:
        assert objects[view].kind == "view"
    runs = {c.name: c for c in objects["v_runs"].columns}
    assert runs["sharpe"].type == "DOUBLE" and "Sharpe" in runs["sharpe"].description


def test_committed_schema_doc_is_up_to_date():
    assert DOCS.read_text(encoding="utf-8") == query.render_schema_markdown(), (
        "docs/schema.md is stale: run `python -m quantorch.query --write-docs docs/schema.md`"
    )


def test_schema_doc_entry_point(tmp_path, capsys):
    assert query._main(["--write-docs", str(tmp_path / "schema.md")]) == 0
    assert (tmp_path / "schema.md").read_text() == query.render_schema_markdown()
    assert f"Schema version {LATEST_VERSION}" in query.render_schema_markdown()


# ---- the views' rules ---------------------------------------------------------------------------


def test_v_runs_flattens_metrics_and_reads_the_profile(store):
    with store.transaction() as con:
        _insert_run(con, "a", config={"profile": "neutral", "costs": {"fee_bps": 2.0}},
                    metrics={"sharpe": 1.5, "total_return": 0.2, "cagr": None},
                    benchmark_metrics={"total_return": 0.05})
        _insert_run(con, "b", config={"profile": {"name": "active-technical"}})
        _insert_run(con, "c", config={"orchestrator": {"profile": "neutral"}})
        _insert_run(con, "d", config={"profile": "neutral"})
        _insert_decision(con, "d", 0, "AAPL", dt.date(2021, 3, 1), None,
                         profile="cautious-fundamental")
    rows = query.run_query(
        store, "SELECT run_id, profile, fee_bps, sharpe, cagr, excess_return FROM v_runs "
               "ORDER BY run_id",
    ).rows()
    assert rows[0] == ("a", "neutral", 2.0, 1.5, None, pytest.approx(0.15))
    assert [r[:2] for r in rows[1:]] == [
        ("b", "active-technical"),
        ("c", "none"),  # every config has orchestrator.profile: not a sign of a profile run
        ("d", "cautious-fundamental"),  # what the decisions say wins over the config
    ]


def test_v_equity_returns_and_drawdown_match_the_metrics_module(store, sp500_closes):
    equity = sp500_closes["AAPL"].loc["2020"] * 1000
    frame = pd.DataFrame({"run_id": "r", "date": equity.index.date, "equity": equity.to_numpy(),
                          "cash": 0.0, "gross_exposure": 1.0, "benchmark_equity": float("nan")})
    with store.transaction() as con:
        con.register("_e", frame)
        con.execute("INSERT INTO equity BY NAME SELECT * FROM _e")
    result = query.run_query(store, "SELECT * FROM v_equity ORDER BY date")
    view = pd.DataFrame(result.rows(), columns=result.columns)
    np.testing.assert_allclose(view["drawdown"], drawdown_series(equity).to_numpy(), atol=1e-12)
    np.testing.assert_allclose(view["daily_return"][1:], equity.pct_change()[1:], rtol=1e-12)
    assert view["session"].tolist() == list(range(1, len(equity) + 1))
    assert view["benchmark_drawdown"].isna().all()  # NaN stored for "no benchmark" reads as NULL


def test_v_decisions_forward_return_from_the_fill_close(priced, sp500_closes):
    aapl = sp500_closes["AAPL"].loc["2021":"2022"]
    dates = aapl.index
    with priced.transaction() as con:
        _insert_run(con, "r")
        _insert_decision(con, "r", 0, "AAPL", dates[10].date(), dates[11].date(), horizon=5,
                         weight=0.1)
        _insert_decision(con, "r", 1, "AAPL", dates[-3].date(), dates[-2].date(), horizon=5)
        _insert_decision(con, "r", 2, "AAPL", dates[-1].date(), None, horizon=5)
        con.execute("INSERT INTO equity (run_id, date, equity, cash, gross_exposure) "
                    "VALUES ('r', ?, 2e6, 1e6, 0.5)", [dates[10].date()])
    rows = query.run_query(
        priced, "SELECT decision_id, exit_date, forward_return, contribution, pnl_usd "
                "FROM v_decisions ORDER BY decision_id",
    ).rows()
    expected = aapl.iloc[16] / aapl.iloc[11] - 1
    assert rows[0][1] == dates[16].date()
    assert rows[0][2] == pytest.approx(expected, rel=1e-12)
    assert rows[0][3] == pytest.approx(0.1 * expected, rel=1e-12)
    assert rows[0][4] == pytest.approx(0.1 * expected * 2e6, rel=1e-12)
    assert rows[1][1:] == (None, None, None, None)  # horizon not over yet
    assert rows[2][1:] == (None, None, None, None)  # never filled


def test_v_decisions_without_a_stored_run_has_no_forward_return(priced):
    with priced.transaction() as con:
        _insert_decision(con, "orphan", 0, "AAPL", dt.date(2021, 2, 1), dt.date(2021, 2, 2))
    assert query.run_query(priced, "SELECT source, forward_return FROM v_decisions").rows() == [
        (None, None)
    ]


def test_v_pnl_attribution_splits_equally_between_distinct_tools(priced, sp500_closes):
    dates = sp500_closes.loc["2021"].index
    with priced.transaction() as con:
        _insert_run(con, "r")
        _insert_decision(con, "r", 0, "AAPL", dates[0].date(), dates[1].date(), weight=0.1,
                         tools=("technical:talib", "risk:realized", "technical:other"), cost=0.004)
        _insert_decision(con, "r", 1, "KO", dates[0].date(), dates[1].date(), weight=0.05)
    contributions = dict(query.run_query(
        priced, "SELECT ticker, contribution FROM v_decisions").rows())
    rows = query.run_query(
        priced, "SELECT tool_set, tool, n_tools, decisions, contribution, tool_cost_usd "
                "FROM v_pnl_attribution ORDER BY tool",
    ).rows()
    half = contributions["AAPL"] / 2
    assert rows == [
        ("none", "none", 1, 1, pytest.approx(contributions["KO"]), 0.0),
        ("risk+technical", "risk", 2, 1, pytest.approx(half), pytest.approx(0.002)),
        ("risk+technical", "technical", 2, 1, pytest.approx(half), pytest.approx(0.002)),
    ]
    total = query.run_query(priced, "SELECT sum(contribution) FROM v_pnl_attribution").rows()
    assert total[0][0] == pytest.approx(sum(contributions.values()))


def test_v_tool_usage_profile_rule_and_aggregates(store):
    as_of = dt.datetime(2021, 3, 5, 21, 0)
    with store.transaction() as con:
        _insert_run(con, "from-decisions", config={"profile": "ignored"})
        _insert_decision(con, "from-decisions", 0, "AAPL", as_of.date(), None,
                         profile="cautious-fundamental")
        _insert_run(con, "from-config", config={"profile": "neutral"})
        _insert_decision(con, "mixed", 0, "AAPL", as_of.date(), None, profile="neutral")
        _insert_decision(con, "mixed", 1, "KO", as_of.date(), None, profile="active-technical")
        _insert_run(con, "plain")
        for n, run in enumerate(["from-decisions", "from-config", "mixed", "plain", None]):
            _insert_call(con, f"c{n}", run, "technical", "AAPL", as_of, latency=10.0)
        _insert_call(con, "e1", "plain", "technical", "AAPL", as_of, latency=30.0, cache_hit=True,
                     cost=0.0, error="timeout")
        _insert_call(con, "e2", "plain", "technical", "AAPL", as_of.replace(month=4), latency=5.0)
    rows = query.run_query(
        store, "SELECT run_id, profile, month, calls, cache_hits, errors, cost_usd, "
               "latency_p50_ms, latency_mean_ms FROM v_tool_usage ORDER BY run_id, month",
    ).rows()
    profiles = {r[0]: r[1] for r in rows}
    assert profiles == {"from-decisions": "cautious-fundamental", "from-config": "neutral",
                        "mixed": "mixed", "plain": "none", None: "none"}
    march = next(r for r in rows if r[0] == "plain" and r[2] == dt.date(2021, 3, 1))
    assert march[3:] == (2, 1, 1, pytest.approx(0.001), 20.0, 20.0)


# ---- export -------------------------------------------------------------------------------------


def test_export_unknown_run_suggests_the_closest(store, tmp_path):
    with store.transaction() as con:
        _insert_run(con, "ev-2021-neutral")
    with pytest.raises(UserInputError, match="did you mean ev-2021-neutral"):
        query.export(store, "decisions", "csv", tmp_path / "d.csv", run_id="ev-2021-neutrl")
    query.export(store, "decisions", "csv", tmp_path / "d.csv", run_id="ev-2021-neutral")
    assert (tmp_path / "d.csv").read_text().startswith("run_id,decision_id,")


def test_export_prices_refuses_a_run_id(store, tmp_path):
    with pytest.raises(UserInputError, match="drop --run-id"):
        query.export(store, "prices", "csv", tmp_path / "p.csv", run_id="x")


def test_read_only_connection_really_is_read_only(priced):
    """The guarantee the refusal rests on: DuckDB itself refuses, whatever the statement."""
    with priced.connect(read_only=True) as con, pytest.raises(duckdb.Error, match="read-only"):
        con.execute("CREATE TABLE x AS SELECT 1")
