"""Host speed: how steady this machine runs a fixed piece of Python, second by second.

    .venv/bin/python bench/hostspeed.py               # 30 s per core (about a minute)
    .venv/bin/python bench/hostspeed.py --seconds 10  # shorter

The throughput benchmarks compare vmstats with a reference in the same run, but
a reference that idles (a bare receiver counting lines) does not feel the
host's speed, and vmstats, which spends its CPU per record, does.  Stolen
time (/proc/stat) shows only the time the hypervisor gave away, not a core
that runs slower because of its neighbours.  This runs a fixed workload back
to back on one core at a time, the other idle, and reports each second's
mean CPU time per workload against the run's fastest second.
"""

import argparse
import os
import sys
import time


def workload() -> float:
    """CPU seconds of a fixed ~3 ms piece of dict and str work: the host-speed probe."""
    started = time.thread_time()
    table = {}
    for i in range(20_000):
        table[i & 1023] = str(i)
    return time.thread_time() - started


#: A probe this much slower than the fastest one of the run finds the host in a slow phase,
#: the threshold ``main`` counts seconds against too.
SLOW = 1.25


class HostSpeed:
    """How long this machine takes for ``workload`` right now, as a step of a benchmark begins.

    The guest is idle then (a step starts once the previous one is done), so
    the probe sees the host's phase, which lasts seconds to minutes; it says
    nothing of the seconds after it.  The fastest probe so far stands for the
    machine at full speed: a 2-core target means two cores at that speed,
    not at the half a busy neighbour sometimes leaves.
    """

    def __init__(self, cores: list[int], probes: int = 15):
        self.cores = cores
        self.probes = probes
        self.fastest = float("inf")

    def slow(self, probe_ms: float) -> bool:
        """Was the host in a slow phase when it took ``probe_ms``?"""
        return probe_ms > SLOW * self.fastest

    def calibrate(self, seconds: float) -> None:
        """Probe for ``seconds`` first, so that ``fastest`` is the host's speed, not one moment's."""
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            self.measure()
            time.sleep(0.2)

    def wait_for_speed(self, timeout: float) -> float:
        """Probe about once a second until the host is at speed or ``timeout`` s pass; the last probe."""
        ends = time.monotonic() + timeout
        probe_ms = self.measure()
        while self.slow(probe_ms) and time.monotonic() < ends:
            time.sleep(1.0)
            probe_ms = self.measure()
        return probe_ms

    def measure(self) -> float:
        """Milliseconds of CPU for the workload, median over every core's probes."""
        home = os.sched_getaffinity(0)
        samples = []
        try:
            for core in self.cores:
                os.sched_setaffinity(0, {core})
                workload()  # warm this core's caches first
                samples.extend(workload() for _ in range(self.probes))
        finally:
            os.sched_setaffinity(0, home)
        samples.sort()
        probe_ms = round(samples[len(samples) // 2] * 1e3, 3)
        self.fastest = min(self.fastest, probe_ms)
        return probe_ms


def host_ticks() -> tuple[int, int]:
    """(stolen, all) CPU ticks of this machine since boot, from /proc/stat; (0, 0) elsewhere.

    Time the hypervisor gives to other guests ("steal") is noise no receiver
    controls; each measurement reports its share, so a lossy step on a busy
    host can be told from a receiver's own limit.
    """
    try:
        with open("/proc/stat") as stat:
            ticks = [int(value) for value in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    return (ticks[7] if len(ticks) == 8 else 0), sum(ticks)


def stolen_percent(before: tuple[int, int]) -> float:
    """The share of this machine's CPU time stolen since ``before`` (``host_ticks()``)."""
    stolen, total = host_ticks()
    return round(100.0 * (stolen - before[0]) / max(total - before[1], 1), 1)


def per_second(core: int, seconds: float) -> list[float]:
    """Mean CPU seconds of the workload in each whole second of a back-to-back run on ``core``."""
    os.sched_setaffinity(0, {core})
    workload()
    means, current, second = [], [], int(time.monotonic())
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        cpu = workload()
        now = int(time.monotonic())
        if now != second:
            if current:
                means.append(sum(current) / len(current))
            current, second = [], now
        current.append(cpu)
    return means


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="per core")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    host = host_ticks()
    runs = {core: per_second(core, args.seconds) for core in cores}
    stolen = stolen_percent(host)
    fastest = min(min(means) for means in runs.values() if means)
    print("fastest second: %.2f ms per workload; %.1f%% of the machine's CPU time stolen meanwhile"
          % (fastest * 1e3, stolen))
    print("each second's mean CPU time against it (1.00 = as fast):")
    for core, means in runs.items():
        ratios = sorted(mean / fastest for mean in means)
        slow = sum(ratio > SLOW for ratio in ratios)
        print("  core %d: %d s; p10 %.2f, median %.2f, p90 %.2f, slowest %.2f; %d s (%.0f%%) over %.2fx"
              % (core, len(ratios), _quantile(ratios, 0.1), _quantile(ratios, 0.5),
                 _quantile(ratios, 0.9), ratios[-1], slow, SLOW,
                 100.0 * slow / max(len(ratios), 1)))
        print("    by second: " + " ".join("%.2f" % (mean / fastest) for mean in means))
    return 0


if __name__ == "__main__":
    sys.exit(main())
