"""The per-host demand summary: what an admission answer needs, small enough to keep live.

A FleetDemand holds each host's demand per minute; an answer only needs each
host's limits, levels and allocation, and what they rest on (window,
percentile, coverage).  The server's scheduled job computes this summary from
the logs in a child process and hands it over as JSON (``python -m
vmstats.capacity.summary``); ``vmstats admit`` builds the same one in
process, so both answer from the same figures the same way.
"""

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields

from vmstats import inputfile
from vmstats.capacity import defaults, unplaced
from vmstats.capacity.demand import FleetDemand, Settings, day_span, peaks_name, percentile_name
from vmstats.capacity.headroom import instances_withheld, withheld
from vmstats.capacity.placement import HostLoad

#: Bumped when a summary of the version before would be read wrong: the server and admit --summary
#: refuse a summary of another version.  A field added with a default that is true of the
#: summaries before it needs none, and those are still answered from: so instances and
#: max_instances came within version 6 (none kept: no cap), days_asked within 7 (None: not kept).
#: So a field this version does not know (anywhere in the summary) is ignored: it is a newer
#: vmstats's, of the same version, and read right without it, as during an upgrade that runs
#: both; a missing required field, or one of the wrong type, is still refused.
#: 2: the log files the summary could not read whole (a summary of 1 would claim none).
#: 3: whether stopped VMs keep their room (a summary of 2 had none kept, but would claim it).
#: 4: each host's VMs not heard from in the window, and the stopped share past which a host is
#: unknown (a summary of 3 left out VMs last heard from before its window, and would claim none).
#: 5: the use of the VMs no host claims (a summary of 4 had it counted nowhere, and admission
#: offered it as room).
#: 6: the unplaced VMs' sizes, and each host's share withheld for them on both bases (a summary
#: of 5 had Nova's allocation view offer the room their sizes hold, and would claim none).
#: 7: each capped host's share of the unplaced VMs' number against its max_instances (a summary of
#: 6 had them count against no host's cap, and would claim none).
VERSION = 7
#: The summary's file beside a report or headroom output (``vmstats admit --summary`` reads it).
SUMMARY_FILE = "capacity-summary.json"


@dataclass
class HostSummary:
    """One host's figures for placement, and what they rest on."""

    name: str
    status: str  # ok, empty, unknown
    coverage: float
    vms: int
    vcpus: float
    mem_gb: float
    cpu_limit: float  # usable: capacity less reserve and buffer
    mem_limit: float
    cpu_demand: float
    mem_demand: float
    alloc_cpu_limit: float  # (total - reserved) x ratio
    alloc_mem_limit: float
    allocated_vcpus: float
    allocated_mem_gb: float
    #: Its VMs with no record in the window: ``{"vm", "last_seen"}`` (ISO time, or None: never
    #: heard from), unknown; their room is never offered (demand.add_gone).
    unheard: list[dict] = field(default_factory=list)
    #: Its VMs as Nova counts them (HostDemand.instances) and the inventory's cap on them (None:
    #: none).  A summary from before the inventory could say a cap has none, which is so.
    instances: int = 0
    max_instances: int | None = None

    @property
    def instances_left(self) -> float:
        """VMs it may still take under its cap (inf: no cap)."""
        return math.inf if self.max_instances is None else max(0, self.max_instances - self.instances)


