"""When the paper trader's cycles fire: pure functions of the XNYS calendar and the clock.

A session's cycle fires at its **actual close** (``exchange_calendars``' ``session_close``, so
early closes such as 13:00 New York on the day after Thanksgiving are respected, and holidays
have no cycle) plus an offset that leaves the day's bars time to arrive. Times go in as UTC
(an aware datetime, or a naive one taken as UTC) and come out as aware UTC datetimes; sessions
are tz-naive midnight timestamps, as in :mod:`quantorch.data.calendar`.

A passed cycle is **due** while ``now - fire_at <= grace`` (APScheduler's misfire rule, so a
cycle is never both due and missed) and **missed** once it is older, or once a later cycle has
fired (a coalesced scheduler runs only the latest).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import exchange_calendars as xcals
import pandas as pd

from quantorch.data import calendar

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_OFFSET",
    "MAX_OFFSET",
    "Cycle",
    "cycle_times",
    "cycles_between",
    "due_cycle",
    "fire_time",
    "missed_cycles",
    "next_cycle",
    "split_passed",
]

#: One cycle: (session, fire time in aware UTC).
Cycle = tuple[pd.Timestamp, dt.datetime]

DEFAULT_OFFSET = dt.timedelta(minutes=30)
DEFAULT_GRACE = dt.timedelta(hours=6)
#: A cycle must fire well before the next session opens (09:30 New York, at least 17.5 hours
#: after a close): its orders fill at that session.
MAX_OFFSET = dt.timedelta(hours=12)


def _xnys() -> xcals.ExchangeCalendar:
    # the cached calendar of the one time module; nothing here builds its own
    return calendar._calendar()


def _utc(moment: dt.datetime | pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(moment)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _check_offset(offset: dt.timedelta) -> pd.Timedelta:
    if not dt.timedelta(0) <= offset <= MAX_OFFSET:
        raise ValueError(
            f"cycle offset {offset} is outside [0, {MAX_OFFSET}]: a cycle fires after the close "
            "and before the next session opens"
        )
    return pd.Timedelta(offset)


def _as_cycles(closes: pd.Series, offset: pd.Timedelta) -> list[Cycle]:
    fires = closes + offset
    return [
        (pd.Timestamp(session).tz_localize(None).as_unit("ns"),
         fire.to_pydatetime().astimezone(dt.UTC))
        for session, fire in zip(closes.index, fires, strict=True)
    ]


def cycle_times(
    start: dt.date | pd.Timestamp | str,
    end: dt.date | pd.Timestamp | str,
    offset: dt.timedelta = DEFAULT_OFFSET,
) -> list[Cycle]:
    """Every XNYS session in [start, end] with its cycle's fire time (actual close + offset).

    Returns ``[(session, fire_at_utc), ...]`` in session order; holidays and weekends have
    none; an early close fires ``offset`` after that early close.
    """
    step = _check_offset(offset)
    days = calendar.sessions(start, end)
    if len(days) == 0:
        return []
    closes = _xnys().closes.loc[days[0]:days[-1]]
    return _as_cycles(closes, step)


def fire_time(session: dt.date | pd.Timestamp | str,
              offset: dt.timedelta = DEFAULT_OFFSET) -> dt.datetime:
    """The fire time of ``session``'s cycle (aware UTC); a date that is no session is refused."""
    day = pd.Timestamp(session).normalize()
    cycles = cycle_times(day, day, offset)
    if not cycles:
        raise ValueError(f"{day.date()} is not an XNYS session (a weekend or a holiday)")
    return cycles[0][1]


def cycles_between(
    lo_utc: dt.datetime | pd.Timestamp,
    hi_utc: dt.datetime | pd.Timestamp,
    offset: dt.timedelta = DEFAULT_OFFSET,
) -> list[Cycle]:
    """The cycles whose fire time lies in [lo_utc, hi_utc] (both inclusive)."""
    lo, hi = _utc(lo_utc), _utc(hi_utc)
    if lo > hi:
        return []
    # a fire time is at most MAX_OFFSET (+ a day for the date change in New York) after its
    # session's date, so two days either side covers every candidate
    first = lo.tz_convert(None).normalize() - pd.Timedelta(days=2)
    last = hi.tz_convert(None).normalize() + pd.Timedelta(days=1)
    return [c for c in cycle_times(first, last, offset) if lo <= c[1] <= hi]


def next_cycle(now_utc: dt.datetime | pd.Timestamp,
               offset: dt.timedelta = DEFAULT_OFFSET) -> Cycle:
    """The first cycle whose fire time is strictly after ``now_utc``.

    A ``now`` between a close and its fire time gives that session.
    """
    now = _utc(now_utc)
    # a weekend next to a holiday leaves at most four days without a session
    found = [c for c in cycles_between(now, now + pd.Timedelta(days=10), offset) if c[1] > now]
    if not found:
        raise ValueError(
            f"no XNYS session after {now} within the calendar (it ends "
            f"{_xnys().last_session.date()}): upgrade exchange-calendars"
        )
    return found[0]


def split_passed(
    cycles: Sequence[Cycle], now_utc: dt.datetime | pd.Timestamp, grace: dt.timedelta
) -> tuple[list[Cycle], Cycle | None]:
    """Split cycles into (missed, due) at ``now``: the latest passed cycle is due if it fired at
    most ``grace`` ago; every other passed cycle is missed. Cycles still to come are ignored."""
    now = _utc(now_utc)
    passed = sorted((c for c in cycles if c[1] <= now), key=lambda c: c[1])
    if passed and now - passed[-1][1] <= grace:
        return passed[:-1], passed[-1]
    return passed, None


def due_cycle(
    now_utc: dt.datetime | pd.Timestamp,
    offset: dt.timedelta = DEFAULT_OFFSET,
    grace: dt.timedelta = DEFAULT_GRACE,
) -> pd.Timestamp | None:
    """The session whose cycle is due at ``now`` (fired at most ``grace`` ago), else None.

    A scheduler restarting inside the grace period runs this session's cycle (the cycle is
    idempotent, so a finished one is a no-op and an interrupted one completes).
    """
    _, due = split_passed(cycles_between(_utc(now_utc) - grace, now_utc, offset), now_utc, grace)
    return due[0] if due else None


def missed_cycles(
    last_done_session: dt.date | pd.Timestamp | str,
    now_utc: dt.datetime | pd.Timestamp,
    offset: dt.timedelta = DEFAULT_OFFSET,
    grace: dt.timedelta = DEFAULT_GRACE,
) -> list[pd.Timestamp]:
    """Sessions after ``last_done_session`` whose cycle has passed and is no longer due
    (fired more than ``grace`` ago, or superseded by a later one), oldest first."""
    first = pd.Timestamp(last_done_session).normalize() + pd.Timedelta(days=1)
    now = _utc(now_utc)
    last = now.tz_convert(None).normalize()
    if first > last:
        return []
    missed, _ = split_passed(cycle_times(first, last, offset), now, grace)
    return [session for session, _ in missed]
