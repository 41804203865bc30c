"""The ``webhook`` action: Alertmanager's webhook JSON (version 4), signed, with a key header.

Receivers written for Alertmanager (PagerDuty bridges, chat relays, custom
handlers) take the body unchanged.  The body is signed with HMAC-SHA256 when
the action has a ``secret`` (``X-Vmstats-Signature: sha256=<hex>``), and the
idempotency key rides in ``Idempotency-Key``: a receiver that remembers keys
sees each event once even when a crash made us send it again.
"""

import hashlib
import hmac
import json
from io import BytesIO
from urllib.parse import urlsplit

from twisted.internet import defer, error, protocol
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from vmstats.rules.grouping import ALERT_LABELS, alert_labels, fingerprint, firing, group_key_text
from vmstats.rules.lookups import Lookups, ResolvingOwnNames
from vmstats.rules.notifiers import DeliveryError, Notifier, last_value_age, seconds, summary
from vmstats.stamps import moment

SIGNATURE_HEADER = "X-Vmstats-Signature"
KEY_HEADER = "Idempotency-Key"
_NEVER = "0001-01-01T00:00:00Z"
#: Requests in flight to one receiver; the rest wait their turn (a fleet going silent at once
#: is thousands of events: they must not become thousands of connections and lookups).
CONCURRENCY = 16
#: Bytes of a receiver's answer kept, to quote in a failure; the rest is read and let go, so
#: a receiver answering megabytes (or without end) costs no memory.
ANSWER_KEPT = 200


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def alertmanager_body(event: dict, receiver: str, key: str) -> bytes:
    """Alertmanager webhook v4 JSON for one event: one alert, alone in its group.

    As in Alertmanager, the labels are the alert's identity, the same when it fires, is
    reminded of and resolves (a rule and a scope; a scaling decision is an alert of its own),
    and the group is that one alert: a receiver that keys incidents by ``groupKey`` or by the
    labels resolves the VM that resolved, not every VM of the rule, nor none.  The state and
    the kind of event are annotations; ``startsAt`` of a resolved alert is when the state it
    leaves began.
    """
    labels = alert_labels(event)
    group = {name: labels[name] for name in ALERT_LABELS if name in labels}
    return _body([_alert(event, key)], receiver, group)


def alertmanager_group_body(batch, receiver: str) -> bytes:
    """Alertmanager webhook v4 JSON for a group's notification: every alert of the group,
    each with its own status, labels and key; ``groupLabels`` are the ``group_by`` values."""
    return _body([_alert(event, key) for event, key in batch.alerts], receiver, batch.labels,
                 batch.truncated)


def _alert(event: dict, key: str) -> dict:
    is_firing = firing(event)
    labels = alert_labels(event)
    labels["source"] = "vmstats"
    annotations = {"summary": summary(event), "idempotency_key": key, "state": event["to"],
                   "event": event["kind"]}
    for name in ("value", "threshold", "members", "current", "desired", "delta", "placement",
                 "reason", "unmuted", "last_value"):
        if event.get(name) is not None:
            annotations[name] = str(event[name])
    if event.get("last_value") is not None:  # no current value: the last, and how old it is
        annotations["last_value_at"] = moment(event["last_value_at"])
        annotations["last_value_age"] = seconds(last_value_age(event))
    began = event.get("since", event["at"]) if is_firing else event.get("began", event["at"])
    return {"status": "firing" if is_firing else "resolved", "labels": labels,
            "annotations": annotations, "startsAt": moment(began),
            "endsAt": _NEVER if is_firing else moment(event["at"]), "generatorURL": "",
            "fingerprint": fingerprint(event)}


def _common(tables: list[dict]) -> dict:
    """What every one of ``tables`` holds alike (Alertmanager's commonLabels, -Annotations)."""
    common = dict(tables[0])
    for table in tables[1:]:
        common = {name: value for name, value in common.items() if table.get(name) == value}
    return common


def _body(alerts: list[dict], receiver: str, group: dict[str, str], truncated: int = 0) -> bytes:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    body = {"version": "4", "groupKey": group_key_text(group), "truncatedAlerts": truncated,
            "status": status, "receiver": receiver, "groupLabels": group,
            "commonLabels": _common([a["labels"] for a in alerts]),
            "commonAnnotations": _common([a["annotations"] for a in alerts]),
            "externalURL": "", "alerts": alerts}
    return json.dumps(body, sort_keys=True).encode("utf-8")


