"""The admission backtest: plan on one window, admit by the offer, judge on the next window.

Advice about room is only worth what happened after it was taken.  The
backtest takes the capacity package's answer on one window of history (the
plan), places arrivals by its offer exactly as an admission would, then looks
at the following window with the admitted VMs on their hosts: how many
host-minutes went over what the host has (its vCPUs or memory less the
reserve; the buffer is the plan's margin, not the host's limit).  The same
arrivals are offered to the allocation basis Nova uses, at ratio 1.0 and at
Nova's default ratios, so the count admitted on use has an honest reference.

Arrivals are either VMs from the history (``pool``): copies of those VMs, each
carrying its own minute-by-minute use, the plan window's to be placed and the
judging window's to be judged, offered in rounds (one copy of every pool VM a
round); or a synthetic profile (``4x16@30%``), offered ``PROFILE_ROUND`` a
round, whose use in the judging window is its stated expected use at every
minute.  Rounds stop after the first that is not placed whole (see admit).  Copies
are as correlated with their originals as two VMs can be, so this is the
harder case for a plan that counts correlated peaks.

What a window saw is judged as measured: a VM-minute without a record adds
nothing (the VM was off or silent; the judging window's coverage is shown),
a record without a memory (or CPU) figure counts the VM's whole size for it,
as the plan does.

The VMs the inventory does not place run on some host all the same, as the
live view holds (unplaced.py): the plan withholds their use, their sizes on
the allocation bases and their number from the capped hosts, as an admission
answer does, and each basis's judge adds their measured use to each host in
the proportions that basis's plan withheld their room by (unplaced.parts of
unplaced.rooms_of its loads); the residents alone, with no plan, are judged
with it where the demand basis puts it.  Left out, a plan was judged on hosts
that carried none of the use it had been told to leave room for, and offered
none of it itself; judged where another basis's plan put it, a plan was
marked over for use it had kept room for on another host.

The computation (``backtest``) is pure: VM windows and an inventory in, a
Backtest out; ``run`` reads the logs the way ``vmstats admit`` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vmstats import logstore
from vmstats.capacity import reader, unplaced
from vmstats.capacity.admission import withhold, withhold_instances
from vmstats.capacity.demand import (
    Gone,
    Settings,
    VmUse,
    Window,
    fill,
    host_demand,
    level,
    peaks_name,
    percentile_name,
    window_offset,
)
from vmstats.capacity.headroom import instances_withheld
from vmstats.capacity.inventory import Inventory
from vmstats.capacity.placement import Ask, HostLoad, loads, place
from vmstats.capacity.profiles import Profile
from vmstats.report.settings import ReportError
from vmstats.words import counted, number

#: Nova's default allocation ratios since 2023 (the reference the targets name).
NOVA_CPU_RATIO = 4.0
NOVA_RAM_RATIO = 1.0
#: Synthetic arrivals offered per round.
PROFILE_ROUND = 100
#: Rounds offered at most: a bound on the work, far beyond any fleet's room.
MAX_ROUNDS = 500
#: Slack on "over capacity", so sums of float figures that meet the capacity exactly are not over.
EPSILON = 1e-6

#: The bases compared: name -> (basis of placement.loads, cpu ratio, ram ratio).
BASES = {
    "demand": ("demand", None, None),
    "allocation 1.0": ("allocation", 1.0, 1.0),
    "allocation nova": ("allocation", NOVA_CPU_RATIO, NOVA_RAM_RATIO),
}

#: A host's (or the unplaced VMs') use per minute of the judging window: cores, GB.
_Use = tuple[np.ndarray, np.ndarray]


@dataclass
class Template:
    """An arrival's shape: its size and its use per minute in each window (cores, GB)."""

    name: str
    vcpus: float
    mem_gb: float
    plan_cpu: np.ndarray | float
    plan_mem: np.ndarray | float
    judge_cpu: np.ndarray | float
    judge_mem: np.ndarray | float


