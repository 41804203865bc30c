"""``/mutes`` on the server's HTTP port: add (POST), list (GET) and expire (DELETE) mutes.

Built as ``/admission`` is (vmstats/capacity/service.py): every method needs the
status token (``Authorization: Bearer <token>``), since a mute silences pages
and a list of them names VMs; a change without it is refused at its headers,
before its body is read, and a server without a token takes no change at all.
Each answer is JSON; each refusal has one ``error`` line and is counted
(``vmstats_rule_mute_requests_total{result}``).
"""

import json
from collections import Counter

from twisted.web import http, resource, server

from vmstats import inputfile

#: A mute is a few hundred bytes; the channel refuses a longer body before storing it.
MAX_BODY = 16 << 10


class MutesPage(resource.Resource):
    """``POST /mutes`` a mute (JSON), ``GET /mutes``, ``DELETE /mutes?id=ID``."""

    isLeaf = True
    max_body = MAX_BODY

    def __init__(self, rules, token) -> None:
        """``rules``: the RulesService; ``token``: the server's StatusToken."""
        super().__init__()
        self.rules = rules
        self.token = token
        #: result -> requests so answered, for /metrics.
        self.counts: Counter[str] = Counter()

    def _refusal(self, request) -> tuple[int, dict] | None:
        """Why the request may not see or change mutes (status, error), counted; None: it may."""
        if self.token.token is None:
            why = http.FORBIDDEN, "mutes need the status token to be set on the server " \
                                  "(--status-token-file)"
        elif not self.token.admits(request):
            why = http.UNAUTHORIZED, "send 'Authorization: Bearer <token>' with the status token"
        else:
            return None
        return self._error(*why)

    def refuse_early(self, request, method: bytes, _args: dict) -> tuple[int, bytes] | None:
        """At the headers (the HTTP channel): a change without the token is answered, and
        counted, before its body is read."""
        if method in (b"GET", b"HEAD"):
            return None
        refused = self._refusal(request)
        return None if refused is None else (refused[0], _encoded(refused[1]))

    def render_GET(self, request) -> bytes:
        code, out = self._refusal(request) or (http.OK, self.rules.mutes_page())
        return _json(request, code, out)

    def render_POST(self, request) -> bytes | int:
        refused = self._refusal(request)
        if refused is not None:
            return _json(request, *refused)
        try:
            data = inputfile.json_document(request.content.read(MAX_BODY + 1))
        except (ValueError, UnicodeDecodeError) as exc:
            return _json(request, *self._error(http.BAD_REQUEST, "a mute is JSON: %s" % exc))
        return self._later(request, self.rules.add_mute(data))

    def render_DELETE(self, request) -> bytes | int:
        refused = self._refusal(request)
        if refused is not None:
            return _json(request, *refused)
        ids = request.args.get(b"id", [])
        if len(ids) != 1 or not ids[0]:
            return _json(request, *self._error(http.BAD_REQUEST, "name one mute: DELETE /mutes?id=ID"))
        return self._later(request, self.rules.expire_mute(ids[0].decode("utf-8", "replace")))

    def _later(self, request, answer) -> int:
        """Answer once the change is on disk (the Deferred gives status and JSON)."""
        gone: list = []
        request.notifyFinish().addErrback(gone.append)

        def done(result: tuple[int, dict]) -> None:
            code, out = result
            self.counts["ok" if code < 300 else "error_%d" % code] += 1
            if not gone:
                request.write(_json(request, code, out))
                request.finish()

        answer.addCallback(done)
        return server.NOT_DONE_YET

    def _error(self, code: int, message: str) -> tuple[int, dict]:
        self.counts["error_%d" % code] += 1
        return code, {"error": message}

    def families(self) -> list:
        """For /metrics: mute requests by answer."""
        return [("rule_mute_requests_total", "counter", "Requests to /mutes, by answer.",
                 [((("result", r),), n) for r, n in sorted(self.counts.items())])]


def _json(request, code: int, out: dict) -> bytes:
    """The answer: ``code`` and ``out`` as JSON."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return _encoded(out)


def _encoded(out: dict) -> bytes:
    return json.dumps(out, indent=1, sort_keys=True).encode("utf-8") + b"\n"
