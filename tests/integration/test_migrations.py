"""Upgrading a database made by an older quantorch: data intact, views working."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest

import quantorch.store._store as store_module
from quantorch import query
from quantorch.backtest.runner import run_backtest
from quantorch.config import load_config
from quantorch.store import Store, repository
from quantorch.store._schema import LATEST_VERSION, MIGRATIONS, Migration

#: The tables each migration created (a test of every older version checks they arrive empty).
CREATED_BY = {
    1: ("prices", "price_coverage", "runs", "equity", "fills"),
    2: ("fundamentals", "news", "tool_calls", "tool_cache"),
    3: ("decisions",),
    6: ("orders", "broker_fills", "positions", "cash_ledger", "cycles"),
    8: ("paper_accounts",),
    9: ("llm_transcripts",),
}
TABLES = tuple(t for tables in CREATED_BY.values() for t in tables)


def _older_quantorch(monkeypatch, version: int) -> None:
    """Make Store behave like the release whose newest migration was ``version``."""
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:version])
    monkeypatch.setattr(store_module, "LATEST_VERSION", version)


def _counts(path) -> dict[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        existing = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in TABLES if t in existing}
    finally:
        con.close()


@pytest.fixture(scope="module")
def current_database(tmp_path_factory) -> tuple[Path, str]:
    """A database of the current schema with a real backtest, one tool call and one decision."""
    folder = tmp_path_factory.mktemp("current")
    path = folder / "current.duckdb"
    config = load_config().with_overrides({
        "universe": ["AAPL", "MSFT"], "backtest.start": dt.date(2022, 1, 1),
        "backtest.strategy": "buy-and-hold", "backtest.rebalance": "monthly",
        "reports_dir": str(folder / "reports"),
    })
    outcome = run_backtest(config, Store(path))
    con = duckdb.connect(str(path))
    try:
        con.execute(
            "INSERT INTO tool_calls (call_id, run_id, tool, provider, ticker, as_of, arguments, "
            "outputs, summary, coverage, cost_usd, latency_ms, cache_hit, error, input_tokens, "
            "output_tokens, created_at) VALUES ('c1', ?, 'technical', 'talib', 'AAPL', "
            "TIMESTAMP '2022-03-01 21:00', '{}', '{\"momentum_21d\": 0.02}', NULL, true, 0.0, "
            "3.0, false, NULL, NULL, NULL, now())",
            [outcome.run_id],
        )
        con.execute(
            "INSERT INTO decisions (run_id, decision_id, orchestrator, profile, ticker, "
            "decision_date, fill_date, horizon, tools_called, n_calls, tool_cost_usd, "
            "proposed_position, target_weight, guard_note, rationale, reward) VALUES (?, 0, "
            "'policy', 'neutral', 'AAPL', DATE '2022-03-01', DATE '2022-03-02', 5, "
            "['technical:talib'], 1, 0.0, 0.4, 0.04, NULL, NULL, NULL)",
            [outcome.run_id],
        )
    finally:
        con.close()
    _paper_account_rows(Store(path))
    return path, outcome.run_id


def _paper_account_rows(store: Store) -> None:
    """One paper cycle's rows (schema 6), so an upgrade from 6 shows them intact too."""
    decided, filled = dt.date(2022, 3, 1), dt.date(2022, 3, 2)
    order_id = "paper-20220301-AAPL-0"
    with store.transaction() as con:
        repository.upsert_cycle(con, "paper", "neutral", decided, "started", run_id="pc-1",
                                broker="sim")
        repository.insert_cash_entries(con, "paper", [{
            "session": decided, "kind": "deposit", "amount": 100_000.0,
            "entry_key": "deposit:initial",
        }])
        repository.insert_order_intents(con, "paper", [{
            "client_order_id": order_id, "ticker": "AAPL", "side": "buy", "quantity": 50.0,
            "decision_session": decided, "target_weight": 0.08, "reference_price": 163.2,
        }], broker="sim", run_id="pc-1")
        repository.insert_broker_fills(con, "paper", [{
            "fill_id": f"{order_id}-1", "client_order_id": order_id, "ticker": "AAPL",
            "side": "buy", "quantity": 50.0, "fill_price": 164.4, "fees": 0.82,
            "decision_session": decided, "fill_session": filled,
        }], run_id="pc-1")
        repository.update_order(con, order_id, status="filled")
        repository.upsert_positions(con, "paper", filled, [
            {"ticker": "AAPL", "quantity": 50.0, "market_price": 166.6}
        ])
        repository.upsert_cycle(con, "paper", "neutral", decided, "done")


def _fill_old_database(path: Path, current: Path) -> None:
    """What the older release stored: every row of ``current``, in the columns its schema had."""
    con = duckdb.connect(str(path))
    try:
        con.execute(f"ATTACH '{current}' AS now (READ_ONLY)")
        tables = [r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND table_name <> 'schema_version'"
        ).fetchall()]
        for table in tables:
            def columns(database: str) -> list[str]:
                return [r[0] for r in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE database_name = ? "
                    "AND table_name = ? ORDER BY column_index", [database, table]
                ).fetchall()]
            old = columns(con.execute("SELECT current_database()").fetchone()[0])
            shared = [c for c in old if c in set(columns("now"))]
            names = ", ".join(shared)
            con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM now.{table}")
    finally:
        con.close()


