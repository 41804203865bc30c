"""The aggregator's admission API: ``POST /admission`` answered from a live per-host summary.

A scheduled job (a LoopingCall on the reactor) asks a child process to read
the logs the flusher wrote and summarise demand per host (summary.py); the
reactor only parses the child's JSON, so reading two weeks of logs never
holds up ingest.  An answer places the manifest on the latest summary, less
the room earlier answers still hold (admission.Reservations): a few
milliseconds for hundreds of hosts, whatever the fleet's size, and up to a
few seconds for a manifest of many shapes, so the placing is done in a
worker thread (the reactor's pool), one answer at a time, and the reactor
goes on taking records and serving /status meanwhile.

Requests need the status token (``Authorization: Bearer``), as /status
details do.  A bad token, a bad manifest or an unknown profile is one JSON
error with a 4xx status, and changes nothing: nothing is held, no counter
but the rejected requests' moves.
"""

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable

from twisted.application import service
from twisted.internet import defer, error, protocol, task, threads
from twisted.web import http, resource, server

from vmstats import inputfile
from vmstats.capacity import admission
from vmstats.capacity.demand import Settings
from vmstats.capacity.errors import CapacityError
from vmstats.capacity.inventory import load_inventory
from vmstats.capacity.summary import Summary

log = logging.getLogger("vmstats.capacity")

#: Largest manifest body taken (a 100,000-VM manifest of a few entries is far smaller).
MAX_BODY = 1 << 20
#: Seconds a summary child may run before it is killed (and the next refresh tries again).
CHILD_TIMEOUT = 3600.0
#: Retry-After of a 503 while the first summary is computed (its duration not known yet).
FIRST_REFRESH_GUESS_S = 5.0