@dataclass
class Outcome:
    """One basis: what it admitted, and how the hosts fared in the judging window."""

    basis: str
    admitted: int
    placed: dict[str, str] = field(default_factory=dict)  # arrival -> host
    rounds: int = 0
    over_minutes: int = 0  # host-minutes over on CPU or memory
    over_cpu_minutes: int = 0
    over_mem_minutes: int = 0
    host_minutes: int = 0
    peak_cpu_share: float = 0.0  # the busiest host-minute, as a share of that host's capacity
    peak_mem_share: float = 0.0
    per_host: list[dict[str, Any]] = field(default_factory=list)

    @property
    def over_share(self) -> float:
        return self.over_minutes / self.host_minutes if self.host_minutes else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "basis": self.basis,
            "admitted": self.admitted,
            "rounds": self.rounds,
            "host_minutes": self.host_minutes,
            "over_minutes": self.over_minutes,
            "over_cpu_minutes": self.over_cpu_minutes,
            "over_mem_minutes": self.over_mem_minutes,
            "over_share": self.over_share,
            "peak_cpu_share": self.peak_cpu_share,
            "peak_mem_share": self.peak_mem_share,
            "per_host": self.per_host,
        }


@dataclass
class Backtest:
    """The plan's data, the arrivals, and one Outcome per basis plus the residents alone."""

    plan: Window
    judge: Window
    settings: Settings
    arrivals: str
    hosts: int
    unknown_hosts: list[str]
    residents: int
    unplaced: list[str]
    judge_coverage: float
    baseline: Outcome
    outcomes: dict[str, Outcome]
    source: str = ""
    issues: list[dict] = field(default_factory=list)
    #: The days each window was asked to hold (--days; 0: not said, as the pure backtest() is).
    days_asked: int = 0

    def fewer_days(self) -> list[str]:
        """What each window holds when its logs hold fewer UTC days than asked: a plan on two
        days given as one on fourteen would be trusted as such.  The plan falls short where the
        logs start later than its first day asked, the judging window where they end earlier."""
        out = []
        for name, window, where in (("the plan", self.plan, "before"), ("the judging window", self.judge,
                                                                           "after")):
            span = window.describe()
            if span["days"] < self.days_asked:
                edge = span["first_day"] if where == "before" else span["last_day"]
                out.append("%s rests on %s of logs (%s .. %s), not the %d of --days: the logs hold no "
                           "day %s %s" % (name, counted(span["days"], "day"), span["first_day"],
                                          span["last_day"], self.days_asked, where, edge))
        return out

    def as_dict(self) -> dict[str, Any]:
        demand = self.outcomes["demand"].admitted
        ratio_1 = self.outcomes["allocation 1.0"].admitted
        nova = self.outcomes["allocation nova"].admitted
        return {
            "plan": self.plan.describe(),
            "judge": self.judge.describe(),
            "days_asked": self.days_asked,
            "fewer_days": self.fewer_days(),
            "basis": "%s of summed demand (%s), trend over %g days, buffer per host (inventory)"
            % (percentile_name(self.settings.percentile), peaks_name(self.settings.peak_minutes),
               self.settings.horizon_days),
            "coverage_gate": self.settings.coverage_min,
            "inventory": self.source,
            "arrivals": self.arrivals,
            "hosts": self.hosts,
            "unknown_hosts": self.unknown_hosts,
            "residents": self.residents,
            "unplaced": self.unplaced,
            "judge_coverage": self.judge_coverage,
            "nova_ratios": {"cpu": NOVA_CPU_RATIO, "ram": NOVA_RAM_RATIO},
            "admitted_vs_ratio_1": demand / ratio_1 if ratio_1 else None,
            "admitted_vs_nova": demand / nova if nova else None,
            "baseline": self.baseline.as_dict(),
            "outcomes": {name: o.as_dict() for name, o in self.outcomes.items()},
            "issues": self.issues,
        }


def measured(use: VmUse) -> tuple[np.ndarray, np.ndarray]:
    """A window's use as it happened: nothing where unseen, the size where a record measured nothing."""
    out = []
    for series, size in ((use.cpu, use.vcpus), (use.mem, use.mem_gb)):
        values = np.where(use.seen & np.isnan(series), 0.0 if math.isnan(size) else size, series)
        out.append(np.nan_to_num(values, nan=0.0))
    return out[0], out[1]


