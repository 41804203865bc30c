"""The ``log`` action: one line in the server's own log per event."""

import logging

from twisted.internet import defer

from vmstats.rules.notifiers import Notifier, summary

log = logging.getLogger("vmstats.rules.alert")


class LogLine(Notifier):
    kind = "log"

    def __init__(self, name: str, level: int):
        super().__init__(name)
        self.level = level

    @classmethod
    def from_config(cls, name: str, reader) -> "LogLine":
        level = reader.text("level", "warning", choices=("info", "warning", "error"))
        return cls(name, getattr(logging, (level or "warning").upper()))

    def send(self, reactor, event: dict, key: str) -> defer.Deferred:
        log.log(self.level, "%s [%s]", summary(event), key)
        return defer.succeed(None)


NOTIFIER = LogLine
