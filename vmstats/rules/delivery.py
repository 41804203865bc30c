"""Delivery: each event to each of its actions, logged first, retried with backoff.

The order is what makes a crash harmless.  An event and its first attempts
reach the action log (fsync'd) before any send; each later attempt is logged
before it is made; success is logged after.  So after a SIGKILL at any moment
every delivery without a logged success is attempted again, under the same
idempotency key: nothing is lost, and a receiver that honours the key acts
once.  Retries back off from ``retry_min`` doubling to ``retry_max`` and stop
after ``retry_for`` from the event (24 h by default), logged as given up.

``retry_for`` is time spent, measured by the monotonic clock (the server's
``reactor.seconds()``): a step of the wall clock a day forward gave every
pending delivery up at its next attempt, and one back kept retrying a day
longer.  The log's ``at`` stays the time of day an operator reads; each
attempt also logs its ``age`` (the budget spent), so after a restart the
budget goes on from there plus the downtime, which only the wall clock can
tell (counted as none if the clock went back meanwhile).

Pending deliveries are bounded by count too (``max_pending``): a receiver
down while a fleet fires would otherwise hold every event for ``retry_for``.
Past the bound the oldest are dropped, logged as given up (``dropped``) so a
restart does not send them again, and counted.  The oldest, because the
newest say what is true now: a VM's ``alarm -> ok`` is worth more to the
receiver than the ``ok -> alarm`` before it, and dropping the newest would
keep stale alarms and lose the resolutions that close them; the oldest have
also spent the most of their ``retry_for``.
"""

import logging
from collections import Counter
from collections.abc import Callable
from itertools import islice

from twisted.internet import defer

from vmstats.rules.actionlog import ActionLog, Pending
from vmstats.rules.config import Settings
from vmstats.rules.notifiers import Notifier
from vmstats.server.metrics import RateLimitedLog
from vmstats.words import counted

log = logging.getLogger(__name__)


