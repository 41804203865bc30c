"""The rules file: TOML in, checked rules out, every problem named at once.

An operator editing a rules file wants all of its mistakes in one pass, each
on its own line with where it is, rather than the first one and a stack
trace; so nothing here raises on the first problem: each check appends one
sentence to ``problems`` and ``load_rules`` raises ``RulesError`` with all of
them.  The same checks serve ``vmstats rules check``, ``serve --rules`` (the
server does not start with a bad file) and a SIGHUP reload (the old rules
stay).
"""

import fnmatch
import hashlib
import ipaddress
import json
import math
import re
from dataclasses import dataclass, field

from vmstats import inputfile
from vmstats.rules import metric as metrics
from vmstats.rules.grouping import ALIASES, Grouping
from vmstats.rules.notifiers import KINDS, Notifier
from vmstats.server.config import parse_duration
from vmstats.words import counted, part_of, plural

#: The states a scope can be in; a new scope starts in ``ok`` without notifying.
STATES = ("ok", "alarm", "insufficient-data", "silent")
#: What a period without a datapoint counts as.
MISSING_POLICIES = ("keep", "ok", "breaching", "insufficient")
SCOPES = ("vm", "group")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
#: ASCII: ``\d`` would take ``p\u0669\u0665`` as p95.
_AGGREGATE_RE = re.compile(r"(mean|max|min|count_above|p(\d{1,2}(?:\.\d+)?))\Z", re.ASCII)
#: The most periods an M-of-N window spans (CloudWatch's bound on evaluation periods): a
#: window sizes what a scope keeps and what an evaluation reads, so no operator's "N" is
#: allowed to be a number no one could mean.
MAX_PERIODS = 1440
#: The longest a window (periods x period) may span: a day of short periods, as CloudWatch
#: allows, and a week once a period is an hour or more.
MAX_WINDOW = 86400.0
MAX_WINDOW_LONG_PERIODS = 7 * 86400.0
#: The shortest first retry delay: a receiver that fails at once must not be hammered, each
#: attempt fsync'd, by a delay of 0 doubled to 0.
MIN_RETRY = 0.1
#: The smallest scaling target: below it ``value / target`` is no count anyone could mean, and
#: near the float's end it is inf.
MIN_TARGET = 1e-6


