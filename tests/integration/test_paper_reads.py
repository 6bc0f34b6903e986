"""Reads while paper trading runs: `quantorch query` and `quantorch paper status` from a real
second process, while a replay writes cycle after cycle and while the scheduler runs (its due
cycle catching up sessions, then idle). No connection is held between units of work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from quantorch.config import load_config

pytestmark = pytest.mark.slow


def cli(db, *args, timeout=120):
    env = {**os.environ, "QUANTORCH_DB": str(db), "QUANTORCH_LOCK_TIMEOUT": "30"}
    return subprocess.run([sys.executable, "-m", "quantorch", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def spawn(db, *args):
    env = {**os.environ, "QUANTORCH_DB": str(db), "QUANTORCH_LOCK_TIMEOUT": "30"}
    return subprocess.Popen([sys.executable, "-m", "quantorch", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_cycles(db) -> int:
    done = cli(db, "query", "SELECT count(*) AS n FROM cycles WHERE status = 'done'",
               "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)[0]["n"]


def read_status(db) -> dict:
    done = cli(db, "paper", "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["account"]


def test_query_and_status_answer_while_a_replay_writes(loaded_db):
    assert cli(loaded_db, "paper", "replay", "--start", "2021-01-04",
               "--end", "2021-01-08").returncode == 0
    writer = spawn(loaded_db, "paper", "replay", "--start", "2021-01-04", "--end", "2021-12-31")
    seen, statuses = [], []
    try:
        while writer.poll() is None and len(seen) < 4:
            seen.append(read_cycles(loaded_db))
            statuses.append(read_status(loaded_db))
    finally:
        out, err = writer.communicate(timeout=600)
    assert writer.returncode == 0, err
    assert len(seen) >= 3, "the replay finished before the readers could read"
    assert seen == sorted(seen) and seen[-1] > seen[0]  # they saw it grow, never half a cycle
    for status in statuses:
        assert status["equity"] > 0 and {"cash", "positions"} <= status.keys()
    assert read_cycles(loaded_db) == 252


def test_status_and_query_answer_while_the_scheduler_runs(loaded_db):
    # an account whose last cycle is a week before the sample ends: the scheduler's due cycle
    # catches up the sessions to 2022-12-28, then fails (no prices after it) and waits. The
    # due cycle is the last real session's: a week of misfire grace makes it due whatever the
    # time of day the test runs (with the default 6 hours it was due only until 03:30 UTC)
    config = loaded_db.parent / "grace.yaml"
    config.write_text(yaml.safe_dump({"universe": load_config().universe,
                                      "paper": {"misfire_grace_minutes": 7 * 24 * 60}}))
    assert cli(loaded_db, "paper", "replay", "--start", "2022-11-01",
               "--end", "2022-12-16").returncode == 0
    started = cli(loaded_db, "paper", "start", "--detach", "--json", "--config", str(config))
    assert started.returncode == 0, started.stderr
    pid = json.loads(started.stdout)["pid"]
    try:
        second = cli(loaded_db, "paper", "start")
        assert second.returncode == 2 and f"PID {pid}" in second.stderr
        deadline = time.monotonic() + 180
        while True:
            status = read_status(loaded_db)
            assert status["scheduler"] == {"running": True, "pid": pid}
            if status["last_cycle"]["session"] == "2022-12-29" or time.monotonic() > deadline:
                break
        assert status["last_cycle"]["status"] == "failed", status["last_cycle"]
        assert "no sample prices for 2022-12-29" in status["last_cycle"]["message"]
        assert status["as_of"] == "2022-12-28"  # the missed sessions were settled and marked
        assert read_cycles(loaded_db) > 0
        history = json.loads(cli(loaded_db, "paper", "history", "--json").stdout)["cycles"]
        assert [c["status"] for c in history[-9:]] == ["done"] + ["missed"] * 7 + ["failed"]
    finally:
        stopped = cli(loaded_db, "paper", "stop", "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["stopped"] is True
    assert read_status(loaded_db)["scheduler"] == {"running": False, "pid": None}
