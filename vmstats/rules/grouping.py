"""Alert grouping for an action: Alertmanager's ``group_by`` and its three timers.

When a rule fires for 200 VMs at once (a network blip across the fleet) an
action without grouping sends 200 notifications.  With ``group_by`` the
action's alerts are gathered into groups, one per value of the labels named,
and each group is one notification carrying all of its alerts, as
Alertmanager does:

- ``group_wait``: a new group waits this long before its first notification,
  so the alerts that fire together arrive together;
- ``group_interval``: after a notification, changes to the group (alerts that
  fire, resolve or are reminded of) wait until this long after it;
- ``repeat_interval``: a group with alerts still firing and nothing new is
  sent again this long after its last notification;
- ``max_alerts``: a notification carries at most this many alerts, news first,
  and says how many it left out (``truncatedAlerts``); unlike Alertmanager's,
  which drops what it cuts, news left out waits for the next notification.

Each notification carries every alert of the group that fires, and those
that resolved since the last one (then they leave the group).  An alert is a
rule and a scope (and a scaling decision is one of its own), as in
``alert_labels``: its status is its own, so one VM resolving inside a group
of 200 resolves that VM, and one going silent fires as silent.  Which event
of the alert is sent is the latest: an alert that fired and resolved within
``group_wait`` is sent once, resolved, and both deliveries are done.

This module holds the groups' state and timing; ``delivery.py`` logs, sends
and retries each notification as it does a single event.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

#: The labels every alert has: its rule, its scope, and ``event = "scale"`` for a scaling
#: decision.  Any other name in ``group_by`` is a VM's tag (``host``, or one of its tags).
ALERT_LABELS = ("alertname", "scope", "event")
#: ``rule`` in ``group_by`` is the rule's label, ``alertname``, as an operator may name it.
ALIASES = {"rule": "alertname"}


@dataclass(frozen=True)
class Grouping:
    """An action's grouping: the labels that make a group, and its timers (seconds)."""

    by: tuple[str, ...]
    wait: float = 30.0
    interval: float = 300.0
    #: None: a group is not sent again while nothing changes in it.
    repeat: float | None = 14400.0
    #: Alerts a notification carries at most (0: all of them), as Alertmanager's webhook
    #: ``max_alerts``: a receiver that takes a bounded body (a chat, a ticket) gets one.
    max_alerts: int = 0

    @property
    def tags(self) -> tuple[str, ...]:
        """The VMs' tags named: the rules whose alerts go to this action carry them."""
        return tuple(name for name in self.by if name not in ALERT_LABELS)

    def describe(self) -> str:
        """For ``vmstats rules check``."""
        return ("one notification per %s, first after %gs, changes at most every %gs, %s%s"
                % ("group of " + ", ".join(self.by) if self.by else "action (every alert)",
                   self.wait, self.interval, "never repeated" if self.repeat is None
                   else "repeated every %gs while firing" % self.repeat,
                   ", at most %d alerts a notification" % self.max_alerts if self.max_alerts
                   else ""))

    def key(self, labels: dict[str, str]) -> tuple:
        """The group of an alert with these labels (a label it lacks groups as missing)."""
        return tuple(labels.get(name) for name in self.by)

    def group_labels(self, labels: dict[str, str]) -> dict[str, str]:
        return {name: labels[name] for name in self.by if name in labels}


def alert_labels(event: dict) -> dict[str, str]:
    """An alert's labels: the same when it fires, is reminded of and resolves, so they are
    its identity; a VM's tags that its rule's grouped actions name ride along."""
    labels = dict(event.get("labels") or {})
    labels.update(alertname=event["rule"], scope=event["scope"])
    if event["kind"] == "scale":
        labels["event"] = "scale"
    else:
        labels.pop("event", None)
    return labels


def identity(event: dict) -> str:
    """The alert an event is of: rule, scope, and whether it is a scaling decision."""
    return "%s\0%s" % (event["rule"], event["scope"]) + ("\0scale" if event["kind"] == "scale"
                                                         else "")


def fingerprint(event: dict) -> str:
    return hashlib.sha256(identity(event).encode("utf-8")).hexdigest()[:16]


def group_key_text(labels: dict[str, str]) -> str:
    """Alertmanager's spelling of a group: ``{}:{name="value", ...}``."""
    return "{}:{%s}" % ", ".join("%s=%s" % (name, json.dumps(value))
                                 for name, value in sorted(labels.items()))


#: The state a rule is in when it cannot tell (missing = "insufficient", or no data for a
#: rule's ``stale_after``): neither an alarm nor ok.
INSUFFICIENT = "insufficient-data"


def status(event: dict) -> str:
    """What receivers are told an alert is: ``firing`` (an alarm, a silence, a reminder; a
    scaling decision, which is news, never resolved), ``resolved`` (back to ``ok``) or
    ``insufficient-data`` (no alarm, and not ok either: the rule cannot tell).  Told as
    firing, "we cannot tell" paged someone and, for a VM that was gone, reminded for ever."""
    if event["kind"] == "scale":
        return "firing"
    to = event["to"]
    return "resolved" if to == "ok" else INSUFFICIENT if to == INSUFFICIENT else "firing"


def firing(event: dict) -> bool:
    """The alert fires (``status``): it stays in its group, and its group repeats."""
    return status(event) == "firing"


