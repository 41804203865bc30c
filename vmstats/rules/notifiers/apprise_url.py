"""Mail and chat through apprise: one URL per service (mailto://, slack://, matrix://, ...).

apprise keeps the dozens of services' APIs current; a module of our own per
service would not.  Its calls block, so each runs on a thread, never on the
reactor: on at most ``THREADS`` of the action's own (``workers.py``), so a
server that accepts and never answers delays only this action's sends, and
each attempt fails after ``timeout`` (retried with backoff like any other).
A mail server cannot honour an idempotency key, so the key travels in the
message for a person or a filter to spot a repeat.
"""

from twisted.internet import defer

from vmstats.rules.notifiers import DeliveryError, Notifier, group_summary, summary
from vmstats.rules.workers import Workers

#: Sends of one apprise action under way at once; more wait for one of these threads.
THREADS = 4


class AppriseURL(Notifier):
    kind = "apprise"
    groups = True

    def __init__(self, name: str, urls: tuple[str, ...], timeout: float = 60.0):
        super().__init__(name)
        self.urls = urls
        self.timeout = timeout
        self._workers: Workers | None = None

    @classmethod
    def from_config(cls, name: str, reader) -> "AppriseURL | None":
        urls = reader.texts("url")
        timeout = reader.duration("timeout", 60.0)
        if not urls:
            reader.problem("url", "missing (an apprise URL such as mailto://user:pass@host or "
                                  "slack://TokenA/TokenB/TokenC)")
            return None
        import apprise

        checker = apprise.Apprise()
        for url in urls:
            if not checker.add(url):
                reader.problem("url", "apprise does not accept this %s:// URL (a service it "
                                      "knows, with valid addresses?)" % url.split("://")[0])
        return cls(name, urls, timeout or 60.0)

    def send(self, reactor, event: dict, key: str) -> defer.Deferred:
        title = "vmstats: " + summary(event)
        body = "%s\n\nidempotency key: %s\n" % (summary(event), key)
        return self._send(reactor, title, body)

    def send_group(self, reactor, batch, key: str) -> defer.Deferred:
        """One message for the group: a line per alert, each with its delivery's key."""
        title, text = group_summary(batch)
        return self._send(reactor, "vmstats: " + title,
                          "%s\n\nidempotency key: %s\n" % (text, key))

    def _send(self, reactor, title: str, body: str) -> defer.Deferred:
        if self._workers is None:
            self._workers = Workers(reactor, "vmstats-apprise-" + self.name, THREADS)
        d = self._workers.run(self._notify, title, body)
        d.addTimeout(self.timeout, reactor, onTimeoutCancel=self._late)
        return d

    def _late(self, _result, timeout: float) -> None:
        raise DeliveryError("no answer from %s within %gs" % (self._services(), timeout))

    def _services(self) -> str:
        return ", ".join(url.split("://")[0] + "://..." for url in self.urls)

    def take_over(self, replaced: Notifier) -> None:
        """Its threads are its slots: the replaced one's are taken (not closed with it), so
        its sends still queued and this one's share the action's 4."""
        if type(replaced) is type(self) and replaced._workers is not None:
            self._workers, replaced._workers = replaced._workers, None

    def close(self) -> None:
        if self._workers is not None:
            self._workers.close()

    def _notify(self, title: str, body: str) -> None:
        import apprise

        # In this thread, not apprise's own pools: their threads are joined at exit, so a send
        # that never returns would hold the server's exit, and they have no cap of ours.  Our
        # ``timeout`` is the deadline (apprise's own would hand the call to its pool).
        options = {"async_mode": False}
        if hasattr(apprise.AppriseAsset, "_service_timeout"):
            options["service_timeout"] = 0
        sender = apprise.Apprise(asset=apprise.AppriseAsset(**options))
        for url in self.urls:
            sender.add(url)
        # Text, as written: a service that sends HTML (mail does) gets it converted, line
        # breaks kept, rather than read as HTML whose line breaks are blanks.
        if not sender.notify(title=title, body=body, body_format=apprise.NotifyFormat.TEXT):
            raise DeliveryError("apprise could not deliver to %s" % self._services())


NOTIFIER = AppriseURL
