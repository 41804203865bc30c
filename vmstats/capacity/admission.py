"""Admission: a manifest of VMs to deploy, answered accept / partial / reject with an offer.

The manifest (a TOML file for ``vmstats admit``, the same keys as JSON for
``POST /admission``; docs/CAPACITY.md)::

    name = "checkout"        # optional: names the request in the answer
    partial = true           # place what fits (default); false: all or none
    hold = true              # the API holds the offer's room for a while (default); false: only ask
    [profiles]               # optional: named profiles
    web = "2x4@30%"
    [[vms]]
    profile = "web"          # a named profile, or VCPUSxGB[@USE%[/MEM%]]
    count = 3                # default 1
    name = "web"             # the VMs are web-1, web-2, ... (default: the profile)
    anti_affinity = true     # these VMs on distinct hosts
    group = "db"             # or: no two VMs of all entries with this group on one host

The answer rests on a Summary (summary.py); it says which (window, percentile,
coverage, age).  Checking happens before anything else, so a bad manifest is
one error and changes nothing.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vmstats.capacity import unplaced
from vmstats.capacity.errors import CapacityError
from vmstats.capacity.placement import Ask, HostLoad, Offer, add_level, place
from vmstats.capacity.profiles import Profile, parse_profile, shaped_like_profile
from vmstats.capacity.summary import Summary
from vmstats.words import counted, number, part_of

#: VMs one manifest may ask for: bounds the work one request can cause.
MAX_VMS = 100_000
#: Shapes (size and expected use) one manifest may ask for: each is a pass over the hosts, so
#: they, not the VMs, bound the time an answer takes (10,000: under a second on 500 hosts,
#: BENCHMARKS.md "Admission"; 1 MiB of JSON holds 40,000).  The server places in a worker
#: thread, one answer at a time: the next answer waits that long, ingest does not.
MAX_SHAPES = 10_000
#: Why a VM is rejected when the summary knows no host at all.
NO_HOST_KNOWN = "no host is known: every host of the inventory is unknown, and its room is never offered"
_TOP_KEYS = ("name", "partial", "hold", "profiles", "vms")
_ENTRY_KEYS = ("profile", "count", "name", "anti_affinity", "group")


@dataclass(frozen=True)
class Entry:
    name: str
    profile: Profile
    profile_text: str
    count: int
    group: str | None


@dataclass(frozen=True)
class Manifest:
    """A checked manifest: what to place and whether part of it will do."""

    name: str
    partial: bool
    entries: tuple[Entry, ...]
    hold: bool = True

    def asks(self, basis: str = "demand") -> list[Ask]:
        """The VMs as placement asks: expected demand, or (allocation basis) their size."""
        out = []
        for entry in self.entries:
            p = entry.profile
            cpu, mem = (p.cpu_demand, p.mem_demand) if basis == "demand" else (p.vcpus, p.mem_gb)
            for i in range(entry.count):
                name = "%s-%d" % (entry.name, i + 1)
                out.append(Ask(name, cpu, mem, entry.group, entry.profile_text, p.vcpus, p.mem_gb))
        return out

    @property
    def vms(self) -> int:
        return sum(e.count for e in self.entries)


def parse_manifest(data: Any, source: str = "manifest") -> Manifest:
    """A Manifest from parsed TOML or JSON; CapacityError names the source and the key."""
    where = "manifest %s" % source if source != "manifest" else "manifest"
    if not isinstance(data, dict):
        raise CapacityError("%s: must be a table (JSON object)" % where)
    for key in data:
        if key not in _TOP_KEYS:
            raise CapacityError("%s: %s: unknown key (known: %s)" % (where, key, ", ".join(_TOP_KEYS)))
    name = data.get("name", "")
    if not isinstance(name, str) or not name.isprintable():
        raise CapacityError("%s: name: must be a string of printable characters" % where)
    partial = data.get("partial", True)
    if not isinstance(partial, bool):
        raise CapacityError("%s: partial: must be true or false" % where)
    hold = data.get("hold", True)
    if not isinstance(hold, bool):
        raise CapacityError("%s: hold: must be true or false" % where)
    named = data.get("profiles", {})
    if not isinstance(named, dict):
        raise CapacityError('%s: profiles: must be a table of name = "VCPUSxGB[@USE%%]"' % where)
    profiles = {}
    for key, text in named.items():
        if shaped_like_profile(key):  # "2x4" = "64x512": an entry's profile "2x4" would be either
            raise CapacityError("%s: profiles.%s: a profile's name may not be written as a size"
                                % (where, key))
        if not isinstance(text, str):
            raise CapacityError('%s: profiles.%s: must be a string like "4x16@30%%"' % (where, key))
        try:
            profiles[key] = parse_profile(text)
        except CapacityError as exc:
            raise CapacityError("%s: profiles.%s: %s" % (where, key, exc)) from None
    vms = data.get("vms")
    if not isinstance(vms, list) or not vms:
        raise CapacityError("%s: vms: a list of at least one entry is needed ([[vms]] in TOML)" % where)
    entries = []
    names: set[str] = set()
    total = 0
    for index, item in enumerate(vms):
        entry = _entry(item, profiles, "%s: vms[%d]" % (where, index))
        if entry.name in names:
            if "name" not in item:  # "vms[1].name" sent the operator to a key never written
                raise CapacityError("%s: vms[%d]: its VMs are named after its profile %r, as an entry's "
                                    "before it: give it a name" % (where, index, entry.name))
            raise CapacityError("%s: vms[%d].name: %r is used twice" % (where, index, entry.name))
        names.add(entry.name)
        total += entry.count
        if total > MAX_VMS:
            raise CapacityError("%s: asks for more than %s" % (where, counted(MAX_VMS, "VM", grouped=True)))
        entries.append(entry)
    if len({e.profile for e in entries}) > MAX_SHAPES:
        raise CapacityError("%s: asks for VMs of more than %s (sizes and expected use)"
                            % (where, counted(MAX_SHAPES, "shape", grouped=True)))
    return Manifest(name, partial, tuple(entries), hold)


def _entry(item: Any, profiles: dict[str, Profile], origin: str) -> Entry:
    if not isinstance(item, dict):
        raise CapacityError("%s: must be a table" % origin)
    for key in item:
        if key not in _ENTRY_KEYS:
            raise CapacityError("%s.%s: unknown key (known: %s)" % (origin, key, ", ".join(_ENTRY_KEYS)))
    if "profile" not in item:
        raise CapacityError("%s.profile: missing" % origin)
    text = item["profile"]
    if not isinstance(text, str) or not text.strip():
        # Present but of the wrong type ("profile = 5"): "missing" would send the operator
        # looking for a key that is there.
        raise CapacityError(
            "%s.profile: must be a profile's name or VCPUSxGB[@USE%%] text, not %.40r" % (origin, text)
        )
    if text in profiles:
        profile = profiles[text]
    else:
        try:
            profile = parse_profile(text)
        except CapacityError as exc:
            if shaped_like_profile(text):  # "0x4", "4x16@150%": the numbers are wrong, say which
                raise CapacityError("%s.profile: %s" % (origin, exc)) from None
            known = ", ".join(sorted(profiles)) or "none"
            raise CapacityError(
                "%s.profile: unknown profile %r (named in the manifest: %s; or VCPUSxGB[@USE%%], "
                "e.g. 4x16@30%%)" % (origin, text, known)
            ) from None
    count = item.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise CapacityError("%s.count: must be a whole number of at least 1" % origin)
    name = item.get("name", text)
    # The names reach answers, holds and terminal lines: a newline in one would forge a line.
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise CapacityError("%s.name: must be a non-empty string of printable characters" % origin)
    anti = item.get("anti_affinity", False)
    if not isinstance(anti, bool):
        raise CapacityError("%s.anti_affinity: must be true or false" % origin)
    group = item.get("group")
    if group is not None and (not isinstance(group, str) or not group or not group.isprintable()):
        raise CapacityError("%s.group: must be a non-empty string of printable characters" % origin)
    if group is None and anti:
        group = name
    return Entry(name, profile, text, count, group)


@dataclass
class Reservations:
    """Room promised by recent answers, held on its hosts until the VMs show up in the data.

    An admission controller that forgets its own answers offers the same
    room twice; one that holds it forever never frees it.  A hold lasts
    ``hold_s`` (long enough for the VMs to be created and their use to reach
    the summary), then the measured demand takes over: only once a summary
    whose reading began after that time is in use (``read_from``, on this
    clock), since until then no summary has seen the VMs and the room would
    be offered again (refreshes that keep failing, or one slower than the
    hold).  A hold keeps the VMs' sizes beside their demand: until the VMs
    are in the data, Nova's allocation figure would not count them either;
    and their number, which a host's instance cap counts as well.
    """

    hold_s: float = 1800.0
    clock: Callable[[], float] = field(default=lambda: 0.0)
    #: (until, request, {host: (cores, GB of demand, vCPUs, GB allocated, VMs)})
    held: list[tuple[float, str, dict[str, tuple[float, ...]]]] = field(default_factory=list)

    def _keep(self, until: float, read_from: float | None) -> bool:
        return until > self.clock() or (read_from is not None and read_from <= until)

    def totals(self, read_from: float | None = None) -> dict[str, tuple[float, ...]]:
        """Per host, what the holds in force add: cores and GB of demand, vCPUs and GB of size,
        and VMs.  Holds whose time is up are dropped once the summary in use began reading the
        logs after it (``read_from``; None: not known)."""
        self.held = [h for h in self.held if self._keep(h[0], read_from)]
        out: dict[str, tuple[float, ...]] = {}
        for _until, _name, hosts in self.held:
            for host, added in hosts.items():
                out[host] = tuple(a + b for a, b in zip(out.get(host, (0.0,) * 5), added, strict=True))
        return out

    def current(self, read_from: float | None = None) -> dict[str, tuple[float, float]]:
        """Cores and GB of demand held per host now (totals)."""
        return {host: (cpu, mem) for host, (cpu, mem, *_sizes) in self.totals(read_from).items()}

    def hold(self, name: str, offer: Offer, asks: list[Ask]) -> None:
        by_name = {a.name: a for a in asks}
        hosts: dict[str, tuple[float, ...]] = {}
        for vm, host in offer.placed.items():
            ask = by_name[vm]
            c, m, v, g, n = hosts.get(host, (0.0,) * 5)
            hosts[host] = (c + float(ask.cpu), m + float(ask.mem), v + ask.vcpus, g + ask.mem_gb, n + 1)
        if hosts:
            self.held.append((self.clock() + self.hold_s, name, hosts))

    def describe(self, read_from: float | None = None) -> list[dict]:
        """The holds in force; ``expires_in_s`` below 0: kept until a newer summary is in use."""
        now = self.clock()
        return [
            {"request": name, "expires_in_s": round(until - now, 1), "hosts": len(hosts)}
            for until, name, hosts in self.held
            if self._keep(until, read_from)
        ]


def answer(
    summary: Summary,
    manifest: Manifest,
    reservations: Reservations | None = None,
    now: float | None = None,
    read_from: float | None = None,
) -> dict:
    """Place the manifest on the summary's known hosts (demand basis), with Nova's figure beside.

    With ``reservations`` the room they hold is taken first, and the new
    offer is held in turn; ``read_from`` is when the summary's reading of the
    logs began, on the reservations' clock (see Reservations).
    """
    totals = reservations.totals(read_from) if reservations is not None else {}
    result, offer, asks = placed(summary, manifest, totals, now)
    result["held"] = reservations is not None and manifest.hold and bool(offer.placed)
    if result["held"]:
        reservations.hold(manifest.name or "unnamed", offer, asks)
    return result


def placed(
    summary: Summary,
    manifest: Manifest,
    totals: dict[str, tuple[float, ...]],
    now: float | None = None,
) -> tuple[dict, Offer, list[Ask]]:
    """The answer (without ``held``), its offer and its asks, with the room earlier answers hold
    taken first (``totals``: Reservations.totals).  It reads its arguments and changes nothing,
    so the server computes it in a worker thread while the reactor goes on (service.py) and
    holds the offer afterwards, in the reactor."""
    held = {host: (cpu, mem) for host, (cpu, mem, _v, _g, _n) in totals.items()}
    sizes = {host: (vcpus, mem_gb) for host, (_c, _m, vcpus, mem_gb, _n) in totals.items()}
    vms = {host: n for host, (_c, _m, _v, _g, n) in totals.items()}
    demand = _less(summary.loads("demand"), held, vms)
    # The VMs earlier answers hold room for are not in the data yet: Nova will have them allocated.
    allocation = _less(summary.loads("allocation"), sizes, vms)
    # The unplaced VMs run on some host, and count against its max_instances: every capped host
    # (the allocation loads hold them all) gives its share, on both bases.
    counted_vms = withhold_instances(allocation, summary.unplaced)
    withhold_instances(demand, summary.unplaced, counted_vms)
    use = summary.unplaced_use
    withheld = withhold(demand, *unplaced.amounts(use, "demand"))
    asks = manifest.asks("demand")
    offer = place(demand, asks, summary.percentile, partial=manifest.partial)
    if not demand:  # "no host has room" would send the operator to buy hosts the data cannot judge
        offer.rejected = {vm: NO_HOST_KNOWN for vm in offer.rejected}
    # The unplaced VMs are allocated on some host too: their sizes hold that room in Nova's view.
    sized = withhold(allocation, *unplaced.amounts(use, "allocation"))
    nova = place(allocation, manifest.asks("allocation"), 100.0, partial=manifest.partial)
    return {
        "request": manifest.name,
        "status": offer.status,
        "asked": manifest.vms,
        "placed": len(offer.placed),
        "offer": offer.placed,
        "rejected": offer.rejected,
        "headroom_left": {
            host: {"cpu_cores": _r(cpu), "mem_gb": _r(mem)} for host, (cpu, mem) in sorted(offer.left.items())
        },
        "allocation_basis": {
            "status": nova.status,
            "placed": len(nova.placed),
            "rule": "sizes within (total - reserved) x ratio, as Nova's placement",
            "withheld_for_unplaced": unplaced.described(sized, "allocation"),
        },
        "past_allocation_ratios": past_ratios(allocation, offer, asks),
        "withheld_for_unplaced": unplaced.described(withheld),
        "instances_withheld_for_unplaced": counted_vms,
        "held_by_earlier_answers": {
            h: {"cpu_cores": _r(c), "mem_gb": _r(m), "allocated_vcpus": _r(v), "allocated_mem_gb": _r(g),
                "vms": int(n)}
            for h, (c, m, v, g, n) in sorted(totals.items())
        },
        "basis": summary.basis(now),
    }, offer, asks


def past_ratios(allocation: list[HostLoad], offer: Offer, asks: list[Ask]) -> dict[str, dict]:
    """The hosts of the offer whose allocation, plus the offer's VMs' sizes, goes past
    ``(total - reserved) x ratio`` of the inventory: a cloud that enforces its ratios, as Nova
    does, refuses those VMs there until the ratios are raised.  ``{host: {"vcpus": [allocated,
    limit], "mem_gb": [allocated, limit]}}``.

    ``allocation`` is Nova's view the answer's allocation basis placed on (its loads, which
    place() does not change): what each host holds now, the sizes earlier answers hold room
    for, and its share of the unplaced VMs' sizes.  Read from there, the hosts named past the
    ratios are those the allocation basis had no room on, by the same figures: summed apart,
    the unplaced VMs' share was left out, and a host whose room they hold was not named."""
    hosts = {h.name: h for h in allocation}
    size = {a.name: (a.vcpus, a.mem_gb) for a in asks}
    out = {}
    for host, vms in sorted(offer.per_host().items()):
        h = hosts[host]
        vcpus = h.cpu_level + sum(size[vm][0] for vm in vms)
        mem_gb = h.mem_level + sum(size[vm][1] for vm in vms)
        if vcpus > h.cpu_limit + 1e-9 or mem_gb > h.mem_limit + 1e-9:
            out[host] = {
                "vcpus": [_r(vcpus), _r(h.cpu_limit)],
                "mem_gb": [_r(mem_gb), _r(h.mem_limit)],
            }
    return out


