"""Mutes: planned maintenance without pages.  Alertmanager's silences, for the rules.

A mute names what it covers the way a rule names its VMs (``match``: ids,
networks, tags such as ``host``; the same ``config.Match``) and which rules
(names or globs, matched as ``selectors.selected`` matches VM ids), from a
start to an end, with who made it and why.  While a mute covers an alert the
rules still evaluate it and /alerts shows it, but its notifications are not
sent and its scaling decisions are not acted on: the action log says each was
muted, and by which mute.  When the mute ends, an alert it held back that
stands other than its receivers last heard (still firing, most often) is
notified then, once, as Alertmanager does (``delivery.py``).

This module holds the mute itself (its checks, one readable line for a
refusal), what it covers, and the file the mutes persist in beside the action
log (``DATA_DIR/rules/mutes.json``, replaced whole and fsync'd, so a crash
leaves the old set or the new one).  The check runs when an event is delivered
or a scaling decision would be acted on, and when the figure of a group whose
members a mute names is made (they are left out of it), never per record.
"""

import json
import logging
import math
import os
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import MappingProxyType

from vmstats import inputfile, selectors
from vmstats.rules.config import Match, _match, _Reader
from vmstats.server.ownfiles import check_file, read_file
from vmstats.stamps import moment

log = logging.getLogger(__name__)

FILE_NAME = "mutes.json"
#: Mutes in force at once, at most: each delivery and scaling decision is checked against them.
MAX_MUTES = 1000
#: Selectors (rule names and globs, id globs, cidrs, tags) of all the mutes not yet ended, at
#: most: what checks try one by one.  Each check of an alert tries those of the mutes not named
#: by exact id or rule name (the index's others) one by one, on the reactor: 100 mutes of 1,000
#: id globs each (13 KB bodies, well inside the limits above) held it 14 s for a few alerts,
#: records and /metrics waiting, and past fnmatch's cache of 32,768 compiled globs every check
#: compiles each glob again.  A check of 2,000 takes about a millisecond.  The ids of a mute
#: naming VMs by plain ids only are looked up, not tried (``Mute.plain_ids``): MAX_PLAIN_IDS.
MAX_SELECTORS = 2000
#: VM ids named plainly by all the mutes not yet ended, at most: a check costs the same
#: however many, but each is held in the index, made again (on the reactor) at each change of
#: the mutes, and written in the file replaced whole at each: 20,000 cost 10 ms and 8 ms, and
#: the file 345 KB.  Unbounded, 1,000 mutes of 16 KB bodies named 1.4 million.
MAX_PLAIN_IDS = 20000
#: The longest a selector may be: a VM id and a rule's name are at most 64 characters, and a
#: glob of 16 KB (``*a*a*a...``) took 70 ms to compile and held 0.45 MB in fnmatch's cache.
MAX_SELECTOR = 256
#: The longest an author or a comment may be (they are listed one mute a line).
MAX_AUTHOR = 100
MAX_COMMENT = 1000
#: What is said of a text holding what the one-line listing (``vmstats rules mutes``) cannot
#: show as it is: a control character (a line break), a line or paragraph separator (U+2028),
#: a format character (U+202E turns the rest of the line around) or half a surrogate pair,
#: which no terminal's encoding can write: taken, it ended every listing in a traceback.
UNPRINTABLE = ("holds a character that is not printable (a line break, a control or format "
               "character, or half a surrogate pair)")
#: What the server's log says of a mute it adds: the first few selectors of each kind (the
#: others counted), each, and the comment, cut at a length.  Logged whole, a mute naming 2,000
#: ids was one line of 16 KB; ``GET /mutes`` and ``vmstats rules mutes`` give it whole.
LOGGED_SELECTORS = 3
LOGGED_SELECTOR = 64
LOGGED_TEXT = 80
#: A time given as seconds since 1970 on a command line.
_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]+)?\Z")
#: The last second a mute's time may be (9999-12-31T23:59:59Z, ISO 8601's last four-digit
#: year): every time of a mute is written as a time of day in answers, listings and its file,
#: and 1e300 has none -- taken, it was in force but could be neither listed nor saved.
LATEST = 253402300799.0
#: The keys of a mute as the API takes it.
KEYS = ("match", "rule", "starts", "ends", "duration", "author", "comment")


class MuteError(ValueError):
    """A mute refused: the message is one line naming every problem."""