@dataclass
class Summary:
    """Every host's figures, the window and settings behind them, and when they were made."""

    window: dict
    percentile: float
    coverage_min: float
    horizon_days: float
    hosts: list[HostSummary]
    unplaced: int = 0
    peak_minutes: int = defaults.PEAK_MINUTES
    reserve_stopped: bool = defaults.RESERVE_STOPPED
    stopped_share_max: float = defaults.STOPPED_SHARE_MAX
    made_at: float = field(default_factory=time.time)
    version: int = VERSION
    #: The log files not read whole (issues.named_files): an answer from this summary names them
    #: as an answer read from the logs does, however long after the logs were read.
    skipped_files: list[dict] = field(default_factory=list)
    damaged_files: list[dict] = field(default_factory=list)
    #: The unplaced VMs' use (demand.FleetDemand.unplaced_described): ``cpu_cores`` and ``mem_gb``
    #: in all, and ``by_host_tag``, each ``{"host_tag", "vms", "cpu_cores", "mem_gb"}``.
    unplaced_use: dict = field(default_factory=dict)
    #: Each host's share of that use withheld from its room, ``{host: {"cpu_cores", "mem_gb"}}``,
    #: and of their sizes from the room Nova's ratios leave, ``{host: {"vcpus", "mem_gb"}}``
    #: (headroom.withheld): what the report's page and headroom.json show, for a script.  An
    #: answer works its own out on the same rule, after the room earlier answers hold.
    withheld_for_unplaced: dict = field(default_factory=dict)
    alloc_withheld_for_unplaced: dict = field(default_factory=dict)
    #: Each capped host's share of their number against its max_instances, ``{host: VMs}``
    #: (headroom.instances_withheld), alike.
    instances_withheld_for_unplaced: dict = field(default_factory=dict)
    #: The days of logs asked for (Settings.days), which the window holds fewer of when the logs
    #: start later; None: a summary from before it was kept, whose window is said without it.
    days_asked: int | None = None

    def basis(self, now: float | None = None) -> dict:
        """What an answer rests on, said in every answer, with the logs it could not read whole."""
        known = [h for h in self.hosts if h.status != "unknown"]
        expected = [h for h in known if h.vms]
        return {
            # Its days worked out of its minutes: a summary from before windows named them has none.
            "window": {**self.window, **day_span(self.window["start"], self.window["end"])},
            "days_asked": self.days_asked,
            "percentile": percentile_name(self.percentile),
            "peaks": peaks_name(self.peak_minutes),
            "coverage_min": self.coverage_min,
            "horizon_days": self.horizon_days,
            "reserve_stopped": self.reserve_stopped,
            "stopped_share_max": self.stopped_share_max,
            "hosts": len(self.hosts),
            "hosts_known": len(known),
            "hosts_unknown": sorted(h.name for h in self.hosts if h.status == "unknown"),
            "coverage_of_known_hosts": round(min((h.coverage for h in expected), default=1.0), 4),
            "unplaced_vms": self.unplaced,
            "unplaced_use": self.unplaced_use,
            "vms_unknown": [dict(vm, host=h.name) for h in self.hosts for vm in h.unheard],
            "summary_age_s": round(max(0.0, (now or time.time()) - self.made_at), 1),
            "skipped_files": self.skipped_files,
            "damaged_files": self.damaged_files,
        }

    def loads(self, basis: str = "demand") -> list[HostLoad]:
        """Placement loads: the known hosts (demand basis), or every host (allocation basis)."""
        out = []
        for h in self.hosts:
            if basis == "demand" and h.status == "unknown":
                continue  # never offered; Nova's allocation view needs sizes only
            if basis == "demand":
                out.append(
                    HostLoad(
                        h.name, h.cpu_limit, h.mem_limit, h.cpu_demand, h.mem_demand,
                        max_vcpus=h.vcpus, max_mem_gb=h.mem_gb, instances_left=h.instances_left,
                    )
                )
            else:
                out.append(
                    HostLoad(
                        h.name, h.alloc_cpu_limit, h.alloc_mem_limit, h.allocated_vcpus, h.allocated_mem_gb,
                        max_vcpus=h.vcpus, max_mem_gb=h.mem_gb, instances_left=h.instances_left,
                    )
                )
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> "Summary":
        """The summary in ``text``; ValueError naming the first thing of the wrong shape.

        The file may be damaged or be another JSON file: a field of the wrong
        type would otherwise surface as a traceback deep in an answer, or as
        figures that are silently wrong, for admit and the server alike.
        """
        try:
            data = inputfile.json_loads(text)
        except ValueError as exc:
            raise ValueError("not valid JSON: %s" % exc) from None
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object, got %s" % type(data).__name__)
        if data.get("version") != VERSION:
            raise ValueError("capacity summary of version %r, expected %d" % (data.get("version"), VERSION))
        hosts = data.get("hosts")
        if not isinstance(hosts, list) or not all(isinstance(h, dict) for h in hosts):
            raise ValueError("hosts is not a list of objects")
        for i, host in enumerate(hosts):
            host = hosts[i] = _check_fields(HostSummary, host, "hosts[%d]." % i)
            if host["status"] not in ("ok", "empty", "unknown"):
                raise ValueError("hosts[%d].status %r is not ok, empty or unknown" % (i, host["status"]))
            unheard = host.get("unheard", [])
            if not all(isinstance(vm, dict) and isinstance(vm.get("vm"), str)
                       and isinstance(vm.get("last_seen", 0), (str, type(None))) for vm in unheard):
                raise ValueError("hosts[%d].unheard holds an entry that is not a VM and when it was last "
                                 "seen" % i)
            if "unheard" in host:
                host["unheard"] = [{"vm": vm["vm"], "last_seen": vm["last_seen"]} for vm in host["unheard"]]
        data = _check_fields(cls, data, "")
        window = data["window"]
        if not all(isinstance(window.get(k), str) for k in ("start", "end")):
            raise ValueError("window has no start and end")
        try:  # basis() names the window's days from them
            day_span(window["start"], window["end"])
        except ValueError:
            raise ValueError("window's start and end are not ISO times") from None
        for name in ("skipped_files", "damaged_files"):
            if not all(
                isinstance(f, dict)
                and isinstance(f.get("path"), str)
                and isinstance(f.get("problem"), str)
                and _number(f.get("rows", 0), int)
                for f in data[name]
            ):
                raise ValueError("%s holds an entry that names no file" % name)
        if "unplaced_use" in data:
            if not _unplaced_use(data["unplaced_use"]):
                raise ValueError("unplaced_use is not the unplaced VMs' cores and GB by host tag")
            data["unplaced_use"] = _unplaced_use_known(data["unplaced_use"])
        for name, keys in (("withheld_for_unplaced", ("cpu_cores", "mem_gb")),
                           ("alloc_withheld_for_unplaced", ("vcpus", "mem_gb"))):
            if not all(isinstance(w, dict) and all(_number(w.get(k), float) for k in keys)
                       for w in data.get(name, {}).values()):
                raise ValueError("%s is not each host's %s" % (name, " and ".join(sorted(keys))))
            if name in data:
                data[name] = {h: {k: w[k] for k in keys} for h, w in data[name].items()}
        counts = data.get("instances_withheld_for_unplaced", {}).values()
        if not all(_number(n, int) and n >= 0 for n in counts):
            raise ValueError("instances_withheld_for_unplaced is not each host's count of VMs")
        data["hosts"] = [HostSummary(**h) for h in hosts]
        return cls(**data)