class RulesError(ValueError):
    """A rules file that cannot be used; ``problems`` holds one sentence per problem."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join("%s: %s" % (path, p) for p in problems))


@dataclass
class Match:
    """Which VMs a rule looks at: every condition given must hold (none given: every VM)."""

    ids: tuple[str, ...] = ()
    networks: tuple = ()
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        #: (version, network as an integer, mask as an integer): a membership test is one AND.
        self._nets = [(n.version, int(n.network_address), int(n.netmask)) for n in self.networks]

    def __call__(self, vm: str, tags: dict[str, str], address: tuple | None | bool = False) -> bool:
        """Does the scope take ``vm``?  ``address`` is ``parse_address(vm)`` when known."""
        if self.ids and not any(fnmatch.fnmatchcase(vm, pattern) for pattern in self.ids):
            return False
        if self._nets:
            if address is False:
                address = parse_address(vm)
            if address is None:
                return False
            version, number = address
            if not any(v == version and number & mask == net for v, net, mask in self._nets):
                return False
        for name, pattern in self.tags.items():
            value = tags.get(name)
            if value is None or not fnmatch.fnmatchcase(value, pattern):
                return False
        return True


def parse_address(vm: str) -> tuple[int, int] | None:
    """(IP version, address as an integer) of a VM id that is an address; None otherwise."""
    try:
        address = ipaddress.ip_address(vm)
    except ValueError:
        return None
    return address.version, int(address)


@dataclass
class Scale:
    """Target tracking for a group: keep the aggregate near ``target`` by changing the count."""

    target: float
    minimum: int = 1
    maximum: int = 100
    tolerance: float = 0.1
    out_cooldown: float = 300.0
    in_cooldown: float = 300.0
    hosts: tuple[str, ...] = ()


@dataclass
class Rule:
    """One checked rule; ``fingerprint`` identifies its definition across reloads."""

    name: str
    scope: str
    match: Match
    metric: str
    value_of: object  # metrics.Expression
    aggregate: str = "mean"
    level: float | None = None
    above: bool = True
    enter: float | None = None
    exit: float | None = None
    period: float = 60.0
    datapoints: int = 1
    periods: int = 1
    hold: float = 0.0
    missing: str = "keep"
    silent_after: float | None = None
    #: An alarm without data this long (missing = "keep", no silent_after) is insufficient-data.
    stale_after: float | None = None
    remind: float | None = None
    actions: tuple[str, ...] = ()
    scale: Scale | None = None
    fingerprint: str = ""
    #: The VMs' tags its alerts carry: those its grouped actions group by (``grouping.py``).
    labels: tuple[str, ...] = ()

    def describe(self) -> str:
        """One paragraph a person can check the rule against (``vmstats rules check``)."""
        who = "each VM" if self.scope == "vm" else "the group"
        if self.match.ids or self.match.networks or self.match.tags:
            parts = []
            if self.match.ids:
                parts.append("id like " + " or ".join(self.match.ids))
            if self.match.networks:
                parts.append("in " + " or ".join(str(n) for n in self.match.networks))
            parts += ["%s like %s" % kv for kv in sorted(self.match.tags.items())]
            who += " (%s)" % ", ".join(parts)
        else:
            who += " (every VM)"
        figure = self.metric
        if self.scope == "group":
            figure = "%s of %s over members" % (self.aggregate if self.aggregate != "count_above"
                                                 else "count above %g" % self.level, self.metric)
        lines = ["rule %s: %s, %s per %gs period" % (self.name, who, figure, self.period)]
        if self.enter is not None:
            word = "above" if self.above else "below"
            verb = plural(self.datapoints, "is", "are")  # "1 of 3 periods is", "2 of 3 are"
            lines.append("  alarm when %s %s %s %g; ok again when %d of %d %s "
                         "back past %g; at least %gs in a state before leaving it"
                         % (part_of(self.datapoints, self.periods, "period"), verb, word,
                            self.enter, self.datapoints, self.periods, verb, self.exit, self.hold))
            lines.append("  a period without data counts as: %s" % self.missing)
        if self.silent_after:
            lines.append("  silent after %gs without records from a VM that was reporting"
                         % self.silent_after)
        if self.stale_after:
            lines.append("  an alarm without data for %gs: insufficient-data" % self.stale_after)
        if self.remind:
            lines.append("  reminder every %gs while in alarm" % self.remind)
        if self.scale is not None:
            s = self.scale
            lines.append("  scaling: desired = ceil(members x value / %g) unless within %g%%, "
                         "clamped to %d..%d; cooldowns out %gs, in %gs (deferred, never dropped)"
                         % (s.target, 100 * s.tolerance, s.minimum, s.maximum, s.out_cooldown,
                            s.in_cooldown))
        lines.append("  actions: %s" % (", ".join(self.actions) or "none (state only)"))
        return "\n".join(lines)


@dataclass
class Settings:
    """File-wide settings: delivery, bounds and freshness."""

    retry_for: float = 86400.0
    #: The first retry's delay, doubled each time up to retry_max.
    retry_min: float = 1.0
    retry_max: float = 300.0
    max_series: int = 200_000
    #: Records stamped further back than this are history (replays, spools), not live data.
    max_age: float = 300.0
    log_max_bytes: int = 64 << 20
    #: Deliveries waiting for a receiver, at most: past it the oldest are dropped (counted,
    #: logged), so a receiver down while a fleet fires holds memory to this, not the fleet's
    #: every event for ``retry_for``.  It keeps 10,000 VMs going silent and back with two
    #: actions each (40,000) in about 60 MB (1.3 KB a delivery, its send under way included).
    max_pending: int = 50_000


@dataclass
class RuleSet:
    rules: list[Rule]
    actions: dict[str, Notifier]
    settings: Settings

    def doubts(self) -> list[str]:
        """What may stop its actions on this machine (``Notifier.doubts``), by action name."""
        return [doubt for _name, action in sorted(self.actions.items()) for doubt in action.doubts()]


class _Reader:
    """Typed access to one TOML table, appending one sentence per problem."""

    def __init__(self, where: str, table: dict, problems: list[str]):
        self.where = where
        self.table = table
        self.problems = problems
        self.used: set[str] = set()

    def problem(self, key: str, text: str) -> None:
        self.problems.append("%s: %s: %s" % (self.where, key, text))

    def get(self, key: str, default=None):
        self.used.add(key)
        return self.table.get(key, default)

    def number(self, key: str, default=None, minimum: float | None = None, integer: bool = False):
        value = self.get(key, default)
        if value is None or value is default:
            return value
        kinds = (int,) if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            self.problem(key, "expected %s, got %r" % ("a whole number" if integer else "a number",
                                                       value))
            return default
        if not math.isfinite(value):  # TOML spells inf and nan: a threshold neither can cross
            self.problem(key, "expected a finite number, got %r" % value)
            return default
        if minimum is not None and value < minimum:
            self.problem(key, "must be at least %g, got %r" % (minimum, value))
            return default
        return value

    def duration(self, key: str, default=None):
        value = self.get(key, default)
        if value is None or value is default:
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                seconds = parse_duration(value)
            except ValueError as exc:
                self.problem(key, str(exc))
                return default
        else:
            self.problem(key, "expected a duration like 90s, 5m or 1h, got %r" % (value,))
            return default
        if not math.isfinite(seconds):  # a period or hold of inf never ends; nan never compares
            self.problem(key, "expected a finite duration, got %r" % (value,))
            return default
        if seconds < 0:
            self.problem(key, "must not be negative")
            return default
        return seconds

    def text(self, key: str, default=None, choices=None):
        value = self.get(key, default)
        if value is None or value is default:
            return value
        if not isinstance(value, str):
            self.problem(key, "expected text, got %r" % (value,))
            return default
        if choices is not None and value not in choices:
            self.problem(key, "%r is not one of %s" % (value, ", ".join(choices)))
            return default
        return value

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(key, "expected text or a list of texts, got %r" % (value,))
            return ()
        return tuple(value)

    def unknown(self, allowed=None) -> None:
        for key in sorted(set(self.table) - (allowed or self.used)):
            self.problem(key, "unknown setting (a typo?)")


#: A rules file without any ``rule`` key: refused, at check, start and reload alike.
NO_RULES = ("no [[rule]] in the file (empty, or only comments, settings and actions): "
            "to run without rules on purpose, write rule = []")


def load_rules(path: str) -> RuleSet:
    """Read and check a rules file; RulesError lists every problem found."""
    try:
        raw = inputfile.read_bytes(path)
    except inputfile.FileProblem as exc:
        raise RulesError(path, [exc.problem]) from None
    return read_rules(raw, path)


def read_rules(raw: bytes, path: str) -> RuleSet:
    """Check the rules file's bytes, read from ``path``; RulesError lists every problem found.

    Apart from load_rules for ``vmstats rules check``, which tells a file it cannot
    read (the command line is wrong) from one it read and found problems in (its verdict).
    """
    try:
        data = inputfile.parse_toml(raw, path)
    except inputfile.FileProblem as exc:
        raise RulesError(path, [exc.problem]) from None
    if "rule" not in data:
        # An empty file (an editor's save cut short, a config tool's template that rendered
        # nothing) read as "no rules" resolved every alert at the next SIGHUP and watched
        # nothing from then on, without a word: no rule is said in so many words.
        try:
            parse_rules(data, path)
        except RulesError as exc:  # its other problems are said too
            raise RulesError(path, exc.problems + [NO_RULES]) from None
        raise RulesError(path, [NO_RULES])
    return parse_rules(data, path)


def parse_rules(data: dict, path: str = "rules") -> RuleSet:
    problems: list[str] = []
    for key in sorted(set(data) - {"settings", "action", "rule"}):
        problems.append("%s: unknown section (expected [settings], [action.NAME], [[rule]])" % key)
    settings = _settings(data.get("settings", {}), problems)
    actions: dict[str, Notifier] = {}
    action_tables = data.get("action", {})
    if not isinstance(action_tables, dict):
        problems.append("action: expected tables [action.NAME]")
        action_tables = {}
    for name, table in action_tables.items():
        notifier = _action(name, table, problems)
        if notifier is not None:
            actions[name] = notifier
    rule_tables = data.get("rule", [])
    if not isinstance(rule_tables, list):
        problems.append("rule: expected [[rule]] entries")
        rule_tables = []
    rules: list[Rule] = []
    seen: set[str] = set()
    for number, table in enumerate(rule_tables, 1):
        rule = _rule(number, table, set(action_tables), problems)
        if rule is None:
            continue
        if rule.name in seen:
            problems.append("rule %s: the name is used by an earlier rule" % rule.name)
            continue
        seen.add(rule.name)
        rule.labels = tuple(sorted({tag for action in rule.actions if action in actions
                                    and actions[action].grouping is not None
                                    for tag in actions[action].grouping.tags}))
        rules.append(rule)
    if problems:
        raise RulesError(path, problems)
    return RuleSet(rules, actions, settings)


def _action(name: str, table, problems: list[str]) -> Notifier | None:
    """One ``[action.NAME]`` table's notifier, or None with its problems appended."""
    where = "action %s" % name
    if not _NAME_RE.match(name):
        problems.append("%s: a name is 1-64 letters, digits, '_', '.' or '-'" % where)
    if not isinstance(table, dict):
        problems.append("%s: expected a table" % where)
        return None
    reader = _Reader(where, table, problems)
    kind = reader.text("kind", choices=sorted(KINDS))
    if kind is None:
        if "kind" not in table:
            reader.problem("kind", "missing (one of %s)" % ", ".join(sorted(KINDS)))
        return None
    notifier = KINDS[kind].from_config(name, reader)
    grouping = _grouping(reader, KINDS[kind])
    reader.unknown()
    if notifier is not None:
        notifier.grouping = grouping
        notifier.table = table
    return notifier


