"""`quantorch query` while another real process writes the same file (BRIEF section 7).

DuckDB lets one process write *or* many read. Writers hold the file for one unit of work; a
query opens read-only and retries a locked file with backoff; past the lock timeout it names
the process holding the lock and exits 3.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import typer
from typer.testing import CliRunner

from quantorch.cli.query_cmd import register
from quantorch.store import Store

runner = CliRunner()
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
register(app)

#: A real command-line process: the app main.py builds, reduced to what this module registers.
CLI = ("import typer; from quantorch.cli.query_cmd import register; "
       "app = typer.Typer(pretty_exceptions_enable=False); register(app); app()")

_INSERT = (
    "INSERT INTO tool_calls VALUES (?, 'writer', 'technical', 'talib', 'AAPL', now(), '{}', "
    "'{\"score\": 0.1}', NULL, true, 0.0, 1.0, false, NULL, NULL, NULL, now())"
)


def _start(script: str, *args: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    if line != "ready":
        process.kill()
        raise AssertionError(f"writer did not start: {line!r} {process.stderr.read()}")
    return process


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "q.duckdb"
    Store(path).migrate()
    return path


def _count(result) -> int:
    assert result.exit_code == 0, result.stderr
    return int(result.stdout.splitlines()[-1])


def test_queries_succeed_while_another_process_writes_in_short_units(db):
    writer = _start(
        f"""
        import sys, time
        from quantorch.store import Store
        store = Store(sys.argv[1], lock_timeout=30)
        store.migrate()
        print("ready", flush=True)
        deadline, n = time.monotonic() + float(sys.argv[2]), 0
        while time.monotonic() < deadline:
            with store.transaction() as con:  # one unit of work: open, insert, commit, close
                con.execute({_INSERT!r}, [f"w{{n}}"])
                time.sleep(0.02)
            n += 1
            time.sleep(0.03)  # between units of work the file is free
        print(n, flush=True)
        """,
        str(db), "4",
    )
    seen = []
    try:
        while writer.poll() is None:
            result = runner.invoke(
                app, ["query", "SELECT count(*) AS n FROM tool_calls", "--format", "csv",
                      "--db", str(db)],
                env={"QUANTORCH_LOCK_TIMEOUT": "20"}, catch_exceptions=False,
            )
            seen.append(_count(result))
        out, errors = writer.communicate(timeout=60)
    finally:
        writer.kill()
    assert writer.returncode == 0, errors
    written = int(out.strip())
    assert len(seen) >= 3 and written >= 10, (seen, written)
    assert seen == sorted(seen)  # every query saw a committed state, never a partial one
    assert any(0 < n < written for n in seen), (seen, written)  # some ran mid-writing
    final = runner.invoke(app, ["query", "SELECT count(*) AS n FROM tool_calls", "--format",
                                "csv", "--db", str(db)])
    assert _count(final) == written  # nothing lost, nothing corrupted


def test_a_query_waits_for_a_long_unit_of_work_then_succeeds(db):
    writer = _start(
        f"""
        import sys, time
        from quantorch.store import Store
        with Store(sys.argv[1]).transaction() as con:
            con.execute({_INSERT!r}, ["slow"])
            print("ready", flush=True)
            time.sleep(1.5)  # a slow unit of work, e.g. storing a long backtest
        """,
        str(db),
    )
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", CLI, "query", "SELECT count(*) AS n FROM tool_calls",
             "--format", "csv", "--db", str(db)],
            capture_output=True, text=True, timeout=120, check=False,
            env={**_env(), "QUANTORCH_LOCK_TIMEOUT": "30"},
        )
        waited = time.monotonic() - started
        writer.wait(timeout=30)
    finally:
        writer.kill()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "n\n1\n"  # retried until the unit of work committed, then read it
    assert waited > 0.5


def test_a_holder_that_never_releases_is_named(db):
    holder = _start(
        """
        import sys, time, duckdb
        con = duckdb.connect(sys.argv[1])  # a misbehaving writer: holds the file forever
        print("ready", flush=True)
        time.sleep(120)
        """,
        str(db),
    )
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", CLI, "query", "SELECT count(*) FROM runs", "--db", str(db)],
            capture_output=True, text=True, timeout=120, check=False,
            env={**_env(), "QUANTORCH_LOCK_TIMEOUT": "1"},
        )
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 3
    assert f"locked by process {holder.pid}" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert waited < 30


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "QUANTORCH_DB"}
