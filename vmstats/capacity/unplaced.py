"""The unplaced VMs' use withheld from the known hosts' room: one rule for headroom and admission.

A VM whose host tag names no host of the inventory (or that carries none and no
selector claims) runs on some host all the same: one missing from the inventory,
or one listed under another name than its VMs' tag, which then looks emptier
than it is.  Nothing in the data says which, so its use is taken from every
known host in proportion to the room each has.  Headroom's counts and
admission's offers both rest on :func:`shares`, so for the same logs and
profile they say the same number.  Nova's allocation view beside them takes the
unplaced VMs' sizes by the same rule (:func:`amounts` says which figures each
basis takes): allocated on some host, they hold that room by allocation too.
Their number counts against the capped hosts' ``max_instances`` by the same
rule (:func:`instance_shares`), as Nova counts them on the host they run on.
"""

import math

from vmstats.words import counted, number


def parts(rooms: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Each host's part (a share of 1, per resource) of the unplaced VMs: its room (cores, GB;
    below 0 is none) over the hosts' room together.  :func:`shares` takes the use by these parts,
    and the backtest judges the unplaced VMs' measured use on each host by them, so both put it
    where the live view withholds it."""
    out = {host: [0.0, 0.0] for host in rooms}
    for k in (0, 1):
        free = {host: max(0.0, room[k]) for host, room in rooms.items()}
        total = sum(free.values())
        if total > 0:
            for host, room in free.items():
                out[host][k] = room / total
    return {host: (c, m) for host, (c, m) in out.items()}


def rooms_of(loads) -> dict[str, tuple[float, float]]:
    """Each placement load's room (placement.HostLoad: cores and GB of demand, or vCPUs and GB
    of size), the room the unplaced VMs are spread by: an answer withholds their room by its
    :func:`parts` (admission.withhold), and the backtest's judge puts their measured use on each
    host by the same parts of the same plan's loads, so the plan and its judge agree on where
    they run."""
    return {load.name: (load.cpu_room, load.mem_room) for load in loads}


def shares(
    rooms: dict[str, tuple[float, float]], cpu: float, mem: float
) -> dict[str, tuple[float, float]]:
    """Each known host's share of the unplaced use (``cpu`` cores, ``mem`` GB), ``{host: (cores,
    GB)}`` with the hosts that give none left out; ``rooms`` is each known host's room
    (cores, GB) before it.

    Shared in proportion to the room each host has (:func:`parts`; all of it when the use is as
    large): spread so, the fleet's room is what it is with that use on some host of it,
    whichever, and no host is guessed at.  A host past its limit (room below 0) has nothing to
    give.
    """
    taken = {}
    for host, (cpu_part, mem_part) in parts(rooms).items():
        room_cpu, room_mem = rooms[host]
        c = min(max(0.0, room_cpu), max(0.0, cpu) * cpu_part)
        m = min(max(0.0, room_mem), max(0.0, mem) * mem_part)
        if c > 0 or m > 0:
            taken[host] = (c, m)
    return taken


def instance_shares(rooms: dict[str, float], vms: int) -> dict[str, int]:
    """Each capped host's share of the ``vms`` unplaced VMs against its ``max_instances``, by the
    rule their sizes are shared by (:func:`parts`, ``rooms``: the VMs each host may still take,
    inf with no cap), ``{host: VMs}`` with the hosts that give none left out.

    Nova counts the unplaced VMs against the cap of the host they run on, whichever that is.
    Counted conservatively: a share of a VM is a whole one (Nova refuses the next VM at the cap,
    not a part of it), and the hosts without a cap take none of them, as their unlimited room
    would take all in proportion and leave every capped host its whole room, as if the unplaced
    VMs were known to run on the uncapped ones.
    """
    capped = {host: (room, 0.0) for host, room in rooms.items() if math.isfinite(room)}
    if vms <= 0:
        return {}
    taken = {}
    for host, (part, _none) in parts(capped).items():
        share = min(capped[host][0], math.ceil(vms * part - 1e-9))
        if share > 0:
            taken[host] = int(share)
    return taken


#: What each basis withholds of the unplaced VMs (keys of Summary.unplaced_use), and the keys its
#: shares are given under: their measured use on the demand basis, their sizes on Nova's
#: allocation basis.
_BASES = {
    "demand": (("cpu_cores", "mem_gb"), ("cpu_cores", "mem_gb")),
    "allocation": (("allocated_vcpus", "allocated_mem_gb"), ("vcpus", "mem_gb")),
}


def amounts(use: dict, basis: str = "demand") -> tuple[float, float]:
    """What ``basis`` withholds of the unplaced VMs' ``use`` (Summary.unplaced_use, {} when there
    are none): cores and GB of demand, or vCPUs and GB allocated."""
    cpu, mem = _BASES[basis][0]
    return use.get(cpu, 0.0), use.get(mem, 0.0)


def described(withheld: dict[str, tuple[float, float]], basis: str = "demand") -> dict[str, dict]:
    """The shares as every output gives them, by host name: ``{host: {"cpu_cores", "mem_gb"}}``,
    or on the allocation basis ``{host: {"vcpus", "mem_gb"}}``."""
    cpu, mem = _BASES[basis][1]
    return {h: {cpu: _r(c), mem: _r(m)} for h, (c, m) in sorted(withheld.items())}


def line(vms: int, use: dict, withheld: dict[str, dict] | None = None, most: int = 5,
         instances: dict[str, int] | None = None) -> str:
    """The VMs no host claims, their use and who gives room for it, for the terminal: headroom's
    and admit's alike (``use``: Summary.unplaced_use; ``withheld``: described shares;
    ``instances``: the capped hosts' shares of their number, instance_shares)."""
    tags = use.get("by_host_tag", [])
    parts = ["%s: %s, %.1f cores, %.1f GB" % (
        "host tag %s (not in the inventory)" % t["host_tag"] if t["host_tag"] is not None
        else "no host tag nor selector", counted(t["vms"], "VM", grouped=True), t["cpu_cores"], t["mem_gb"])
        for t in tags]
    said = "unplaced VMs (no host in the inventory claims them, so their use counts on none): " + number(vms)
    if use:
        said += ", %.1f cores and %.1f GB (allocated %g vCPUs, %.1f GB): %s" % (
            use["cpu_cores"], use["mem_gb"], *amounts(use, "allocation"), "; ".join(parts))
    said += "; withheld from the known hosts' room, each giving its share"
    if withheld:
        given = ["%s %.1f cores, %.1f GB" % (h, w["cpu_cores"], w["mem_gb"]) for h, w in withheld.items()]
        said += " (%s%s)" % (", ".join(given[:most]), ", ..." if len(given) > most else "")
    if instances:
        given = ["%s %s" % (h, number(n)) for h, n in instances.items()]
        said += "; and from the capped hosts' max_instances (%s%s)" % (
            ", ".join(given[:most]), ", ..." if len(given) > most else "")
    return said


def _r(value: float) -> float:
    """Rounded to 3 places, never -0.0."""
    return round(value, 3) + 0.0