def retired_action(name: str, table) -> tuple[Notifier | None, list[str]]:
    """An action no longer in the file, rebuilt at start from the table the action log kept of
    it (``delivery.Dispatcher.revive``), or None and why not."""
    problems: list[str] = []
    notifier = _action(name, table, problems)
    return (None if problems else notifier), problems


#: An action's grouping keys, read by ``_grouping``.
GROUPING_KEYS = ("group_by", "group_wait", "group_interval", "repeat_interval", "max_alerts")


def _grouping(reader: _Reader, kind) -> Grouping | None:
    """An action's ``group_by`` and timers; None (each event its own notification, at once)
    without ``group_by``."""
    given = [key for key in GROUPING_KEYS if key in reader.table]
    if not given:
        return None
    reader.used.update(given)  # refused below is one problem, not "unknown" too
    if not kind.groups:
        reader.problem(given[0], "a %s action takes one event at a time: only %s actions group "
                                 "alerts" % (kind.kind, " and ".join(sorted(
                                     name for name, other in KINDS.items() if other.groups))))
        return None
    if "group_by" not in reader.table:
        reader.problem(given[0], "only with group_by (without it each event is sent on its own, "
                                 "at once)")
        return None
    by = reader.get("group_by")
    if not isinstance(by, list) or not all(isinstance(name, str) and name for name in by):
        reader.problem("group_by", "expected a list of label names, e.g. [\"alertname\", \"host\"] "
                                   "([] puts every alert in one group), got %r" % (by,))
        return None
    d = Grouping(by=())
    wait = reader.duration("group_wait", d.wait)
    interval = reader.duration("group_interval", d.interval)
    repeat = reader.duration("repeat_interval", d.repeat)
    if interval is not None and interval <= 0:
        reader.problem("group_interval", "must be more than 0 (the least time between two "
                                         "notifications of a group)")
    if repeat is not None and interval and 0 < repeat < interval:
        reader.problem("repeat_interval", "must be at least group_interval (%gs), got %gs"
                       % (interval, repeat))
    max_alerts = reader.number("max_alerts", 0, minimum=0, integer=True)
    names = tuple(dict.fromkeys(ALIASES.get(name, name) for name in by))
    return Grouping(by=names, wait=wait, interval=interval, repeat=repeat or None,
                    max_alerts=max_alerts or 0)


