"""Rule evaluation and state: every rule kind's transitions decided in one place.

The receive path hands over each payload's columns (``observe``: one C-level
dict update a payload, no parsing, no I/O, no Python step per record).  Each tick folds what was
handed over into each VM's newest-stamped record, reads their figures once, and feeds
every rule whose scope takes the VM: a per-VM rule files the value under its period and
decides that VM's state; a group rule updates its member's value and
decides the group's state (and scaling) once for the tick.  A slower sweep
finds what only time reveals: periods that passed without data, VMs that
went silent, holds that ended, reminders and cooldowns that are due.

The clock is the server's (``clock()``), so tests drive it; periods are
placed by the record's own timestamp for a VM (an agent's jittered send time
does not move its minute) and by arrival for a group.  Records stamped
further back than ``max_age`` are history (a replay, a spool), not live data.

The engine only decides: it appends events (transitions, reminders, scaling
decisions, holds) to ``events``, which the service writes to the action log
before anything is sent.  State is bounded by ``max_series`` (scopes plus
group members); what does not fit is refused and counted.
"""

import logging
import math
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from heapq import nlargest, nsmallest
from itertools import count, repeat
from operator import attrgetter, itemgetter

from vmstats.rules import metric as metrics
from vmstats.rules import scaling
from vmstats.rules.config import STATES, Rule, RuleSet, parse_address
from vmstats.rules.grouping import INSUFFICIENT
from vmstats.server.metrics import RateLimitedLog
from vmstats.words import counted

log = logging.getLogger(__name__)

GROUP = "group"
_SINCE = attrgetter("since")
_CPU = metrics.FIELD_INDEX["cpu"]
#: The states that go stale (``Engine._stale``): an alarm, and a silence under a rule edited
#: since to have no ``silent_after`` (which nothing else would end but a record).
_STALE = ("alarm", "silent")
#: States whose scope has no current value to show (``states``): its last one is said as such.
_NO_VALUE = ("silent", INSUFFICIENT)
#: The states a quiet VM's scope is forgotten in (``Engine._forget``): its receivers were told
#: all there is (a scope starts ok without a word).
_FORGOTTEN = ("ok", INSUFFICIENT)
#: A VM's scope that is ok (or insufficient-data) and has had no record for this long, or for
#: twice the rule's window, silence or staleness if longer, is forgotten: it decides nothing
#: more, and a fleet whose VMs come and go (a pool's, CI's) filled ``max_series`` with the
#: scopes of VMs long deleted, after which every new VM was refused.
FORGET = 86400.0
#: ``first`` of a scope restored from the action log, until its first record sets it.
RESTORED = 1 << 62
#: Records handed over since the last fold: past this many the hand-off folds at once if the
#: payloads it points at hold more than a quarter of them, so the payloads the rules hold
#: between two ticks stay bounded whatever the mix of VMs (ticks are up to 2 s apart under a
#: flood) -- at most a few MB of column references.  A fleet coming round again holds about
#: its own records: the fold, one step per VM in Python, then waits for the tick.
PENDING_MAX = 1 << 18
#: Records handed over since the last fold up to which the hand-off keeps every payload, so a
#: fold takes each VM's newest-stamped record even when an older one arrived after it (a
#: resend, a relay's retried batch).  A live fleet's tick holds a few dozen; past this (a
#: flood) a VM's record is the newest of the last payload holding it, or of those folded
#: before in the tick, so the hand-off costs no step per record.
EXACT = 5000


class Series:
    """One scope's state: a VM under a per-VM rule, or a rule's group."""

    __slots__ = ("scope", "buckets", "first", "last_arrival", "state", "since", "notified",
                 "value", "seq", "end", "blocked", "offset", "settled", "valued")

    def __init__(self, scope: str, first: int, now: float, state: str = "ok", since=None, seq=0):
        self.scope = scope
        self.buckets: dict[int, float] = {}
        self.first = first
        self.last_arrival = now
        #: When a record with a value (the metric known) last came: an alarm without one for
        #: the rule's ``stale_after`` is insufficient-data.  (A group's is ``last_arrival``.)
        self.valued = now
        self.state = state
        self.since = now if since is None else since
        self.notified = self.since
        self.value: float | None = None
        self.seq = seq
        self.end = first - 1  # the last period evaluated
        self.blocked = False  # a change waits for the hold to end
        #: In ok, the window ending at ``end`` holds fewer breaches of the enter threshold than
        #: ``datapoints``: true of a new scope (nothing in its window), then as last evaluated.
        self.settled = True
        #: Arrival minus the record's timestamp: the VM's clock against ours, so the sweep
        #: counts a VM's missing periods on its own clock.
        self.offset = 0.0


class RuleState:
    """A rule, its scopes' series and, for a group, its members' latest figures."""

    def __init__(self, rule: Rule):
        self.rule = rule
        self.series: dict[str, Series] = {}
        #: vm -> (value, arrival, host, cpu) for a group rule.
        self.members: dict[str, tuple] = {}
        self.dirty = False
        #: Missing periods never count as a breach in ok (missing = keep or ok).
        self.gaps_are_quiet = rule.missing in ("keep", "ok")
        #: A VM's periods kept at most (a window's, and as many that no window will read again).
        self.keep = 2 * rule.periods
        #: A quiet VM's scope in ok or insufficient-data is dropped after this (``FORGET``).
        self.forget = max(FORGET, 2 * rule.periods * rule.period, 2 * (rule.silent_after or 0),
                          2 * (rule.stale_after or 0))
        self.states: Counter[str] = Counter()
        self.last_out: float | None = None
        self.last_in: float | None = None
        self.held: tuple | None = None
        self.turn = 0
        self.group_swept = 0.0
        #: A group without members (at start, after a reload that made the rule, after every
        #: member went quiet) decides nothing until a period after its first member came: its
        #: other members' records are still on their way, and a figure and a count of the
        #: first few would scale a pool of ten at 20 % out to "2" with one member reporting.
        self.warm_until = 0.0


