"""The paper trader's scheduler with real APScheduler 3, a real SQLite job store in tmp, and
real processes for the lock, stop and signals."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from quantorch.paper.schedule import next_cycle
from quantorch.paper.scheduler import (
    FixedCyclesTrigger,
    PaperScheduler,
    PaperTraderRunningError,
    XnysCloseTrigger,
    job_id_for,
    jobs_path_for,
    lock_path_for,
    status,
    stop,
)

JOB = f"{__name__}:record_cycle"
FAILING_JOB = f"{__name__}:failing_cycle"
REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "acct"
MINUTE = dt.timedelta(seconds=60)
A, B, C = (pd.Timestamp(d) for d in ("2024-01-02", "2024-01-03", "2024-01-04"))


# ------------------------------------------------------------------- jobs the store names


def record_cycle(marker: str, label: str = "", sleep: float = 0.0) -> None:
    """A stand-in cycle: one ``start`` and one ``end`` line per run in ``marker``."""
    with open(marker, "a") as out:
        out.write(f"start {os.getpid()} {label}\n")
    time.sleep(sleep)
    with open(marker, "a") as out:
        out.write(f"end {os.getpid()} {label}\n")


def failing_cycle(marker: str, label: str = "", sleep: float = 0.0) -> None:
    raise RuntimeError("data provider down\nsecond line of detail")


# ---------------------------------------------------------------------------------- helpers


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def seconds(value: float) -> dt.timedelta:
    return dt.timedelta(seconds=value)


def wait_for(predicate, timeout: float = 10.0, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(step)


def sleep_until(moment: dt.datetime) -> None:
    time.sleep(max(0.0, (moment - now_utc()).total_seconds()))


def runs(marker: Path) -> int:
    return marker.read_text().count("end ") if marker.exists() else 0


class Recorder:
    """The callbacks the lead passes, recording what they were told."""

    def __init__(self) -> None:
        self.missed: list[pd.Timestamp] = []
        self.errors: list[tuple[pd.Timestamp, BaseException]] = []
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def on_missed(self, session: pd.Timestamp) -> None:
        with self._lock:
            self.missed.append(session)

    def on_error(self, session: pd.Timestamp, error: BaseException) -> None:
        with self._lock:
            self.errors.append((session, error))

    def log(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)


@pytest.fixture
def store(tmp_path) -> Path:
    return jobs_path_for(tmp_path / "quantorch.duckdb")


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "runs.txt"


@pytest.fixture
def make(store, marker):
    """Build in-process schedulers on the test's store; every one is shut down at the end."""
    built: list[PaperScheduler] = []

    def build(trigger=None, *, grace=MINUTE, job=JOB, recorder=None, **kwargs):
        rec = recorder or Recorder()
        scheduler = PaperScheduler(
            store, account=ACCOUNT, job=job,
            job_kwargs={"marker": str(marker), **kwargs},
            grace=grace, trigger=trigger,
            on_missed=rec.on_missed, on_error=rec.on_error, log=rec.log,
        )
        built.append(scheduler)
        return scheduler

    yield build
    for scheduler in built:
        scheduler.shutdown()


