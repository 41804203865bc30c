"""The action log: every event and every delivery attempt, on disk before anything is sent.

One JSON object per line, appended and fsync'd in batches on a thread (the
reactor never waits on the disk; whatever is queued while a batch is being
written goes in the next one, so a burst costs one fsync, not one per line).
Entries:

``event``    a transition, reminder, scaling decision or hold, with its key
             and the actions it goes to (delivery key: ``<key>.<action>``); a
             ``farewell`` transition resolves an alert at actions its edited
             rule dropped, and leaves the scope's state as it was
``attempt``  a delivery attempt about to be made (number ``n``), with ``age``:
             the seconds of its retry budget spent, timed by the monotonic clock;
             or a group's notification (``grouping.py``), under a key of its own,
             whose ``covers`` maps each delivery it completes to its ``age``
``result``   what the attempt got: ``ok`` true, or the error
``gave_up``  delivery stopped after ``retry_for``, or its action is gone, or
             ``dropped`` (true): the oldest past ``max_pending`` pending
``muted``    a delivery a mute held back, not sent (``mute``: its id; ``told``: the
             state the alert's receivers last heard, which its end compares with)
``unmuted``  a mute ended: what it held back was sent (``unmuted`` copies) or let go
``retired``  a reload took ``action`` out of the rules: its ``kind`` and, but for a
             command, its ``table`` (the ``[action.NAME]`` settings, a secret too), so a
             restart still makes the deliveries owed to it; ``back`` (true): the name is
             in the rules again.  Kept while deliveries to it are pending, and never
             among the ``recent`` entries /alerts and ``vmstats alerts`` show
``settings`` an action's ``kind`` and, but for a command, its ``table``, logged with the
             first event that goes to it (and again only once they change): an action
             taken out of the file while the server was down (no reload to retire it)
             is rebuilt from it at start, to resolve what it was told of.  Kept while
             the action is in the rules, owed deliveries or told of alerts not ok;
             never shown, as ``retired``

After a crash ``replay`` rebuilds every scope's last state (a restart keeps
alarms), the last scaling times (cooldowns survive) and the deliveries with
no successful result, which are attempted again under the same key: a
receiver that honours the key sees each event once.  A line cut short by the
crash is dropped and the file trimmed to its last whole line.  Past
``max_bytes`` the log is rewritten with only what replay needs (atomically,
by rename).  A line that is not such an entry (a disk's damage, a hand's
edit) is skipped and counted, never fatal: one bad line must not keep the
server from starting or forget every other alarm.
"""

import json
import logging
import os
from collections import Counter, deque
from dataclasses import dataclass, field

from twisted.internet import defer

from vmstats import inputfile
from vmstats.inputfile import Damage
from vmstats.rules.workers import Workers
from vmstats.server.metrics import RateLimitedLog
from vmstats.server.ownfiles import check_file, replace_durably, usable_directory

log = logging.getLogger(__name__)

FILE_NAME = "actions.log"
#: Owner-only, like the journal: a retired action's entry holds its webhook secret or apprise URL.
MODE = 0o600
#: Entries kept in memory for /alerts and ``vmstats alerts``.
RECENT = 200


@dataclass
class Pending:
    """A delivery without a successful result yet."""

    key: str
    action: str
    event: dict
    attempts: int = 0
    #: Seconds since the event when its last attempt was logged, timed by the monotonic clock
    #: (a step of the wall clock does not spend or refund the retry budget), and the wall
    #: time of that entry (None: none logged, the event's own ``at``).  Only the time since
    #: is the wall clock's after a restart: the monotonic clock is another process's then.
    age: float = 0.0
    aged_at: float | None = None
    #: The monotonic reading (``reactor.seconds()``) at which this run counts the event's age
    #: as 0; set by the dispatcher, never logged.
    started: float | None = None
    #: The monotonic reading since which it waits for its turn (an earlier event of its alert
    #: to its action not done yet: ``turns.py``), or None; that wait spends none of its budget.
    waiting_since: float | None = None


