"""Per-VM statistics of the report against an independent numpy computation.

Also home of the helpers the other report tests use to write logs through
the real layout module (logstore.format_tail / append_missing).
"""

from pathlib import Path

import numpy as np
import pytest

from vmstats import logstore
from vmstats.protocol import Record
from vmstats.report.build import build
from vmstats.report.prices import PriceBook
from vmstats.report.settings import Policy

DAY = 86400
T0 = 1767225600  # 2026-01-01T00:00:00Z, a Thursday


def write_records(data_dir, records):
    """Append Records to their VMs' logs the way the flusher does (one batch per VM)."""
    by_vm = {}
    for record in records:
        by_vm.setdefault(record.vm, {})[record.ts] = logstore.format_tail(record)
    for vm, rows in by_vm.items():
        logstore.append_missing(str(data_dir), vm, rows)


def series(vm, ts, cpu, mem, disk=None, net=None, vcpus=2, mem_mb=4096, cpu_max=None):
    """Records of one VM from arrays (disk/net split in halves between read/write, rx/tx).

    Values past the length of ``ts`` are ignored; plain lists, not numpy scalars, keep
    building two weeks of records quick.
    """
    count = len(ts)

    def halves(values):
        if values is None:
            return [None] * count
        return [None if x != x else x / 2 for x in np.asarray(values, dtype=float)[:count].tolist()]

    disk_half, net_half = halves(disk), halves(net)
    peaks = [None] * count if cpu_max is None else np.asarray(cpu_max, dtype=float)[:count].tolist()
    return [
        Record(
            vm=vm,
            ts=t,
            cpu=c,
            mem=m,
            cpu_max=p,
            disk_r=d,
            disk_w=d,
            net_rx=n,
            net_tx=n,
            vcpus=vcpus,
            mem_mb=mem_mb,
        )
        for t, c, m, p, d, n in zip(
            np.asarray(ts).astype(np.int64).tolist(),
            np.asarray(cpu, dtype=float)[:count].tolist(),
            np.asarray(mem, dtype=float)[:count].tolist(),
            peaks,
            disk_half,
            net_half,
            strict=True,
        )
    ]


def run(data_dirs, cache_dir=None, policy=None, prices=None, **kwargs):
    report = build(
        [str(d) for d in data_dirs],
        policy or Policy.load(),
        prices or PriceBook.load(None),
        cache_dir=str(cache_dir) if cache_dir else None,
        workers=1,
        **kwargs,
    )
    return report, {row["vm"]: row for row in report.rows}


def nearest_rank(values, q):
    return float(np.percentile(values, q, method="inverted_cdf"))


@pytest.fixture
def fleet(tmp_path):
    """Three VMs over three days: random values, gaps, unknown disk values, a retransmit, junk lines."""
    rng = np.random.default_rng(7)
    data = tmp_path / "data"
    truth = {}
    for k, vm in enumerate(("10.0.0.1", "10.0.0.2", "web-1")):
        ts = T0 + 60 * np.arange(3 * 1440)
        ts = ts[rng.random(len(ts)) > 0.1 * k]  # gaps for two of them
        cpu = np.round(rng.gamma(2.0, 6.0, len(ts)).clip(0, 100), 1)
        mem = np.round(rng.uniform(20, 60, len(ts)), 1)
        disk = np.round(rng.lognormal(8, 2, len(ts)))
        disk[rng.random(len(ts)) < 0.05] = np.nan
        net = np.round(rng.lognormal(6, 1.5, len(ts)))
        cpu_max = np.minimum(100, cpu + 7.5)
        write_records(data, series(vm, ts, cpu, mem, disk, net, cpu_max=cpu_max, vcpus=k + 1))
        truth[vm] = dict(ts=ts, cpu=cpu, mem=mem, disk=disk, net=net, cpu_max=cpu_max)
    # A retransmit written by a later flush: the later row wins and nothing is counted twice.
    vm = "10.0.0.1"
    t = int(truth[vm]["ts"][100])
    write_records(data, series(vm, [t], [99.9], [55.5], [1.0], [1.0], cpu_max=[99.9], vcpus=1))
    truth[vm]["cpu"][100], truth[vm]["mem"][100] = 99.9, 55.5
    truth[vm]["disk"][100], truth[vm]["net"][100], truth[vm]["cpu_max"][100] = 1.0, 1.0, 99.9
    # Torn and junk lines are skipped and counted.
    path = logstore.day_path(str(data), "10.0.0.2", logstore.day_of(T0 + DAY))
    with open(path, "ab") as handle:
        handle.write(b"garbage line\n1767312000,abc,,1,,,,,,,,\n17673")
    return data, truth