@dataclass
class Mute:
    """One mute: what it covers, from ``starts`` to ``ends`` (times of day), who and why."""

    id: str
    match: Match
    rules: tuple[str, ...]
    starts: float
    ends: float
    author: str
    comment: str
    created: float
    #: The matchers as given (``match``'s table), listed back as they were written.
    given: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        #: The VM ids it names when each is a plain name (no ``*``, ``?`` or ``[``): a check
        #: looks the VM up in them rather than trying each as a glob (a mute of 1,000 ids
        #: tried 1,000 globs for each alert of its VMs); ``_rest``: what else it names.
        self.plain_ids: frozenset[str] | None = frozenset(self.match.ids) \
            if _exact(self.match.ids) else None
        self._rest = self.match if self.plain_ids is None else \
            Match((), self.match.networks, self.match.tags)

    @property
    def selectors(self) -> int:
        """How many rule names and globs, id globs, networks and tags it names: what a check of
        an alert it may cover tries one by one (VM ids named plainly are looked up: ``plain``)."""
        m = self.match
        return len(self.rules) + (0 if self.plain_ids is not None else len(m.ids)) + \
            len(m.networks) + len(m.tags)

    @property
    def plain(self) -> int:
        """How many VM ids it names plainly (``plain_ids``): each is held in the look-up index."""
        return 0 if self.plain_ids is None else len(self.match.ids)

    @property
    def names_vms(self) -> bool:
        """Does it name VMs (ids, networks or tags)?  Then it covers VMs' alerts, not groups'."""
        m = self.match
        return bool(m.ids or m.networks or m.tags)

    def active(self, now: float) -> bool:
        return self.starts <= now < self.ends

    def covers(self, rule: str, scope: str, tags: dict[str, str] | None) -> bool:
        """Does it cover the alert of ``rule`` about ``scope`` (a VM, or ``"group"``)?

        ``tags``: the VM's tags as last seen (None: unknown, so a mute naming tags does
        not cover it: a page too many rather than one missed).
        """
        if self.rules and not selectors.selected(rule, self.rules, []):
            return False
        if not self.names_vms:
            return True
        if scope == "group":  # a group's figure and scaling are its rule's: name the rule
            return False
        if self.match.tags and tags is None:
            return False
        if self.plain_ids is not None and scope not in self.plain_ids:
            return False
        return self._rest(scope, tags or {})

    def as_dict(self) -> dict:
        """The mute as the API answers it and the file holds it."""
        return {"id": self.id, "match": self.given, "rule": list(self.rules),
                "starts": self.starts, "ends": self.ends, "author": self.author,
                "comment": self.comment, "created": self.created,
                "starts_at": moment(self.starts), "ends_at": moment(self.ends)}

    def describe(self) -> str:
        return describe(self.as_dict())

    def brief(self) -> str:
        """The server log's line for it: ``describe``'s, bounded (LOGGED_SELECTORS)."""
        return describe(self.as_dict(), LOGGED_SELECTORS)


def clipped(text: str, longest: int = LOGGED_TEXT) -> str:
    """``text``, cut to ``longest`` characters (``...`` says where)."""
    return text if len(text) <= longest else text[:longest - 3] + "..."


def describe(entry: dict, most: int | None = None) -> str:
    """One line for a mute (``as_dict``'s form): ``vmstats rules mutes`` (whole) and the
    server's log (``most``: that many selectors of each kind named, each and the author and
    comment cut, the rest counted, so that the line stays short whatever the mute names)."""
    def named(word: str, given: list[str]) -> str:
        if most is None:
            return word + " " + " or ".join(given)
        shown = " or ".join(clipped(text, LOGGED_SELECTOR) for text in given[:most])
        return word + " " + shown + (" or %d more" % (len(given) - most) if len(given) > most else "")

    what = []
    if entry.get("rule"):
        what.append(named("rule", entry["rule"]))
    match = entry.get("match") or {}
    for key, word in (("id", "id"), ("cidr", "in")):
        if match.get(key):
            given = match[key]
            what.append(named(word, [given] if isinstance(given, str) else given))
    tags = ["%s %s" % kv for kv in sorted((match.get("tags") or {}).items())]
    if most is not None and len(tags) > most:
        tags = [clipped(tag, 2 * LOGGED_SELECTOR) for tag in tags[:most]] + [
            "%d more tags" % (len(tags) - most)]
    what += tags
    author, comment = entry["author"], entry["comment"]
    if most is not None:
        author, comment = clipped(author), clipped(comment)
    return "%s  %s .. %s  %s  by %s: %s" % (entry["id"], moment(entry["starts"]), moment(entry["ends"]),
                                             ", ".join(what), author, comment)


