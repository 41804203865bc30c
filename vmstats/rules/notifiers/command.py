"""The ``command`` action: a program run with the event in its environment.

For calling a cloud's CLI (create or shut down a VM) or any local script.  The
argv is given as a list and run without a shell, so nothing in an event can
inject words.  Exit status 0 is delivered; anything else, or running past
``timeout`` (the process is killed), is a failure to retry.  The program gets
``VMSTATS_KEY`` and should act at most once per key.
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

#: Starts the action's program as the leader of a session of its own (then exec'd: the same
#: process, exit status and output), so a timeout kills what it started as well: a script's
#: hung cloud CLI lived on after its parent was killed, holding its pipes, one more at every
#: retry.  127, with a line on stderr, when the program cannot be run.
LEADER = ("import os, sys\nos.setsid()\ntry:\n    os.execvp(sys.argv[1], sys.argv[1:])\n"
          "except OSError as exc:\n"
          "    sys.stderr.write('cannot run %s: %s\\n' % (sys.argv[1], exc.strerror))\n"
          "    sys.exit(127)\n")

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

    def _run(self, reactor, event: dict, key: str) -> defer.Deferred:
        done: defer.Deferred = defer.Deferred()
        run = _Run(done)
        try:
            process = reactor.spawnProcess(run, sys.executable,
                                           [sys.executable, "-I", "-S", "-c", LEADER, *self.argv],
                                           env=environment(event, key))
        except OSError as exc:
            return defer.fail(DeliveryError("cannot run %s: %s" % (self.argv[0], exc)))
        session = process.pid

        def overdue():
            if not done.called:
                done.errback(DeliveryError("still running after %gs: killed" % self.timeout))
                try:  # the program and whatever it started (its session's process group)
                    os.killpg(session, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):  # not a leader yet, or all gone
                    try:
                        process.signalProcess("KILL")
                    except error.ProcessExitedAlready:
                        pass

        timer = reactor.callLater(self.timeout, overdue)
        done.addBoth(lambda result: (timer.active() and timer.cancel(), result)[1])
        return done


NOTIFIER = Command
