"""Crash-consistent runs and reports: killed at any moment, a backtest leaves a whole run or none,
and never a report without its run; SIGTERM is handled like Ctrl-C; a report is regenerated
from the store alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from quantorch.cli.main import app

runner = CliRunner()
ARGS = ("backtest", "--start", "2022-01", "--end", "2022-06", "--universe", "AAPL,MSFT,KO",
        "--strategy", "sma-cross", "--rebalance", "weekly")  # fmt: skip


def _command(db: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "quantorch.cli.main", *args, "--db", str(db)]


def _runs(db: Path) -> set[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
    finally:
        con.close()


def _reports(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("bt-*.html")} if folder.exists() else set()


def _whole(db: Path, run_id: str) -> bool:
    con = duckdb.connect(str(db), read_only=True)
    try:
        equity = con.execute("SELECT count(*) FROM equity WHERE run_id = ?", [run_id]).fetchone()[0]
        fills = con.execute("SELECT count(*) FROM fills WHERE run_id = ?", [run_id]).fetchone()[0]
    finally:
        con.close()
    return equity > 100 and fills > 0


@pytest.mark.slow
def test_kill_at_any_moment_leaves_no_report_without_a_run(loaded_db, tmp_path):
    env = {**os.environ, "QUANTORCH_LOCK_TIMEOUT": "30"}
    started = time.monotonic()
    subprocess.run(_command(loaded_db, *ARGS, "--json"), cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    full = time.monotonic() - started  # one whole run, to spread the kills over its lifetime
    folder = tmp_path / "backtests"
    killed = 0
    for fraction in (0.15, 0.35, 0.55, 0.7, 0.8, 0.88, 0.94, 0.98):
        began = time.monotonic()
        process = subprocess.Popen(_command(loaded_db, *ARGS), cwd=tmp_path, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = began + full * fraction
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        else:  # it ran faster than the first run (a machine less loaded): aim by this one
            full = min(full, time.monotonic() - began)
        process.wait()
        runs, reports = _runs(loaded_db), _reports(folder)
        assert reports <= runs, f"reports without a run: {sorted(reports - runs)}"
        assert all(_whole(loaded_db, run_id) for run_id in runs)
    assert killed >= 4
    # the next run removes what a killed writer left half-written, and lists every run
    subprocess.run(_command(loaded_db, *ARGS, "--json"), cwd=tmp_path, env=env, check=True,
                   capture_output=True)
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.slow
def test_sigterm_is_one_line_and_exit_143(loaded_db, tmp_path):
    process = subprocess.Popen(_command(loaded_db, *ARGS), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)  # inside the run (imports and data loading take longer)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the run finished before the signal (a very fast machine)")
    assert process.returncode == 143, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "terminated" in lines[0], stderr
    assert _reports(tmp_path / "backtests") <= _runs(loaded_db)


def test_report_is_regenerated_from_the_store(loaded_db, tmp_path):
    result = runner.invoke(app, [*ARGS[:1], "--db", str(loaded_db), *ARGS[1:], "--json"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    path = Path(payload["report_path"])
    original = path.read_text(encoding="utf-8")
    path.unlink()
    again = runner.invoke(app, ["report", payload["run_id"], "--db", str(loaded_db)])
    assert again.exit_code == 0, again.stderr
    text = path.read_text(encoding="utf-8")
    # the same figures: every table cell of the performance section is reproduced
    for fragment in ("Sharpe", "S&amp;P 500 price index", "Equal-weight buy-and-hold"):
        assert fragment in text and fragment in original
    elsewhere = tmp_path / "elsewhere.html"
    assert runner.invoke(app, ["report", payload["run_id"], "--db", str(loaded_db),
                               "--output", str(elsewhere)]).exit_code == 0
    assert elsewhere.exists()
    refused = runner.invoke(app, ["report", payload["run_id"], "--db", str(loaded_db),
                                  "--output", str(loaded_db)])
    assert refused.exit_code == 2 and "html" in refused.stderr
    unknown = runner.invoke(app, ["report", "bt-nope", "--db", str(loaded_db)])
    assert unknown.exit_code == 2 and "no run 'bt-nope'" in unknown.stderr
