"""The rules inside the aggregator: a Twisted service joining engine, action log and delivery.

Ticks of ``TICK`` seconds (further apart under a flood, see ``BUDGET``)
feed what the reactor filed to the engine and hand its events to the
dispatcher (logged, then sent), so a record's transition is on its way well
within a second of its arrival; a sweep each quarter of the shortest period
seconds (shorter when a rule's silence or period is short) lets time speak.
A reload (SIGHUP) reads the file again: a bad file is reported problem by
problem and the rules in force stay.
"""

import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping

from twisted.application import service
from twisted.internet import defer

from vmstats import logstore
from vmstats.rules.actionlog import ActionLog
from vmstats.rules.config import RulesError, RuleSet, load_rules
from vmstats.rules.delivery import Dispatcher
from vmstats.rules.evaluator import GROUP, Engine
from vmstats.rules.mutes import (
    MAX_MUTES,
    MAX_PLAIN_IDS,
    MAX_SELECTORS,
    Mute,
    MuteError,
    MuteSet,
    clipped,
    parse_mute,
)
from vmstats.rules.workers import Workers
from vmstats.server.clock import WallClock
from vmstats.server.ownfiles import replace_durably
from vmstats.words import counted

log = logging.getLogger(__name__)

TICK = 0.1
#: Under a flood, the rules' share of the server's own CPU: the next tick waits until the
#: process has spent this many times the last tick's CPU on other work (each tick's work is
#: one record per VM whatever arrived, so ticks further apart cost less per record while the
#: ingest keeps its pace).  CPU, not wall time: on a busy host a flood takes longer, and ticks
#: spaced by the clock would take a larger share of what the server gets.
BUDGET = 0.03
#: ... but never further apart than this: a slow tick (the first sight of a fleet, whose
#: rule routes are worked out once) must not hold the next one back for long.
MAX_GAP = 2.0
#: Records in one tick that make a flood (50,000 records/s; 10,000 VMs reporting each minute
#: bring about 17 a tick).
FLOOD = 5000
#: The sweep runs a quarter of the shortest period, silence or hold apart, within these bounds.
SWEEP_MIN = 0.1
SWEEP_MAX = 5.0
#: The end of a mute is looked for at least this often: a step of the wall clock (mutes end at
#: a time of day) moves it by at most this much.
MUTE_CHECK = 30.0


def rules_dir(data_dir: str) -> str:
    """Where the action log lives: beside the logs (same disk, same fate, same backups)."""
    return os.path.join(data_dir, "rules")


#: A day file's name, ``YYYY-MM-DD.csv`` (other names in a VM's folder are no day of its logs).
_DAY_FILE = re.compile(r"\d{4}-\d{2}-\d{2}" + re.escape(logstore.SUFFIX) + r"\Z", re.ASCII)

Labels = tuple[int, str, tuple[tuple[str, str], ...] | None]