def test_statistics_match_numpy(fleet):
    data, truth = fleet
    report, rows = run([data])
    start = min(int(t["ts"].min()) for t in truth.values())
    end = max(int(t["ts"].max()) for t in truth.values())
    expected_minutes = (end - start) // 60 + 1
    assert report.window.start_ts == start and report.window.end_ts == end
    for vm, t in truth.items():
        row = rows[vm]
        assert row["records"] == len(t["ts"])
        assert row["coverage"] == pytest.approx(len(t["ts"]) / expected_minutes, abs=1e-4)
        assert row["cpu_avg"] == pytest.approx(t["cpu"].mean(), abs=0.006)
        for q in (50, 95, 99):
            assert row["cpu_p%d" % q] == pytest.approx(nearest_rank(t["cpu"], q), abs=0.051)
        assert row["cpu_max"] == pytest.approx(t["cpu"].max())
        assert row["cpu_peak"] == pytest.approx(t["cpu_max"].max())
        assert row["mem_avg"] == pytest.approx(t["mem"].mean(), abs=0.006)
        assert row["mem_p95"] == pytest.approx(nearest_rank(t["mem"], 95), abs=0.051)
        assert row["mem_max"] == pytest.approx(t["mem"].max())
        disk = t["disk"][~np.isnan(t["disk"])]
        assert row["disk_avg"] == pytest.approx(disk.mean(), rel=1e-6, abs=0.06)
        assert row["disk_p95"] == pytest.approx(nearest_rank(disk, 95), rel=0.06)
        assert row["net_avg"] == pytest.approx(t["net"].mean(), rel=1e-6, abs=0.06)
        assert row["net_p95"] == pytest.approx(nearest_rank(t["net"], 95), rel=0.06)
        assert row["idle_share"] == pytest.approx((t["cpu"] < 5.0).mean(), abs=1e-4)
        assert row["days_with_data"] == 3
    assert rows["10.0.0.2"]["bad_lines"] == 3 and rows["10.0.0.1"]["bad_lines"] == 0
    assert report.meta["totals"]["bad_lines"] == 3


def test_hour_of_week_profile_and_trend(tmp_path):
    ts = T0 + 60 * np.arange(14 * 1440)
    day = (ts - T0) // DAY
    cpu = 10.0 + 2.0 * day  # daily p95 rises 2 points a day: 14 a week
    write_records(tmp_path, series("10.9.0.1", ts, cpu, np.full(len(ts), 30.0)))
    _report, rows = run([tmp_path])
    row = rows["10.9.0.1"]
    assert row["cpu_trend"] == pytest.approx(14.0, abs=0.01)
    assert row["mem_trend"] == pytest.approx(0.0, abs=0.01)
    profile = row["hour_of_week_cpu"]
    assert len(profile) == 168
    # Monday 00:00 is slot 0; the first Monday is day 4 and the second day 11: mean 10 + 2 * 7.5.
    assert profile[0] == pytest.approx(25.0, abs=0.01)