@pytest.mark.parametrize("version", range(1, LATEST_VERSION))
def test_older_database_upgrades_with_data_intact(tmp_path, monkeypatch, version,
                                                 current_database):
    path = tmp_path / "old.duckdb"
    current, run_id = current_database
    with monkeypatch.context() as patched:
        _older_quantorch(patched, version)
        Store(path).migrate()
        _fill_old_database(path, current)
        assert Store(path).schema_version() == version
    before = _counts(path)
    stored = _counts(current)
    assert before["runs"] == 1 and before["equity"] > 0 and before["fills"] > 0
    assert {t: stored[t] for t in before} == before  # every row the old schema can hold

    # A read-only query upgrades the file first (one short write), then reads the views.
    result = query.run_query(Store(path), "SELECT run_id, sharpe, metrics FROM v_runs")
    assert result.notices == (
        f"upgraded {path} from schema version {version} to {LATEST_VERSION}",
    )
    [(stored_run, sharpe, metrics)] = result.rows()
    assert stored_run == run_id and sharpe == pytest.approx(json.loads(metrics)["sharpe"])
    assert Store(path).schema_version() == LATEST_VERSION

    after = _counts(path)
    assert {t: after[t] for t in before} == before
    added = [t for v, tables in CREATED_BY.items() if v > version for t in tables]
    assert set(after) == set(TABLES) and {t: after[t] for t in added} == dict.fromkeys(added, 0)
    described = {o.name: o for o in query.schema(Store(path))}
    for table in added:
        assert described[table].description, f"{table} has no COMMENT ON TABLE"
        assert all(c.description for c in described[table].columns), table
    versions = query.run_query(Store(path), "SELECT version FROM schema_version ORDER BY 1")
    assert [r[0] for r in versions.rows()] == list(range(1, LATEST_VERSION + 1))
    equity = query.run_query(Store(path), "SELECT count(*), min(drawdown) FROM v_equity").rows()
    assert equity[0][0] == before["equity"] and equity[0][1] < 0
    if version >= 3:
        decided = query.run_query(Store(path), "SELECT forward_return, tool_set FROM v_decisions")
        [(forward_return, tool_set)] = decided.rows()
        assert forward_return is not None and tool_set == "technical"
        usage = query.run_query(Store(path), "SELECT profile, calls FROM v_tool_usage").rows()
        assert usage == [("neutral", 1)]
    # a second look is a plain read: no upgrade, no notice
    assert query.run_query(Store(path), "SELECT 1").notices == ()


def test_writer_upgrades_too(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    with monkeypatch.context() as patched:
        _older_quantorch(patched, 1)
        Store(path).migrate()
    with Store(path).connect() as con:  # any writer migrates on its first unit of work
        assert con.execute("SELECT count(*) FROM v_pnl_attribution").fetchone()[0] == 0
    assert Store(path).schema_version() == LATEST_VERSION


def test_failed_upgrade_leaves_the_old_schema_whole(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    with monkeypatch.context() as patched:
        _older_quantorch(patched, 3)
        Store(path).migrate()
    statements = (*MIGRATIONS[3].statements[:5], "CREATE VIEW oops AS SELECT nosuch")
    broken = Migration(4, "research views", statements)
    monkeypatch.setattr(store_module, "MIGRATIONS", (*MIGRATIONS[:3], broken))
    with pytest.raises(duckdb.Error):
        Store(path).migrate()
    con = duckdb.connect(str(path), read_only=True)
    try:
        views = con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchone()[0]
    finally:
        con.close()
    assert views == 0 and Store(path).schema_version() == 3


def test_migration_4_changes_no_data():
    """Views and descriptions only: no table is created, altered or written by migration 4."""
    assert MIGRATIONS[3].version == 4
    assert all(s.startswith(("CREATE VIEW", "COMMENT ON VIEW", "COMMENT ON COLUMN"))
               for s in MIGRATIONS[3].statements)


def test_a_failed_migration_6_leaves_schema_5_whole(tmp_path, monkeypatch, current_database):
    """DuckDB rolls back CREATE TABLE too: a migration that fails half-way adds nothing."""
    path = tmp_path / "old.duckdb"
    current, _ = current_database
    with monkeypatch.context() as patched:
        _older_quantorch(patched, 5)
        Store(path).migrate()
        _fill_old_database(path, current)
    before = _counts(path)
    six = MIGRATIONS[5]
    assert six.version == 6
    broken = Migration(6, six.description, (*six.statements[:-3], "CREATE VIEW oops AS SELECT x"))
    monkeypatch.setattr(store_module, "MIGRATIONS", (*MIGRATIONS[:5], broken))
    with pytest.raises(duckdb.Error):
        Store(path).migrate()
    assert _counts(path) == before and Store(path).schema_version() == 5
    assert not set(_counts(path)) & set(CREATED_BY[6])

    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)  # the real one, run again
    assert Store(path).migrate() == LATEST_VERSION
    after = _counts(path)
    assert {t: after[t] for t in before} == before
    assert {t: after[t] for t in CREATED_BY[6]} == dict.fromkeys(CREATED_BY[6], 0)
    with Store(path).connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM v_account_cash").fetchall() == [(0,)]


def test_migration_6_only_adds():
    """New tables, a view and descriptions: no existing table is altered or written."""
    assert MIGRATIONS[5].version == 6
    assert all(s.lstrip().startswith(("CREATE TABLE", "CREATE VIEW", "COMMENT ON"))
               for s in MIGRATIONS[5].statements)
