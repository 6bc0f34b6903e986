"""Time in quantorch, in one place: the XNYS sessions (``exchange-calendars``) and the decision
time.

A decision is taken at the close of a session, **16:00 New York** on that date, which this
module gives as a naive UTC datetime (the form every stored ``as_of`` has). A decision time sees
the bars up to its session's close, filings filed on or before that date and news published
strictly before it (see ``MarketData.truncate`` and ``toolkit.runner.cut_at``); its orders fill
at the next session.
"""

from __future__ import annotations

import datetime as dt
import functools
import warnings

import exchange_calendars as xcals
import pandas as pd

__all__ = [
    "DECISION_TIME",
    "EXCHANGE_TZ",
    "decision_time",
    "decision_times",
    "format_asof",
    "last_completed_session",
    "normalise_asof",
    "period_ends",
    "price_day",
    "sessions",
    "shift_sessions",
]

_FIRST = "1985-01-02"
#: Decisions are taken at the close: 16:00 New York on the session's date.
DECISION_TIME = dt.time(16, 0)
EXCHANGE_TZ = "America/New_York"


def decision_time(day: dt.date | pd.Timestamp) -> dt.datetime:
    """The decision time of ``day``'s session (16:00 New York) as a naive UTC datetime."""
    local = pd.Timestamp.combine(pd.Timestamp(day).date(), DECISION_TIME).tz_localize(EXCHANGE_TZ)
    return local.tz_convert("UTC").tz_localize(None).to_pydatetime()


def decision_times(days: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """:func:`decision_time` of many sessions at once (naive UTC)."""
    local = pd.DatetimeIndex(days).normalize() + pd.Timedelta(hours=DECISION_TIME.hour,
                                                               minutes=DECISION_TIME.minute)
    return local.tz_localize(EXCHANGE_TZ).tz_convert("UTC").tz_localize(None)


def normalise_asof(asof: dt.date | dt.datetime | pd.Timestamp | str) -> dt.datetime:
    """A decision time as a naive UTC datetime.

    A date (or a naive midnight) is the close of that day; an aware time is converted to UTC;
    another naive time is taken as UTC.
    """
    ts = pd.Timestamp(asof)
    if ts.tzinfo is not None:
        return ts.tz_convert("UTC").tz_localize(None).to_pydatetime()
    if ts == ts.normalize():
        return decision_time(ts)
    return ts.to_pydatetime()


def price_day(asof_utc: dt.datetime) -> pd.Timestamp:
    """The last day whose bar is known at ``asof_utc`` (the day itself once it has closed)."""
    local = pd.Timestamp(asof_utc).tz_localize("UTC").tz_convert(EXCHANGE_TZ)
    day = local.tz_localize(None).normalize()
    if pd.Timestamp(asof_utc) >= pd.Timestamp(decision_time(day)):
        return day
    return day - pd.Timedelta(days=1)


def format_asof(asof: dt.datetime) -> str:
    """A decision time for people: ``2021-03-01 (close)`` or the New York wall time."""
    local = pd.Timestamp(asof).tz_localize("UTC").tz_convert(EXCHANGE_TZ)
    if local.time() == DECISION_TIME:
        return f"{local.date()} (close)"
    return f"{local.strftime('%Y-%m-%d %H:%M')} New York"


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