@dataclass
class Replayed:
    """What the log says, as replay rebuilds it."""

    #: (rule, scope) -> the last transition event.
    states: dict = field(default_factory=dict)
    #: (rule, direction) -> the last scaling event.
    scaling: dict = field(default_factory=dict)
    #: (rule, scope) -> the last reminder since the scope's last transition: a restart times
    #: the next one from it, not from the start.
    reminded: dict = field(default_factory=dict)
    #: delivery key -> Pending, oldest first.
    pending: dict = field(default_factory=dict)
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT))
    delivered: int = 0
    gave_up: int = 0
    #: (action, "delivered" or "gave_up") -> deliveries so ended, as the dispatcher counts them.
    outcomes: Counter = field(default_factory=Counter)
    lines: int = 0
    #: Lines skipped as no entry of the log.
    damage: Damage = field(default_factory=Damage)
    #: (rule, scope) -> [mute id, the state its receivers last heard, the latest event held
    #: back]: what mutes held back and their ends have not yet released (``delivery.py``).
    held: dict = field(default_factory=dict)
    #: action -> the last ``retired`` entry of an action a reload took out of the rules.
    retired: dict = field(default_factory=dict)
    #: action -> its last ``settings`` entry.
    settings: dict = field(default_factory=dict)
    #: (rule, scope) -> action -> the ``farewell`` that resolved the scope's alert there since
    #: its last transition: a start does not say farewell to it again.
    farewelled: dict = field(default_factory=dict)


_NUMBER = (int, float)
_TEXT = (str,)
#: What an event must hold, and of which type, for replay, the restore at start, the
#: notifiers and ``vmstats alerts`` to read it; each kind adds its own.
_EVENT = {"kind": _TEXT, "key": _TEXT, "rule": _TEXT, "at": _NUMBER, "actions": (list,)}
_KINDS = {
    "transition": {"scope": _TEXT, "from": _TEXT, "to": _TEXT, "fingerprint": _TEXT, "seq": (int,)},
    "reminder": {"scope": _TEXT, "to": _TEXT, "fingerprint": _TEXT, "seq": (int,)},
    "scale": {"direction": _TEXT, "fingerprint": _TEXT, "current": (int,), "desired": (int,),
              "delta": (int,)},
    "held": {"direction": _TEXT, "reason": _TEXT},
}
#: The other entries, by type.
_ENTRIES = {"attempt": {"key": _TEXT, "n": (int,)}, "result": {"key": _TEXT},
            "gave_up": {"key": _TEXT},
            # A delivery a mute held back (not sent), and a mute's end (``delivery.py``).
            "muted": {"key": _TEXT, "mute": _TEXT, "rule": _TEXT, "scope": _TEXT},
            "unmuted": {"mute": _TEXT},
            # An action a reload retired, with what a restart needs to reach it.
            "retired": {"action": _TEXT, "kind": _TEXT},
            # An action's settings, as the first event to it found them.
            "settings": {"action": _TEXT, "kind": _TEXT}}
#: Entries that hold an action's settings (a secret among them): never among the ``recent``.
PRIVATE = ("retired", "settings")


def _wrong(table: dict, fields: dict) -> str | None:
    for name, types in fields.items():
        if not isinstance(table.get(name), types):
            return "%s is %r" % (name, table.get(name))
    return None


