"""The HTTP endpoint: /metrics for Prometheus, /status for people and scripts.

Routing is by exact path (``Router``): ``/metrics/x``, ``/metrics/`` and ``/status/../metrics``
are 404, not a page that happens to answer.  A later route (another input format's write API)
is one ``add`` call.  Responses carry no ``Server`` header, connections go through a
``ConnectionTable`` (caps, idle timeout, eviction, --http-allow), and /status gives the data
directory and per-VM times only to a caller with the status token: the counts are on /metrics.
"""

import hmac
import json
import time
from collections.abc import Callable, Iterable

from twisted.application import service
from twisted.web import http, resource, server

from vmstats.server.connections import ConnectionTable, listen_tcp, listening

#: A route's handler: the request in, the body out (bytes, or server.NOT_DONE_YET).
Handler = Callable[[server.Request], bytes | int]


class Router(resource.Resource):
    """Exact-path routes: ``{(method, path): handler}``; anything else is 404 (or 405)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[bytes, dict[bytes | None, Handler]] = {}

    def add(self, path: bytes, handler: Handler,
            methods: Iterable[bytes] | None = (b"GET",)) -> None:
        """Serve ``path`` (exactly: no prefix, no trailing slash, no ``..``) with ``handler``.

        ``methods`` None: every method goes to the handler, which answers the ones it does not
        serve itself (a ``resource.Resource``'s ``render`` raises UnsupportedMethod: 405).
        """
        if methods is None:
            self.routes.setdefault(path, {})[None] = handler
            return
        for method in methods:
            self.routes.setdefault(path, {})[method] = handler
            if method == b"GET":
                self.routes[path].setdefault(b"HEAD", handler)

    def render(self, request: server.Request) -> bytes | int:
        request.setHeader(b"cache-control", b"no-store")
        methods = self.routes.get(request.path)
        if methods is None:
            return _plain(request, http.NOT_FOUND, b"not found\n")
        handler = methods.get(request.method) or methods.get(None)
        if handler is None:
            request.setHeader(b"allow", b", ".join(sorted(methods)))
            return _plain(request, http.NOT_ALLOWED, b"method not allowed\n")
        return handler(request)


def _plain(request: server.Request, code: int, body: bytes) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return body


class _Request(server.Request):
    """A request whose response does not name the server or its version."""

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            self.responseHeaders.removeHeader(b"server")
        super().write(data)


class _Channel(http.HTTPChannel):
    """An HTTP/1.1 connection that its port's connection table keeps in line."""

    table: ConnectionTable
    peer = ""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.table.add(self, self.peer)

    def dataReceived(self, data: bytes) -> None:
        self.table.touch(self)
        super().dataReceived(data)

    def connectionLost(self, reason) -> None:
        self.table.remove(self)
        super().connectionLost(reason)


class _Site(server.Site):
    protocol = _Channel
    requestFactory = _Request

    def __init__(self, root: resource.Resource, table: ConnectionTable):
        # The table closes idle connections (counted); Twisted's own timer would be a second one.
        super().__init__(root, timeout=None)
        self.table = table
        self.noisy = False

    def buildProtocol(self, addr):
        if not self.table.admit(addr.host):
            return None
        channel = super().buildProtocol(addr)
        channel.table = self.table
        channel.peer = addr.host
        return channel


class StatusToken:
    """The secret that unlocks /status details, compared in constant time."""

    def __init__(self, token: str | None):
        self.token = token.encode("utf-8") if token else None

    def admits(self, request: server.Request) -> bool:
        if self.token is None:
            return False
        given = request.getHeader(b"authorization") or b""
        scheme, _, value = given.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), self.token)


class HTTPService(service.Service):
    """Serves the server's own numbers; reads state, never changes it."""

    name = "http"

    def __init__(self, reactor, bind: str, port: int, metrics_text: Callable[[], str],
                 status_json: Callable[[bool], dict], table: ConnectionTable,
                 token: StatusToken | None = None,
                 routes: dict[bytes, resource.Resource] | None = None,
                 alerts_json: Callable[[bool], dict] | None = None):
        self.reactor = reactor
        self.bind = bind
        self.port = port
        self.table = table
        self.token = token or StatusToken(None)
        self.router = Router()
        self.router.add(b"/metrics", lambda request: _body(
            request, metrics_text(), b"text/plain; version=0.0.4; charset=utf-8"))
        self.router.add(b"/status", lambda request: _body(
            request, json.dumps(status_json(self.token.admits(request)), indent=1,
                                sort_keys=True), b"application/json"))
        if alerts_json is not None:  # the live rules (docs/RULES.md); details as for /status
            self.router.add(b"/alerts", lambda request: _body(
                request, json.dumps(alerts_json(self.token.admits(request)), indent=1,
                                    sort_keys=True), b"application/json"))
        # Other services' pages by full path (b"/api/v2/write"), each answering its own methods.
        for path, page in (routes or {}).items():
            self.router.add(path, page.render, methods=None)
        self.site = _Site(self.router, table)
        self.listening = None

    def startService(self) -> None:
        service.Service.startService(self)
        self.listening = listening(lambda: listen_tcp(self.reactor, self.port, self.site, self.bind),
                                   "HTTP", self.bind, self.port, "--http-port")
        self.port = self.listening.getHost().port
        self.table.start()

    def stopService(self):
        service.Service.stopService(self)
        self.table.stop()
        if self.listening is not None:
            stopped = self.listening.stopListening()
            self.table.close_all()
            return stopped
        return None


def _body(request: server.Request, text: str, content_type: bytes) -> bytes:
    request.setHeader(b"content-type", content_type)
    return text.encode("utf-8")


def last_seen_table(last_seen: dict[str, float], limit: int = 10000) -> dict[str, str]:
    """VM -> ISO time last heard from, most recent first, bounded for a readable page."""
    ordered = sorted(last_seen.items(), key=lambda item: -item[1])[:limit]
    return {vm: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)) for vm, when in ordered}