def _less(
    loads: list[HostLoad], held: dict[str, tuple[float, float]], vms: dict[str, float] | None = None
) -> list[HostLoad]:
    """The loads less the room earlier answers hold: added to each host's level (cores and GB of
    demand on the demand basis, vCPUs and GB of size on the allocation basis), and their VMs
    (``vms`` per host) taken from the instances each host may still take."""
    for load in loads:
        cpu, mem = held.get(load.name, (0.0, 0.0))
        load.cpu_level += cpu
        load.mem_level += mem
        load.instances_left = max(0.0, load.instances_left - (vms or {}).get(load.name, 0))
    return loads


def withhold(loads: list[HostLoad], cpu: float, mem: float) -> dict[str, tuple[float, float]]:
    """Take the unplaced VMs' use (``cpu`` cores, ``mem`` GB; on the allocation basis their
    sizes, vCPUs and GB) out of the hosts' room, each host giving its share (unplaced.shares,
    as headroom's counts do); returns the shares, ``{host: (cores, GB)}`` (hosts with none left
    out).

    Their host tag names no host of the inventory (or they carry none), so where they run is
    not known: a host listed under another name than its VMs' tag carries their use unseen,
    and offered as room it is filled past its capacity.
    """
    taken = unplaced.shares(unplaced.rooms_of(loads), cpu, mem)
    for load in loads:
        add_level(load, *taken.get(load.name, (0.0, 0.0)))  # a series too, as the backtest's loads have
    return taken


