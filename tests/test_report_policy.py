"""Each policy rule on constructed series: exactly one category per VM, with the rule's numbers."""

import re

import numpy as np
import pytest
from test_report_stats import DAY, T0, run, series, write_records

from vmstats.report.policy import CATEGORIES
from vmstats.report.prices import PriceBook
from vmstats.report.settings import Policy, ReportError

MINUTES = 14 * 1440
TS = T0 + 60 * np.arange(MINUTES)
HOUR = (TS // 3600) % 24
WEEKDAY = ((TS // DAY) + 3) % 7  # 0 = Monday
RNG = np.random.default_rng(3)
NOISE = RNG.random(MINUTES)


def flat(value):
    return np.full(MINUTES, float(value))


def build_fleet(data):
    """One VM per rule; returns {vm: expected category}."""
    quiet_disk, quiet_net = 500 + 500 * NOISE, 200 + 200 * NOISE
    fleet = {}

    def add(vm, expected, cpu, mem, disk=quiet_disk, net=quiet_net, ts=TS, **kw):
        write_records(data, series(vm, ts, np.round(cpu, 1), np.round(mem, 1), disk, net, **kw))
        fleet[vm] = expected

    add("idle", "reclaim", 0.5 + NOISE, 30 + NOISE, vcpus=2, mem_mb=4096)
    batch = HOUR == 2
    # A nightly batch is busy at night: no schedule can switch it off then, and its job needs the size.
    add(
        "nightly-batch",
        "keep",
        np.where(batch, 85.0, 1.0),
        np.where(batch, 60.0, 30.0),
        disk=np.where(batch, 5e6, 500.0),
        net=np.where(batch, 1e6, 200.0),
        vcpus=4,
        mem_mb=8192,
    )
    office = (WEEKDAY < 5) & (HOUR >= 9) & (HOUR < 17)
    add(
        "business-hours",
        "schedule",
        np.where(office, 40 + 20 * NOISE, 1.0),
        np.where(office, 60.0, 35.0),
        disk=np.where(office, 1e6, 500.0),
        net=np.where(office, 5e5, 200.0),
        vcpus=4,
        mem_mb=16384,
    )
    # Two busy hours every morning (a job on some clock): not a schedule either (and at 80% of
    # its vCPUs, below the upsize level).
    job = (HOUR >= 7) & (HOUR < 9)
    add(
        "morning-job",
        "keep",
        np.where(job, 80.0, 1.0),
        np.where(job, 70.0, 30.0),
        disk=np.where(job, 5e6, 500.0),
        net=np.where(job, 1e6, 200.0),
        vcpus=4,
        mem_mb=8192,
    )
    # Busy every day from 8 to 20, weekends too: idle nights alone make a schedule.
    daytime = (HOUR >= 8) & (HOUR < 20)
    add(
        "daytime",
        "schedule",
        np.where(daytime, 50 + 10 * NOISE, 1.0),
        flat(40),
        disk=np.where(daytime, 1e6, 500.0),
        net=np.where(daytime, 5e5, 200.0),
        vcpus=4,
        mem_mb=8192,
    )
    # A cache: memory full, CPU quiet, serving a trickle of requests; memory per vCPU is already
    # at the ratio real shapes allow, so there is nothing to take away.
    add("memory-heavy", "keep", 3 + NOISE, 85 + 5 * NOISE, net=2e5 + 1e4 * NOISE, vcpus=2, mem_mb=16384)
    # A proxy: quiet CPU, 50 MB/s of traffic; cloud bandwidth comes with the size.
    add("network-heavy", "keep", 6 + 2 * NOISE, flat(30), net=5e7 + 1e6 * NOISE, vcpus=4, mem_mb=16384)
    # Memory-only: CPU, disk and network at their floor, memory moving every hour: memory moving
    # on its own is not work (page cache, a JVM's heap), so the VM is idle.
    add("memory-only", "reclaim", 1.0 + NOISE, 30 + 30 * (np.sin(TS / 1800.0) ** 2), vcpus=8, mem_mb=16384)
    # Network-only: a quiet CPU forwarding a steady stream.
    add("network-only", "downsize", 1.0 + NOISE, flat(30), net=8e5 + 1e5 * NOISE, vcpus=8, mem_mb=16384)
    day = (TS - T0) // DAY
    add(
        "growing",
        "keep",
        5 + 1.0 * day + NOISE,
        20 + NOISE,
        vcpus=8,
        mem_mb=32768,
        disk=flat(5e5),
        net=flat(5e5),
    )
    add(
        "oversized",
        "downsize",
        8 + 4 * NOISE,
        15 + 5 * NOISE,
        disk=flat(5e5),
        net=flat(5e5),
        vcpus=8,
        mem_mb=32768,
    )
    add("busy", "keep", 60 + 30 * NOISE, 70 + 10 * NOISE, disk=flat(5e5), net=flat(5e5), vcpus=4, mem_mb=8192)
    # Busy in random hours: no recurring off-hours, so no schedule, and not idle.
    burst = np.repeat(np.random.default_rng(5).random(14 * 24) < 0.15, 60)
    add(
        "random-bursts",
        "keep",
        np.where(burst, 70.0, 1.0),
        np.where(burst, 50.0, 30.0),
        disk=np.where(burst, 1e6, 500.0),
        net=np.where(burst, 1e5, 200.0),
        vcpus=4,
        mem_mb=8192,
    )
    early = TS < T0 + 10 * DAY
    add(
        "stopped",
        "stopped",
        flat(40)[early],
        flat(50)[early],
        disk=quiet_disk[early],
        net=quiet_net[early],
        ts=TS[early],
    )
    sparse = RNG.random(MINUTES) < 0.3
    add(
        "sparse",
        "insufficient-data",
        flat(1)[sparse],
        flat(30)[sparse],
        disk=quiet_disk[sparse],
        net=quiet_net[sparse],
        ts=TS[sparse],
    )
    return fleet


@pytest.fixture(scope="module")
def decided(tmp_path_factory):
    data = tmp_path_factory.mktemp("policy") / "data"
    expected = build_fleet(data)
    report, rows = run([data])
    return data, expected, report, rows


def test_each_rule_gives_its_category(decided):
    _data, expected, _report, rows = decided
    assert {vm: rows[vm]["category"] for vm in expected} == expected
    for row in rows.values():
        assert row["category"] in CATEGORIES
        assert 0 <= row["confidence"] <= 1 and row["reason"]


def test_evidence_and_savings(decided):
    _data, _expected, report, rows = decided
    prices = PriceBook.load(None)
    idle = rows["idle"]
    assert idle["monthly_saving"] == idle["monthly_cost"] == pytest.approx(prices.monthly(2, 4), abs=0.01)
    assert "CPU p99" in idle["reason"] and idle["confidence_label"] == "high"

    office = rows["business-hours"]
    assert office["off_hours_per_week"] == 128.0
    assert office["monthly_saving"] == pytest.approx(office["monthly_cost"] * 128 / 168, abs=0.01)
    assert office["recommendation"] == "off Mon-Fri 17:00-09:00; Sat-Sun all day (UTC)"

    night = rows["nightly-batch"]
    assert night["cpu_p99"] > 5  # the percentile sees the nightly job: not idle
    assert night["reason"].startswith("in use")
    assert rows["daytime"]["recommendation"] == "off daily 20:00-08:00 (UTC)"
    assert "bandwidth" in rows["network-heavy"]["reason"]
    assert rows["memory-heavy"]["reason"].startswith("in use")

    memory = rows["memory-only"]
    assert memory["mem_p95"] > 55 and "memory alone is not work" in memory["reason"]

    big = rows["oversized"]
    assert big["recommended_vcpus"] < 8 and big["recommended_mem_gb"] < 32
    new_cost = prices.monthly(big["recommended_vcpus"], big["recommended_mem_gb"])
    assert big["monthly_saving"] == pytest.approx(big["monthly_cost"] - new_cost, abs=0.01)

    assert "rising" in rows["growing"]["reason"] and rows["growing"]["cpu_trend"] > 5
    assert "coverage" in rows["sparse"]["reason"] and rows["sparse"]["coverage"] < 0.5
    assert rows["stopped"]["monthly_saving"] == 0

    # Totals count each VM once, in its one category.
    assert report.meta["totals"]["monthly_saving"] == pytest.approx(
        sum(r["monthly_saving"] for r in rows.values())
    )


def _local(offset_hours):
    """Hour of the day and weekday (0 = Monday) of TS in a zone ``offset_hours`` from UTC."""
    local = TS + int(offset_hours * 3600)
    return (local // 3600) % 24, ((local // DAY) + 3) % 7


def _office(offset_hours):
    hour, weekday = _local(offset_hours)
    return (weekday < 5) & (hour >= 9) & (hour < 18)


@pytest.fixture(scope="module")
def zoned(tmp_path_factory):
    """Office VMs busy weekdays 9-18 in UTC, UTC-8 and UTC+9; one in UTC with short breaks;
    one-hour and 2.75-hour (four hour slots a day) nightly jobs at several UTC hours."""
    data = tmp_path_factory.mktemp("zones") / "data"
    records = []
    hour, weekday = _local(0)
    # Weekdays 8-12 and 13-18, an evening hour 20-21: idle an hour at lunch, two before the evening.
    breaks = (weekday < 5) & (((hour >= 8) & (hour < 18) & (hour != 12)) | (hour == 20))
    for name, busy in [("office-utc", _office(0)), ("office-utc-8", _office(-8)),
                       ("office-utc9", _office(9)), ("office-breaks", breaks)]:
        records += series(
            name,
            TS,
            np.round(np.where(busy, 35 + 20 * NOISE, 0.5 + NOISE), 1),
            np.where(busy, 55.0, 25.0),
            np.where(busy, 8e5, 500.0),
            np.where(busy, 4e5, 200.0),
            vcpus=4,
            mem_mb=16384,
        )
    for start, hours in ((0, 1), (8, 1), (13, 1), (22, 1), (3.5, 2.75), (15.5, 2.75)):
        minute = (TS // 60) % 1440
        run_ = (minute - start * 60) % 1440 < hours * 60
        records += series(
            "batch-%g-%gh" % (start, hours),
            TS,
            np.round(np.where(run_, 90 + 5 * NOISE, 0.5 + NOISE), 1),
            np.where(run_, 70.0, 25.0),
            np.where(run_, 5e6, 500.0),
            np.where(run_, 1e6, 200.0),
            vcpus=8,
            mem_mb=16384,
        )
    write_records(data, records)
    return data, run([data])[1]


def test_schedule_is_found_in_each_vms_own_time_zone(zoned):
    _data, rows = zoned
    expected = {
        "office-utc": (0, "off Mon-Fri 18:00-09:00; Sat-Sun all day (UTC)"),
        "office-utc-8": (
            -8,
            "off Mon-Fri 18:00-09:00; Sat-Sun all day (UTC-8) = in UTC: off Mon 00:00-17:00; "
            "Tue-Fri 02:00-17:00; Sat 02:00-24:00; Sun all day",
        ),
        "office-utc9": (
            9,
            "off Mon-Fri 18:00-09:00; Sat-Sun all day (UTC+9) = in UTC: off Mon-Fri 09:00-24:00; "
            "Sat-Sun all day",
        ),
    }
    for vm, (zone, text) in expected.items():
        row = rows[vm]
        assert row["category"] == "schedule", (vm, row["reason"])
        # 15 idle hours on each of 5 weekdays and the whole weekend.
        assert row["off_hours_per_week"] == 5 * 15 + 48
        assert row["evidence"]["utc_offset_hours"] == zone
        assert row["evidence"]["utc_offset_source"] == "inferred"
        assert row["recommendation"] == text
        assert zone == 0 or "local time UTC%+d (found from its busy hours)" % zone in row["reason"]
        assert row["monthly_saving"] == pytest.approx(row["monthly_cost"] * 123 / 168, abs=0.01)


def test_a_schedule_offers_only_stops_worth_making(zoned):
    data, rows = zoned
    row = rows["office-breaks"]
    assert row["category"] == "schedule", row["reason"]
    # The lunch hour and the two hours before the evening job stay on: a stop of an hour or two
    # costs a shutdown and a boot for little.  The saving counts the stops offered only.
    assert row["recommendation"] == "off Mon-Fri 21:00-08:00; Sat-Sun all day (UTC)"
    assert row["off_hours_per_week"] == 5 * 11 + 48
    assert row["monthly_saving"] == pytest.approx(row["monthly_cost"] * 103 / 168, abs=0.01)
    # At 1 hour every steadily idle hour is offered.
    _report, every = run([data], policy=Policy.load(None, {"schedule_min_off_run": 1}))
    assert every["office-breaks"]["recommendation"] == (
        "off Mon-Fri 12:00-13:00, 18:00-20:00, 21:00-08:00; Sat-Sun all day (UTC)"
    )
    assert every["office-breaks"]["off_hours_per_week"] == 5 * 14 + 48
    for wrong in (0, 25):
        with pytest.raises(ReportError, match="schedule_min_off_run is whole hours"):
            Policy.load(None, {"schedule_min_off_run": wrong})


def test_the_schedules_first_test_drops_only_vms_no_offset_fits():
    """The offset-free first test of _schedule against folding every offset, on random weeks:
    office hours in random zones with noise, unobserved hours, jobs and random busy hours."""
    from vmstats.report import policy as policy_mod

    rng = np.random.default_rng(7)
    base = Policy.load(None).base
    found = 0
    for trial in range(400):
        settings = dict(base, schedule_min_off_hours=float(rng.choice([20, 40, 100])),
                        schedule_min_on_hours=float(rng.choice([5, 25, 60])))
        how = np.arange(168)
        zone = int(rng.integers(-12, 15))
        local = (how + zone) % 168
        office = ((local // 24) < 5) & ((local % 24) >= 9) & ((local % 24) < 9 + rng.integers(4, 12))
        busy = np.where(office, 2.0, 0.0)
        busy[rng.random(168) < rng.choice([0.0, 0.02, 0.2, 0.6])] = rng.choice([1.0, 2.0])
        hours = np.full(168, 2.0)
        hours[rng.random(168) < rng.choice([0.0, 0.1, 0.5])] = 0.0
        busy = np.minimum(busy, hours)
        vm = {"how_hours": hours.tolist(), "how_busy": busy.tolist()}
        quick = policy_mod._schedule(vm, settings)
        full = policy_mod._folded_schedule(hours, busy, settings)
        assert (quick is None) == (full is None), trial
        if full is not None:
            found += 1
            assert (quick.offset, quick.off, quick.irregular) == (full.offset, full.off, full.irregular)
            assert (quick.idle == full.idle).all() and (quick.utc_idle == full.utc_idle).all()
    assert 40 < found < 360  # both verdicts well represented


def test_nightly_jobs_at_any_hour_are_kept(zoned):
    _data, rows = zoned
    batches = [vm for vm in rows if vm.startswith("batch-")]
    assert len(batches) == 6
    for vm in batches:
        # Some offset would make any daily job look like a short working day: the job is
        # still a job, and the VM keeps its size and its hours.
        # A job pinning its vCPUs (p95 above upsize_at) may be told to grow, never to shrink or stop.
        assert rows[vm]["category"] in ("keep", "upsize"), (vm, rows[vm]["reason"])
        assert rows[vm]["cpu_p99"] > 80


def test_a_set_utc_offset_is_used_as_is(zoned):
    data, _rows = zoned
    policy = Policy.load(None, {"utc_offset_hours": -8})
    _report, rows = run([data], policy=policy)
    assert rows["office-utc-8"]["category"] == "schedule"
    assert rows["office-utc-8"]["evidence"]["utc_offset_source"] == "policy"
    # In UTC+9's local night the UTC-8 office is at work, and neither night nor weekend is free.
    _report, rows = run([data], policy=Policy.load(None, {"utc_offset_hours": 9}))
    assert rows["office-utc-8"]["category"] == "keep"
    assert rows["office-utc9"]["category"] == "schedule"
    with pytest.raises(ReportError, match="-12 to 14"):
        Policy.load(None, {"utc_offset_hours": 15})
    assert Policy.load(None, {"utc_offset_hours": "auto"}).base["utc_offset_hours"] is None


def test_ranking_puts_most_money_with_most_confidence_first(decided):
    _data, _expected, report, _rows = decided
    ranked = [r for r in report.rows if r["category"] in ("reclaim", "schedule", "downsize")]
    assert ranked == report.rows[: len(ranked)]
    keys = [r["monthly_saving"] * r["confidence"] for r in ranked]
    assert keys == sorted(keys, reverse=True)
    assert [r["rank"] for r in report.rows] == list(range(1, len(report.rows) + 1))


def test_group_overrides_and_flags(decided, tmp_path):
    data, _expected, _report, _rows = decided
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(
        "cpu_idle = 5.0\n"
        '[[groups]]\nname = "batch"\nmatch = ["nightly-*", "10.200.0.0/16"]\nidle_percentile = 95\n'
        "cpu_idle = 90\ndisk_idle = 1e7\nnet_idle = 2e6\n"
    )
    _report, rows = run([data], policy=Policy.load(str(policy_file)))
    # This group's own rule calls CPU below 90% and heavy I/O idle: its nightly job is no work.
    assert rows["nightly-batch"]["category"] == "reclaim" and rows["nightly-batch"]["group"] == "batch"
    assert rows["idle"]["group"] == "" and rows["idle"]["category"] == "reclaim"
    # A CLI flag beats the file.
    _report, rows = run([data], policy=Policy.load(str(policy_file), {"cpu_floor_max": 0.5}))
    assert rows["idle"]["category"] != "reclaim"


def test_bad_policy_files_are_readable_errors(tmp_path):
    cases = {
        "unknown.toml": ("cpu_idel = 3\n", "unknown setting 'cpu_idel'"),
        "type.toml": ('cpu_idle = "lots"\n', "not a number"),
        "syntax.toml": ("cpu_idle = = 3\n", "not valid TOML"),
        "group.toml": ("[[groups]]\ncpu_idle = 3\n", "needs a 'match'"),
        "cidr.toml": ('[[groups]]\nmatch = "10.0.0.0/33"\n', "not a CIDR"),
        "share.toml": ("coverage_min = 3\n", "between 0 and 1"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ReportError, match=message):
            Policy.load(str(path))


def test_groups_and_exclusions_select_by_pattern_or_cidr(tmp_path):
    import datetime

    from vmstats.report import exclusions

    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(
        '[[groups]]\nname = "lab"\nmatch = "10.200.0.0/16"\ncpu_idle = 1.5\n'
        '[[groups]]\nname = "web"\nmatch = ["web-*", "10.0.0.0/8"]\ncpu_idle = 7\n'
    )
    policy = Policy.load(str(policy_file), {"cpu_idle": 3})
    assert policy.for_vm("10.200.3.4") == ("lab", dict(policy.base, cpu_idle=1.5))  # first match wins
    assert policy.for_vm("10.9.0.1")[0] == "web" and policy.for_vm("web-12")[1]["cpu_idle"] == 7
    assert policy.for_vm("db-1") == ("", policy.base) and policy.base["cpu_idle"] == 3
    path = tmp_path / "exclusions.toml"
    path.write_text(
        '[[exclude]]\nvm = "192.168.0.0/24"\nreason = "lab"\n'
        '[[exclude]]\nvm = "db-*"\nreason = "old"\nexpires = 2026-01-31\n'
    )
    # Judged at a window's end: a record of 2026-02-01 00:00 UTC, then of 2026-01-31 23:59.
    end = int(datetime.datetime(2026, 2, 1, tzinfo=datetime.UTC).timestamp())
    active, expired = exclusions.split(exclusions.load(str(path)), end)
    assert exclusions.find(active, "192.168.0.77").reason == "lab"
    assert exclusions.find(active, "192.168.1.1") is None and exclusions.find(active, "db-1") is None
    assert [e.selector for e in expired] == ["db-*"]
    active, expired = exclusions.split(exclusions.load(str(path)), end - 60)  # the expiry day still counts
    assert exclusions.find(active, "db-1").reason == "old" and expired == []


def test_shipped_examples_load_and_document_every_setting():
    from pathlib import Path

    from vmstats.report.settings import SETTINGS

    root = Path(__file__).resolve().parent.parent
    policy = Policy.load(str(root / "vmstats/report/examples/policy.toml"))
    assert [g.name for g in policy.groups] == ["batch", "office"]
    book = PriceBook.load(None)
    assert book.is_example and book.sizes and book.monthly(1, 2) == pytest.approx(0.0318 * 730)
    doc = (root / "docs/POLICY.md").read_text()
    # Each setting's row gives its default ("auto" for none, a ladder as its rungs).
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", doc, re.M))
    for setting in SETTINGS:
        assert setting.name in rows, setting.name
        said = [float(v) for v in rows[setting.name].split(", ")] if rows[setting.name] != "auto" else None
        default = setting.default if isinstance(setting.default, list) or setting.default is None else [
            setting.default]
        assert said == default, (setting.name, rows[setting.name], setting.default)