class Webhook(Notifier):
    kind = "webhook"
    groups = True

    def __init__(self, name: str, url: str, secret: bytes | None, timeout: float):
        super().__init__(name)
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self._agent = None
        self._pool = None
        self._lookups: Lookups | None = None
        self._slots = defer.DeferredSemaphore(CONCURRENCY)

    @classmethod
    def from_config(cls, name: str, reader) -> "Webhook | None":
        url = reader.text("url")
        if url is None:
            if "url" not in reader.table:
                reader.problem("url", "missing (http:// or https://)")
            return None
        try:  # an unclosed [ of an IPv6 host, a port past 65535: ValueError
            parts = urlsplit(url)
            usable = parts.scheme in ("http", "https") and parts.hostname and (parts.port or True)
        except ValueError:
            usable = False
        if not usable:
            reader.problem("url", "%r is not an http:// or https:// URL" % url)
            return None
        secret = reader.text("secret")
        timeout = reader.duration("timeout", 10.0)
        return cls(name, url, secret.encode("utf-8") if secret else None, timeout or 10.0)

    def send(self, reactor, event: dict, key: str) -> defer.Deferred:
        return self._slots.run(lambda: self._post(reactor, alertmanager_body(event, self.name, key),
                                                  key))

    def send_group(self, reactor, batch, key: str) -> defer.Deferred:
        return self._slots.run(lambda: self._post(reactor, alertmanager_group_body(batch, self.name),
                                                  key))

    def _post(self, reactor, body: bytes, key: str) -> defer.Deferred:
        if self._agent is None:
            self._lookups = Lookups(reactor, "vmstats-lookups-" + self.name)
            reactor = ResolvingOwnNames(reactor, self._lookups)
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = CONCURRENCY
            self._agent = Agent(reactor, pool=self._pool, connectTimeout=self.timeout)
        headers = Headers({"content-type": ["application/json"], KEY_HEADER: [key],
                           "user-agent": ["vmstats-rules"]})
        if self.secret is not None:
            headers.addRawHeader(SIGNATURE_HEADER, sign(self.secret, body))
        d = self._agent.request(b"POST", self.url.encode("utf-8"), headers,
                                FileBodyProducer(BytesIO(body)))
        d.addCallback(_answered)
        d.addTimeout(self.timeout, reactor)
        d.addErrback(self._said, reactor, reactor.seconds())
        return d

    def _said(self, failure, reactor, began: float):
        """A failed send as one line a person reads in the log and ``vmstats alerts`` (not
        the repr of a list of Twisted failures)."""
        if failure.check(DeliveryError):
            return failure
        if failure.check(error.DNSLookupError) and (
                reactor.seconds() - began >= self.timeout * 0.99):
            # Cut short by the timeout while the name was looked up (Twisted words it as a
            # name not found): a DNS that does not answer, not a name that does not exist.
            raise DeliveryError("no answer within %gs: %s not resolved by then"
                                % (self.timeout, urlsplit(self.url).hostname))
        raise DeliveryError(_why(failure, self.timeout))

    def close(self):
        if self._lookups is not None:
            self._lookups.close()
        pool, self._pool, self._agent, self._lookups = self._pool, None, None, None
        return None if pool is None else pool.closeCachedConnections()


class _Answer(protocol.Protocol):
    """A receiver's answer body: its first ``ANSWER_KEPT`` bytes kept, the rest let go.

    An answer without a length ends when the connection closes (an HTTP/1.0 receiver, as
    Python's ``http.server`` answers by default): complete, not a loss.  Twisted's
    ``readBody`` held every byte and failed such an answer, so a 200 was retried, and
    sent again, for a day.  A cancel (the timeout) aborts the connection; what it says
    after that is not news.
    """

    def __init__(self, done: defer.Deferred):
        self.done = done
        self.head = b""

    def dataReceived(self, data: bytes) -> None:
        if len(self.head) < ANSWER_KEPT:
            self.head += data[:ANSWER_KEPT - len(self.head)]

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(self.head)
        else:
            self.done.errback(DeliveryError("the connection closed in the middle of the answer"))


def _answered(response) -> defer.Deferred:
    """The receiver's verdict: 2xx took it; anything else (a redirect too: not followed, the
    signed body is not sent elsewhere) is a failure, retried, that names what it said."""
    reader = _Answer(defer.Deferred(lambda _d: abort()))

    def abort() -> None:
        transport = reader.transport
        stop = getattr(transport, "abortConnection", None) or getattr(transport, "stopProducing", None)
        if stop is not None:
            stop()

    def judge(head: bytes):
        if 200 <= response.code < 300:
            return response.code
        said = "HTTP %d" % response.code
        if 300 <= response.code < 400:
            where = response.headers.getRawHeaders(b"location", [b""])[0]
            said += " (a redirect to %s, not followed: point url at it)" % where.decode(
                "utf-8", "replace")[:200]
        else:
            text = " ".join(head.decode("utf-8", "replace").split())[:120]
            said += ": %s" % text if text else ""
        raise DeliveryError(said)

    response.deliverBody(reader)
    return reader.done.addCallback(judge)


def _why(failure, timeout: float) -> str:
    """Why a request failed, in words: Twisted's ResponseFailed wraps a list of failures."""
    if failure.check(defer.TimeoutError, defer.CancelledError):
        return "no answer within %gs" % timeout
    reasons = getattr(failure.value, "reasons", None) or [failure]
    first = reasons[0]
    if first.check(defer.CancelledError):
        return "no answer within %gs" % timeout
    if first.check(error.ConnectionDone, error.ConnectionLost):
        return "the connection closed before the answer"
    return first.getErrorMessage() or first.type.__name__

NOTIFIER = Webhook
