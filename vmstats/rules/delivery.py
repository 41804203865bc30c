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

An action with ``group_by`` (``grouping.py``) gets its events' deliveries
gathered into groups instead, each group one notification: logged (an
``attempt`` whose ``covers`` names the deliveries it completes, with their
budget spent) before it is sent under a key of its own, and on success
every covered delivery is done.  A failed notification is sent again after
the backoff, with what the group then holds; each delivery keeps its own
``retry_for``.  After a crash the uncompleted deliveries are gathered again,
and the groups also take the alerts the log says still fire, so a group's
next notification lists them as Alertmanager's would.

The deliveries of one alert to one action are sent one after another, in the order
the events were raised, each once the one before is done, its retries included
(``turns.py``): an action's concurrency and the retries would otherwise let an
alert's resolution reach a receiver (or a program's run end) before the firing
it resolves.  Those of different alerts go side by side.

A mute (``mutes.py``) is checked here, when an event is delivered: an event a
mute covers is logged with a ``muted`` entry per action instead of attempts,
and is not sent.  Each alert held back so is remembered with the state its
receivers last heard (``told``); when the mute ends, an alert whose state is
other than that (still firing, most often) is sent then, once, as a copy of
its latest event under a new key, marked ``unmuted``.  The log holds all of it,
so a restart remembers what a mute held back.
"""

import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from itertools import islice

from twisted.internet import defer

from vmstats.rules.actionlog import ActionLog, Pending, Replayed
from vmstats.rules.config import Settings, retired_action
from vmstats.rules.grouping import Group, Grouping, alert_labels, identity
from vmstats.rules.grouping import firing as fires
from vmstats.rules.notifiers import Notifier
from vmstats.rules.turns import Turns
from vmstats.server.metrics import RateLimitedLog
from vmstats.words import counted

log = logging.getLogger(__name__)


def _settings_text(entry: dict) -> str:
    """What of a ``settings`` or ``retired`` entry says which receiver it reaches."""
    return json.dumps([entry["kind"], entry.get("table")], sort_keys=True)


class Dispatcher:
    """Sends logged events to their actions; counts every outcome."""

    def __init__(self, reactor, action_log: ActionLog, actions: dict[str, Notifier],
                 retry_for: float, retry_min: float = 1.0, retry_max: float = 300.0,
                 wall: Callable[[], float] | None = None,
                 max_pending: int = Settings.max_pending,
                 muted: Callable[[dict], object] = lambda event: None):
        #: Times delays and the retry budget (the server's is monotonic: vmstats/server/clock.py).
        self.reactor = reactor
        #: The time of day of the log's ``at``; a test's ``task.Clock`` serves as both.
        self.wall = wall if wall is not None else reactor.seconds
        self.log = action_log
        self.actions = actions
        action_log.named = frozenset(actions)
        #: action -> (its notifier, its settings as logged): the ``settings`` entry the log
        #: holds of each action in the rules, so it is written once and at a change, not with
        #: every event.
        self._settings: dict[str, tuple[Notifier, str]] = {}
        #: Notifiers of actions a reload took out of the rules, kept until the deliveries
        #: still pending to them (the resolutions of the alerts they were told of) are done
        #: or given up (``retire``): action -> (notifier, deliveries left).
        self.retired: dict[str, list] = {}
        #: Actions whose ``retired`` entry the log holds (not since said ``back``).
        self._logged_retired: set[str] = set()
        #: action -> why the deliveries owed to it are given up, for a retired action a
        #: restart does not reach again (a command): said instead of "no longer in the rules".
        self._gone: dict[str, str] = {}
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
        #: The lines of (action, alert) the deliveries wait in for their turn (``turns.py``).
        self.turns = Turns()
        self.counts: Counter[tuple[str, str]] = Counter()
        self._timers: dict[str, object] = {}
        #: Sends under way (key -> the notifier it went to, and its Deferred): a dropped
        #: delivery's send is cancelled, and a stop halts every notifier holding one (``stop``).
        self._sending: dict[str, tuple[Notifier, defer.Deferred]] = {}
        #: Events whose entry could not be logged (key -> event): the next attempt of one of
        #: their deliveries logs it first, so the log (a restart's states, ``vmstats alerts``)
        #: does not end up with attempts and results of an event it never heard of.
        self._unwritten: dict[str, dict] = {}
        #: action -> group key -> Group, for the actions with ``group_by``.
        self.groups: dict[str, dict[tuple, Group]] = {}
        #: action -> alert -> the key of the group holding it: an alert stays in its group
        #: until it leaves it (resolved and sent), even if its VM's tags change meanwhile (a
        #: VM moved to another host), so no group keeps firing an alert another resolved.
        self._placed: dict[str, dict[str, tuple]] = {}
        #: The mute covering an event now (``mutes.Mute``) or None; asked once an event.
        self.muted = muted
        #: (rule, scope) -> [mute id, the state its receivers last heard, the latest event held
        #: back]: what a mute's end may have to send (``release``).
        self.held_back: dict[tuple[str, str], list] = {}
        self.stopped = False
        self.dropped = 0
        self._failure_log = RateLimitedLog(log, "delivery failure")
        self._drop_log = RateLimitedLog(log, "dropped deliveries", burst=1, period=60.0)

    def submit(self, events: list[dict]) -> defer.Deferred:
        """Log ``events`` with their first attempts, then send; fires once they are logged."""
        entries = []
        settings = []
        fresh = []
        gathered = []
        started = self.reactor.seconds()
        for event in events:
            entries.append({"type": "event", "event": event})
            if event.get("farewell"):
                pass  # to actions the rule dropped: a mute's end would not reach them
            elif event["kind"] in ("transition", "reminder") and event.get("actions"):
                mute = self.muted(event)
                if mute is not None:
                    entries += self._hold_back(event, mute.id)
                    continue
                if self.held_back:  # heard now: a mute's end has nothing older of it to send
                    self.held_back.pop((event["rule"], event["scope"]), None)
            elif event["kind"] == "scale" and event.get("actions"):
                mute = self.muted(event)
                if mute is not None:  # decided as the mute began: not acted on (never sent later)
                    entries += self._muted_entries(event, mute.id, None)
                    continue
            for action in event.get("actions", ()):
                settings += self._settings_of(action)
                if self._grouping(action) is not None:  # its first attempt is its group's
                    pending = Pending("%s.%s" % (event["key"], action), action, event, 0,
                                      started=started)
                    gathered.append(pending)
                else:
                    pending = Pending("%s.%s" % (event["key"], action), action, event, 1,
                                      started=started)
                    entries.append({"type": "attempt", "key": pending.key, "n": 1,
                                    "at": self.wall(), "age": 0.0})
                    fresh.append(pending)
                self._hold(pending)
        if not entries:
            return defer.succeed(None)
        d = self.log.append(settings + entries)
        d.addCallback(lambda _: ([self._send(p) for p in fresh], [self._gather(p) for p in gathered]))
        d.addErrback(self._unlogged, fresh + gathered)
        # Once sent: what a receiver took at once (a log line) is no longer pending, and what
        # is dropped (the oldest) has its attempt in the log before its gave_up.
        d.addCallback(lambda _: self.bound())
        return d

    def _hold_back(self, event: dict, mute: str) -> list[dict]:
        """An event a mute covers: remembered for the mute's end, logged as muted per action."""
        scope = (event["rule"], event["scope"])
        held = self.held_back.get(scope)
        told = held[1] if held is not None else (
            event["from"] if event["kind"] == "transition" else event["to"])
        self.held_back[scope] = [mute, told, event]
        return self._muted_entries(event, mute, told)

    def _muted_entries(self, event: dict, mute: str, told: str | None) -> list[dict]:
        """Each of the event's deliveries, logged and counted as muted (not pending)."""
        for action in event["actions"]:
            self.counts[(action, "muted")] += 1
        return [self._muted_entry(event, action, mute, told) for action in event["actions"]]

    def _muted_entry(self, event: dict, action: str, mute: str, told: str | None) -> dict:
        """The log's word that ``mute`` holds back the event's delivery to ``action``; its
        ``told``, what the receivers last heard, is what the mute's end compares with."""
        entry = {"type": "muted", "key": "%s.%s" % (event["key"], action), "mute": mute,
                 "rule": event["rule"], "scope": event["scope"], "at": self.wall()}
        if told is not None:
            entry["told"] = told
        return entry

    def release(self, mute: str) -> int:
        """A mute ended (or was expired): each alert it held back whose state is not what its
        receivers last heard is sent now, once; one another mute covers stays held by that
        one.  Returns how many were sent."""
        copies, entries = [], []
        for scope, (held_by, told, event) in list(self.held_back.items()):
            if held_by != mute:
                continue
            other = self.muted(event)
            if other is not None:
                self.held_back[scope][0] = other.id
                entries.append(self._muted_entry(event, event["actions"][0], other.id, told))
                continue
            del self.held_back[scope]
            if event["to"] != told:
                copy = dict(event, unmuted=mute)
                copy["key"] = uuid.uuid4().hex
                copies.append(copy)
        entries.append({"type": "unmuted", "mute": mute, "at": self.wall()})
        if copies:  # logged before the mute's end is, so a crash between sends them still
            self.submit(copies).addErrback(lambda _f: None)
        self.log.append(entries).addErrback(lambda _f: None)
        return len(copies)

    def _unlogged(self, failure, fresh: list[Pending]) -> None:
        """Not on disk: nothing may be sent (it could be sent twice); try to log it again."""
        for pending in fresh:
            self._settings.pop(pending.action, None)  # logged again with the event
            self.counts[(pending.action, "log_error")] += 1
            self._unwritten[pending.event["key"]] = pending.event
            self._later(pending)

    def resume(self, pending: list[Pending], firing: list[dict] = ()) -> None:
        """Deliveries the log left without success (a crash or a stop): attempt them again,
        their budget spent being what the log says plus the downtime by the wall clock.

        ``firing``: the last transitions of the scopes not ok; the groups of their grouped
        actions hold those that fire (not insufficient-data: it left its group once told, as a
        resolved alert does), to list them in their next notifications.
        """
        for event in firing:
            if not fires(event):
                continue
            for action in event.get("actions", ()):
                if self._grouping(action) is not None:
                    self._group_of(action, event).seed(event, "%s.%s" % (event["key"], action))
        now, started = self.wall(), self.reactor.seconds()
        for one in pending:
            since = one.aged_at if one.aged_at is not None else one.event["at"]
            one.started = started - one.age - max(0.0, now - since)
            self._hold(one)
        self.bound()  # a log of more than max_pending (the bound was lowered): the oldest go
        for one in pending:
            if self.pending.get(one.key) is one:
                self._attempt(one)
        self._seeded()

    def _seeded(self) -> None:
        """Groups holding only alerts already notified (at start, after a reload) repeat them
        ``repeat_interval`` from now, or list them in their next notification."""
        now = self.reactor.seconds()
        for action, groups in self.groups.items():
            for group in list(groups.values()):
                if group.last_sent is None and not group.waiting:
                    group.last_sent = now
                self._schedule(action, group)

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
                sending[1].cancel()
            if pending.action in self.groups:
                self._ungather(pending)
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
        if pending.key not in self.pending:
            self.turns.join((pending.action, identity(pending.event)), pending.key)
            if pending.event["kind"] == "scale":
                self._scaling[pending.event["rule"]] += 1
            retired = self.retired.get(pending.action)
            if retired is not None:
                retired[1] += 1
        self.pending[pending.key] = pending

    def _release(self, pending: Pending) -> None:
        if self.pending.pop(pending.key, None) is None:
            return
        following = self.turns.leave(pending.key)
        if following is not None:  # its turn now; not within this call (bound drops several)
            self._timers[following] = self.reactor.callLater(0, self._turn,
                                                             self.pending[following])
        if pending.event["kind"] == "scale":
            self._scaling[pending.event["rule"]] -= 1
        retired = self.retired.get(pending.action)
        if retired is not None:
            retired[1] -= 1
            if retired[1] <= 0:  # after what is under way now (a group's send) is done with it
                self.reactor.callLater(0, self._let_go, pending.action, retired)

    def notifier(self, action: str) -> Notifier | None:
        """The action's notifier: the rules' own, else a retired one still owed deliveries."""
        notifier = self.actions.get(action)
        if notifier is None:
            retired = self.retired.get(action)
            notifier = None if retired is None else retired[0]
        return notifier

    def retire(self, replaced: dict[str, Notifier]) -> None:
        """After a reload: the notifiers ``replaced`` (the previous rules'), closed, but those of
        actions no longer in the rules only once no delivery to them is pending.

        Removing a rule and the action it alone used, in one reload, left its firing alerts
        firing at that receiver for ever: their resolutions found the action gone.  Deliveries
        to a retired action keep its ``retry_for``; the log keeps its settings (a ``retired``
        entry, before the reload's events), so a restart before they are done makes them
        too (``revive``).
        """
        entries = []
        for action, notifier in replaced.items():
            if action in self.actions:  # the rules' own notifier of that name replaces it
                self.actions[action].take_over(notifier)
                defer.maybeDeferred(notifier.close).addErrback(lambda _f: None)
            else:
                self.retired[action] = [notifier, 0]
                entries.append(self._retired_entry(action, notifier))
        for action in [action for action in self.retired if action in self.actions]:
            retired = self.retired.pop(action)[0]
            self.actions[action].take_over(retired)  # back in the rules: its runs count too
            defer.maybeDeferred(retired.close).addErrback(lambda _f: None)
        # Settings of actions gone may be compacted away: logged again if a name comes back.
        self.log.named = frozenset(self.actions)
        self._settings = {action: known for action, known in self._settings.items()
                          if action in self.actions}
        for action in sorted(self._logged_retired & set(self.actions)):  # named again: the file wins
            self._logged_retired.discard(action)
            entries.append({"type": "retired", "action": action,
                            "kind": self.actions[action].kind, "back": True, "at": self.wall()})
        self._gone = {action: why for action, why in self._gone.items()
                      if action not in self.actions}
        if entries:  # before the reload's events: a restart after them still reaches the action
            self.log.append(entries).addErrback(lambda _f: None)
        for retired in self.retired.values():
            retired[1] = 0
        for pending in self.pending.values():
            retired = self.retired.get(pending.action)
            if retired is not None:
                retired[1] += 1
        for action, retired in self.retired.items():
            # Once the reload's own events (the removed rules' resolutions) are submitted.
            self.reactor.callLater(0, self._let_go, action, retired)

    def _retired_entry(self, action: str, notifier: Notifier) -> dict:
        """The log's word that a reload retired ``action``: its settings, so a restart can
        still make the deliveries owed to it; not a command's (see ``revive``)."""
        self._logged_retired.add(action)
        return self._settings_entry(action, notifier, "retired")

    def _settings_entry(self, action: str, notifier: Notifier, kind: str = "settings") -> dict:
        """An entry with the action's kind and, but for a command's, its settings."""
        entry = {"type": kind, "action": action, "kind": notifier.kind, "at": self.wall()}
        if notifier.kind != "command":
            try:
                json.dumps(notifier.table)
            except (TypeError, ValueError):  # nothing a valid action holds; said at a restart
                return entry
            entry["table"] = notifier.table
        return entry

    def _settings_of(self, action: str) -> list[dict]:
        """The ``settings`` entry to log before a delivery to ``action``, if the log does not
        hold these settings yet: an action taken out of the file while the server is down is
        rebuilt from it at start (``revive``).  Once per action and change of its settings: a
        lookup and an identity test an event, not an entry."""
        notifier = self.actions.get(action)
        if notifier is None:  # a retired action's are in its ``retired`` entry
            return []
        known = self._settings.get(action)
        if known is not None and known[0] is notifier:
            return []
        entry = self._settings_entry(action, notifier)
        text = _settings_text(entry)
        self._settings[action] = (notifier, text)
        return [] if known is not None and known[1] == text else [entry]

    def revive(self, state: Replayed, starting: list[dict] = ()) -> None:
        """At start, before ``resume``: the actions no longer in the file that are still owed
        deliveries (those the log holds, and ``starting``: the events the start makes, the
        resolutions of a rule removed while the server was down), rebuilt from the settings the
        log kept, so their receivers still hear the resolutions of what they were told: a
        ``retired`` entry, by a reload before the stop, else the ``settings`` entry the first
        event to the action wrote (an edit while the server was down, which no reload saw).
        Without either (a log an earlier version wrote), its deliveries are given up.

        A command is not run again from the log: what the rules file no longer names, no
        file names for an operator to read, and a written log line would become a program
        to run; its deliveries are given up, said and counted."""
        retired, pending = state.retired, list(state.pending.values())
        self._logged_retired = set(retired) - set(self.actions)
        entries = [{"type": "retired", "action": action, "kind": self.actions[action].kind,
                    "back": True, "at": self.wall()}
                   for action in sorted(set(retired) & set(self.actions))]
        # The file's actions whose settings the log holds as they are now are not logged again.
        for action, notifier in self.actions.items():
            logged = state.settings.get(action)
            if logged is not None:
                text = _settings_text(logged)
                self._settings[action] = (notifier, text)
                if text != _settings_text(self._settings_entry(action, notifier)):
                    del self._settings[action]
        # Those told of alerts still firing or owed deliveries by a log without their settings
        # (an earlier version's): logged now, before the file may lose them.
        told = {p.action for p in pending}
        for event in state.states.values():
            if event["to"] != "ok":
                told.update(event["actions"])
        for action in sorted(told):
            entries += self._settings_of(action)
        # A name back in the file: a later restart must not reach the old receiver.
        if entries:
            self.log.append(entries).addErrback(lambda _f: None)
        owed = Counter(p.action for p in pending if p.action not in self.actions)
        owed.update(action for event in starting for action in event.get("actions", ())
                    if action not in self.actions)
        for action, count in sorted(owed.items()):
            entry = retired.get(action)
            how = "by a reload before the restart"
            if entry is None:
                entry, how = state.settings.get(action), "while the server was down"
            if entry is None:  # nothing of it logged: given up at its attempt
                continue
            notifier, why = None, None
            if entry["kind"] == "command":
                why = ("a command action taken out of the rules is not run after a restart "
                       "(docs/RULES.md)")
            elif "table" not in entry:
                why = "the action log holds no settings of it"
            else:
                notifier, problems = retired_action(action, entry["table"])
                if notifier is None:
                    why = "its settings in the action log are refused: %s" % "; ".join(problems)
            if notifier is None:
                self._gone[action] = why
                log.warning("action %s, taken out of the rules %s: %s owed to it given up: %s",
                            action, how, counted(count, "delivery", "deliveries"), why)
                continue
            retired_now = self.retired[action] = [notifier, 0]
            log.info("action %s, taken out of the rules %s, is kept for the %s owed to it",
                     action, how, counted(count, "delivery", "deliveries"))
            # Let go once they are done; at once if none is held after all (a mute holds them).
            self.reactor.callLater(0, self._let_go, action, retired_now)

    def _gone_reason(self, action: str) -> str:
        return self._gone.get(action, "the action is no longer in the rules")

    def _let_go(self, action: str, retired: list) -> None:
        """A retired action with nothing left to deliver: closed, its groups let go."""
        if self.retired.get(action) is not retired or retired[1] > 0:
            return
        del self.retired[action]
        for group in self.groups.pop(action, {}).values():
            group.dissolved = True
            if group.timer is not None and group.timer.active():
                group.timer.cancel()
        self._placed.pop(action, None)
        log.info("action %s, no longer in the rules, is let go: nothing left to deliver to it",
                 action)
        defer.maybeDeferred(retired[0].close).addErrback(lambda _f: None)

    def _attempt(self, pending: Pending) -> None:
        self._timers.pop(pending.key, None)
        if self.stopped or self.pending.get(pending.key) is not pending:
            return
        if self.notifier(pending.action) is None:
            self._give_up(pending, self._gone_reason(pending.action))
            return
        age = self.reactor.seconds() - pending.started
        if age > self._budget(pending):
            self._give_up(pending, self._too_late(pending))
            return
        event = self._unwritten.pop(pending.event["key"], None)
        entries = [] if event is None else (self._settings_of(pending.action)
                                            + [{"type": "event", "event": event}])
        if self._grouping(pending.action) is not None:  # its group's notification attempts it
            if not entries:
                self._gather(pending)
                return
            d = self.log.append(entries)
            d.addCallbacks(lambda _: self._gather(pending), self._attempt_unlogged,
                           errbackArgs=(pending, event))
            return
        pending.attempts += 1
        entries.append({"type": "attempt", "key": pending.key, "n": pending.attempts,
                        "at": self.wall(), "age": round(age, 3)})
        d = self.log.append(entries)
        d.addCallbacks(lambda _: self._send(pending), self._attempt_unlogged,
                       errbackArgs=(pending, event))

    def _attempt_unlogged(self, _failure, pending: Pending, event: dict | None) -> None:
        if event is not None:
            self._unwritten[event["key"]] = event
            self._settings.pop(pending.action, None)
        self._later(pending)

    def _turn(self, pending: Pending) -> None:
        """The delivery before it in its line is done: this one is attempted now (logged, with
        its age: a restart goes on from there).  Its wait spent none of its ``retry_for``: a
        resolution raised a minute after a firing that was retried for a day and then delivered
        would otherwise be given up unsent, and the receiver keep the alert firing for good."""
        if pending.waiting_since is not None:
            pending.started += self.reactor.seconds() - pending.waiting_since
            pending.waiting_since = None
        self._attempt(pending)

    def _send(self, pending: Pending) -> None:
        if self.stopped or self.pending.get(pending.key) is not pending:  # dropped meanwhile
            return
        if not self.turns.ready(pending.key):  # an earlier event of its alert is not done yet
            pending.waiting_since = self.reactor.seconds()
            return
        notifier = self.notifier(pending.action)
        if notifier is None:
            self._give_up(pending, self._gone_reason(pending.action))
            return
        self.counts[(pending.action, "attempts")] += 1
        d = defer.maybeDeferred(notifier.send, self.reactor, pending.event, pending.key)
        if not d.called:
            self._sending[pending.key] = (notifier, d)
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
        if self.stopped:  # a send the stop cut short: pending, sent again at the next start
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
        delay = self._delay(pending.attempts)
        budget = self._budget(pending)
        if budget < self.retry_for:  # a scaling decision: given up as its cooldown ends
            left = budget - (self.reactor.seconds() - pending.started)
            delay = min(delay, max(0.0, left) + 0.001)
        self._timers[pending.key] = self.reactor.callLater(delay, self._attempt, pending)

    def _budget(self, pending: Pending) -> float:
        """How long a delivery is retried: ``retry_for``; a scaling decision's, at most its
        cooldown.  A decision retried for a day was acted on when it finally went through,
        on the figures of a day before, and held every later decision of its rule back (one
        at a time): past its cooldown it is given up, and the rule decides again on the
        figures of then (``evaluator.Engine._scale``)."""
        cooldown = pending.event.get("cooldown") if pending.event["kind"] == "scale" else None
        return self.retry_for if cooldown is None else min(self.retry_for, cooldown)

    def _too_late(self, pending: Pending) -> str:
        """Why a delivery past its budget is given up, in the log's words."""
        budget = self._budget(pending)
        if budget < self.retry_for:
            return ("undelivered within its %gs cooldown: the rule decides again on the figures "
                    "of now" % budget)
        return "undelivered after %gs" % self.retry_for

    def _give_up(self, pending: Pending, reason: str) -> None:
        self._release(pending)
        self.counts[(pending.action, "gave_up")] += 1
        log.error("delivery %s to %s given up: %s", pending.key, pending.action, reason)
        self.log.append([{"type": "gave_up", "key": pending.key, "reason": reason,
                          "at": self.wall()}]).addErrback(lambda _f: None)

    # -- groups (actions with group_by) -------------------------------------------------------
    def _grouping(self, action: str) -> Grouping | None:
        notifier = self.notifier(action)
        return None if notifier is None else notifier.grouping

    def _group_of(self, action: str, event: dict) -> Group:
        """The group holding the event's alert, else the one its labels make (made if new)."""
        grouping = self._grouping(action)
        groups = self.groups.setdefault(action, {})
        placed = self._placed.setdefault(action, {})
        alert = identity(event)
        group = groups.get(placed.get(alert))
        if group is None:
            labels = alert_labels(event)
            key = grouping.key(labels)
            group = groups.get(key)
            if group is None:
                group = groups[key] = Group(key, grouping.group_labels(labels), grouping,
                                            self.reactor.seconds())
            placed[alert] = key
        return group

    def _ungather(self, pending: Pending) -> None:
        """A dropped delivery out of its group's waiting (its alert stays: it is the state)."""
        key = self._placed.get(pending.action, {}).get(identity(pending.event))
        group = self.groups.get(pending.action, {}).get(key)
        if group is not None:
            group.waiting.pop(pending.key, None)

    def _gather(self, pending: Pending) -> None:
        """A logged delivery to a grouped action: into its group, sent with the group."""
        if self.stopped or self.pending.get(pending.key) is not pending:
            return
        if self._grouping(pending.action) is None:  # no longer grouped (a reload)
            self._attempt(pending)
            return
        group = self._group_of(pending.action, pending.event)
        group.add(pending)
        self._schedule(pending.action, group)

    def _schedule(self, action: str, group: Group) -> None:
        """The group's timer at its next notification; a group with nothing left is let go."""
        if self.stopped or group.sending is not None or group.dissolved:
            return
        due = group.due()
        if due is None:
            if group.timer is not None and group.timer.active():
                group.timer.cancel()
            group.timer = None
            if group.empty():
                groups = self.groups.get(action, {})
                if groups.get(group.key) is group:
                    del groups[group.key]
            return
        if group.timer is not None and group.timer.active():
            if group.timer.getTime() <= due:
                return
            group.timer.cancel()
        group.timer = self.reactor.callLater(max(0.0, due - self.reactor.seconds()), self._flush,
                                             action, group)

    def _flush(self, action: str, group: Group) -> None:
        """The group's notification: every alert it holds, completing every delivery waiting."""
        group.timer = None
        if self.stopped or group.dissolved:
            return
        notifier = self.notifier(action)
        now = self.reactor.seconds()
        covers = []
        for pending in list(group.waiting.values()):
            if self.pending.get(pending.key) is not pending:  # dropped past max_pending
                del group.waiting[pending.key]
            elif notifier is None:
                del group.waiting[pending.key]
                self._give_up(pending, self._gone_reason(action))
            elif now - pending.started > self._budget(pending):
                del group.waiting[pending.key]
                self._give_up(pending, self._too_late(pending))
            else:
                covers.append(pending)
        due = group.due()
        if notifier is None or not group.alerts or due is None or due > now + 0.001:
            self._schedule(action, group)
            return
        batch = group.batch(uuid.uuid4().hex + "." + action, covers,
                            lambda event: self.muted(event) is not None)
        if batch is None:
            group.passed(now)
            self._schedule(action, group)
            return
        for pending in batch.covers:  # past max_alerts, those of the alerts it carries
            pending.attempts += 1
        entry = {"type": "attempt", "key": batch.key, "n": group.failures + 1, "at": self.wall(),
                 "covers": {p.key: round(now - p.started, 3) for p in batch.covers}}
        d = self.log.append([entry])
        d.addCallbacks(lambda _: self._send_group(action, group, batch), self._group_unlogged,
                       errbackArgs=(action, group))

    def _group_unlogged(self, _failure, action: str, group: Group) -> None:
        """Not on disk: not sent (a restart could not tell it was); tried again later."""
        self.counts[(action, "log_error")] += 1
        group.failed(self.reactor.seconds(), self._delay(group.failures + 1))
        self._schedule(action, group)

    def _send_group(self, action: str, group: Group, batch) -> None:
        notifier = self.notifier(action)
        if self.stopped or notifier is None:
            group.sending = None
            self._schedule(action, group)
            return
        self.counts[(action, "attempts")] += 1
        d = defer.maybeDeferred(notifier.send_group, self.reactor, batch, batch.key)
        d.addCallbacks(self._group_delivered, self._group_failed, callbackArgs=(action, group, batch),
                       errbackArgs=(action, group, batch))

    def _group_delivered(self, _result, action: str, group: Group, batch) -> None:
        self.counts[(action, "notifications")] += 1
        for pending in batch.covers:
            if self.pending.get(pending.key) is pending:
                self._release(pending)
                self.counts[(action, "delivered")] += 1
        self.log.append([{"type": "result", "key": batch.key, "n": group.failures + 1, "ok": True,
                          "at": self.wall()}]).addErrback(lambda _f: None)
        placed = {} if group.dissolved else self._placed.get(action, {})
        for alert in group.sent(batch, self.reactor.seconds()):
            if placed.get(alert) == group.key:
                del placed[alert]
        self._schedule(action, group)

    def _group_failed(self, failure, action: str, group: Group, batch) -> None:
        if self.stopped:  # cut short by the stop: its deliveries are sent again at the next start
            group.sending = None
            return
        self.counts[(action, "failed")] += 1
        error = failure.getErrorMessage() or failure.type.__name__
        self._failure_log.emit("notification %s of %s to %s failed (attempt %d): %s", batch.key,
                               counted(len(batch.alerts), "alert"), action, group.failures + 1, error)
        self.log.append([{"type": "result", "key": batch.key, "n": group.failures + 1, "ok": False,
                          "error": error[:300], "at": self.wall()}]).addErrback(lambda _f: None)
        group.failed(self.reactor.seconds(), self._delay(group.failures + 1))
        if group.dissolved:  # its deliveries belong elsewhere now (a reload)
            for pending in batch.covers:
                self._gather(pending)
            return
        self._schedule(action, group)

    def regroup(self) -> None:
        """After a reload: the groups of actions whose grouping changed (or that are gone) are
        dissolved, their waiting deliveries gathered (or sent) as the action now says, and the
        alerts they held, the new groups'."""
        for action, groups in list(self.groups.items()):
            grouping = self._grouping(action)
            if all(group.grouping == grouping for group in groups.values()):
                continue
            del self.groups[action]
            self._placed.pop(action, None)
            for group in groups.values():
                group.dissolved = True
                if group.timer is not None and group.timer.active():
                    group.timer.cancel()
                covered = set() if group.sending is None else {p.key for p in group.sending.covers}
                if grouping is not None:
                    for event, key in group.alerts.values():
                        if key not in group.waiting:
                            self._group_of(action, event).seed(event, key)
                for pending in group.waiting.values():
                    if pending.key not in covered:
                        self._attempt(pending)
        self._seeded()

    def _delay(self, attempts: int) -> float:
        return min(self.retry_max, self.retry_min * 2 ** max(attempts - 1, 0))

    def stop(self) -> defer.Deferred:
        """No new attempts; what is pending stays in the log for the next start."""
        self.stopped = True
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()
        for groups in self.groups.values():
            for group in groups.values():
                if group.timer is not None and group.timer.active():
                    group.timer.cancel()
        notifiers = [*self.actions.values(), *(retired[0] for retired in self.retired.values())]
        # Halted too: a notifier a reload replaced or let go while its sends were under way (it
        # was closed then, and let finish them).  Else a command's programs ran on past the
        # stop, and those queued behind them were started, with the log closed: their results
        # unlogged, each ran again at the next start (and, without Linux's parent-death signal
        # to end them with the server, beside itself).
        halting = {id(n): n for n in notifiers}
        halting.update((id(n), n) for n, _d in self._sending.values())
        for notifier in halting.values():
            notifier.halt()
        closing = [defer.maybeDeferred(n.close) for n in notifiers]
        return defer.DeferredList(closing, consumeErrors=True)
