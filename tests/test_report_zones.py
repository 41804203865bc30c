"""Schedules in half- and quarter-hour time zones, through ``vmstats report`` and its files.

India (UTC+5:30), Nepal (UTC+5:45) and Newfoundland (UTC-3:30) are not whole hours from UTC.
A ``utc_offset_hours`` of 5.5 is used as 5.5: the schedule is found and written in that local
time, and the same stops in UTC start on the half hour.  An offset no zone has is refused.
"""

import csv
import json

import numpy as np
import pytest
from test_report_outputs import vmstats
from test_report_stats import DAY, T0, series, write_records

from vmstats.report.backtest import off_hours_mask

MINUTES = 14 * 1440
TS = T0 + 60 * np.arange(MINUTES)
NOISE = np.random.default_rng(11).random(MINUTES)


def office(offset_hours: float) -> np.ndarray:
    """Minutes of TS inside weekdays 9:00-18:00 in a zone ``offset_hours`` from UTC."""
    local = TS + int(offset_hours * 3600)
    hour, weekday = (local // 3600) % 24, ((local // DAY) + 3) % 7
    return (weekday < 5) & (hour >= 9) & (hour < 18)


@pytest.fixture(scope="module")
def zoned(tmp_path_factory):
    data = tmp_path_factory.mktemp("zones") / "data"
    records = []
    for vm, offset in (("office-india", 5.5), ("office-nepal", 5.75), ("office-newfoundland", -3.5)):
        busy = office(offset)
        records += series(vm, TS, np.round(np.where(busy, 35 + 20 * NOISE, 0.5 + NOISE), 1),
                          np.where(busy, 55.0, 25.0), np.where(busy, 8e5, 500.0),
                          np.where(busy, 4e5, 200.0), vcpus=4, mem_mb=16384)
    write_records(data, records)
    return data


def report(data, out, *args):
    result = vmstats(data, "-o", out, "--no-cache", *args)
    assert result.returncode == 0, result.stderr
    rows = {r["vm"]: r for r in csv.DictReader(open(out / "report.csv", newline="", encoding="utf-8"))}
    doc = json.loads((out / "report.json").read_text())
    return rows, {v["vm"]: v for v in doc["vms"]}


def test_a_half_hour_zone_is_used_as_given(zoned, tmp_path):
    rows, vms = report(zoned, tmp_path / "india", "--set", "utc_offset_hours=5.5")
    row, vm = rows["office-india"], vms["office-india"]
    assert row["category"] == "schedule", row["reason"]
    # Records are kept per UTC hour: 17:00-18:00 and 08:00-09:00 local each overlap a UTC hour
    # the office worked in, so the stop is 19:00-08:00 local, 13:30-02:30 in UTC.
    assert row["recommendation"] == (
        "off Mon-Fri 19:00-08:00; Sat-Sun all day (UTC+5:30) = in UTC: off "
        "Mon-Fri 00:00-02:30, 13:30-24:00; Sat-Sun all day"
    )
    assert "local time UTC+5:30 (set by policy)" in row["reason"]
    assert vm["evidence"]["utc_offset_hours"] == 5.5
    assert vm["evidence"]["off_utc"] == "off Mon-Fri 00:00-02:30, 13:30-24:00; Sat-Sun all day (UTC)"
    assert float(row["off_hours_per_week"]) == 5 * 13 + 48
    assert float(row["monthly_saving"]) == pytest.approx(float(row["monthly_cost"]) * 113 / 168, abs=0.01)
    # The backtest reads the UTC text to the half hour: as many hours as the saving counts.
    assert off_hours_mask(vm["evidence"]["off_utc"]).sum() == 113 * 4
    # The page's drill-down names the zone as people write it.
    assert '"UTC+5:30"' in (tmp_path / "india" / "report.html").read_text()


def test_quarter_and_negative_half_hour_zones(zoned, tmp_path):
    rows, _vms = report(zoned, tmp_path / "nepal", "--set", "utc_offset_hours=5.75")
    assert rows["office-nepal"]["recommendation"] == (
        "off Mon-Fri 19:00-08:00; Sat-Sun all day (UTC+5:45) = in UTC: off "
        "Mon-Fri 00:00-02:15, 13:15-24:00; Sat-Sun all day"
    )
    rows, _vms = report(zoned, tmp_path / "newfoundland", "--utc-offset-hours", "-3.5")
    assert rows["office-newfoundland"]["recommendation"] == (
        "off Mon-Fri 19:00-08:00; Sat-Sun all day (UTC-3:30) = in UTC: off "
        "Mon-Fri 00:00-11:30, 22:30-24:00; Sat-Sun all day"
    )


@pytest.mark.parametrize("value", ["5.3", "5.6", "-3.4"])
def test_an_offset_no_zone_has_is_refused(zoned, tmp_path, value):
    result = vmstats(zoned, "-o", tmp_path / "out", "--no-cache", "--set", "utc_offset_hours=" + value)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no time zone's offset" in lines[0] and "5.5 for UTC+5:30" in lines[0], lines
    assert not (tmp_path / "out" / "report.csv").exists()
