"""The report on a real Dask cluster (two local worker processes) gives what one machine gives."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _cluster(tmp_path, worker_prefix: tuple = (), worker_args: tuple = ()):
    """A real scheduler and one worker process (``worker_prefix`` runs it in another setting),
    each its own ``dask`` command, as an operator starts them; killed at the end.  Yields the
    address, a client of its own and the scheduler's and worker's processes."""
    dask = str(Path(sys.executable).parent / "dask")
    address = "tcp://127.0.0.1:%d" % _free_port()
    logs = [open(tmp_path / name, "w") for name in ("scheduler.log", "worker.log")]
    port = address.rsplit(":", 1)[1]
    processes = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", port,
                                   "--dashboard-address", "127.0.0.1:0"], stdout=logs[0], stderr=logs[0])]
    try:
        processes.append(subprocess.Popen([*worker_prefix, dask, "worker", address, "--nworkers", "1",
                                           "--nthreads", "1", "--host", "127.0.0.1", "--dashboard-address",
                                           "127.0.0.1:0", *worker_args], stdout=logs[1], stderr=logs[1]))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
            yield address, client, processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        for log in logs:
            log.close()


def _two_views(split_fleet, tmp_path) -> tuple:
    """Two copies of a data dir, ``real`` (this machine's) and ``stale`` (a worker's, mounted at
    real's path by the command prefix ``bind``): ``(real, stale's copy of one day file, real's
    path of it, bind)``, for a test to make that one file differ."""
    _whole, first, _second = split_fleet
    real, stale = tmp_path / "real", tmp_path / "stale"
    shutil.copytree(first, real)
    shutil.copytree(first, stale)
    vm = sorted(logstore.iter_vms(str(real)))[0]
    day, path = logstore.day_files(str(real), vm)[2]
    bind = ("unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh", str(stale), str(real))
    return real, logstore.day_path(str(stale), vm, day), path, bind


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare to give a worker a mount of its own")
def test_a_worker_that_sees_other_files_stops_the_report_in_one_line(split_fleet, tmp_path):
    """A worker whose mount at the data dir's path is a stale copy (a day file missing): the
    report stops with one line naming the worker and the file, exit 1, and nothing is cached.
    Before, that worker's tasks named the file as skipped, as a damaged one, and the report
    was written without the VM-day, exit 0, the gap kept in the cache for later runs."""
    real, stale, missing, bind = _two_views(split_fleet, tmp_path)
    os.unlink(stale)
    out = tmp_path / "out"

    def report(*extra):
        return subprocess.run([sys.executable, "-m", "vmstats", "report", str(real), "-o", str(out), *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)

    with _cluster(tmp_path, bind) as (address, _client, _processes):
        done = report("--dask", address)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()[-1:]
    assert re.fullmatch(r"Error: Dask worker tcp://127\.0\.0\.1:\d+ cannot read %s, which this machine "
                        r"reads: every worker must see the data dirs as this machine does, at the same path"
                        % re.escape(missing), line), done.stderr
    assert "Traceback" not in done.stderr
    alone = report()
    assert alone.returncode == 0, alone.stderr
    assert "skipped" not in alone.stdout + alone.stderr
    assert json.loads((out / "report.json").read_text())["meta"]["skipped_files"] == []


def test_a_scheduler_lost_mid_report_is_one_error(tmp_path):
    """The scheduler dies while a task runs: a ReportError (one line from the command), not
    Dask's FutureCancelledError and its traceback."""
    with _cluster(tmp_path) as (address, client, (scheduler, _worker)), \
            distributed.pool(address, [str(tmp_path)], workers=1) as pool:
        with _killed_while_processing(client, scheduler), pytest.raises(
                ReportError, match=r"^lost the Dask scheduler at %s while parsing logs "
                                   r"\(scheduler-connection-lost\); no report written: retry once it is back$"
                                   % re.escape(address)):
            next(pool.map(time.sleep, [120]))  # a task still running when the scheduler goes


def test_a_scheduler_lost_as_the_report_looks_for_workers_is_one_error(tmp_path, monkeypatch):
    """The scheduler dies just as the report, a task's answer late, asks how many workers the
    cluster has (a moment a loaded host makes likely): the same ReportError as when it dies
    during the wait.  Before, Dask's own error came through: CommClosedError ("Stream is
    closed") or OSError ("Timed out trying to connect"), and the command printed that."""
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", 2)
    with _cluster(tmp_path) as (address, _client, (scheduler, _worker)), \
            distributed.pool(address, [str(tmp_path)], workers=1) as pool:
        asked = pool.client.nthreads

        def scheduler_gone_first(*args, **kwargs):
            if scheduler.poll() is None:
                scheduler.send_signal(signal.SIGKILL)
                scheduler.wait()
            return asked(*args, **kwargs)

        monkeypatch.setattr(pool.client, "nthreads", scheduler_gone_first)
        with pytest.raises(ReportError, match=r"^lost the Dask scheduler at %s while parsing logs "
                                              r"\(scheduler-connection-lost\); no report written: "
                                              r"retry once it is back$" % re.escape(address)):
            next(pool.map(time.sleep, [120]))
    assert scheduler.returncode == -signal.SIGKILL  # it was asked, and the scheduler killed


def test_a_cluster_left_without_workers_mid_report_is_one_error(tmp_path, monkeypatch):
    """The only worker dies (no nanny to start it again) while a task runs: a ReportError once
    no worker has come for CONNECT_TIMEOUT.  Before, the report waited for one for ever."""
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", 2)
    with _cluster(tmp_path, worker_args=("--no-nanny",)) as (address, client, (_scheduler, worker)), \
            distributed.pool(address, [str(tmp_path)], workers=1) as pool:
        with _killed_while_processing(client, worker), pytest.raises(
                ReportError, match=r"^the Dask cluster at %s has had no workers for 2 s while parsing logs; "
                                   r"no report written: start workers and retry$" % re.escape(address)):
            next(pool.map(time.sleep, [120]))


@contextlib.contextmanager
def _killed_while_processing(client, process):
    """SIGKILL ``process`` (in a thread) as soon as the cluster runs a task."""

    def kill() -> None:
        deadline = time.monotonic() + 60
        while not any(client.processing().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield
    finally:
        killer.join()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare to give a worker a mount of its own")
def test_a_worker_that_sees_an_older_copy_stops_the_report_in_one_line(split_fleet, tmp_path):
    """A worker whose mount at the data dir's path is a copy taken earlier (a day file shorter,
    as a replica behind): the report wrote that worker's older rows as the VM-day's, exit 0,
    and kept them in its cache for later runs.  Now one line names the worker and the file."""
    real, older, path, bind = _two_views(split_fleet, tmp_path)
    lines = Path(older).read_bytes().splitlines(keepends=True)
    Path(older).write_bytes(b"".join(lines[: len(lines) // 2]))
    os.utime(older, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns - 60 * 10**9))
    out = tmp_path / "out"
    with _cluster(tmp_path, bind) as (address, _client, _processes):
        done = subprocess.run([sys.executable, "-m", "vmstats", "report", str(real), "-o", str(out),
                               "--dask", address], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()[-1:]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(r"Error: Dask worker tcp://127\.0\.0\.1:\d+ sees another version of %s \(\d+ bytes, "
                        r"modified %s\) than this machine \(%d bytes, modified %s\): every worker must "
                        r"see the data dirs as this machine does, at the same path"
                        % (re.escape(path), stamp, os.stat(path).st_size, stamp), line), done.stderr
    assert not list(out.glob(".cache/report-cache*")) and not (out / "report.html").exists()