def last_heard(data_dir: str, now: float, within: float | None = None,
               links: list[tuple[str, str]] | None = None) -> list[tuple[str, int, dict[str, str]]]:
    """``(vm, ts, labels)`` of each VM's newest logged record, however long ago it came.

    A server down over a weekend finds no file of today or yesterday: each VM's newest record
    is in the newest day file of its folder (its last few KiB read), or, for a day the log
    store has compacted since (docs/STORAGE.md), in the newest columnar file holding the VM
    (its footer, then the VM's own rows).  A few ``stat`` calls or one listing, and one small
    read, per VM folder; never its older days.  Day files and columnar files dated after the
    clock's next day (a stray copy, docs/STORAGE.md) are not taken for the newest: one dated
    2099 would hide the VM's real records.

    ``within``: a VM whose records all came more than ``within`` seconds before the newest
    record (or ``now``, if earlier) may be left out, unread: for a caller that judges VMs
    against the moment the server stopped (a retired VM's folder then costs a listing).

    A VM folder or day file that is a symbolic link out of the data dir, or to other logs of
    it, is not read (logstore.link_problem, as the server's writer and the report): another
    data dir's VM would be seeded here and go silent.  ``links`` gets ``(path, why)`` of each
    left out, for the caller to say; one ``lstat`` per VM folder and newest day file.
    """
    limit = logstore.day_name(int(now) // logstore.DAY_SECONDS + 1)
    csv_days: dict[str, tuple[str, Iterator[str]]] = {}
    known = ""  # the newest day found so far
    probes: list[str] = []
    for vm in logstore.iter_vms(data_dir):
        try:
            folder = logstore.vm_dir(data_dir, vm)
        except ValueError:  # a folder no VM id could name
            continue
        if _refused(data_dir, folder, links):
            continue
        days = _days_newest_first(folder, limit, probes)
        day = next(days, None)
        if day is None:
            continue
        csv_days[vm] = (day, days)
        if day > known:
            known = day
            probes = _probe_days(limit, known)
    try:
        listed = logstore.tier_days(data_dir, logstore.COLUMNAR_DIR)
    except OSError as exc:  # a file or a link loop in the folder's place: no compacted days
        log.warning("rules: columnar folder of %s not read for the VMs' last records: %s",
                    data_dir, exc.strerror or exc)
        listed = []
    columnar = [(day, path) for day, path in listed
                if _DAY_FILE.match(day + logstore.SUFFIX) and day <= limit]
    newest = max([day for day, _more in csv_days.values()] + [day for day, _path in columnar[-1:]],
                 default=None)
    if newest is None:
        return []
    first = "0000-00-00"
    if within is not None and _is_date(newest):
        start = min(now, logstore.day_number(newest) * logstore.DAY_SECONDS)
        first = logstore.day_name(max(0, int(start - within) // logstore.DAY_SECONDS))
    found: dict[str, tuple[str, Labels]] = {}
    for vm, (day, more) in csv_days.items():
        while day is not None and day >= first:
            path = logstore.day_path(data_dir, vm, day)
            if _refused(data_dir, path, links):
                day = next(more, None)
                continue
            last = logstore.last_labels(path)
            if last is not None:
                found[vm] = (day, last)
                break
            day = next(more, None)  # no well-formed row in it (torn, emptied): the day before
    for day, path in reversed(columnar):
        if day < first:
            break
        _newer_from_columnar(path, day, found)
    heard = []
    for vm, (_day, (ts, host, tags)) in sorted(found.items()):
        labels = dict(tags or ())
        if host:
            labels["host"] = host
        heard.append((vm, ts, labels))
    return heard


def _refused(data_dir: str, path: str, links: list[tuple[str, str]] | None) -> bool:
    """Whether ``path`` is a symbolic link logstore.link_problem refuses (added to ``links``)."""
    if not os.path.islink(path):
        return False
    problem = logstore.link_problem(data_dir, path)
    if problem is not None and links is not None:
        links.append((path, problem))
    return problem is not None


#: Day files whose names a VM folder is probed for (the newest day any VM logged up to the
#: clock's next day), before its listing: most VMs report until the server stops, and a
#: failed ``stat`` costs about a sixth of listing a folder of 30 days.
PROBES = 4


def _probe_days(limit: str, known: str) -> list[str]:
    """The days from ``limit`` back to ``known``, newest first; none if more than PROBES (a
    long outage: listing each folder costs less than probing every day of it)."""
    if not _is_date(known):
        return []
    top, low = logstore.day_number(limit), logstore.day_number(known)
    return [logstore.day_name(day) for day in range(top, low - 1, -1)] if top - low < PROBES else []


def _is_date(day: str) -> bool:
    """Whether a ``YYYY-MM-DD`` name is a date (a stray ``2026-02-31.csv`` is none)."""
    try:
        logstore.day_number(day)
    except ValueError:
        return False
    return True


def _days_newest_first(folder: str, limit: str, probes: list[str]) -> Iterator[str]:
    """The days of a VM folder's day files, newest first, none after ``limit``.

    The newest is looked for among ``probes`` first, then in the folder's listing, where it
    is usually the largest name (a folder holds day files only): one ``max`` finds it, and the
    listing is sorted only if the caller asks for more (that file held no well-formed row).
    """
    suffix = logstore.SUFFIX
    found = ""
    for day in probes:
        if os.path.exists(folder + os.sep + day + suffix):
            found = day
            yield day
            break
    try:
        names = os.listdir(folder)
    except OSError:  # gone since it was listed
        return
    cut = len(suffix)

    def wanted(name: str) -> bool:
        return bool(_DAY_FILE.match(name)) and (name[:-cut] < found if found else name[:-cut] <= limit)

    top = max(names, default="")
    if wanted(top):
        yield top[:-cut]
    yield from sorted((name[:-cut] for name in names if name != top and wanted(name)), reverse=True)


def _newer_from_columnar(path: str, day: str, found: dict[str, tuple[str, Labels]]) -> None:
    """Take, from the columnar file of ``day``, the last record of each VM it holds that
    ``found`` has nothing of that day or later for (or only a CSV file of the same day: one
    written beside a compacted day, which the later of the two wins).  Its footer says which
    VMs it holds; only their rows are read."""
    try:
        vms = logstore.tier_info(path)["vms"]
    except (OSError, ValueError) as exc:
        log.warning("rules: columnar file %s not read for the VMs' last records: %s", path, exc)
        return
    wanted = [vm for vm in vms if vm not in found or found[vm][0] <= day]
    if not wanted:
        return
    parts = [logstore.Part(path, vm, logstore.COLUMNAR_DIR) for vm in wanted]
    for vm, last in zip(wanted, logstore.last_labels_many(parts), strict=True):
        if last is not None and (vm not in found or found[vm][1][0] < last[0]):
            found[vm] = (day, last)


def _say_doubts(ruleset: RuleSet) -> None:
    """Each action that may fail on this machine (RuleSet.doubts), in the log: taken, since
    the program may be installed after the server starts, but said before it is needed."""
    for doubt in ruleset.doubts():
        log.warning("rules: %s", doubt)


def _finite(path: str) -> None:
    """RulesError when ``path`` is a FIFO, socket or device (a ``--rules <(...)`` pipe, or one
    put in the file's place): a reload runs on the reactor, and opening a FIFO no one writes
    to stopped the whole server, ingest and HTTP, until one did.  A start may read one."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # load_rules says what is wrong with it
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        raise RulesError(path, ["%s, which a reload does not read (it may never end)"
                                % logstore.not_regular(mode)])


def counts_page(state_counts: Mapping[tuple[str, str], int]) -> dict:
    """/alerts' ``counts``: ``"rule.state": n`` for the states any scope is in."""
    return {"%s.%s" % key: n for key, n in sorted(state_counts.items()) if n}


def deliveries_page(pending: int, outcomes: Mapping[tuple[str, str], int]) -> dict:
    """/alerts' ``deliveries``: ``pending``, the totals ``delivered``, ``gave_up`` and
    ``dropped`` (past ``max_pending``), and ``"action.result": n`` for each action.

    The one shape whether the server counted them or ``vmstats alerts --data-dir`` read them from
    the action log, so a script reads either with the same code.
    """
    page: dict = {"pending": pending}
    for total in ("delivered", "gave_up", "dropped"):
        page[total] = sum(n for (_a, result), n in outcomes.items() if result == total)
    page.update(("%s.%s" % key, n) for key, n in sorted(outcomes.items()))
    return page


class RulesService(service.Service):
    name = "rules"

    def __init__(self, reactor, path: str, ruleset: RuleSet, directory: str,
                 cpu: Callable[[], float] = time.process_time,
                 wall: WallClock | None = None, data_dir: str | None = None):
        """``wall`` is the time of day the rules judge records and stamp the log by (the
        server's, whose steps they follow); by default ``reactor.seconds``, as with a test's
        ``task.Clock``.  ``data_dir``: where the VMs' logs tell, at start, which VMs were
        reporting (silence rules time their silence from there)."""
        self.reactor = reactor
        self.data_dir = data_dir
        self.cpu = cpu
        self.path = path
        self.ruleset = ruleset
        self.log = ActionLog(reactor, directory, ruleset.settings.log_max_bytes)
        s = ruleset.settings
        clock = wall if wall is not None else reactor.seconds
        self.dispatcher = Dispatcher(reactor, self.log, ruleset.actions, s.retry_for, s.retry_min,
                                     s.retry_max, clock, s.max_pending, self.muting)
        self.engine = Engine(ruleset, clock, self.dispatcher.holds_scale,
                             lambda rule: self.mute_of(rule, GROUP), self.muted_members)
        self.mutes = MuteSet(directory)
        #: rule -> (the ids of the mutes naming VMs that cover it, vm -> (its tags as last
        #: judged, covered?)): a group's members are judged again only when those change.
        self._members_judged: dict[str, tuple[tuple[str, ...], dict]] = {}
        #: The mutes file is replaced on a thread of its own, one write after another.
        self._mute_writer = Workers(reactor, "vmstats-mutes", 1)
        self._next_mute = None
        #: While the VMs' logs are read for their tags (``_seed_tags``): how many readings are
        #: under way, and the answers to mutes by tag that wait for them (``_tags_read``).
        self._readings = 0
        self._tags_waiters: list[defer.Deferred] = []
        #: Why a reading of the batch the waiters wait on failed (None: none did).
        self._unread: str | None = None
        if wall is not None:
            wall.on_step.append(self.engine.clock_stepped)
        self.reloads = 0
        self.reload_failures = 0
        self._next_tick = None
        self._next_sweep = None
        #: Under a flood: the process's CPU and the clock at the end of the last tick, and the
        #: CPU the process must spend on other work before the next (0: no flood, every TICK).
        self._tick_cpu = 0.0
        self._tick_at = 0.0
        self._spacing = 0.0
        #: CPU seconds the ticks and the sweeps took (/metrics): the rules' cost, measured.
        self.cpu_spent = {"tick": 0.0, "sweep": 0.0}

    # -- the ingest's side -----------------------------------------------------------------------
    @property
    def observe(self):
        return self.engine.observe

    # -- lifecycle -------------------------------------------------------------------------------
    def startService(self) -> None:
        state = self.log.open()
        ended = self.mutes.load(self.engine.clock())
        self.engine.keeping_tags(self.mutes.names_tags())
        self.dispatcher.held_back = state.held
        for key, event in state.states.items():
            self.engine.restore(event, state.reminded.get(key), state.farewelled.get(key, {}))
        for (rule, direction), event in state.scaling.items():
            self.engine.restore_scaling(rule, direction, event["at"])
        quiet = [r.silent_after for r in self.ruleset.rules if r.silent_after and r.scope == "vm"]
        tagged = self.engine.keep_tags  # a mute names tags: every VM's, however long ago
        if (quiet or tagged) and self.data_dir is not None:
            links: list[tuple[str, str]] = []
            heard = last_heard(self.data_dir, self.engine.clock(), None if tagged else max(quiet),
                               links)
            if links:
                log.warning("rules: %s under vms/ not read for the VMs' last records, e.g. %s is "
                            "%s: not this data dir's logs (docs/STORAGE.md, \"Symbolic links "
                            "under vms/\")", counted(len(links), "VM folder or day file",
                                                      "VM folders or day files"), *links[0])
            self.engine.seed_tags(heard)
            # The newest record logged is about when the server stopped (never after now: an
            # agent's clock may be ahead).  Who was reporting is judged at that moment, not
            # at this start: a restart slower than silent_after would otherwise leave every
            # VM that stopped across it for quiet before it, and none would go silent.
            stopped = min(self.engine.clock(), max((ts for _vm, ts, _l in heard), default=0))
            for vm, ts, labels in heard if quiet else ():
                if stopped - ts < max(quiet):
                    self.engine.reporting(vm, ts, labels, stopped)
        _say_doubts(self.ruleset)
        if state.pending:
            log.info("action log: %s left undelivered: sending them again",
                     counted(len(state.pending), "delivery", "deliveries"))
        service.Service.startService(self)
        # Actions taken out of the rules before the stop (by a reload) or while the server was
        # down, kept for the deliveries owed to them: those logged, and the resolutions the
        # restore made of alerts they were told of (sent below).
        self.dispatcher.revive(state, self.engine.events)
        # The groups list what still fires in their next notifications, but not what a mute holds.
        self.dispatcher.resume(list(state.pending.values()),
                               [event for event in state.states.values() if event["to"] != "ok"
                                and (event["rule"], event["scope"]) not in state.held])
        # Mutes that ended while the server was down: what they held back is sent now.
        for mute in sorted({held[0] for held in state.held.values()} - set(self.mutes.mutes)):
            self.dispatcher.release(mute)
        self._submit()  # the restore's events, before a revived action would be let go
        if ended:
            self._save_mutes().addErrback(lambda _f: None)
        self._schedule_mutes()
        self._next_tick = self.reactor.callLater(TICK, self.tick)
        self._next_sweep = self.reactor.callLater(self._sweep_interval(), self.sweep)
        log.info("rules: %d loaded from %s; action log %s", len(self.ruleset.rules), self.path,
                 self.log.path)

    def _sweep_interval(self) -> float:
        shortest = [SWEEP_MAX]
        for rule in self.ruleset.rules:
            shortest.append(rule.period / 4)
            if rule.silent_after:
                shortest.append(rule.silent_after / 4)
            if rule.hold:
                shortest.append(rule.hold / 4)
        return max(SWEEP_MIN, min(shortest))

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        for call in (self._next_tick, self._next_sweep, self._next_mute):
            if call is not None and call.active():
                call.cancel()
        self._next_tick = self._next_sweep = self._next_mute = None
        self._mute_writer.close()
        self.engine.process()  # what the drain filed still reaches the log
        self._submit()
        yield self.log.idle()
        yield self.dispatcher.stop()
        yield self.log.idle()
        self.log.close()

    # -- work ------------------------------------------------------------------------------------
    def tick(self) -> None:
        began = self.cpu()
        if (self._spacing and began - self._tick_cpu < self._spacing
                and self.reactor.seconds() - self._tick_at < MAX_GAP):
            if self.running:  # the flood's own work first
                self._next_tick = self.reactor.callLater(TICK, self.tick)
            return
        taken = 0
        try:
            taken = self.engine.process()
            self._submit()
        finally:
            if self.running:  # first: nothing below may cost the rules their next tick
                self._next_tick = self.reactor.callLater(TICK, self.tick)
            self._tick_cpu = self.cpu()
            self._tick_at = self.reactor.seconds()
            self.cpu_spent["tick"] += self._tick_cpu - began
            # Not a slow tick alone (a fleet's first sight): a flood.
            self._spacing = (self._tick_cpu - began) / BUDGET if taken >= FLOOD else 0.0

    def sweep(self) -> None:
        began = time.perf_counter()
        cpu = self.cpu()
        try:
            self.engine.sweep()
            self._submit()
        finally:
            took = time.perf_counter() - began
            self.cpu_spent["sweep"] += self.cpu() - cpu
            if self.running:  # a sweep over many scopes spaces the next one out (BUDGET)
                self._next_sweep = self.reactor.callLater(
                    max(self._sweep_interval(), took / BUDGET), self.sweep)

    def _submit(self) -> None:
        events = self.engine.take()
        if events:
            self.dispatcher.submit(events).addErrback(lambda _f: None)

    def reload(self) -> bool:
        """Read the rules file again; on any problem keep the rules in force."""
        try:
            _finite(self.path)
            ruleset = load_rules(self.path)
        except RulesError as exc:
            self.reload_failures += 1
            for problem in exc.problems:
                log.error("rules reload refused, the previous rules stay: %s: %s", self.path,
                          problem)
            return False
        kept = self.engine.load(ruleset)
        self.ruleset = ruleset
        replaced, self.dispatcher.actions = self.dispatcher.actions, ruleset.actions
        # Their threads end after what they were given; those of actions gone from the rules
        # once the resolutions of the alerts they told of (submitted now) are delivered.
        self.dispatcher.retire(replaced)
        self._submit()
        s = ruleset.settings
        self.dispatcher.retry_for, self.dispatcher.retry_min = s.retry_for, s.retry_min
        self.dispatcher.retry_max = s.retry_max
        self.dispatcher.max_pending = s.max_pending
        self.dispatcher.bound()
        self.dispatcher.regroup()
        self.reloads += 1
        log.info("rules reloaded from %s: %s, %d unchanged kept their state", self.path,
                 counted(len(ruleset.rules), "rule"), len(kept))
        _say_doubts(ruleset)
        return True

    # -- mutes (mutes.py) -------------------------------------------------------------------------
    def muting(self, event: dict) -> Mute | None:
        """The mute covering an event now, if any (asked by the dispatcher at delivery)."""
        return self.mute_of(event["rule"], event["scope"], event.get("labels"))

    def mute_of(self, rule: str, scope: str, labels: dict[str, str] | None = None) -> Mute | None:
        """The mute covering the alert of ``rule`` about ``scope`` now.

        A VM's: by its tags as the server knows them (else those its event carries).  A
        group's: a mute naming its rule, or, when every member is under a mute naming it,
        those mutes (a group of VMs all under maintenance has nothing else to say).
        """
        now = self.engine.clock()
        if scope != GROUP:
            tags = self.engine.vm_tags(scope)
            return self.mutes.covering(rule, scope, labels if tags is None else tags, now)
        found = self.mutes.covering(rule, GROUP, None, now)
        if found is None and self.mutes.naming_vms(rule, now):
            found = self.mutes.covering_all(rule, self.engine.members(rule), self.engine.vm_tags, now)
        return found

    def muted_members(self, rule: str, vms) -> set[str] | tuple:
        """The members of a group rule (of ``vms``) a mute naming VMs covers now: the engine
        leaves their readings out of the group's figure.

        Asked each time the figure is made (a tick at most): each member is judged once while
        the same mutes are in force and its tags are the same, not each time.
        """
        mutes = self.mutes.naming_vms(rule, self.engine.clock())
        if not mutes:
            self._members_judged.pop(rule, None)
            return ()
        ids = tuple(mute.id for mute in mutes)
        judged = self._members_judged.get(rule)
        if judged is None or judged[0] != ids or len(judged[1]) > 2 * len(vms) + 100:
            judged = self._members_judged[rule] = (ids, {})
        known, tags_of, covered = judged[1], self.engine.vm_tags, set()
        judge = self.mutes.judge(rule, mutes)
        for vm in vms:
            tags = tags_of(vm)
            seen = known.get(vm)
            if seen is None or seen[0] is not tags:
                seen = known[vm] = (tags, judge(vm, tags))
            if seen[1]:
                covered.add(vm)
        return covered

    def add_mute(self, data) -> defer.Deferred:
        """A new mute, in force once on disk: fires with (HTTP status, the mute or an error)."""
        now = self.engine.clock()
        try:
            mute = parse_mute(data, now)
        except MuteError as exc:
            return defer.succeed((400, {"error": str(exc)}))
        if len(self.mutes.mutes) >= MAX_MUTES:
            return defer.succeed((400, {"error": "%d mutes are in force already, the most there may "
                                                 "be: expire some first" % MAX_MUTES}))
        named = sum(m.selectors for m in self.mutes.mutes.values())
        if named + mute.selectors > MAX_SELECTORS:
            return defer.succeed((400, {"error": "the mutes in force name %s already (rule names, "
                                                 "globs, cidrs, tags), and this one %d more: %d at most in "
                                                 "all (name a host's VMs by their host tag, not one "
                                                 "by one; or expire some first)"
                                                 % (counted(named, "selector"),
                                                    mute.selectors, MAX_SELECTORS)}))
        plain = sum(m.plain for m in self.mutes.mutes.values())
        if plain + mute.plain > MAX_PLAIN_IDS:
            return defer.succeed((400, {"error": "the mutes in force name %s already, and this one %d "
                                                 "more: %d at most in all (name a host's VMs by "
                                                 "their host tag, not one by one; or expire some "
                                                 "first)" % (counted(plain, "VM id"), mute.plain,
                                                             MAX_PLAIN_IDS)}))
        seed = bool(mute.match.tags) and not self.engine.keep_tags
        self.mutes.add(mute)
        self.engine.keeping_tags(self.mutes.names_tags())
        if seed:
            self._seed_tags()

        def withdrawn() -> None:
            """Refused after all: what it held back while it was made is let go, as at a
            mute's end; kept, it was never sent until a restart."""
            self.mutes.remove(mute.id)
            self.engine.keeping_tags(self.mutes.names_tags())
            self.dispatcher.release(mute.id)
            self._submit()

        def ended() -> tuple[int, dict] | None:
            """409 if the mute ended while it was being made: it is in force (and listed) from
            the request, so ``DELETE /mutes`` (or its own end) may take it out before its
            answer; a 201 then named a mute in force nowhere, on disk or listed."""
            if self.mutes.mutes.get(mute.id) is mute:
                return None
            log.info("mute %s ended before it was made (%s): not in force", mute.id,
                     clipped(mute.comment))
            return 409, {"error": "mute %s ended before it was made (DELETE /mutes, or its end "
                                  "came): it is not in force" % mute.id}

        def read(unread: str | None):
            refused = ended()
            if refused is not None:
                return refused
            if unread is None:
                return self._save_mutes().addCallbacks(saved, failed)
            # It would cover only the VMs that report again, not those whose host is down
            # already (the maintenance it is for): refused, rather than a 201 that pages.
            # Written again in case another mute's change wrote it meanwhile: not on disk either.
            withdrawn()
            refusal = 503, {"error": "the VMs' logs cannot be read for their tags (%s): the mute was "
                                     "not made; a mute by id or cidr needs no reading" % unread}
            return self._save_mutes().addErrback(self._unwritten).addBoth(lambda _: refusal)

        def saved(_):
            refused = ended()  # the write of the file without it is queued behind this one
            if refused is not None:
                return refused
            log.info("mute %s added: %s", mute.id, mute.brief())
            self._schedule_mutes()
            return 201, mute.as_dict()

        def failed(failure):
            refused = ended()
            if refused is not None:
                return refused
            withdrawn()
            return 500, {"error": "cannot write %s: %s" % (self.mutes.path, failure.getErrorMessage())}

        # A mute by tag is made once every VM's tags are known: read for it, or by a reading
        # another mute by tag started a moment before (which this one did not repeat).
        return (self._tags_read() if mute.match.tags else defer.succeed(None)).addCallback(read)

    def _unwritten(self, failure) -> None:
        """A write of the mutes file failed: logged (what asked for it goes on)."""
        log.error("cannot write %s: %s", self.mutes.path, failure.getErrorMessage())

    def _seed_tags(self) -> None:
        """The tags of every VM the logs know, from each one's newest logged record (read on
        the mutes' thread), for a mute naming tags that the rules kept none for until now.

        A VM that reported its tags before the mute and has not reported since (its host
        already down for the maintenance) is then covered all the same; one whose records
        came in meanwhile keeps what they said.  What the logs cannot say yet (records of
        the last flush interval, not yet written) its next record does.  Mutes by tag are
        answered once the reading is done (``_tags_read``).
        """
        def failed(failure) -> None:
            self._unread = failure.getErrorMessage() or failure.type.__name__
            log.warning("rules: the VMs' logs were not read for their tags: %s", self._unread)

        def done(_) -> None:
            self._readings -= 1
            if not self._readings:
                waiters, self._tags_waiters = self._tags_waiters, []
                unread, self._unread = self._unread, None
                for waiter in waiters:
                    waiter.callback(unread)

        if self.data_dir is None:
            return
        self._readings += 1
        self._mute_writer.run(last_heard, self.data_dir, self.engine.clock()).addCallbacks(
            self.engine.seed_tags, failed).addBoth(done)

    def _tags_read(self) -> defer.Deferred:
        """Fires once no reading of the VMs' tags is under way: a mute by tag made while
        another's reading runs covers the VMs only the logs know only once it is done.  With
        None, or why a reading under way failed (then no mute by tag waiting on it is made)."""
        if not self._readings:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._tags_waiters.append(waiter)
        return waiter

    def expire_mute(self, mute_id: str) -> defer.Deferred:
        """End a mute now (what it held back is sent if it still fires): (HTTP status, answer)."""
        mute = self.mutes.mutes.get(mute_id)
        if mute is None:
            return defer.succeed((404, {"error": "no mute %s in force (ended, or never made)"
                                                % mute_id}))
        mute.ends = min(mute.ends, self.engine.clock())
        self._end_mutes()
        self._schedule_mutes()
        return self._save_mutes().addCallbacks(
            lambda _: (200, mute.as_dict()),
            lambda f: (500, {"error": "ended, but cannot write %s (it ends again at a restart): %s"
                                      % (self.mutes.path, f.getErrorMessage())}))

    def _save_mutes(self) -> defer.Deferred:
        return self._mute_writer.run(replace_durably, self.mutes.path, self.mutes.text())

    def _end_mutes(self) -> list[Mute]:
        """The mutes past their end, taken out, and what they held back sent."""
        ended = self.mutes.ended(self.engine.clock())
        for mute in ended:
            sent = self.dispatcher.release(mute.id)
            log.info("mute %s ended (%s); %s it held back still %s", mute.id, clipped(mute.comment),
                     counted(sent, "alert"), "stands" if sent == 1 else "stand")
        if ended:
            self.engine.keeping_tags(self.mutes.names_tags())
            self._submit()  # a scaling decision the mute held is made again from the next tick
        return ended

    def _mute_timer(self) -> None:
        self._next_mute = None
        if self._end_mutes():
            self._save_mutes().addErrback(self._unwritten)
        self._schedule_mutes()

    def _schedule_mutes(self) -> None:
        if self._next_mute is not None and self._next_mute.active():
            self._next_mute.cancel()
        self._next_mute = None
        end = self.mutes.next_end()
        if end is not None and self.running:
            wait = min(max(0.0, end - self.engine.clock()), MUTE_CHECK)
            self._next_mute = self.reactor.callLater(wait, self._mute_timer)

    def mutes_page(self) -> dict:
        """``GET /mutes``: the mutes in force and to come, ending soonest first."""
        ordered = sorted(self.mutes.mutes.values(), key=lambda m: m.ends)
        return {"mutes": [m.as_dict() for m in ordered]}

    # -- reading ---------------------------------------------------------------------------------
    def alerts(self, details: bool = True) -> dict:
        """What /alerts serves and ``vmstats alerts`` prints: states, then the recent log.

        Per-VM states and the log name VMs: like /status's details, they need the status
        token (``details``); the counts by rule and state do not.
        """
        engine = self.engine
        page = {"rules": [{"name": r.name, "scope": r.scope, "metric": r.metric,
                           "actions": list(r.actions)} for r in self.ruleset.rules],
                "counts": counts_page(engine.state_counts()),
                "deliveries": deliveries_page(len(self.dispatcher.pending), self.dispatcher.counts),
                "series": engine.size, "series_refused": engine.refused}
        if details:
            page["states"] = engine.states(1000)
            if self.mutes.mutes:  # evaluated and shown as ever; notifications held back
                for row in page["states"]:
                    mute = self.mute_of(row["rule"], row["scope"])
                    if mute is not None:
                        row["muted"] = mute.id
            page["recent"] = list(self.log.recent)
            page["mutes"] = self.mutes_page()["mutes"]
        else:
            page["details"] = ("send 'Authorization: Bearer <token>' (--status-token) for the "
                               "per-VM states and the action log")
        return page

    def summary(self) -> str:
        """The exit summary's line: what the rules decided and what is still to deliver."""
        deliveries = deliveries_page(len(self.dispatcher.pending), self.dispatcher.counts)
        delivered, gave_up = deliveries["delivered"], deliveries["gave_up"]
        alarms = sum(n for (_r, state), n in self.engine.state_counts().items() if state == "alarm")
        dropped = ", %d dropped" % deliveries["dropped"] if deliveries["dropped"] else ""
        return ("%s, %s, %d in alarm; %s made, %d gave up%s, %d pending (sent at the next start)"
                % (counted(len(self.ruleset.rules), "rule"), counted(self.engine.transitions, "transition"),
                   alarms, counted(delivered, "delivery", "deliveries"), gave_up, dropped,
                   len(self.dispatcher.pending)))

    def families(self) -> list:
        """Prometheus families (name, kind, help, samples) for /metrics."""
        engine = self.engine
        counts = engine.state_counts()
        deliveries = [((("action", action), ("result", result)), n)
                      for (action, result), n in sorted(self.dispatcher.counts.items())]
        return [
            ("rule_scopes", "gauge", "Scopes (VMs, or the group) of each rule, by state.",
             [((("rule", rule), ("state", state)), n) for (rule, state), n in sorted(counts.items())]),
            ("rule_series", "gauge", "Rule scopes and group members held in memory (bounded).",
             [((), engine.size)]),
            ("rule_series_refused_total", "counter",
             "Scopes not tracked because the state bound (max_series) was reached.",
             [((), engine.refused)]),
            ("rule_transitions_total", "counter", "State transitions decided.",
             [((), engine.transitions)]),
            ("rule_evaluations_total", "counter", "Rule evaluations.", [((), engine.evaluations)]),
            ("rule_errors_total", "counter",
             "Rule evaluations that failed (logged; the other rules went on).",
             [((), engine.errors)]),
            ("rule_cpu_seconds_total", "counter",
             "CPU time of the rules' ticks (records to decisions) and sweeps (what time decides).",
             [((("kind", kind),), round(spent, 6)) for kind, spent in sorted(self.cpu_spent.items())]),
            ("rule_history_skipped_total", "counter",
             "Records too old for live rules (replays, spools), by VM per tick.",
             [((), engine.history_skipped)]),
            ("rule_deliveries_total", "counter",
             "Delivery outcomes, by action (dropped: the oldest past max_pending).", deliveries),
            ("rule_deliveries_pending", "gauge", "Deliveries logged and not yet successful.",
             [((), len(self.dispatcher.pending))]),
            ("rule_deliveries_waiting", "gauge",
             "Pending deliveries waiting for an earlier event of their alert to their action.",
             [((), self.dispatcher.turns.waiting())]),
            ("rule_log_syncs_total", "counter", "Batched fsyncs of the action log.",
             [((), self.log.syncs)]),
            ("rule_log_errors_total", "counter", "Action log writes that failed.",
             [((), self.log.errors)]),
            ("rule_log_compactions_total", "counter",
             "Rewrites of the action log down to the entries that replay to the same state.",
             [((), self.log.compactions)]),
            ("rule_mutes", "gauge", "Mutes in force or to come (not yet ended).",
             [((), len(self.mutes.mutes))]),
            ("rule_reloads_total", "counter", "Rules reloads, by outcome.",
             [((("result", "ok"),), self.reloads), ((("result", "refused"),), self.reload_failures)]),
        ]
