"""The scheduled compaction: an APScheduler job that runs ``vmstats compact`` in a process.

Compaction reads and writes whole fleet-days (compact.py); doing that on the
reactor would stall ingest, and doing it in the writer pool would hold back
flushes for as long.  So the job only starts a child process (the same
``vmstats compact`` an operator can run by hand) and hears its exit through
a ProcessProtocol: the reactor never waits.  One pass runs at a time; the
pass's own lock also keeps a hand-run pass and the server's apart.  A pass
is safe to kill at any moment (compact.py), so stopping the server ends a
running one with SIGTERM rather than waiting for it, and a server killed
outright takes it along (``vmstats compact --end-with``, lifeline.py).
"""

import logging
import os
import sys

from twisted.application import service
from twisted.internet import defer, protocol

from vmstats.server.config import FUTURE_DATED, LINKS_LEFT, RETENTION_HELD_BACK, format_duration
from vmstats.server.every import IntervalJob
from vmstats.server.metrics import Metrics

log = logging.getLogger(__name__)


class _Pass(protocol.ProcessProtocol):
    """One ``vmstats compact`` child: its stdout (what it did) and stderr (warnings, errors)
    kept apart and bounded, its exit code delivered."""

    def __init__(self):
        self.done: defer.Deferred = defer.Deferred()
        self.output = b""
        self.errors = b""

    def outReceived(self, data: bytes) -> None:
        self.output = (self.output + data)[-4096:]

    def errReceived(self, data: bytes) -> None:
        self.errors = (self.errors + data)[-4096:]

    def processEnded(self, reason) -> None:
        self.done.callback(reason.value.exitCode)


class CompactionService(service.Service):
    """Starts a compaction pass every ``interval`` seconds, one at a time."""

    name = "compaction"

    def __init__(self, reactor, metrics: Metrics, data_dir: str, interval: float,
                 compact_after: float, retain_raw: float, retain_rollups: float):
        self.reactor = reactor
        self.data_dir = data_dir
        self.interval = interval
        self.arguments = ["--data-dir", data_dir, "--compact-after", format_duration(compact_after),
                          "--retain-raw", format_duration(retain_raw),
                          "--retain-rollups", format_duration(retain_rollups)]
        #: The pass's APScheduler job (every.py).
        self.schedule = IntervalJob(reactor, interval, self.run_pass, "compact")
        self.running_pass: _Pass | None = None
        self.transport = None
        self.passes = 0
        self.failures = 0
        self.held_back = 0
        self.future_dated = 0
        self.links_left = 0
        #: The last failed pass's error: the same one again (a lock folder, a full disk) is
        #: counted but not logged every pass.
        self.last_error: str | None = None
        metrics.gauges["compaction_passes"] = ("Compaction passes finished (docs/STORAGE.md).",
                                               lambda: self.passes)
        metrics.gauges["compaction_failures"] = ("Compaction passes that exited with an error.",
                                                 lambda: self.failures)
        metrics.gauges["compaction_retention_held_back"] = (
            "Compaction passes whose retention was measured from the newest data's day, the clock "
            "being a day or more past it: a clock ahead, or a data dir no longer receiving "
            "(docs/STORAGE.md; vmstats compact --trust-clock).", lambda: self.held_back)
        metrics.gauges["compaction_future_dated"] = (
            "Compaction passes that found day files dated after the clock's next day, left in "
            "place and not taken as the newest data (docs/STORAGE.md).", lambda: self.future_dated)
        metrics.gauges["compaction_links_left"] = (
            "Compaction passes that found symbolic links under vms/ (a VM folder or a day file) "
            "and left them alone, uncompacted (docs/STORAGE.md).", lambda: self.links_left)

    def startService(self) -> None:
        service.Service.startService(self)
        self.schedule.start()

    def run_pass(self) -> defer.Deferred | None:
        """Start a pass unless one is running; its Deferred fires with the exit code."""
        if self.running_pass is not None or not self.running:
            return None
        child = _Pass()
        # Tied to this process: a server killed outright (SIGKILL, the OOM killer) takes its
        # pass with it, as it does its other children, rather than leave it running on.
        command = ([sys.executable, "-m", "vmstats", "compact"] + self.arguments
                   + ["--end-with", str(os.getpid())])
        self.running_pass = child
        self.transport = self.reactor.spawnProcess(child, sys.executable, command, env=None)
        child.done.addCallback(self._ended, child)
        return child.done

    def _ended(self, code, child: _Pass):
        self.running_pass = None
        self.transport = None
        text = child.output.decode("utf-8", "replace").strip()
        errors = child.errors.decode("utf-8", "replace").strip()
        if code == 0:
            self.passes += 1
            self.last_error = None
            log.info("compaction: %s", text.splitlines()[-1] if text else "done")
            for line in errors.splitlines():  # the pass's warnings: an operator should look
                self.held_back += RETENTION_HELD_BACK in line
                self.future_dated += FUTURE_DATED in line
                self.links_left += LINKS_LEFT in line
                log.warning("compaction: %s", line.removeprefix("vmstats compact: warning: "))
        else:
            self.failures += 1
            error = (errors or text)[-500:]
            if error != self.last_error:
                log.error("compaction pass exited with %s: %s (logged once; each failing pass "
                          "is counted in vmstats_compaction_failures)", code, error)
                self.last_error = error
            else:
                log.debug("compaction pass exited with %s again: %s", code, error)
        return code

    def stopService(self):
        service.Service.stopService(self)
        self.schedule.stop()
        if self.running_pass is not None and self.transport is not None:
            done = self.running_pass.done
            self.transport.signalProcess("TERM")
            return done
        return None