def _order(event: dict) -> tuple:
    """Which of two events of one alert is the later: a scope's transitions count up ``seq``;
    a reminder keeps its transition's and comes after it."""
    return (event.get("seq", 0), event["at"])


@dataclass
class Batch:
    """One notification of a group: its alerts (latest event, delivery key) and the deliveries
    it completes when the receiver takes it."""

    key: str
    labels: dict[str, str]
    alerts: list[tuple[dict, str]]
    covers: list = field(default_factory=list)
    #: Alerts of the group left out past ``max_alerts`` (Alertmanager's ``truncatedAlerts``).
    truncated: int = 0

    @property
    def status(self) -> str:
        return "firing" if any(firing(event) for event, _key in self.alerts) else "resolved"


class Group:
    """One group of one action: its alerts, the deliveries waiting for a notification, and
    when the next one is due (times on the dispatcher's monotonic clock)."""

    def __init__(self, key: tuple, labels: dict[str, str], grouping: Grouping, now: float):
        self.key = key
        self.labels = labels
        self.grouping = grouping
        self.created = now
        #: identity -> (latest event, its delivery key): what a notification carries.
        self.alerts: dict[str, tuple[dict, str]] = {}
        #: delivery key -> Pending: deliveries the next notification completes.
        self.waiting: dict = {}
        self.last_sent: float | None = None
        #: Consecutive failed notifications, and no new one before ``not_before`` (backoff).
        self.failures = 0
        self.not_before = 0.0
        #: The notification under way, if any: changes wait for its answer.
        self.sending: Batch | None = None
        self.timer = None
        #: The action's grouping changed (a reload): this group is no longer the action's.
        self.dissolved = False

    def add(self, pending) -> None:
        """A delivery of an event to this group; the alert's latest event is what is sent."""
        self.waiting[pending.key] = pending
        self.seed(pending.event, pending.key)

    def seed(self, event: dict, key: str) -> None:
        """An alert the group holds; one already notified (at start, the states that fire)
        is sent again with the group's next notification, not on its own."""
        alert = identity(event)
        held = self.alerts.get(alert)
        if held is None or _order(event) >= _order(held[0]):
            self.alerts[alert] = (event, key)

    def firing(self) -> bool:
        return any(firing(event) for event, _key in self.alerts.values())

    def due(self) -> float | None:
        """When the next notification is due: None when nothing is to be sent."""
        g = self.grouping
        if self.waiting:
            when = self.created + g.wait if self.last_sent is None else self.last_sent + g.interval
        elif g.repeat is not None and self.last_sent is not None and self.firing():
            when = self.last_sent + g.repeat
        else:
            return None
        return max(when, self.not_before)

    def batch(self, key: str, covers: list,
              muted: Callable[[dict], bool] = lambda event: False) -> Batch | None:
        """The notification: the alerts the group holds, oldest first; None if nothing is left.

        An alert the group only carries again (no delivery of it waits: a repeat, or news of
        another alert) is left out while a mute covers it, as Alertmanager leaves silenced
        alerts out of a group's notifications: a mute made while the alert fired would
        otherwise page it every ``repeat_interval`` through the maintenance it was made for.

        Past ``max_alerts`` the news (alerts a delivery waits on) come first, the oldest
        first, then the alerts carried again; the rest are counted in ``truncated``, and the
        deliveries of news left out are not covered: they wait for the next notification
        (``group_interval`` on), so a resolution is never cut for good.
        """
        news = {identity(pending.event) for pending in covers}
        shown = [held for alert, held in self.alerts.items() if alert in news or not muted(held[0])]
        if not shown:
            if not covers:
                return None
            shown = list(self.alerts.values())  # deliveries wait on it: never left uncompleted
        truncated = 0
        limit = self.grouping.max_alerts
        if limit and len(shown) > limit:
            shown.sort(key=lambda held: (identity(held[0]) not in news, held[0]["at"]))
            truncated = len(shown) - limit
            shown = shown[:limit]
            kept = {identity(event) for event, _key in shown}
            covers = [pending for pending in covers if identity(pending.event) in kept]
        alerts = sorted(shown, key=lambda held: held[0]["at"])
        self.sending = Batch(key, self.labels, alerts, covers, truncated)
        return self.sending

    def passed(self, now: float) -> None:
        """A notification due held nothing to send (each alert muted): the next repeat is
        timed from now, as if it had been sent."""
        self.last_sent = now

    def sent(self, batch: Batch, now: float) -> list[str]:
        """The receiver took ``batch``: resolved alerts and scaling decisions it carried leave
        the group (unless a later event of theirs came meanwhile); returns them."""
        self.sending = None
        self.last_sent = now
        self.failures = 0
        self.not_before = 0.0
        for pending in batch.covers:
            self.waiting.pop(pending.key, None)
        gone = []
        for event, key in batch.alerts:
            if not firing(event) or event["kind"] == "scale":
                alert = identity(event)
                if self.alerts.get(alert, (None, None))[1] == key:
                    del self.alerts[alert]
                    gone.append(alert)
        return gone

    def failed(self, now: float, delay: float) -> None:
        self.sending = None
        self.failures += 1
        self.not_before = now + delay

    def empty(self) -> bool:
        return not self.alerts and not self.waiting and self.sending is None