def _settings(table, problems: list[str]) -> Settings:
    if not isinstance(table, dict):
        problems.append("settings: expected a table")
        return Settings()
    reader = _Reader("settings", table, problems)
    d = Settings()
    settings = Settings(
        retry_for=reader.duration("retry_for", d.retry_for),
        retry_min=reader.duration("retry_min", d.retry_min),
        retry_max=reader.duration("retry_max", d.retry_max),
        max_series=reader.number("max_series", d.max_series, minimum=1, integer=True),
        max_age=reader.duration("max_age", d.max_age),
        log_max_bytes=reader.number("log_max_bytes", d.log_max_bytes, minimum=4096, integer=True),
        max_pending=reader.number("max_pending", d.max_pending, minimum=1, integer=True))
    if settings.retry_min is not None and settings.retry_min < MIN_RETRY:
        reader.problem("retry_min", "must be at least %gs (each attempt is written and synced "
                                    "to the action log), got %gs" % (MIN_RETRY, settings.retry_min))
    elif settings.retry_max < settings.retry_min:
        reader.problem("retry_max", "must be at least retry_min (%gs), got %gs"
                       % (settings.retry_min, settings.retry_max))
    reader.unknown()
    return settings


def _rule(number: int, table, action_names: set[str], problems: list[str]) -> Rule | None:
    if not isinstance(table, dict):
        problems.append("rule #%d: expected a table" % number)
        return None
    name = table.get("name")
    where = "rule %s" % name if isinstance(name, str) and name else "rule #%d" % number
    reader = _Reader(where, table, problems)
    before = len(problems)
    name = reader.text("name")
    if name is None:
        if "name" not in table:
            reader.problem("name", "missing")
    elif not _NAME_RE.match(name):
        reader.problem("name", "1-64 letters, digits, '_', '.' or '-'")
    scope = reader.text("scope", "vm", choices=SCOPES)
    match = _match(reader)
    metric = reader.text("metric")
    value_of = None
    if metric is None:
        if "metric" not in table:
            reader.problem("metric", "missing (e.g. cpu, mem, disk, net, or max(cpu, mem))")
    else:
        try:
            value_of = metrics.compile_metric(metric)
        except ValueError as exc:
            reader.problem("metric", str(exc))
    aggregate = reader.text("aggregate", "mean")
    level = reader.number("level")
    if aggregate is not None:
        if not _AGGREGATE_RE.match(aggregate) or (aggregate.startswith("p")
                                                  and not 0 < float(aggregate[1:]) <= 100):
            reader.problem("aggregate", "%r is not mean, max, min, count_above or pNN "
                                        "(a percentile such as p95)" % aggregate)
        elif scope == "vm" and "aggregate" in table:
            reader.problem("aggregate", "only a group rule aggregates over members")
        elif aggregate == "count_above" and level is None:
            reader.problem("level", "count_above needs the level members are counted above")
    direction = reader.text("direction", "above", choices=("above", "below"))
    enter = reader.number("enter")
    exit_ = reader.number("exit", enter)
    period = reader.duration("period", 60.0)
    if period is not None and period <= 0:
        reader.problem("period", "must be more than 0")
    datapoints = reader.number("datapoints", 1, minimum=1, integer=True)
    periods = reader.number("periods", datapoints, minimum=1, integer=True)
    if isinstance(periods, int) and periods > MAX_PERIODS:
        reader.problem("periods", "%d is more than the %d a window may span" % (periods, MAX_PERIODS))
        periods = None
    if isinstance(periods, int) and isinstance(period, float) and period > 0:
        longest = MAX_WINDOW if period < 3600 else MAX_WINDOW_LONG_PERIODS
        if periods * period > longest:
            reader.problem("periods", "%s of %gs span %gs, more than the %gs a window may span"
                           % (counted(periods, "period"), period, periods * period, longest))
    if isinstance(datapoints, int) and isinstance(periods, int) and datapoints > periods:
        reader.problem("datapoints", "%s cannot happen: datapoints must be at most "
                                     "periods" % part_of(datapoints, periods, "period"))
    hold = reader.duration("hold", 0.0)
    missing = reader.text("missing", "keep", choices=MISSING_POLICIES)
    silent_after = reader.duration("silent_after")
    if silent_after is not None and scope != "vm":
        reader.problem("silent_after", "only a per-VM rule has VMs that go silent "
                                       "(a group counts its reporting members)")
    stale_after = _stale_after(reader, missing, silent_after, period, periods)
    remind = reader.duration("remind")
    actions = reader.texts("actions")
    for action in actions:
        if action not in action_names:
            reader.problem("actions", "no [action.%s] in this file" % action)
    scale = _scale(reader, scope)
    # Given but refused, each of them is a problem of its own already: not "missing" too.
    if not any(key in table for key in ("enter", "scale", "silent_after")):
        reader.problem("enter", "missing: a rule needs an enter threshold, a [rule.scale] "
                                "target or silent_after")
    if enter is not None and exit_ is not None and direction is not None:
        if (exit_ > enter) if direction == "above" else (exit_ < enter):
            reader.problem("exit", "the exit threshold %g is past the enter threshold %g: it must "
                                   "be %s it" % (exit_, enter, "at or below" if direction == "above"
                                                 else "at or above"))
    reader.unknown()
    if len(problems) > before:
        return None
    fingerprint = hashlib.sha256(json.dumps(table, sort_keys=True, default=str)
                                 .encode("utf-8")).hexdigest()[:16]
    return Rule(name=name, scope=scope, match=match, metric=metric, value_of=value_of,
                aggregate=aggregate, level=level, above=direction == "above", enter=enter,
                exit=exit_, period=period, datapoints=datapoints, periods=periods, hold=hold,
                missing=missing, silent_after=silent_after or None, stale_after=stale_after,
                remind=remind or None,
                actions=actions, scale=scale, fingerprint=fingerprint)


