"""One module per kind of action, behind one small interface (``Notifier``).

A notifier turns an event (a transition, a reminder or a scaling decision,
as ``evaluator.py`` makes them) into one delivery attempt and reports, through
a Deferred, whether the receiver took it.  Retries, backoff, the idempotency
key and the action log are not its business: ``delivery.py`` owns them for
every kind alike, so a new kind is one module with ``from_config`` and
``send``; a kind that can carry many alerts in one message (``groups``) has
``send_group`` too, for an action with ``group_by`` (``grouping.py``).
"""

from twisted.internet import defer

from vmstats.rules.grouping import INSUFFICIENT, status
from vmstats.stamps import moment
from vmstats.words import counted


class DeliveryError(Exception):
    """The receiver did not take the event (retried by the dispatcher)."""


class Notifier:
    """Base of every action kind."""

    kind = ""
    #: Can send a group of alerts as one message (``send_group``).
    groups = False
    #: Its sends under way at once, at most its kind's concurrency (a command's, a webhook's);
    #: shared with the notifier a reload replaced (``take_over``).
    _slots: defer.DeferredSemaphore | None = None

    def __init__(self, name: str):
        self.name = name
        #: The action's ``group_by`` and timers (``grouping.Grouping``); None: one event a send.
        self.grouping = None
        #: The ``[action.NAME]`` table it was built from: the action log keeps it (from the first
        #: event to the action, and when a reload retires it), so a start whose file no longer
        #: names the action can still make the deliveries owed to it.
        self.table: dict = {}

    @classmethod
    def from_config(cls, name: str, reader) -> "Notifier | None":
        """Build from an ``[action.NAME]`` table; problems go to ``reader.problem``."""
        raise NotImplementedError

    def send(self, reactor, event: dict, key: str) -> defer.Deferred:
        """One attempt; fires on success, errbacks (DeliveryError or other) on failure."""
        raise NotImplementedError

    def send_group(self, reactor, batch, key: str) -> defer.Deferred:
        """One attempt of a group's notification (``grouping.Batch``), as ``send``."""
        raise NotImplementedError

    def take_over(self, replaced: "Notifier") -> None:
        """A reload built this notifier for the action ``replaced`` served: its sends share the
        replaced one's slots, so the action's limit of sends at once (a command's 8 programs)
        holds across the reload.  Each reload builds every action anew, and the replaced one
        finishes what it was given: with slots of its own, a command action ran 16 programs at
        once, past the bound an operator relies on to spare what the program talks to.  Only
        an action of the same kind: another kind has another limit, and another receiver."""
        if type(replaced) is type(self) and replaced._slots is not None:
            self._slots = replaced._slots

    def close(self) -> defer.Deferred | None:
        """Release connections at shutdown (and when a reload replaces or lets go of it: what
        it has under way is let finish)."""
        return None

    def halt(self) -> None:
        """The server stops: end what is under way that would otherwise outlive the server
        (a command's programs).  At a stop only: before ``close``, or after it for a notifier
        a reload replaced while its sends were under way (the dispatcher halts every notifier
        that holds one)."""

    def doubts(self) -> list[str]:
        """What may stop this action on this machine though the file is right (a program not
        installed yet): said by ``rules check`` and in the server's log at start and reload,
        not refused, since the file may be checked on another machine than the server's."""
        return []


def last_value_age(event: dict) -> float:
    """Seconds between a stopped scope's last value and its event (``last_value_at``)."""
    return max(0.0, round(event["at"] - event["last_value_at"], 1))


def seconds(age: float) -> str:
    return "%gs" % age


def summary(event: dict) -> str:
    """One line for people: what happened to which scope, with its figures."""
    where = "%s %s" % (event["rule"], event["scope"])
    figure = "" if event.get("value") is None else " (value %.4g" % event["value"]
    if figure and event.get("threshold") is not None:
        figure += ", threshold %.4g" % event["threshold"]
    figure += ")" if figure else ""
    if event.get("last_value") is not None:
        figure += " (no current value: the last, %.4g, came at %s, %s before)" % (
            event["last_value"], moment(event["last_value_at"]), seconds(last_value_age(event)))
    if event.get("unmuted"):
        figure += " (held back by mute %s until its end)" % event["unmuted"]
    if event["kind"] == "scale":
        return "%s: scale %s from %d to %d (delta %+d, placement %s)%s" % (
            where, "out" if event["delta"] > 0 else "in", event["current"], event["desired"],
            event["delta"], event.get("placement") or "-", figure)
    if event["kind"] == "reminder":
        return "%s: still %s since %s%s" % (where, event["to"], moment(event.get("since", event["at"])),
                                            figure)
    because = ": %s" % event["reason"] if event.get("reason") else ""
    return "%s: %s -> %s%s%s" % (where, event["from"], event["to"], because, figure)


#: A group's alerts by status (``grouping.status``), in the order a notification lists them.
_SECTIONS = ("firing", INSUFFICIENT, "resolved")


def group_summary(batch) -> tuple[str, str]:
    """A group's notification for people: a title, and a body of one line per alert, under
    its status: firing, insufficient-data (no alarm, but not ok), resolved."""
    sections: dict[str, list] = {word: [] for word in _SECTIONS}
    for event, key in batch.alerts:
        sections[status(event)].append((event, key))
    counts = ["%s:%d" % (word.upper(), len(alerts)) for word, alerts in sections.items() if alerts]
    which = ", ".join("%s=%s" % kv for kv in sorted(batch.labels.items())) or "all alerts"
    title = "[%s] %s" % (" ".join(counts), which)
    lines = ["%s (%s)" % (title, counted(len(batch.alerts), "alert"))]
    if batch.truncated:
        lines.append("and %d more of the group, not listed (max_alerts)" % batch.truncated)
    for word, alerts in sections.items():
        if alerts:
            lines.append("")
            lines.append("%s:" % word)
            lines.extend("- %s [%s]" % (summary(event), key) for event, key in alerts)
    return title, "\n".join(lines)


def _kinds() -> dict:
    from vmstats.rules.notifiers import apprise_url, command, logline, webhook

    return {module.NOTIFIER.kind: module.NOTIFIER for module in (webhook, command, apprise_url, logline)}


KINDS = _kinds()
