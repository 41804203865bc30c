"""Compaction and retention: CSV day files -> columnar fleet-day files -> VM-day rollups.

The data are constructed VM-days written by the writer's own function
(logstore.append_missing); compaction runs as the real ``vmstats compact``
process where a process matters (SIGKILL, the server's scheduled job) and
as a function where only the rule is tested (boundaries).  Every check
reads back what is on disk, through the same readers the report uses.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from serverproc import descendants, serve
from test_reliability_faults import fill_up

from vmstats import logstore
from vmstats.protocol import Record
from vmstats.protocol import encode_record as _encode
from vmstats.report import aggregate
from vmstats.report.build import build
from vmstats.report.discover import discover
from vmstats.report.prices import PriceBook
from vmstats.report.settings import Policy
from vmstats.server import compact as compact_mod

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400
FIRST = 20400  # 2025-11-09, a Sunday
HOUR = 3600


def _write_fleet(data_dir, vms: int, days: int, first: int = FIRST, seed: int = 3, step: int = 60) -> None:
    """Per-minute VM-days with every kind of cell: unknowns, tags, hosts, a resend, a bad line."""
    rng = random.Random(seed)
    for v in range(vms):
        vm = "10.0.%d.%d" % (v // 200, v % 200 + 1)
        for d in range(days):
            start = (first + d) * DAY
            rows = {}
            for ts in range(start + rng.randrange(step), start + DAY, step):
                busy = v % 3 == 0 and 9 <= (ts // HOUR) % 24 < 17
                record = Record(
                    vm, ts, round(rng.uniform(20, 90) if busy else rng.uniform(0, 3), 2),
                    cpu_max=None if ts % 7 == 0 else round(rng.uniform(0, 100), 1),
                    mem=round(rng.uniform(10, 60), 3),
                    disk_r=rng.randrange(0, 10**6) if ts % 5 else None, disk_w=rng.randrange(0, 10**5),
                    net_rx=rng.randrange(0, 10**6), net_tx=rng.uniform(0, 10**4),
                    vcpus=2 if v != 4 else 4, mem_mb=4096, seq=(ts - start) // step,
                    host="node%d" % (v % 4), tags=(("project", "p%d" % (v % 2)),) if v % 2 else None)
                rows[ts] = logstore.format_tail(record)
            logstore.append_missing(str(data_dir), vm, rows)
            # A resend that corrects a value: the later row wins in every tier.
            fix = sorted(rows)[len(rows) // 2]
            logstore.append_missing(str(data_dir), vm, {fix: rows[fix].replace(b",", b"5,", 1)})
            if v == 1:  # a torn line: counted as bad in every tier
                with open(logstore.day_path(str(data_dir), vm, logstore.day_name(first + d)), "ab") as handle:
                    handle.write(b"123,not a row\n")


def _units_rows(data_dir) -> dict:
    """Every VM-day's rows as the readers merge them (all raw tiers): {(vm, day): frame}."""
    units = discover([str(data_dir)], raw_only=True)
    keys = sorted(units)
    sources = [source for key in keys for source in units[key]]
    owner = np.repeat(np.arange(len(keys)), [len(units[key]) for key in keys])
    frame, _bad = logstore.read_columns(sources)
    frame["unit"] = owner[frame["file"].to_numpy()]
    frame = frame.drop(columns="file").drop_duplicates(["unit", "ts"], keep="last")
    return {keys[unit]: rows.drop(columns="unit").sort_values("ts").reset_index(drop=True)
            for unit, rows in frame.groupby("unit")}


