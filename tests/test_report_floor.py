"""Idleness against each VM's own floor, reasons that name the limit, spans, data quality, upsize.

Constructed series, each shaped like what a real fleet shows: a steady
background of agents and NTP, page-cache drift, a nightly backup, one
burst in two weeks, a stuck exporter, a resize, a VM pinned at its size.
"""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from test_report_stats import DAY, T0, run, series, write_records

from vmstats.protocol import Record
from vmstats.report import load, runs, stats
from vmstats.report.discover import discover
from vmstats.report.prices import PriceBook
from vmstats.report.settings import SETTINGS, Policy

MINUTES = 14 * 1440
TS = T0 + 60 * np.arange(MINUTES)
MINUTE_OF_DAY = (TS // 60) % 1440
RNG = np.random.default_rng(19)


def noisy(level, spread, n=MINUTES):
    """A steady background: a level with lognormal jitter (never identical minute to minute)."""
    return level * RNG.lognormal(0.0, spread, n)


def background(**kw):
    """CPU ~2%, memory 40%, disk ~20 kB/s of log writes, network ~3 kB/s of agents and NTP."""
    values = {
        "cpu": np.round(2.0 + RNG.gamma(2.0, 0.25, MINUTES), 1),
        "mem": np.round(40 + RNG.random(MINUTES), 1),
        "disk": noisy(20e3, 0.3),
        "net": noisy(3e3, 0.3),
    }
    values.update(kw)
    return values


def add(data, fleet, vm, expected, values, ts=TS, **size):
    write_records(data, series(vm, ts, values["cpu"], values["mem"], values["disk"], values["net"], **size))
    fleet[vm] = expected


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    data = tmp_path_factory.mktemp("floor") / "data"
    fleet = {}
    add(data, fleet, "background", "reclaim", background(), vcpus=4, mem_mb=8192)

    backup = (MINUTE_OF_DAY >= 120) & (MINUTE_OF_DAY < 140)  # 02:00-02:20 every night
    quiet = background()
    with_backup = dict(
        quiet,
        disk=np.where(backup, noisy(8e6, 0.1), quiet["disk"]),
        net=np.where(backup, noisy(5e6, 0.1), quiet["net"]),
    )
    add(data, fleet, "nightly-backup", "not-reclaim", with_backup, vcpus=4, mem_mb=8192)

    # Page cache: memory creeps up 12 points a day and is dropped at 04:00; CPU/disk/net at rest.
    drift = 35 + 12 * (((TS - 4 * 3600) % DAY) / DAY) + RNG.random(MINUTES)
    add(data, fleet, "page-cache", "reclaim", background(mem=np.round(drift, 1)), vcpus=2, mem_mb=4096)

    burst = background()
    start = 9 * 1440 + 600  # day 9, 10:00: thirty minutes at 80% in fourteen days
    burst["cpu"][start : start + 30] = 80.0
    add(data, fleet, "one-burst", "not-reclaim", burst, vcpus=4, mem_mb=8192)

    midnight = background()
    start = 6 * 1440 - 15  # 23:45 to 00:15: half the stretch on each day
    midnight["cpu"][start : start + 30] = 80.0
    add(data, fleet, "burst-at-midnight", "not-reclaim", midnight, vcpus=4, mem_mb=8192)

    # Work that moves between metrics: on day 4 from 15:00, a job computes one minute and sends
    # the next, for 30 minutes.  No metric holds it alone (each one's 30-minute level is its
    # background) and 15 minutes in 14 days is far below any p99: only the mix sees it.  The
    # same for 25 minutes is no stretch of work.
    for vm, minutes, expected in (("work-moving", 30, "not-reclaim"), ("work-moving-25-min", 25, "reclaim")):
        moving = background()
        start = 4 * 1440 + 900
        moving["cpu"][start : start + minutes : 2] = 40.0
        moving["net"][start + 1 : start + minutes : 2] = 2e6
        add(data, fleet, vm, expected, moving, vcpus=4, mem_mb=8192)

    add(data, fleet, "net-service", "not-reclaim", background(net=noisy(30e3, 0.2)), vcpus=2, mem_mb=4096)

    late = TS >= TS[-1] - DAY + 60
    young = {k: v[late] for k, v in background().items()}
    add(data, fleet, "one-day", "insufficient-data", young, ts=TS[late], vcpus=2, mem_mb=4096)

    # An exporter stuck on its last values for ten days, then moving again.
    frozen = background()
    for name, value in (("cpu", 12.0), ("mem", 55.0), ("disk", 4e5), ("net", 2e5)):
        frozen[name][2 * 1440 : 12 * 1440] = value
    add(data, fleet, "frozen", "any", frozen, vcpus=8, mem_mb=32768)

    # Memory that reads 0 (a broken exporter) except one spike, on a VM that does work.
    zero = background(cpu=np.round(20 + 5 * RNG.random(MINUTES), 1), net=noisy(200e3, 0.2))
    zero["mem"] = np.zeros(MINUTES)
    zero["mem"][5000] = 90.0
    add(data, fleet, "memory-zero", "any", zero, vcpus=8, mem_mb=32768)

    # Resized from 8 to 2 vCPUs on day 5 at noon: judged on the 2-vCPU days only.
    resize = 5 * 1440 + 720
    busy = background(
        cpu=np.round(np.where(np.arange(MINUTES) < resize, 10.0, 40.0) + RNG.random(MINUTES), 1)
    )
    busy["net"] = noisy(300e3, 0.2)
    before = series("resized", TS[:resize], busy["cpu"], busy["mem"], busy["disk"], busy["net"], 8, 16384)
    after = series(
        "resized",
        TS[resize:],
        busy["cpu"][resize:],
        busy["mem"][resize:],
        busy["disk"][resize:],
        busy["net"][resize:],
        2,
        16384,
    )
    write_records(data, before + after)
    fleet["resized"] = "keep"

    # Sizes that move late in the window: a balloon driver's small steps (4096 -> 4300 -> 4450 MB)
    # are drift, judged on the whole window; a doubling is a resize, judged since, which is one
    # day: too short for a verdict.  Whether the VM worked does not depend on its memory, so an
    # idle VM idle on both sides of a memory resize is reclaimed on the whole window; one that
    # worked before it, or whose vCPUs changed (its CPU share changed meaning), waits.
    before_resize = background()
    before_resize["cpu"][3 * 1440 + 600 : 3 * 1440 + 720] = 80.0  # two hours of work on day 3
    for vm, vcpus, sizes, values, expected in (
        ("memory-drift", (2, 2, 2), (4096, 4300, 4450), background(), "reclaim"),
        ("memory-resized", (2, 2, 2), (4096, 4096, 8192), background(), "reclaim"),
        ("memory-resized-worked", (2, 2, 2), (4096, 4096, 8192), before_resize, "insufficient-data"),
        ("vcpus-resized", (2, 2, 4), (4096, 4096, 4096), background(), "insufficient-data"),
    ):
        cuts = [0, 11 * 1440 + 600, 12 * 1440 + 600, MINUTES]
        records = []
        for a, b, cpus, mem_mb in zip(cuts[:-1], cuts[1:], vcpus, sizes, strict=True):
            part = (values[k][a:b] for k in ("cpu", "mem", "disk", "net"))
            records += series(vm, TS[a:b], *part, cpus, mem_mb)
        write_records(data, records)
        fleet[vm] = expected

    pinned = background(cpu=np.round(np.clip(93 + 3 * RNG.standard_normal(MINUTES), 0, 100), 1))
    pinned["net"] = noisy(500e3, 0.2)
    add(data, fleet, "pinned", "upsize", pinned, vcpus=4, mem_mb=8192)

    # Same use, sizes 1.99 GB and 2.00 GB: one shape.
    for vm, mem_mb in (("shape-1.99", 2038), ("shape-2.00", 2048)):
        use = background(cpu=np.round(30 + 5 * RNG.random(MINUTES), 1), net=noisy(200e3, 0.2))
        use["mem"] = np.round(30 + RNG.random(MINUTES), 1)
        add(data, fleet, vm, "any", use, vcpus=4, mem_mb=mem_mb)

    # Impossible readings: a network rate beyond any NIC, an agent peak below the minute's CPU.
    broken = background()
    broken["net"][700] = 5e12
    write_records(
        data,
        series(
            "impossible",
            TS,
            broken["cpu"],
            broken["mem"],
            broken["disk"],
            broken["net"],
            vcpus=2,
            mem_mb=4096,
            cpu_max=np.maximum(broken["cpu"] - 1.0, 0.0),
        ),
    )
    fleet["impossible"] = "any"

    report, rows = run([data])
    return data, fleet, report, rows


def test_background_and_page_cache_are_idle_work_is_not(judged):
    _data, fleet, _report, rows = judged
    for vm, expected in fleet.items():
        got = rows[vm]["category"]
        if expected == "not-reclaim":
            assert got != "reclaim", (vm, rows[vm]["reason"])
        elif expected != "any":
            assert got == expected, (vm, rows[vm]["reason"])
    # The fixed limits of before (net 2 kB/s at p99, memory swing 10 points) called these busy.
    assert rows["background"]["net_p95"] > 2048
    assert rows["page-cache"]["mem_p95"] - rows["page-cache"]["cpu_p50"] > 10
    assert "memory alone is not work" in rows["page-cache"]["reason"]


def test_every_vm_not_reclaimed_names_the_limit_and_by_how_much(judged):
    _data, _fleet, _report, rows = judged
    for row in rows.values():
        if row["category"] == "reclaim":
            assert row["blocked_by"] == "" and "blocked_by" not in row["evidence"]
        else:
            assert row["blocked_by"], row["vm"]
    backup = rows["nightly-backup"]
    assert backup["blocked_by"].startswith(("disk p99", "net p99")), backup["blocked_by"]
    assert "not idle: " + backup["blocked_by"] in backup["reason"]
    burst = rows["one-burst"]["evidence"]["blocked_by"]
    assert (burst["metric"], burst["check"]) == ("cpu", "run") and burst["value"] == pytest.approx(80.0)
    assert burst["over"] == pytest.approx(80.0 / burst["limit"], abs=0.01)
    assert rows["one-burst"]["blocked_by"].startswith("CPU held 30 min 80.0% above")
    # Half the stretch before midnight, half after: still one stretch.
    assert rows["burst-at-midnight"]["evidence"]["blocked_by"]["check"] == "run"
    moving = rows["work-moving"]
    assert moving["evidence"]["blocked_by"]["metric"] == "mix", moving["blocked_by"]
    # Every minute of the stretch has a metric at 8x its idle limit (CPU 40% / 5%) or more.
    assert moving["evidence"]["blocked_by"]["value"] == pytest.approx(8.0)
    text = "work across CPU, disk and net held 30 min at 8.00x the idle limits"
    assert moving["blocked_by"].startswith(text)
    assert "work across CPU, disk and net held 30 min" in rows["work-moving-25-min"]["reason"]
    service = rows["net-service"]["evidence"]["blocked_by"]
    assert (service["metric"], service["check"]) == ("net", "floor") and service["over"] > 2
    assert rows["one-day"]["blocked_by"] == "span 1.0 of 6 days"
    assert "observed 1.0 days" in rows["one-day"]["reason"]


def test_data_quality_flags_cap_confidence(judged):
    _data, _fleet, report, rows = judged
    frozen = rows["frozen"]
    assert frozen["data_quality"].startswith("frozen: identical readings for 240 h")
    zero = rows["memory-zero"]
    assert "memory stuck at 0 in 100% of minutes" in zero["data_quality"]
    # Its one spike to 90% says nothing of the memory it needs: its memory is not cut.
    if zero["category"] == "downsize":
        assert zero["recommended_mem_gb"] >= 32
    flags = rows["impossible"]["data_quality"]
    assert "impossible network rate 5000.0 GB/s" in flags and "impossible: CPU peak" in flags
    for row in (frozen, zero, rows["resized"], rows["impossible"]):
        assert row["confidence"] <= 0.39 and row["confidence_label"] == "low"
        assert row["evidence"]["data_quality"]
    assert not rows["background"]["data_quality"] and rows["background"]["confidence"] > 0.39
    assert report.meta["totals"]["data_quality_vms"] == 8


def test_memory_that_drifts_is_not_a_resize(judged):
    _data, _fleet, _report, rows = judged
    drift, resized = rows["memory-drift"], rows["memory-resized"]
    assert drift["category"] == "reclaim" and drift["span_days"] > 13
    assert drift["data_quality"] == "size changed on 2 days (floating): judged at its last size"
    assert drift["mem_gb"] == pytest.approx(4450 / 1024, abs=0.01)
    # Judged on the whole window: idle before and after; flagged, so its confidence is capped.
    assert resized["span_days"] > 13 and resized["blocked_by"] == ""
    assert resized["data_quality"] == (
        "memory resized on 2026-01-14: idle before and after, judged on the whole window"
    )
    assert resized["confidence_label"] == "low" and resized["mem_gb"] == 8.0
    assert resized["monthly_saving"] == resized["monthly_cost"] > 0
    # Work before the resize is still work; a vCPU resize changes what its CPU share means.
    for vm in ("memory-resized-worked", "vcpus-resized"):
        row = rows[vm]
        assert row["blocked_by"] == "span 1.0 of 6 days", (vm, row["reason"])
        assert row["data_quality"].startswith("resized in the window: judged since 2026-01-14")


def test_a_resized_vm_is_judged_since_its_resize(judged):
    _data, _fleet, _report, rows = judged
    row = rows["resized"]
    assert row["vcpus"] == 2 and "resized in the window: judged since 2026-01-07" in row["data_quality"]
    # Judged on the days after the resize: 40% of 2 vCPUs, not a mix with the 10% of 8 vCPUs.
    assert row["cpu_p50"] > 39 and row["coverage"] > 0.99
    assert row["span_days"] == pytest.approx(8.0, abs=0.01)
    assert row["category"] == "keep"


def test_upsize_costs_extra_outside_the_savings_and_ranks_after_them(judged):
    _data, _fleet, report, rows = judged
    pinned = rows["pinned"]
    assert pinned["cpu_p95"] >= 95
    # One step up the price book's sizes in vCPUs (its cheapest 8-vCPU size), memory no less.
    assert pinned["recommended_vcpus"] == 8 and pinned["recommended_mem_gb"] >= 8
    extra = PriceBook.load(None).monthly(8, pinned["recommended_mem_gb"]) - pinned["monthly_cost"]
    assert pinned["monthly_saving"] == pytest.approx(-extra, abs=0.01) and extra > 0
    assert pinned["recommendation"].startswith("resize up to 8 vCPU / %g GB" % pinned["recommended_mem_gb"])
    totals = report.meta["totals"]
    assert totals["upsize_extra_cost"] == pytest.approx(extra, abs=0.01)
    candidates = [r for r in report.rows if r["category"] in ("reclaim", "schedule", "downsize")]
    assert totals["monthly_saving"] == pytest.approx(sum(r["monthly_saving"] for r in candidates), abs=0.02)
    order = [r["category"] for r in report.rows]
    assert order.index("upsize") == len(candidates)


def test_sizes_within_tolerance_are_one_shape(judged):
    _data, _fleet, _report, rows = judged
    a, b = rows["shape-1.99"], rows["shape-2.00"]
    assert a["category"] == b["category"]
    assert (
        a["recommended_vcpus"] == b["recommended_vcpus"]
        and a["recommended_mem_gb"] == b["recommended_mem_gb"]
    )
    assert a["monthly_cost"] == pytest.approx(b["monthly_cost"], rel=0.02)
    assert "1.99 GB" in a["reason"] and "2 GB" in b["reason"] and "1.99 GB" not in b["reason"]


def test_csv_json_and_html_carry_blocked_by_and_data_quality(judged, tmp_path):
    data, _fleet, _report, rows = judged
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "vmstats", "report", str(data), "-o", str(out), "--no-cache"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "8 VMs with doubtful data" in result.stdout
    assert "more a month for 1 VM near its size (not in the saving)" in result.stdout, result.stdout
    with open(out / "report.csv", newline="") as handle:
        table = {row["vm"]: row for row in csv.DictReader(handle)}
    assert table["net-service"]["blocked_by"] == rows["net-service"]["blocked_by"]
    assert table["frozen"]["data_quality"] == rows["frozen"]["data_quality"]
    document = json.loads((out / "report.json").read_text())
    by_vm = {v["vm"]: v for v in document["vms"]}
    assert by_vm["one-burst"]["evidence"]["blocked_by"]["check"] == "run"
    assert by_vm["memory-zero"]["data_quality"].startswith("memory stuck at 0")
    page = (out / "report.html").read_text()
    assert "identical readings for 240 h" in page


def test_a_fleet_one_day_old_is_too_young_to_judge(tmp_path):
    late = TS >= TS[-1] - DAY + 60
    values = {k: v[late] for k, v in background().items()}
    write_records(
        tmp_path, series("new", TS[late], values["cpu"], values["mem"], values["disk"], values["net"])
    )
    report, rows = run([tmp_path])
    assert rows["new"]["category"] == "insufficient-data" and rows["new"]["coverage"] == 1.0
    assert report.meta["too_young"].startswith("the fleet is too young to judge")
    # Older logs outside the window count: a VM seen for a month is not young in a 1-day window.
    report, rows = run([tmp_path], policy=Policy.load(None, {"days": 1}))
    assert rows["new"]["span_days"] == pytest.approx(1.0, abs=0.01)


def _brute_run_level(ts, values):
    """Highest level held for 30 consecutive minutes: every stretch tried, no cleverness."""
    minutes = ts // 60
    best = 0.0
    for i in range(len(ts) - 29):
        if minutes[i + 29] - minutes[i] == 29:
            best = max(best, float(np.min(values[i : i + 30])))
    return best


def test_run_aggregates_merge_to_the_brute_force_level(tmp_path):
    """Per-day runs and midnight edges, merged over the window, equal a brute-force scan."""
    ts = T0 + 60 * np.arange(3 * 1440)
    rng = np.random.default_rng(7)
    keep = rng.random(len(ts)) > 0.02  # a few missing minutes break stretches
    cpu = np.round(rng.random(len(ts)) * 10, 1)
    cpu[1420:1455] = 50 + np.round(rng.random(35), 1)  # across the first midnight
    cpu[2000:2029] = 90.0  # 29 minutes: not a stretch
    keep[1420:1455] = True
    net = np.round(rng.random(len(ts)) * 2e4)
    net[2500:2540:2] = 6e5  # work moving between CPU and network: a mixed stretch only
    cpu[2501:2540:2] = 60.0
    keep[2500:2540] = True
    ts, cpu, net = ts[keep], cpu[keep], net[keep]
    records = [
        Record(vm="v", ts=int(t), cpu=float(c), mem=10.0, net_rx=float(n), net_tx=0.0, disk_r=1.0, disk_w=1.0)
        for t, c, n in zip(ts, cpu, net, strict=True)
    ]
    write_records(tmp_path, records)
    units = discover([str(tmp_path)])
    table = load.load(units, None, min(d for _v, d in units), max(d for _v, d in units), workers=1)
    day = table.day - table.day.min()
    levels = stats._runs(table.data, day, table.vm_index, 1)
    merged = levels["run_cpu"][0]
    assert merged == pytest.approx(_brute_run_level(ts, cpu), abs=1e-4)
    assert merged >= 50 and runs.RUN_MINUTES == 30
    disk = np.full(len(ts), 2.0)  # read + write, bytes/s
    mix = np.max([cpu / runs.MIX_SCALES["cpu"], net / runs.MIX_SCALES["net"], disk / runs.MIX_SCALES["disk"]],
                 axis=0)
    assert levels["run_mix"][0] == pytest.approx(_brute_run_level(ts, mix), rel=1e-5)
    alone = max(levels["run_" + m][0] / runs.MIX_SCALES[m] for m in runs.RUN_METRICS)
    mixed = 60.0 / runs.MIX_SCALES["cpu"]  # the alternating stretch's CPU minutes
    assert levels["run_mix"][0] == pytest.approx(mixed) and alone < mixed


def test_the_mixed_scales_are_the_default_idle_limits():
    """At the default limits the mixed test is exact: a stretch at its level has, every minute,
    some metric at or above its own work level, and no such stretch is missed."""
    defaults = {s.name: s.default for s in SETTINGS}
    assert runs.MIX_SCALES == {m: defaults[m + "_idle"] for m in runs.RUN_METRICS}
