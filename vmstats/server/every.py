"""Calls the server repeats on its reactor: the minute clock, the watchdogs, the sweeps; and
the jobs it runs on APScheduler's schedule (the flush, compaction).

Twisted's ``LoopingCall`` stops for good at the first exception its function
raises.  A minute clock or a watchdog stopped that way would leave the server
looking well while it no longer completes minutes or watches its processes, so
a failure here is logged with its traceback (a few a minute at most, for a
call that fails every time) and the call goes on at its next interval.
"""

import logging
from collections.abc import Callable

from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.twisted import TwistedScheduler
from twisted.internet import task

from vmstats.server.metrics import RateLimitedLog

log = logging.getLogger(__name__)


class Every:
    """``function()`` every ``interval`` seconds on ``reactor`` from ``start`` until ``stop``."""

    def __init__(self, reactor, interval: float, function: Callable[[], object], what: str):
        self.interval = interval
        self.what = what
        self._loop = task.LoopingCall(function)
        self._loop.clock = reactor
        self.failures = 0
        self._log = RateLimitedLog(log, what + " failure", burst=3, period=60.0,
                                   level=logging.ERROR)

    @property
    def running(self) -> bool:
        return self._loop.running

    def start(self) -> None:
        self._loop.start(self.interval, now=False).addErrback(self._failed)

    def stop(self) -> None:
        """Stop repeating (nothing happens if it is not running)."""
        if self._loop.running:
            self._loop.stop()

    def _failed(self, failure) -> None:
        self.failures += 1
        self._log.emit("%s failed; it runs again in %gs:\n%s", self.what, self.interval,
                       failure.getTraceback())
        self.start()


class IntervalJob:
    """``function()`` every ``interval`` seconds as an APScheduler job on ``reactor``.

    The job runs on the reactor thread (the debug executor runs it inline), which owns the
    server's state.  APScheduler keeps a job's next run as a time of day, and two things
    follow that a server must not do.  A run later than its grace (1 s by default: a reactor
    busy for a second, a step of the wall clock forward) is skipped as missed, with a warning:
    here a run is never skipped for lateness, it happens late.  After a step of the wall clock
    back, the next run is that much further away (a step of an hour: no flush for an hour):
    ``clock_stepped`` (told by the server's WallClock) sets it one interval from now.
    """

    def __init__(self, reactor, interval: float, function: Callable[[], object], job_id: str):
        self.reactor = reactor
        self.interval = interval
        self.function = function
        self.job_id = job_id
        self.scheduler: TwistedScheduler | None = None

    def start(self) -> None:
        self.scheduler = TwistedScheduler(reactor=self.reactor,
                                          executors={"default": DebugExecutor()})
        self.scheduler.add_job(self.function, "interval", seconds=self.interval, id=self.job_id,
                               max_instances=1, coalesce=True, misfire_grace_time=None)
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def clock_stepped(self, _step: float) -> None:
        """The wall clock was stepped: the next run one interval from now, not at the old time."""
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.reschedule_job(self.job_id, trigger="interval", seconds=self.interval)