def problem(entry) -> str | None:
    """Why ``entry`` is not a log entry this module wrote, or None."""
    if not isinstance(entry, dict):
        return "not an object"
    kind = entry.get("type")
    if kind == "event":
        event = entry.get("event")
        if not isinstance(event, dict):
            return "event is %r" % (event,)
        wrong = _wrong(event, _EVENT)
        if wrong is None:
            wrong = ("kind is %r" % event["kind"] if event["kind"] not in _KINDS
                     else _wrong(event, _KINDS[event["kind"]]))
        if wrong is None and not all(isinstance(a, str) for a in event["actions"]):
            wrong = "actions are %r" % (event["actions"],)
        if wrong is None and any(event.get(name) is not None
                                 and not isinstance(event[name], _NUMBER)
                                 for name in ("value", "threshold", "since", "began")):
            wrong = "a figure is not a number"
        labels = event.get("labels")
        if wrong is None and labels is not None and (not isinstance(labels, dict) or not all(
                isinstance(value, str) for value in labels.values())):
            wrong = "labels are %r" % (labels,)
        return wrong
    if kind not in _ENTRIES:
        return "type is %r" % (kind,)
    for name in ("at", "age"):
        if name in entry and not isinstance(entry[name], _NUMBER):
            return "%s is %r" % (name, entry[name])
    for name in ("error", "told"):
        if name in entry and not isinstance(entry[name], str):
            return "%s is %r" % (name, entry[name])
    if "table" in entry and not isinstance(entry["table"], dict):
        return "table is %r" % (entry["table"],)
    covers = entry.get("covers")
    if covers is not None and (not isinstance(covers, dict) or not all(
            isinstance(age, _NUMBER) for age in covers.values())):
        return "covers is %r" % (covers,)
    return _wrong(entry, _ENTRIES[kind])


def replay(lines) -> Replayed:
    """Fold log lines (bytes, parsed or not) into the state they describe."""
    result = Replayed()
    #: A group's notification key -> the deliveries it covers, until its result.
    batches: dict[str, list[str]] = {}
    for number, line in enumerate(lines, 1):
        if isinstance(line, (bytes, str)):
            if not line.strip():
                continue
            try:
                entry = inputfile.json_loads(line)
            except ValueError as exc:  # not JSON, not UTF-8, nested past reason
                entry, wrong = None, "not JSON (%s)" % type(exc).__name__
            else:
                wrong = problem(entry)
        else:
            entry, wrong = line, problem(line)
        if wrong is not None:
            result.damage.skip(number, wrong)
            continue
        result.lines += 1
        kind = entry.get("type")
        if kind == "retired":  # settings, a secret among them: not for the pages
            if entry.get("back"):
                result.retired.pop(entry["action"], None)
            else:
                result.retired[entry["action"]] = entry
            continue
        if kind == "settings":
            result.settings[entry["action"]] = entry
            continue
        result.recent.append(entry)
        if kind == "event":
            event = entry["event"]
            if event.get("farewell"):
                # An edited rule's word to the actions it dropped: the state is unchanged.
                told = result.farewelled.setdefault((event["rule"], event["scope"]), {})
                told.update((action, event) for action in event["actions"])
            elif event["kind"] == "transition":
                result.states[(event["rule"], event["scope"])] = event
                result.reminded.pop((event["rule"], event["scope"]), None)
                result.farewelled.pop((event["rule"], event["scope"]), None)
            elif event["kind"] == "reminder":
                result.reminded[(event["rule"], event["scope"])] = event
            if event["kind"] in ("transition", "reminder") and not event.get("farewell"):
                # Heard (or held back again: its ``muted`` entries follow, with what was told).
                result.held.pop((event["rule"], event["scope"]), None)
            elif event["kind"] == "scale":
                result.scaling[(event["rule"], event["direction"])] = event
            for action in event.get("actions", ()):
                key = "%s.%s" % (event["key"], action)
                result.pending[key] = Pending(key, action, event)
        elif kind == "attempt" and entry.get("covers") is not None:
            batches[entry["key"]] = list(entry["covers"])
            for key, age in entry["covers"].items():
                pending = result.pending.get(key)
                if pending is not None:
                    pending.attempts += 1
                    if "at" in entry:
                        pending.age, pending.aged_at = float(age), float(entry["at"])
        elif kind == "attempt":
            pending = result.pending.get(entry["key"])
            if pending is not None and entry["n"] >= pending.attempts:
                pending.attempts = entry["n"]
                if "age" in entry and "at" in entry:
                    pending.age, pending.aged_at = float(entry["age"]), float(entry["at"])
        elif kind == "result" and entry.get("ok"):
            for key in batches.pop(entry["key"], [entry["key"]]):
                done = result.pending.pop(key, None)
                if done is not None:
                    result.delivered += 1
                    result.outcomes[(done.action, "delivered")] += 1
        elif kind == "result":
            batches.pop(entry["key"], None)
        elif kind == "muted":
            done = result.pending.pop(entry["key"], None)
            if done is not None:
                result.outcomes[(done.action, "muted")] += 1
            scope = (entry["rule"], entry["scope"])
            held = result.held.get(scope)
            event = done.event if done is not None else held and held[2]
            if event is not None and "told" in entry:  # a scaling decision is never sent later
                result.held[scope] = [entry["mute"], entry["told"], event]
        elif kind == "unmuted":
            for scope, held in list(result.held.items()):
                if held[0] == entry["mute"]:
                    del result.held[scope]
        elif kind == "gave_up":
            done = result.pending.pop(entry["key"], None)
            if done is not None:
                result.gave_up += 1
                result.outcomes[(done.action, "dropped" if entry.get("dropped") else "gave_up")] += 1
    return result


