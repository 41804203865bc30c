"""Every threshold of the report in one place, and how overrides reach a VM.

Defaults live in SETTINGS (docs/POLICY.md explains each and the published
rule it is modelled on).  A policy TOML file overrides them at its top level
and per group; CLI flags override the file.  Groups select VMs by id glob
pattern (``web-*``) or CIDR (``10.1.0.0/16``); the first matching group wins,
so specific groups go first.
"""

import ipaddress
import math
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from vmstats import inputfile
from vmstats.protocol import decimal
from vmstats.selectors import selected


class ReportError(ValueError):
    """Why a report (or a command that runs one) cannot go on: one line, never a traceback.

    Raised as such, the run failed on the way (the logs, a worker, the disk): exit status 1.
    """


class InputError(ReportError, inputfile.BadInput):
    """The command line, or a file it names (policy, price book, exclusions, inventory), is
    wrong: refused before any log is read, with a usage error's status (options.failure)."""


#: Two sizes within this share of each other are one shape (1.99 GB and 2.00 GB: agents
#: report memory in MB as the guest's kernel sees it, a little under the provisioned size).
SHAPE_TOLERANCE = 0.02

#: The longest look-back any command takes (ten years of daily logs): a window is held in
#: memory whole, so an unbounded one grows without end instead of failing.
MAX_DAYS = 3660


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    unit: str
    meaning: str


SETTINGS = (
    Setting("days", 14, "days", "look-back window, whole UTC days ending with the latest record's day"),
    Setting("stopped_after_hours", 24.0, "hours", "no record for this long before the window's end: stopped"),
    Setting("coverage_min", 0.5, "share", "below this share of expected minutes: insufficient-data"),
    Setting("min_days", 6.0, "days", "observed span a VM needs before reclaim or downsize"),
    Setting("schedule_min_days", 13.0, "days", "observed span a VM needs before a schedule"),
    Setting("idle_percentile", 99.0, "percentile", "percentile of CPU, disk, net held to their work levels"),
    Setting("cpu_idle", 5.0, "% of vCPUs", "CPU below this is never work, whatever the VM's floor"),
    Setting("disk_idle", 524288.0, "bytes/s", "disk read+write below this is never work"),
    Setting("net_idle", 49152.0, "bytes/s", "network rx+tx below this is never work"),
    Setting("work_ratio", 2.0, "x floor", "work: a metric above this multiple of its own floor (p50)"),
    Setting("cpu_floor_max", 3.0, "% of vCPUs", "a CPU floor above this is a service, not background"),
    Setting("disk_floor_max", 524288.0, "bytes/s", "a disk floor above this is a service, not background"),
    Setting("net_floor_max", 10240.0, "bytes/s", "a network floor above this is a service, not background"),
    Setting("upsize_at", 90.0, "% of size", "CPU or memory p95 at or above this: upsize"),
    Setting("frozen_hours", 6.0, "hours", "identical readings for this long in the window: frozen data"),
    Setting("zero_share", 0.5, "share", "a metric reading 0 in this share of minutes while running: stuck"),
    Setting("max_rate", 12.5e9, "bytes/s", "disk or network above this (100 Gbit/s) is impossible"),
    Setting("quality_confidence", 0.39, "confidence", "most confidence a VM with flagged data gets"),
    Setting("idle_day_cpu", 10.0, "% of vCPUs", "a day is idle when its CPU p95 is at most this ..."),
    Setting("idle_day_net_mb", 5.0, "MB", "... and its network traffic at most this (Trusted Advisor's day)"),
    Setting("schedule_min_off_hours", 40.0, "hours/week", "fewest idle hours a week worth a schedule"),
    Setting("schedule_min_off_run", 4, "hours", "shortest stop a schedule offers (shorter gaps stay on)"),
    Setting("schedule_min_on_hours", 25.0, "hours/week", "fewest busy hours a week of a scheduled VM"),
    Setting("schedule_busy_share", 0.5, "share", "a slot is busy when busy in this share of weeks"),
    Setting("schedule_max_irregular", 0.1, "share", "most slots neither steadily idle nor busy"),
    Setting("schedule_hour_min_minutes", 30, "minutes", "an hour with fewer records proves nothing"),
    Setting(
        "schedule_night_start", 0, "hour", "a schedule needs weekday nights idle from this local hour ..."
    ),
    Setting("schedule_night_end", 6, "hour", "... to this one (or the whole weekend idle)"),
    Setting("schedule_min_day_hours", 6.0, "hours/day", "fewest busy hours in a used day of a scheduled VM"),
    Setting(
        "utc_offset_hours",
        None,
        "hours",
        "local time of the VM's users for schedules (5.5: UTC+5:30); auto: found per VM from its busy hours",
    ),
    Setting("headroom", 0.3, "share", "room kept above p95 use when sizing down"),
    Setting("downsize_min_saving", 0.1, "share", "smallest saving (share of cost) worth a resize"),
    Setting("trend_rising", 5.0, "points/week", "daily p95 rising this fast blocks downsizing"),
    Setting("downsize_max_net", 10e6, "bytes/s", "network p95 above this keeps the size (bandwidth)"),
    Setting("max_gb_per_vcpu", 8.0, "GB/vCPU", "no recommended shape has more memory per vCPU"),
    Setting("vcpu_ladder", [1, 2, 4, 8, 16, 32, 48, 64, 96, 128], "vCPUs", "sizes a downsize may pick"),
    Setting(
        "fractional_vcpu_step",
        0.25,
        "vCPUs",
        "a size already fractional (a container's limit) is resized in multiples of this",
    ),
    Setting("memory_ladder_gb", [0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512], "GB", "memory sizes to pick"),
)
DEFAULTS = {s.name: s.default for s in SETTINGS}
#: Settings a group may not change: they define the fleet-wide window.
FLEET_ONLY = ("days",)


