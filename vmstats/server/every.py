"""Calls the server repeats on its reactor: the minute clock, the watchdogs, the sweeps.

Twisted's ``LoopingCall`` stops for good at the first exception its function
raises.  A minute clock or a watchdog stopped that way would leave the server
looking well while it no longer completes minutes or watches its processes, so
a failure here is logged with its traceback (a few a minute at most, for a
call that fails every time) and the call goes on at its next interval.
"""

import logging
from collections.abc import Callable

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