def read(path: str, repair: bool = False) -> Replayed:
    """Replay the log at ``path``; with ``repair``, trim a last line cut short by a crash."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return Replayed()
    good = data[: data.rfind(b"\n") + 1]
    if repair and len(good) != len(data):
        log.warning("%s: dropping %d bytes of a line cut short by a crash", path,
                    len(data) - len(good))
        with open(path, "r+b") as handle:
            handle.truncate(len(good))
            os.fsync(handle.fileno())
    return replay(good.split(b"\n"))


def compacted(state: Replayed, named: frozenset = frozenset()) -> list[dict]:
    """The fewest entries that replay to the same states, cooldowns, reminders and pending
    deliveries, and the settings a start needs: of the actions ``named`` (in the rules now:
    the dispatcher logs them once, not again) and of those owed deliveries or told of an
    alert not ok (a start without them in the file still resolves it there)."""
    entries: dict[str, dict] = {}
    farewells = [event for told in state.farewelled.values() for event in told.values()]
    for event in (list(state.states.values()) + list(state.scaling.values())
                  + list(state.reminded.values()) + farewells):
        entries[event["key"]] = {"type": "event", "event": event}
    attempts = []
    for pending in state.pending.values():
        event = pending.event
        entries.setdefault(event["key"], {"type": "event", "event": event})
        if pending.attempts:
            attempt = {"type": "attempt", "key": pending.key, "n": pending.attempts}
            if pending.aged_at is not None:
                attempt.update(age=pending.age, at=pending.aged_at)
            attempts.append(attempt)
    # A kept event's deliveries that are done must not come back as pending.
    done = []
    for entry in entries.values():
        event = entry["event"]
        for action in event.get("actions", ()):
            key = "%s.%s" % (event["key"], action)
            if key not in state.pending:
                done.append({"type": "result", "key": key, "ok": True, "compacted": True})
    # What mutes hold back: the latest event of each alert, and its word of what was told.
    muted = []
    for (rule, scope), (mute, told, event) in state.held.items():
        entries.setdefault(event["key"], {"type": "event", "event": event})
        muted.append({"type": "muted", "key": "%s.%s" % (event["key"], event["actions"][0]),
                      "mute": mute, "rule": rule, "scope": scope, "told": told})
    ordered = sorted(entries.values(), key=lambda e: e["event"]["at"])
    owed = {pending.action for pending in state.pending.values()}
    retired = [entry for action, entry in state.retired.items() if action in owed]
    told = set(named) | owed
    for event in list(state.states.values()) + list(state.reminded.values()):
        if event["to"] != "ok":
            told.update(event["actions"])
    for _mute, _told, event in state.held.values():
        told.update(event["actions"])
    settings = [entry for action, entry in state.settings.items() if action in told]
    return retired + settings + ordered + muted + attempts + done


class ActionLog:
    """Appends entries durably, in order, off the reactor; ``append`` fires once synced."""

    def __init__(self, reactor, directory: str, max_bytes: int = 64 << 20):
        self.reactor = reactor
        self.directory = directory
        self.path = os.path.join(directory, FILE_NAME)
        self.max_bytes = max_bytes
        self.recent: deque = deque(maxlen=RECENT)
        #: The actions in the rules now (the dispatcher's, replaced whole on the reactor): a
        #: compaction keeps their ``settings`` entries, which are logged once, not again.
        self.named: frozenset = frozenset()
        self.syncs = 0
        self.errors = 0
        #: The last write failed; each failure is counted (``errors``), said once a minute.
        self.failing = False
        self._trouble = RateLimitedLog(log, "action log error", burst=1, period=60.0,
                                       level=logging.ERROR)
        self.compactions = 0
        self._queue: list[tuple[bytes, defer.Deferred]] = []
        self._writing = False
        self._idle: list[defer.Deferred] = []
        #: A thread of its own: the log's writes never wait behind a notifier's send.
        self._workers = Workers(reactor, "vmstats-actionlog", 1)
        self._closed = False

    def open(self) -> Replayed:
        """Create the folder, repair a torn end and replay (at start, before any record);
        OSError in one line naming the path when something else is in the folder's or the
        log's place (a FIFO there would hold the start for ever)."""
        usable_directory(self.directory, "rules folder")
        check_file(self.path, "rules action log")
        state = read(self.path, repair=True)
        if state.damage.count:
            log.warning("%s; the log's next rewrite leaves them out", state.damage.note(self.path))
        self.recent.extend(state.recent)
        return state

    def append(self, entries: list[dict]) -> defer.Deferred:
        """Queue ``entries``; the Deferred fires when they are on disk (errback: not written).

        After ``close`` (a send answered as the server stops) nothing is written, and that is
        no trouble to report: without its result a delivery is sent again at the next start.
        """
        if self._closed:
            return defer.fail(OSError("the action log is closed: the server stops"))
        self.recent.extend(entry for entry in entries if entry.get("type") not in PRIVATE)
        done: defer.Deferred = defer.Deferred()
        data = b"".join(json.dumps(e, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
                        for e in entries)
        self._queue.append((data, done))
        if not self._writing:
            self._write()
        return done

    def idle(self) -> defer.Deferred:
        """Fires when everything appended so far is on disk (or failed)."""
        if not self._writing and not self._queue:
            return defer.succeed(None)
        waiting: defer.Deferred = defer.Deferred()
        self._idle.append(waiting)
        return waiting

    def close(self) -> None:
        """At the end, once ``idle``: the writer thread ends."""
        self._closed = True
        self._workers.close()

    def _write(self) -> None:
        batch, self._queue = self._queue, []
        self._writing = True
        d = self._workers.run(self._write_sync, b"".join(data for data, _ in batch))
        d.addBoth(self._written, batch)

    def _written(self, result, batch) -> None:
        self._writing = False
        failed = isinstance(result, Exception) or hasattr(result, "trap")
        if failed:
            self.errors += 1
            self.failing = True
            self._trouble.emit("cannot write the action log %s (deliveries wait for it; "
                               "retried): %s", self.path, getattr(result, "value", result))
        else:
            self.syncs += 1
            if self.failing:
                self.failing = False
                log.warning("the action log %s is written again", self.path)
        for _data, done in batch:
            if failed:
                done.errback(getattr(result, "value", result))
            else:
                done.callback(None)
        if self._queue:
            self._write()
        elif self._idle:
            waiting, self._idle = self._idle, []
            for one in waiting:
                one.callback(None)

    def _write_sync(self, data: bytes) -> None:
        """On a thread: append, fsync; rewrite compacted when the file has grown past its cap."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            known = os.fstat(fd)
            size = known.st_size
            if known.st_mode & 0o077:  # made by an earlier version, open to its group
                os.fchmod(fd, MODE)
        finally:
            os.close(fd)
        if size > self.max_bytes:
            self._compact()

    def _compact(self) -> None:
        state = read(self.path)
        replace_durably(self.path, b"".join(
            json.dumps(entry, sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
            for entry in compacted(state, self.named)), self.path + ".compacting", MODE)
        self.compactions += 1