class Engine:
    """All rules over the live stream; ``events`` is the outbox the service drains."""

    def __init__(self, ruleset: RuleSet, clock: Callable[[], float],
                 pending_scale: Callable[[str], bool] = lambda rule: False,
                 muted: Callable[[str], object] = lambda rule: None,
                 muted_members: Callable[[str, Iterable[str]], Collection[str]] = lambda rule, vms: ()):
        self.clock = clock
        self.pending_scale = pending_scale
        #: The mute covering a rule's scaling now (``mutes.Mute``: its ``id`` and ``ends``), or
        #: None: asked only when a decision would be acted on (``_scale``), never per record.
        self.muted = muted
        #: The members of a group rule (of those given) a mute naming them covers now: their
        #: readings are left out of the group's figure.  Asked when a group's figure is made
        #: (a tick at most), never per record.
        self.muted_members = muted_members
        #: Keep every VM's tags (``_tags``), not only those of rules whose alerts carry them:
        #: set while a mute names tags (``host``), which it matches at delivery against them.
        self.keep_tags = False
        self.settings = ruleset.settings
        self.rules: dict[str, RuleState] = {}
        self.events: list[dict] = []
        self.refused = 0
        self.evaluations = 0
        self.transitions = 0
        self.history_skipped = 0
        #: Rule evaluations that raised (each logged, rate-limited; the other rules went on).
        self.errors = 0
        self._error_log = RateLimitedLog(log, "rule failure", level=logging.ERROR)
        self.size = 0
        #: Each VM's newest-stamped record since the last tick (vm -> timestamp, vm -> row), as of the
        #: last fold, and how many records arrived: a tick reads only the latest per VM.
        self._tss: dict[str, int] = {}
        self._rows: dict[str, bytes] = {}
        self._taken = 0
        #: vm -> the columns (vms, tss, rows) of the last payload handed over since the last
        #: fold that holds a record of it, in the order VMs first arrived; and the records
        #: handed over since the last fold, or what those payloads hold (``observe``): the
        #: records the references keep are at most this, and at most ``PENDING_MAX``.
        self._pending: dict[str, tuple[list, list, list]] = {}
        self._pending_records = 0
        #: The payloads handed over since the last fold while they hold ``EXACT`` records or
        #: fewer (past it, ``_fold`` reads the payloads the VMs point at instead).
        self._window: list = []
        self._whole = True
        #: vm -> the newest stamp the rules took of it: an older record arriving later (late)
        #: fills a period that has no value, and moves no value, window or group figure back.
        self._newest: dict[str, int] = {}
        #: vm -> the rules (without tag conditions) whose scope takes it; rebuilt on a reload.
        self._routes: dict[str, list[RuleState]] = {}
        #: vm -> its tags as last seen, for the VMs of rules whose alerts carry tags (their
        #: grouped actions group by them): a silence, decided by the sweep, is labelled too.
        self._tags: dict[str, dict[str, str]] = {}
        #: vm -> (the cells its tags were read from, those tags): a tick reads a VM's tags
        #: again only when its record carries other cells (bounded as the routes are).
        self._tags_read: dict[str, tuple[tuple[bytes, bytes], dict[str, str]]] = {}
        self.load(ruleset)

    # -- rules -----------------------------------------------------------------------------------
    def load(self, ruleset: RuleSet) -> list[str]:
        """Take a new rule set; unchanged rules (same name and definition) keep their state.

        A rule edited in place (same name and scope kind) keeps its scopes' states as a restart
        restores them, and its new definition decides their next change: forgetting them let an
        alarm whose rule got a new action fire again, and one whose threshold moved never be
        resolved at the receiver.  A scope not ok under a rule that is gone (removed, or now of
        the other scope kind) is resolved: a transition to ok that says why.
        """
        old = self.rules
        self.settings = ruleset.settings
        self._routes = {}
        if not self.keep_tags and not any(rule.labels for rule in ruleset.rules):
            self._tags = {}
            self._tags_read = {}
        self.rules = {}
        kept = []
        now = self.clock()
        for rule in ruleset.rules:
            previous = old.pop(rule.name, None)
            if previous is not None and previous.rule.fingerprint == rule.fingerprint:
                previous.rule = rule
                self.rules[rule.name] = previous
                kept.append(rule.name)
                continue
            rs = self.rules[rule.name] = RuleState(rule)
            if previous is None:
                continue
            if previous.rule.scope != rule.scope:
                self._retire(previous, "the rule's scope changed", now)
                continue
            for series in previous.series.values():
                self._carry(rs, series.scope, series.state, series.since, series.seq, now,
                            series.notified)
            rs.last_out, rs.last_in = previous.last_out, previous.last_in
            self._farewell(previous, [a for a in previous.rule.actions if a not in rule.actions],
                           now)
        for previous in old.values():
            self._retire(previous, "the rule was removed", now)
        self.size = sum(len(rs.series) + len(rs.members) for rs in self.rules.values())
        return kept

    def _farewell(self, previous: RuleState, lost: list[str], now: float) -> None:
        """An edited rule that no longer notifies ``lost`` actions (one renamed, or taken off
        the rule): each of its scopes not ok is resolved at those actions alone, saying why.

        Their receivers hold the alerts firing, and the rule's later news of them (its
        resolution) goes to its actions as they now are: without this, an alert moved to
        another receiver fired at the old one for ever.  The scope's state is unchanged (the
        event is a ``farewell``: the log's replay does not take it for the scope's state).
        """
        if not lost:
            return
        for series in previous.series.values():
            if series.state == "ok":
                continue
            event = {"kind": "transition", "rule": previous.rule.name,
                     "fingerprint": previous.rule.fingerprint, "scope": series.scope,
                     "from": series.state, "to": "ok", "value": series.value, "threshold": None,
                     "since": now, "at": now, "seq": series.seq, "actions": list(lost),
                     "began": series.since, "farewell": True,
                     "reason": "the rule no longer notifies this action"}
            if series.scope == GROUP:
                event["members"] = len(previous.members)
            else:
                labels = self._labels(previous.rule, series.scope)
                if labels:
                    event["labels"] = labels
            self._emit(event)

    def _retire(self, rs: RuleState, reason: str, now: float) -> None:
        """The scopes of a rule no longer in force that are not ok: resolved, with the reason."""
        for series in rs.series.values():
            if series.state != "ok":
                self._transition(rs, series, "ok", now, None, reason)

    def restore(self, event: dict, reminded: dict | None = None, farewelled=()) -> None:
        """A scope's state as the action log's last transition of it left it (a restart keeps
        alarms); ``reminded``, the last reminder of it since, if any: the next is due ``remind``
        after the last notification, as before the restart (timed from the start, a server
        restarted more often than ``remind`` never reminded).

        Whatever the rule's definition then was: the rule in force decides the scope's next
        change from its first record (an edit made while the server was down resolves an
        alarm it no longer sees, rather than leave it firing at the receiver for ever).  A
        scope not ok under a rule that is gone is resolved, as at a reload; so is one whose
        rule no longer names an action the event went to, at that action alone (a farewell, as
        at a reload), unless ``farewelled`` says it was already.
        """
        rs = self.rules.get(event["rule"])
        scope, state = event["scope"], event["to"]
        if state not in STATES:
            return
        if rs is None or (scope == GROUP) != (rs.rule.scope == GROUP):
            if state != "ok":
                now = self.clock()
                self.transitions += 1
                self._emit({"kind": "transition", "rule": event["rule"],
                            "fingerprint": event["fingerprint"], "scope": scope, "from": state,
                            "to": "ok", "value": event.get("value"), "threshold": None,
                            "since": now, "at": now, "seq": event["seq"] + 1,
                            "actions": list(event["actions"]), "began": event["at"],
                            "reason": "the rule was removed" if rs is None
                            else "the rule's scope changed"})
            return
        lost = [action for action in event["actions"]
                if action not in rs.rule.actions and action not in farewelled]
        if state != "ok" and lost:
            now = self.clock()
            farewell = {"kind": "transition", "rule": event["rule"],
                        "fingerprint": event["fingerprint"], "scope": scope, "from": state,
                        "to": "ok", "value": event.get("value"), "threshold": None,
                        "since": now, "at": now, "seq": event["seq"], "actions": lost,
                        "began": event["at"], "farewell": True,
                        "reason": "the rule no longer notifies this action"}
            if scope == GROUP:
                if event.get("members") is not None:
                    farewell["members"] = event["members"]
            elif event.get("labels"):
                farewell["labels"] = event["labels"]
            self._emit(farewell)
        self._carry(rs, scope, state, event["at"], event["seq"], self.clock(),
                    (reminded or event)["at"])

    def _carry(self, rs: RuleState, scope: str, state: str, since: float, seq: int,
               now: float, notified: float) -> None:
        """A scope's state taken over from before (a restart, a reload), decided again from its
        next record: periods before it are "not yet", never missing.  ``notified``: when its
        receivers last heard of it (its reminders are timed from then)."""
        series = rs.series.get(scope)
        if series is None:
            if self.size >= self.settings.max_series:
                return
            self.size += 1
        else:
            rs.states[series.state] -= 1
        series = rs.series[scope] = Series(scope, RESTORED, now, state, since, seq)
        series.end = -1
        series.settled = False
        series.notified = min(notified, now)
        rs.states[state] += 1
        match = rs.rule.match
        if state != "ok" and scope != GROUP:
            tags = self._tags.get(scope)
            if (tags is not None or not match.tags) and not match(scope, tags or {}):
                # Edited to take the VM no more: no record of it will reach the rule again,
                # and its alarm fired for ever (or went stale, as if the VM were gone).
                self._transition(rs, series, "ok", now, None, "the rule no longer takes the VM")

    def reporting(self, vm: str, ts: float, labels: dict[str, str], stopped: float) -> None:
        """A VM whose logs show it reporting up to ``ts``, before the server stopped at about
        ``stopped`` (its newest logged record) and started again now.

        A silence is timed from a VM's last record, and a restarted server had heard of none:
        a VM that stopped across a restart never went silent.  Each silence rule whose scope
        takes the VM and has no series of it now holds one, decided by its next record like a
        restored one; a VM quiet for ``silent_after`` at the stop is left alone (it went quiet
        before, not across, the restart).  The time the server was down does not count: the
        silence is timed from ``ts`` moved on by the downtime, so a slow restart neither skips
        the silence nor, after a long one, makes every VM silent before it could report again.
        """
        address = parse_address(vm)
        now = self.clock()
        for rs in self.rules.values():
            rule = rs.rule
            if rule.labels and rule.match(vm, labels, address):
                self._labelled(vm, labels)
            if (not rule.silent_after or rule.scope == GROUP or vm in rs.series
                    or stopped - ts >= rule.silent_after or not rule.match(vm, labels, address)):
                continue
            if self.size >= self.settings.max_series:
                self.refused += 1
                return
            self.size += 1
            series = rs.series[vm] = Series(vm, RESTORED, ts + max(0.0, now - stopped))
            series.end = -1
            series.settled = False
            rs.states["ok"] += 1

    def restore_scaling(self, rule: str, direction: str, at: float) -> None:
        """The last scaling action's time: its cooldown goes on across a restart (and an edit)."""
        rs = self.rules.get(rule)
        if rs is not None:
            if direction == "out":
                rs.last_out = max(at, rs.last_out or 0.0)
            else:
                rs.last_in = max(at, rs.last_in or 0.0)

    def clock_stepped(self, step: float) -> None:
        """The wall clock was stepped by ``step`` seconds (vmstats/server/clock.py).

        The times kept as the start of a duration move with it, so a hold, a silence, a
        reminder or a cooldown lasts what the rule says: not an hour more after a step back,
        nor over at once after a step forward (every VM silent together, then ok again at its
        next record: two notifications each).  A group's periods, filed by the clock, move by
        the whole periods of the step; a VM's are its records' stamps, which the step leaves.
        """
        for rs in self.rules.values():
            for series in rs.series.values():
                series.last_arrival += step
                series.valued += step
                series.since += step
                series.notified += step
                series.offset += step
            group = rs.series.get(GROUP)
            periods = round(step / rs.rule.period)
            if group is not None and periods and group.first != RESTORED:
                group.buckets = {p + periods: v for p, v in group.buckets.items()}
                group.end += periods
                group.first += periods
            rs.members = {vm: (value, arrival + step, host, cpu)
                          for vm, (value, arrival, host, cpu) in rs.members.items()}
            rs.group_swept += step
            rs.warm_until += step
            if rs.last_out is not None:
                rs.last_out += step
            if rs.last_in is not None:
                rs.last_in += step

    # -- the receive path's side -----------------------------------------------------------------
    def observe(self, vms: list, tss: list, rows: list) -> None:
        """Take one payload's filed columns (called by the ingest for every payload).

        One C-level dict update a payload points each of its VMs at the payload's columns;
        no record is read.  A payload no VM points at any more (under a flood, each VM's
        next record comes a few payloads on) is freed there and then, a few payloads after
        it was filed.  In process, with payloads filed into a buffer between hand-offs as in
        the server, this costs 0.039 us a record over filing alone; keeping every payload's
        columns until the fold cost 0.055: holding them and freeing them at the fold, long
        after they were filed, 0.016 by itself, and the fold's pass over every name the
        rest.  Updating each VM's latest stamp and row here (two dict updates a payload)
        cost about 0.1 us a record, most of it cache misses on the row and stamp each record
        replaced.  Past ``PENDING_MAX`` records the hand-off folds at once, unless the
        payloads still pointed at hold few of them (a fleet's records coming round again,
        each payload let go as its VMs came again): then it only counts again from what
        they hold, and the fold waits for the tick.
        """
        size = len(vms)
        if len(tss) != size or len(rows) != size:
            raise ValueError("columns of different lengths: %s, %s, %s"
                             % (counted(size, "VM"), counted(len(tss), "stamp"), counted(len(rows), "row")))
        columns = (vms, tss, rows)
        self._pending.update(zip(vms, repeat(columns)))
        records = self._pending_records = self._pending_records + size
        self._taken += size
        if records <= EXACT:
            self._window.append(columns)
        if records >= PENDING_MAX:
            held = self._held()
            if held > PENDING_MAX // 4:
                self._fold()
            else:  # 0.6 ms for a fleet of 10,000 against 2.7 for its fold
                self._pending_records = held
                self._whole = False  # the window no longer holds every payload since the fold

    def _held(self) -> int:
        """Records of the payloads the hand-off points at, each payload counted once."""
        columns = self._pending.values()
        payloads = dict(zip(map(id, columns), columns, strict=True)).values()
        return sum(map(len, map(itemgetter(0), payloads)))

    def _fold(self) -> None:
        """Each VM's newest-stamped record since the last fold into ``_tss`` and ``_rows``.

        Only the payloads some VM points at are read: each one's names once (a C pass that
        maps each VM to its last position in the payload), then one step per VM.  VMs keep
        the order they first arrived in since the tick, as the dict updates kept it.
        """
        pending, window, whole = self._pending, self._window, self._whole
        self._window, self._whole = [], True
        if not pending:
            return
        records = self._pending_records
        self._pending, self._pending_records = {}, 0
        tss, rows = self._tss, self._rows
        if whole and records <= EXACT and len(pending) != records:
            # A VM sent more than one record since the last fold: its newest stamp, whatever
            # the order they came in (a few dozen records at a live fleet's rate).
            for vms, stamps, cells in window:
                for vm, ts, row in zip(vms, stamps, cells, strict=True):
                    if ts >= tss.get(vm, ts):
                        tss[vm] = ts
                        rows[vm] = row
            return
        positions: dict[int, dict[str, int]] = {}
        for vm, columns in pending.items():
            where = positions.get(id(columns))
            if where is None:
                where = positions[id(columns)] = _newest_positions(columns)
            at = where[vm]
            ts = columns[1][at]
            if ts >= tss.get(vm, ts):  # a fold earlier in this tick took a newer one
                tss[vm] = ts
                rows[vm] = columns[2][at]

    # -- ticks -----------------------------------------------------------------------------------
    def process(self) -> int:
        """Feed what arrived since the last tick to the rules (the newest-stamped record per VM).

        Only VMs with a record since the last tick are read, and of each record only the cells
        its rules use; what time alone decides (silence, missing periods) is the sweep's.
        Returns how many records had arrived (the service spaces ticks out under a flood).
        """
        taken = self._taken
        if not taken:
            return 0
        self._fold()
        now = self.clock()
        tss, latest = self._tss, self._rows
        self._tss, self._rows, self._taken = {}, {}, 0
        oldest = now - self.settings.max_age
        rules = list(self.rules.values())
        by_tags = [rs for rs in rules if rs.rule.match.tags]
        keep_tags = self.keep_tags
        labelled = keep_tags or any(rs.rule.labels for rs in rules)
        routes = self._routes
        vm_record, member, tags_of, kept = self._vm_record, self._member, self._tags_of, self._tags
        newest, bound = self._newest, self.settings.max_series
        for vm, row in latest.items():
            ts = tss[vm]
            if ts < oldest:
                self.history_skipped += 1
                continue
            route = routes.get(vm)
            if route is None:
                address = parse_address(vm)
                route = _steps([rs for rs in rules
                                if not rs.rule.match.tags and rs.rule.match(vm, {}, address)])
                if len(routes) < self.settings.max_series:
                    routes[vm] = route
            if not route and not by_tags and not keep_tags:
                continue  # no rule takes the VM and no mute wants its tags: its row is not read
            known = newest.get(vm)
            late = known is not None and ts < known
            if not late and (known is not None or len(newest) < bound):
                newest[vm] = ts
            cells = row.split(b",")
            tags = None
            if by_tags:
                seen = self._tags_read.get(vm)
                tags = tags_of(vm, cells)
                matched = [rs for rs in by_tags if rs.rule.match(vm, tags)]
                route = route + _steps(matched)
                if len(matched) < len(by_tags) and (seen is None or seen[1] is not tags):
                    self._untaken(vm, [rs for rs in by_tags if rs not in matched], now)
            if labelled and (keep_tags or any(step[0].rule.labels for step in route)):
                if tags is None:
                    tags = tags_of(vm, cells)
                if kept.get(vm) is not tags:  # the same cells as last time: kept already
                    self._labelled(vm, tags)
            for rs, index, expression, group in route:
                try:
                    if index is None:
                        value = expression.read(cells)
                    else:
                        cell = cells[index]
                        value = float(cell) if cell else None
                    if not group:
                        vm_record(rs, vm, ts, value, now, late)
                    elif not late:  # a member's figure is its newest
                        member(rs, vm, value, now, cells)
                except Exception as exc:  # one rule's failure never skips the others
                    self._failed(rs, exc)
        for rs in rules:
            if rs.dirty:
                try:
                    self._group(rs, now)
                except Exception as exc:
                    self._failed(rs, exc)
        return taken

    def _untaken(self, vm: str, rules: list[RuleState], now: float) -> None:
        """A VM whose tags changed (or first seen since a start) and that these rules' tag
        conditions no longer take: its scopes not ok under them are resolved, saying why.

        A VM that moved to another host kept the alarm of a rule matching its old host for
        ever: no record of it reached that rule again.  Looked at only when its tags changed.
        """
        for rs in rules:
            series = rs.series.get(vm)
            if series is not None and series.state != "ok" and rs.rule.scope != GROUP:
                self._transition(rs, series, "ok", now, None, "the rule no longer takes the VM")

    def _tags_of(self, vm: str, cells: list) -> dict[str, str]:
        """A VM's tags from its row: those read last while its tag cells are the same (the
        same dict, so what was judged of them holds, ``service.muted_members``), else read.

        While a mute names tags every VM's are kept: parsing each at every tick cost a tick
        of 10,000 VMs about three times its work without them.
        """
        raw = metrics.tag_cells(cells)
        seen = self._tags_read.get(vm)
        if seen is not None and seen[0] == raw:
            return seen[1]
        tags = metrics.tags(cells)
        if seen is not None or len(self._tags_read) < self.settings.max_series:
            self._tags_read[vm] = (raw, tags)
        return tags

    def _labelled(self, vm: str, tags: dict[str, str]) -> None:
        """Keep a VM's tags for the labels of its alerts (bounded as the routes are)."""
        if vm in self._tags or len(self._tags) < self.settings.max_series:
            self._tags[vm] = tags

    def keeping_tags(self, keep: bool) -> None:
        """Keep every VM's tags from its next record on (a mute names tags), or stop."""
        self.keep_tags = keep
        if not keep and not any(rs.rule.labels for rs in self.rules.values()):
            self._tags = {}
            self._tags_read = {}

    def seed_tags(self, heard: list[tuple[str, int, dict[str, str]]]) -> None:
        """Each VM's tags as its newest logged record carries them (``service.last_heard``),
        for a VM whose records since have not said (bounded as the routes are).

        Tags are kept from a mute's creation (or a start), not before: a VM that reported
        them earlier, and has not reported since (stopped: its host is being rebooted, the
        maintenance the mute is for), would be unknown to it, and its silence paged.
        """
        if not self.keep_tags:
            return
        tags = self._tags
        for vm, _ts, labels in heard:
            if vm not in tags and len(tags) < self.settings.max_series:
                tags[vm] = labels

    def vm_tags(self, vm: str) -> dict[str, str] | None:
        """A VM's tags as last seen (``host`` among them); None when not kept or not yet seen."""
        return self._tags.get(vm)

    def _labels(self, rule: Rule, scope: str) -> dict[str, str] | None:
        """The tags an alert of ``rule`` about ``scope`` carries (those its actions group by)."""
        tags = self._tags.get(scope)
        if not rule.labels or tags is None:
            return None
        return {name: tags[name] for name in rule.labels if name in tags}

    def _failed(self, rs: RuleState, exc: Exception) -> None:
        """A rule that raised: counted, logged (rate-limited), and the other rules go on."""
        self.errors += 1
        self._error_log.emit("rule %s failed, the other rules go on: %s: %s", rs.rule.name,
                             type(exc).__name__, exc)

    def _vm_record(self, rs: RuleState, vm: str, ts: int, value, now: float,
                   late: bool = False) -> None:
        """File a VM's record under its period and decide.  ``late``: older than one the rules
        took of the VM: it fills its period if that has no value, and changes nothing else (a
        resent record replacing the newer one's value resolved an alarm that still held)."""
        rule = rs.rule
        period = int(ts // rule.period)
        series = rs.series.get(vm)
        if series is None:
            if self.size >= self.settings.max_series:
                self.refused += 1
                return
            self.size += 1
            series = rs.series[vm] = Series(vm, period, now)
            rs.states["ok"] += 1
        elif series.state == "silent":
            series.buckets.clear()
            series.first = period
        elif series.first > period:
            series.first = period
        series.last_arrival = now
        buckets = series.buckets
        if late:  # its period's value if it has none; the VM's value, clock, freshness stay
            if value is None or period in buckets:
                return
            buckets[period] = value
        else:
            series.offset = now - ts
            if value is not None:
                buckets[period] = value
                series.value = value
                series.valued = now
        if len(buckets) > rs.keep:  # periods out of every window to come, a few at a time
            for old in [p for p in buckets if p <= period - rule.periods]:
                del buckets[old]
        step = period - series.end
        if (series.state == "ok" and value is not None and not series.blocked
                and rule.enter is not None
                and (value <= rule.enter if rule.above else value >= rule.enter)
                and (0 <= step <= 1 or (series.settled and rs.gaps_are_quiet))):
            # In ok, a value that does not breach cannot raise the window's breaches: in the
            # next (or the same) period it adds no missing period either.  Further on, or late
            # (for a period the window has passed or still holds), the missing periods count
            # as no breach (keep, ok) and the window was evaluated below ``datapoints``
            # (settled): nothing to decide.
            if step > 0:
                series.end = period
            return
        self._evaluate(rs, series, max(period, series.end), now)

    def _member(self, rs: RuleState, vm: str, value, now: float, cells: list) -> None:
        if vm not in rs.members:
            if self.size >= self.settings.max_series:
                self.refused += 1
                return
            self.size += 1
            if not rs.members:
                rs.warm_until = now + rs.rule.period
        if rs.rule.scale is None:  # host and CPU serve the placement of a scale-out only
            rs.members[vm] = (value, now, None, None)
        else:
            cpu = cells[_CPU]
            rs.members[vm] = (value, now, metrics.host_of(cells), float(cpu) if cpu else None)
        rs.dirty = True

    def _group(self, rs: RuleState, now: float) -> None:
        """The group's figure from its fresh members, filed under the current period."""
        rule = rs.rule
        rs.dirty = False
        rs.group_swept = now
        stale = now - 2 * rule.period
        gone = [vm for vm, member in rs.members.items() if member[1] < stale]
        for vm in gone:
            del rs.members[vm]
        self.size -= len(gone)
        if now < rs.warm_until:  # members still arriving: a figure of some of them decides nothing
            return
        # A member a mute covers (under maintenance) neither raises nor holds up the figure;
        # it still counts as a member (it is in the pool, back after the maintenance).
        muted = self.muted_members(rule.name, rs.members)
        if muted:
            figures = [member[0] for vm, member in rs.members.items()
                       if member[0] is not None and vm not in muted]
        else:
            figures = [member[0] for member in rs.members.values() if member[0] is not None]
        value = aggregate(rule.aggregate, figures, rule.level)
        period = int(now // rule.period)
        series = rs.series.get(GROUP)
        if series is None:
            self.size += 1
            series = rs.series[GROUP] = Series(GROUP, period, now)
            rs.states["ok"] += 1
        series.value = value
        series.first = min(series.first, period)
        if value is not None:
            series.buckets[period] = value
            series.last_arrival = now
        for old in [p for p in series.buckets if p <= period - rule.periods]:
            del series.buckets[old]
        if rule.enter is not None or (series.state != "ok" and value is not None):
            self._evaluate(rs, series, period, now)
        if rule.scale is not None:
            self._scale(rs, now)

    # -- state -----------------------------------------------------------------------------------
    def _evaluate(self, rs: RuleState, series: Series, end: int, now: float) -> None:
        """M of the last N periods ending at ``end`` decide; the hold may defer the change."""
        rule = rs.rule
        if rule.enter is None:  # a silence-only or scaling rule: data ends any state but ok
            series.end = end  # (silent; or one carried over from an edit that dropped enter)
            if series.state != "ok":
                self._transition(rs, series, "ok", now, None)
            return
        self.evaluations += 1
        series.end = end
        state = series.state
        alarmed = state == "alarm"
        start = end - rule.periods + 1
        # The window's values, read from whichever is smaller, the window or the data held:
        # an evaluation costs what the scope holds, never more than its N periods.
        buckets = series.buckets
        if len(buckets) < rule.periods:
            values = [(p, v) for p, v in buckets.items() if start <= p <= end]
        else:
            values = [(p, buckets[p]) for p in range(start, end + 1) if p in buckets]
        hits = 0
        for _period, value in values:
            if alarmed:
                hits += value < rule.exit if rule.above else value > rule.exit
            else:
                hits += value > rule.enter if rule.above else value < rule.enter
        # Periods without a value: before the scope's first record they are "not yet".
        before = min(rule.periods, max(0, series.first - start))
        present = len(values)
        early = sum(1 for p, _value in values if p < series.first)
        notyet = before - early
        missing = rule.periods - before - (present - early)
        if rule.missing == "breaching":
            hits += 0 if alarmed else missing
        elif rule.missing == "ok":
            hits += missing if alarmed else 0
        counted = present + (missing if rule.missing in ("ok", "breaching") else 0)
        if hits >= rule.datapoints:
            new = "ok" if alarmed else "alarm"
        elif rule.missing == "insufficient" and counted + notyet < rule.datapoints:
            new = "insufficient-data"
        elif state in ("insufficient-data", "silent") and counted >= rule.datapoints:
            new = "ok"
        elif state == "silent" and present:
            new = "ok"
        else:
            new = state
        if new == state:
            series.blocked = False
            series.settled = state == "ok"
            return
        series.settled = False
        if state != "silent" and now - series.since < rule.hold:
            series.blocked = True
            return
        self._transition(rs, series, new, now,
                         rule.enter if new == "alarm" or state != "alarm" else rule.exit)

    def _transition(self, rs: RuleState, series: Series, new: str, now: float, threshold,
                    reason: str | None = None, stopped: bool = False) -> None:
        """``reason``: why a change was not measured (its rule is no longer in force).

        ``stopped``: the change is the data's end (a silence, an alarm gone stale): the event
        has no ``value``, and its ``last_value`` and ``last_value_at`` say what the last one
        was and when it came.  Given as ``value``, a figure minutes old read as the VM's
        current one in every notification ("insufficient-data (value 95)").
        """
        rule = rs.rule
        event = {"kind": "transition", "rule": rule.name, "fingerprint": rule.fingerprint,
                 "scope": series.scope, "from": series.state, "to": new, "value": series.value,
                 "threshold": threshold, "since": now, "at": now, "seq": series.seq + 1,
                 "actions": list(rule.actions), "began": series.since}
        if reason is not None:
            event["reason"] = reason
        if stopped:
            event["value"] = None
            if series.scope == GROUP:  # a group's value is that of its last period with one
                newest = max(series.buckets, default=None)
                last, at = (None, None) if newest is None else (series.buckets[newest],
                                                                 series.last_arrival)
            else:
                last, at = series.value, series.valued
            if last is not None:
                event["last_value"], event["last_value_at"] = last, at
        if series.scope == GROUP:
            event["members"] = len(rs.members)
        elif rule.labels:
            labels = self._labels(rule, series.scope)
            if labels:
                event["labels"] = labels
        rs.states[series.state] -= 1
        rs.states[new] += 1
        series.state = new
        series.since = series.notified = now
        series.seq += 1
        series.blocked = False
        self.transitions += 1
        self._emit(event)

    def _emit(self, event: dict) -> None:
        event["key"] = uuid.uuid4().hex
        self.events.append(event)

    def take(self) -> list[dict]:
        events, self.events = self.events, []
        return events

    # -- time ------------------------------------------------------------------------------------
    def sweep(self) -> None:
        """What only time reveals: silence, missing periods, ended holds, reminders, cooldowns."""
        now = self.clock()
        for rs in list(self.rules.values()):
            try:
                self._sweep_rule(rs, now)
            except Exception as exc:  # one rule's failure never skips the others
                self._failed(rs, exc)

    def _sweep_rule(self, rs: RuleState, now: float) -> None:
        """One rule's share of the sweep."""
        rule = rs.rule
        if rule.scope == GROUP:
            if now - rs.group_swept >= min(rule.period / 6, 10.0):
                self._group(rs, now)
            elif rule.scale is not None and rs.held is not None:
                self._scale(rs, now)
            series = rs.series.get(GROUP)
            if series is not None:
                if rule.stale_after and series.state == "alarm" and (
                        now - series.last_arrival >= rule.stale_after):
                    self._stale(rs, series, now)
                self._remind(rs, series, now)
            return
        silent_after, period, hold, remind = rule.silent_after, rule.period, rule.hold, rule.remind
        stale_after, forget = rule.stale_after, rs.forget
        for series in list(rs.series.values()):
            state = series.state
            if state in _FORGOTTEN and now - series.last_arrival >= forget:
                self._forget(rs, series)
                continue
            if silent_after and state != "silent" and now - series.last_arrival >= silent_after:
                if not self._handed(series.scope):
                    self._transition(rs, series, "silent", now, None, stopped=True)
                continue
            if stale_after and state in _STALE and now - series.valued >= stale_after:
                if not self._handed(series.scope):
                    self._stale(rs, series, now)
                continue
            if state == "silent" or series.first == RESTORED:
                continue  # restored: its clock and periods are known from its next record
            # The VM's current period on its clock; a record for period p may arrive in p + 1.
            due = int((now - series.offset) // period) - 2
            if due > series.end:
                self._evaluate(rs, series, due, now)
            elif series.blocked and now - series.since >= hold:
                self._evaluate(rs, series, series.end, now)
            if remind and series.state == "alarm":
                self._remind(rs, series, now)

    def _handed(self, vm: str) -> bool:
        """Whether a record of ``vm`` was handed off since the last tick (observe): a sweep
        before that tick said it silent (or without data) and the tick ok again, two
        notifications for a VM that had reported in time.  It is judged after the tick; asked
        only of a scope the sweep would end so."""
        return vm in self._pending or vm in self._tss

    def _forget(self, rs: RuleState, series: Series) -> None:
        """Drop a scope that has told its receivers all there is (ok, or insufficient-data) and
        heard nothing for ``rs.forget``: its VM, if it comes back, starts ok again without a
        word, as a new one does.  Its VM's routes, tags and newest stamp go with it once no
        rule holds it."""
        del rs.series[series.scope]
        rs.states[series.state] -= 1
        self.size -= 1
        vm = series.scope
        if not any(vm in other.series or vm in other.members for other in self.rules.values()):
            for held in (self._routes, self._newest, self._tags, self._tags_read):
                held.pop(vm, None)

    def _stale(self, rs: RuleState, series: Series, now: float) -> None:
        """An alarm without data for ``stale_after``: insufficient-data, no hold (as a silence).
        So is a silence whose rule was edited to watch silence no more: it fired for ever.

        Kept firing, an alarm of a VM that was deleted (or of a pool drained) was reminded of
        for ever; resolved, it would say the VM is fine, which no one measured.  Its next
        value decides again (``_evaluate``: back to alarm, or ok once enough periods have data).
        """
        series.blocked = False
        series.settled = False
        self._transition(rs, series, INSUFFICIENT, now, None,
                         "no data for %gs (stale_after)" % rs.rule.stale_after, stopped=True)

    def _remind(self, rs: RuleState, series: Series, now: float) -> None:
        rule = rs.rule
        if rule.remind and series.state == "alarm" and now - series.notified >= rule.remind:
            series.notified = now
            event = {"kind": "reminder", "rule": rule.name, "fingerprint": rule.fingerprint,
                     "scope": series.scope, "from": "alarm", "to": "alarm",
                     "value": series.value, "threshold": rule.enter, "since": series.since,
                     "at": now, "seq": series.seq, "actions": list(rule.actions)}
            labels = self._labels(rule, series.scope) if series.scope != GROUP else None
            if labels:
                event["labels"] = labels
            self._emit(event)

    def _scale(self, rs: RuleState, now: float) -> None:
        """Target tracking: act, or record why not yet and try again when that passes."""
        rule = rs.rule
        scale = rule.scale
        series = rs.series.get(GROUP)
        members = len(rs.members)
        value = series.value if series is not None else None
        if value is None or not members or not math.isfinite(value):
            return
        desired = scaling.desired_count(members, value, scale)
        if desired == members:
            rs.held = None
            return
        out = desired > members
        direction = "out" if out else "in"
        base = {"rule": rule.name, "fingerprint": rule.fingerprint, "scope": GROUP, "from": series.state,
                "to": series.state, "value": value, "threshold": scale.target, "members": members,
                "current": members, "desired": desired, "delta": desired - members,
                "direction": direction, "at": now, "seq": series.seq}
        ready = scaling.ready_at(scale, rs.last_out, rs.last_in, out)
        reason = mute = None
        if self.pending_scale(rule.name):
            reason = "pending action"
        elif now < ready:
            reason = "cooldown"
        else:
            mute = self.muted(rule.name)
            if mute is not None:  # not acted on; made again on the figures of the mute's end
                reason, ready = "muted", mute.ends
        if reason is not None:
            if rs.held != (reason, direction, mute and mute.id):
                rs.held = (reason, direction, mute and mute.id)
                held = dict(base, kind="held", reason=reason, until=ready if reason != "pending action"
                            else None, actions=[])
                if mute is not None:
                    held["mute"] = mute.id
                self._emit(held)
            return
        rs.held = None
        hosts: dict[str, list[float]] = {}
        muted = self.muted_members(rule.name, rs.members) if out else ()
        for vm, (_value, _arrival, host, cpu) in rs.members.items():
            if host and cpu is not None and vm not in muted:  # not a host under maintenance
                hosts.setdefault(host, []).append(cpu)
        where = scaling.placement(hosts, scale.hosts, rs.turn) if out else None
        if out and not hosts and scale.hosts:
            rs.turn += 1
        if out:
            rs.last_out = now
        else:
            rs.last_in = now
        # Its deliveries are retried within its cooldown only (``delivery.Dispatcher``): past
        # it, the next decision is made on the figures of then, not this one sent late.
        self._emit(dict(base, kind="scale", placement=where, actions=list(rule.actions),
                        cooldown=scale.out_cooldown if out else scale.in_cooldown))

    # -- reading ---------------------------------------------------------------------------------
    def states(self, limit: int = 10000) -> list[dict]:
        """Scopes not ok first (then most recent), bounded for a readable page.

        The page's rows are chosen before any is built: /alerts is served on the reactor's
        thread, and building and sorting a row for each of 200,000 series held it for a
        seventh of a second on each request."""
        chosen = []
        for rs in self.rules.values():
            kept = rs.series.values()
            # Few series are not ok at once; the recent ok ones are found with a key in C.
            astray = [series for series in kept if series.state != "ok"]
            if len(astray) > limit:  # a fleet-wide outage
                astray = nlargest(limit, astray, key=_SINCE)
            chosen += [(rs, series) for series in astray]
            chosen += [(rs, series) for series in nlargest(limit, kept, key=_SINCE)
                       if series.state == "ok"]
        chosen = nsmallest(limit, chosen, key=_page_order)
        rows = []
        for rs, series in chosen:
            row = {"rule": rs.rule.name, "scope": series.scope, "state": series.state,
                   "since": series.since, "value": series.value}
            if series.state in _NO_VALUE and series.scope != GROUP and series.value is not None:
                # Its data stopped (or is too thin to judge): the last value, said as such,
                # as its notifications say it (a group's value is None by then already).
                row["value"], row["last_value"] = None, series.value
                row["last_value_at"] = series.valued
            rows.append(row)
        return rows

    def members(self, rule: str) -> list[str]:
        """The VMs counted in a group rule's figure and count (reported within two periods)."""
        rs = self.rules.get(rule)
        return list(rs.members) if rs is not None else []

    def state_counts(self) -> dict[tuple[str, str], int]:
        return {(name, state): rs.states[state] for name, rs in self.rules.items()
                for state in STATES}


def _page_order(pair: tuple) -> tuple[bool, float]:
    """A series' place on the states page: not ok first, then the most recent change."""
    series = pair[1]
    return series.state == "ok", -series.since


def _newest_positions(columns: tuple[list, list, list]) -> dict[str, int]:
    """Each VM of a payload -> the position of its newest-stamped record (the later of equals).

    One C pass when each VM is in it once, as in a fleet's payloads; a VM's spool or a relay's
    batch holding it more than once is read record by record."""
    vms, tss = columns[0], columns[1]
    where = dict(zip(vms, count()))
    if len(where) == len(vms):
        return where
    newest: dict[str, int] = {}
    for at, vm in enumerate(vms):
        if tss[at] >= tss[newest.get(vm, at)]:
            newest[vm] = at
    return newest


def _steps(route: list[RuleState]) -> list[tuple]:
    """What a tick does per rule for a VM: (state, the metric's cell or None, metric, group?)."""
    return [(rs, rs.rule.value_of.index, rs.rule.value_of, rs.rule.scope == GROUP) for rs in route]


def aggregate(how: str, figures: list[float], level: float | None) -> float | None:
    """A group's figure from its members' (none: None, the period is missing)."""
    if not figures:
        return None
    if how == "mean":
        try:
            mean = math.fsum(figures) / len(figures)
        except OverflowError:  # figures near the float's end: no figure, a missing period
            return None
        return mean if math.isfinite(mean) else None
    if how == "max":
        return max(figures)
    if how == "min":
        return min(figures)
    if how == "count_above":
        return float(sum(1 for f in figures if f > level))
    ordered = sorted(figures)  # pNN: linear interpolation between the closest ranks
    rank = float(how[1:]) / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