#: ``stale_after`` at least, by default: Alertmanager's ``resolve_timeout``.
STALE_MIN = 300.0


def _stale_after(reader: _Reader, missing, silent_after, period, periods) -> float | None:
    """How long an alarm lasts without data before it is insufficient-data (None: never).

    With ``missing = "keep"`` a VM deleted (or a pool drained) while in alarm kept its alarm
    for ever, reminded of it every ``remind``.  The other ways to handle missing data already
    say what a quiet scope becomes (``ok``, ``breaching``: the operator's own choice, as for a
    heartbeat, ``insufficient``), and so does ``silent_after``: for those it is a problem.  By
    default the rule's window, and at least ``STALE_MIN``: by then the window holds nothing.
    """
    given = reader.duration("stale_after")
    if "stale_after" in reader.table and given is not None:
        if given <= 0:
            reader.problem("stale_after", "must be more than 0")
        elif missing != "keep":
            reader.problem("stale_after", "missing = %r already says what a period without "
                                          "data counts as" % missing)
        elif silent_after:
            reader.problem("stale_after", "a VM that stops reporting goes silent "
                                          "(silent_after)")
        return given
    if missing != "keep" or silent_after or not isinstance(period, float) or not isinstance(
            periods, int):
        return None
    return max(STALE_MIN, period * periods)