def withhold_instances(
    loads: list[HostLoad], vms: int, taken: dict[str, int] | None = None
) -> dict[str, int]:
    """Take the ``vms`` unplaced VMs out of the capped hosts' instances left, each host giving its
    share (unplaced.instance_shares, of the loads' own instances left unless ``taken`` gives the
    shares already worked out); returns the shares, ``{host: VMs}``.

    Nova counts them against the cap of the host they run on: left out, a fleet of capped hosts
    was offered the instances its unplaced VMs already hold.
    """
    if taken is None:
        taken = unplaced.instance_shares({load.name: load.instances_left for load in loads}, vms)
    for load in loads:
        share = taken.get(load.name, 0)
        if share:
            load.instances_left = max(0.0, load.instances_left - share)
            load.instances_withheld = share
    return taken


def _r(value: float) -> float | None:
    """Rounded to 3 places, never -0.0: a float's noise below 0 (a flat trend's) read as a host
    past its limit."""
    return None if math.isnan(value) else round(value, 3) + 0.0


#: Hosts the terminal lists one line each (the offer's, those past the ratios), and reasons for
#: rejecting: past these a line counts the rest, and ``--json`` lists every one.
MOST_LINES = 20
#: Names a terminal line gives of a list before it counts the rest.
MOST_NAMES = 5


