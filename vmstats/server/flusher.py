"""The scheduled flush: swap the table, write it through a process pool, retry failures.

APScheduler's TwistedScheduler wakes the job on the reactor; the job only
swaps the table and hands shares to the pool.  Pool results come back in the
executor's thread and are delivered into Deferreds with
``reactor.callFromThread``, so the reactor never waits on the disk.  One flush
is in flight at a time, so two writes of the same VM never race and the log
order follows the receive order.
"""

import logging
import os
import time
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from twisted.application import service
from twisted.internet import defer

from vmstats.server import executors
from vmstats.server.buffer import Buffer, Table
from vmstats.server.every import Every, IntervalJob
from vmstats.server.memory import release_free_memory
from vmstats.server.metrics import Metrics, RateLimitedLog
from vmstats.server.writer import (
    LINK_REFUSED,
    MarshalledShare,
    WriterContext,
    init_writer,
    write_share,
)
from vmstats.words import counted

log = logging.getLogger(__name__)


#: How often the pool is checked for a dead worker (in a flush or between flushes).
WATCH_INTERVAL = 0.5


class WriterDied(RuntimeError):
    """A task could not reach a writer: its pool had lost a worker."""


#: Records per pool task.  The pool pickles each task in a thread of this process, holding
#: the GIL for the whole call: a million records in one task stall the reactor for half a
#: second (and the UDP socket overflows); 20,000, marshalled (``MarshalledShare``), ~1.5 ms.
TASK_RECORDS = 20_000
#: A flush this large is followed by a request to the allocator to give back what it freed:
#: smaller ones leave too little free memory to be worth the call's few milliseconds.
TRIM_AFTER_RECORDS = 100_000


def split_tasks(table: Table, max_records: int = TASK_RECORDS) -> list[list[tuple[str, dict[int, bytes]]]]:
    """Divide the VMs into pool tasks of at most ``max_records`` records (a VM is never split).

    The pool hands tasks to whichever worker is free, so the work spreads over
    the workers; keeping each VM in one task means two workers never append
    to the same log at once.
    """
    tasks: list[list] = []
    current: list = []
    size = 0
    for vm, rows in table.items():
        if current and size + len(rows) > max_records:
            tasks.append(current)
            current, size = [], 0
        current.append((vm, rows))
        size += len(rows)
    if current:
        tasks.append(current)
    return tasks


