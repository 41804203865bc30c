"""Exclusions: VMs the operator has decided about, with the reason shown in the report.

An exclusion names VMs by id, glob pattern or CIDR, gives a reason, and may
expire: a date (a UTC day, inclusive, as the report's --since and --until are)
or a time (with its offset, the operator's zone: that instant; without one, UTC).
It is judged at the end of the report's window, not on the day the report
runs: a report of last month's logs shows the VM excluded that month, as the
operator had decided then, whenever it is run (and the same logs give the same
report on any day).  An exclusion expired at the window's end no longer
applies and the report lists it so stale promises get noticed.
"""

import datetime
from dataclasses import dataclass
from typing import Any

from vmstats.report.settings import InputError, load_toml, parse_selector


def ends_of(expires: datetime.date | None) -> float | None:
    """The Unix time an exclusion's ``expires`` ends it at (None: never): the end of its UTC day
    for a date, the instant for a time (a time without an offset is UTC)."""
    if expires is None:
        return None
    if isinstance(expires, datetime.datetime):
        when = expires
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return when.timestamp()
    return (expires - datetime.date(1970, 1, 1)).days * 86400.0 + 86400.0


@dataclass
class Exclusion:
    selector: str
    reason: str
    #: As written: a date, or a time (with or without an offset).
    expires: datetime.date | None
    patterns: list[str]
    networks: list[Any]

    def ends(self) -> float | None:
        """The Unix time the exclusion stops applying at (None: never)."""
        return ends_of(self.expires)

    def expired_at(self, end_ts: int) -> bool:
        """Whether it no longer applies at ``end_ts``, the report window's last record."""
        ends = self.ends()
        return ends is not None and ends <= end_ts

    def matches(self, vm: str) -> bool:
        from vmstats.report.settings import Group

        return Group("", self.patterns, self.networks, {}).matches(vm)


def load(path: str | None) -> list[Exclusion]:
    """The exclusions of a TOML file with ``[[exclude]]`` tables, in its order (InputError when
    it is wrong: read before any log, so a wrong file is refused whatever the logs hold)."""
    if not path:
        return []
    data = load_toml(path, "exclusions")
    entries = data.get("exclude", [])
    if set(data) - {"exclude"} or not isinstance(entries, list):
        raise InputError("exclusions file %s: expected only [[exclude]] tables" % path)
    items = []
    for i, entry in enumerate(entries):
        origin = "exclusions file %s: entry %d" % (path, i + 1)
        if not isinstance(entry, dict) or not isinstance(entry.get("vm"), str):
            raise InputError('%s: needs vm = "<id, pattern or CIDR>"' % origin)
        reason = entry.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise InputError("%s: needs a reason" % origin)
        expires = entry.get("expires")
        if isinstance(expires, str):
            try:
                expires = datetime.date.fromisoformat(expires)
            except ValueError:
                raise InputError("%s: expires=%r is not a YYYY-MM-DD date" % (origin, expires)) from None
        elif expires is not None and not isinstance(expires, datetime.date):
            raise InputError("%s: expires must be a date" % origin)
        unknown = set(entry) - {"vm", "reason", "expires"}
        if unknown:
            raise InputError("%s: unknown key %s" % (origin, sorted(unknown)[0]))
        patterns, networks = parse_selector([entry["vm"]], origin)
        items.append(Exclusion(entry["vm"], reason.strip(), expires, patterns, networks))
    return items


def split(items: list[Exclusion], end_ts: int) -> tuple[list[Exclusion], list[Exclusion]]:
    """``(active, expired)`` of ``items`` at ``end_ts``, the end of the report's window."""
    active = [item for item in items if not item.expired_at(end_ts)]
    return active, [item for item in items if item.expired_at(end_ts)]


def find(exclusions: list[Exclusion], vm: str) -> Exclusion | None:
    """The first exclusion that applies to ``vm``."""
    for item in exclusions:
        if item.matches(vm):
            return item
    return None


def until_note(expires: str) -> str:
    """The words an excluded VM's reason gives its exclusion's end (``expires`` as written):
    true at the window's end, where the exclusion is judged, so report.csv and report.json
    keep them on any day."""
    return " (until %s)" % expires


def lapsed_words(expires: str) -> str:
    """What the page says of an exclusion applied at the window's end whose ``expires`` has
    passed by the time it is drawn (``since_expired``), in place of ``until_note``'s words:
    "until" a day gone by read as a promise still kept."""
    return "expired %s, after the window's end: renew or drop it" % expires


def since_expired(rows: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """The exclusions that held at the window's end, so excluded VMs of ``rows``, but have
    expired by ``now`` (the run's time), each once as ``{vm, reason, expires}``, earliest first.

    This report applies them (judged at the window's end), a report of a later window will not: the page
    and the terminal name them so the operator renews or drops them in time.  report.csv and
    report.json leave them out, so the same logs still give the same files on any day.
    """
    found: dict[str, tuple[float, dict[str, Any]]] = {}
    for row in rows:
        evidence = row.get("evidence") or {}
        expires = evidence.get("expires") if row["category"] == "excluded" else None
        if not expires or evidence["exclusion"] in found:
            continue
        ends = ends_of(
            datetime.datetime.fromisoformat(expires)
            if "T" in expires
            else datetime.date.fromisoformat(expires)
        )
        if ends is not None and ends <= now:
            found[evidence["exclusion"]] = (
                ends,
                {"vm": evidence["exclusion"], "reason": row["excluded_reason"], "expires": expires},
            )
    return [item for _ends, item in sorted(found.values(), key=lambda pair: (pair[0], pair[1]["vm"]))]
