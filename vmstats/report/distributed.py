"""The report's per-VM-day aggregation as tasks on a Dask cluster (dask.distributed).

One report machine parses every log it is given; past a few thousand VMs a
fleet's logs outgrow what one machine parses in a report's time.  The work
is already cut into independent tasks (load.py: a few dozen to 256 VM-days each,
reduced to fixed-size aggregates), so a cluster runs exactly those tasks,
with the same function, and the report machine gathers their answers and
goes on as it would with local processes: the results are identical by
construction, whichever storage tier the tasks read.

The workers open the log files by the paths the report machine found, so
every data dir must be mounted at the same path on the report machine and
on each worker (docs/OPERATIONS.md); that is checked before any task runs,
and a worker that cannot see a data dir is one clear error, not a report
with that worker's share silently missing.  ``local`` starts a cluster of
worker processes on this machine, on loopback only, for the report's
lifetime.
"""

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from vmstats import stamps
from vmstats.report.cache import signature, signature_files
from vmstats.report.settings import ReportError

#: The ``--dask`` address that starts a local cluster instead of joining one.
LOCAL = "local"
#: Seconds to wait for a running cluster's scheduler to answer.
CONNECT_TIMEOUT = 20
#: Most VM-days in one task.  A task costs the scheduler, the worker's event loop and the
#: report process a few milliseconds whatever its size: with load's 64 VM-days per task that
#: was ~15% beside the parsing itself (traced per thread on 20M records); 256 (~0.25 s of
#: parsing, a ~2 MB answer, a worker peak of ~230 MiB) makes it ~5%.
MAX_TASK_UNITS = 256
#: Seconds between looks at whether the cluster still has workers, while a task's answer is awaited.
_WORKERS_CHECK = 1.0
#: Tasks per worker thread, at least, while tasks may still be cut finer: the last tasks to
#: finish leave the other workers idle, so a small report is cut in smaller tasks.
TASKS_PER_THREAD = 4


