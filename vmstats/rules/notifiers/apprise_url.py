"""Mail and chat through apprise: one URL per service (mailto://, slack://, matrix://, ...).

apprise keeps the dozens of services' APIs current; a module of our own per
service would not.  Its calls block, so each runs on the reactor's thread
pool, never on the reactor.  A mail server cannot honour an idempotency key,
so the key travels in the message for a person or a filter to spot a repeat.
"""

from twisted.internet import defer, threads

from vmstats.rules.notifiers import DeliveryError, Notifier, summary


class AppriseURL(Notifier):
    kind = "apprise"

    def __init__(self, name: str, urls: tuple[str, ...]):
        super().__init__(name)
        self.urls = urls

    @classmethod
    def from_config(cls, name: str, reader) -> "AppriseURL | None":
        urls = reader.texts("url")
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
        return cls(name, urls)

    def send(self, reactor, event: dict, key: str) -> defer.Deferred:
        title = "vmstats: " + summary(event)
        body = "%s\n\nidempotency key: %s\n" % (summary(event), key)
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), self._notify, title, body)

    def _notify(self, title: str, body: str) -> None:
        import apprise

        sender = apprise.Apprise()
        for url in self.urls:
            sender.add(url)
        if not sender.notify(title=title, body=body):
            raise DeliveryError("apprise could not deliver to %s" % ", ".join(
                url.split("://")[0] + "://..." for url in self.urls))


NOTIFIER = AppriseURL
