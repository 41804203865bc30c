"""The ``command`` action: a program run with the event in its environment.

For calling a cloud's CLI (create or shut down a VM) or any local script.  The
argv is given as a list and run without a shell, so nothing in an event can
inject words.  Exit status 0 is delivered; anything else, or running past
``timeout`` (the process is killed), is a failure to retry.  The program gets
``VMSTATS_KEY`` and should act at most once per key.

The runs of one alert never overlap, nor change order: the dispatcher sends its next event
only once the one before is done (``turns.py``), and a run the dispatcher lets go (dropped
past ``max_pending``) or a stop cuts short is killed, not left to go on beside the next.  A
keeper process (``keeper.py``) runs the program and ends it, and all it started, when the
server ends, even by SIGKILL: a program left running would be run again by the next start,
beside itself.
"""

import os
import shutil
import signal
import sys

from twisted.internet import defer, error, protocol

from vmstats.rules.grouping import status
from vmstats.rules.notifiers import DeliveryError, Notifier, last_value_age, summary

#: Programs of one action running at once; more events wait their turn.
CONCURRENCY = 8

#: Runs the program in a session of its own, tied to the server's life (keeper.py).
KEEPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "keeper.py")

#: Event field -> environment variable.
ENVIRONMENT = {"rule": "VMSTATS_RULE", "scope": "VMSTATS_SCOPE", "to": "VMSTATS_STATE",
               "from": "VMSTATS_PREVIOUS_STATE", "kind": "VMSTATS_EVENT", "value": "VMSTATS_VALUE",
               "threshold": "VMSTATS_THRESHOLD", "members": "VMSTATS_MEMBERS",
               "current": "VMSTATS_CURRENT", "desired": "VMSTATS_DESIRED", "delta": "VMSTATS_DELTA",
               "placement": "VMSTATS_PLACEMENT", "at": "VMSTATS_AT",
               "last_value": "VMSTATS_LAST_VALUE", "last_value_at": "VMSTATS_LAST_VALUE_AT"}


def environment(event: dict, key: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VMSTATS_KEY": key,
           "VMSTATS_SUMMARY": summary(event), "VMSTATS_STATUS": status(event)}
    for name, variable in ENVIRONMENT.items():
        if event.get(name) is not None:
            env[variable] = str(event[name])
    if event.get("last_value") is not None:  # the data stopped: no VMSTATS_VALUE, the last's age
        env["VMSTATS_LAST_VALUE_AGE"] = "%g" % last_value_age(event)
    return env


class _Run(protocol.ProcessProtocol):
    def __init__(self, done: defer.Deferred):
        self.done = done
        self.stderr = b""

    def errReceived(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-400:]

    def processEnded(self, reason) -> None:
        if self.done.called:
            return
        if isinstance(reason.value, error.ProcessDone):
            self.done.callback(0)
        else:
            tail = self.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            self.done.errback(DeliveryError("exit %s %s" % (reason.value.exitCode, tail[0])))


class Command(Notifier):
    kind = "command"

    def __init__(self, name: str, argv: tuple[str, ...], timeout: float):
        super().__init__(name)
        self.argv = argv
        self.timeout = timeout
        self._slots = defer.DeferredSemaphore(CONCURRENCY)
        #: The runs under way: their Deferreds, whose cancel kills the run's session.
        self._running: set[defer.Deferred] = set()
        self._halted = False

    @classmethod
    def from_config(cls, name: str, reader) -> "Command | None":
        argv = reader.texts("argv")
        if not argv or not argv[0]:
            # Given but empty ([] or [""]) is as much a problem as missing: without one the
            # rules naming this action would have none, their deliveries given up at run time.
            if reader.table.get("argv") in (None, []) or argv:  # else texts() said what's wrong
                reader.problem("argv", "missing (the program and its arguments, as a list)")
            return None
        timeout = reader.duration("timeout", 60.0)
        return cls(name, argv, timeout or 60.0)

    def doubts(self) -> list[str]:
        """A program that is not there (a typo, a package not installed) failed only when an
        alert or a scaling decision was delivered, the moment it was needed."""
        program = self.argv[0]
        path = os.environ.get("PATH", "/usr/bin:/bin")  # the PATH it runs with (environment)
        if shutil.which(program, path=path) is not None:
            return []
        if os.sep in program:
            why = "is no executable file" if os.path.exists(program) else "does not exist"
        else:
            why = "is not found in PATH (%s)" % path
        return ["action %s: program %s %s: its deliveries will fail until it is there"
                % (self.name, program, why)]

    def send(self, reactor, event: dict, key: str) -> defer.Deferred:
        return self._slots.run(self._run, reactor, event, key)

    def halt(self) -> None:
        """The server stops: runs waiting for a slot are not started, and those under way are
        killed with what they started (as the keeper would once the server is gone).  Their
        deliveries stay pending, run again at the next start under the same keys, in order;
        one left running would run beside its own second run then."""
        self._halted = True
        for waiting in list(self._slots.waiting):
            waiting.cancel()
        for run in list(self._running):
            run.cancel()

    def _run(self, reactor, event: dict, key: str) -> defer.Deferred:
        if self._halted:
            return defer.fail(defer.CancelledError())
        process = None

        def kill(_done=None) -> None:
            """The program and whatever it started: its session's process group."""
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):  # not a leader yet, or all gone
                try:
                    process.signalProcess("KILL")
                except error.ProcessExitedAlready:
                    pass

        done: defer.Deferred = defer.Deferred(kill)  # cancelled (dropped, a stop): killed
        run = _Run(done)
        try:
            process = reactor.spawnProcess(
                run, sys.executable,
                [sys.executable, "-I", "-S", KEEPER, str(os.getpid()), *self.argv],
                env=environment(event, key))
        except OSError as exc:
            return defer.fail(DeliveryError("cannot run %s: %s" % (self.argv[0], exc)))

        def overdue():
            if not done.called:
                done.errback(DeliveryError("still running after %gs: killed" % self.timeout))
                kill()

        timer = reactor.callLater(self.timeout, overdue)
        self._running.add(done)

        def over(result):
            self._running.discard(done)
            if timer.active():
                timer.cancel()
            return result

        return done.addBoth(over)


NOTIFIER = Command