class _Child(protocol.ProcessProtocol):
    """Collects the summary child's stdout and stderr; ``done`` fires with (code, out, err)."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.done: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        if sum(map(len, self.err)) < 65536:
            self.err.append(data)

    def processEnded(self, reason) -> None:
        code = reason.value.exitCode if isinstance(reason.value, error.ProcessTerminated) else 0
        self.done.callback((code, b"".join(self.out), b"".join(self.err)))


class AdmissionService(service.Service):
    """Keeps the per-host summary fresh and answers ``/admission``."""

    name = "admission"

    def __init__(
        self,
        reactor,
        data_dir: str,
        inventory_path: str,
        settings: Settings,
        refresh_s: float,
        hold_s: float,
        token,
    ) -> None:
        load_inventory(inventory_path)  # a bad inventory stops the start: CapacityError
        self.reactor = reactor
        self.data_dir = data_dir
        self.inventory_path = inventory_path
        self.settings = settings
        self.refresh_s = refresh_s
        self.token = token
        self.summary: Summary | None = None
        #: When the reading behind ``summary`` began, on the reactor's (monotonic) clock: holds
        #: whose time is up stay until a summary read after it is in use.
        self.read_from: float | None = None
        self.last_error = ""
        self.reservations = admission.Reservations(hold_s, reactor.seconds)
        self.counts: dict[str, int] = {}
        self.refreshes = {"ok": 0, "failed": 0}
        self.refresh_seconds = 0.0
        self._loop: task.LoopingCall | None = None
        self._child = None
        #: One answer at a time: each places on what the answers before it hold.
        self._turn = defer.DeferredLock()

    def startService(self) -> None:
        service.Service.startService(self)
        self._loop = task.LoopingCall(self.refresh)
        self._loop.clock = self.reactor
        self._loop.start(self.refresh_s, now=True).addErrback(
            lambda failure: log.error("capacity refresh loop stopped: %s", failure.getErrorMessage())
        )

    def stopService(self):
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        child = self._child
        if child is not None:
            try:
                child.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass
            return child.done.addBoth(lambda _result: None)
        return None

    def refresh(self) -> defer.Deferred:
        """Summarise the logs in a child process; the summary in use stays until a new one is whole."""
        child = _Child()
        self._child = child
        started = time.monotonic()
        read_from = self.reactor.seconds()
        args = [
            sys.executable,
            "-m",
            "vmstats.capacity.summary",
            self.data_dir,
            "--inventory",
            self.inventory_path,
            "--settings",
            json.dumps(self.settings.__dict__),
            # Tied to this process: a server killed outright (SIGKILL, the OOM killer) takes a
            # summary in the making with it, rather than leave it reading on for nobody.
            "--end-with",
            str(os.getpid()),
        ]
        self.reactor.spawnProcess(child, sys.executable, args, env=dict(os.environ))
        timeout = self.reactor.callLater(CHILD_TIMEOUT, _kill, child)

        def ended(result):
            if timeout.active():
                timeout.cancel()
            self._child = None
            code, out, err = result
            self.refresh_seconds = time.monotonic() - started
            if code == 0:
                try:
                    self.summary = Summary.from_json(out)
                    self.read_from = read_from
                    self.refreshes["ok"] += 1
                    self.last_error = ""
                    return None
                except (ValueError, TypeError, KeyError) as exc:
                    err = ("unreadable summary: %s" % exc).encode()
            self.refreshes["failed"] += 1
            self.last_error = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["exit %s" % code]
            self.last_error = self.last_error[0]
            log.warning("capacity summary not refreshed: %s", self.last_error)
            return None

        return child.done.addCallback(ended)

    # --- the HTTP page ----------------------------------------------------------------

    def refusal(self, body_size: int, authorised: bool, has_token: bool) -> tuple[int, dict] | None:
        """``(status, JSON)`` of a POST refused for its token or size (counted), or None."""
        if not has_token:
            return self._error(
                http.FORBIDDEN,
                "admission needs the status token to be set on the server (--status-token-file)",
            )
        if not authorised:
            return self._error(
                http.UNAUTHORIZED, "send 'Authorization: Bearer <token>' with the status token"
            )
        if body_size > MAX_BODY:
            return self._error(http.REQUEST_ENTITY_TOO_LARGE, "manifest larger than %d bytes" % MAX_BODY)
        return None

    def answer(self, body: bytes, authorised: bool, has_token: bool,
               awaited: Callable[[], bool] = lambda: True) -> defer.Deferred:
        """The Deferred ``(status, JSON)`` of a POST: every check before any change.

        The manifest is read and placed in a worker thread (_place): 10,000 shapes on 500
        hosts held the reactor 2 to 3 s, ingest and /status waiting.  Answers take turns, so
        each places on the room the ones before it hold, and the hold is made in the reactor.
        ``awaited``: is the answer still awaited (its client connected)?  One given up on is
        neither placed nor held: a deploy job that timed out and asked again found the room
        taken by its own earlier tries, held for --admission-hold by answers nobody read.
        """
        refused = self.refusal(len(body), authorised, has_token)
        if refused is not None:
            return defer.succeed(refused)
        return self._turn.run(self._answer_in_turn, body, awaited)

    def _answer_in_turn(self, body: bytes, awaited: Callable[[], bool]) -> defer.Deferred:
        if not awaited():  # its client gave up while the answers before it were placed
            return defer.succeed(self._given_up())
        summary, read_from = self.summary, self.read_from
        totals = self.reservations.totals(read_from) if summary is not None else {}
        placing = threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), _place, body, summary, totals, time.time()
        )
        return placing.addCallback(self._settle, awaited)

    def _given_up(self) -> tuple[int, dict]:
        self._count("given_up")
        return http.REQUEST_TIMEOUT, {"error": "the client gave up before the answer"}

    def _settle(self, outcome: tuple, awaited: Callable[[], bool] = lambda: True) -> tuple[int, dict]:
        """In the reactor: the worker's outcome counted, and an offer held if still awaited."""
        if outcome[0] == "error":
            return self._error(outcome[1], outcome[2])
        if outcome[0] == "no summary":
            why = "; last refresh failed: %s" % self.last_error if self.last_error else ""
            return self._error(
                http.SERVICE_UNAVAILABLE, "no capacity summary yet (the first one is being computed)%s" % why
            )
        _kind, result, offer, asks, manifest = outcome
        if not awaited():  # its client gave up while it was placed: no one will use the offer
            return self._given_up()
        result["held"] = manifest.hold and bool(offer.placed)
        if result["held"]:
            self.reservations.hold(manifest.name or "unnamed", offer, asks)
        # While refreshes fail (an inventory edited into a mistake, logs gone) the answer rests on
        # an older summary, of the inventory as it was: say why, not only how old it is.
        result["basis"]["refresh_error"] = self.last_error
        self._count(result["status"])
        return http.OK, result

    def failed(self, failure) -> tuple[int, dict]:
        """A 500 for an answer that ended in an error (logged with its traceback), not a POST
        left without an answer."""
        log.error("admission answer failed: %s", failure.getTraceback())
        return self._error(http.INTERNAL_SERVER_ERROR, "the answer failed: see the server's log")

    def retry_after(self) -> int:
        """Whole seconds until a summary may be in: the refresh under way's last duration (a
        few seconds for the first), or the time to the next one after a failed refresh."""
        if self._child is not None:
            return max(1, math.ceil(self.refresh_seconds or FIRST_REFRESH_GUESS_S))
        call = self._loop.call if self._loop is not None else None
        if call is not None and call.active():
            return max(1, math.ceil(call.getTime() - self.reactor.seconds()))
        return max(1, math.ceil(self.refresh_s))

    def state(self, authorised: bool) -> tuple[int, dict]:
        """``GET /admission``: the summary's basis and hosts, and what earlier answers hold."""
        if not authorised:
            return self._error(
                http.UNAUTHORIZED, "send 'Authorization: Bearer <token>' with the status token"
            )
        out = {
            "refreshes": dict(self.refreshes),
            "last_refresh_s": round(self.refresh_seconds, 2),
            "last_error": self.last_error,
            "held": self.reservations.describe(self.read_from),
        }
        if self.summary is not None:
            out["basis"] = self.summary.basis(time.time())
            out["hosts"] = [h.__dict__ for h in self.summary.hosts]
        return http.OK, out

    def _error(self, code: int, message: str) -> tuple[int, dict]:
        self._count("error_%d" % code)
        return code, {"error": message}

    def _count(self, result: str) -> None:
        self.counts[result] = self.counts.get(result, 0) + 1

    def families(self) -> list:
        """Prometheus families for /metrics: answers by result, refreshes, the summary's age."""
        age = time.time() - self.summary.made_at if self.summary is not None else -1
        return [
            (
                "admission_requests_total",
                "counter",
                "Admission requests, by answer or error status.",
                [((("result", r),), n) for r, n in sorted(self.counts.items())],
            ),
            (
                "capacity_refreshes_total",
                "counter",
                "Capacity summary refreshes, by outcome.",
                [((("outcome", o),), n) for o, n in sorted(self.refreshes.items())],
            ),
            (
                "capacity_summary_age_seconds",
                "gauge",
                "Age of the summary answers rest on (-1: none yet).",
                [((), int(age))],
            ),
        ]

    def page(self) -> resource.Resource:
        return AdmissionPage(self)


