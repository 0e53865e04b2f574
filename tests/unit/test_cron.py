"""Cron expressions, their ticks in a zone, and the missed-tick policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aqueue.cron import check_cron, check_timezone, fire, next_tick
from aqueue.model import ValidationError


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_five_fields_are_minutes_and_six_put_seconds_first():
    assert next_tick("*/5 * * * *", "UTC", utc(2026, 1, 1, 0, 3)) == utc(2026, 1, 1, 0, 5)
    assert next_tick("*/10 * * * * *", "UTC", utc(2026, 1, 1, 0, 0, 3)) == utc(2026, 1, 1, 0, 0, 10)


@pytest.mark.parametrize("expr", ["", "* * * *", "61 * * * *", "* * * * * * *", "nope", 5])
def test_a_bad_cron_is_refused_saying_what_is_wrong(expr):
    with pytest.raises(ValidationError, match="'cron'"):
        check_cron(expr)


@pytest.mark.parametrize("expr", ["0 0 31 11 *", "0 0 30 2 *", "0 0 0 31 4 *"])
def test_a_cron_that_never_fires_is_refused(expr):
    # croniter.is_valid takes these; a tick of one raises in croniter
    with pytest.raises(ValidationError, match="never fires"):
        check_cron(expr)


def test_a_cron_on_a_leap_day_is_taken():
    assert check_cron("0 0 29 2 *") == "0 0 29 2 *"
    assert next_tick("0 0 29 2 *", "UTC", utc(2026, 3, 1)) == utc(2028, 2, 29)


@pytest.mark.parametrize("name", ["Mars/Olympus", "America", "Etc", "x" * 300, "../UTC"])
def test_an_unknown_timezone_is_refused(name):
    # "America" is a folder of the zone database, 300 characters too long a file name:
    # both raise OSError in ZoneInfo, which must not pass for a lost connection
    with pytest.raises(ValidationError, match="not a known IANA time zone"):
        check_timezone(name)


def test_a_known_timezone_is_taken():
    assert str(check_timezone("Europe/Berlin")) == "Europe/Berlin"


def test_a_daily_tick_stays_at_local_time_across_dst():
    # Berlin: UTC+1 in winter, UTC+2 from 2026-03-29
    before = next_tick("0 3 * * *", "Europe/Berlin", utc(2026, 3, 27, 12))
    after = next_tick("0 3 * * *", "Europe/Berlin", utc(2026, 3, 30, 12))
    assert before == utc(2026, 3, 28, 2) and after == utc(2026, 3, 31, 1)


def test_a_tick_on_the_clock_runs_and_moves_to_the_next():
    due = utc(2026, 1, 1, 0, 5)
    firing = fire("*/5 * * * *", "UTC", due, due + timedelta(seconds=1), catch_up=True)
    assert firing.run == due and firing.next_at == utc(2026, 1, 1, 0, 10)
    assert not firing.missed


def test_after_downtime_one_catch_up_run_then_on_the_clock():
    due = utc(2026, 1, 1, 0, 5)
    now = utc(2026, 1, 1, 3, 7)
    firing = fire("*/5 * * * *", "UTC", due, now, catch_up=True)
    assert firing.run == due and firing.next_at == utc(2026, 1, 1, 3, 10) and firing.missed


def test_after_downtime_skip_runs_nothing_and_resumes_on_the_clock():
    firing = fire("*/5 * * * *", "UTC", utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 3, 7), False)
    assert firing.run is None and firing.next_at == utc(2026, 1, 1, 3, 10)


def test_a_tick_late_by_less_than_the_grace_still_runs_each_in_turn():
    due = utc(2026, 1, 1, 0, 0, 1)
    firing = fire("* * * * * *", "UTC", due, due + timedelta(seconds=5), catch_up=False)
    assert firing.run == due and firing.next_at == utc(2026, 1, 1, 0, 0, 2)
    assert not firing.missed
