"""Trading days of the New York Stock Exchange (XNYS), from ``exchange-calendars``."""

from __future__ import annotations

import datetime as dt
import functools
import warnings

import exchange_calendars as xcals
import pandas as pd

__all__ = ["sessions", "last_completed_session", "period_ends", "shift_sessions"]

_FIRST = "1985-01-02"


@functools.cache
def _calendar() -> xcals.ExchangeCalendar:
    with warnings.catch_warnings():
        # exchange-calendars 4.x trips a pandas 3 deprecation inside its constructor
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return xcals.get_calendar("XNYS", start=_FIRST)


def _naive(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(index)
    return index.tz_localize(None) if index.tz is not None else index


def sessions(start: dt.date | str, end: dt.date | str) -> pd.DatetimeIndex:
    """XNYS sessions in [start, end] as tz-naive midnight timestamps."""
    cal = _calendar()
    lo = max(pd.Timestamp(start), cal.first_session)
    hi = min(pd.Timestamp(end), cal.last_session)
    if lo > hi:
        return pd.DatetimeIndex([], dtype="datetime64[ns]")
    return _naive(cal.sessions_in_range(lo, hi)).as_unit("ns")


def shift_sessions(date: dt.date | str, count: int) -> pd.Timestamp:
    """The session ``count`` sessions before (negative) or after ``date``'s session."""
    cal = _calendar()
    ts = pd.Timestamp(date)
    ts = max(min(ts, cal.last_session), cal.first_session)
    anchor = cal.date_to_session(ts, direction="previous" if count < 0 else "next")
    idx = cal.sessions.get_loc(anchor) + count
    idx = max(0, min(idx, len(cal.sessions) - 1))
    return pd.Timestamp(cal.sessions[idx]).tz_localize(None)


def last_completed_session(now: dt.datetime | None = None) -> pd.Timestamp:
    """The latest session whose close has passed at ``now`` (UTC; default: the clock)."""
    cal = _calendar()
    now_ts = pd.Timestamp(now or dt.datetime.now(dt.UTC))
    now_ts = now_ts.tz_localize("UTC") if now_ts.tzinfo is None else now_ts.tz_convert("UTC")
    today = now_ts.tz_convert(None).normalize()
    session = cal.date_to_session(min(today, cal.last_session), direction="previous")
    if cal.session_close(session) > now_ts:
        session = cal.previous_session(session)
    return pd.Timestamp(session).tz_localize(None)


def period_ends(index: pd.DatetimeIndex, frequency: str) -> pd.DatetimeIndex:
    """The last date of each week or month in ``index`` (all of it for ``daily``).

    The last period is kept only if it is complete: its last session in the exchange calendar
    is in ``index``, so a monthly schedule never trades on a month-to-date stub.
    """
    if frequency == "daily" or len(index) == 0:
        return index
    code = {"weekly": "W-FRI", "monthly": "M"}[frequency]
    periods = index.to_period(code)
    is_last = periods[1:] != periods[:-1]
    ends = index[:-1][is_last]
    last = index[-1]
    period_last_session = sessions(last, periods[-1].end_time.normalize())
    if len(period_last_session) and period_last_session[-1] == last:
        ends = ends.append(pd.DatetimeIndex([last]))
    return ends