def _same_rows(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        left, right = a[key], b[key]
        assert len(left) == len(right), key
        for name in left.columns:
            x, y = left[name], right[name]
            assert x.isna().tolist() == y.isna().tolist(), (key, name)
            assert x.dropna().tolist() == y.dropna().tolist(), (key, name)


def _compact(data_dir, **kwargs) -> compact_mod.Summary:
    policy = compact_mod.Policy(**{name: value * DAY for name, value in kwargs.pop("policy").items()})
    return compact_mod.compact(str(data_dir), policy, **kwargs)


def _aggregates(units: dict) -> dict:
    keys = sorted(units)
    table, _issues = aggregate.aggregate_units([units[k] for k in keys])
    return {name: values for name, values in table.items()}, keys


def test_closed_days_are_compacted_verified_and_answer_identically(tmp_path):
    data = tmp_path / "data"
    _write_fleet(data, vms=5, days=4)
    csv_rows = _units_rows(data)
    csv_units = discover([str(data)])
    before, keys = _aggregates(csv_units)
    now = (FIRST + 4) * DAY + HOUR  # day 3 is today; days 0 and 1 ended 2 days ago or more
    summary = _compact(data, policy={"compact_after": 2, "retain_raw": 30, "retain_rollups": 60}, now=now)
    assert summary.days_compacted == 2 and summary.csv_removed == 10 and not summary.csv_kept
    for d in range(4):
        name = logstore.day_name(FIRST + d)
        columnar = data / "columnar" / (name + ".parquet")
        csvs = list((data / "vms").glob("*/%s.csv" % name))
        assert (columnar.exists(), len(csvs)) == ((True, 0) if d < 2 else (False, 5))
    info = logstore.tier_info(str(data / "columnar" / (logstore.day_name(FIRST) + ".parquet")))
    assert info["bad"][info["vms"].index("10.0.0.2")] == 1 and sum(info["bad"]) == 1
    # Sorted by VM then time, one row per timestamp.
    table = pq.read_table(data / "columnar" / (logstore.day_name(FIRST) + ".parquet"), columns=["vm", "ts"])
    pairs = list(zip(table.column("vm").to_pylist(), table.column("ts").to_pylist(), strict=True))
    assert pairs == sorted(set(pairs))
    # The rows, the aggregates and the report are those of the CSV files, from every tier.
    _same_rows(_units_rows(data), csv_rows)
    units = discover([str(data)])
    assert all(aggregate.is_rollup(units[k]) == (k[1] < FIRST + 2) for k in units)
    after, keys_after = _aggregates(units)
    no_rollups = tmp_path / "columnar-only"
    shutil.copytree(data, no_rollups)
    shutil.rmtree(no_rollups / "rollups")
    columnar, keys_columnar = _aggregates(discover([str(no_rollups)]))
    assert keys == keys_after == keys_columnar
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
        np.testing.assert_array_equal(before[name], columnar[name], err_msg=name)


def test_a_days_rollups_are_one_row_group_whatever_the_chunks(tmp_path):
    """Compaction computes rollups 64 VMs at a time but writes them as one row group (many
    small groups cost several times more to read); they answer as the rows do."""
    data = tmp_path / "data"
    vms = compact_mod.CHUNK_VMS + 6
    _write_fleet(data, vms=vms, days=1, step=900)
    before, keys = _aggregates(discover([str(data)]))
    _compact(data, policy={"compact_after": 1, "retain_raw": 30, "retain_rollups": 60}, now=(FIRST + 2) * DAY)
    meta = pq.ParquetFile(data / "rollups" / (logstore.day_name(FIRST) + ".parquet")).metadata
    assert (meta.num_row_groups, meta.num_rows) == (1, vms)
    units = discover([str(data)])
    assert all(aggregate.is_rollup(sources) for sources in units.values())
    after, keys_after = _aggregates(units)
    assert keys_after == keys
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


def _report(data_dirs, days: int = 4, **kwargs) -> list:
    report = build([str(d) for d in data_dirs], Policy.load(overrides={"days": days}), PriceBook.load(None),
                   workers=1, **kwargs)
    return json.loads(json.dumps(report.rows, default=str))


def test_the_report_is_the_same_from_csv_columnar_and_rollups(tmp_path):
    csv_dir = tmp_path / "csv"
    _write_fleet(csv_dir, vms=6, days=8)
    compacted = tmp_path / "compacted"
    shutil.copytree(csv_dir, compacted)
    now = (FIRST + 8) * DAY + 5 * DAY  # every day compacted
    _compact(compacted, policy={"compact_after": 1, "retain_raw": 30, "retain_rollups": 60}, now=now)
    assert not list((compacted / "vms").glob("*/*.csv"))
    columnar_only = tmp_path / "columnar"
    rollups_only = tmp_path / "rollups"
    shutil.copytree(compacted, columnar_only)
    shutil.rmtree(columnar_only / "rollups")
    shutil.copytree(compacted, rollups_only)
    shutil.rmtree(rollups_only / "columnar")
    expected = _report([csv_dir], days=8)
    assert len({row["category"] for row in expected}) >= 2
    for other in (columnar_only, rollups_only, compacted):
        assert _report([other], days=8) == expected, other
    # The same VM-days in two aggregators' dirs, one compacted and one not: merged as two CSV
    # dirs are (the rows once; each dir's malformed lines counted).
    csv_copy = tmp_path / "csv-copy"
    shutil.copytree(csv_dir, csv_copy)
    assert _report([csv_dir, columnar_only], days=8) == _report([csv_dir, csv_copy], days=8)


def _codecs(path) -> set:
    """The codecs of a Parquet file's column chunks, as pyarrow names them (LZ4_RAW: "LZ4")."""
    meta = pq.ParquetFile(path).metadata
    return {meta.row_group(g).column(c).compression
            for g in range(meta.num_row_groups) for c in range(meta.num_columns)}


def test_rollups_written_with_zstd_before_give_the_same_report_as_lz4_ones(tmp_path):
    """Rollups are written LZ4_RAW now, the columnar tier stays zstd; rollup files written with
    zstd before (rewritten here with zstd, table and footer otherwise as the compactor wrote
    them) answer the same report."""
    lz4 = tmp_path / "lz4"
    _write_fleet(lz4, vms=4, days=3, step=300)
    csv_report = _report([lz4], days=3)
    _compact(lz4, policy={"compact_after": 1, "retain_raw": 30, "retain_rollups": 60}, now=(FIRST + 5) * DAY)
    assert not list(lz4.glob("vms/*/*.csv"))
    columnar = sorted(lz4.glob("columnar/*.parquet"))
    assert len(columnar) == 3 and all(_codecs(path) == {"ZSTD"} for path in columnar)
    shutil.rmtree(lz4 / "columnar")  # the report reads the rollups alone
    zstd = tmp_path / "zstd"
    shutil.copytree(lz4, zstd)
    rollups = sorted(zstd.glob("rollups/*.parquet"))
    assert len(rollups) == 3
    for path in rollups:
        assert _codecs(path) == {"LZ4"}
        table = pq.read_table(path)
        info = logstore.tier_info(str(path))
        writer = logstore.TierWriter(str(path), options={"use_dictionary": False})
        writer.add(table)
        writer.close(info)
        writer.commit()
        assert _codecs(path) == {"ZSTD"} and logstore.tier_info(str(path)) == info
    assert _report([zstd], days=3) == _report([lz4], days=3) == csv_report


def _write_vm(data_dir, vm: str, days, vcpus) -> None:
    """A VM's per-10-minute records on ``days`` (day offsets), ``vcpus(day)`` its size."""
    for d in days:
        start = (FIRST + d) * DAY
        rows = {ts: logstore.format_tail(Record(vm, ts, round(1 + (ts // 600) % 7 * 0.3, 1), mem=20.0 + d,
                                                net_rx=1000 + ts % 977, vcpus=vcpus(d), mem_mb=2048))
                for ts in range(start, start + DAY, 600)}
        logstore.append_missing(str(data_dir), vm, rows)


def test_a_window_of_rollups_and_csv_days_is_the_csv_report(tmp_path):
    """The usual long window: its old days as rollups, its last days still CSV, in one table
    (the rollups' histograms kept as their cells, the rows' dense).  A VM resized inside the
    window is judged from its resize, so some rollup days drop out of its sums; a VM stopped
    before a shorter window brings its last day from before it."""
    csv_dir = tmp_path / "csv"
    _write_fleet(csv_dir, vms=5, days=8)
    _write_vm(csv_dir, "resized", range(8), lambda d: 2 if d < 5 else 4)
    _write_vm(csv_dir, "stopped", range(2), lambda d: 2)
    mixed = tmp_path / "mixed"
    shutil.copytree(csv_dir, mixed)
    # Day 5 ended exactly compact_after ago: days 0-5 compacted, days 6 and 7 stay CSV.
    policy = {"compact_after": 2, "retain_raw": 30, "retain_rollups": 60}
    _compact(mixed, policy=policy, now=(FIRST + 8) * DAY)
    shutil.rmtree(mixed / "columnar")
    units = discover([str(mixed)])
    assert {aggregate.is_rollup(units[key]) for key in units if key[1] <= FIRST + 5} == {True}
    assert {aggregate.is_rollup(units[key]) for key in units if key[1] > FIRST + 5} == {False}
    for days in (8, 5):
        expected = _report([csv_dir], days=days)
        resized = next(row for row in expected if row["vm"] == "resized")
        assert "resized in the window" in resized["data_quality"]
        assert _report([mixed], days=days) == expected, days
    # With a cache: the rows' days cached, the rollups read again, the report unchanged.
    cache = tmp_path / "cache"
    assert _report([mixed], days=8, cache_dir=str(cache)) == _report([csv_dir], days=8)
    assert _report([mixed], days=8, cache_dir=str(cache)) == _report([csv_dir], days=8)


def test_retention_boundaries_are_exact(tmp_path):
    data = tmp_path / "data"
    _write_fleet(data, vms=2, days=6, step=600)
    end = lambda d: (FIRST + d + 1) * DAY  # noqa: E731
    policy = {"compact_after": 1, "retain_raw": 3, "retain_rollups": 4}
    # Day 4 ends exactly compact_after before now: compacted; day 5 is not closed long enough.
    now = end(4) + DAY
    _compact(data, policy=policy, now=now)
    tiers = lambda tier: sorted(p.stem for p in (data / tier).glob("*.parquet"))  # noqa: E731
    names = [logstore.day_name(FIRST + d) for d in range(6)]
    # Day 2 ended exactly retain_raw ago: its rows are gone, its rollups kept; day 3 keeps its rows.
    assert tiers("columnar") == names[3:5]
    # Day 1 ended exactly retain_rollups ago: gone with day 0; day 2 is still rolled up.
    assert tiers("rollups") == names[2:5]
    assert sorted(p.stem for p in (data / "vms").glob("*/*.csv")) == [names[5]] * 2
    # Day 2's rollups: kept one second before they are retain_rollups old, removed at it; day 5,
    # closed one day then, is compacted at that very second, not one before.  (A row of day 6
    # says the data reached it: retention is never measured past the newest data's day.)
    now = end(2) + 4 * DAY
    late = Record("10.0.0.1", end(5) + 60, 1.0, mem=5.0)
    logstore.append_missing(str(data), late.vm, {late.ts: logstore.format_tail(late)})
    _compact(data, policy=policy, now=now - 1)
    assert tiers("rollups") == names[2:5]
    _compact(data, policy=policy, now=now)
    assert tiers("rollups") == names[3:6]


def test_a_clock_months_ahead_retires_only_what_the_data_say_is_old(tmp_path):
    """A wall clock 120 days ahead (a bad RTC, a typo in date -s): retention is measured from the
    end of the newest data's day, so it retires what a right clock would then and no more,
    and the pass says how far ahead the clock is."""
    data = tmp_path / "data"
    _write_fleet(data, vms=2, days=6, step=1800)
    right = tmp_path / "right"
    shutil.copytree(data, right)
    end = lambda d: (FIRST + d + 1) * DAY  # noqa: E731
    policy = {"compact_after": 1, "retain_raw": 3, "retain_rollups": 4}
    summary = _compact(data, policy=policy, now=end(5) + 120 * DAY)
    tiers = lambda tier: sorted(p.stem for p in (data / tier).glob("*.parquet"))  # noqa: E731
    names = [logstore.day_name(FIRST + d) for d in range(6)]
    # As at the end of day 5 with a right clock: days 0-2 lose their rows, 0-1 their rollups.
    assert tiers("columnar") == names[3:6]
    assert tiers("rollups") == names[2:6]
    assert summary.columnar_removed == 3 and summary.rollups_removed == 2
    assert summary.notices() == [
        "retention held back: the clock is 120.0 days past the end of the newest data's day "
        "%s (a clock set ahead, or no data since), so retention is measured from that day's end; "
        "if the clock is right and no data will come, `vmstats compact --trust-clock` measures "
        "it from the clock" % names[5]]
    # A right clock (at the end of day 5) retires the same days, saying nothing of the clock
    # (day 5, just closed, is not compacted yet).
    summary = _compact(right, policy=policy, now=end(5))
    assert [sorted(p.stem for p in (right / tier).glob("*.parquet")) for tier in ("columnar", "rollups")
            ] == [names[3:5], names[2:5]]
    assert summary.columnar_removed == 3 and summary.rollups_removed == 2
    assert summary.notices() == []


def test_a_future_dated_file_is_reported_and_does_not_lift_the_cap(tmp_path):
    """A stray CSV file and a columnar file dated 2099 beside a fleet's six days, the clock 120
    days ahead: they are not the newest data's day (which would let the clock retire every
    day), they stay where they are, and the pass names them."""
    data = tmp_path / "data"
    _write_fleet(data, vms=2, days=6, step=1800)
    end = lambda d: (FIRST + d + 1) * DAY  # noqa: E731
    stray = data / "vms" / "10.9.9.9" / "2099-01-01.csv"
    stray.parent.mkdir()
    shutil.copy(logstore.day_path(str(data), "10.0.0.1", logstore.day_name(FIRST + 5)), stray)
    policy = {"compact_after": 1, "retain_raw": 3, "retain_rollups": 4}
    _compact(data, policy=policy, now=end(1))  # compacts day 0: copied as if dated 2099 too
    copy = data / "columnar" / "2099-01-02.parquet"
    shutil.copy(data / "columnar" / (logstore.day_name(FIRST) + ".parquet"), copy)
    summary = _compact(data, policy=policy, now=end(5) + 120 * DAY)
    tiers = lambda tier: sorted(p.stem for p in (data / tier).glob("*.parquet"))  # noqa: E731
    names = [logstore.day_name(FIRST + d) for d in range(6)]
    assert tiers("columnar") == names[3:6] + ["2099-01-02"]
    assert tiers("rollups") == names[2:6]
    assert stray.exists()
    assert summary.future_files == sorted([str(copy), str(stray)])
    assert summary.notices()[0].startswith("future-dated: 2 day files dated after tomorrow by "
                                           "this clock, e.g. %s: not taken as" % min(copy, stray))
    assert "retention held back: the clock is 120.0 days" in summary.notices()[1]
    # The next day's file (a record a little ahead of the clock near midnight) is not future-dated.
    assert compact_mod.trusted_days({FIRST + 1: ["a"], FIRST + 2: ["b"]}, FIRST * DAY + 1) == (
        FIRST + 1, ["b"])


def test_a_clock_ahead_retires_a_day_at_most_a_day_early(tmp_path):
    """The bound of the cap: a clock ahead by more than the rest of the newest day retires as
    if it were at that day's end, so at one second into the newest day one day more goes
    than a right clock would retire, and that day is less than a day short of the limit."""
    right, ahead = tmp_path / "right", tmp_path / "ahead"
    _write_fleet(right, vms=1, days=6, step=3600)
    shutil.copytree(right, ahead)
    policy = {"compact_after": 1, "retain_raw": 3, "retain_rollups": 30}
    true_now = (FIRST + 5) * DAY + 1  # one second into day 5, the newest day

    def retired(data) -> list:
        return sorted({p.stem for p in (data / "rollups").glob("*.parquet")}
                      - {p.stem for p in (data / "columnar").glob("*.parquet")})

    _compact(right, policy=policy, now=true_now)
    _compact(ahead, policy=policy, now=true_now + 120 * DAY)
    names = [logstore.day_name(FIRST + d) for d in range(6)]
    assert retired(right) == names[0:2] and retired(ahead) == names[0:3]
    # The one day retired early: it ended 2 days and 1 s before the true time, under 3 days.
    early_age = true_now - (FIRST + 3) * DAY
    assert 3 * DAY - DAY < early_age < 3 * DAY


def _compact_cli(data, *args, offset: float = 0):
    """A hand-run ``vmstats compact`` whose wall clock is ``offset`` seconds off."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests" / "stepclock")]),
               VMSTATS_TEST_STEP="1", VMSTATS_TEST_OFFSET=str(offset))
    return subprocess.run([sys.executable, "-m", "vmstats", "compact", "--data-dir", str(data), *args],
                          env=env, capture_output=True, text=True)


def test_a_data_dir_no_longer_receiving_says_so_on_stderr_and_trust_clock_retires(tmp_path):
    """A fleet retired ten days ago: a hand-run pass keeps its rows (the newest data's day never
    advances), prints what it did on stdout and why it held back on stderr, exit status 0;
    ``--trust-clock`` then applies the retention asked for from the clock."""
    data = tmp_path / "data"
    today = int(time.time()) // DAY
    _write_fleet(data, vms=2, days=4, first=today - 14, step=3600)
    options = ("--compact-after", "1d", "--retain-raw", "3d", "--retain-rollups", "30d")
    done = _compact_cli(data, *options)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("compacted 4 days (") and len(done.stdout.splitlines()) == 1
    newest = logstore.day_name(today - 11)
    assert done.stderr.splitlines() == [
        "vmstats compact: warning: retention held back: the clock is %.1f days past the end of "
        "the newest data's day %s (a clock set ahead, or no data since), so retention is "
        "measured from that day's end; if the clock is right and no data will come, `vmstats "
        "compact --trust-clock` measures it from the clock" % ((time.time() - (today - 10) * DAY) / DAY,
                                                              newest)]
    names = [logstore.day_name(today - 14 + d) for d in range(4)]
    assert sorted(p.stem for p in (data / "columnar").glob("*.parquet")) == names[1:]
    done = _compact_cli(data, *options, "--trust-clock")
    assert done.returncode == 0 and done.stderr == ""
    assert not list((data / "columnar").glob("*.parquet"))
    assert sorted(p.stem for p in (data / "rollups").glob("*.parquet")) == names


def test_a_compaction_lock_that_is_a_folder_is_a_one_line_error(tmp_path):
    data = tmp_path / "data"
    _write_fleet(data, vms=1, days=1, step=3600)
    (data / "compaction.lock").mkdir()
    done = _compact_cli(data)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "Error: compaction lock %s cannot be opened: Is a directory; no pass runs until it is a "
        "file this user can write (or absent)" % (data / "compaction.lock")]


def test_the_server_with_its_clock_months_ahead_keeps_recent_days(tmp_path):
    """The server's scheduled pass under a wall clock stepped 120 days ahead: the recent days
    stay, the pass is counted and logged as held back."""
    data = tmp_path / "data"
    today = int(time.time()) // DAY
    _write_fleet(data, vms=3, days=6, first=today - 6, step=1800)
    stray = data / "rollups" / "2099-01-01.parquet"  # a stray future-dated copy: not trusted
    stray.parent.mkdir()
    shutil.copy(logstore.day_path(str(data), "10.0.0.1", logstore.day_name(today - 6)), stray)
    stepclock = str(ROOT / "tests" / "stepclock")
    options = ("--compact-interval", "1s", "--compact-after", "1d", "--retain-raw", "3d",
               "--retain-rollups", "4d")
    with serve(tmp_path, *options, env={"PYTHONPATH": stepclock, "VMSTATS_TEST_STEP": "1",
                                        "VMSTATS_TEST_OFFSET": str(120 * DAY)}) as server:
        server.wait_for(lambda s: s.metrics().get("vmstats_compaction_passes", 0) >= 1, timeout=60)
        assert server.metrics()["vmstats_compaction_retention_held_back"] >= 1
        assert server.metrics()["vmstats_compaction_future_dated"] >= 1
    assert server.returncode == 0
    names = [logstore.day_name(today - 6 + d) for d in range(6)]
    assert sorted(p.stem for p in (data / "columnar").glob("*.parquet")) == names[3:6]
    assert sorted(p.stem for p in (data / "rollups").glob("*.parquet")) == names[2:6] + ["2099-01-01"]
    assert ("WARNING vmstats.server.compaction: compaction: retention held back: the clock is 12"
            in server.output)
    assert "compaction: future-dated: 1 day file dated after tomorrow" in server.output


def test_the_server_counts_a_lock_folder_and_logs_it_once(tmp_path):
    """compaction.lock made a folder: every pass fails and is counted, the error is logged
    once, the server keeps receiving; once it is removed the passes succeed again."""
    data = tmp_path / "data"
    _write_fleet(data, vms=1, days=2, first=int(time.time()) // DAY - 4, step=3600)
    (data / "compaction.lock").mkdir()
    with serve(tmp_path, "--compact-interval", "0.3s", "--compact-after", "1d") as server:
        server.wait_for(lambda s: s.metrics().get("vmstats_compaction_failures", 0) >= 3, timeout=60)
        assert server.metrics()["vmstats_compaction_passes"] == 0
        (data / "compaction.lock").rmdir()
        server.wait_for(lambda s: s.metrics().get("vmstats_compaction_passes", 0) >= 1, timeout=60)
    assert server.returncode == 0
    assert server.output.count("cannot be opened: Is a directory") == 1
    assert len(list((data / "columnar").glob("*.parquet"))) == 2


def test_rows_logged_after_compaction_win_and_are_merged_next_pass(tmp_path):
    data = tmp_path / "data"
    _write_fleet(data, vms=2, days=3, step=300)
    now = (FIRST + 3) * DAY + 3 * DAY
    policy = {"compact_after": 1, "retain_raw": 30, "retain_rollups": 60}
    _compact(data, policy=policy, now=now)
    vm = "10.0.0.1"
    ts = (FIRST + 1) * DAY + 17
    late = Record(vm, ts, 99.5, mem=12.0)
    logstore.append_missing(str(data), vm, {ts: logstore.format_tail(late)})
    frame = _units_rows(data)[(vm, FIRST + 1)]
    assert frame.loc[frame.ts == ts, "cpu"].tolist() == [99.5]
    units = discover([str(data)])
    assert not aggregate.is_rollup(units[(vm, FIRST + 1)])  # a CSV beside the rollup: rows answer
    merged = _units_rows(data)
    summary = _compact(data, policy=policy, now=now)
    assert summary.days_compacted == 1 and summary.csv_removed == 1
    _same_rows(_units_rows(data), merged)
    assert aggregate.is_rollup(discover([str(data)])[(vm, FIRST + 1)])


def _kill_at_random(data_dir, rng: random.Random, kills: int):
    """Start ``vmstats compact`` and SIGKILL it after a random delay until ``kills`` kills have
    landed; yields each run's exit code (-9 when it was killed, 0 when it finished first).

    The delays fall within the time a whole pass over a copy of the data
    takes here and now (a fixed range either misses a fast machine's pass
    or ends a loaded machine's at its start).  A pass that finishes first
    (the probe ran while the host was slower) leaves nothing for the next to
    do: the data goes back to how it was, and the next delay is shorter.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def command(folder) -> list:
        return [sys.executable, "-m", "vmstats", "compact", "--data-dir", str(folder),
                "--compact-after", "1d"]

    pristine = Path(str(data_dir) + "-pristine")
    shutil.copytree(data_dir, pristine)
    began = time.monotonic()
    subprocess.run(command(pristine), env=env, check=True, capture_output=True)
    whole = time.monotonic() - began
    shutil.rmtree(pristine)
    shutil.copytree(data_dir, pristine)
    landed = 0
    for _ in range(4 * kills):
        proc = subprocess.Popen(command(data_dir), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(rng.uniform(0.1, 0.6) * whole)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)  # nothing when the pass ended since the wait gave up
            proc.wait()
        landed += proc.returncode == -signal.SIGKILL  # the exit status says, not the timeout
        yield proc.returncode
        if landed == kills:
            return
        if proc.returncode == 0:
            whole /= 2
            shutil.rmtree(data_dir)
            shutil.copytree(pristine, data_dir)


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path):
    data = tmp_path / "data"
    first = int(time.time()) // DAY - 8
    _write_fleet(data, vms=30, days=3, first=first, step=120)
    expected = _units_rows(data)
    rng = random.Random(int(os.environ.get("VMSTATS_SEED", "23")))
    killed = 0
    for code in _kill_at_random(data, rng, kills=3):
        killed += code == -signal.SIGKILL
        _same_rows(_units_rows(data), expected)  # whatever moment: every row readable, once
        for path in (data / "columnar").glob("*.parquet"):
            table = pq.read_table(path, columns=["vm", "ts"])
            pairs = list(zip(table.column("vm").to_pylist(), table.column("ts").to_pylist(), strict=True))
            assert len(pairs) == len(set(pairs)), path
    assert killed == 3
    for partial in data.glob("*/*" + logstore.PARTIAL_SUFFIX):
        partial.unlink()  # whether a kill left one depends on its moment: one is placed instead
    (data / logstore.ROLLUPS_DIR).mkdir(exist_ok=True)
    (data / logstore.ROLLUPS_DIR / ("killed" + logstore.PARTIAL_SUFFIX)).write_bytes(b"half")
    done = subprocess.run([sys.executable, "-m", "vmstats", "compact", "--data-dir", str(data),
                           "--compact-after", "1d"], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "removed 1 partial file of an interrupted pass" in done.stdout, done.stdout
    assert not list((data / "vms").glob("*/*.csv")) and not list(data.glob("*/*.partial"))
    _same_rows(_units_rows(data), expected)


def test_two_passes_never_run_at_once(tmp_path):
    data = tmp_path / "data"
    _write_fleet(data, vms=1, days=1, step=3600)
    with compact_mod._lock(str(data)):
        done = subprocess.run([sys.executable, "-m", "vmstats", "compact", "--data-dir", str(data)],
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["Error: another compaction of %s is running" % data]


def test_the_summary_line_counts_one_of_each_in_the_singular(tmp_path):
    """One day of one VM compacted reads "1 day ... 1 CSV file", as the operator would say it."""
    data = tmp_path / "data"
    _write_fleet(data, vms=1, days=1, step=3600)
    done = subprocess.run([sys.executable, "-m", "vmstats", "compact", "--data-dir", str(data),
                           "--compact-after", "1d"], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("compacted 1 day (24 rows, 1 CSV file removed, 0 kept), removed 0 "
                                  "columnar and 0 rollup files past retention, 0 late CSV files"), done.stdout


def test_bad_settings_are_one_line_errors(tmp_path):
    done = subprocess.run([sys.executable, "-m", "vmstats", "compact", "--data-dir", str(tmp_path),
                           "--compact-after", "3d", "--retain-raw", "1d"],
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    assert done.returncode == 2  # the command line's: README.md, exit status
    assert done.stderr.strip() == ("Error: --retain-raw must be at least --compact-after: "
                                   "rows are kept until compacted")


def test_the_server_compacts_on_schedule_while_it_receives(tmp_path):
    data = tmp_path / "data"
    first = int(time.time()) // DAY - 5
    _write_fleet(data, vms=20, days=2, first=first, step=120)
    expected = _units_rows(data)
    options = ("--compact-interval", "1s", "--compact-after", "2d", "--flush-interval", "0.3")
    with serve(tmp_path, *options) as server:
        now = int(time.time())
        for i in range(5):
            server.send_udp(b"vmstats,vm=10.9.9.9 cpu=%d,mem=5 %d" % (i, now - 60 * i))
        server.wait_for(lambda s: len(list((data / "columnar").glob("*.parquet"))) == 2
                        and not list((data / "vms").glob("*/%s.csv" % logstore.day_name(first))), timeout=60)
        server.wait_for(lambda s: s.metrics().get("vmstats_compaction_passes", 0) >= 1, timeout=30)
        live = data / "vms" / "10.9.9.9"
        server.wait_for(lambda s: sum(len(p.read_text().splitlines()) - 1 for p in live.glob("*.csv")) == 5)
    assert server.returncode == 0
    rows = _units_rows(data)
    _same_rows({k: v for k, v in rows.items() if k[0] != "10.9.9.9"}, expected)


def protocol_line(record: Record) -> bytes:
    return _encode(record).encode("ascii")


def test_a_full_disk_fails_the_scheduled_pass_naming_its_file_and_loses_nothing(tmp_path, small_disk):
    """The server's compaction on a full disk: the pass fails with the file it was writing
    named (before: "Error writing bytes to file ... No space left on device", no file), leaves
    no partial file and every CSV row; records acknowledged meanwhile are kept, and once space
    returns the next passes compact all of it, row for row."""
    data = small_disk / "data"
    first = int(time.time()) // DAY - 5
    _write_fleet(data, vms=6, days=2, first=first, step=300)
    expected = _units_rows(data)
    ballast = fill_up(small_disk)
    options = ("--compact-interval", "1s", "--compact-after", "2d", "--flush-interval", "0.3",
               "--journal-dir", str(tmp_path / "journal"))  # acks go on: the journal has room
    now = int(time.time())
    sent = [Record(vm="10.9.9.%d" % i, ts=now - 60 * i, cpu=float(i), mem=5.0) for i in range(5)]
    with serve(tmp_path, *options, data_dir=data) as server:
        server.wait_for(lambda s: s.metrics().get("vmstats_compaction_failures", 0) >= 1, timeout=60)
        with server.tcp(timeout=10) as sock:
            sock.sendall(b"\n".join(protocol_line(r) for r in sent) + b"\n#!sync full\n")
            assert sock.recv(100) == b"#!ack full 5 0\n"
        assert not list(data.glob("*/*" + logstore.PARTIAL_SUFFIX))
        _same_rows(_units_rows(data), expected)  # every CSV row still there, readable
        for path in ballast:
            os.unlink(path)
        server.wait_for(lambda s: len(list((data / "columnar").glob("*.parquet"))) == 2
                        and s.metrics().get("vmstats_compaction_passes", 0) >= 1, timeout=60)
        server.wait_for(lambda s: sum(len(p.read_text().splitlines()) - 1
                                      for p in data.glob("vms/10.9.9.*/*.csv")) == 5, timeout=30)
    assert server.returncode == 0, server.output
    partial = logstore.tier_path(str(data), logstore.COLUMNAR_DIR, logstore.day_name(first))
    failed = [text for text in server.output.splitlines() if "compaction pass exited with 1" in text]
    assert len(failed) == 1, server.output  # logged once, however many passes failed
    assert "Error: No space left on device: %s%s" % (partial, logstore.PARTIAL_SUFFIX) in failed[0]
    rows = _units_rows(data)
    _same_rows({k: v for k, v in rows.items() if not k[0].startswith("10.9.9.")}, expected)
    assert sorted((vm, int(ts)) for (vm, _day), frame in rows.items() if vm.startswith("10.9.9.")
                  for ts in frame["ts"]) == sorted((r.vm, r.ts) for r in sent)
    assert not list((data / "vms").glob("*/%s.csv" % logstore.day_name(first)))


RETIRE_ALL = ("--compact-after", "1d", "--retain-raw", "2d", "--retain-rollups", "30d", "--trust-clock")
#: A pass over sys.argv[1] with RETIRE_ALL's policy, SIGKILLed once its first columnar file is in place.
KILLED_AFTER_COLUMNAR = '''
import os, signal, sys
from vmstats.server import compact
def step(what):
    if what.startswith("columnar "):
        os.kill(os.getpid(), signal.SIGKILL)
compact.compact(sys.argv[1], compact.Policy(86400, 2 * 86400, 30 * 86400), step=step, trust_clock=True)
'''


def _late_vm_then_a_pass_killed_between_its_renames(tmp_path) -> tuple[int, Path, Path]:
    """Three VMs' three days, all retired (raw: a copy never compacted); then six hours of a
    late VM's rows on the middle day, and a pass killed between its two renames (the new
    columnar file in place, not its rollups).  The first day, and the two folders."""
    first = int(time.time()) // DAY - 10
    raw, data = tmp_path / "raw", tmp_path / "data"
    _write_fleet(raw, vms=3, days=3, first=first, step=600)
    shutil.copytree(raw, data)
    done = _compact_cli(data, *RETIRE_ALL)
    assert done.returncode == 0, done.stderr
    assert not list(data.glob("columnar/*.parquet")) and len(list(data.glob("rollups/*.parquet"))) == 3
    start = (first + 1) * DAY
    late = {ts: logstore.format_tail(Record("10.0.0.9", ts, 40.0, mem=20.0, vcpus=2, mem_mb=2048))
            for ts in range(start, start + 6 * HOUR, 600)}
    for folder in (raw, data):
        logstore.append_missing(str(folder), "10.0.0.9", late)
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_COLUMNAR, str(data)],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    return first, raw, data


def test_late_records_of_a_vm_silent_on_a_retired_day_join_its_rollups(tmp_path):
    """A day past --retain-raw is kept as rollups only.  Records of a VM that sent none that day
    arrive late (an agent's spool after a long partition): they are rolled up beside the day's
    other VMs, also when the pass that takes them is killed between its renames.  Before, the
    pass wrote the day's rollup file anew from those records alone, and every other VM's
    rollups of the day were gone."""
    first, raw, data = _late_vm_then_a_pass_killed_between_its_renames(tmp_path)
    # The next pass must keep the other VMs' rollups too, though the day now has rows.
    assert list(data.glob("columnar/*.parquet")) and list(data.glob("vms/*/*.csv"))
    done = _compact_cli(data, *RETIRE_ALL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("compacted 1 day (36 rows, 1 CSV file removed, 0 kept)"), done.stdout
    assert not list(data.glob("vms/*/*.csv")) and not list(data.glob("columnar/*.parquet"))
    rollups = logstore.tier_path(str(data), logstore.ROLLUPS_DIR, logstore.day_name(first + 1))
    assert logstore.tier_info(rollups)["vms"] == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"]
    assert pq.ParquetFile(rollups).metadata.num_row_groups == 1
    assert _report([data], days=3) == _report([raw], days=3)


def test_a_late_file_of_a_vm_a_retired_days_rollups_hold_never_replaces_its_rollup(tmp_path):
    """A pass killed before its retention step leaves a retired day's columnar file holding only
    a late VM's rows.  A late file of a VM whose rollup the day holds (records sent again: a
    journal replayed) was then merged with none of its rows, and its rollup written anew from
    those records alone: its day shrank to them.  It is past retention, as without that file."""
    first, raw, data = _late_vm_then_a_pass_killed_between_its_renames(tmp_path)
    # 10.0.0.1's first six hours of that day, logged again by the writer into a new day file.
    day_file = Path(logstore.day_path(str(raw), "10.0.0.1", logstore.day_name(first + 1)))
    again = dict(line.split(b",", 1) for line in day_file.read_bytes().splitlines()[1:37])
    assert logstore.append_missing(str(data), "10.0.0.1", {int(ts): tail for ts, tail in again.items()}) == 36
    done = _compact_cli(data, *RETIRE_ALL)
    assert done.returncode == 0, done.stderr
    assert "1 late CSV file past retention" in done.stdout, done.stdout
    assert not list(data.glob("vms/*/*.csv")) and not list(data.glob("columnar/*.parquet"))
    assert _report([data], days=3) == _report([raw], days=3)


def test_rows_are_not_retired_on_the_word_of_rollups_the_report_cannot_read(tmp_path):
    """Rollups of an aggregate version this vmstats does not read (written by a newer one, run
    before a downgrade) are left out of reports.  Retention rolls the day's rows up again before
    it removes them; before, it removed them, and the report lost the day."""
    today = int(time.time()) // DAY
    first = today - 10
    raw, data = tmp_path / "raw", tmp_path / "data"
    _write_fleet(raw, vms=3, days=3, first=first, step=600)
    shutil.copytree(raw, data)
    done = _compact_cli(data, "--compact-after", "1d")
    assert done.returncode == 0, done.stderr
    rollups = logstore.tier_path(str(data), logstore.ROLLUPS_DIR, logstore.day_name(first + 1))
    info = dict(logstore.tier_info(rollups), version=aggregate.ROLLUP_VERSION + 1)
    writer = logstore.rollup_writer(rollups)
    writer.add(pq.read_table(rollups).replace_schema_metadata(None))
    writer.close(info)
    writer.commit()
    done = _compact_cli(data, *RETIRE_ALL)
    assert done.returncode == 0, done.stderr
    assert not list(data.glob("columnar/*.parquet"))
    assert logstore.tier_info(rollups)["version"] == aggregate.ROLLUP_VERSION
    assert _report([data], days=3) == _report([raw], days=3)


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0,
                    reason="needs root and setpriv to run a pass that file modes bind")
def test_a_compacted_file_the_pass_cannot_read_is_named_and_the_other_days_go_on(tmp_path):
    """A columnar file the pass may not read (restored by root with mode 0600, say): its day's
    late CSV file and its rows past retention stay, named in a warning; every other day is
    compacted and retired.  Before, the pass stopped at it with an error, every pass, and no
    day after it was compacted again."""
    today = int(time.time()) // DAY
    first = today - 10
    data = tmp_path / "data"
    _write_fleet(data, vms=2, days=3, first=first, step=600)
    done = _compact_cli(data, "--compact-after", "1d")
    assert done.returncode == 0, done.stderr
    names = [logstore.day_name(first + d) for d in range(3)]
    locked = logstore.tier_path(str(data), logstore.COLUMNAR_DIR, names[0])
    os.chmod(locked, 0)
    for d in (0, 2):  # late records for the locked day and for another
        ts = (first + d) * DAY + 30
        row = logstore.format_tail(Record("10.0.0.1", ts, 9.0, mem=5.0))
        logstore.append_missing(str(data), "10.0.0.1", {ts: row})
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable,
                           "-m", "vmstats", "compact", "--data-dir", str(data), *RETIRE_ALL],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("compacted 1 day (")
    assert "removed 2 columnar" in done.stdout
    assert "%s: cannot be read: Permission denied" % locked in done.stderr
    assert [p.name for p in data.glob("vms/*/*.csv")] == [names[0] + ".csv"]
    assert sorted(p.stem for p in data.glob("columnar/*.parquet")) == [names[0]]


def _split_at_noon(source, first, second, vm: str, day: str) -> None:
    """Move the afternoon of ``vm``'s ``day`` from data dir ``first`` to ``second``: its agent
    went on through another aggregator (a failover behind the balancer)."""
    path = Path(logstore.day_path(str(first), vm, day))
    header, *rows = path.read_bytes().splitlines(keepends=True)
    moved = Path(logstore.day_path(str(second), vm, day))
    moved.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + b"".join(r for r in rows if int(r.split(b",")[0]) % DAY < 12 * HOUR))
    moved.write_bytes(header + b"".join(r for r in rows if int(r.split(b",")[0]) % DAY >= 12 * HOUR))


def test_a_vm_day_split_over_two_compacted_data_dirs_is_read_from_their_rows(tmp_path):
    """Two aggregators each compacted their share of a VM-day (rows kept, rollups beside them):
    the report merges the rows of both, as it did before compaction.  Before, the first dir's
    rollup answered and the other's half of the day was left out while its rows were there."""
    first, second = tmp_path / "a", tmp_path / "b"
    _write_fleet(first, vms=3, days=3, step=600)
    day = logstore.day_name(FIRST + 1)
    _split_at_noon(first, first, second, "10.0.0.2", day)
    _split_at_noon(first, first, second, "10.0.0.3", logstore.day_name(FIRST + 2))
    before = _report([first, second], days=3)
    policy = {"compact_after": 1, "retain_raw": 30, "retain_rollups": 60}
    for data in (first, second):
        _compact(data, policy=policy, now=(FIRST + 6) * DAY)
        assert not list(data.glob("vms/*/*.csv")) and list(data.glob("rollups/*.parquet"))
    assert _report([first, second], days=3) == before
    units = discover([str(first), str(second)])
    assert [logstore.source_path(s) for s in units[("10.0.0.2", FIRST + 1)]] == [
        logstore.tier_path(str(d), logstore.COLUMNAR_DIR, day) for d in (first, second)]
    assert aggregate.is_rollup(units[("10.0.0.1", FIRST + 1)])  # in one dir: its rollup answers
    report = build([str(first), str(second)], Policy.load(overrides={"days": 3}), PriceBook.load(None),
                   workers=1)
    assert report.meta["skipped_files"] == []


def test_a_late_file_beside_a_retired_days_rollup_does_not_stand_for_the_day(tmp_path):
    """A late record for a day whose rows were retired: until the next pass removes it, the
    report keeps answering the VM-day from its rollup and names the file as left out.  Before,
    the late file's one record stood for the whole day."""
    data = tmp_path / "data"
    _write_fleet(data, vms=3, days=3, step=600)
    policy = {"compact_after": 1, "retain_raw": 2, "retain_rollups": 60}
    _compact(data, policy=policy, now=(FIRST + 3) * DAY + 3 * DAY, trust_clock=True)
    assert not list(data.glob("columnar/*.parquet"))
    expected = _report([data], days=3)
    ts = (FIRST + 1) * DAY + 30
    late = Record("10.0.0.2", ts, 99.0, mem=5.0)
    logstore.append_missing(str(data), late.vm, {ts: logstore.format_tail(late)})
    assert _report([data], days=3) == expected
    assert aggregate.is_rollup(discover([str(data)])[("10.0.0.2", FIRST + 1)])
    report = build([str(data)], Policy.load(overrides={"days": 3}), PriceBook.load(None), workers=1)
    (named,) = report.meta["skipped_files"]
    assert named["path"] == logstore.day_path(str(data), "10.0.0.2", logstore.day_name(FIRST + 1))
    assert named["problem"].startswith("left out: it came after its day's rows were retired")


def test_a_report_read_while_a_pass_moves_its_days_finds_them_where_they_went(tmp_path):
    """A compaction pass runs while the report reads (the nightly report and the hourly pass
    meet): the CSV files it listed are gone when it comes to them, their rows in the columnar
    files and rollups.  The report lists the logs again and is the one it would have been.
    Before, those VM-days were named as skipped ("No such file or directory") and left out."""
    data, before = tmp_path / "data", tmp_path / "before"
    _write_fleet(data, vms=40, days=4, step=1800)  # 160 VM-days: three tasks of the report's
    shutil.copytree(data, before)
    passes = []

    def progress(done: int, total: int) -> None:  # after the first task: the pass runs now
        if not passes:
            policy = {"compact_after": 1, "retain_raw": 30, "retain_rollups": 60}
            passes.append(_compact(data, policy=policy, now=(FIRST + 6) * DAY))

    report = build([str(data)], Policy.load(overrides={"days": 4}), PriceBook.load(None), workers=1,
                   progress=progress)
    assert passes[0].csv_removed == 160 and not list(data.glob("vms/*/*.csv"))
    assert report.meta["skipped_files"] == []
    assert json.loads(json.dumps(report.rows, default=str)) == _report([before], days=4)


def _files(folder: Path) -> dict:
    """``{path: (bytes, mtime)}`` of every file under ``folder``: what must survive a pass."""
    return {str(path): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _linked_data_dirs(tmp_path) -> tuple[Path, Path, int]:
    """``(data dir, other data dir, first day)``: two VMs' closed days in each; in the first,
    a VM folder and a day file that are symbolic links into the other."""
    first = int(time.time()) // DAY - 5
    data, other = tmp_path / "data", tmp_path / "other"
    _write_fleet(data, vms=2, days=2, first=first, step=3600)
    _write_fleet(other, vms=2, days=2, first=first, seed=4, step=3600)
    (data / "vms" / "10.0.0.9").symlink_to(other / "vms" / "10.0.0.1")
    day_file = Path(logstore.day_path(str(data), "10.0.0.2", logstore.day_name(first)))
    day_file.unlink()
    day_file.symlink_to(logstore.day_path(str(other), "10.0.0.2", logstore.day_name(first)))
    return data, other, first


def test_a_pass_follows_no_symbolic_link_into_another_data_dir(tmp_path):
    """A VM folder and a day file linked into another data dir: a pass compacted their rows
    into this data dir and removed the other dir's CSV files.  It now leaves links alone, says
    so once on stderr (exit status 0), and compacts the rest; the other dir is untouched."""
    data, other, first = _linked_data_dirs(tmp_path)
    before = _files(other)
    done = _compact_cli(data, "--compact-after", "1d", "--trust-clock")
    assert done.returncode == 0, done.stderr
    assert _files(other) == before
    linked = logstore.day_path(str(data), "10.0.0.2", logstore.day_name(first))
    assert done.stderr.splitlines() == [
        "vmstats compact: warning: symbolic links left alone: 2 VM folders or day files under vms, "
        "e.g. %s -> %s: a pass follows no link out of the data dir (it may lead into another "
        "data dir, whose files are not this one's to remove), so their rows stay uncompacted; "
        "move the files into the data dir, or put the whole data dir on the other disk"
        % (linked, logstore.day_path(str(other), "10.0.0.2", logstore.day_name(first)))]
    assert os.path.islink(linked) and (data / "vms" / "10.0.0.9").is_symlink()
    assert not list((data / "vms").glob("10.0.0.1/*.csv"))  # the rest compacted
    held = {day: logstore.tier_info(logstore.tier_path(str(data), logstore.COLUMNAR_DIR, day))["vms"]
            for day in (logstore.day_name(first), logstore.day_name(first + 1))}
    assert list(held.values()) == [["10.0.0.1"], ["10.0.0.1", "10.0.0.2"]]


def test_the_servers_pass_counts_symbolic_links_and_leaves_the_other_dir_alone(tmp_path):
    """The same under the server's scheduled pass: counted in
    vmstats_compaction_links_left, logged, and the other data dir's files all kept."""
    data, other, first = _linked_data_dirs(tmp_path)
    before = _files(other)
    with serve(tmp_path, "--compact-interval", "0.5s", "--compact-after", "1d", data_dir=data) as server:
        server.wait_for(lambda s: s.metrics().get("vmstats_compaction_passes", 0) >= 1, timeout=60)
        assert server.metrics()["vmstats_compaction_links_left"] >= 1
    assert server.returncode == 0
    assert "compaction: symbolic links left alone: 2 VM folders or day files" in server.output
    assert _files(other) == before
    assert len(list((data / "columnar").glob("*.parquet"))) == 2


def test_a_compaction_pass_ends_with_the_server_killed_under_it(tmp_path):
    """A scheduled pass held just after its first columnar file is in place (tests/stallcompact),
    and stopped there (``kill -STOP``): SIGKILL of the server ends it within seconds, and a later
    pass and the readers find every row.  Before, the pass was tied to nothing and ran on after
    the server, beside a restarted server's own passes (each turned away by the compaction lock
    while it ran); then, watching the server's pid, it still stayed for good if stopped."""
    data, marker = tmp_path / "data", tmp_path / "stalled-pass"
    _write_fleet(data, vms=2, days=2, first=int(time.time()) // DAY - 4, step=3600)
    before = _units_rows(data)
    env = {"PYTHONPATH": str(ROOT / "tests" / "stallcompact"),
           "VMSTATS_TEST_STALL_COMPACT": str(marker)}
    with serve(tmp_path, "--compact-interval", "0.3s", "--compact-after", "1d", env=env) as server:
        server.wait_for(lambda s: marker.exists() and marker.read_text(), timeout=60)
        stalled = int(marker.read_text())
        assert stalled in descendants(server.pid)
        os.kill(stalled, signal.SIGSTOP)
        assert server.killed_leaving([stalled]) == []
    assert list(data.glob("columnar/*.parquet")) and list(data.glob("vms/*/*.csv"))
    done = subprocess.run([sys.executable, "-m", "vmstats", "compact", "--data-dir", str(data),
                           "--compact-after", "1d"], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not list(data.glob("vms/*/*.csv"))
    after = _units_rows(data)
    assert sorted(after) == sorted(before)
    for key, rows in before.items():
        assert after[key].equals(rows), key


#: What each older aggregate version lacks, from the version it was followed by.
LACKED = {6: ["run_mix", "head_mix", "tail_mix", "shared_id"], 7: ["shared_id"]}


@pytest.mark.parametrize("older", sorted(aggregate.OLDER_ROLLUPS))
def test_late_records_of_a_vm_on_a_day_retired_before_an_upgrade_join_its_older_rollups(tmp_path, older):
    """A day retired by an earlier version keeps rollups of an older aggregate version, which
    the report still reads.  A late VM's records on that day could not be rolled up beside them
    ("cannot join them"): its CSV file was left in place, with a warning on every pass.  The kept
    rollups are now brought to this version as the report reads them, and the late VM joins."""
    first = int(time.time()) // DAY - 10
    raw, data = tmp_path / "raw", tmp_path / "data"
    _write_fleet(raw, vms=3, days=3, first=first, step=600)
    shutil.copytree(raw, data)
    assert _compact_cli(data, *RETIRE_ALL).returncode == 0
    rollups = logstore.tier_path(str(data), logstore.ROLLUPS_DIR, logstore.day_name(first + 1))
    writer = logstore.rollup_writer(rollups)
    writer.add(pq.read_table(rollups).drop_columns(LACKED[older]).replace_schema_metadata(None))
    writer.close(dict(logstore.tier_info(rollups), version=older))
    writer.commit()
    start = (first + 1) * DAY
    late = {ts: logstore.format_tail(Record("10.0.0.9", ts, 40.0, mem=20.0, vcpus=2, mem_mb=2048))
            for ts in range(start, start + 6 * HOUR, 600)}
    for folder in (raw, data):
        logstore.append_missing(str(folder), "10.0.0.9", late)
    done = _compact_cli(data, *RETIRE_ALL)
    assert done.returncode == 0, done.stderr
    assert "cannot join" not in done.stderr and not list(data.glob("vms/*/*.csv")), done.stderr
    info = logstore.tier_info(rollups)
    assert info["version"] == aggregate.ROLLUP_VERSION
    assert info["vms"] == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"]
    assert _report([data], days=3) == _report([raw], days=3)
