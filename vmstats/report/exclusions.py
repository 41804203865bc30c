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


@dataclass
class Exclusion:
    selector: str
    reason: str
    #: As written: a date, or a time (with or without an offset).
    expires: datetime.date | None
    patterns: list[str]
    networks: list[Any]

    def ends(self) -> float | None:
        """The Unix time the exclusion stops applying at (None: never): the end of its UTC day
        for a date, the instant for a time (a time without an offset is UTC)."""
        if self.expires is None:
            return None
        if isinstance(self.expires, datetime.datetime):
            when = self.expires
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
            return when.timestamp()
        return (self.expires - datetime.date(1970, 1, 1)).days * 86400.0 + 86400.0

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
