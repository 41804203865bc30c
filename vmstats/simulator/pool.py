"""A pool of VMs that follows a load curve, live, and obeys scaling decisions.

The pool's total demand (in percent of one VM's CPU: 240 is two and a half
VMs' worth) follows a piecewise-linear curve over the run; each member
reports ``demand / members`` (capped at 100) once per ``interval``, stamped
now, so live rules see it.  A scaling action closes the loop by writing the
desired member count to ``desired_file`` (for instance a command action
running ``sh -c 'echo "$VMSTATS_DESIRED" > FILE'``): members are added or
removed at the next report.  ``silent`` names a member that stops reporting
at a given second, as a stopped agent would.
"""

import math
import os
import time
from dataclasses import dataclass

from vmstats.protocol import Record, encode_record


def parse_curve(text: str) -> list[tuple[float, float]]:
    """``"0:120,20:300,40:120"`` (second:demand, seconds ascending); ValueError otherwise."""
    points = []
    for part in text.split(","):
        second, sep, demand = part.partition(":")
        if not sep:
            raise ValueError("%r is not second:demand" % part)
        point = (float(second), float(demand))
        if not all(math.isfinite(value) for value in point):
            # an infinite demand made every member report 100 % (and nan, 0 %) without a word
            raise ValueError("%r: second and demand must be finite numbers" % part)
        points.append(point)
    if not points or any(b[0] <= a[0] for a, b in zip(points, points[1:], strict=False)):
        raise ValueError("the curve needs points with seconds in ascending order")
    if any(demand < 0 for _s, demand in points):
        raise ValueError("demand cannot be negative")
    return points


def parse_silent(text: str, pool: "Pool", duration: float) -> tuple[int, float]:
    """``"2:20"`` (member 2 stops at second 20) for ``pool`` over a run of ``duration``
    seconds; ValueError, saying why, for a member the pool never has or a second the run
    never reaches: either would run the whole pool reporting, the stop asked for silently
    not made.  A member past the starting count is accepted only when ``desired_file`` can
    grow the pool (up to ``maximum``)."""
    number_text, sep, second_text = text.partition(":")
    try:
        number, second = int(number_text), float(second_text)
    except ValueError:
        raise ValueError("expected N:SECOND, e.g. 2:20") from None
    if not sep:
        raise ValueError("expected N:SECOND, e.g. 2:20")
    largest = pool.maximum if pool.desired_file else pool.members
    if not 1 <= number <= largest:
        if pool.desired_file:
            raise ValueError("member %d: the pool has members 1 to %d at most" % (number, largest))
        raise ValueError("member %d: the pool has %d member%s (1 to %d) and no --desired-file to "
                         "grow it" % (number, largest, "" if largest == 1 else "s", largest))
    if not 0 <= second <= duration:  # nan fails both comparisons
        raise ValueError("second %s: the run lasts 0 to %g seconds (--duration)"
                         % (second_text.strip(), duration))
    return number, second


def demand_at(curve: list[tuple[float, float]], second: float) -> float:
    """The curve's demand at ``second`` (flat before the first and after the last point)."""
    if second <= curve[0][0]:
        return curve[0][1]
    for (s0, d0), (s1, d1) in zip(curve, curve[1:], strict=False):
        if second <= s1:
            return d0 + (d1 - d0) * (second - s0) / (s1 - s0)
    return curve[-1][1]


@dataclass
class Pool:
    curve: list[tuple[float, float]]
    members: int = 3
    prefix: str = "pool"
    hosts: tuple[str, ...] = ("kvm1", "kvm2")
    desired_file: str | None = None
    silent: tuple[int, float] | None = None  # (member number, second it stops)
    maximum: int = 100

    def member_ids(self) -> list[str]:
        return ["%s-%d" % (self.prefix, n) for n in range(1, self.members + 1)]

    def follow_decisions(self) -> None:
        """Take the member count a scaling action wrote, if any."""
        if not self.desired_file:
            return
        try:
            with open(self.desired_file) as handle:
                wanted = int(handle.read().strip() or self.members)
        except (OSError, ValueError):
            return
        self.members = max(1, min(self.maximum, wanted))

    def lines(self, second: float, ts: int) -> list[bytes]:
        """One report per live member for ``second`` of the run."""
        self.follow_decisions()
        cpu = min(100.0, demand_at(self.curve, second) / self.members)
        out = []
        for number, vm in enumerate(self.member_ids(), 1):
            if self.silent and number == self.silent[0] and second >= self.silent[1]:
                continue
            host = self.hosts[(number - 1) % len(self.hosts)] if self.hosts else None
            out.append(encode_record(Record(vm=vm, ts=ts, cpu=round(cpu, 2), mem=40.0, vcpus=2,
                                            mem_mb=4096, host=host)).encode("ascii"))
        return out


def run(pool: Pool, sender, duration: float, interval: float, log=None) -> dict:
    """Report every ``interval`` seconds for ``duration`` seconds; what was sent, per step."""
    began = time.time()
    steps = []
    second = 0.0
    while second <= duration:
        pause = began + second - time.time()
        if pause > 0:
            time.sleep(pause)
        lines = pool.lines(second, int(time.time()))
        sender.send(lines)
        steps.append({"second": round(second, 1), "members": pool.members,
                      "demand": round(demand_at(pool.curve, second), 1), "reported": len(lines)})
        if log is not None:
            log(steps[-1])
        second += interval
    return {"steps": steps, "members_at_end": pool.members,
            "desired_file": os.path.abspath(pool.desired_file) if pool.desired_file else None}
