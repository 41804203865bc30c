"""The report on real recorded workloads (Bitbrains and PlanetLab samples in tests/data/traces).

The traces are converted by the simulator's own reader and written through the
log layout, exactly what a replay through the aggregator leaves on disk.
"""

from pathlib import Path

import pytest
from test_report_stats import run

from vmstats import logstore
from vmstats.report.policy import CATEGORIES
from vmstats.report.settings import Policy
from vmstats.simulator.traces import read_trace

TRACES = Path(__file__).resolve().parent / "data" / "traces"


def convert(paths, fmt, data_dir, **options):
    vms = []
    for path in paths:
        rows = {}
        vm = None
        for record in read_trace(str(path), fmt, **options):
            vm = record.vm
            rows[record.ts] = logstore.format_tail(record)
        logstore.append_missing(str(data_dir), vm, rows)
        vms.append(vm)
    return vms


def test_bitbrains_month_gives_sane_categories(tmp_path):
    files = sorted((TRACES / "bitbrains").glob("*.csv.gz"))
    assert files, "bitbrains samples missing"
    vms = convert(files, "bitbrains", tmp_path)
    report, rows = run([tmp_path])
    assert sorted(rows) == sorted(vms)
    # The trace covers August 2013: the window is the last 14 days of data, not of today.
    assert report.meta["window"]["first_day"].startswith("2013-08")
    for row in rows.values():
        assert row["category"] in CATEGORIES
        assert row["coverage"] > 0.95 and row["days_with_data"] == 14
        assert row["monthly_cost"] > 0 and row["vcpus"] >= 1
    busy, quiet = rows["bitbrains-410"], rows["bitbrains-429"]
    assert busy["cpu_p99"] == 100.0 and busy["category"] not in ("reclaim", "downsize")
    # 429 barely uses its CPU; every day is idle by Trusted Advisor's count.
    assert quiet["cpu_p99"] < 1.0 and quiet["idle_days"] == 14
    assert quiet["category"] in ("reclaim", "keep")


def test_planetlab_day_cpu_only(tmp_path):
    files = sorted(p for p in (TRACES / "planetlab").iterdir() if p.is_file())
    assert files, "planetlab samples missing"
    vms = convert(files, "planetlab", tmp_path, fill={"mem": 40.0, "vcpus": 4, "mem_mb": 8192})
    report, rows = run([tmp_path])
    assert sorted(rows) == sorted(vms)
    # One day of data cannot show a weekly job: no verdict, and the header says why.
    assert {r["category"] for r in rows.values()} == {"insufficient-data"}
    assert all(r["blocked_by"] == "span 1.0 of 6 days" for r in rows.values())
    assert "too young" in report.meta["too_young"]
    # Told to judge one day anyway, the statistics hold: the window starts with the fleet.
    report, rows = run([tmp_path], policy=Policy.load(None, {"min_days": 0}))
    assert report.window.expected_minutes == 1440 and not report.meta["too_young"]
    for row in rows.values():
        assert row["coverage"] == pytest.approx(1.0)
        # No network or disk figures at all: missing data never proves a VM idle.
        assert row["category"] != "reclaim" and row["net_avg"] is None
        if row["category"] == "downsize":
            assert row["recommended_vcpus"] < 4 and row["monthly_saving"] > 0
    assert {r["category"] for r in rows.values()} <= {"downsize", "keep", "schedule"}
    assert any(r["category"] == "downsize" for r in rows.values())
