"""Exclusions: VMs the operator has decided about, with the reason shown in the report.

An exclusion names VMs by id, glob pattern or CIDR, gives a reason, and may
expire (a date, inclusive): an expired exclusion no longer applies and the
report lists it so stale promises get noticed.
"""

import datetime
from dataclasses import dataclass
from typing import Any

from vmstats.report.settings import InputError, load_toml, parse_selector


@dataclass
class Exclusion:
    selector: str
    reason: str
    expires: datetime.date | None
    patterns: list[str]
    networks: list[Any]

    def matches(self, vm: str) -> bool:
        from vmstats.report.settings import Group

        return Group("", self.patterns, self.networks, {}).matches(vm)


def load(path: str | None, today: datetime.date) -> tuple[list[Exclusion], list[Exclusion]]:
    """``(active, expired)`` exclusions of a TOML file with ``[[exclude]]`` tables."""
    if not path:
        return [], []
    data = load_toml(path, "exclusions")
    entries = data.get("exclude", [])
    if set(data) - {"exclude"} or not isinstance(entries, list):
        raise InputError("exclusions file %s: expected only [[exclude]] tables" % path)
    active, expired = [], []
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
        elif isinstance(expires, datetime.datetime):
            expires = expires.date()
        elif expires is not None and not isinstance(expires, datetime.date):
            raise InputError("%s: expires must be a date" % origin)
        unknown = set(entry) - {"vm", "reason", "expires"}
        if unknown:
            raise InputError("%s: unknown key %s" % (origin, sorted(unknown)[0]))
        patterns, networks = parse_selector([entry["vm"]], origin)
        item = Exclusion(entry["vm"], reason.strip(), expires, patterns, networks)
        (expired if expires is not None and expires < today else active).append(item)
    return active, expired


def find(exclusions: list[Exclusion], vm: str) -> Exclusion | None:
    """The first exclusion that applies to ``vm``."""
    for item in exclusions:
        if item.matches(vm):
            return item
    return None
