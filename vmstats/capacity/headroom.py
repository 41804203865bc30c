"""Headroom for a VM profile: how many more fit on each host and in the fleet.

Per host, the demand-based count is the smaller of ``cpu headroom / the
profile's expected cores`` and ``memory headroom / its expected GB`` (the
resource that gives the smaller count is the *binding* one); the
allocation-based count, Nova's, is the same with sizes against
``(total - reserved) x ratio``.  Each is given now and after the report's
recommendations (reclaim candidates gone, downsizes applied: a downsize
frees allocation, not measured use).  Unknown hosts count nothing.  The
unplaced VMs' use is withheld from the known hosts' room first, each giving its
share (unplaced.shares), as admission withholds it: the two answer alike; their
sizes are withheld from Nova's count the same way, and their number from the
capped hosts' ``max_instances`` (unplaced.instance_shares), on both counts.
"""

import math
from dataclasses import dataclass

from vmstats.capacity import unplaced
from vmstats.capacity.demand import FleetDemand, HostDemand, peaks_name, percentile_name
from vmstats.capacity.profiles import Profile

#: Columns of headroom.csv, in order (one place for the CSV, JSON rows and the terminal).
COLUMNS = (
    "host",
    "status",
    "coverage",
    "vms",
    "stopped",
    "by_allocation",
    "vcpus",
    "mem_gb",
    "cpu_usable",
    "mem_usable",
    "cpu_demand",
    "mem_demand",
    "cpu_trend_week",
    "mem_trend_week",
    "cpu_headroom",
    "mem_headroom",
    "cpu_withheld",
    "mem_withheld",
    "instances_withheld",
    "fit_now",
    "binding_now",
    "fit_after",
    "binding_after",
    "allocated_vcpus",
    "allocated_mem_gb",
    "alloc_vcpus_limit",
    "alloc_mem_limit",
    "alloc_vcpus_withheld",
    "alloc_mem_withheld",
    "alloc_fit_now",
    "alloc_binding_now",
    "alloc_fit_after",
    "unheard",
)


@dataclass(frozen=True)
class Fit:
    """How many of a profile fit, and which resource runs out first ("" when unknown)."""

    count: int | None
    binding: str


def _fit(cpu_room: float, mem_room: float, cpu_each: float, mem_each: float, left: float = math.inf) -> Fit:
    """VMs of (``cpu_each``, ``mem_each``) that fit the room, at most ``left`` (the host's
    instances left under its cap: "instances" binds when it is the smaller count)."""
    by_cpu = math.floor(max(0.0, cpu_room) / cpu_each + 1e-9)
    by_mem = math.floor(max(0.0, mem_room) / mem_each + 1e-9)
    if by_cpu == by_mem:
        # Equal counts: the resource with less left over after them binds.
        binding = "cpu" if cpu_room / cpu_each - by_cpu <= mem_room / mem_each - by_mem else "memory"
    else:
        binding = "cpu" if by_cpu < by_mem else "memory"
    if left < min(by_cpu, by_mem):
        return Fit(int(left), "instances")
    return Fit(min(by_cpu, by_mem), binding)


def _too_large(entry: HostDemand, profile: Profile) -> Fit | None:
    """None, or no room at all for a profile wider than the host (placement.HostLoad.holds)."""
    host = entry.host
    if profile.vcpus > host.vcpus + 1e-9:
        return Fit(0, "cpu")
    if profile.mem_gb > host.mem_gb + 1e-9:
        return Fit(0, "memory")
    return None


def withheld(fleet: FleetDemand, basis: str = "demand") -> dict[str, tuple[float, float]]:
    """Each host's share of the unplaced VMs' use (unplaced.shares), ``{host: (cores, GB)}``, or
    on the ``"allocation"`` basis of their sizes, ``{host: (vCPUs, GB)}``: the figures admission
    withholds (the summary's, rounded as it keeps them), so a count here is the count an
    admission answer places on the same logs.  The one place they are worked out from a
    FleetDemand: headroom's rows and totals, the report's page and capacity-summary.json.

    The demand basis shares among the known hosts, by their measured room; the allocation basis
    among every host, by the room Nova's ratios leave (Nova allocates on unknown hosts too)."""
    use = fleet.unplaced_described() if fleet.unplaced else {}
    return unplaced.shares(rooms(fleet, basis), *unplaced.amounts(use, basis))


