import os
import subprocess
import sys
import textwrap

import duckdb
import pytest

from quantorch.errors import DatabaseLockedError
from quantorch.store import Store
from quantorch.store._schema import LATEST_VERSION


def test_new_file_gets_latest_schema(tmp_path):
    store = Store(tmp_path / "a" / "q.duckdb")
    assert store.schema_version() == 0
    assert store.migrate() == LATEST_VERSION
    with store.connect(read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        comment = con.execute(
            "SELECT comment FROM duckdb_tables() WHERE table_name = 'prices'"
        ).fetchone()[0]
    assert {"prices", "price_coverage", "runs", "equity", "fills", "schema_version", "orders",
            "broker_fills", "positions", "cash_ledger", "cycles"} <= tables
    assert comment and "Daily bars" in comment
    assert store.schema_version() == LATEST_VERSION


def test_migrating_twice_is_a_no_op(tmp_path):
    store = Store(tmp_path / "q.duckdb")
    store.migrate()
    Store(store.path).migrate()
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == LATEST_VERSION


def test_transaction_rolls_back_on_error(tmp_path):
    store = Store(tmp_path / "q.duckdb")
    with pytest.raises(RuntimeError):
        with store.transaction() as con:
            con.execute(
                "INSERT INTO price_coverage (ticker, source, first_date, last_date, fetched_at) "
                "VALUES ('AAPL', 'sample', DATE '2020-01-01', DATE '2020-02-01', now())"
            )
            raise RuntimeError("crash mid-write")
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM price_coverage").fetchone()[0] == 0


def test_file_from_a_newer_quantorch_is_refused(tmp_path):
    store = Store(tmp_path / "q.duckdb")
    store.migrate()
    con = duckdb.connect(str(store.path))
    con.execute(
        "INSERT INTO schema_version (version, description, applied_at) "
        "VALUES (999, 'future', now())"
    )
    con.close()
    with pytest.raises(Exception, match="newer than this quantorch"):
        Store(store.path).migrate()


def test_locked_file_names_the_holder(tmp_path):
    path = tmp_path / "q.duckdb"
    Store(path).migrate()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import duckdb, sys, time
                con = duckdb.connect({str(path)!r})
                print("locked", flush=True)
                time.sleep(30)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DatabaseLockedError) as exc:
            with Store(path, lock_timeout=0.5).connect(read_only=True):
                pass
        assert f"process {holder.pid}" in str(exc.value) and "--db" in str(exc.value)
    finally:
        holder.kill()
        holder.wait()
    # once the holder is gone the file opens and is intact
    with Store(path).connect(read_only=True) as con:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == LATEST_VERSION
    assert os.path.exists(path)


def test_writer_waits_for_a_short_lock(tmp_path):
    path = tmp_path / "q.duckdb"
    Store(path).migrate()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb,time; c=duckdb.connect({str(path)!r}); print('x', flush=True); time.sleep(1.0)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        holder.stdout.readline()
        with Store(path, lock_timeout=20).transaction() as con:
            con.execute(
                "INSERT INTO price_coverage (ticker, source, first_date, last_date, fetched_at) "
                "VALUES ('AAPL', 'sample', DATE '2020-01-01', DATE '2020-02-01', now())"
            )
    finally:
        holder.wait()
    with Store(path).connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM price_coverage").fetchone()[0] == 1