class Dispatcher:
    """Sends logged events to their actions; counts every outcome."""

    def __init__(self, reactor, action_log: ActionLog, actions: dict[str, Notifier],
                 retry_for: float, retry_min: float = 1.0, retry_max: float = 300.0,
                 wall: Callable[[], float] | None = None,
                 max_pending: int = Settings.max_pending):
        #: Times delays and the retry budget (the server's is monotonic: vmstats/server/clock.py).
        self.reactor = reactor
        #: The time of day of the log's ``at``; a test's ``task.Clock`` serves as both.
        self.wall = wall if wall is not None else reactor.seconds
        self.log = action_log
        self.actions = actions
        self.retry_for = retry_for
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.max_pending = max_pending
        #: Oldest first (a dict keeps its insertion order): the bound drops from the front.
        self.pending: dict[str, Pending] = {}
        #: rule -> its scaling deliveries pending: asked at every group evaluation, so it is
        #: counted, not found by a pass over ``pending`` (1.6 ms a call at 20,000 pending, a
        #: fleet gone silent while the receiver is down).
        self._scaling: Counter[str] = Counter()
        self.counts: Counter[tuple[str, str]] = Counter()
        self._timers: dict[str, object] = {}
        #: Sends under way (key -> Deferred): a dropped delivery's send is cancelled.
        self._sending: dict[str, defer.Deferred] = {}
        #: Events whose entry could not be logged (key -> event): the next attempt of one of
        #: their deliveries logs it first, so the log (a restart's states, ``vmstats alerts``)
        #: does not end up with attempts and results of an event it never heard of.
        self._unwritten: dict[str, dict] = {}
        self.stopped = False
        self.dropped = 0
        self._failure_log = RateLimitedLog(log, "delivery failure")
        self._drop_log = RateLimitedLog(log, "dropped deliveries", burst=1, period=60.0)

    def submit(self, events: list[dict]) -> defer.Deferred:
        """Log ``events`` with their first attempts, then send; fires once they are logged."""
        entries = []
        fresh = []
        started = self.reactor.seconds()
        for event in events:
            entries.append({"type": "event", "event": event})
            for action in event.get("actions", ()):
                pending = Pending("%s.%s" % (event["key"], action), action, event, 1,
                                  started=started)
                entries.append({"type": "attempt", "key": pending.key, "n": 1,
                                "at": self.wall(), "age": 0.0})
                self._hold(pending)
                fresh.append(pending)
        if not entries:
            return defer.succeed(None)
        d = self.log.append(entries)
        d.addCallback(lambda _: [self._send(p) for p in fresh])
        d.addErrback(self._unlogged, fresh)
        # Once sent: what a receiver took at once (a log line) is no longer pending, and what
        # is dropped (the oldest) has its attempt in the log before its gave_up.
        d.addCallback(lambda _: self.bound())
        return d

    def _unlogged(self, failure, fresh: list[Pending]) -> None:
        """Not on disk: nothing may be sent (it could be sent twice); try to log it again."""
        for pending in fresh:
            self.counts[(pending.action, "log_error")] += 1
            self._unwritten[pending.event["key"]] = pending.event
            self._later(pending)

    def resume(self, pending: list[Pending]) -> None:
        """Deliveries the log left without success (a crash or a stop): attempt them again,
        their budget spent being what the log says plus the downtime by the wall clock."""
        now, started = self.wall(), self.reactor.seconds()
        for one in pending:
            since = one.aged_at if one.aged_at is not None else one.event["at"]
            one.started = started - one.age - max(0.0, now - since)
            self._hold(one)
        self.bound()  # a log of more than max_pending (the bound was lowered): the oldest go
        for one in pending:
            if self.pending.get(one.key) is one:
                self._attempt(one)

    def bound(self) -> None:
        """Drop the oldest pending deliveries past ``max_pending``: logged as given up, so a
        restart does not send them again, counted (``dropped``) and said once a minute."""
        excess = len(self.pending) - self.max_pending
        if excess <= 0:
            return
        entries = []
        at = self.wall()
        for pending in list(islice(self.pending.values(), excess)):
            self._release(pending)
            timer = self._timers.pop(pending.key, None)
            if timer is not None and timer.active():
                timer.cancel()
            sending = self._sending.pop(pending.key, None)
            if sending is not None:
                sending.cancel()
            self.counts[(pending.action, "dropped")] += 1
            entries.append({"type": "gave_up", "key": pending.key, "dropped": True,
                            "reason": "more than max_pending (%d) pending" % self.max_pending,
                            "at": at})
        self.dropped += excess
        self._drop_log.emit("%s dropped, the oldest first: more than max_pending (%d) waiting "
                            "for their receivers (%d dropped since the start)",
                            counted(excess, "delivery", "deliveries"), self.max_pending,
                            self.dropped)
        self.log.append(entries).addErrback(lambda _f: None)

    def holds_scale(self, rule: str) -> bool:
        """True while a scaling decision of ``rule`` is not yet delivered (the next one waits)."""
        return self._scaling[rule] > 0

    def _hold(self, pending: Pending) -> None:
        if pending.key not in self.pending and pending.event["kind"] == "scale":
            self._scaling[pending.event["rule"]] += 1
        self.pending[pending.key] = pending

    def _release(self, pending: Pending) -> None:
        if self.pending.pop(pending.key, None) is not None and pending.event["kind"] == "scale":
            self._scaling[pending.event["rule"]] -= 1

    def _attempt(self, pending: Pending) -> None:
        self._timers.pop(pending.key, None)
        if self.stopped or self.pending.get(pending.key) is not pending:
            return
        if pending.action not in self.actions:
            self._give_up(pending, "the action is no longer in the rules")
            return
        age = self.reactor.seconds() - pending.started
        if age > self.retry_for:
            self._give_up(pending, "undelivered after %gs" % self.retry_for)
            return
        pending.attempts += 1
        event = self._unwritten.pop(pending.event["key"], None)
        entries = [] if event is None else [{"type": "event", "event": event}]
        entries.append({"type": "attempt", "key": pending.key, "n": pending.attempts,
                        "at": self.wall(), "age": round(age, 3)})
        d = self.log.append(entries)
        d.addCallbacks(lambda _: self._send(pending), self._attempt_unlogged,
                       errbackArgs=(pending, event))

    def _attempt_unlogged(self, _failure, pending: Pending, event: dict | None) -> None:
        if event is not None:
            self._unwritten[event["key"]] = event
        self._later(pending)

    def _send(self, pending: Pending) -> None:
        if self.stopped or self.pending.get(pending.key) is not pending:  # dropped meanwhile
            return
        notifier = self.actions.get(pending.action)
        if notifier is None:
            self._give_up(pending, "the action is no longer in the rules")
            return
        self.counts[(pending.action, "attempts")] += 1
        d = defer.maybeDeferred(notifier.send, self.reactor, pending.event, pending.key)
        if not d.called:
            self._sending[pending.key] = d
        d.addCallbacks(self._delivered, self._failed, callbackArgs=(pending,),
                       errbackArgs=(pending,))

    def _delivered(self, _result, pending: Pending) -> None:
        self._sending.pop(pending.key, None)
        if self.pending.get(pending.key) is not pending:  # dropped: counted so already
            return
        self._release(pending)
        self.counts[(pending.action, "delivered")] += 1
        self.log.append([{"type": "result", "key": pending.key, "n": pending.attempts, "ok": True,
                          "at": self.wall()}]).addErrback(lambda _f: None)

    def _failed(self, failure, pending: Pending) -> None:
        self._sending.pop(pending.key, None)
        if self.pending.get(pending.key) is not pending:  # dropped (its send cancelled)
            return
        self.counts[(pending.action, "failed")] += 1
        error = failure.getErrorMessage() or failure.type.__name__
        self._failure_log.emit("delivery %s to %s failed (attempt %d): %s", pending.key,
                               pending.action, pending.attempts, error)
        self.log.append([{"type": "result", "key": pending.key, "n": pending.attempts, "ok": False,
                          "error": error[:300], "at": self.wall()}]
                        ).addErrback(lambda _f: None)
        self._later(pending)

    def _later(self, pending: Pending) -> None:
        if self.stopped:
            return
        delay = min(self.retry_max, self.retry_min * 2 ** max(pending.attempts - 1, 0))
        self._timers[pending.key] = self.reactor.callLater(delay, self._attempt, pending)

    def _give_up(self, pending: Pending, reason: str) -> None:
        self._release(pending)
        self.counts[(pending.action, "gave_up")] += 1
        log.error("delivery %s to %s given up: %s", pending.key, pending.action, reason)
        self.log.append([{"type": "gave_up", "key": pending.key, "reason": reason,
                          "at": self.wall()}]).addErrback(lambda _f: None)

    def stop(self) -> defer.Deferred:
        """No new attempts; what is pending stays in the log for the next start."""
        self.stopped = True
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        closing = [defer.maybeDeferred(n.close) for n in self.actions.values()]
        return defer.DeferredList(closing, consumeErrors=True)
