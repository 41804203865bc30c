"""Placement: which host each asked-for VM goes on, as an allocation offer.

place() is pure: host loads (limits, current demand levels, optionally the
demand per minute) and the VMs asked for (demand as a constant, or per minute
to keep their correlation with the hosts' own peaks) in, an Offer out.  It
spreads: each VM goes to the host left with the most room on its tighter
resource, which keeps every host's peak furthest from its limit.  Larger VMs
are placed first; VMs of one anti-affinity group never share a host.

The same function serves the demand basis (limits = capacity less reserve and
buffer, levels = measured percentiles) and the allocation basis Nova uses
(limits = (total - reserved) x ratio, levels = sizes allocated), so the two
answers are comparable: see loads().
"""

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from vmstats.capacity.demand import FleetDemand, level
from vmstats.words import counted

#: Slack on comparisons, so sums of float figures that meet a limit exactly still fit.
EPSILON = 1e-9

ACCEPT, PARTIAL, REJECT = "accept", "partial", "reject"


@dataclass
class HostLoad:
    """One host as placement sees it: what its demand may reach, what it is now.

    ``cpu`` / ``mem`` (per minute) are only needed for asks that carry series;
    without them a series ask counts its own level on top of the host's.
    ``max_vcpus`` / ``max_mem_gb`` bound one VM's size, whatever its demand: the
    host's own vCPUs and memory, as Nova's placement sets its ``max_unit``
    (a VM wider than the host cannot run there, however little it is expected
    to use).  ``instances_left`` is how many more VMs it may take, whatever their
    size: its inventory's ``max_instances`` less the VMs it holds, as Nova's
    NumInstancesFilter refuses a host at its cap (inf: no cap).  ``instances_withheld``
    is how many of those the unplaced VMs' share took (unplaced.instance_shares), said
    when the cap turns a VM away.
    """

    name: str
    cpu_limit: float
    mem_limit: float
    cpu_level: float
    mem_level: float
    cpu: np.ndarray | None = None
    mem: np.ndarray | None = None
    max_vcpus: float = math.inf
    max_mem_gb: float = math.inf
    instances_left: float = math.inf
    instances_withheld: float = 0.0

    def holds(self, ask: "Ask") -> bool:
        """Is the host large enough for one VM of the ask's size (its demand aside)?"""
        return ask.vcpus <= self.max_vcpus + EPSILON and ask.mem_gb <= self.max_mem_gb + EPSILON

    @property
    def cpu_room(self) -> float:
        return self.cpu_limit - self.cpu_level

    @property
    def mem_room(self) -> float:
        return self.mem_limit - self.mem_level


@dataclass(frozen=True)
class Ask:
    """One VM to place: its demand (cores, GB; constants or per-minute series), group and size.

    ``vcpus`` / ``mem_gb`` are its size (0: not checked), held against each
    host's ``max_vcpus`` / ``max_mem_gb``.
    """

    name: str
    cpu: float | np.ndarray
    mem: float | np.ndarray
    group: str | None = None  # anti-affinity: no two VMs of a group on one host
    profile: str = ""
    vcpus: float = 0.0
    mem_gb: float = 0.0

    @property
    def series(self) -> bool:
        return isinstance(self.cpu, np.ndarray) or isinstance(self.mem, np.ndarray)