@pytest.fixture
def spawn(store, marker):
    """Start ``PaperScheduler.run()`` in a real subprocess; leftovers are killed at the end."""
    procs: list[subprocess.Popen] = []

    def start(trigger: FixedCyclesTrigger | None = None, *, grace_s: int = 1,
              sleep: float = 0.0):
        script = (
            "import datetime as dt\n"
            "from quantorch.paper.scheduler import PaperScheduler, FixedCyclesTrigger\n"
            "now = dt.datetime.now(dt.UTC)\n"
            f"s = PaperScheduler({str(store)!r}, account={ACCOUNT!r}, job={JOB!r},\n"
            f"    job_kwargs={{'marker': {str(marker)!r}, 'sleep': {sleep}}},\n"
            f"    grace=dt.timedelta(seconds={grace_s}), trigger={trigger_code(trigger)},\n"
            "    log=lambda line: print(line, flush=True))\n"
            "s.run()\n"
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
        proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def trigger_code(trigger: FixedCyclesTrigger | None) -> str:
    """Python source rebuilding ``trigger`` in the subprocess (None: the production one)."""
    if trigger is None:
        return "None"
    pairs = ", ".join(f"({session!r}, dt.datetime.fromisoformat({fire_at.isoformat()!r}))"
                      for session, fire_at in trigger.cycles)
    return f"FixedCyclesTrigger([{pairs}])"


def wait_running(store: Path, proc: subprocess.Popen, timeout: float = 20.0) -> dict:
    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the scheduler exited early: {proc.communicate()}")
        return status(store)["running"]

    wait_for(up, timeout)
    # the lock is taken before the job is written: wait for the job too
    wait_for(lambda: status(store, ACCOUNT)["next_fire_time"] is not None, timeout)
    return status(store, ACCOUNT)


# -------------------------------------------------------------------------- paths, triggers


def test_the_job_store_and_its_lock_sit_next_to_the_database(tmp_path):
    jobs = jobs_path_for(tmp_path / "quantorch.duckdb")
    assert jobs == tmp_path / "quantorch.jobs.sqlite"
    assert lock_path_for(jobs) == tmp_path / "quantorch.jobs.sqlite.lock"
    assert job_id_for("alice") == "paper-cycle:alice"


def test_the_close_trigger_pickles_as_plain_state_and_follows_the_schedule():
    trigger = XnysCloseTrigger(45)
    copy = pickle.loads(pickle.dumps(trigger))
    assert copy == trigger and vars(copy) == {"offset_minutes": 45}
    friday_after_thanksgiving = dt.datetime(2023, 11, 24, 15, 0, tzinfo=dt.UTC)
    assert copy.get_next_fire_time(None, friday_after_thanksgiving) == dt.datetime(
        2023, 11, 24, 18, 45, tzinfo=dt.UTC)
    assert copy.get_next_fire_time(
        dt.datetime(2023, 11, 24, 18, 45, tzinfo=dt.UTC), friday_after_thanksgiving
    ) == dt.datetime(2023, 11, 27, 21, 45, tzinfo=dt.UTC)
    assert copy.session_at(dt.datetime(2023, 11, 24, 18, 45, tzinfo=dt.UTC)) == pd.Timestamp(
        "2023-11-24")


def test_the_fixed_trigger_pickles_and_stops_after_its_last_cycle():
    now = now_utc()
    trigger = pickle.loads(pickle.dumps(FixedCyclesTrigger([(A, now + seconds(1))])))
    assert trigger.get_next_fire_time(None, now) == now + seconds(1)
    assert trigger.get_next_fire_time(now + seconds(1), now) is None


def test_bad_arguments_are_refused_before_anything_is_written(store, marker):
    def build(**overrides):
        args = {"account": ACCOUNT, "job": JOB, "job_kwargs": {"marker": str(marker)}}
        return PaperScheduler(store, **{**args, **overrides})

    with pytest.raises(TypeError, match="plain JSON"):
        build(job_kwargs={"marker": marker})  # a Path
    with pytest.raises(ValueError, match="module:function"):
        build(job="record_cycle")
    with pytest.raises(ValueError, match="cannot be imported"):
        build(job=f"{__name__}:no_such_cycle")
    with pytest.raises(ValueError, match="whole number of seconds"):
        build(grace=seconds(0.5))
    with pytest.raises(ValueError, match="whole number of minutes"):
        build(offset=seconds(90))
    assert not store.exists() and not lock_path_for(store).exists()


# ------------------------------------------------------------------- firing and restarting


def test_a_job_fires_a_second_after_start(make, marker):
    rec = Recorder()
    scheduler = make(FixedCyclesTrigger([(A, now_utc() + seconds(1))]), recorder=rec)
    scheduler.start()
    assert runs(marker) == 0
    wait_for(lambda: runs(marker) == 1)
    wait_for(lambda: any("cycle for session 2024-01-02 done" in line for line in rec.lines))
    assert rec.missed == [] and rec.errors == []


def test_the_production_trigger_is_stored_and_restored_and_restarts_keep_one_job(
    make, store, marker
):
    first = make(grace=seconds(1))  # XnysCloseTrigger(30); a 1 s grace: nothing is due now
    first.start()
    expected = next_cycle(now_utc())[1]
    assert first.next_fire_time == expected
    first.shutdown()

    second = make(grace=seconds(1), label="v2")
    second.start()
    jobs = second._scheduler.get_jobs()  # unpickled from SQLite
    assert [job.id for job in jobs] == [f"paper-cycle:{ACCOUNT}"]
    (job,) = jobs
    assert job.trigger == XnysCloseTrigger(30)
    assert job.func_ref == JOB
    assert job.kwargs == {"marker": str(marker), "label": "v2"}  # replaced, not duplicated
    assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 1)
    assert job.next_run_time == expected
    second.shutdown()

    with sqlite3.connect(store) as con:
        assert con.execute("SELECT count(*) FROM apscheduler_jobs").fetchone() == (1,)
    info = status(store, ACCOUNT)
    assert info["running"] is False and info["pid"] is None
    assert info["next_fire_time"] == expected
    assert info["next_session"] == next_cycle(now_utc())[0]