def templates_from_history(plan: Sequence[VmUse], judge: dict[str, VmUse], settings: Settings,
                           judge_minutes: int, offset: int = 0) -> list[Template]:
    """Arrival shapes from VMs of the history: the plan's view of their use, and what they did next.

    The plan's view is the one its residents get (fill(): the settings' peaks,
    gaps filled; ``offset`` as demand.window_offset); what they did next is
    judged minute by minute, as measured.
    """
    stopped_after = int(settings.stopped_after_hours * 60)
    out = []
    for use in plan:
        demand = fill(use, settings.percentile, stopped_after, settings.peak_minutes, offset,
                      reserve_stopped=False, settle_minutes=int(settings.shrunk_settle_hours * 60))
        if demand.stopped or demand.size_unknown:
            continue  # nothing to learn its use from, or no size to allocate
        later = judge.get(use.vm)
        if later is None:
            cpu, mem = np.zeros(judge_minutes), np.zeros(judge_minutes)
        else:
            cpu, mem = measured(later)
        out.append(Template(use.vm, use.vcpus, use.mem_gb, demand.cpu, demand.mem, cpu, mem))
    return out


def template_from_profile(profile: Profile) -> Template:
    """A synthetic arrival: its expected use, planned and judged as a constant."""
    return Template(profile.name(), profile.vcpus, profile.mem_gb, profile.cpu_demand, profile.mem_demand,
                    profile.cpu_demand, profile.mem_demand)


def admit(hosts: list[HostLoad], templates: Sequence[Template], basis: str, percentile: float,
          rounds_of: int = 1, max_rounds: int = MAX_ROUNDS) -> tuple[dict[str, tuple[int, str]], int]:
    """Offer rounds of arrivals to ``hosts`` until a round is not placed whole.

    A round is one manifest: one copy of each history template, or
    ``rounds_of`` copies of a profile; what the last round placed counts (a
    partial answer admits that much).  Every basis stops by the same rule, so
    none is favoured by choosing which VMs it takes: a rule that went on
    offering after rejections would fill the hosts with the copies of
    whichever VMs were quietest in the plan window, the ones most likely to
    be busier next.  Returns ``{arrival: (template index, host)}`` and the
    rounds offered.  ``hosts`` are not changed.
    """
    state = [replace(h, cpu=None if h.cpu is None else h.cpu.copy(),
                     mem=None if h.mem is None else h.mem.copy()) for h in hosts]
    by_name = {h.name: h for h in state}
    placed: dict[str, tuple[int, str]] = {}
    for round_number in range(1, max_rounds + 1):
        asks, origin = [], {}
        for index, template in enumerate(templates):
            for copy in range(rounds_of):
                name = "%s#%d" % (template.name, (round_number - 1) * rounds_of + copy + 1)
                if basis == "allocation":
                    cpu, mem = template.vcpus, template.mem_gb
                else:
                    cpu, mem = template.plan_cpu, template.plan_mem
                asks.append(Ask(name, cpu, mem, vcpus=template.vcpus, mem_gb=template.mem_gb))
                origin[name] = index
        offer = place(state, asks, percentile)
        by_ask = {ask.name: ask for ask in asks}
        for name, host_name in offer.placed.items():
            placed[name] = (origin[name], host_name)
            _add(by_name[host_name], by_ask[name], percentile)
        if len(offer.placed) < len(asks):
            return placed, round_number
    return placed, max_rounds


def _add(host: HostLoad, ask: Ask, percentile: float) -> None:
    """The host's load with ``ask`` on it, the way place() counts it."""
    if host.cpu is not None:
        host.cpu = host.cpu + ask.cpu
        host.mem = host.mem + ask.mem
        host.cpu_level = level(host.cpu, percentile)
        host.mem_level = level(host.mem, percentile)
    else:
        host.cpu_level += float(level(ask.cpu, percentile) if isinstance(ask.cpu, np.ndarray) else ask.cpu)
        host.mem_level += float(level(ask.mem, percentile) if isinstance(ask.mem, np.ndarray) else ask.mem)