@dataclass
class Offer:
    """The answer: accept (all placed), partial (some), reject (none), with where and what is left."""

    status: str
    placed: dict[str, str] = field(default_factory=dict)  # VM -> host
    rejected: dict[str, str] = field(default_factory=dict)  # VM -> why
    left: dict[str, tuple[float, float]] = field(default_factory=dict)  # host -> (cores, GB) of room

    def per_host(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for vm, host in self.placed.items():
            out.setdefault(host, []).append(vm)
        return out


def place(
    hosts: Sequence[HostLoad], asks: Sequence[Ask], percentile: float = 99.0, partial: bool = True
) -> Offer:
    """Place ``asks`` on ``hosts``; the inputs are not changed.

    A VM fits a host when the host's demand with it, at ``percentile`` over
    the minutes, stays within both limits; for constant asks that is the
    host's level plus the ask.  With ``partial`` False an offer that cannot
    place every VM places none (status reject).
    """
    state = [
        replace(
            h,
            cpu=None if h.cpu is None else h.cpu.astype(np.float64, copy=True),
            mem=None if h.mem is None else h.mem.astype(np.float64, copy=True),
        )
        for h in hosts
    ]
    table = _Hosts(state)
    size = _sizer(state)
    order = sorted(range(len(asks)), key=lambda i: -size(asks[i]))
    placed: dict[str, str] = {}
    rejected: dict[str, str] = {}
    used: dict[str, set[int]] = {}  # anti-affinity group -> hosts holding one of it
    i = 0
    while i < len(order):
        ask = asks[order[i]]
        if ask.series:
            where = _place_series(state, ask, percentile, used, placed, rejected)
            if where is not None:
                table.sync(where)
            i += 1
            continue
        j = i
        while (
            j < len(order)
            and not asks[order[j]].series
            and _shape(asks[order[j]]) == _shape(ask)
        ):
            j += 1
        _place_run(table, [asks[k] for k in order[i:j]], used, placed, rejected)
        i = j
    if rejected and not partial:
        reason = ("the VM does not fit" if len(asks) == 1
                  else "not all %s fit" % counted(len(asks), "VM", grouped=True)) \
            + " and the manifest asks for all or none"
        return Offer(
            REJECT,
            {},
            {a.name: rejected.get(a.name, reason) for a in asks},
            {h.name: (h.cpu_room, h.mem_room) for h in hosts},
        )
    status = ACCEPT if not rejected else (PARTIAL if placed else REJECT)
    placed = {a.name: placed[a.name] for a in asks if a.name in placed}  # in the asks' order
    rejected = {a.name: rejected[a.name] for a in asks if a.name in rejected}
    return Offer(status, placed, rejected, {h.name: (h.cpu_room, h.mem_room) for h in state})


def _shape(ask: Ask) -> tuple:
    """What makes two constant asks interchangeable to place(): their demand and their size."""
    return (ask.cpu, ask.mem, ask.vcpus, ask.mem_gb)


def _sizer(hosts: list[HostLoad]):
    """How big an ask is against an average host (its larger share): the sort key of place()."""
    cpu_cap = max(1e-9, sum(h.cpu_limit for h in hosts) / max(1, len(hosts)))
    mem_cap = max(1e-9, sum(h.mem_limit for h in hosts) / max(1, len(hosts)))
    return lambda ask: max(_scalar(ask.cpu) / cpu_cap, _scalar(ask.mem) / mem_cap)


def _scalar(value: float | np.ndarray, p: float = 100.0) -> float:
    return level(value, p) if isinstance(value, np.ndarray) else float(value)


def _score(host: HostLoad, cpu: float, mem: float) -> float:
    """The room left on the host's tighter resource, as a share of its limit, after adding."""
    return min(
        (host.cpu_room - cpu) / max(host.cpu_limit, 1e-9), (host.mem_room - mem) / max(host.mem_limit, 1e-9)
    )


def _fits(host: HostLoad, cpu: float, mem: float, capped: bool = True) -> bool:
    """Does one more VM of (``cpu``, ``mem``) fit the host (``capped``: under its instance cap too)?"""
    return (
        (not capped or host.instances_left >= 1)
        and host.cpu_room - cpu >= -EPSILON
        and host.mem_room - mem >= -EPSILON
        and host.cpu_limit > 0
        and host.mem_limit > 0
    )


class _Hosts:
    """The hosts being placed on, with their limits and levels also as arrays.

    A manifest of many different shapes is many runs (_place_run); building
    the arrays once, not once a run, keeps 10,000 VMs of 10,000 shapes on 500
    hosts well under a second.  The HostLoad objects stay the truth for series
    (_place_series); ``sync`` brings the arrays back in line after one.
    """

    def __init__(self, hosts: list[HostLoad]) -> None:
        self.hosts = hosts
        self.names = [h.name for h in hosts]
        self.cpu_limit = np.array([h.cpu_limit for h in hosts], dtype=np.float64)
        self.mem_limit = np.array([h.mem_limit for h in hosts], dtype=np.float64)
        self.cpu_level = np.array([h.cpu_level for h in hosts], dtype=np.float64)
        self.mem_level = np.array([h.mem_level for h in hosts], dtype=np.float64)
        self.max_vcpus = np.array([h.max_vcpus for h in hosts], dtype=np.float64)
        self.max_mem_gb = np.array([h.max_mem_gb for h in hosts], dtype=np.float64)
        self.instances_left = np.array([h.instances_left for h in hosts], dtype=np.float64)
        #: Some host has an instance cap: without one (Nova's default) the counts are not kept,
        #: as 10,000 shapes on 500 hosts took 10% longer keeping them.
        self.capping = bool(np.isfinite(self.instances_left).any())
        self.open = (self.cpu_limit > 0) & (self.mem_limit > 0)

    def add(self, k: int, cpu: float, mem: float, vms: int = 1) -> None:
        """``vms`` VMs of constant demand, ``cpu`` and ``mem`` in all, placed on host ``k``: the
        arrays and the HostLoad alike."""
        self.cpu_level[k] += cpu
        self.mem_level[k] += mem
        add_level(self.hosts[k], cpu, mem)
        if self.capping:
            self.instances_left[k] -= vms
            self.hosts[k].instances_left -= vms

    def sync(self, k: int) -> None:
        self.cpu_level[k] = self.hosts[k].cpu_level
        self.mem_level[k] = self.hosts[k].mem_level
        self.instances_left[k] = self.hosts[k].instances_left

    def capped(self, index: np.ndarray, cpu: float, mem: float) -> list[HostLoad]:
        """The hosts of ``index`` with room for one more VM of (``cpu``, ``mem``) that are at
        their instance cap: where the cap, not the room, refuses it."""
        if not self.capping:
            return []
        at_cap = index[self.instances_left[index] < 1]
        return [self.hosts[k] for k in at_cap[_room(self, at_cap, cpu, mem, capped=False) > 0]]

    def holding(self, ask: Ask) -> np.ndarray:
        """Indexes of the hosts large enough for one VM of the ask's size (HostLoad.holds)."""
        return np.flatnonzero(
            (self.max_vcpus + EPSILON >= ask.vcpus) & (self.max_mem_gb + EPSILON >= ask.mem_gb)
        )


def _place_run(
    hosts: _Hosts,
    run: list[Ask],
    used: dict[str, set[int]],
    placed: dict[str, str],
    rejected: dict[str, str],
) -> None:
    """Place asks of one constant size: those of anti-affinity groups first, a heap pop each,
    then the others all at once (_place_bulk), which spreads them the same way.  Only hosts
    large enough for one such VM are tried; where none is, each gets that as its reason."""
    cpu, mem = float(run[0].cpu), float(run[0].mem)
    large = hosts.holding(run[0])
    if hosts.hosts and not len(large):
        for ask in run:
            rejected[ask.name] = _too_large(ask, hosts.hosts)
        return
    if len(run) == 1:  # the common case of a manifest of many shapes
        _place_one(hosts, large, run[0], cpu, mem, used, placed, rejected)
        return
    grouped = [ask for ask in run if ask.group]
    if grouped:
        _place_heap(hosts, large, grouped, cpu, mem, used, placed, rejected)
    free = [ask for ask in run if not ask.group]
    if free:
        _place_bulk(hosts, large, free, cpu, mem, placed, rejected)


def _scores(hosts: _Hosts, index: np.ndarray, cpu: float, mem: float, k: np.ndarray | int = 1):
    """Room left on each host's tighter resource, as a share of its limit, after ``k`` more
    VMs of (``cpu``, ``mem``) (_score, for many hosts at once)."""
    cpu_limit, mem_limit = hosts.cpu_limit[index], hosts.mem_limit[index]
    return np.minimum(
        (cpu_limit - hosts.cpu_level[index] - k * cpu) / np.maximum(cpu_limit, 1e-9),
        (mem_limit - hosts.mem_level[index] - k * mem) / np.maximum(mem_limit, 1e-9),
    )


def _room(hosts: _Hosts, index: np.ndarray, cpu: float, mem: float, capped: bool = True) -> np.ndarray:
    """How many VMs of (``cpu``, ``mem``) each host of ``index`` has room for (_fits, counted),
    at most its instances left (``capped``)."""
    cpu_room = hosts.cpu_limit[index] - hosts.cpu_level[index]
    mem_room = hosts.mem_limit[index] - hosts.mem_level[index]
    with np.errstate(divide="ignore", invalid="ignore"):
        by_cpu = np.floor(cpu_room / cpu + EPSILON) if cpu > 0 else np.where(cpu_room >= -EPSILON, np.inf, 0)
        by_mem = np.floor(mem_room / mem + EPSILON) if mem > 0 else np.where(mem_room >= -EPSILON, np.inf, 0)
    room = np.minimum(by_cpu, by_mem)
    if capped and hosts.capping:
        room = np.minimum(room, np.floor(hosts.instances_left[index] + EPSILON))
    room[~hosts.open[index] | ~(room > 0)] = 0
    return room


def _place_one(
    hosts: _Hosts,
    index: np.ndarray,
    ask: Ask,
    cpu: float,
    mem: float,
    used: dict[str, set[int]],
    placed: dict[str, str],
    rejected: dict[str, str],
) -> None:
    """One VM of its shape: to the host with the most room left after it (first on ties), as
    the heap's first pop would, outside its group's hosts."""
    fit = index[_room(hosts, index, cpu, mem) > 0]
    taken = used.get(ask.group, set()) if ask.group else set()
    free = fit[~np.isin(fit, list(taken))] if taken else fit
    if not len(free):
        rejected[ask.name] = _why(ask, len(fit) > 0, hosts.capped(index, cpu, mem))
        return
    where = int(free[np.argmax(_scores(hosts, free, cpu, mem))])
    placed[ask.name] = hosts.names[where]
    hosts.add(where, cpu, mem)
    if ask.group:
        used.setdefault(ask.group, set()).add(where)


def _place_heap(
    hosts: _Hosts,
    index: np.ndarray,
    run: list[Ask],
    cpu: float,
    mem: float,
    used: dict[str, set[int]],
    placed: dict[str, str],
    rejected: dict[str, str],
) -> None:
    """A heap of hosts by the room they would have left; one pop per VM, skipping its group's hosts.

    Within the run a group that found no host stays without one (hosts only
    fill, its hosts only grow), so its later VMs are refused without another
    pass over the heap: a group of 10,000 on 500 hosts is 500 pops, not 5 million.
    """
    fit = index[_room(hosts, index, cpu, mem) > 0]
    heap = list(zip((-_scores(hosts, fit, cpu, mem)).tolist(), fit.tolist(), strict=True))
    heapq.heapify(heap)
    full: dict[str, str] = {}  # group -> why its VMs of this run found no host
    for ask in run:
        if ask.group in full:
            rejected[ask.name] = full[ask.group]
            continue
        taken = used.get(ask.group, set()) if ask.group else set()
        skipped = []
        while heap and heap[0][1] in taken:
            skipped.append(heapq.heappop(heap))
        if not heap:
            rejected[ask.name] = _why(ask, bool(skipped), hosts.capped(index, cpu, mem))
            if ask.group:
                full[ask.group] = rejected[ask.name]
        else:
            _neg, k = heapq.heappop(heap)
            hosts.add(k, cpu, mem)
            placed[ask.name] = hosts.names[k]
            if ask.group:
                used.setdefault(ask.group, set()).add(k)
            if _fits(hosts.hosts[k], cpu, mem):
                heapq.heappush(heap, (-_score(hosts.hosts[k], cpu, mem), k))
        for entry in skipped:
            heapq.heappush(heap, entry)


def _place_bulk(
    hosts: _Hosts,
    index: np.ndarray,
    run: list[Ask],
    cpu: float,
    mem: float,
    placed: dict[str, str],
    rejected: dict[str, str],
) -> None:
    """Place ``run`` (same size, no group) on the hosts of ``index`` as the heap would, without a
    Python step per VM.

    The k-th VM a host takes leaves it ``score(k)`` of room, falling with k;
    one at a time to the host with the most room left is therefore the same
    as taking the ``len(run)`` largest scores over all hosts and all k they
    have room for (ties to the host listed first, as the heap breaks them).
    """
    n = len(run)
    room = np.minimum(_room(hosts, index, cpu, mem), n).astype(np.int64)
    host = np.repeat(index, room)
    k = np.arange(len(host)) - np.repeat(np.cumsum(room) - room, room) + 1
    score = _scores(hosts, host, cpu, mem, k)
    chosen = host[np.lexsort((host, -score))[:n]]
    for ask, where in zip(run, chosen.tolist(), strict=False):
        placed[ask.name] = hosts.names[where]
    for where, count in zip(*np.unique(chosen, return_counts=True), strict=True):
        hosts.add(int(where), int(count) * cpu, int(count) * mem, int(count))
    if len(chosen) < n:
        why = _why(run[0], False, hosts.capped(index, cpu, mem))
        for ask in run[len(chosen) :]:
            rejected[ask.name] = why


def add_level(host: HostLoad, cpu: float, mem: float) -> None:
    """Constant demand placed on a host: its levels and, when it has them, its series move as much."""
    host.cpu_level += cpu
    host.mem_level += mem
    if host.cpu is not None:
        host.cpu += cpu
    if host.mem is not None:
        host.mem += mem


def _place_series(
    state: list[HostLoad],
    ask: Ask,
    p: float,
    used: dict[str, set[int]],
    placed: dict[str, str],
    rejected: dict[str, str],
) -> int | None:
    """Place one ask with per-minute demand: candidates by estimated room, checked exactly.
    Returns the index of the host it went to (None: rejected)."""
    taken = used.get(ask.group, set()) if ask.group else set()
    cpu_level, mem_level = _scalar(ask.cpu, p), _scalar(ask.mem, p)
    cpu_low, mem_low = _low(ask.cpu), _low(ask.mem)
    if state and not any(h.holds(ask) for h in state):
        rejected[ask.name] = _too_large(ask, state)
        return None
    candidates = sorted(
        (k for k, h in enumerate(state)
         if k not in taken and h.holds(ask) and h.cpu_limit > 0 and h.mem_limit > 0
         and h.instances_left >= 1),
        key=lambda k: (-_score(state[k], cpu_level, mem_level), k),
    )
    for k in candidates:
        host = state[k]
        if host.cpu_room < cpu_low - EPSILON or host.mem_room < mem_low - EPSILON:
            continue  # level(a + b) >= level(a) + min(b): cannot fit
        cpu_after, new_cpu = _with(host.cpu, host.cpu_level, ask.cpu, cpu_level, p)
        if cpu_after > host.cpu_limit + EPSILON:
            continue
        mem_after, new_mem = _with(host.mem, host.mem_level, ask.mem, mem_level, p)
        if mem_after > host.mem_limit + EPSILON:
            continue
        host.cpu_level, host.mem_level = cpu_after, mem_after
        host.cpu, host.mem = new_cpu, new_mem
        host.instances_left -= 1
        placed[ask.name] = host.name
        if ask.group:
            used.setdefault(ask.group, set()).add(k)
        return k
    blocked = any(_fits(state[k], cpu_level, mem_level) and state[k].holds(ask) for k in taken)
    capped = [h for k, h in enumerate(state) if k not in taken and h.holds(ask) and h.instances_left < 1
              and _fits(h, cpu_level, mem_level, capped=False)]
    rejected[ask.name] = _why(ask, blocked, capped)
    return None


def _low(value: float | np.ndarray) -> float:
    return float(np.min(value)) if isinstance(value, np.ndarray) and len(value) else _scalar(value)


def _with(
    host_series: np.ndarray | None, host_level: float, ask: float | np.ndarray, ask_level: float, p: float
) -> tuple[float, np.ndarray | None]:
    """The host's level with the ask added, and its new series (None when it has none)."""
    if host_series is None:
        return host_level + ask_level, None
    total = host_series + ask
    return level(total, p), total


def _too_large(ask: Ask, state: list[HostLoad]) -> str:
    """The reason for an ask no host could hold at all, with the largest host to compare."""
    vcpus = max(h.max_vcpus for h in state)
    mem_gb = max(h.max_mem_gb for h in state)
    return (
        "larger than every known host: %g vCPUs and %g GB asked, the most a host has is %g vCPUs and %g GB"
        % (ask.vcpus, ask.mem_gb, vcpus, mem_gb)
    )


def _why(ask: Ask, blocked_by_group: bool, capped: Sequence[HostLoad] = (), most: int = 5) -> str:
    """Why an ask found no host: its group, the instance cap of the hosts with room (``capped``,
    each named with the VMs of its cap withheld for the unplaced VMs, when any), or no room at
    all."""
    if blocked_by_group:
        return "anti-affinity: every host with room already holds a VM of group %r" % ask.group
    demand = "%.2f cores and %.2f GB of demand" % (_scalar(ask.cpu), _scalar(ask.mem))
    if capped:  # the cap binds: without it these hosts would take the VM
        named = [h.name if not h.instances_withheld else "%s (%s of it withheld for unplaced VMs)" % (
            h.name, counted(int(h.instances_withheld), "instance", grouped=True)) for h in capped[:most]]
        return "every host with room for %s is at its instance cap (max_instances): %s%s" % (
            demand, ", ".join(named), ", ..." if len(capped) > most else "")
    return "no host has room for %s" % demand


def loads(
    fleet: FleetDemand,
    basis: str = "demand",
    series: bool = False,
    cpu_ratio: float | None = None,
    ram_ratio: float | None = None,
) -> list[HostLoad]:
    """The known hosts of ``fleet`` as placement loads; unknown hosts are left out on both bases,
    so a comparison of bases (the backtest) places on the same hosts.

    ``basis`` "demand": limits are capacity less reserve and buffer, levels the
    measured demand (with its ``series`` when asked).  "allocation": Nova's
    view, limits ``(total - reserved) x ratio`` (the host's ratios, or
    ``cpu_ratio`` / ``ram_ratio``), levels the sizes allocated; asks are then
    each VM's size.  (The Nova figure beside a headroom or admission answer
    counts every host instead, as Nova would: see headroom.py, summary.py.)
    """
    out = []
    for entry in fleet.hosts:
        if not entry.known(fleet.settings):
            continue
        host = entry.host
        if basis == "allocation":
            cr = host.cpu_ratio if cpu_ratio is None else cpu_ratio
            rr = host.ram_ratio if ram_ratio is None else ram_ratio
            out.append(
                HostLoad(
                    host.name,
                    (host.vcpus - host.reserve_vcpus) * cr,
                    (host.mem_gb - host.reserve_mem_gb) * rr,
                    entry.allocated_vcpus,
                    entry.allocated_mem_gb,
                    max_vcpus=host.vcpus,
                    max_mem_gb=host.mem_gb,
                    instances_left=entry.instances_left,
                )
            )
        elif basis == "demand":
            # A rising trend's projection lifts the whole series: its level moves by as much.
            out.append(
                HostLoad(
                    host.name,
                    host.usable_vcpus,
                    host.usable_mem_gb,
                    entry.cpu_demand,
                    entry.mem_demand,
                    entry.cpu + (entry.cpu_demand - entry.cpu_level) if series else None,
                    entry.mem + (entry.mem_demand - entry.mem_level) if series else None,
                    host.vcpus,
                    host.mem_gb,
                    entry.instances_left,
                )
            )
        else:
            raise ValueError("basis is demand or allocation, not %r" % basis)
    return out
