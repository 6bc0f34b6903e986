"""When paper cycles fire: XNYS actual closes plus an offset, in UTC (pure functions)."""

import datetime as dt
import subprocess
import sys

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantorch.paper.schedule import (
    cycle_times,
    cycles_between,
    due_cycle,
    fire_time,
    missed_cycles,
    next_cycle,
    split_passed,
)

UTC = dt.UTC
HALF_HOUR = dt.timedelta(minutes=30)
SIX_HOURS = dt.timedelta(hours=6)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


# ------------------------------------------------------------------------------ cycle_times


def test_a_normal_week_fires_half_an_hour_after_each_16h_close():
    cycles = cycle_times("2023-11-13", "2023-11-19")  # Mon..Sun, EST (UTC-5)
    assert [s for s, _ in cycles] == [day(f"2023-11-{d}") for d in (13, 14, 15, 16, 17)]
    assert [f for _, f in cycles] == [utc(2023, 11, d, 21, 30) for d in (13, 14, 15, 16, 17)]


def test_sessions_are_naive_midnights_and_fire_times_aware_utc():
    session, fire_at = cycle_times("2023-11-13", "2023-11-13")[0]
    assert session.tzinfo is None and session == session.normalize()
    assert fire_at.tzinfo is UTC


def test_the_day_after_thanksgiving_closes_at_13h_and_fires_at_13h30_new_york():
    cycles = dict(cycle_times("2023-11-22", "2023-11-27"))
    assert day("2023-11-23") not in cycles  # Thanksgiving
    assert cycles[day("2023-11-24")] == utc(2023, 11, 24, 18, 30)  # 13:30 New York
    assert cycles[day("2023-11-22")] == utc(2023, 11, 22, 21, 30)
    assert cycles[day("2023-11-27")] == utc(2023, 11, 27, 21, 30)


def test_christmas_eve_and_the_eve_of_independence_day_close_early():
    assert fire_time("2024-12-24") == utc(2024, 12, 24, 18, 30)  # EST
    assert fire_time("2023-07-03") == utc(2023, 7, 3, 17, 30)  # EDT


def test_holidays_have_no_cycle():
    assert cycle_times("2023-07-04", "2023-07-04") == []
    assert cycle_times("2024-12-25", "2024-12-25") == []
    assert [s for s, _ in cycle_times("2023-07-01", "2023-07-05")] == [day("2023-07-03"),
                                                                       day("2023-07-05")]
    with pytest.raises(ValueError, match="not an XNYS session"):
        fire_time("2023-07-04")


def test_march_dst_moves_the_fire_time_an_hour_earlier_in_utc():
    cycles = dict(cycle_times("2023-03-10", "2023-03-13"))  # DST starts Sunday 12 March
    assert cycles == {day("2023-03-10"): utc(2023, 3, 10, 21, 30),
                      day("2023-03-13"): utc(2023, 3, 13, 20, 30)}


def test_november_dst_moves_the_fire_time_an_hour_later_in_utc():
    cycles = dict(cycle_times("2023-11-03", "2023-11-06"))  # DST ends Sunday 5 November
    assert cycles == {day("2023-11-03"): utc(2023, 11, 3, 20, 30),
                      day("2023-11-06"): utc(2023, 11, 6, 21, 30)}


def test_the_offset_is_added_to_the_actual_close():
    assert fire_time("2023-11-24", dt.timedelta(0)) == utc(2023, 11, 24, 18, 0)
    assert fire_time("2023-11-24", dt.timedelta(hours=2)) == utc(2023, 11, 24, 20, 0)


@pytest.mark.parametrize("offset", [dt.timedelta(minutes=-1), dt.timedelta(hours=12, seconds=1)])
def test_an_offset_outside_the_overnight_gap_is_refused(offset):
    with pytest.raises(ValueError, match="offset"):
        cycle_times("2023-11-13", "2023-11-17", offset)


def test_cycles_between_is_inclusive_at_both_ends():
    fires = [f for _, f in cycles_between(utc(2023, 11, 21, 21, 30), utc(2023, 11, 24, 18, 30))]
    assert fires == [utc(2023, 11, 21, 21, 30), utc(2023, 11, 22, 21, 30),
                     utc(2023, 11, 24, 18, 30)]


# ------------------------------------------------------------------------------- next_cycle


