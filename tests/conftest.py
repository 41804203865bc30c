"""Shared fixtures, and the number of test workers."""

import os
import subprocess

import pytest


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int | None:
    """Twice as many workers as the machine has cores (``-n auto``; one on a one-core machine).

    A worker spends about two thirds of its time waiting on what its tests started rather than
    computing (servers flushing on their timers, agents sending once a second, clocks to be
    stepped, receivers answering late): the suite's processes used 715 s of CPU in 1917 s of
    its tests' time.  On 2 cores a third of the suite took 226 s with three workers, 168 s
    with four and 165 s with five, the CPU the same: four fill the waits, a fifth only queues
    for the cores (setup.cfg's --maxprocesses).  PYTEST_XDIST_AUTO_NUM_WORKERS still decides
    when it is set (None: xdist reads it).
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity outside Linux
        cores = os.cpu_count() or 1
    return 2 * cores if cores > 1 else 1


#: The files that take longest, about the longest first: a worker that has nothing left to
#: take then finishes with short files while the others do too.  Handed out by their number of
#: tests instead, a file whose few tests each run for many seconds (a sanitized build of the C
#: parts, real daemons on their intervals, a fleet behind nginx, a browser, a flood of VM ids)
#: started late and ran on alone at the end of the suite.
LONG_FILES_FIRST = ("test_server_sanitizers.py", "test_rules_server.py",
                    "test_storage_compaction.py", "test_capacity_edges.py",
                    "test_reliability_journal.py", "test_report_browser.py",
                    "test_report_damaged.py", "test_formats_collectd_daemon.py",
                    "test_report_backtest.py", "test_server_fastpath.py",
                    "test_server_clock.py", "test_balancer.py", "test_server_max_vms.py",
                    "test_report_simulated.py", "test_reliability_hostile.py",
                    "test_reliability_connections.py")


def pytest_collection_modifyitems(config, items) -> None:
    """The files of LONG_FILES_FIRST first, then the others by their number of tests, most
    first, as xdist orders them (setup.cfg turns its own ordering off for this one); a
    file's tests keep their order."""
    files: dict = {}
    for item in items:
        files.setdefault(item.path, []).append(item)
    first = {name: rank for rank, name in enumerate(LONG_FILES_FIRST)}
    order = sorted(files, key=lambda path: (first.get(path.name, len(first)), -len(files[path])))
    items[:] = [item for path in order for item in files[path]]


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB tmpfs (needs root), for full-disk tests; skipped where mounting is not
    permitted."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (%s)" % result.stderr.strip()[:100])
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
