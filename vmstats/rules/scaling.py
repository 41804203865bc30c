"""Target tracking for a group: how many members, when it may change, and where to add one.

Kubernetes' HPA formula, ``desired = ceil(n x current / target)``, left alone
within a tolerance so a pool near its target does not hunt.  Cooldowns are
separate per direction, and a scale-out waits only for the last scale-out's
cooldown: a recent scale-in never blocks a needed scale-out (a known failure
of step-scaling cooldowns).  A blocked decision is deferred to the cooldown's
end and made again on the figures of that moment, never dropped.
"""

import math

from vmstats.rules.config import Scale


def desired_count(members: int, value: float, scale: Scale) -> int:
    """Members wanted for the group's figure ``value`` against ``scale.target``."""
    ratio = value / scale.target
    if not math.isfinite(ratio):  # no figure to act on: the count stays (within min..max)
        wanted = members
    elif members > 0 and abs(ratio - 1.0) <= scale.tolerance:
        wanted = members
    else:
        wanted = math.ceil(max(members, 1) * ratio - 1e-9)
    return max(scale.minimum, min(scale.maximum, wanted))


def ready_at(scale: Scale, last_out: float | None, last_in: float | None, out: bool) -> float:
    """When a decision in this direction may next be acted on (0: now)."""
    if out:
        return last_out + scale.out_cooldown if last_out is not None else 0.0
    latest = max((t for t in (last_out, last_in) if t is not None), default=None)
    return latest + scale.in_cooldown if latest is not None else 0.0


def placement(hosts_cpu: dict[str, list[float]], known_hosts: tuple[str, ...], turn: int) -> str | None:
    """The host to put a new member on.

    Where records carry a ``host`` tag: the host whose measured members are
    least busy (most headroom, mean of 100 - cpu %).  Otherwise round-robin
    over the hosts the rule names; None when nothing is known.
    """
    if hosts_cpu:
        return max(sorted(hosts_cpu), key=lambda host: sum(100.0 - c for c in hosts_cpu[host])
                   / len(hosts_cpu[host]))
    if known_hosts:
        return known_hosts[turn % len(known_hosts)]
    return None