class FlusherService(service.Service):
    """Owns the writer pool and the flush schedule."""

    name = "flusher"

    def __init__(self, reactor, buffer: Buffer, metrics: Metrics, data_dir: str,
                 interval: float, workers: int, drain_timeout: float, journal=None):
        self.reactor = reactor
        self.journal = journal
        self.buffer = buffer
        self.metrics = metrics
        self.data_dir = data_dir
        self.interval = interval
        self.workers = max(1, workers)
        self.drain_timeout = drain_timeout
        self.pool = None
        #: The flush's APScheduler job (every.py).
        self.schedule = IntervalJob(reactor, interval, self.flush, "flush")
        self.in_flight: defer.Deferred | None = None
        self.in_flight_records = 0
        self.pending = False
        self.deadline_missed = False
        self.unwritten = 0
        #: VMs whose last write failed (a gauge: disk full, permissions).
        self.failing_vms = 0
        #: VMs whose last write was refused for a symbolic link (logstore.LinkRefused): said
        #: once when a VM joins them, not every flush, since only the operator can end it.
        self.linked_vms: set[str] = set()
        self._trouble = RateLimitedLog(log, "write failure", burst=1, period=max(interval, 10.0))
        self._unwritable = RateLimitedLog(log, "unwritable", burst=1, period=max(interval, 10.0),
                                          level=logging.ERROR)
        self._context = None
        self._watchdog: Every | None = None
        #: The manager threads of the pools ended so far, joined at the stop (executors.join).
        self._ended: list = []

    def startService(self) -> None:
        service.Service.startService(self)
        # Forking a process that runs the reactor is unsafe: workers come from a forkserver.
        self._context = WriterContext()
        self._context.set_forkserver_preload(["vmstats.server.forkserver"])
        self.pool = self._new_pool()
        self._watchdog = Every(self.reactor, WATCH_INTERVAL, self._check_writers,
                               "the writers' watchdog")
        self._watchdog.start()
        self.schedule.start()

    def _new_pool(self) -> ProcessPoolExecutor:
        """A pool of ``workers`` writers, started now rather than at the first flush."""
        pool = ProcessPoolExecutor(self.workers, mp_context=self._context, initializer=init_writer,
                                   initargs=(os.getpid(),))
        for _worker in range(self.workers):
            pool.submit(int)  # an executor starts a process per task until it has them all
        return pool

    def _check_writers(self) -> None:
        """Replace the pool if one of its workers died, in a flush or between flushes.

        The workers share their task queue's lock: one killed while it held
        it (an idle worker waits for a task holding it) left a
        ``multiprocessing.Pool`` with workers that never took a task again,
        and ending that pool waited for the lock in the reactor, for ever.
        An executor notices the death itself: it fails every task it held
        (the flush puts their VMs back into the buffer; rows another worker
        did write are skipped by the writer's check for rows already
        logged) and refuses new ones, and it is ended here without waiting,
        its processes killed, for a new one.
        """
        if not getattr(self.pool, "_broken", False):
            return
        self.metrics.writer_deaths += 1
        log.error("a writer process died %s: rebuilding the pool; %s",
                  "during a flush" if self.in_flight is not None else "between flushes",
                  "its records are kept for the next flush" if self.in_flight is not None
                  else "no records were in it")
        old, self.pool = self.pool, self._new_pool()
        self._ended.append(executors.kill(old))

    def request_flush(self) -> None:
        """Flush soon (the buffer hit its global cap); never re-entrantly."""
        self.reactor.callLater(0, self.flush)

    def flush(self) -> defer.Deferred:
        """Write everything held now; fires when the writes (and retries) are settled."""
        if self.in_flight is not None:
            self.pending = True
            return self.in_flight
        table = self.buffer.swap()
        # Every record journaled so far is in this table or was written before.
        mark = self.journal.seal() if self.journal is not None else None
        if not table:
            if mark is not None:
                self.journal.retire(mark)
            return defer.succeed(0)
        self.in_flight_records = sum(len(rows) for rows in table.values())
        started = time.monotonic()
        tasks = split_tasks(table)
        self._check_writers()  # a worker lost since the last look: a new pool takes the tasks
        done = defer.DeferredList([self._submit(share) for share in tasks], consumeErrors=True)
        done.addCallback(self._settle, tasks, started, mark)
        self.in_flight = done
        done.addBoth(self._finished)
        return done

    def _submit(self, share) -> defer.Deferred:
        try:
            future = self.pool.submit(write_share, self.data_dir, MarshalledShare(share))
        except RuntimeError as exc:  # broken since the last look: kept for the next flush
            return defer.fail(WriterDied(str(exc)))
        result = defer.Deferred()
        future.add_done_callback(lambda done: self.reactor.callFromThread(self._deliver, result,
                                                                           done))
        return result

    def _deliver(self, result: defer.Deferred, future) -> None:
        """A pool task's outcome into its Deferred: the rows per VM, or why the task failed
        (its pool lost a worker: BrokenProcessPool, and is replaced at once; ended before the
        task ran: cancelled)."""
        if future.cancelled():
            result.errback(WriterDied("the writer pool was ended before the task ran"))
            return
        try:
            value = future.result()
        except (Exception, CancelledError) as exc:
            if isinstance(exc, BrokenProcessPool):
                self._check_writers()  # while the flush is in flight: its records are named
            result.errback(exc)
            return
        result.callback(value)

    def _settle(self, outcomes, tasks, started: float, mark: int | None = None) -> int:
        written = vms = 0
        kept: list[str] = []  # VMs whose rows went back into the buffer
        first_error = None
        lost_vms = lost_records = 0  # refused by the layout: no retry can write them
        lost_error = None
        linked: dict[str, str] = {}  # VMs refused for a symbolic link: their error
        answered: set[str] = set()  # VMs a writer tried (whose task did not fail whole)
        for (ok, results), task in zip(outcomes, tasks, strict=True):
            vms += len(task)
            if not ok:
                # The task never ran to the end (a worker died, a pickling error): every VM of
                # this task is kept for the next flush; the other tasks' writes stand.
                self.metrics.write_failures += len(task)
                first_error = first_error or "writer task failed: %s" % results.getErrorMessage()
                for vm, rows in task:
                    self.buffer.restore(vm, rows)
                    kept.append(vm)
                continue
            rows_of = dict(task)
            answered.update(vm for vm, _count, _error, _retry in results)
            for vm, count, error, retry in results:
                if error is None:
                    written += count
                    # Rows the day file already had (a resend after an earlier flush): not
                    # written twice, and counted so that received = written + repeated + held.
                    self.metrics.repeated += len(rows_of[vm]) - count
                    continue
                self.metrics.write_failures += 1
                if retry:
                    if error.startswith(LINK_REFUSED):
                        linked[vm] = error
                    else:
                        first_error = first_error or "vm %s: %s" % (vm, error)
                    self.buffer.restore(vm, rows_of[vm])
                    kept.append(vm)
                else:
                    lost_vms += 1
                    lost_records += len(rows_of[vm])
                    lost_error = lost_error or "vm %s: %s" % (vm, error)
        if lost_vms:
            # The parser admits only ids the layout takes, so this is a bug or a changed layout;
            # one line per period whatever the number of VMs and flushes.
            self.metrics.drop("unwritable", lost_records)
            self._unwritable.emit("dropping %s of %s the log layout refuses: %s",
                                  counted(lost_records, "record"), counted(lost_vms, "VM"), lost_error)
        self.failing_vms = len(kept)
        self._say_links(linked, answered)
        if first_error is not None:
            # Once per period, not once per VM: a full disk fails every VM of every flush.
            self._trouble.emit("writing the records of %s failed (will retry; %s held): %s",
                               counted(len(kept), "VM"), counted(self.buffer.count, "record"),
                               first_error)
        if not kept and mark is not None:
            self.journal.retire(mark)  # everything the flush took is in the logs
        self._free(tasks, self.in_flight_records)
        self.metrics.flushes += 1
        self.metrics.flushed_records += written
        self.metrics.flush_seconds += time.monotonic() - started
        log.debug("flushed %s of %s in %.3fs", counted(written, "record"), counted(vms, "VM"),
                  time.monotonic() - started)
        return written

    def _say_links(self, linked: dict[str, str], tried: set[str]) -> None:
        """Log the VMs a flush did not write for a symbolic link (``linked``: their errors) that
        were not refused so before, in one line; forget those of ``tried`` (the VMs a writer
        tried) that are no longer refused.

        Their rows stay in memory and their journal segments on disk, and are retried every
        flush, so nothing acknowledged is lost; but only the operator can end it (by moving the
        files into the data dir), so it is said once, not every flush."""
        self.linked_vms -= tried - linked.keys()
        new = sorted(linked.keys() - self.linked_vms)
        self.linked_vms |= linked.keys()
        if new:
            log.error("not writing the records of %s through a symbolic link (kept in memory and "
                      "in the journal, retried every flush; %s now held back so): %s%s",
                      counted(len(new), "VM"), counted(len(self.linked_vms), "VM"),
                      linked[new[0]].removeprefix(LINK_REFUSED),
                      "" if len(new) == 1 else " (and %d more)" % (len(new) - 1))

    def _free(self, tasks: list, records: int = 0) -> None:
        """Let go of a flush's rows one task (<= TASK_RECORDS) per reactor turn.

        The tasks hold the last references to every row the flush took, and
        freeing a million rows at once kept the reactor busy for half a
        second (measured: 0.6 s for 1.2M), long enough to overflow the UDP
        socket at 200,000 records/s.  Once a flush of ``records`` >=
        TRIM_AFTER_RECORDS is let go, the allocator is asked to give the freed
        memory back to the system (release_free_memory).
        """
        if tasks:
            tasks.pop()
            if tasks:
                self.reactor.callLater(0, self._free, tasks, records)
                return
        if records >= TRIM_AFTER_RECORDS:
            release_free_memory()

    def _finished(self, result):
        self.in_flight = None
        self.in_flight_records = 0
        if self.pending and self.running:
            self.pending = False
            self.reactor.callLater(0, self.flush)
        return result

    @defer.inlineCallbacks
    def stopService(self):
        """Final flush (everything received), then the pool, all within the drain deadline."""
        service.Service.stopService(self)
        self.schedule.stop()
        deadline = time.monotonic() + self.drain_timeout
        try:
            # Drain: the in-flight flush, then what arrived meanwhile, then any retries once.
            for _attempt in range(3):
                if self.in_flight is not None:
                    yield self._within(self.in_flight, deadline)
                if not self.buffer.count:
                    break
                yield self._within(self.flush(), deadline)
        except defer.TimeoutError:
            self.deadline_missed = True
            log.error("the writers missed the %.1fs drain deadline", self.drain_timeout)
        self.unwritten = self.buffer.count + self.in_flight_records
        if self._watchdog is not None:
            self._watchdog.stop()
        if self.deadline_missed:  # a writer stuck past the deadline is not waited for
            self._ended.append(executors.kill(self.pool))
        else:
            self._ended.append(executors.end(self.pool))

    def _within(self, waiting: defer.Deferred, deadline: float) -> defer.Deferred:
        """Wait for ``waiting`` without cancelling it, up to the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return defer.fail(defer.TimeoutError())
        mirror = defer.Deferred()
        waiting.addBoth(lambda result: (mirror.called or mirror.callback(None), result)[1])
        timer = self.reactor.callLater(remaining, lambda: mirror.called
                                       or mirror.errback(defer.TimeoutError()))
        mirror.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
        return mirror

    def join(self) -> None:
        """Reap the worker processes once the reactor has stopped: the threads of every pool
        ended, this one's included, are joined (executors.join)."""
        if self.pool is not None:
            self._ended.append(executors.kill(self.pool) if self.deadline_missed
                               else executors.end(self.pool))
        ended, self._ended = self._ended, []
        executors.join(ended)