def test_a_start_for_other_accounts_removes_the_earlier_job(store, marker):
    """One scheduler per job store runs one job: after `paper start --account a --account b`,
    the job an earlier `paper start --account alice` left must not fire as well."""
    first = PaperScheduler(store, account=ACCOUNT, job=JOB,
                           job_kwargs={"marker": str(marker)}, grace=seconds(1))
    first.start()
    first.shutdown()
    second = PaperScheduler(store, account="alice+bob", job=JOB,
                            job_kwargs={"marker": str(marker)}, grace=seconds(1))
    second.start()
    try:
        assert [job.id for job in second._scheduler.get_jobs()] == ["paper-cycle:alice+bob"]
    finally:
        second.shutdown()
    assert status(store, "bob")["job_id"] == "paper-cycle:alice+bob"
    assert status(store, "carol")["job_id"] is None


def test_a_cycle_due_while_down_runs_exactly_once_on_restart(make, marker):
    now = now_utc()
    cycles = FixedCyclesTrigger([(A, now + seconds(2)), (B, now + dt.timedelta(hours=1))])
    before = make(cycles)
    before.start()  # stores A as the next run ...
    before.shutdown()  # ... and goes down before A fires
    assert runs(marker) == 0
    sleep_until(now + seconds(3))  # A is now 1 s late, well inside the 60 s grace
    rec = Recorder()
    after = make(cycles, recorder=rec)
    after.start()
    wait_for(lambda: runs(marker) == 1)
    time.sleep(1.0)  # a second run would show by now
    assert runs(marker) == 1
    assert after.next_fire_time == now + dt.timedelta(hours=1)
    assert rec.missed == []
    assert any("cycle for session 2024-01-02 is due" in line for line in rec.lines)


def test_cycles_beyond_the_grace_are_reported_missed_and_not_run(make, marker):
    now = now_utc()
    cycles = FixedCyclesTrigger([(A, now + seconds(1.5)), (B, now + seconds(2)),
                                 (C, now + dt.timedelta(hours=1))])
    before = make(cycles, grace=seconds(1))
    before.start()
    before.shutdown()
    assert runs(marker) == 0
    sleep_until(now + seconds(3.5))  # A and B both fired more than 1 s ago
    rec = Recorder()
    after = make(cycles, grace=seconds(1), recorder=rec)
    after.start()
    time.sleep(0.5)
    # APScheduler's coalescing alone would report B and drop A silently
    assert rec.missed == [A, B]
    assert runs(marker) == 0
    assert after.next_fire_time == now + dt.timedelta(hours=1)