def test_two_data_dirs_are_consolidated(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    ts = T0 + 60 * np.arange(2 * 1440)
    cpu = np.full(len(ts), 2.0)
    mem = np.full(len(ts), 30.0)
    write_records(a, series("10.0.0.7", ts[:2000], cpu, mem))
    # The second aggregator holds the rest plus a retransmitted overlap with other values.
    write_records(b, series("10.0.0.7", ts[1900:], cpu + 10, mem))
    write_records(b, series("10.0.0.8", ts, cpu, mem))
    report, rows = run([a, b])
    assert sorted(rows) == ["10.0.0.7", "10.0.0.8"]
    assert rows["10.0.0.7"]["records"] == len(ts)
    assert rows["10.0.0.7"]["coverage"] == 1.0
    # The overlap counted once, with the later dir's values: 1900 minutes at 2%, the rest at 12%.
    assert rows["10.0.0.7"]["cpu_avg"] == pytest.approx(
        (1900 * 2 + (len(ts) - 1900) * 12) / len(ts), abs=0.01
    )
    assert report.meta["data_dirs"] == [str(a), str(b)]


def test_cache_is_reused_and_invalidated_when_a_log_changes(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    ts = T0 + 60 * np.arange(3 * 1440)
    write_records(data, series("10.0.0.1", ts, np.full(len(ts), 3.0), np.full(len(ts), 30.0)))
    first, rows1 = run([data], cache)
    assert first.meta["cache"] == {"parsed_vm_days": 3, "cached_vm_days": 0}
    again, rows2 = run([data], cache)
    assert again.meta["cache"] == {"parsed_vm_days": 0, "cached_vm_days": 3}
    assert rows1 == rows2
    # One more record on the last day: that day alone is parsed again and the figures move.
    write_records(data, series("10.0.0.1", [int(ts[-1]) + 30], [90.0], [30.0]))
    changed, rows3 = run([data], cache)
    assert changed.meta["cache"] == {"parsed_vm_days": 1, "cached_vm_days": 2}
    assert rows3["10.0.0.1"]["records"] == len(ts) + 1
    assert rows3["10.0.0.1"]["cpu_max"] == 90.0
    # A cache from elsewhere (corrupt file), an empty one or one cut short (a full disk, a
    # copy interrupted) is ignored, never trusted: the report parses the logs again.
    (written,) = list(cache.iterdir())
    whole = written.read_bytes()
    for damaged in (b"not a cache", b"", whole[: len(whole) // 2]):
        written.write_bytes(damaged)
        again, rows4 = run([data], cache)
        assert again.meta["cache"] == {"parsed_vm_days": 3, "cached_vm_days": 0}
        assert rows4 == rows3


def test_window_days_since_until(tmp_path):
    ts = T0 + 60 * np.arange(10 * 1440)
    write_records(tmp_path, series("10.0.0.1", ts, np.full(len(ts), 3.0), np.full(len(ts), 30.0)))
    report, rows = run([tmp_path], policy=Policy.load(overrides={"days": 4}))
    assert report.meta["window"]["first_day"] == "2026-01-07"
    assert report.meta["window"]["last_day"] == "2026-01-10"
    assert rows["10.0.0.1"]["records"] == 4 * 1440 and rows["10.0.0.1"]["coverage"] == 1.0
    report, rows = run([tmp_path], since="2026-01-02", until="2026-01-03")
    assert report.meta["window"]["end"] == "2026-01-03T23:59:00Z"
    assert rows["10.0.0.1"]["records"] == 2 * 1440
    # A fleet younger than the look-back is judged on the time it existed.
    report, rows = run([tmp_path], policy=Policy.load(overrides={"days": 30}))
    assert report.meta["window"]["start"] == "2026-01-01T00:00:00Z"
    assert rows["10.0.0.1"]["coverage"] == 1.0


def test_window_shorter_than_asked_says_why(tmp_path):
    # A fleet that started reporting at 06:30 on its third day: a 14-day look-back covers it all.
    ts = T0 + 2 * DAY + 6 * 3600 + 1800 + 60 * np.arange(3 * 1440)
    write_records(tmp_path, series("10.0.0.9", ts, np.full(len(ts), 20.0), np.full(len(ts), 30.0)))
    report, rows = run([tmp_path])
    window = report.meta["window"]
    assert window["clipped"] is True and window["days"] == 3.0
    assert window["start"] == "2026-01-03T06:30:00Z" and window["first_day"] == "2025-12-24"
    assert window["why"] == (
        "the last 14 UTC days (--days 14) up to the latest record, shortened to start at the "
        "fleet's first record: there is no older data"
    )
    assert rows["10.0.0.9"]["coverage"] == 1.0
    # A look-back inside the data is not shortened.
    report, _rows = run([tmp_path], policy=Policy.load(None, {"days": 2}))
    assert report.meta["window"]["clipped"] is False and report.meta["window"]["days"] < 2
    report, _rows = run([tmp_path], since="2026-01-04", until="2026-01-05")
    assert report.meta["window"]["why"] == "the UTC days asked for (2026-01-04 to 2026-01-05)"


def test_vm_silent_since_before_the_window_is_stopped_with_its_last_record(tmp_path):
    ts = T0 + 60 * np.arange(10 * 1440)
    write_records(tmp_path, series("10.0.0.1", ts, np.full(len(ts), 3.0), np.full(len(ts), 30.0)))
    old = ts[: 2 * 1440]
    write_records(tmp_path, series("10.0.0.2", old, np.full(len(old), 50.0), np.full(len(old), 30.0)))
    # A VM whose only log line is junk: listed, never taken for idle.
    path = logstore.day_path(str(tmp_path), "10.0.0.3", logstore.day_of(T0 + 9 * DAY))
    Path(path).parent.mkdir(parents=True)
    Path(path).write_bytes(logstore.HEADER + b"not,a,record\n")
    report, rows = run([tmp_path], policy=Policy.load(overrides={"days": 4}))
    assert report.meta["window"]["first_day"] == "2026-01-07"
    stopped = rows["10.0.0.2"]
    assert stopped["category"] == "stopped" and stopped["records"] == 0
    assert stopped["last_seen"] == "2026-01-02T23:59:00Z"
    assert "192.0 h" in stopped["reason"]
    # Damaged logs are missing data, not a stopped VM (issue 18): named, never taken for idle.
    assert rows["10.0.0.3"]["category"] == "insufficient-data" and rows["10.0.0.3"]["bad_lines"] == 1
    assert rows["10.0.0.3"]["last_seen"] == ""
    assert rows["10.0.0.3"]["reason"].startswith("no readable record: 1 log file damaged or unreadable")
    assert path in rows["10.0.0.3"]["reason"]
    # No disk or network figures at all: never called idle, only sized down.
    assert rows["10.0.0.1"]["category"] == "downsize"


def test_newest_day_without_valid_records_does_not_move_the_window(tmp_path):
    import os

    ts = T0 + 60 * np.arange(3 * 1440)
    write_records(tmp_path, series("10.0.0.1", ts, np.full(len(ts), 3.0), np.full(len(ts), 30.0)))
    folder = Path(logstore.vm_dir(str(tmp_path), "10.0.0.1"))
    (folder / "2026-01-04.csv").write_bytes(logstore.HEADER + b"torn,li")  # junk only
    (folder / "2026-01-05.csv").mkdir()  # a folder named like a log
    os.symlink(tmp_path / "nowhere", folder / "2026-01-06.csv")  # a dangling link
    report, rows = run([tmp_path])
    assert report.meta["window"]["last_day"] == "2026-01-03"
    assert report.window.end_ts == int(ts[-1])
    assert rows["10.0.0.1"]["coverage"] == 1.0 and rows["10.0.0.1"]["category"] != "stopped"
    skipped = {entry["path"]: entry["problem"] for entry in report.meta["skipped_files"]}
    assert sorted(skipped) == [str(folder / ("2026-01-0%d.csv" % day)) for day in (4, 5, 6)]


def test_long_windows_sum_histograms_per_day_as_the_dense_path_does(monkeypatch):
    """A window too long for the dense array (90 days x 1,000 VMs) adds a day at a time."""
    from vmstats.report import stats as stats_mod

    rng = np.random.default_rng(5)
    vms, days, bins = 7, 9, 13
    keep = rng.random(vms * days) < 0.7  # VMs with days missing, as real fleets have
    group = np.repeat(np.arange(vms), days)[keep]
    offset = np.tile(np.arange(days), vms)[keep]
    hist = rng.integers(0, 60000, size=(len(group), bins)).astype(np.uint16)
    dense = stats_mod._hist_sum(hist, group, offset, vms)
    monkeypatch.setattr(stats_mod, "_DENSE_CELLS", 0)
    by_day = stats_mod._hist_sum(hist, group, offset, vms)
    expected = np.zeros((vms, bins), np.int64)
    np.add.at(expected, group, hist.astype(np.int64))
    np.testing.assert_array_equal(dense, expected)
    np.testing.assert_array_equal(by_day, expected)
