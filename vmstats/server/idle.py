"""Waiting for a queue to empty.

Stopping the server drains several queues in turn (bodies being fed, payloads at the parsers,
decoded files at the format pool) before the final flush; each hands out Deferreds while it is
busy and fires them together when it empties, so the shutdown chain never polls.
"""
from __future__ import annotations

from twisted.internet import defer


class IdleWaiters:
    """Deferreds handed out while something is busy, fired together once it is idle."""

    def __init__(self) -> None:
        self._waiting: list[defer.Deferred] = []

    def wait(self, busy: bool) -> defer.Deferred:
        """Fires at once when not ``busy``, else at the next ``fire``."""
        if not busy:
            return defer.succeed(None)
        waiting: defer.Deferred = defer.Deferred()
        self._waiting.append(waiting)
        return waiting

    def fire(self) -> None:
        """The owner is idle: release everyone waiting (waiters added meanwhile wait on)."""
        if not self._waiting:  # the usual case, on every drain
            return
        waiting, self._waiting = self._waiting, []
        for one in waiting:
            one.callback(None)