def few(names: list[str], most: int = MOST_NAMES) -> str:
    """The first ``most`` of ``names`` and a count of the rest: a line that named every one of
    100,000 VMs (or hosts) would scroll the answer away."""
    shown = ", ".join(names[:most])
    return shown + (", ... and %s more" % number(len(names) - most) if len(names) > most else "")


def _in_order(name: str) -> tuple[str, int]:
    """A VM's place among its entry's (``web-2`` before ``web-10``): its name is the entry's and
    its number (Manifest.asks), and the answer's JSON sorts them as text."""
    entry, _dash, number = name.rpartition("-")
    return (entry, int(number)) if number.isdigit() else (name, 0)


def terminal(result: dict) -> str:
    """The answer for people: status, the offer per host, what was rejected grouped by why, the
    basis.  Each part is bounded (MOST_LINES lines, MOST_NAMES names a line), so the answer's
    first line and the basis after it stay on the screen whatever the manifest asked for: the
    answer's JSON (``--json``) keeps every VM."""
    lines = [
        "%s: %s, %s placed (allocation at Nova's ratios would place %s)"
        % (
            result["request"] or "request",
            result["status"].upper(),
            part_of(result["placed"], result["asked"], "VM", grouped=True),
            number(result["allocation_basis"]["placed"]),
        )
    ]
    per_host: dict[str, list[str]] = {}
    for vm, host in result["offer"].items():
        per_host.setdefault(host, []).append(vm)
    why: dict[str, list[str]] = {}
    for vm, reason in result["rejected"].items():
        why.setdefault(reason, []).append(vm)
    for vms in (*per_host.values(), *why.values()):
        vms.sort(key=_in_order)
    hosts = sorted(per_host)
    for host in hosts[:MOST_LINES]:
        left, vms = result["headroom_left"][host], per_host[host]
        lines.append(
            "  %-16s %s%s  (left: %.1f cores, %.1f GB)"
            % (host, counted(len(vms), "VM", grouped=True) + ": " if len(vms) > MOST_NAMES else "", few(vms),
               left["cpu_cores"], left["mem_gb"])
        )
    if len(hosts) > MOST_LINES:
        rest = len(hosts) - MOST_LINES
        lines.append("  ... and %s in the offer" % counted(rest, "more host", grouped=True))
    groups = sorted(why.items(), key=lambda item: (-len(item[1]), item[0]))  # the most first
    for reason, vms in groups[:MOST_LINES]:
        lines.append("  %s rejected: %s (%s)" % (number(len(vms)), reason, few(vms)))
    if len(groups) > MOST_LINES:
        rest, reasons = sum(len(vms) for _reason, vms in groups[MOST_LINES:]), len(groups) - MOST_LINES
        lines.append("  ... and %s more rejected for %s"
                     % (number(rest), counted(reasons, "other reason", grouped=True)))
    folded = max(len(hosts), len(groups)) > MOST_LINES or any(
        len(vms) > MOST_NAMES for vms in (*per_host.values(), *why.values()))
    if folded:
        lines.append("  (--json lists every VM: the host offered it, or why it was rejected)")
    past = result["past_allocation_ratios"]
    for host, figures in list(past.items())[:MOST_LINES]:
        lines.append(
            "  %s: allocation past the inventory's ratios (%g of %g vCPUs, %g of %g GB): a cloud "
            "that enforces them refuses these VMs there" % (host, *figures["vcpus"], *figures["mem_gb"])
        )
    if len(past) > MOST_LINES:
        rest = len(past) - MOST_LINES
        lines.append("  ... and %s past the inventory's ratios (--json names every one)"
                     % counted(rest, "more host", grouped=True))
    b = result["basis"]
    lines.append(
        "based on %s of %s over %s, %s known (gate %g%%)%s%s"
        % (
            b["percentile"],
            b["peaks"],
            days_line(b["window"], b.get("days_asked")),
            part_of(b["hosts_known"], b["hosts"], "host", grouped=True),
            b["coverage_min"] * 100,
            "; unknown: " + few(b["hosts_unknown"]) if b["hosts_unknown"] else "",
            " (--json names every one)" if len(b["hosts_unknown"]) > MOST_NAMES else "",
        )
    )
    if b["vms_unknown"]:
        lines.append(unheard_line(b["vms_unknown"]))
    if b["unplaced_vms"]:  # as headroom says: the host they run on may be offered without them
        lines.append(unplaced.line(b["unplaced_vms"], b["unplaced_use"], result["withheld_for_unplaced"],
                                   instances=result["instances_withheld_for_unplaced"]))
    return "\n".join(lines)


def days_named(window: dict) -> str:
    """The UTC days of a window (demand.Window.describe, command.advice_days) in words."""
    return "%s .. %s, %s" % (window["first_day"], window["last_day"], counted(window["days"], "day"))


def days_line(window: dict, asked: int | None = None) -> str:
    """The days of logs a figure rests on, its first and last minute, and how many days fewer
    than asked it had (the logs hold no more: they start later, or end before the days asked):
    headroom's first line and admit's basis line alike."""
    fewer = " of the %d asked" % asked if asked and window["days"] < asked else ""
    return "%s%s (%s to %s)" % (days_named(window), fewer, window["start"], window["end"])


def unheard_line(vms: list[dict], most: int = 5) -> str:
    """The VMs of known hosts' inventories not heard from in the window, for the terminal (each
    ``{"vm", "host", "last_seen"}``): headroom and admit alike."""
    named = ["%s on %s (last seen %s)" % (v["vm"], v["host"], v["last_seen"] or "never") for v in vms[:most]]
    more = ", and %s more" % number(len(vms) - most) if len(vms) > most else ""
    return "not heard from in the window, unknown (their room is not offered): %s%s" % (
        ", ".join(named), more)