def _number(value: Any) -> float:
    """float() of a TOML/JSON number, or of text (``--set``) spelled as ``protocol.DECIMAL``:
    float() alone reads ``1_4`` as 14 and Unicode digits as digits.  ValueError otherwise."""
    if isinstance(value, str):
        return decimal(value.strip(string.whitespace))
    return float(value)


def coerce(name: str, value: Any, origin: str) -> Any:
    """Check one override against the default's type; ReportError names the origin."""
    if name not in DEFAULTS:
        raise InputError("%s: unknown setting %r (known: %s)" % (origin, name, ", ".join(DEFAULTS)))
    default = DEFAULTS[name]
    if isinstance(default, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        try:
            items = sorted(map(_number, value))
        except (TypeError, ValueError):
            raise InputError("%s: %s must be a list of numbers" % (origin, name)) from None
        if not items or items[0] <= 0 or not all(map(math.isfinite, items)):
            raise InputError("%s: %s must list positive finite numbers" % (origin, name))
        return items
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InputError("%s: %s must be a number" % (origin, name))
    if name == "utc_offset_hours" and isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        number = _number(value)
    except ValueError:
        raise InputError("%s: %s=%r is not a number" % (origin, name, value)) from None
    if not math.isfinite(number):
        raise InputError("%s: %s=%r is not a finite number" % (origin, name, value))
    if isinstance(default, int) and not number.is_integer():
        # Cutting 1.5 days to 1 would answer a question nobody asked.
        raise InputError("%s: %s=%r must be a whole number" % (origin, name, value))
    if number < 0 and name != "utc_offset_hours":
        raise InputError("%s: %s must not be negative" % (origin, name))
    if name == "days" and not 1 <= number <= MAX_DAYS:
        raise InputError("%s: days is a look-back in whole days, from 1 to %d" % (origin, MAX_DAYS))
    if name in ("coverage_min", "schedule_busy_share", "schedule_max_irregular", "zero_share") and number > 1:
        raise InputError("%s: %s is a share between 0 and 1" % (origin, name))
    if name == "max_gb_per_vcpu" and number <= 0:
        raise InputError("%s: max_gb_per_vcpu must be positive" % origin)
    if name == "fractional_vcpu_step" and not (0 < number <= 1 and round(number, 3) == number):
        # A size holds 3 places (protocol.FIELDS): a finer step could recommend no size at all.
        raise InputError("%s: fractional_vcpu_step is a multiple of 0.001 vCPU from 0.001 to 1"
                         % origin)
    if name in ("schedule_night_start", "schedule_night_end") and number > 24:
        raise InputError("%s: %s is an hour of the day (0-24)" % (origin, name))
    if name == "utc_offset_hours" and not -12 <= number <= 14:
        raise InputError("%s: utc_offset_hours is an offset from -12 to 14 hours, or auto" % origin)
    if name == "utc_offset_hours" and not (number * 4).is_integer():
        # Zones are whole hours or end on a half or quarter hour; 5.3 is no zone's offset.
        raise InputError("%s: utc_offset_hours=%r is no time zone's offset: whole hours, or a half or "
                         "quarter hour (5.5 for UTC+5:30, 5.75 for UTC+5:45)" % (origin, value))
    if name == "schedule_min_off_run" and not 1 <= number <= 24:
        raise InputError("%s: schedule_min_off_run is whole hours of a day (1-24)" % origin)
    if name == "schedule_min_day_hours" and number > 24:
        raise InputError("%s: schedule_min_day_hours is hours of a day (0-24)" % origin)
    if name == "quality_confidence" and number > 1:
        raise InputError("%s: quality_confidence is a confidence between 0 and 1" % origin)
    if name == "idle_percentile" and not 0 < number <= 100:
        raise InputError("%s: idle_percentile must be in (0, 100]" % origin)
    return int(number) if isinstance(default, int) else number


@dataclass
class Group:
    name: str
    patterns: list[str]
    networks: list[Any]
    overrides: dict[str, Any]

    def matches(self, vm: str) -> bool:
        return selected(vm, self.patterns, self.networks)


def parse_selector(values: Iterable[str], origin: str) -> tuple[list[str], list[Any]]:
    """Split VM selectors into glob patterns and networks (anything with a ``/`` is a CIDR)."""
    patterns, networks = [], []
    for value in values:
        if not isinstance(value, str) or not value:
            raise InputError("%s: a VM selector must be a non-empty string" % origin)
        if "/" in value:
            try:
                networks.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                raise InputError("%s: %r is not a CIDR network" % (origin, value)) from None
        else:
            patterns.append(value)
    return patterns, networks


def load_toml(path: str, what: str) -> dict:
    """Read a TOML file or raise ReportError with one line naming it (``what``: its use)."""
    try:
        return inputfile.load_toml(path)
    except inputfile.FileProblem as exc:
        raise InputError("%s file %s" % (what, exc)) from None


@dataclass
class Policy:
    """The effective settings: defaults, then the policy file, then CLI flags, then groups."""

    base: dict[str, Any] = field(default_factory=lambda: dict(DEFAULTS))
    groups: list[Group] = field(default_factory=list)
    source: str = "built-in defaults"

    @classmethod
    def load(cls, path: str | None = None, overrides: dict[str, Any] | None = None) -> "Policy":
        policy = cls()
        if path:
            data = load_toml(path, "policy")
            policy.source = path
            for key, value in data.items():
                if key == "groups":
                    policy.groups = [
                        _group(g, "%s: group %d" % (path, i + 1))
                        for i, g in enumerate(value if isinstance(value, list) else [None])
                    ]
                else:
                    policy.base[key] = coerce(key, value, path)
        changed = []
        for key, value in (overrides or {}).items():
            wanted = coerce(key, value, "option --%s" % key.replace("_", "-"))
            if wanted != policy.base[key]:
                changed.append("%s=%s" % (key, _shown(wanted)))
            policy.base[key] = wanted
        if changed:
            # The page and report.json name where the thresholds came from: a flag or --set
            # that moved one is part of that, or "built-in defaults" would hide it.
            policy.source += ", and from the command line: " + ", ".join(changed)
        return policy

    def for_vm(self, vm: str) -> tuple[str, dict[str, Any]]:
        """``(group name, settings)`` of one VM: its group's overrides over the base."""
        for group in self.groups:
            if group.matches(vm):
                merged = dict(self.base)
                merged.update(group.overrides)
                return group.name, merged
        return "", self.base


def _shown(value: Any) -> str:
    """A setting's value as written on a command line (``auto``, ``5.5``, ``1,2,4``)."""
    if value is None:
        return "auto"
    if isinstance(value, list):
        return ",".join(map(_shown, value))
    return "%g" % value if isinstance(value, float) else str(value)


def _group(data: Any, origin: str) -> Group:
    if not isinstance(data, dict) or "match" not in data:
        raise InputError("%s: each [[groups]] table needs a 'match' list of VM patterns or CIDRs" % origin)
    match = data["match"]
    patterns, networks = parse_selector([match] if isinstance(match, str) else match, origin)
    name = str(data.get("name", ",".join(match if isinstance(match, list) else [match])))
    overrides = {}
    for key, value in data.items():
        if key in ("match", "name"):
            continue
        if key in FLEET_ONLY:
            raise InputError("%s: %s applies to the whole fleet, not a group" % (origin, key))
        overrides[key] = coerce(key, value, origin)
    return Group(name, patterns, networks, overrides)