def rooms(fleet: FleetDemand, basis: str = "demand") -> dict[str, tuple[float, float]]:
    """The room the unplaced VMs are shared by (:func:`withheld`): the known hosts' measured room
    (cores, GB), or every host's room under Nova's ratios (vCPUs, GB)."""
    if basis == "demand":
        return {h.name: (h.cpu_headroom, h.mem_headroom) for h in fleet.hosts if h.known(fleet.settings)}
    return {h.name: (h.host.alloc_vcpus - h.allocated_vcpus, h.host.alloc_mem_gb - h.allocated_mem_gb)
            for h in fleet.hosts}


def instances_withheld(fleet: FleetDemand) -> dict[str, int]:
    """Each capped host's share of the unplaced VMs' number (unplaced.instance_shares), ``{host:
    VMs}``, taken from the VMs its ``max_instances`` still lets it take on both counts: the one
    place it is worked out from a FleetDemand, as :func:`withheld` is for their use and sizes.
    Every host shares, unknown ones too: Nova counts instances wherever they run."""
    return unplaced.instance_shares({h.name: h.instances_left for h in fleet.hosts}, len(fleet.unplaced))


def demand_fit(
    entry: HostDemand, profile: Profile, fleet: FleetDemand, share: tuple[float, float] = (0.0, 0.0),
    vms: int = 0,
) -> Fit:
    """VMs of ``profile`` that fit the host's measured headroom less its ``share`` of the
    unplaced use (withheld; cores, GB), and its instance cap less its share of their number
    (``vms``) (None: the host is unknown)."""
    if not entry.known(fleet.settings):
        return Fit(None, "")
    return _too_large(entry, profile) or _fit(
        entry.cpu_headroom - share[0], entry.mem_headroom - share[1], profile.cpu_demand, profile.mem_demand,
        entry.instances_left - vms,
    )


def allocation_fit(entry: HostDemand, profile: Profile, share: tuple[float, float] = (0.0, 0.0),
                   vms: int = 0) -> Fit:
    """VMs of ``profile`` Nova would still allocate on the host, by size and ratios, less its
    ``share`` of the unplaced VMs' sizes (withheld; vCPUs, GB), and within its instance cap less
    its share of their number (``vms``)."""
    host = entry.host
    return _too_large(entry, profile) or _fit(
        host.alloc_vcpus - entry.allocated_vcpus - share[0],
        host.alloc_mem_gb - entry.allocated_mem_gb - share[1],
        profile.vcpus,
        profile.mem_gb,
        entry.instances_left - vms,
    )


def rows(now: FleetDemand, after: FleetDemand | None, profile: Profile) -> list[dict]:
    """One row per host (COLUMNS), in inventory order."""
    later = {h.name: h for h in after.hosts} if after is not None else {}
    none = (0.0, 0.0)
    held_now, sized_now = withheld(now), withheld(now, "allocation")
    held_after = withheld(after) if after is not None else {}
    sized_after = withheld(after, "allocation") if after is not None else {}
    counted_now = instances_withheld(now)
    counted_after = instances_withheld(after) if after is not None else {}
    out = []
    for entry in now.hosts:
        host = entry.host
        share, sized = held_now.get(entry.name, none), sized_now.get(entry.name, none)
        vms = counted_now.get(entry.name, 0)
        fit, alloc = demand_fit(entry, profile, now, share, vms), allocation_fit(entry, profile, sized, vms)
        then = later.get(entry.name)
        vms_after = counted_after.get(entry.name, 0)
        fit_after = (demand_fit(then, profile, after, held_after.get(entry.name, none), vms_after)
                     if then is not None else Fit(None, ""))
        alloc_after = (allocation_fit(then, profile, sized_after.get(entry.name, none), vms_after)
                       if then is not None else Fit(None, ""))
        known = entry.known(now.settings)
        out.append(
            {
                "host": entry.name,
                "status": entry.status(now.settings),
                "coverage": round(entry.coverage, 4),
                "vms": len(entry.vms),
                "stopped": len(entry.stopped),
                "by_allocation": len(entry.by_allocation),
                "vcpus": host.vcpus,
                "mem_gb": host.mem_gb,
                "cpu_usable": _r(host.usable_vcpus),
                "mem_usable": _r(host.usable_mem_gb),
                "cpu_demand": _r(entry.cpu_demand) if known else None,
                "mem_demand": _r(entry.mem_demand) if known else None,
                "cpu_trend_week": _r(entry.cpu_trend) if known else None,
                "mem_trend_week": _r(entry.mem_trend) if known else None,
                "cpu_headroom": _r(entry.cpu_headroom) if known else None,
                "mem_headroom": _r(entry.mem_headroom) if known else None,
                "cpu_withheld": _r(share[0]) if known else None,
                "mem_withheld": _r(share[1]) if known else None,
                "instances_withheld": vms,
                "fit_now": fit.count,
                "binding_now": fit.binding,
                "fit_after": fit_after.count,
                "binding_after": fit_after.binding,
                "allocated_vcpus": _r(entry.allocated_vcpus),
                "allocated_mem_gb": _r(entry.allocated_mem_gb),
                "alloc_vcpus_limit": _r(host.alloc_vcpus),
                "alloc_mem_limit": _r(host.alloc_mem_gb),
                "alloc_vcpus_withheld": _r(sized[0]),
                "alloc_mem_withheld": _r(sized[1]),
                "alloc_fit_now": alloc.count,
                "alloc_binding_now": alloc.binding,
                "alloc_fit_after": alloc_after.count if after is not None else None,
                "unheard": len(entry.unheard),
            }
        )
    return out


