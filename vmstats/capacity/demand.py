"""Demand per host: the member VMs' minute-by-minute use summed, then a high percentile.

Summing first and taking the percentile after is the point: two VMs busy in
the same hours need room for both peaks at once, while two whose peaks never
meet share it.  A VM's demand in a minute is ``cpu % x vCPUs`` (cores) and
``mem % x size`` (GB), taken by default at its peak of the hour (block_peaks):
the hour a burst comes in repeats, the minute does not, and a placement that
fitted bursts into each other's quiet minutes would not hold the week after.
Where a record lacks a measurement its allocation counts (the whole size);
a gap counts its hour's peak, or where the hour has no record at all the
VM's own level (its percentile over the hours it was seen), so a gap never
reads as idle; and a host whose VMs were seen in fewer than ``coverage_min``
of the minutes they should have been is reported unknown, never free.

The computation (host_demand) is pure: VM series and an inventory in, host
demand out, so tests and backtests can feed it constructed series.  The
reading of logs (reader.py) is the report's own (report/discover.py, logstore).
"""

import datetime
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from vmstats.capacity import defaults
from vmstats.capacity.errors import CapacityError
from vmstats.capacity.inventory import Host, Inventory
from vmstats.protocol import DECIMAL_RE
from vmstats.report.settings import SHAPE_TOLERANCE
from vmstats.report.stats import MAX_RESIZES, MEMORY_RESIZE
from vmstats.stamps import iso
from vmstats.words import counted

MINUTE = 60
DAY_MINUTES = 1440


@dataclass(frozen=True)
class Settings:
    """How demand is judged.  docs/CAPACITY.md explains each."""

    #: Percentile of the host's summed demand over the window (100: the maximum).
    percentile: float = defaults.PERCENTILE
    #: Share of expected VM-minutes a host's VMs must have been seen in; below it: unknown.
    coverage_min: float = 0.8
    #: Days of history (whole UTC days ending with the latest record's day).
    days: int = 14
    #: Days ahead a rising trend is projected (demand = level + slope x horizon); 0: none.
    horizon_days: float = defaults.HORIZON_DAYS
    #: A VM silent this long before the window's end is stopped: still allocated, and with
    #: reserve_stopped its own level (of when it ran) still counts; without, it adds no demand.
    stopped_after_hours: float = 24.0
    reserve_stopped: bool = defaults.RESERVE_STOPPED
    #: Past this share of its VMs stopped, a host is unknown (defaults.STOPPED_SHARE_MAX says why).
    stopped_share_max: float = defaults.STOPPED_SHARE_MAX
    #: Each VM counts its peak of every UTC block of this many minutes at each minute of the
    #: block (60: its hourly peak; 1: minute by minute).
    peak_minutes: int = defaults.PEAK_MINUTES
    #: A VM made smaller counts its new size's whole allocation until it has run this long at it
    #: (defaults.SHRUNK_SETTLE_HOURS says why).
    shrunk_settle_hours: float = defaults.SHRUNK_SETTLE_HOURS

    def describe(self) -> str:
        return "%s of %s over %s, coverage gate %g%%" % (
            percentile_name(self.percentile),
            peaks_name(self.peak_minutes),
            counted(self.days, "day"),
            self.coverage_min * 100,
        )


def parse_percentile(text: str | float) -> float:
    """``p99``, ``p95``, ``max`` or a number (0 < p <= 100) as a percentile."""
    value = str(text).strip().lower()
    if value == "max":
        return 100.0
    digits = value[1:] if value.startswith("p") else value
    if not DECIMAL_RE.match(digits):  # float() would also take p9_9 and other scripts' digits
        raise CapacityError("percentile %r: expected p99, p95, max or a number" % text)
    number = float(digits)
    if not 0 < number <= 100:
        raise CapacityError("percentile %r: must be above 0 and at most 100" % text)
    return number


def percentile_name(p: float) -> str:
    return "max" if p >= 100 else "p%g" % p


def peaks_name(minutes: int) -> str:
    """What a minute of demand is: ``hourly peaks``, ``15-minute peaks``, ``minutes``."""
    if minutes <= 1:
        return "minutes"
    return "hourly peaks" if minutes == 60 else "%d-minute peaks" % minutes


