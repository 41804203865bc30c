"""The HTTP endpoint: /metrics for Prometheus, /status for people and scripts."""

import json
import time

from twisted.application import service
from twisted.web import resource, server


class _Page(resource.Resource):
    isLeaf = True

    def __init__(self, render, content_type: bytes):
        super().__init__()
        self._render = render
        self._type = content_type

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", self._type)
        request.setHeader(b"cache-control", b"no-store")
        return self._render().encode("utf-8")


class HTTPService(service.Service):
    """Serves the server's own numbers; reads state, never changes it."""

    name = "http"

    def __init__(self, reactor, bind: str, port: int, metrics_text, status_json,
                 routes: dict[bytes, resource.Resource] | None = None):
        self.reactor = reactor
        self.bind = bind
        self.port = port
        root = resource.Resource()
        root.putChild(b"metrics", _Page(metrics_text, b"text/plain; version=0.0.4; charset=utf-8"))
        root.putChild(b"status", _Page(lambda: json.dumps(status_json(), indent=1, sort_keys=True),
                                       b"application/json"))
        # Other services' pages by full path (b"/api/v2/write"): each leaf is that one path.
        for path, page in (routes or {}).items():
            *folders, leaf = path.strip(b"/").split(b"/")
            parent = root
            for folder in folders:
                child = parent.children.get(folder)
                if child is None:
                    child = resource.Resource()
                    parent.putChild(folder, child)
                parent = child
            parent.putChild(leaf, page)
        self.site = server.Site(root)
        self.site.noisy = False
        self.listening = None

    def startService(self) -> None:
        service.Service.startService(self)
        self.listening = self.reactor.listenTCP(self.port, self.site, interface=self.bind)
        self.port = self.listening.getHost().port

    def stopService(self):
        service.Service.stopService(self)
        if self.listening is not None:
            return self.listening.stopListening()
        return None


def last_seen_table(last_seen: dict[str, float], limit: int = 10000) -> dict[str, str]:
    """VM -> ISO time last heard from, most recent first, bounded for a readable page."""
    ordered = sorted(last_seen.items(), key=lambda item: -item[1])[:limit]
    return {vm: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)) for vm, when in ordered}