def judge(inventory: Inventory, resident_sums: dict[str, _Use],
          placed: dict[str, tuple[int, str]], templates: Sequence[Template], minutes: int,
          basis: str, admitted: int, rounds: int, stray: _Use | None = None,
          parts: dict[str, tuple[float, float]] | None = None) -> Outcome:
    """Host-minutes over capacity in the judging window with the admitted VMs on their hosts,
    and the use of the VMs no host claims (``stray``) on each host of ``parts`` in proportion
    (unplaced.parts of the plan's loads: a share of 1 per resource), where the plan withheld
    their room."""
    counts: dict[str, dict[int, int]] = {}
    for index, host_name in placed.values():
        per = counts.setdefault(host_name, {})
        per[index] = per.get(index, 0) + 1
    outcome = Outcome(basis, admitted, {vm: host for vm, (_i, host) in placed.items()}, rounds)
    for host in inventory.hosts:
        cpu, mem = resident_sums.get(host.name, (np.zeros(minutes), np.zeros(minutes)))
        cpu, mem = cpu.copy(), mem.copy()
        cpu_part, mem_part = (parts or {}).get(host.name, (0.0, 0.0))
        if stray is not None and (cpu_part > 0 or mem_part > 0):
            cpu += cpu_part * stray[0]
            mem += mem_part * stray[1]
        for index, count in counts.get(host.name, {}).items():
            cpu += count * np.asarray(templates[index].judge_cpu, float)
            mem += count * np.asarray(templates[index].judge_mem, float)
        cpu_cap = host.vcpus - host.reserve_vcpus
        mem_cap = host.mem_gb - host.reserve_mem_gb
        over_cpu = cpu > cpu_cap + EPSILON
        over_mem = mem > mem_cap + EPSILON
        over = int((over_cpu | over_mem).sum())
        outcome.over_minutes += over
        outcome.over_cpu_minutes += int(over_cpu.sum())
        outcome.over_mem_minutes += int(over_mem.sum())
        outcome.host_minutes += minutes
        peak_cpu = float(cpu.max()) / cpu_cap if minutes else 0.0
        peak_mem = float(mem.max()) / mem_cap if minutes else 0.0
        outcome.peak_cpu_share = max(outcome.peak_cpu_share, peak_cpu)
        outcome.peak_mem_share = max(outcome.peak_mem_share, peak_mem)
        outcome.per_host.append({
            "host": host.name, "admitted": sum(counts.get(host.name, {}).values()),
            "over_minutes": over, "peak_cpu_share": peak_cpu, "peak_mem_share": peak_mem,
        })
    return outcome