#: The figures of Summary.unplaced_use, in all and for each host tag.
_USE_FIGURES = ("cpu_cores", "mem_gb", "allocated_vcpus", "allocated_mem_gb")


def _unplaced_use(use: dict) -> bool:
    """Is ``use`` the shape Summary.unplaced_use has (empty, or totals and each host tag's)?
    Keys beside them are a newer vmstats's, ignored (_unplaced_use_known)."""
    if not use:
        return True
    tags = use.get("by_host_tag")
    return (
        all(_number(use.get(k), float) for k in _USE_FIGURES)
        and isinstance(tags, list)
        and all(isinstance(t, dict) and "host_tag" in t
                and isinstance(t["host_tag"], (str, type(None))) and _number(t.get("vms"), int)
                and all(_number(t.get(k), float) for k in _USE_FIGURES) for t in tags)
    )


def _unplaced_use_known(use: dict) -> dict:
    """``use`` (of _unplaced_use's shape) with only the keys this version reads and writes."""
    if not use:
        return {}
    tag_keys = ("host_tag", "vms", *_USE_FIGURES)
    return {**{k: use[k] for k in _USE_FIGURES},
            "by_host_tag": [{k: t[k] for k in tag_keys} for t in use["by_host_tag"]]}


def _number(value, kind) -> bool:
    """A finite JSON number of ``kind`` (float accepts integers too); never a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        return False
    return math.isfinite(value)


#: The check of a field by its declared type (list fields are checked as lists here).
_CHECKS = {
    "float": lambda v: _number(v, float),
    "int": lambda v: _number(v, int),
    "str": lambda v: isinstance(v, str),
    "dict": lambda v: isinstance(v, dict),
    "bool": lambda v: isinstance(v, bool),
    "int | None": lambda v: v is None or _number(v, int),
}


def _check_fields(cls, data: dict, where: str) -> dict:
    """``data``'s fields that ``cls`` has; ValueError unless it holds each required one, and each
    it holds is of its type.

    A field ``cls`` does not have is left out, not refused: a newer vmstats adds a field without
    a new VERSION when a reader without it answers right (see VERSION), and a cluster being
    upgraded one server at a time reads its summaries with the older one meanwhile.
    """
    known = {f.name: f for f in fields(cls)}
    for name, f in known.items():
        if name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError("missing field %s%s" % (where, name))
            continue
        value, kind = data[name], getattr(f.type, "__name__", str(f.type))
        if not _CHECKS.get(kind, lambda v: isinstance(v, list))(value):
            raise ValueError("%s%s has the wrong type: %s" % (where, name, json.dumps(value)[:40]))
    return {name: value for name, value in data.items() if name in known}


def summarise(fleet: FleetDemand, named: dict[str, list[dict]] | None = None) -> Summary:
    """The summary of a FleetDemand (its series dropped), with the files named as not read whole
    (``named``: reader.Logs.named) kept, since the summary outlives the reading."""
    s = fleet.settings
    hosts = []
    for entry in fleet.hosts:
        host = entry.host
        hosts.append(
            HostSummary(
                entry.name,
                entry.status(s),
                round(entry.coverage, 4),
                len(entry.vms),
                host.vcpus,
                host.mem_gb,
                host.usable_vcpus,
                host.usable_mem_gb,
                entry.cpu_demand,
                entry.mem_demand,
                host.alloc_vcpus,
                host.alloc_mem_gb,
                entry.allocated_vcpus,
                entry.allocated_mem_gb,
                entry.unheard_named(),
                entry.instances,
                None if math.isinf(host.max_instances) else int(host.max_instances),
            )
        )
    return Summary(
        fleet.window.describe(),
        s.percentile,
        s.coverage_min,
        s.horizon_days,
        hosts,
        len(fleet.unplaced),
        s.peak_minutes,
        s.reserve_stopped,
        s.stopped_share_max,
        **(named or {}),
        unplaced_use=fleet.unplaced_described() if fleet.unplaced else {},
        withheld_for_unplaced=unplaced.described(withheld(fleet)),
        alloc_withheld_for_unplaced=unplaced.described(withheld(fleet, "allocation"), "allocation"),
        instances_withheld_for_unplaced=instances_withheld(fleet),
        days_asked=s.days,
    )


def from_logs(
    data_dirs: Sequence[str], inventory_path: str, settings: Settings, until: str | None = None
) -> Summary:
    """Read the logs and summarise them (ReportError / CapacityError on bad input): the server's
    refresh and ``vmstats admit`` alike, so both answer from the same reading."""
    from vmstats.capacity import reader
    from vmstats.capacity.demand import host_demand
    from vmstats.capacity.inventory import load_inventory

    inventory = load_inventory(inventory_path)
    logs = reader.find_logs(data_dirs, settings.days, until)
    fleet = host_demand(inventory, reader.read_vms(logs), logs.window, settings, gone=reader.read_gone(logs))
    return summarise(fleet, logs.named())  # named once read_vms is done


def main(argv: Sequence[str] | None = None) -> int:
    """The server's refresh job: the summary as JSON on stdout, or one error line on stderr."""
    from vmstats.report.settings import ReportError

    parser = argparse.ArgumentParser(prog="python -m vmstats.capacity.summary")
    parser.add_argument("data_dirs", nargs="+")
    parser.add_argument("--inventory", required=True)
    parser.add_argument("--settings", required=True, help="Settings as JSON")
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--end-with", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.end_with is not None:  # no summary is wanted of a server that is gone
        from vmstats.server import lifeline

        lifeline.end_with(args.end_with)
    if args.nice:
        os.nice(args.nice)  # the aggregator's ingest comes first
    try:
        summary = from_logs(args.data_dirs, args.inventory, Settings(**json.loads(args.settings)))
    except ReportError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    sys.stdout.write(summary.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