def parse_time(value, what: str, problems: list[str]) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 time (``2026-12-06T04:00:00Z``;
    without a zone, UTC)."""
    at = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value):
            at = float(value)
    elif isinstance(value, str) and _SECONDS.match(value.strip()):
        at = float(value)
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            try:
                at = when.timestamp()
            except OverflowError:  # year 1 less a zone's hours is before year 1
                pass
    if at is None:
        problems.append("%s: %r is not a time (seconds since 1970, or ISO 8601 such as "
                        "2026-12-06T04:00:00Z)" % (what, value))
    elif not 0 <= at <= LATEST:
        problems.append("%s: %r is not between 1970 and the end of 9999" % (what, value))
        at = None
    return at


def _text(reader: _Reader, key: str, longest: int) -> str | None:
    value = reader.text(key)
    if value is None:
        if key not in reader.table:
            reader.problems.append("%s: missing (%s)" % (key, "who makes the mute" if key == "author"
                                                         else "why: the maintenance it is for"))
        return None
    value = value.strip()
    if not value:
        reader.problems.append("%s: empty" % key)
    elif len(value) > longest:
        reader.problems.append("%s: longer than %d characters" % (key, longest))
    elif not value.isprintable():
        reader.problems.append("%s: %s" % (key, UNPRINTABLE))
    else:
        return value
    return None


def parse_mute(data, now: float, mute_id: str | None = None, created: float | None = None) -> Mute:
    """Check a mute as the API or the command line gives it; MuteError in one line otherwise.

    Refused: no end (neither ``ends`` nor ``duration``), an end in the past or not after the
    start, no matcher at all, or only empty ones (a mute of everything says ``rule = "*"``),
    a selector longer than MAX_SELECTOR, unknown keys.
    """
    if not isinstance(data, dict):
        raise MuteError("a mute is a JSON object such as {\"rule\": \"hot\", \"duration\": \"2h\", "
                        "\"author\": \"ana\", \"comment\": \"kernel updates\"}")
    problems: list[str] = []
    reader = _Reader("mute", data, problems)
    match = _match(reader)
    rules = reader.texts("rule")
    for name in rules:
        if not name:
            problems.append("rule: an empty name")
    named = [("rule", name) for name in rules] + [("match: id", glob) for glob in match.ids] + [
        ("match: tags", text) for pair in match.tags.items() for text in pair]
    for key, text in named:
        if len(text) > MAX_SELECTOR:
            problems.append("%s: %r... is longer than %d characters" % (key, text[:20], MAX_SELECTOR))
            break
        if not text.isprintable():
            problems.append("%s: %r %s" % (key, text[:20], UNPRINTABLE))
            break
    starts = now if data.get("starts") is None else parse_time(reader.get("starts"), "starts", problems)
    ends = None
    duration = reader.duration("duration")
    if "ends" in data:
        ends = parse_time(reader.get("ends"), "ends", problems)
        if "duration" in data:
            problems.append("ends and duration: give one (the end, or how long from the start)")
    elif duration is not None:
        if duration <= 0:
            problems.append("duration: must be more than 0")
        elif starts is not None:
            ends = starts + duration
            if ends > LATEST:  # a number of seconds is not bounded as 36500d is
                problems.append("duration: %r from the start ends after 9999" % (duration,))
    elif data.get("duration") is None:  # missing, or null: a mute with no end at all
        problems.append("no end: a mute needs ends (a time) or duration (such as 2h); one that "
                        "never ends would hide every page it covers for good")
    author = _text(reader, "author", MAX_AUTHOR)
    comment = _text(reader, "comment", MAX_COMMENT)
    reader.unknown(set(KEYS))
    if ends is not None and starts is not None and not problems:
        if ends <= now:
            problems.append("ends %s is in the past (now %s)" % (moment(ends), moment(now)))
        elif ends <= starts:
            problems.append("ends %s is not after starts %s" % (moment(ends), moment(starts)))
    given = {key: value for key, value in (data.get("match") or {}).items()} \
        if isinstance(data.get("match"), dict) else {}
    # What the matchers name, not the keys given: {"match": {"id": []}} or {"tags": {}} names
    # nothing, and a mute of no rule and no VM covers every rule's alerts and scaling.
    if not problems and not rules and not (match.ids or match.networks or match.tags):
        problems.append("no matcher: name a rule (rule; \"*\" for every rule) or VMs (match: id, "
                        "cidr, tags such as host)")
    if problems:
        raise MuteError("; ".join(p.removeprefix("mute: ") for p in problems))
    return Mute(id=mute_id or uuid.uuid4().hex[:12], match=match, rules=rules, starts=starts,
                ends=ends, author=author, comment=comment,
                created=now if created is None else created, given=given)


def _exact(patterns) -> bool:
    """Are all of ``patterns`` plain names (no ``*``, ``?`` or ``[``)?  A glob without them
    matches only itself (``fnmatchcase``), so such a mute is looked up by name."""
    return bool(patterns) and not any(c in p for p in patterns for c in "*?[")


class _Index:
    """The mutes by what an alert must be for them to cover it, so that a check tries only the
    mutes that can: those naming its VM by exact id, those naming its rule by exact name, and
    the rest (globs, networks or tags alone).  1,000 single-VM mutes made each check of an
    alert try all 1,000 (``/alerts`` of 1,000 rows held the reactor 1-2 s).  ``order`` keeps
    the mutes' order in the set: of several ending last, the first covers, as ever.

    The mutes naming VMs are kept by rule as well (``naming_by_rule``: those naming rules by
    exact name; ``naming_any``: those naming no rule or globs), for a group rule's members:
    1,000 single-VM mutes of another rule were each tried for each group's figure and row."""

    def __init__(self, mutes: Mapping[str, Mute]):
        self.by_id: dict[str, list[Mute]] = {}
        self.by_rule: dict[str, list[Mute]] = {}
        self.others: list[Mute] = []
        self.order: dict[str, int] = {}
        self.naming_by_rule: dict[str, list[Mute]] = {}
        self.naming_any: list[Mute] = []
        for place, mute in enumerate(mutes.values()):
            self.order[mute.id] = place
            if mute.names_vms:
                if _exact(mute.rules):
                    for name in set(mute.rules):
                        self.naming_by_rule.setdefault(name, []).append(mute)
                else:
                    self.naming_any.append(mute)
            if mute.plain_ids is not None:  # it covers only these VMs' alerts (and no group's)
                for vm in set(mute.match.ids):
                    self.by_id.setdefault(vm, []).append(mute)
            elif _exact(mute.rules):
                for name in set(mute.rules):
                    self.by_rule.setdefault(name, []).append(mute)
            else:
                self.others.append(mute)

    def candidates(self, rule: str, scope: str) -> list[Mute]:
        """The mutes that may cover the alert of ``rule`` about ``scope``; each once."""
        return self.by_id.get(scope, []) + self.by_rule.get(rule, []) + self.others


def request_of(mute: Mute) -> dict:
    """The API's form of a mute (what ``parse_mute`` reads back to the same mute)."""
    out = {"starts": mute.starts, "ends": mute.ends, "author": mute.author, "comment": mute.comment}
    if mute.rules:
        out["rule"] = list(mute.rules)
    if mute.given:
        out["match"] = mute.given
    return out


class MuteSet:
    """The mutes in force (and those to come), the file they persist in, and the checks."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, FILE_NAME)
        self._mutes: dict[str, Mute] = {}
        #: The mutes by id, to read: they change only through ``add``, ``remove`` and
        #: ``ended``, which keep the index in step.
        self.mutes: Mapping[str, Mute] = MappingProxyType(self._mutes)
        self._index: _Index | None = None

    def add(self, mute: Mute) -> None:
        self._mutes[mute.id] = mute
        self._index = None

    def remove(self, mute_id: str) -> None:
        self._mutes.pop(mute_id, None)
        self._index = None

    def index(self) -> _Index:
        """The look-up index, made again after a change (a /alerts page of 1,000 rows uses one)."""
        if self._index is None:
            self._index = _Index(self._mutes)
        return self._index

    def load(self, now: float) -> list[str]:
        """Read the file (at start); mutes that ended meanwhile are dropped.  Returns the ids
        of those dropped.  An entry the file holds that is no mute is skipped, said once."""
        check_file(self.path, "rules mutes file")
        raw = read_file(self.path, "rules mutes file")
        if not raw:
            return []
        try:
            entries = inputfile.json_loads(raw)["mutes"]
            if not isinstance(entries, list):
                raise TypeError("mutes is not a list")
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("%s: not a mutes file (%s): no mute from it is in force", self.path, exc)
            return []
        ended, bad = [], []
        for entry in entries:
            try:
                mute = parse_mute(request_of_entry(entry), entry["starts"], entry["id"],
                                  entry["created"])
            except (MuteError, KeyError, TypeError) as exc:
                bad.append(str(exc))
                continue
            if mute.ends <= now:
                ended.append(mute.id)
            else:
                self.add(mute)
        if bad:
            log.warning("%s: %d entries skipped, not mutes (the first: %s)", self.path, len(bad),
                        bad[0])
        return ended

    def text(self) -> bytes:
        """What the file holds: every mute not yet ended."""
        return (json.dumps({"mutes": [m.as_dict() for m in self.mutes.values()]}, indent=1,
                           sort_keys=True) + "\n").encode("utf-8")

    def covering(self, rule: str, scope: str, tags: dict[str, str] | None,
                 now: float) -> Mute | None:
        """The mute in force covering the alert, the one ending last if several do (of
        those, the first in the set)."""
        index = self.index()
        found = None
        for mute in index.candidates(rule, scope):
            if mute.active(now) and mute.covers(rule, scope, tags) and (
                    found is None or mute.ends > found.ends or (
                        mute.ends == found.ends and index.order[mute.id] < index.order[found.id])):
                found = mute
        return found

    def naming_vms(self, rule: str, now: float) -> list[Mute]:
        """The mutes in force that name VMs and cover ``rule``'s alerts about them, in the
        set's order (those naming other rules by exact name are not tried)."""
        index = self.index()
        found = [m for m in index.naming_by_rule.get(rule, []) if m.active(now)] + [
            m for m in index.naming_any
            if m.active(now) and (not m.rules or selectors.selected(rule, m.rules, []))]
        found.sort(key=lambda m: index.order[m.id])
        return found

    def judge(self, rule: str, mutes: list[Mute]) -> Callable[[str, dict[str, str] | None], bool]:
        """Whether one of ``mutes`` (``naming_vms``'s for ``rule``) covers a member VM (its
        id, its tags): those naming VMs by exact id are looked up by the VM's, the others
        tried.  Trying each of 1,000 single-VM mutes for each of a group's 1,000 members was
        a million checks each time the mutes in force changed."""
        by_id, chosen = self.index().by_id, {m.id for m in mutes}
        loose = [m for m in mutes if m.plain_ids is None]

        def covered(vm: str, tags: dict[str, str] | None) -> bool:
            return any(m.id in chosen and m.covers(rule, vm, tags) for m in by_id.get(vm, ())) or \
                any(m.covers(rule, vm, tags) for m in loose)

        return covered

    def covering_all(self, rule: str, vms: list[str],
                     tags_of: Callable[[str], dict[str, str] | None], now: float) -> Mute | None:
        """The mute covering a group's alert of ``rule`` because one covers each of its
        members ``vms`` (a group of VMs all under maintenance): the one whose end first
        leaves a member uncovered.  None when a member is not covered (or there is none)."""
        found = None
        for vm in vms:
            mute = self.covering(rule, vm, tags_of(vm), now)
            if mute is None:
                return None
            if found is None or mute.ends < found.ends:
                found = mute
        return found

    def names_tags(self) -> bool:
        """Does a mute (in force or to come) name tags?  The rules then keep each VM's tags."""
        return any(mute.match.tags for mute in self.mutes.values())

    def ended(self, now: float) -> list[Mute]:
        """The mutes that ended by ``now``, taken out."""
        gone = [m for m in self._mutes.values() if m.ends <= now]
        for mute in gone:
            self.remove(mute.id)
        return gone

    def next_end(self) -> float | None:
        return min((m.ends for m in self.mutes.values()), default=None)


def request_of_entry(entry: dict) -> dict:
    """A file's entry back in the API's form (its ``ends`` may have passed: checked by the
    caller against the time it was made)."""
    out = {key: entry[key] for key in ("starts", "ends", "author", "comment") if key in entry}
    if entry.get("rule"):
        out["rule"] = entry["rule"]
    if entry.get("match"):
        out["match"] = entry["match"]
    return out