def backtest(inventory: Inventory, plan_uses: Sequence[VmUse], judge_uses: Sequence[VmUse],
             plan: Window, judge_window: Window, settings: Settings, pool: Sequence[str] | None = None,
             profile: Profile | None = None, max_rounds: int = MAX_ROUNDS,
             gone: Sequence[Gone] = ()) -> Backtest:
    """Plan on ``plan_uses``, admit arrivals by each basis, judge on ``judge_uses``.

    ``pool`` names the VMs whose copies arrive (None: the VMs the inventory
    does not place); ``profile`` replaces them with a synthetic shape;
    ``gone``: the VMs last heard from before the plan window, as an answer counts them.
    """
    fleet = host_demand(inventory, plan_uses, plan, settings, gone=gone)
    unknown = [h.name for h in fleet.hosts if not h.known(settings)]
    residents = sum(len(h.vms) + len(h.stopped) for h in fleet.hosts)
    if profile is not None:
        templates = [template_from_profile(profile)]
        arrivals = "synthetic profile %s, offered %d a round until a round is not placed whole" % (
            profile.name(), PROFILE_ROUND)
        rounds_of = PROFILE_ROUND
    else:
        names = set(fleet.unplaced if pool is None else pool)
        later = {u.vm: u for u in judge_uses if u.vm in names}
        templates = templates_from_history([u for u in plan_uses if u.vm in names], later, settings,
                                           judge_window.minutes, window_offset(plan, settings))
        if not templates:
            raise ReportError("no arrivals: %s" % (
                "every VM of the plan window is on a host (name the arrivals' VMs)" if pool is None
                else "no VM of the plan window matches the arrivals' selectors, or none has a size"))
        arrivals = ("copies of %s of the history (their own use in each window), one of each a round "
                    "until a round is not placed whole" % counted(len(templates), "VM", grouped=True))
        rounds_of = 1
    residents_use, stray, seen, expected = _resident_sums(inventory, judge_uses, judge_window.minutes)
    use = fleet.unplaced_described() if fleet.unplaced else {}
    counted_vms = instances_withheld(fleet)
    outcomes = {}
    spread = {}
    for name, (basis, cpu_ratio, ram_ratio) in BASES.items():
        hosts = loads(fleet, basis, series=(basis == "demand"), cpu_ratio=cpu_ratio, ram_ratio=ram_ratio)
        # Where this plan puts the unplaced VMs: its judge puts their measured use there too.
        spread[name] = unplaced.parts(unplaced.rooms_of(hosts))
        # The unplaced VMs' room, withheld as a live answer withholds it (on the known hosts the
        # bases are compared on; by their sizes at this basis's ratios on the allocation ones).
        withhold(hosts, *unplaced.amounts(use, basis))
        withhold_instances(hosts, len(fleet.unplaced), counted_vms)
        placed, rounds = admit(hosts, templates, basis, settings.percentile, rounds_of, max_rounds)
        outcomes[name] = judge(inventory, residents_use, placed, templates, judge_window.minutes, name,
                               len(placed), rounds, stray, spread[name])
    # The residents alone have no plan of their own: the unplaced VMs where measured room puts them.
    baseline = judge(inventory, residents_use, {}, templates, judge_window.minutes, "residents only", 0, 0,
                     stray, spread["demand"])
    return Backtest(plan, judge_window, settings, arrivals, len(inventory.hosts), unknown, residents,
                    fleet.unplaced, seen / expected if expected else 1.0, baseline, outcomes,
                    inventory.source)


def _resident_sums(inventory: Inventory, uses: Sequence[VmUse], minutes: int,
                   ) -> tuple[dict[str, _Use], _Use, int, int]:
    """Each host's measured use per minute of the judging window, the use of the VMs no host
    claims (cores, GB per minute: :func:`judge` puts it on the hosts), and the residents'
    coverage."""
    sums: dict[str, _Use] = {}
    stray_cpu, stray_mem = np.zeros(minutes), np.zeros(minutes)
    seen = expected = 0
    for use in uses:
        host = inventory.host_of(use.vm, use.host_tag)
        cpu, mem = measured(use)
        if host is None:
            stray_cpu += cpu
            stray_mem += mem
            continue
        if host in sums:
            sums[host][0][:] += cpu
            sums[host][1][:] += mem
        else:
            sums[host] = (cpu.copy(), mem.copy())
        seen += int(use.seen.sum())
        expected += minutes
    return sums, (stray_cpu, stray_mem), seen, expected


def windows(data_dirs: Sequence[str], days: int, plan_until: str | None) -> tuple[reader.Logs, reader.Logs]:
    """The plan's and the judging window's logs: ``days`` whole UTC days each, back to back.

    Without ``plan_until`` the judging window ends with the latest day that
    has logs and the plan is the ``days`` before it.
    """
    if plan_until is None:
        latest = reader.find_logs(data_dirs, 1)
        plan_last = latest.last_day - days
    else:
        from vmstats.report.build import parse_day

        plan_last = parse_day(plan_until, "--until")
    plan = reader.find_logs(data_dirs, days, logstore.day_name(plan_last))
    try:
        judged: reader.Logs | None = reader.find_logs(data_dirs, days, logstore.day_name(plan_last + days))
    except ReportError:  # "no logs between" the days after --until: named no day the operator gave
        judged = None
    if judged is None or judged.window.start_ts <= plan.window.end_ts:
        raise ReportError("the logs hold no day after the plan window %s .. %s to judge it on (their last "
                          "is %s): give an --until before it, or fewer --days" % (
                              logstore.day_name(plan.first_day), logstore.day_name(plan_last),
                              logstore.day_name(plan.held[1])))
    return plan, judged