def totals(host_rows: list[dict], now: FleetDemand, after: FleetDemand | None) -> dict:
    """The fleet: sums over known hosts, and what is left out (unknown hosts, unplaced VMs)."""

    def total(key: str) -> int | None:
        values = [r[key] for r in host_rows if r[key] is not None]
        return sum(values) if values else None

    unknown = [r["host"] for r in host_rows if r["status"] == "unknown"]
    binding = {}
    for r in host_rows:
        if r["binding_now"]:
            binding[r["binding_now"]] = binding.get(r["binding_now"], 0) + 1
    return {
        "hosts": len(host_rows),
        "hosts_known": len(host_rows) - len(unknown),
        "hosts_unknown": unknown,
        "unplaced_vms": now.unplaced,
        "unplaced_use": now.unplaced_described() if now.unplaced else {},
        # Each known host's share of that use, taken from its room before the counts (now, and
        # after the advice, whose unplaced VMs are those it keeps), as admission's answers say.
        "withheld_for_unplaced": unplaced.described(withheld(now)),
        "withheld_for_unplaced_after": unplaced.described(withheld(after)) if after is not None else None,
        # Their sizes, taken from the room Nova's ratios leave before its counts, alike.
        "alloc_withheld_for_unplaced": unplaced.described(withheld(now, "allocation"), "allocation"),
        "alloc_withheld_for_unplaced_after": (unplaced.described(withheld(after, "allocation"), "allocation")
                                              if after is not None else None),
        # Their number, taken from the capped hosts' max_instances before both counts, alike.
        "instances_withheld_for_unplaced": instances_withheld(now),
        "instances_withheld_for_unplaced_after": instances_withheld(after) if after is not None else None,
        "vms_unknown": [dict(vm, host=h.name) for h in now.hosts for vm in h.unheard_named()],
        # An unknown host counts as no room, now and after the advice alike.
        "fit_now": total("fit_now") or 0,
        "fit_after": total("fit_after") or 0 if after is not None else None,
        "alloc_fit_now": total("alloc_fit_now") or 0,
        "alloc_fit_after": total("alloc_fit_after") or 0 if after is not None else None,
        "binding_hosts": binding,
    }


def result(
    now: FleetDemand,
    after: FleetDemand | None,
    profile: Profile,
    changes: dict | None = None,
    source: dict | None = None,
) -> dict:
    """Everything the outputs show: the basis, the profile, the rows, the fleet's totals."""
    host_rows = rows(now, after, profile)
    s = now.settings
    return {
        "profile": {
            "name": profile.name(),
            "vcpus": profile.vcpus,
            "mem_gb": profile.mem_gb,
            "cpu_use": profile.cpu_use,
            "mem_use": profile.mem_use,
            "cpu_demand": _r(profile.cpu_demand),
            "mem_demand": _r(profile.mem_demand),
        },
        "basis": {
            "window": now.window.describe(),
            "days_asked": s.days,
            "percentile": percentile_name(s.percentile),
            "peaks": peaks_name(s.peak_minutes),
            "coverage_min": s.coverage_min,
            "horizon_days": s.horizon_days,
            "stopped_after_hours": s.stopped_after_hours,
            "reserve_stopped": s.reserve_stopped,
            "stopped_share_max": s.stopped_share_max,
            **(source or {}),
        },
        "after": changes,
        "fleet": totals(host_rows, now, after),
        "hosts": host_rows,
    }


def _r(value: float) -> float | None:
    """Rounded to 3 places, never -0.0: a float's noise below 0 (a flat trend's) read as a host
    past its limit."""
    return None if value is None or math.isnan(value) else round(value, 3) + 0.0