def test_cycles_missed_while_running_are_reported_through_apscheduler(make, marker):
    now = now_utc()
    cycles = FixedCyclesTrigger([(A, now + seconds(1.5)), (B, now + seconds(2)),
                                 (C, now + dt.timedelta(hours=1))])
    rec = Recorder()
    scheduler = make(cycles, grace=seconds(1), recorder=rec)
    scheduler.start()
    scheduler._scheduler.pause()  # a suspended machine: the process lives, nothing fires
    sleep_until(now + seconds(4))
    scheduler._scheduler.resume()
    # B comes back as EVENT_JOB_MISSED; A, coalesced away, is reported as superseded
    wait_for(lambda: len(rec.missed) == 2)
    assert sorted(rec.missed) == [A, B]
    assert runs(marker) == 0
    assert scheduler.next_fire_time == now + dt.timedelta(hours=1)


def test_a_failing_cycle_is_reported_and_the_next_one_retries(make):
    now = now_utc()
    cycles = FixedCyclesTrigger([(A, now + seconds(0.5)), (B, now + seconds(1.5)),
                                 (C, now + dt.timedelta(hours=1))])
    rec = Recorder()
    scheduler = make(cycles, job=FAILING_JOB, recorder=rec)
    scheduler.start()
    wait_for(lambda: len(rec.errors) == 2)
    assert [session for session, _ in rec.errors] == [A, B]
    assert all(isinstance(error, RuntimeError) for _, error in rec.errors)
    assert scheduler.running and scheduler.next_fire_time == now + dt.timedelta(hours=1)
    failures = [line for line in rec.lines if "failed" in line]
    assert failures[0] == ("cycle for session 2024-01-02 failed: RuntimeError: data provider "
                           "down; the next cycle tries again")


def test_a_callback_that_raises_does_not_stop_the_scheduler(store, marker, make):
    def broken(session):
        raise KeyError("cycles table missing")

    now = now_utc()
    cycles = FixedCyclesTrigger([(A, now + seconds(1)), (B, now + seconds(3))])
    before = make(cycles, grace=seconds(1))
    before.start()
    before.shutdown()
    sleep_until(now + seconds(2.5))  # A is missed
    lines: list[str] = []
    scheduler = PaperScheduler(
        store, account=ACCOUNT, job=JOB, job_kwargs={"marker": str(marker)},
        grace=seconds(1), on_missed=broken, log=lines.append, trigger=cycles,
    )
    try:
        scheduler.start()
        assert "broken failed: KeyError: 'cycles table missing'" in lines
        wait_for(lambda: runs(marker) == 1)  # B still runs
    finally:
        scheduler.shutdown()


# ------------------------------------------------------------------ the lock, stop, status


def test_a_second_scheduler_is_refused_with_the_holders_pid(spawn, store, make):
    holder = spawn()
    wait_running(store, holder)
    expected = (f"a paper trader is already running for this database (PID {holder.pid}): "
                "stop it with `quantorch paper stop` first")

    with pytest.raises(PaperTraderRunningError) as refused:
        make(grace=seconds(1)).start()
    assert str(refused.value) == expected

    second = spawn()
    _, err = second.communicate(timeout=30)
    assert second.returncode != 0
    assert err.strip().splitlines()[-1].endswith(expected)
    assert status(store)["pid"] == holder.pid  # the holder is untouched


def test_stop_lets_a_running_cycle_finish_then_the_process_exits_and_frees_the_lock(
    spawn, store, marker, make
):
    now = now_utc()
    cycles = FixedCyclesTrigger([(A, now + seconds(2)), (B, now + dt.timedelta(hours=1))])
    proc = spawn(cycles, grace_s=60, sleep=3.0)
    info = wait_running(store, proc)
    assert info["pid"] == proc.pid
    wait_for(lambda: marker.exists() and "start" in marker.read_text(), timeout=20)

    result = stop(store, timeout=20)
    assert result.stopped and result.pid == proc.pid
    assert result.message == f"stopped the paper trader (PID {proc.pid})"
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert runs(marker) == 1  # the cycle in flight completed before the exit
    assert "stopping (SIGTERM): waiting for a running cycle to finish" in out
    assert out.strip().splitlines()[-1] == "paper trader stopped"
    assert status(store)["running"] is False
    assert lock_path_for(store).read_text() == ""

    again = make(grace=seconds(1))
    again.start()
    assert again.running