def run(data_dirs: Sequence[str], inventory: Inventory, settings: Settings, days: int,
        plan_until: str | None = None, pool_selectors: Sequence[str] = (), profile: Profile | None = None,
        max_rounds: int = MAX_ROUNDS) -> Backtest:
    """The backtest on logs: two windows read the way ``vmstats admit`` reads one."""
    from vmstats.report.settings import parse_selector
    from vmstats.selectors import selected

    plan_logs, judge_logs = windows(data_dirs, days, plan_until)
    plan_uses = list(reader.read_vms(plan_logs))
    judge_uses = list(reader.read_vms(judge_logs))
    pool = None
    if pool_selectors:
        patterns, networks = parse_selector(list(pool_selectors), "--arrivals")
        pool = [u.vm for u in plan_uses if selected(u.vm, patterns, networks)]
    result = backtest(inventory, plan_uses, judge_uses, plan_logs.window, judge_logs.window, settings, pool,
                      profile, max_rounds, list(reader.read_gone(plan_logs)))
    result.issues = plan_logs.issues + judge_logs.issues
    result.days_asked = days
    return result


def _days(window: dict, asked: int) -> str:
    """A window's UTC days in words, with the days asked when it holds fewer."""
    return counted(window["days"], "day") + (" of the %d asked" % asked if window["days"] < asked else "")


def render(result: Backtest) -> str:
    """The terminal summary: windows, arrivals, and one line per basis."""
    doc = result.as_dict()
    lines = [
        "admission backtest: plan %s .. %s (%s), judged %s .. %s (%s)" % (
            doc["plan"]["start"][:16], doc["plan"]["end"][:16], _days(doc["plan"], result.days_asked),
            doc["judge"]["start"][:16], doc["judge"]["end"][:16], _days(doc["judge"], result.days_asked)),
        "hosts: %s (%s unknown: never offered), residents %s, unplaced %s; judging window coverage %.1f%%" % (
            *map(number, (result.hosts, len(result.unknown_hosts), result.residents, len(result.unplaced))),
            100 * result.judge_coverage),
        "plan: %s" % doc["basis"],
        "arrivals: %s" % result.arrivals,
        "",
        "%-34s %9s %10s %22s %10s %9s" % ("basis", "admitted", "vs demand", "host-min over (cpu/mem)",
                                           "share", "peak cpu"),
    ]
    labels = {
        "demand": "measured demand (%s + buffer)" % percentile_name(result.settings.percentile),
        "allocation 1.0": "allocation, ratio 1.0 (RAM 1.0)",
        "allocation nova": "allocation, Nova %g (RAM %g)" % (NOVA_CPU_RATIO, NOVA_RAM_RATIO),
    }
    demand = result.outcomes["demand"].admitted
    for name, outcome in list(result.outcomes.items()) + [("baseline", result.baseline)]:
        label = labels.get(name, "residents only, no arrivals")
        versus = "%.2fx" % (demand / outcome.admitted) if outcome.admitted and name != "demand" else ""
        over = map(number, (outcome.over_minutes, outcome.over_cpu_minutes, outcome.over_mem_minutes))
        lines.append("%-34s %9s %10s %12s (%s/%s) %9.3f%% %8.0f%%" % (
            label, number(outcome.admitted), versus, *over, 100 * outcome.over_share,
            100 * outcome.peak_cpu_share))
    lines.append("(host-minutes over: the hosts' summed use above vCPUs or memory less the reserve, "
                 "out of %s)" % number(result.baseline.host_minutes))
    if result.issues:
        lines.append("%s not read whole (see the JSON's issues)"
                     % counted(len(result.issues), "log file", grouped=True))
    return "\n".join(lines)
