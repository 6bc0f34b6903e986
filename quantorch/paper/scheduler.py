"""The paper trader's scheduler: one APScheduler 3 job (for the accounts it trades, one after
the other), in a persistent job store.

A cycle fires after each XNYS session's actual close plus an offset (:class:`XnysCloseTrigger`,
built on :mod:`quantorch.paper.schedule`). The job store is SQLite next to the DuckDB file
(:func:`jobs_path_for`), so the schedule survives a restart; the job names its function by an
importable ``"module:function"`` string and carries only JSON-able keyword arguments, so
nothing unpicklable is stored.

One scheduler per job store: a ``<jobs>.lock`` file held with ``fcntl.flock`` for the
scheduler's lifetime names the holder's PID; :func:`stop` signals that PID and :func:`status`
reads the lock and the store without starting anything.

Restarts: the cycle that is due (fired at most ``grace`` ago) runs once at start, whether the
last process missed it or was interrupted while running it (cycles are idempotent per
session); every earlier cycle the store shows as never run is reported to ``on_missed``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import signal
import sqlite3
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import pandas as pd
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_JOB_SUBMITTED,
    EVENT_SCHEDULER_STARTED,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED, BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import ref_to_obj
from sqlalchemy import URL, create_engine

from quantorch.errors import RetryableError, UserInputError
from quantorch.paper import schedule
from quantorch.paper.locks import PidLock, probe_lock
from quantorch.paper.schedule import DEFAULT_GRACE, DEFAULT_OFFSET, Cycle

__all__ = [
    "CycleTrigger",
    "FixedCyclesTrigger",
    "PaperScheduler",
    "PaperTraderRunningError",
    "StopResult",
    "XnysCloseTrigger",
    "job_id_for",
    "jobs_path_for",
    "lock_path_for",
    "status",
    "stop",
]

#: The table APScheduler's SQLAlchemyJobStore creates (its default name).
_JOBS_TABLE = "apscheduler_jobs"
_LOCK_RETRY_S = 1.0  # rides over a concurrent `status`, which holds the lock for microseconds


class PaperTraderRunningError(UserInputError):
    """Another process already runs a paper trader on this job store."""


# --------------------------------------------------------------------------------- paths, ids


def jobs_path_for(db_path: str | Path) -> Path:
    """The job store next to a DuckDB file: ``<db folder>/<db name>.jobs.sqlite``."""
    return Path(db_path).with_suffix(".jobs.sqlite")


def lock_path_for(job_store_path: str | Path) -> Path:
    """The lock file of a job store: ``<jobs>.lock``."""
    path = Path(job_store_path)
    return path.with_name(path.name + ".lock")


def job_id_for(account: str) -> str:
    """The fixed job id of the cycles of an account, or of several as ``a+b`` (account names
    never contain ``+``): ``paper-cycle:<account>``."""
    return f"paper-cycle:{account}"


def _job_accounts(job_id: str) -> list[str]:
    return job_id.split(":", 1)[1].split("+") if job_id.startswith("paper-cycle:") else []


# ------------------------------------------------------------------------------------ triggers


class CycleTrigger(BaseTrigger):
    """A trigger whose fire times are cycles: each fire time belongs to one session.

    Subclasses keep only plain attributes, so the trigger pickles into the job store by its
    class's importable name plus a small state dict.
    """

    @abstractmethod
    def cycles_between(self, lo_utc: dt.datetime, hi_utc: dt.datetime) -> list[Cycle]:
        """The cycles whose fire time lies in [lo_utc, hi_utc]."""

    def get_next_fire_time(
        self, previous_fire_time: dt.datetime | None, now: dt.datetime
    ) -> dt.datetime | None:
        """The first fire time strictly after ``previous_fire_time`` (``now`` on a new job)."""
        after = previous_fire_time if previous_fire_time is not None else now
        cycle = self._next_after(after)
        return cycle[1] if cycle else None

    @abstractmethod
    def _next_after(self, moment: dt.datetime) -> Cycle | None: ...

    def session_at(self, fire_at: dt.datetime) -> pd.Timestamp:
        """The session a fire time belongs to (the latest cycle at or before it)."""
        cycles = self.cycles_between(fire_at - dt.timedelta(days=5), fire_at)
        if cycles:
            return cycles[-1][0]
        from quantorch.data.calendar import last_completed_session

        return last_completed_session(fire_at)


class XnysCloseTrigger(CycleTrigger):
    """Fires ``offset_minutes`` after each XNYS session's actual close (early closes included,
    holidays skipped): the paper trader's production trigger."""

    def __init__(self, offset_minutes: int = 30) -> None:
        if isinstance(offset_minutes, bool) or not isinstance(offset_minutes, int):
            raise TypeError(f"offset_minutes must be an int, not {offset_minutes!r}")
        schedule._check_offset(dt.timedelta(minutes=offset_minutes))
        self.offset_minutes = offset_minutes

    @property
    def offset(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.offset_minutes)

    def cycles_between(self, lo_utc: dt.datetime, hi_utc: dt.datetime) -> list[Cycle]:
        return schedule.cycles_between(lo_utc, hi_utc, self.offset)

    def _next_after(self, moment: dt.datetime) -> Cycle | None:
        try:
            return schedule.next_cycle(moment, self.offset)
        except ValueError:  # past the end of the bundled calendar: APScheduler drops the job
            return None

    def __getstate__(self) -> dict[str, Any]:
        return {"version": 1, "offset_minutes": self.offset_minutes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("version", 1) > 1:
            raise ValueError(f"XnysCloseTrigger state version {state['version']} is newer than "
                             "this quantorch: upgrade quantorch")
        self.offset_minutes = int(state["offset_minutes"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, XnysCloseTrigger) and other.offset_minutes == self.offset_minutes

    def __hash__(self) -> int:
        return hash((XnysCloseTrigger, self.offset_minutes))

    def __str__(self) -> str:
        return f"XNYS close + {self.offset_minutes} min"

    def __repr__(self) -> str:
        return f"XnysCloseTrigger(offset_minutes={self.offset_minutes})"


class FixedCyclesTrigger(CycleTrigger):
    """Fires at an explicit list of ``(session, fire_at)`` cycles, then stops: for tests (fire a
    second from now) and one-off catch-up runs. Fire times are aware or naive-UTC datetimes."""

    def __init__(self, cycles: Sequence[tuple[Any, dt.datetime]]) -> None:
        plain = []
        for session, fire_at in cycles:
            moment = pd.Timestamp(fire_at)
            moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment
            plain.append((pd.Timestamp(session).date().isoformat(),
                          moment.to_pydatetime().astimezone(dt.UTC)))
        self.cycles = tuple(sorted(plain, key=lambda c: c[1]))

    def _as_cycles(self) -> list[Cycle]:
        return [(pd.Timestamp(session), fire_at) for session, fire_at in self.cycles]

    def cycles_between(self, lo_utc: dt.datetime, hi_utc: dt.datetime) -> list[Cycle]:
        return [c for c in self._as_cycles() if lo_utc <= c[1] <= hi_utc]

    def _next_after(self, moment: dt.datetime) -> Cycle | None:
        return next((c for c in self._as_cycles() if c[1] > moment), None)

    def __getstate__(self) -> dict[str, Any]:
        return {"version": 1, "cycles": self.cycles}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.cycles = tuple(state["cycles"])

    def __str__(self) -> str:
        return f"{len(self.cycles)} fixed cycles"

    def __repr__(self) -> str:
        return f"FixedCyclesTrigger({list(self.cycles)!r})"


# ---------------------------------------------------------------------------------------- lock


def _already_running(pid: int | None, lock: Path) -> PaperTraderRunningError:
    who = f"PID {pid}" if pid else f"PID unknown, lock {lock}"
    return PaperTraderRunningError(
        f"a paper trader is already running for this database ({who}): stop it with "
        "`quantorch paper stop` first"
    )



# ----------------------------------------------------------------------------------- scheduler


def _plain_kwargs(job_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    kwargs = dict(job_kwargs or {})
    try:
        same = json.loads(json.dumps(kwargs)) == kwargs
    except (TypeError, ValueError):
        same = False
    if not same:
        raise TypeError(
            f"job_kwargs must hold plain JSON values (str, int, float, bool, None, lists, "
            f"dicts) so the job store can always unpickle them; got {kwargs!r} (pass paths as "
            "str)"
        )
    return kwargs


def _check_job_ref(job: str) -> None:
    if not isinstance(job, str) or ":" not in job:
        raise ValueError(f"job must be an importable 'module:function' name, not {job!r}")
    try:
        target = ref_to_obj(job)
    except (ImportError, LookupError, ValueError) as exc:
        raise ValueError(f"job {job!r} cannot be imported: {exc}") from exc
    if not callable(target):
        raise TypeError(f"job {job!r} is not a function")


def _whole_seconds(grace: dt.timedelta) -> int:
    seconds = grace.total_seconds()
    if seconds < 1 or seconds != int(seconds):
        raise ValueError(f"grace must be a whole number of seconds, at least 1; got {grace}")
    return int(seconds)


def _whole_minutes(offset: dt.timedelta) -> int:
    minutes = offset.total_seconds() / 60
    if minutes != int(minutes):
        raise ValueError(f"offset must be a whole number of minutes; got {offset}")
    return int(minutes)


def _fmt(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _engine(job_store_path: Path):
    return create_engine(URL.create("sqlite", database=str(job_store_path)))


class PaperScheduler:
    """Runs one account's cycle after every XNYS close, from a persistent SQLite job store.

    Parameters
    ----------
    job_store_path
        The SQLite job store (:func:`jobs_path_for` of the DuckDB file); created on start.
    account
        The paper account; the job id is ``paper-cycle:<account>``.
    job
        The cycle function's importable name, ``"module:function"``; called as
        ``function(**job_kwargs)`` in a worker thread.
    job_kwargs
        Plain JSON values only (config path, db path, account, ...).
    offset
        Time after the session's actual close at which the cycle fires (whole minutes).
    grace
        How late a cycle may still run (whole seconds; default 6 hours); an older one is
        reported to ``on_missed`` and never run.
    on_missed
        ``on_missed(session)`` for each cycle that will not run. Called from the starting
        thread for cycles missed while no scheduler ran, from a worker thread otherwise.
    on_error
        ``on_error(session, exception)`` when the cycle raised; the scheduler keeps running and
        the next cycle tries again.
    log
        ``log(line)`` for one-line progress messages (started, due, done, missed, stopping).
    trigger
        The schedule; default :class:`XnysCloseTrigger` of ``offset``. Tests pass a
        :class:`FixedCyclesTrigger`.
    """

    def __init__(
        self,
        job_store_path: str | Path,
        *,
        account: str,
        job: str,
        job_kwargs: Mapping[str, Any] | None = None,
        offset: dt.timedelta = DEFAULT_OFFSET,
        grace: dt.timedelta = DEFAULT_GRACE,
        on_missed: Callable[[pd.Timestamp], None] | None = None,
        on_error: Callable[[pd.Timestamp, BaseException], None] | None = None,
        log: Callable[[str], None] | None = None,
        trigger: CycleTrigger | None = None,
    ) -> None:
        _check_job_ref(job)
        self.job_store_path = Path(job_store_path)
        self.lock_path = lock_path_for(self.job_store_path)
        self.account = account
        self.job_id = job_id_for(account)
        self.job = job
        self.job_kwargs = _plain_kwargs(job_kwargs)
        self.grace = grace
        self._grace_s = _whole_seconds(grace)
        self.trigger = trigger if trigger is not None else XnysCloseTrigger(_whole_minutes(offset))
        self._on_missed = on_missed
        self._on_error = on_error
        self._log_line = log
        self._scheduler: BaseScheduler | None = None
        self._lock: PidLock | None = None
        self._last_fire: dt.datetime | None = None
        self._first_run: dt.datetime | None = None
        self._events_lock = threading.Lock()
        self._started = threading.Event()
        self._stopping = threading.Event()

    # -- lifecycle

    def start(self) -> None:
        """Start in the background (a thread) and return; :meth:`shutdown` stops it."""
        self._setup(BackgroundScheduler)
        try:
            self._scheduler.start()
        except BaseException:
            self._release()
            raise

    def run(self) -> None:
        """Run in the foreground until SIGTERM or SIGINT, then shut down cleanly: a running
        cycle finishes, the lock is released, and this returns. Call from the main thread."""
        self._setup(BlockingScheduler)
        previous = {sig: signal.signal(sig, self._handle_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._scheduler.start()  # blocks until shutdown
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._release()
        self._log("paper trader stopped")

    def shutdown(self, wait: bool = True) -> None:
        """Stop a background scheduler (waiting for a running cycle) and release the lock."""
        try:
            if self._scheduler is not None and self._scheduler.state != STATE_STOPPED:
                self._scheduler.shutdown(wait=wait)
        finally:
            self._release()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def running(self) -> bool:
        return self._scheduler is not None and self._scheduler.state != STATE_STOPPED

    @property
    def next_fire_time(self) -> dt.datetime | None:
        """The account's next fire time as the job store holds it (aware UTC)."""
        if self._scheduler is None:
            return None
        job = self._scheduler.get_job(self.job_id)
        return job.next_run_time.astimezone(dt.UTC) if job and job.next_run_time else None

    # -- setup

    def _setup(self, scheduler_class: type[BaseScheduler]) -> None:
        if self._scheduler is not None:
            raise RuntimeError("a PaperScheduler starts once; build a new one to restart")
        self._lock = PidLock.acquire(self.lock_path, retry_s=_LOCK_RETRY_S, busy=_already_running)
        try:
            _remove_other_jobs(self.job_store_path, self.job_id)
            now = dt.datetime.now(dt.UTC)
            next_run = self._plan(now, _stored_next_run_time(self.job_store_path, self.job_id))
            scheduler = scheduler_class(
                jobstores={"default": SQLAlchemyJobStore(engine=_engine(self.job_store_path))},
                executors={"default": ThreadPoolExecutor(max_workers=1)},
                timezone=dt.UTC,
            )
            scheduler.add_listener(
                self._on_event,
                EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED
                | EVENT_JOB_ERROR | EVENT_JOB_EXECUTED | EVENT_SCHEDULER_STARTED,
            )
            options: dict[str, Any] = {}
            self._first_run = next_run
            if next_run is not None:
                # passed explicitly, or replace_existing would recompute it from now and
                # forget the cycle that is due
                options["next_run_time"] = next_run
            scheduler.add_job(
                self.job,
                trigger=self.trigger,
                id=self.job_id,
                name=f"paper cycle {self.account}",
                kwargs=self.job_kwargs,
                coalesce=True,
                misfire_grace_time=self._grace_s,
                max_instances=1,
                replace_existing=True,
                **options,
            )
            self._scheduler = scheduler
        except BaseException:
            self._release()
            raise

    def _plan(self, now: dt.datetime, pending: dt.datetime | None) -> dt.datetime | None:
        """The first run time for this start; reports cycles missed while nothing ran.

        ``pending`` is the stored job's next run time: the first cycle it never submitted.
        """
        down_since = pending if pending is not None and pending <= now else None
        lo = min(down_since, now - self.grace) if down_since else now - self.grace
        missed, due = schedule.split_passed(self.trigger.cycles_between(lo, now), now,
                                            self.grace)
        if down_since is not None:
            for session, fire_at in missed:
                self._report_missed(session, f"due at {_fmt(fire_at)} while no scheduler ran")
        if due is not None:
            session, fire_at = due
            late = now - fire_at
            self._log(f"cycle for session {session.date()} is due (fired {_fmt(fire_at)}, "
                      f"{late.total_seconds() / 60:.0f} min ago): running it now")
            self._last_fire = fire_at
            return fire_at
        self._last_fire = now
        return self.trigger.get_next_fire_time(None, now)

    # -- events (called from the scheduler's and the executor's threads)

    def _on_event(self, event: Any) -> None:
        # Never touch the scheduler or its store here: EXECUTED arrives from the worker thread,
        # which shutdown(wait=True) joins while holding the job store lock (a deadlock).
        if event.code == EVENT_SCHEDULER_STARTED:
            self._started.set()
            self._log(f"paper trader started for {self.account} (PID {os.getpid()}); "
                      f"{self._describe_next(self._first_run)}")
            return
        if getattr(event, "job_id", None) != self.job_id:
            return
        if event.code in (EVENT_JOB_SUBMITTED, EVENT_JOB_MAX_INSTANCES):
            times = sorted(t.astimezone(dt.UTC) for t in event.scheduled_run_times)
            with self._events_lock:
                after, self._last_fire = self._last_fire, max(self._last_fire or times[-1],
                                                              times[-1])
            if after is not None and after < times[0]:
                # coalescing runs only the latest of several passed cycles: report the others
                for session, fire_at in self.trigger.cycles_between(after, times[0]):
                    if after < fire_at < times[0]:
                        self._report_missed(session, f"due at {_fmt(fire_at)}, superseded")
            if event.code == EVENT_JOB_MAX_INSTANCES:
                for moment in times:
                    self._report_missed(self.trigger.session_at(moment),
                                        "the previous cycle was still running")
            return
        session = self.trigger.session_at(event.scheduled_run_time.astimezone(dt.UTC))
        if event.code == EVENT_JOB_MISSED:
            self._report_missed(session, f"due at {_fmt(event.scheduled_run_time)}, more than "
                                         f"{self.grace} ago")
        elif event.code == EVENT_JOB_ERROR:
            self._log(f"cycle for session {session.date()} failed: "
                      f"{_first_line(event.exception)}; the next cycle tries again")
            self._call(self._on_error, session, event.exception)
        elif event.code == EVENT_JOB_EXECUTED:
            nxt = self.trigger.get_next_fire_time(event.scheduled_run_time,
                                                  dt.datetime.now(dt.UTC))
            self._log(f"cycle for session {session.date()} done; {self._describe_next(nxt)}")

    def _describe_next(self, fire_at: dt.datetime | None) -> str:
        if fire_at is None:
            return "no cycle scheduled"
        when = "due now" if fire_at <= dt.datetime.now(dt.UTC) else f"at {_fmt(fire_at)}"
        return f"next cycle: session {self.trigger.session_at(fire_at).date()} {when}"

    def _report_missed(self, session: pd.Timestamp, why: str) -> None:
        self._log(f"cycle for session {session.date()} missed ({why})")
        self._call(self._on_missed, session)

    def _call(self, callback: Callable[..., None] | None, *args: Any) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception as exc:  # noqa: BLE001 - a callback must not stop the scheduler
            self._log(f"{getattr(callback, '__name__', 'callback')} failed: {_first_line(exc)}")

    def _log(self, line: str) -> None:
        if self._log_line is not None:
            self._log_line(line)

    # -- stopping

    def _handle_signal(self, signum: int, _frame: object) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        # shutdown(wait=True) joins the worker, and printing from a handler can re-enter a
        # stream the main thread is writing: do both off the handler's frame
        threading.Thread(target=self._shutdown_once_started, args=(signal.Signals(signum).name,),
                         name="paper-scheduler-stop", daemon=True).start()

    def _shutdown_once_started(self, signal_name: str) -> None:
        self._log(f"stopping ({signal_name}): waiting for a running cycle to finish")
        self._started.wait()
        try:
            self._scheduler.shutdown(wait=True)
        except SchedulerNotRunningError:
            pass

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


# ------------------------------------------------------------------------------ stop, status


@dataclass(frozen=True)
class StopResult:
    """What :func:`stop` did: ``stopped`` is False when no paper trader was running."""

    stopped: bool
    pid: int | None
    message: str


def stop(job_store_path: str | Path, *, timeout: float = 60.0) -> StopResult:
    """Stop the paper trader holding this job store: SIGTERM its PID, wait for the lock.

    The scheduler finishes a running cycle first, hence the generous ``timeout``; past it a
    :class:`RetryableError` says so (the process is left running).
    """
    lock = lock_path_for(job_store_path)
    held, pid = probe_lock(lock)
    if not held:
        return StopResult(False, None, "no paper trader is running for this database")
    if pid is None:
        raise UserInputError(f"a paper trader holds {lock} but the file names no PID: stop "
                             "that process by hand")
    if pid == os.getpid():
        raise UserInputError("this process runs the paper trader: call its shutdown() instead")
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        raise UserInputError(
            f"{lock} is locked but PID {pid} is no process here (another machine or "
            "container shares the folder?): stop it there"
        ) from None
    except PermissionError:
        raise UserInputError(f"not allowed to signal the paper trader (PID {pid}): run "
                             "`quantorch paper stop` as its user") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not probe_lock(lock)[0]:
            return StopResult(True, pid, f"stopped the paper trader (PID {pid})")
        time.sleep(0.1)
    raise RetryableError(
        f"the paper trader (PID {pid}) did not stop within {timeout:g} s, probably finishing a "
        "cycle: wait, then run `quantorch paper stop` again"
    )


def status(job_store_path: str | Path, account: str | None = None) -> dict[str, Any]:
    """The paper trader's state, read without starting a scheduler or writing a file.

    Returns ``running``, ``pid`` (the holder, or None), ``job_store``, ``jobs`` (each with
    ``id``, ``next_fire_time`` (aware UTC or None), ``next_session``, ``func``, ``trigger``) and,
    for ``account``, its ``job_id``, ``next_fire_time`` and ``next_session``. APScheduler 3 keeps
    no run history: the last cycle is in the ``cycles`` table.
    """
    path = Path(job_store_path)
    held, pid = probe_lock(lock_path_for(path))
    jobs = _read_jobs(path)
    result: dict[str, Any] = {"running": held, "pid": pid if held else None,
                              "job_store": str(path), "jobs": jobs}
    if account is not None:
        mine = next((j for j in jobs if account in _job_accounts(j["id"])), None)
        result.update(job_id=mine["id"] if mine else None,
                      next_fire_time=mine["next_fire_time"] if mine else None,
                      next_session=mine["next_session"] if mine else None)
    return result


def _remove_other_jobs(path: Path, keep: str) -> None:
    """One scheduler per job store runs one job: a job left by an earlier start for other
    accounts would otherwise fire too (read without unpickling, removed through APScheduler)."""
    stale = [job["id"] for job in _read_jobs(path) if job["id"] != keep]
    if not stale:
        return
    jobstore = SQLAlchemyJobStore(engine=_engine(path))
    jobstore.start(None, "default")
    try:
        for job_id in stale:
            jobstore.remove_job(job_id)
    finally:
        jobstore.shutdown()


def _connect_read_only(path: Path) -> sqlite3.Connection | None:
    if not path.is_file():
        return None
    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=5)


def _stored_next_run_time(path: Path, job_id: str) -> dt.datetime | None:
    """The stored job's next run time, read from its float column (no unpickling, so a job
    pickled by an older quantorch cannot stop a start)."""
    con = _connect_read_only(path)
    if con is None:
        return None
    try:
        row = con.execute(f"SELECT next_run_time FROM {_JOBS_TABLE} WHERE id = ?",
                          [job_id]).fetchone()
    except sqlite3.OperationalError:  # no table yet
        return None
    finally:
        con.close()
    if row is None or row[0] is None:
        return None
    return dt.datetime.fromtimestamp(row[0], dt.UTC)


def _read_jobs(path: Path) -> list[dict[str, Any]]:
    con = _connect_read_only(path)
    if con is None:
        return []
    try:
        rows = con.execute(
            f"SELECT id, next_run_time, job_state FROM {_JOBS_TABLE} ORDER BY next_run_time"
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()
    jobs = []
    for job_id, next_run, state_blob in rows:
        fire_at = dt.datetime.fromtimestamp(next_run, dt.UTC) if next_run is not None else None
        entry: dict[str, Any] = {"id": job_id, "next_fire_time": fire_at, "next_session": None,
                                 "func": None, "trigger": None}
        try:
            state = pickle.loads(state_blob)  # our own file: the trigger class and plain values
            entry["func"] = state["func"]
            entry["trigger"] = str(state["trigger"])
            if fire_at is not None and isinstance(state["trigger"], CycleTrigger):
                entry["next_session"] = state["trigger"].session_at(fire_at)
        except Exception as exc:  # noqa: BLE001 - another version's job: still show its time
            entry["trigger"] = f"unreadable ({_first_line(exc)})"
        jobs.append(entry)
    return jobs