class DaskPool:
    """Runs the report's tasks on a cluster: ``map`` like an Executor's, answers in task order."""

    def __init__(self, client, address: str = LOCAL) -> None:
        self.client = client
        self.address = address

    def task_units(self, units: int) -> int:
        """VM-days per task: up to MAX_TASK_UNITS, as long as every worker thread gets several tasks."""
        from vmstats.report.load import TASK_UNITS

        threads = max(1, sum(self.client.nthreads().values()))
        return max(TASK_UNITS, min(MAX_TASK_UNITS, -(-units // (TASKS_PER_THREAD * threads))))

    def map(self, function: Callable, tasks: list, signatures: list | None = None) -> Iterator:
        """``function(task)`` of each task, run on the workers: ``(aggregates, issues)`` as
        aggregate.aggregate_units answers.  A ReportError, never a partial answer or a
        traceback, when the cluster cannot give the answers this machine would: among them a
        worker that sees other files than ``signatures``, this machine's listing of them."""
        from concurrent.futures import CancelledError

        from distributed import KilledWorker

        # pure=False: two runs over files changed in between must not reuse answers by key.
        listed = signatures if signatures is not None else [None] * len(tasks)
        futures = self.client.map(_on_worker, tasks, listed, function=function, pure=False)
        try:
            for index, future in enumerate(futures):
                try:
                    answer, unread, other, worker = self._result(future)
                except KilledWorker:
                    raise ReportError(
                        "a Dask worker died while parsing logs (out of memory?); "
                        "give the workers more memory or retry"
                    ) from None
                except CancelledError as exc:  # the scheduler went away: every task is cancelled
                    raise self._scheduler_lost(getattr(exc, "reason", None) or "cancelled") from None
                _check_view(unread, worker)
                _check_versions(tasks[index], listed[index], other, worker)
                future.release()  # its answer is here now: the worker may drop its copy
                yield answer
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def _result(self, future):
        """A task's answer; ReportError once the cluster has had no worker for CONNECT_TIMEOUT
        seconds (the last one gone, none restarting it): Dask would wait for one for ever."""
        alone_since = None
        while True:
            try:
                return future.result(timeout=_WORKERS_CHECK)
            except TimeoutError:
                try:
                    threads = self.client.nthreads()
                except OSError:
                    # The scheduler went away between the answer's wait and this question (Dask's
                    # CommClosedError, "Stream is closed", or its connect timeout): the tasks are
                    # lost as when it goes during the wait, and said in the same line.
                    raise self._scheduler_lost("scheduler-connection-lost") from None
                if threads:
                    alone_since = None
                    continue
                now = time.monotonic()
                alone_since = now if alone_since is None else alone_since
                if now - alone_since >= CONNECT_TIMEOUT:
                    raise ReportError("the Dask cluster at %s has had no workers for %d s while parsing "
                                      "logs; no report written: start workers and retry"
                                      % (self.address, CONNECT_TIMEOUT)) from None

    def _scheduler_lost(self, reason: str) -> ReportError:
        """One line for a scheduler gone mid-report, whatever the report was asking it then."""
        return ReportError("lost the Dask scheduler at %s while parsing logs (%s); no report written: "
                           "retry once it is back" % (self.address, reason))


def _on_worker(task: list, listed: list[str] | None, function: Callable) -> tuple:
    """Runs on a worker: ``function(task)``, the files of its issues that this worker could not
    open (``os.access``), the units whose files this worker finds other than ``listed`` says
    (by position: their signature here), and the worker's address, for _check_view and
    _check_versions on the report machine."""
    from distributed import get_worker

    other = []
    if listed is not None:
        seen = [signature(sources, [])[0] for sources in task]
        other = [(k, sig) for k, (sig, was) in enumerate(zip(seen, listed, strict=True)) if sig != was]
    answer = function(task)
    _aggregates, issues = answer
    unread = sorted({entry["path"] for entries in issues.values() for entry in entries
                     if not entry["rows"] and not os.access(entry["path"], os.R_OK)})
    return answer, unread, other, get_worker().address


def _check_view(unread: list[str], worker: str) -> None:
    """A file a worker could not open but this machine can is not damage to name and go around:
    that worker sees other data at the same path (a stale copy, a mount of another export, a
    user the files shut out), and its share of the report would be silently short, its gaps
    then kept in the report's cache.  A file gone here too vanished (compaction removed it since
    it was listed): that is what a run on this machine alone would have met."""
    for path in unread:
        if os.access(path, os.R_OK):
            raise _other_view(worker, "cannot read %s, which this machine reads" % path)


def _check_versions(task: list, listed: list[str], other: list[tuple[int, str]], worker: str) -> None:
    """A worker that finds a unit's files other than this machine listed them (a file missing,
    shorter, or of another time: a stale copy, a replica behind, another export at the path)
    would give aggregates of other data, then kept in the report's cache as this data's.  Where
    this machine still finds what it listed, that is the worker's view, named; where it does
    not, the files changed under the report (today's log grew, compaction moved a day), as a
    run on this machine alone would have met."""
    for k, seen in other:
        here = signature(task[k], [])[0]
        if here != listed[k]:
            continue
        theirs = signature_files(seen)
        for name, version in signature_files(here).items():
            path = name.split("\0", 1)[0]
            if name not in theirs:
                raise _other_view(worker, "cannot read %s, which this machine reads" % path)
            if theirs[name] != version:
                raise _other_view(worker, "sees another version of %s (%s) than this machine (%s)"
                                  % (path, _version(theirs[name]), _version(version)))


def _other_view(worker: str, what: str) -> ReportError:
    return ReportError("Dask worker %s %s: every worker must see the data dirs as this machine "
                       "does, at the same path" % (worker, what))


def _version(version: tuple[int, int]) -> str:
    size, mtime_ns = version
    return "%d bytes, modified %s" % (size, stamps.moment(mtime_ns // 10**9))


def _unseen(data_dirs: Sequence[str]) -> list[str]:
    """The data dirs this worker cannot list (runs on each worker)."""
    return [path for path in data_dirs if not os.path.isdir(path) or not os.access(path, os.R_OK | os.X_OK)]


@contextlib.contextmanager
def pool(address: str, data_dirs: Iterable[str], workers: int) -> Iterator[DaskPool]:
    """A pool on the cluster at ``address`` (``local``: ``workers`` processes started here).

    Every worker must see every data dir at the same absolute path; a worker
    that does not is named in a ReportError before any log is parsed.
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise ReportError("--dask needs Dask's distributed package: pip install 'vmstats[dask]'") from None
    # The scheduler's and workers' routine messages (start, stop, connections) are not the report's.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    dirs = [os.path.abspath(path) for path in data_dirs]
    with contextlib.ExitStack() as stack:
        if address == LOCAL:
            stack.enter_context(dask.config.set(_local_config()))
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,  # the parsing holds the GIL: one process per core
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",  # its HTTP server: loopback, any free port
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(address, timeout=CONNECT_TIMEOUT))
            except (OSError, TimeoutError, ValueError) as exc:
                raise ReportError("cannot reach the Dask scheduler at %s: %s" % (address, exc)) from None
        _check_workers(client, address, dirs)
        yield DaskPool(client, address)


def _local_config() -> dict:
    """Dask settings for a local cluster whose workers cost what the single-machine pool's do.

    Where ``fork`` exists (load.py's pool uses it then), the workers are forked from this
    process, pandas and vmstats already imported: a spawned worker imports them again, ~1 CPU s
    each.  Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_`` (64 KiB) in a spawned worker's
    environment, which also fixes glibc's mmap threshold: every array of a task's parsing is
    then mapped and faulted in afresh, ~40% more CPU for the same task; it is left out (a forked
    worker keeps this process's allocator anyway).  The workers' sampling profiler (a thread
    taking the GIL 100 times a second, for a dashboard nobody opens during a report) is off.
    """
    import multiprocessing

    import dask

    spawn_env = dask.config.get("distributed.nanny.pre-spawn-environ")
    config = {
        "distributed.nanny.pre-spawn-environ": {
            name: value for name, value in spawn_env.items() if name != "MALLOC_TRIM_THRESHOLD_"
        },
        "distributed.worker.profile.enabled": False,
    }
    if "fork" in multiprocessing.get_all_start_methods():
        import pandas  # noqa: F401  (imported once here, inherited by the forked workers)

        from vmstats.report import load  # noqa: F401

        config["distributed.worker.multiprocessing-method"] = "fork"
    return config


def _check_workers(client, address: str, dirs: list[str]) -> None:
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
    except TimeoutError:
        raise ReportError("the Dask cluster at %s has no workers" % address) from None
    for worker, missing in sorted(client.run(_unseen, dirs).items()):
        if missing:
            raise ReportError(
                "Dask worker %s cannot read data dir %s: mount the data dirs at the same path "
                "on every worker" % (worker, missing[0])
            )
