"""The report on a real Dask cluster (two local worker processes) gives what one machine gives."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_report_policy import build_fleet
from test_report_stats import run

from vmstats import logstore
from vmstats.report import distributed, load
from vmstats.report.discover import discover
from vmstats.report.settings import ReportError
from vmstats.server import compact

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400


@pytest.fixture(scope="module")
def split_fleet(tmp_path_factory):
    """The policy tests' fleet spread over two aggregators' data dirs, with what a balancer leaves:
    a VM's days in both, one day file in both (records stored twice), and a damaged file."""
    base = tmp_path_factory.mktemp("distributed")
    whole, first, second = base / "whole", base / "a", base / "b"
    build_fleet(whole)
    vms = sorted(logstore.iter_vms(str(whole)))
    some_day = logstore.day_files(str(whole), vms[0])[3][1]
    with open(some_day, "ab") as handle:
        handle.write(b"garbage line\n")
    shutil.copytree(whole, first)
    second.mkdir()
    for i, vm in enumerate(vms):
        for k, (day, path) in enumerate(logstore.day_files(str(first), vm)):
            if (i + k) % 2:
                moved = logstore.day_path(str(second), vm, day)
                Path(moved).parent.mkdir(parents=True, exist_ok=True)
                if k == 5:
                    shutil.copyfile(path, moved)  # in both: the same records twice
                else:
                    shutil.move(path, moved)
    return whole, first, second


@pytest.fixture(scope="module")
def dask_pool(split_fleet):
    with distributed.pool(distributed.LOCAL, [str(d) for d in split_fleet], workers=2) as pool:
        yield pool


def test_a_cluster_of_two_workers_gives_the_single_machine_report(split_fleet, dask_pool):
    whole, first, second = split_fleet
    alone, rows = run([first, second])
    spread, spread_rows = run([first, second], pool=dask_pool)
    assert spread.rows == alone.rows
    assert spread.window == alone.window
    assert spread.meta["damaged_files"] == alone.meta["damaged_files"]
    assert [entry["problem"] for entry in spread.meta["damaged_files"]] == ["1 malformed line skipped"]
    # Both workers took part: the tasks really ran on the cluster, not in this process.
    assert len(dask_pool.client.scheduler_info()["workers"]) == 2
    # And the split data is the whole fleet, each record once.
    _one, whole_rows = run([whole])
    assert {vm: row["records"] for vm, row in spread_rows.items()} == {
        vm: row["records"] for vm, row in whole_rows.items()
    }
    assert [row["cpu_p95"] for row in spread.rows] == [
        whole_rows[row["vm"]]["cpu_p95"] for row in spread.rows
    ]


def test_tasks_are_the_ones_the_single_machine_runs(split_fleet, dask_pool):
    _whole, first, second = split_fleet
    units = discover([str(first), str(second)])
    days = [day for _vm, day in units]
    local = load.load(units, None, min(days), max(days), workers=1)
    spread = load.load(units, None, min(days), max(days), pool=dask_pool)
    assert spread.parsed_units == local.parsed_units == len(units) > 2 * load.TASK_UNITS
    # A small report is cut as the single machine cuts it, so several tasks ran on the cluster.
    assert dask_pool.task_units(len(units)) == load.TASK_UNITS
    for name, values in local.data.items():
        assert spread.data[name].tobytes() == values.tobytes(), name


def test_compacted_days_are_read_by_the_workers_as_csv_is(split_fleet, dask_pool, tmp_path):
    """One aggregator's days compacted to columnar files (its rollups removed, so the workers read
    the rows), the other's still CSV: the same report as from CSV alone."""
    _whole, first, second = split_fleet
    last = max(day for _vm, day in discover([str(first)]))
    policy = compact.Policy(compact_after=DAY, retain_raw=3660 * DAY, retain_rollups=3660 * DAY)
    compacted = tmp_path / "compacted"
    shutil.copytree(first, compacted)
    summary = compact.compact(str(compacted), policy, now=(last + 2) * DAY)
    assert summary.days_compacted and not list((compacted / logstore.VMS_DIR).glob("*/*.csv"))
    shutil.rmtree(compacted / "rollups")
    spread, _rows = run([compacted, second], pool=dask_pool)
    alone, _rows = run([first, second])
    assert spread.rows == alone.rows


def test_a_large_report_is_cut_in_larger_tasks(dask_pool):
    """Each task costs the scheduler and the report process a few ms beside its work: a big
    report's tasks hold more VM-days, while every worker thread still gets several."""
    threads = sum(dask_pool.client.nthreads().values())
    assert threads == 2
    assert dask_pool.task_units(70_000) == distributed.MAX_TASK_UNITS > load.TASK_UNITS
    between = distributed.TASKS_PER_THREAD * threads * 100
    assert dask_pool.task_units(between) == 100


def test_local_workers_keep_the_allocator_of_the_single_machine_pool(dask_pool):
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_ for its workers, which makes glibc map and
    fault in every large array afresh (~40% more CPU per task): a local cluster's workers run
    without it, and without the sampling profiler, as the single-machine pool's processes do."""
    import dask

    def settings():
        import os

        return os.environ.get("MALLOC_TRIM_THRESHOLD_"), dask.config.get("distributed.worker.profile.enabled")

    assert set(dask_pool.client.run(settings).values()) == {(None, False)}


def test_a_worker_that_cannot_see_a_data_dir_is_named(split_fleet, dask_pool, tmp_path):
    with pytest.raises(
        ReportError, match=r"Dask worker tcp://127\.0\.0\.1:\d+ cannot read data dir .*nowhere"
    ):
        distributed._check_workers(
            dask_pool.client, "local", [str(split_fleet[1]), str(tmp_path / "nowhere")]
        )


def test_report_command_with_a_local_cluster(split_fleet, tmp_path):
    _whole, first, second = split_fleet

    def report(out, *extra):
        result = subprocess.run(
            [sys.executable, "-m", "vmstats", "report", str(first), str(second), "-o", str(out), "--no-cache"]
            + list(extra),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return json.loads((out / "report.json").read_text())

    alone = report(tmp_path / "alone")
    spread = report(tmp_path / "spread", "--dask", "local", "--workers", "2")
    assert spread["vms"] == alone["vms"]
    assert (tmp_path / "spread" / "report.csv").read_bytes() == (
        tmp_path / "alone" / "report.csv"
    ).read_bytes()


def test_an_unreachable_scheduler_is_one_line(split_fleet, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", 2)
    with pytest.raises(ReportError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with distributed.pool("tcp://127.0.0.1:9", [str(split_fleet[1])], workers=1):
            pass