def _match(reader: _Reader) -> Match:
    table = reader.get("match", {})
    if not isinstance(table, dict):
        reader.problem("match", "expected a table such as { id = \"web-*\" }")
        return Match()
    sub = _Reader(reader.where + ": match", table, reader.problems)
    ids = sub.texts("id")
    networks = []
    for text in sub.texts("cidr"):
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            sub.problem("cidr", str(exc))
    tags = sub.get("tags", {})
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        sub.problem("tags", "expected a table of tag = \"glob\", e.g. { host = \"rack1-*\" }")
        tags = {}
    sub.unknown()
    return Match(ids=ids, networks=tuple(networks), tags=dict(tags))


def _scale(reader: _Reader, scope: str) -> Scale | None:
    table = reader.get("scale")
    if table is None:
        return None
    if not isinstance(table, dict):
        reader.problem("scale", "expected a table [rule.scale] with a target")
        return None
    if scope != "group":
        reader.problem("scale", "only a group rule can scale (set scope = \"group\")")
    sub = _Reader(reader.where + ": scale", table, reader.problems)
    before = len(reader.problems)
    target = sub.number("target")
    if target is None and "target" not in table:
        sub.problem("target", "missing (the level to keep the group's figure at)")
    elif target is not None and target < MIN_TARGET:
        sub.problem("target", "must be at least %g (members x value / target must stay a "
                              "count), got %r" % (MIN_TARGET, target))
    d = Scale(target=1.0)
    minimum = sub.number("min", d.minimum, minimum=0, integer=True)
    maximum = sub.number("max", d.maximum, minimum=1, integer=True)
    if isinstance(minimum, int) and isinstance(maximum, int) and minimum > maximum:
        sub.problem("min", "min %d is above max %d" % (minimum, maximum))
    tolerance = sub.number("tolerance", d.tolerance, minimum=0)
    out_cooldown = sub.duration("out_cooldown", d.out_cooldown)
    in_cooldown = sub.duration("in_cooldown", d.in_cooldown)
    hosts = sub.texts("hosts")
    sub.unknown()
    if len(reader.problems) > before:
        return None
    return Scale(target=float(target), minimum=minimum, maximum=maximum, tolerance=tolerance,
                 out_cooldown=out_cooldown, in_cooldown=in_cooldown, hosts=hosts)
