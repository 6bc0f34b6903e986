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
    "INSERT INTO tool_calls (call_id, run_id, tool, provider, ticker, as_of, arguments, outputs, "
    "summary, coverage, cost_usd, latency_ms, cache_hit, error, input_tokens, output_tokens, "
    "created_at) VALUES (?, 'writer', 'technical', 'talib', 'AAPL', now(), '{}', "
    "'{\"score\": 0.1}', NULL, true, 0.0, 1.0, false, NULL, NULL, NULL, now())"
)


def _start(script: str, *args: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
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


def _tell(process: subprocess.Popen, line: str) -> None:
    process.stdin.write(line + "\n")
    process.stdin.flush()


def test_queries_succeed_while_another_process_writes_in_short_units(db):
    """Every query answers, with a committed state, while a real process writes unit after unit.

    Nothing depends on the machine's speed (a loaded 2-core box only makes it slower): the
    writer starts once a first query has answered (imports done), and writes until this test
    has seen its writes land in several queries *and* it has written ``units`` units; the
    timeouts only stop a hang.
    """
    units = 20
    writer = _start(
        f"""
        import sys, threading, time
        from quantorch.store import Store
        store = Store(sys.argv[1], lock_timeout=120)
        store.migrate()
        print("ready", flush=True)
        sys.stdin.readline()  # go: the reader is warm
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
        n = 0
        while n < int(sys.argv[2]) or not stop.is_set():
            with store.transaction() as con:  # one unit of work: open, insert, commit, close
                con.execute({_INSERT!r}, [f"w{{n}}"])
                time.sleep(0.02)
            n += 1
            time.sleep(0.03)  # between units of work the file is free
        print(n, flush=True)
        """,
        str(db), str(units),
    )

    def count() -> int:
        result = runner.invoke(
            app, ["query", "SELECT count(*) AS n FROM tool_calls", "--format", "csv",
                  "--db", str(db)],
            env={"QUANTORCH_LOCK_TIMEOUT": "120"}, catch_exceptions=False,
        )
        return _count(result)  # exit 0: every query gets an answer

    give_up = time.monotonic() + 300  # a hang, not a slow machine
    try:
        seen = [count()]
        _tell(writer, "go")
        while len({n for n in seen if n > 0}) < 3:  # three states written while it still writes
            assert writer.poll() is None, writer.stderr.read()
            assert time.monotonic() < give_up, seen
            seen.append(count())
        _tell(writer, "stop")
        while writer.poll() is None:  # and queries go on until the last unit of work
            seen.append(count())
        out, errors = writer.communicate(timeout=120)
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == 0, errors
    written = int(out.strip())
    assert seen[0] == 0 and written >= units, (seen, written)
    assert seen == sorted(seen)  # every query saw a committed state, never a partial one
    assert len({n for n in seen if 0 < n < written}) >= 2, (seen, written)  # mid-writing
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