@pytest.mark.parametrize(
    ("now", "session", "fire_at"),
    [
        # a Saturday: the Monday
        (utc(2023, 11, 25, 12, 0), "2023-11-27", utc(2023, 11, 27, 21, 30)),
        # between the early close (18:00 UTC) and its fire time: that session
        (utc(2023, 11, 24, 18, 10), "2023-11-24", utc(2023, 11, 24, 18, 30)),
        # exactly at a fire time and just after it: the next session
        (utc(2023, 11, 24, 18, 30), "2023-11-27", utc(2023, 11, 27, 21, 30)),
        (utc(2023, 11, 24, 18, 30, 0, 1), "2023-11-27", utc(2023, 11, 27, 21, 30)),
        # the morning of a session, before its close
        (utc(2023, 11, 22, 14, 0), "2023-11-22", utc(2023, 11, 22, 21, 30)),
        # after the fire time on the eve of a holiday: skips the holiday
        (utc(2023, 7, 3, 18, 0), "2023-07-05", utc(2023, 7, 5, 20, 30)),
        # late on Friday, UTC already Saturday
        (utc(2023, 11, 18, 2, 0), "2023-11-20", utc(2023, 11, 20, 21, 30)),
        # the weekend DST ends: Monday fires at the winter UTC time
        (utc(2023, 11, 4, 12, 0), "2023-11-06", utc(2023, 11, 6, 21, 30)),
    ],
)
def test_next_cycle_at_awkward_times(now, session, fire_at):
    assert next_cycle(now) == (day(session), fire_at)


def test_a_naive_now_is_utc():
    assert next_cycle(dt.datetime(2023, 11, 24, 18, 10)) == next_cycle(utc(2023, 11, 24, 18, 10))
    aware_ny = pd.Timestamp("2023-11-24 13:10", tz="America/New_York").to_pydatetime()
    assert next_cycle(aware_ny) == next_cycle(utc(2023, 11, 24, 18, 10))


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2026, 12, 31)))
def test_next_cycle_is_the_first_fire_time_after_now(now):
    session, fire_at = next_cycle(now)
    now_utc = now.replace(tzinfo=UTC)
    assert fire_at > now_utc
    assert fire_at - now_utc < dt.timedelta(days=5)
    assert [c for c in cycles_between(now_utc, fire_at) if c[1] > now_utc] == [(session, fire_at)]


# ------------------------------------------------------------------------ due and missed


def test_a_cycle_is_due_from_its_fire_time_to_the_end_of_the_grace_period():
    fire = utc(2023, 11, 24, 18, 30)
    assert due_cycle(fire - dt.timedelta(microseconds=1), HALF_HOUR, SIX_HOURS) is None
    assert due_cycle(fire, HALF_HOUR, SIX_HOURS) == day("2023-11-24")
    assert due_cycle(fire + SIX_HOURS, HALF_HOUR, SIX_HOURS) == day("2023-11-24")
    assert due_cycle(fire + SIX_HOURS + dt.timedelta(microseconds=1), HALF_HOUR, SIX_HOURS) is None


def test_nothing_is_due_between_a_close_and_its_fire_time_when_the_last_fire_is_old():
    assert due_cycle(utc(2023, 11, 24, 18, 10), HALF_HOUR, SIX_HOURS) is None
    assert due_cycle(utc(2023, 11, 25, 12, 0), HALF_HOUR, SIX_HOURS) is None  # a Saturday


def test_a_grace_longer_than_a_weekend_gives_the_latest_cycle():
    assert due_cycle(utc(2023, 11, 27, 12, 0), HALF_HOUR, dt.timedelta(days=3)) == day("2023-11-24")


def test_missed_cycles_are_those_older_than_the_grace_after_the_last_done():
    now = utc(2023, 11, 27, 12, 0)  # Monday morning, before the close
    assert missed_cycles("2023-11-21", now, HALF_HOUR, SIX_HOURS) == [day("2023-11-22"),
                                                                       day("2023-11-24")]
    assert missed_cycles("2023-11-24", now, HALF_HOUR, SIX_HOURS) == []
    assert missed_cycles("2023-11-28", now, HALF_HOUR, SIX_HOURS) == []


def test_the_due_cycle_is_never_missed():
    fire = utc(2023, 11, 24, 18, 30)
    assert missed_cycles("2023-11-21", fire + SIX_HOURS, HALF_HOUR, SIX_HOURS) == [
        day("2023-11-22")]
    assert missed_cycles("2023-11-21", fire + SIX_HOURS + dt.timedelta(seconds=1), HALF_HOUR,
                         SIX_HOURS) == [day("2023-11-22"), day("2023-11-24")]


def test_a_cycle_superseded_inside_a_long_grace_is_missed():
    now = utc(2023, 11, 27, 12, 0)
    grace = dt.timedelta(days=3)
    assert missed_cycles("2023-11-21", now, HALF_HOUR, grace) == [day("2023-11-22")]
    assert due_cycle(now, HALF_HOUR, grace) == day("2023-11-24")


def test_missed_cycles_skip_holidays():
    assert missed_cycles("2023-07-03", utc(2023, 7, 6, 12, 0), HALF_HOUR, SIX_HOURS) == [
        day("2023-07-05")]


def test_split_passed_ignores_cycles_still_to_come():
    cycles = cycle_times("2023-11-20", "2023-11-27")
    missed, due = split_passed(cycles, utc(2023, 11, 22, 22, 0), SIX_HOURS)
    assert [s for s, _ in missed] == [day("2023-11-20"), day("2023-11-21")]
    assert due == (day("2023-11-22"), utc(2023, 11, 22, 21, 30))


def test_the_schedule_module_does_not_import_apscheduler():
    code = "import sys, quantorch.paper.schedule; assert 'apscheduler' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