def test_sigint_shuts_the_scheduler_down_cleanly(spawn, store):
    proc = spawn()
    info = wait_running(store, proc)
    assert info["next_fire_time"] == next_cycle(now_utc())[1]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stopping (SIGINT)" in out
    assert status(store)["running"] is False


def test_a_scheduler_killed_mid_cycle_leaves_no_lock_and_the_restart_reruns_the_cycle(
    spawn, store, marker, make
):
    now = now_utc()
    cycles = FixedCyclesTrigger([(A, now + seconds(2)), (B, now + dt.timedelta(hours=1))])
    proc = spawn(cycles, grace_s=60, sleep=30.0)
    wait_running(store, proc)
    wait_for(lambda: marker.exists() and "start" in marker.read_text(), timeout=20)
    # APScheduler moves the job to its next run time right after submitting the cycle, in its
    # own thread: under load the cycle can start first, so wait for the store to point at B
    wait_for(lambda: status(store, ACCOUNT)["next_fire_time"] == now + dt.timedelta(hours=1),
             timeout=20)
    proc.kill()  # a crash in the middle of A's cycle
    proc.wait(timeout=20)
    assert lock_path_for(store).read_text().strip() == str(proc.pid)  # the dead PID ...
    assert status(store)["running"] is False  # ... but the kernel dropped the lock
    assert stop(store).stopped is False
    # the store already points at B: the restart reruns A because it is still due
    assert status(store, ACCOUNT)["next_fire_time"] == now + dt.timedelta(hours=1)
    rec = Recorder()
    restarted = make(cycles, recorder=rec)
    restarted.start()
    assert status(store)["pid"] == os.getpid()
    wait_for(lambda: runs(marker) == 1)
    assert marker.read_text().count("start ") == 2  # the killed run and the rerun
    assert rec.missed == []


def test_a_restart_inside_the_grace_reruns_the_due_cycle(make, marker):
    now = now_utc()
    cycles = FixedCyclesTrigger([(A, now + seconds(0.5)), (B, now + dt.timedelta(hours=1))])
    first = make(cycles)
    first.start()
    wait_for(lambda: runs(marker) == 1)
    first.shutdown()
    # cycles are idempotent per session: a finished one reruns as a no-op, an interrupted
    # one completes
    make(cycles).start()
    wait_for(lambda: runs(marker) == 2)


def test_stop_and_status_without_a_scheduler_write_nothing(store, tmp_path):
    result = stop(store)
    assert not result.stopped and result.pid is None
    assert result.message == "no paper trader is running for this database"
    assert status(store, ACCOUNT) == {
        "running": False, "pid": None, "job_store": str(store), "jobs": [],
        "job_id": None, "next_fire_time": None, "next_session": None,
    }
    assert list(tmp_path.iterdir()) == []


def test_the_store_holds_only_importable_references(make, store, marker, tmp_path):
    scheduler = make(grace=seconds(1))
    scheduler.start()
    scheduler.shutdown()
    # a clean interpreter that cannot import the tests unpickles the stored job state
    code = (
        "import json, pickle, sqlite3, sys\n"
        f"con = sqlite3.connect({str(store)!r})\n"
        "(blob,) = con.execute('SELECT job_state FROM apscheduler_jobs').fetchone()\n"
        "state = pickle.loads(blob)\n"
        "trigger = state['trigger']\n"
        "print(json.dumps({'func': state['func'], 'args': list(state['args']),\n"
        "    'kwargs': state['kwargs'], 'trigger': type(trigger).__module__ + '.'\n"
        "    + type(trigger).__qualname__, 'trigger_state': vars(trigger),\n"
        "    'tests_imported': any(m.startswith('tests') for m in sys.modules)}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=True)
    state = json.loads(done.stdout)
    assert state == {
        "func": JOB, "args": [], "kwargs": {"marker": str(marker)},
        "trigger": "quantorch.paper.scheduler.XnysCloseTrigger",
        "trigger_state": {"offset_minutes": 30}, "tests_imported": False,
    }