def _place(body: bytes, summary: Summary | None, totals: dict, now: float) -> tuple:
    """In a worker thread: the manifest read and placed on ``summary`` less ``totals`` (what
    earlier answers hold).  It touches nothing the reactor does; the outcome is ``("error",
    status, message)``, ``("no summary",)`` or ``("answer", result, offer, asks, manifest)``."""
    try:
        data = inputfile.json_document(body)  # '[' x 200,000 fits in MAX_BODY
    except (ValueError, UnicodeDecodeError) as exc:
        return "error", http.BAD_REQUEST, "manifest is not valid JSON: %s" % exc
    try:
        manifest = admission.parse_manifest(data)
    except CapacityError as exc:
        return "error", http.BAD_REQUEST, str(exc)
    if summary is None:
        return ("no summary",)
    result, offer, asks = admission.placed(summary, manifest, totals, now)
    return "answer", result, offer, asks, manifest


def _kill(child: _Child) -> None:
    log.warning("capacity summary took over %d s: stopped", CHILD_TIMEOUT)
    try:
        child.transport.signalProcess("KILL")
    except error.ProcessExitedAlready:
        pass


class AdmissionPage(resource.Resource):
    """``/admission``: POST a manifest (JSON) for an answer, GET the state; both need the token."""

    isLeaf = True
    #: The HTTP channel refuses a longer body before storing it (http.py).
    max_body = MAX_BODY

    def __init__(self, owner: AdmissionService) -> None:
        super().__init__()
        self.owner = owner

    def refuse_early(self, request, method: bytes, _args: dict) -> tuple[int, bytes] | None:
        """At the headers (the HTTP channel): a POST without the token is answered, and counted,
        before its manifest is read."""
        token = self.owner.token
        if method != b"POST" or (token.token is not None and token.admits(request)):
            return None
        code, out = self.owner.refusal(0, token.admits(request), token.token is not None)
        return code, _dumps(out)

    def render_POST(self, request) -> int:
        body = request.content.read(MAX_BODY + 1)
        token = self.owner.token
        gone: list = []
        request.notifyFinish().addErrback(gone.append)

        def done(answered: tuple[int, dict]) -> None:
            code, out = answered
            if gone:  # the client went away: nothing was held for it (answer's ``awaited``)
                return
            if code == http.SERVICE_UNAVAILABLE:  # a deploy pipeline told when to ask again
                request.setHeader(b"retry-after", b"%d" % self.owner.retry_after())
            request.write(_json(request, code, out))
            request.finish()

        answering = self.owner.answer(body, token.admits(request), token.token is not None,
                                      lambda: not gone)
        answering.addErrback(self.owner.failed).addCallback(done)
        return server.NOT_DONE_YET

    def render_GET(self, request) -> bytes:
        code, out = self.owner.state(self.owner.token.admits(request))
        return _json(request, code, out)


def _json(request, code: int, out: dict) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return _dumps(out)


def _dumps(out: dict) -> bytes:
    return (json.dumps(out, indent=1, sort_keys=True) + "\n").encode("utf-8")
