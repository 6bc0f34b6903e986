"""The kill test: `quantorch paper replay` as a real subprocess, SIGKILLed at 100 random points
spread over every phase of a cycle and restarted each time, ends exactly where an
uninterrupted replay ends; no client order id twice; the ledger reconciles after every restart.

Kill points: most at a named step of a cycle (``QUANTORCH_PAPER_CRASH=<step>@N``: right after
the N-th commit of that step, or right after the broker took the orders and before their
acknowledgements were stored), the others at a random moment (a kill mid-transaction, mid-tool
call, mid-import). Figures (kills, phases hit, differences) are printed.
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from quantorch.config import load_config
from quantorch.paper.cycle import CRASH_ENV, PaperTrader
from quantorch.paper.reconcile import reconcile
from quantorch.store import Store

pytestmark = pytest.mark.slow

START, END = "2021-01-04", "2021-12-31"  # 252 sessions, 52 decisions
#: 60 kills hit every step several times (70% aimed at a step, 30% at a random moment) and keep
#: the suite near its time budget; QUANTORCH_PAPER_KILLS=100 or more for a longer soak
KILLS = int(os.environ.get("QUANTORCH_PAPER_KILLS", "60"))
PHASES = ("data_ready", "fills_recorded", "reconciled", "decided", "sent", "orders_submitted",
          "done")
ACCOUNT = "paper"

#: What must end equal, with the columns that identify a row (timestamps left out).
TABLES = {
    "orders": ("SELECT client_order_id, ticker, side, quantity, target_weight, reference_price, "
               "decision_session, status, broker_order_id, filled_quantity, reason FROM orders "
               "ORDER BY client_order_id"),
    "fills": ("SELECT broker_fill_id, client_order_id, ticker, side, quantity, fill_price, "
              "notional, fees, slippage_cost, decision_session, fill_session FROM broker_fills "
              "ORDER BY broker_fill_id"),
    "positions": ("SELECT session, ticker, quantity, market_price, market_value FROM positions "
                  "ORDER BY session, ticker"),
    "cash": ("SELECT session, kind, amount, client_order_id, broker_fill_id, entry_key FROM "
             "cash_ledger ORDER BY session, coalesce(broker_fill_id, entry_key), kind"),
    "equity": "SELECT date, equity, cash, gross_exposure FROM equity ORDER BY date",
    "cycles": "SELECT session, status FROM cycles ORDER BY session",
}


def replay(db: Path, *, crash: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "QUANTORCH_DB": str(db), "QUANTORCH_LOCK_TIMEOUT": "30"}
    env.pop(CRASH_ENV, None)
    if crash:
        env[CRASH_ENV] = crash
    return subprocess.Popen(
        [sys.executable, "-m", "quantorch", "paper", "replay", "--start", START, "--end", END,
         "--account", ACCOUNT, "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def snapshot(db: Path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {name: con.execute(sql).df() for name, sql in TABLES.items()}
    finally:
        con.close()


def check_ledger(db: Path) -> list[tuple[str, str]]:
    """Broker against ledger, positions and cash against the ledger, orders against fills."""
    if not db.exists():
        return []
    trader = PaperTrader(load_config().with_overrides({"paper.account": ACCOUNT}), Store(db))
    con = duckdb.connect(str(db), read_only=True)
    try:
        opened = con.execute("SELECT count(*) FROM information_schema.tables WHERE "
                             "table_name = 'paper_accounts'").fetchone()[0] and con.execute(
            "SELECT count(*) FROM paper_accounts").fetchone()[0]
        duplicated = con.execute(
            "SELECT count(*) - count(DISTINCT client_order_id) FROM orders").fetchone()[0] \
            if opened else 0
    finally:
        con.close()
    if not opened:
        return []
    found = reconcile(trader).differences
    return found + ([("orders", f"{duplicated} duplicated client order ids")]
                    if duplicated else [])


def test_killed_anywhere_a_replay_ends_exactly_as_an_uninterrupted_one(loaded_db, tmp_path,
                                                                        capsys):
    reference = tmp_path / "reference.duckdb"
    shutil.copy(loaded_db, reference)
    started = time.monotonic()
    done = replay(reference)
    out, errors = done.communicate(timeout=600)
    assert done.returncode == 0, errors
    uninterrupted_s = time.monotonic() - started
    expected = snapshot(reference)
    assert len(expected["cycles"]) == 252 and len(expected["fills"]) > 800

    rng = random.Random(20261201)
    plan = [("phase", rng.choice(PHASES), 1) for _ in range(KILLS * 7 // 10)]
    plan += [("time", None, None)] * (KILLS - len(plan))
    rng.shuffle(plan)
    killed = tmp_path / "killed.duckdb"
    shutil.copy(loaded_db, killed)
    hits: collections.Counter[str] = collections.Counter()
    kills = restarts = 0
    differences: list[str] = []
    startup = None
    began = time.monotonic()
    for kind, phase, nth in plan:
        t0 = time.monotonic()
        proc = replay(killed, crash=f"{phase}@{nth}" if kind == "phase" else None)
        if kind == "time":
            # at random within the process's first seconds: imports, loading, the first cycles
            delay = rng.uniform(0.3, (startup or 2.0) + 0.3)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=600)
        restarts += 1
        if proc.returncode == -signal.SIGKILL:
            kills += 1
            hits[phase if kind == "phase" else "random moment"] += 1
        elif proc.returncode == 0:
            break  # the replay finished before this kill point came
        else:
            pytest.fail(f"the replay failed after {kills} kills: exit {proc.returncode}: "
                        f"{stderr.strip()[-2000:]}")
        if phase == "data_ready" and startup is None:  # dies at its first commit
            startup = time.monotonic() - t0
        differences += [f"after kill {kills}: {c}: {d}" for c, d in check_ledger(killed)]
    finish = replay(killed)
    out, errors = finish.communicate(timeout=600)
    assert finish.returncode == 0, errors
    total_s = time.monotonic() - began

    got = snapshot(killed)
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(got[name], frame, check_exact=True, obj=name)
    differences += [f"final: {c}: {d}" for c, d in check_ledger(killed)]
    with capsys.disabled():
        print(f"\nkill test: {kills} SIGKILLs over {restarts + 1} runs of `paper replay "
              f"{START}..{END}` (252 sessions); phases hit: "
              + ", ".join(f"{k} {v}" for k, v in sorted(hits.items()))
              + f"; differences found: {len(differences)}; final orders {len(got['orders'])}, "
              f"fills {len(got['fills'])}, client order ids unique; "
              f"{total_s:.0f} s (uninterrupted replay {uninterrupted_s:.0f} s)", flush=True)
    assert differences == []
    assert kills >= min(KILLS, 100) * 0.9, f"only {kills} kills landed before the replay ended"
    assert set(PHASES) <= set(hits), f"phases never hit: {set(PHASES) - set(hits)}"