def block_peaks(series: np.ndarray, offset: int, minutes: int) -> np.ndarray:
    """Each value replaced by the largest of its UTC block of ``minutes`` (NaN: unknown, ignored).

    ``offset`` is the series' first minute within its block (minutes since the
    epoch, modulo ``minutes``), so blocks are whole hours of the clock.  A
    block with no known value stays NaN.
    """
    if minutes <= 1 or not len(series):
        return series.copy()
    head = offset % minutes
    padded = np.full(-(-(head + len(series)) // minutes) * minutes, -np.inf)
    padded[head : head + len(series)] = np.where(np.isnan(series), -np.inf, series)
    peaks = np.repeat(padded.reshape(-1, minutes).max(axis=1), minutes)[head : head + len(series)]
    peaks[np.isneginf(peaks)] = np.nan
    return peaks


def level(series: np.ndarray, p: float) -> float:
    """The ``p`` percentile of ``series`` as one of its own values (never interpolated down)."""
    if not len(series):
        return 0.0
    if p >= 100:
        return float(np.max(series))
    return float(np.percentile(series, p, method="higher"))


@dataclass(frozen=True)
class Window:
    """The minutes judged: ``minutes`` one-minute slots from ``start_ts`` (a whole minute)."""

    start_ts: int
    minutes: int

    @property
    def end_ts(self) -> int:
        return self.start_ts + (self.minutes - 1) * MINUTE

    def describe(self) -> dict:
        """The minutes, and the UTC days they fall on (``first_day`` .. ``last_day``, ``days`` of
        them): the days of logs a figure rests on, which can be fewer than asked for."""
        return {"start": iso(self.start_ts), "end": iso(self.end_ts), "minutes": self.minutes,
                **day_span(iso(self.start_ts), iso(self.end_ts))}


def day_span(start: str, end: str) -> dict:
    """The UTC days from the ISO time ``start`` to ``end``: ``{"first_day", "last_day", "days"}``."""
    first, last = (datetime.date.fromisoformat(stamp[:10]) for stamp in (start, end))
    return {"first_day": first.isoformat(), "last_day": last.isoformat(), "days": (last - first).days + 1}


@dataclass
class VmUse:
    """One VM's window: its latest labels and size, and its use per minute of the window.

    ``seen`` marks minutes with a record; ``cpu`` (cores) and ``mem`` (GB) are
    NaN where there was no record or the record did not measure that.
    ``since_start`` is True when the VM had records before the window (it was
    expected from the window's start, not from its first record inside).
    ``vcpus`` and ``mem_gb`` are its newest record's size; ``sizes`` holds,
    when the size changed in the window, each run of minutes measured at one
    size as ``(first minute, vCPUs, GB)`` (empty when it never changed).
    """

    vm: str
    host_tag: str | None
    vcpus: float
    mem_gb: float
    seen: np.ndarray
    cpu: np.ndarray
    mem: np.ndarray
    since_start: bool = False
    sizes: tuple[tuple[int, float, float], ...] = ()


@dataclass(frozen=True)
class Gone:
    """A VM heard from before the window and not in it: its last record's host tag, time and size
    (reader.read_gone).  Nothing of it is measured in the window; its host still names it."""

    vm: str
    host_tag: str | None
    last_ts: int
    vcpus: float
    mem_gb: float


@dataclass
class VmDemand:
    """A VM as its host counts it (see fill())."""

    vm: str
    host: str | None
    vcpus: float
    mem_gb: float
    cpu: np.ndarray | None  # cores per minute, gaps filled; when stopped its reserve, or None
    mem: np.ndarray | None
    covered: int  # minutes with a record whose use is known (measured, or its size)
    expected: int  # minutes it should have been seen in
    stopped: bool = False
    by_allocation: tuple[str, ...] = ()  # "cpu" / "mem": some minutes counted at full size
    size_unknown: bool = False


def at_newest_size(use: VmUse, cpu: np.ndarray, mem: np.ndarray) -> None:
    """Minutes measured at a size smaller than the newest count their share of the newest: a VM
    whose vCPUs or memory were raised may use the new size at once, and what it used at the
    old size was bounded by the old size (cores and GB are scaled in place).  Minutes at a
    larger size are left as measured here: shrunk_since() says from when a VM made smaller is
    judged instead."""
    for k, (first, vcpus, mem_gb) in enumerate(use.sizes):
        last = use.sizes[k + 1][0] if k + 1 < len(use.sizes) else len(cpu)
        if 0 < vcpus < use.vcpus:
            cpu[first:last] *= use.vcpus / vcpus
        if 0 < mem_gb < use.mem_gb:
            mem[first:last] *= use.mem_gb / mem_gb


def shrunk_since(use: VmUse) -> tuple[int, int]:
    """Per resource (vCPUs, GB), the first minute of the VM at its newest size after it was last
    made smaller, or 0 when it was not made smaller in the window.

    What it used at the larger size says nothing of what it uses in less (the report judges a
    resized VM from its resize the same way, report/stats._judged_from), and the same steps
    are resizes: vCPUs apart by more than the report's shape tolerance, memory by more than
    MEMORY_RESIZE (a smaller move is a balloon driver's drift).  A size changed more than
    MAX_RESIZES times floats (dynamic memory): its minutes keep what they measured, as the
    report judges such a VM over its whole window.
    """
    since = []
    for k, factor in ((1, 1.0 + SHAPE_TOLERANCE), (2, MEMORY_RESIZE)):
        newest = use.vcpus if k == 1 else use.mem_gb
        sizes = [run[k] for run in use.sizes]
        steps = sum(1 for a, b in zip(sizes, sizes[1:], strict=False)
                    if a > 0 and b > 0 and max(a, b) > factor * min(a, b))
        larger = [j for j, size in enumerate(sizes[:-1]) if size > factor * newest]
        since.append(use.sizes[larger[-1] + 1][0] if larger and steps <= MAX_RESIZES else 0)
    return since[0], since[1]


def fill(
    use: VmUse,
    p: float,
    stopped_after_minutes: int,
    peak_minutes: int = 1,
    offset: int = 0,
    *,
    reserve_stopped: bool,
    settle_minutes: int = int(defaults.SHRUNK_SETTLE_HOURS * 60),
) -> VmDemand:
    """A VM's demand series with nothing left unknown, and what it rests on.

    A record without a CPU or memory figure counts the VM's whole size for it
    (memory is counted by allocation where it is not measured); minutes
    measured before the VM was made larger count at its new size
    (at_newest_size).  With
    ``peak_minutes`` above 1 every minute counts the VM's peak of its block
    (``offset``: the window's first minute within a block, see block_peaks), so
    a gap inside a block with records counts the block's peak.  A block with
    no record, after the VM's first, counts its own ``p`` level, so a gap is
    never idle, and a collection outage is not read as every VM at its peak at
    once.  The minutes before its first record in the window count that
    level too (a VM created yesterday will be there in the host's busy hour
    of tomorrow), though they are not expected of it for coverage.  A VM
    silent for ``stopped_after_minutes`` before the window's end is stopped
    (its allocation still counts): with ``reserve_stopped`` it holds its room,
    that level at every minute, as what it takes back when it starts; without,
    no demand.  A VM made smaller (shrunk_since) is judged on its minutes since,
    capped by its new size, the minutes before counting its level as a new
    VM's do; until it has run ``settle_minutes`` at the new size it counts that
    size in full at every minute (listed with ``by_allocation``).
    """
    minutes = len(use.seen)
    seen_at = np.flatnonzero(use.seen)
    stopped = not len(seen_at) or minutes - 1 - seen_at[-1] >= stopped_after_minutes
    if stopped and not reserve_stopped:
        return VmDemand(use.vm, None, use.vcpus, use.mem_gb, None, None, 0, 0, stopped=True)
    start = 0 if use.since_start or not len(seen_at) else int(seen_at[0])
    expected = minutes - start
    cpu = use.cpu.astype(np.float64, copy=True)
    mem = use.mem.astype(np.float64, copy=True)
    at_newest_size(use, cpu, mem)
    by_allocation = []
    for name, series, size in (("cpu", cpu, use.vcpus), ("mem", mem, use.mem_gb)):
        blind = use.seen & np.isnan(series)
        if blind.any() and not math.isnan(size):
            series[blind] = size
            by_allocation.append(name)
    known = use.seen & ~np.isnan(cpu) & ~np.isnan(mem)
    covered = int(known[start:].sum())
    filled = []
    for name, series, size, since in zip(("cpu", "mem"), (cpu, mem), (use.vcpus, use.mem_gb),
                                         shrunk_since(use), strict=True):
        judged = known
        if since:  # made smaller: only its minutes at the new size say what it uses in it
            series[:since] = np.nan
            np.minimum(series, size, out=series)
            judged = known.copy()
            judged[:since] = False
        series = block_peaks(series, offset, peak_minutes)
        measured = series[judged]
        gap_value = level(measured, p) if len(measured) else (0.0 if math.isnan(size) else size)
        if stopped:  # reserved: its level of when it ran, whenever it starts again
            series[:] = gap_value
        series[np.isnan(series)] = gap_value
        # Before its first record too: a VM running now runs through the host's busy hours,
        # which one created an hour ago has not been seen in yet.
        series[:start] = gap_value
        if since and minutes - since < settle_minutes:  # not yet seen through a day at its size
            series[:] = size
            if name not in by_allocation:
                by_allocation.append(name)
        filled.append(series)
    cpu, mem = filled
    if stopped:
        return VmDemand(use.vm, None, use.vcpus, use.mem_gb, cpu, mem, 0, 0, stopped=True)
    size_unknown = math.isnan(use.vcpus) or math.isnan(use.mem_gb)
    return VmDemand(
        use.vm,
        None,
        use.vcpus,
        use.mem_gb,
        cpu,
        mem,
        covered,
        expected,
        by_allocation=tuple(by_allocation),
        size_unknown=size_unknown,
    )


@dataclass
class HostDemand:
    """One host's demand, headroom and allocation; ``status`` "unknown" when below the gate.

    ``cpu`` and ``mem`` (cores, GB per minute) are kept for placement with
    series; ``cpu_level`` / ``mem_level`` are their percentile, ``*_trend``
    the slope of the daily levels per week, ``*_demand`` the level plus a
    rising trend over the horizon, ``*_headroom`` the usable capacity (less
    reserve and buffer) less that demand.  ``alloc_*`` sum the members'
    sizes (stopped ones too, as Nova does) against ``(total - reserved) x ratio``;
    ``cpu`` and ``mem`` hold the stopped ones' reserve too (Settings.reserve_stopped).
    """

    host: Host
    vms: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    #: VMs the inventory names by exact id that sent nothing in the window: all their minutes missing.
    silent: list[str] = field(default_factory=list)
    #: Every VM of it with no record in the window (the silent ones, and those its selectors or
    #: host tags place that were last heard from before it), with its last record's time (None:
    #: never): unknown, named wherever the host is.
    unheard: list[tuple[str, int | None]] = field(default_factory=list)
    #: Some VM of it (one a what-if took away too) sent a record in the last stopped_after_hours.
    reporting: bool = False
    #: Its VMs in the data (what-ifs aside), and of them those stopped or never heard from.
    members: int = 0
    quiet: int = 0
    by_allocation: list[str] = field(default_factory=list)
    size_unknown: list[str] = field(default_factory=list)
    covered: int = 0
    expected: int = 0
    cpu: np.ndarray | None = None
    mem: np.ndarray | None = None
    cpu_level: float = 0.0
    mem_level: float = 0.0
    cpu_trend: float = 0.0
    mem_trend: float = 0.0
    cpu_demand: float = 0.0
    mem_demand: float = 0.0
    allocated_vcpus: float = 0.0
    allocated_mem_gb: float = 0.0

    @property
    def name(self) -> str:
        return self.host.name

    def unheard_named(self) -> list[dict]:
        """Its VMs not heard from in the window as every output names them: ``{"vm", "last_seen"}``,
        the ISO time of the last record or None (never heard from)."""
        return [{"vm": vm, "last_seen": None if ts is None else iso(ts)} for vm, ts in self.unheard]

    @property
    def coverage(self) -> float:
        return self.covered / self.expected if self.expected else 1.0

    @property
    def instances(self) -> int:
        """Its VMs as Nova counts them against ``max_instances``: running, stopped and not heard
        from alike (those a what-if takes away aside)."""
        return len(self.vms) + len(self.stopped) + len(self.unheard)

    @property
    def instances_left(self) -> float:
        """VMs it may still take under its inventory's ``max_instances`` (inf: no cap)."""
        return max(0.0, self.host.max_instances - self.instances)

    @property
    def cpu_headroom(self) -> float:
        return self.host.usable_vcpus - self.cpu_demand

    @property
    def mem_headroom(self) -> float:
        return self.host.usable_mem_gb - self.mem_demand

    @property
    def dark(self) -> bool:
        """It had VMs and every one went silent (stopped): the host itself has stopped reporting
        as far as the data can tell, which is not the same as empty.  (A host whose running VMs
        a what-if reclaims still reported: ``reporting`` is read from the data.)"""
        return bool(self.stopped) and not self.vms and not self.reporting

    def mostly_stopped(self, settings: Settings) -> bool:
        """More than ``stopped_share_max`` of its VMs stopped or never heard from: what is measured
        of it is the lesser part (read from the data, like ``reporting``, whatever a what-if
        takes away)."""
        return self.members > 0 and self.quiet > settings.stopped_share_max * self.members

    def known(self, settings: Settings) -> bool:
        """Enough of its VMs' minutes seen to say anything (a host that never had a VM is known
        empty; one whose every VM, or most, went silent is not: see dark, mostly_stopped)."""
        return (
            not self.size_unknown
            and not self.dark
            and not self.mostly_stopped(settings)
            and self.coverage >= settings.coverage_min
        )

    def status(self, settings: Settings) -> str:
        if not self.known(settings):
            return "unknown"
        return "empty" if not self.vms else "ok"


@dataclass(frozen=True)
class UnplacedUse:
    """The use of the VMs no host of the inventory claims, by the host tag they carry (None: no
    tag): their summed demand at the percentile (plus a rising trend), cores and GB, as a host's.

    The tag names a host the inventory does not list (one missing from it, or a host listed
    under another name: ``kvm01.example.com`` for ``kvm01``), so the room they take may be on
    a known host, which then looks emptier than it is (unplaced.shares withholds it).
    """

    host_tag: str | None
    vms: tuple[str, ...]
    cpu: float
    mem: float
    #: Their sizes summed (vCPUs, GB), as a host's allocation figure counts its VMs': the room
    #: Nova's allocation view has them hold.
    vcpus: float = 0.0
    mem_gb: float = 0.0

    def describe(self) -> dict:
        return {"host_tag": self.host_tag, "vms": len(self.vms), "cpu_cores": _r3(self.cpu),
                "mem_gb": _r3(self.mem), "allocated_vcpus": _r3(self.vcpus),
                "allocated_mem_gb": _r3(self.mem_gb)}


def _r3(value: float) -> float:
    return round(value, 3) + 0.0


@dataclass
class FleetDemand:
    """Every host's demand over one window, and the VMs no host claims (``unplaced``), with
    their use: per host tag (``unplaced_use``) and all of it summed minute by minute
    (``unplaced_cpu``, ``unplaced_mem``: cores and GB)."""

    window: Window
    settings: Settings
    hosts: list[HostDemand]
    unplaced: list[str]
    source: str = ""
    unplaced_use: list[UnplacedUse] = field(default_factory=list)
    unplaced_cpu: float = 0.0
    unplaced_mem: float = 0.0

    def unplaced_described(self) -> dict:
        """The unplaced VMs' use and sizes as every output gives them: the total and each host
        tag's."""
        return {"cpu_cores": _r3(self.unplaced_cpu), "mem_gb": _r3(self.unplaced_mem),
                "allocated_vcpus": _r3(sum(u.vcpus for u in self.unplaced_use)),
                "allocated_mem_gb": _r3(sum(u.mem_gb for u in self.unplaced_use)),
                "by_host_tag": [u.describe() for u in self.unplaced_use]}

    def host(self, name: str) -> HostDemand:
        for entry in self.hosts:
            if entry.name == name:
                return entry
        raise KeyError(name)


@dataclass(frozen=True)
class Change:
    """A what-if on the fleet: VMs taken away (reclaimed) and VMs resized (vCPUs, GB).

    A resize changes the allocation figure only: a downsized VM keeps the
    cores and GB it actually used.
    """

    removed: frozenset[str] = frozenset()
    resized: Mapping[str, tuple[float, float]] = field(default_factory=dict)


def host_demand(
    inventory: Inventory,
    vms: Iterable[VmUse],
    window: Window,
    settings: Settings,
    removed: Collection[str] = (),
    gone: Iterable[Gone] = (),
) -> FleetDemand:
    """Sum each host's member VMs minute by minute and take the percentile of the sum.

    ``vms`` may be a generator (one VM's arrays at a time are held, plus one
    pair of sums per host).  VMs in ``removed`` (the report's reclaim
    candidates, for "after reclaiming") are left out of demand and allocation;
    ``gone`` are the VMs last heard from before the window (demand_views).
    """
    return demand_views(inventory, vms, window, settings, [Change(frozenset(removed))], gone)[0]


def demand_views(
    inventory: Inventory,
    vms: Iterable[VmUse],
    window: Window,
    settings: Settings,
    changes: Sequence[Change],
    gone: Iterable[Gone] = (),
) -> list[FleetDemand]:
    """host_demand for several what-ifs in one pass over the VMs (each read and filled once).

    ``gone`` (reader.read_gone) are the VMs last heard from before the window (add_gone),
    iterated after ``vms``: reading the VMs finds those whose records in the window are junk.
    """
    stopped_after = int(settings.stopped_after_hours * 60)
    views = [{h.name: HostDemand(h) for h in inventory.hosts} for _change in changes]
    unplaced: list[list[str]] = [[] for _change in changes]
    #: Per view, per host tag of unplaced VMs: their VMs and summed demand per minute (cores, GB).
    strays: list[dict[str | None, list]] = [{} for _change in changes]
    seen: set[str] = set()
    for use in vms:
        seen.add(use.vm)
        if len(use.seen) != window.minutes:
            raise ValueError("VM %s has %s, the window %d" % (use.vm, counted(len(use.seen), "minute"),
                                                              window.minutes))
        name = inventory.host_of(use.vm, use.host_tag)
        if name is not None:
            heard = reporting(use, stopped_after)
            for hosts in views:  # facts of the data, whatever a what-if takes away
                hosts[name].members += 1
                hosts[name].quiet += int(not heard)
                hosts[name].reporting |= heard
        if all(use.vm in change.removed for change in changes):
            continue
        vm = fill(
            use,
            settings.percentile,
            stopped_after,
            settings.peak_minutes,
            window_offset(window, settings),
            reserve_stopped=settings.reserve_stopped,
            settle_minutes=int(settings.shrunk_settle_hours * 60),
        )
        for hosts, lost, stray, change in zip(views, unplaced, strays, changes, strict=True):
            if use.vm in change.removed:
                continue
            vcpus, mem_gb = change.resized.get(use.vm, (vm.vcpus, vm.mem_gb))
            if name is None:  # counted on no host: its use and size summed apart, said and withheld
                lost.append(use.vm)
                group = stray.setdefault(use.host_tag or None, [[], 0.0, 0.0, 0.0, 0.0])
                group[0].append(use.vm)
                if vm.cpu is not None:
                    group[1], group[2] = group[1] + vm.cpu, group[2] + vm.mem
                group[3] += 0.0 if math.isnan(vcpus) else vcpus
                group[4] += 0.0 if math.isnan(mem_gb) else mem_gb
                continue
            entry = hosts[name]
            if not math.isnan(vcpus):
                entry.allocated_vcpus += vcpus
            if not math.isnan(mem_gb):
                entry.allocated_mem_gb += mem_gb
            if vm.stopped:
                entry.stopped.append(use.vm)
                if vm.cpu is not None:
                    add_series(entry, vm)
            else:
                add_vm(entry, vm)
    named = {vm: h.name for h in inventory.hosts for vm in named_ids(h)
             if vm not in seen and inventory.host_of(vm, None) == h.name}
    last_heard = {}
    for vm in gone:
        last_heard[vm.vm] = vm.last_ts
        if vm.vm not in seen and vm.vm not in named:
            if inventory.host_of(vm.vm, vm.host_tag) is None:
                add_gone_unplaced(unplaced, strays, changes, vm, window, settings)
            else:
                add_gone(inventory, views, changes, vm, window, settings)
    out = []
    for hosts, lost, change in zip(views, unplaced, changes, strict=True):
        for entry in hosts.values():
            for vm in named_ids(entry.host):
                if named.get(vm) == entry.name:
                    entry.members += 1
                    entry.quiet += 1
                    if vm not in change.removed:
                        entry.silent.append(vm)
                        entry.unheard.append((vm, last_heard.get(vm)))
                        entry.expected += window.minutes
            entry.unheard.sort()
            settle(entry, window, settings)
        out.append(FleetDemand(window, settings, list(hosts.values()), sorted(lost)))
    for fleet, stray in zip(out, strays, strict=True):
        unplaced_use(fleet, stray)
    return out


def unplaced_use(fleet: FleetDemand, stray: dict[str | None, list]) -> None:
    """The unplaced VMs' use, per host tag and in all, judged as a host's demand is (settle): the
    percentile of their summed demand per minute, plus a rising trend over the horizon."""
    total_cpu, total_mem = 0.0, 0.0
    for tag in sorted(stray, key=lambda t: (t is None, t or "")):
        vms, cpu, mem, vcpus, mem_gb = stray[tag]
        use = UnplacedUse(tag, tuple(sorted(vms)), judged(cpu, fleet), judged(mem, fleet), vcpus, mem_gb)
        fleet.unplaced_use.append(use)
        total_cpu, total_mem = total_cpu + cpu, total_mem + mem
    fleet.unplaced_cpu, fleet.unplaced_mem = judged(total_cpu, fleet), judged(total_mem, fleet)


def judged(series: np.ndarray | float, fleet: FleetDemand) -> float:
    """Summed demand per minute as a host's demand figure: its level plus a rising trend."""
    if not isinstance(series, np.ndarray):  # nothing measured (stopped, room not reserved)
        return 0.0
    p, ahead = fleet.settings.percentile, fleet.settings.horizon_days / 7.0
    return level(series, p) + max(0.0, trend(series, fleet.window, p)) * ahead


def add_gone_unplaced(unplaced: list[list[str]], strays: list[dict[str | None, list]],
                      changes: Sequence[Change], vm: Gone, window: Window, settings: Settings) -> None:
    """A VM silent since before the window whose host tag names no host of the inventory (and no
    selector places): unplaced, as one heard from in it is, and with its size as its use at every
    minute, the room a VM kept on its host keeps (add_gone; none without reserve_stopped, or
    when its size was never sent), and that size allocated, as Nova counts it.  Left out, it was
    named nowhere."""
    sized = not (math.isnan(vm.vcpus) or math.isnan(vm.mem_gb))
    for lost, stray, change in zip(unplaced, strays, changes, strict=True):
        if vm.vm in change.removed:
            continue
        lost.append(vm.vm)
        group = stray.setdefault(vm.host_tag or None, [[], 0.0, 0.0, 0.0, 0.0])
        group[0].append(vm.vm)
        if not sized:
            continue
        vcpus, mem_gb = change.resized.get(vm.vm, (vm.vcpus, vm.mem_gb))
        group[3], group[4] = group[3] + vcpus, group[4] + mem_gb  # allocated, as add_gone counts it
        if settings.reserve_stopped:
            group[1] = group[1] + np.full(window.minutes, vcpus)
            group[2] = group[2] + np.full(window.minutes, mem_gb)


def add_gone(inventory: Inventory, views: list[dict[str, HostDemand]], changes: Sequence[Change], vm: Gone,
             window: Window, settings: Settings) -> None:
    """A VM its host's selectors or its last host tag place there, silent since before the window.

    Unknown, not gone: named with its host, one of the host's VMs not heard from (the stopped
    share), allocated its last size as Nova counts it, and, as a stopped VM keeps its room
    (Settings.reserve_stopped), keeping that size at every minute: nothing of its use was
    measured in the window, so the most it can take back is all of it.  One of unknown size
    leaves its host's figure unknown (size_unknown).  The inventory's exact ids are not
    placed here: they already count as missing for the coverage gate.
    """
    name = inventory.host_of(vm.vm, vm.host_tag)
    if name is None:
        return  # placed nowhere: add_gone_unplaced
    sized = not (math.isnan(vm.vcpus) or math.isnan(vm.mem_gb))
    for hosts, change in zip(views, changes, strict=True):
        entry = hosts[name]
        entry.members += 1
        entry.quiet += 1
        if vm.vm in change.removed:
            continue
        entry.unheard.append((vm.vm, vm.last_ts))
        if not sized:
            entry.size_unknown.append(vm.vm)
            continue
        vcpus, mem_gb = change.resized.get(vm.vm, (vm.vcpus, vm.mem_gb))
        entry.allocated_vcpus += vcpus
        entry.allocated_mem_gb += mem_gb
        if settings.reserve_stopped:
            add_series(entry, VmDemand(vm.vm, name, vcpus, mem_gb, np.full(window.minutes, vcpus),
                                       np.full(window.minutes, mem_gb), 0, 0, stopped=True))


def reporting(use: VmUse, stopped_after_minutes: int) -> bool:
    """Did the VM send a record in the last ``stopped_after_minutes`` of the window (fill()'s
    rule for stopped, read without filling)?"""
    seen_at = np.flatnonzero(use.seen[-stopped_after_minutes:]) if stopped_after_minutes > 0 else []
    return len(seen_at) > 0


def window_offset(window: Window, settings: Settings) -> int:
    """The window's first minute within its block of ``settings.peak_minutes`` (UTC)."""
    return (window.start_ts // MINUTE) % max(1, settings.peak_minutes)


def named_ids(host: Host) -> list[str]:
    """The VMs a host's selectors name exactly (no glob, no network): they should report."""
    return [p for p in host.patterns if not any(c in p for c in "*?[")]


def add_vm(entry: HostDemand, vm: VmDemand) -> None:
    """Add a running VM's filled series to its host's sums."""
    entry.vms.append(vm.vm)
    if vm.by_allocation:
        entry.by_allocation.append(vm.vm)
    if vm.size_unknown:
        entry.size_unknown.append(vm.vm)
    entry.covered += vm.covered
    entry.expected += vm.expected
    add_series(entry, vm)


def add_series(entry: HostDemand, vm: VmDemand) -> None:
    """Add a VM's demand per minute (a running VM's use, a stopped one's reserve) to its host's."""
    if entry.cpu is None:
        entry.cpu, entry.mem = vm.cpu.copy(), vm.mem.copy()
    else:
        entry.cpu += vm.cpu
        entry.mem += vm.mem


def settle(entry: HostDemand, window: Window, settings: Settings) -> None:
    """Levels, trends and demand of a host whose sums are complete."""
    if entry.cpu is None:
        entry.cpu = np.zeros(window.minutes)
        entry.mem = np.zeros(window.minutes)
    p = settings.percentile
    entry.cpu_level, entry.mem_level = level(entry.cpu, p), level(entry.mem, p)
    entry.cpu_trend = trend(entry.cpu, window, p)
    entry.mem_trend = trend(entry.mem, window, p)
    ahead = settings.horizon_days / 7.0
    entry.cpu_demand = entry.cpu_level + max(0.0, entry.cpu_trend) * ahead
    entry.mem_demand = entry.mem_level + max(0.0, entry.mem_trend) * ahead


#: Days of data a trend needs: two points always make a line, three begin to be one.
TREND_MIN_DAYS = 3


def trend(series: np.ndarray, window: Window, p: float) -> float:
    """Slope per week of the daily ``p`` levels (UTC days, only days at least half in the window)."""
    offset = (window.start_ts // MINUTE) % DAY_MINUTES
    day = (np.arange(len(series)) + offset) // DAY_MINUTES
    days, starts = np.unique(day, return_index=True)
    bounds = list(starts) + [len(series)]
    xs, ys = [], []
    for i, d in enumerate(days):
        part = series[bounds[i] : bounds[i + 1]]
        if len(part) >= DAY_MINUTES // 2:
            xs.append(float(d))
            ys.append(level(part, p))
    if len(xs) < TREND_MIN_DAYS:
        return 0.0
    slope = np.polyfit(np.array(xs), np.array(ys), 1)[0]
    return float(slope * 7.0)
