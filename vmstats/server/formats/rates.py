"""Cumulative counters to per-second rates, per VM and device, in bounded memory.

A counter's first sample only primes it (there is nothing to subtract yet).
After that each sample gives the rate since the one before, stamped with the
later sample's time.  When a counter goes down, the VM rebooted, the device
was re-created or the sender restarted, and the counter is primed again from
the new value: no rate is made of the drop.  It is never read as a wrap of a
32-bit counter: the server cannot know the sender's kernel, only a 32-bit one
has counters that wrap, and a VM rebooted with 2-4 GiB on a 64-bit counter
would read as up to 2 GiB moved in one interval (a false alert, a bill for
traffic that never was).  A true wrap costs one interval's rate; the minute's
mean rate comes from the others (Prometheus's rate() and InfluxDB's
non_negative_derivative do not count a drop either).

A gap longer than ``max_gap`` also primes again, since a rate over it would
smear a restart's unknown interval.  Samples at or before the last one's
time are duplicates or out of order and are not used.  The state holds at
most ``max_counters`` counters; beyond that the least recently updated are
forgotten (counted), 1 % of the bound at once, so senders inventing devices
cannot grow memory.
"""

from collections import Counter
from itertools import islice

from vmstats.server.formats import TOTAL, Sample

#: At the bound on counters, one in this many of it is forgotten at once (at least one).
FORGOTTEN_SHARE = 100


class CounterRates:
    """Per-(vm, kind, device) last values; turns ``*_total`` samples into rate samples."""

    def __init__(self, max_counters: int = 200_000, max_gap: float = 600.0):
        self.max_counters = max_counters
        self.max_gap = max_gap
        #: (vm, kind, device) -> (ts, value), least recently updated first.
        self.last: dict[tuple, tuple[float, float]] = {}
        self.events: Counter[str] = Counter(primed=0, restarted=0, stale=0, out_of_order=0,
                                            forgotten=0)

    def rate(self, sample: Sample) -> Sample | None:
        """The rate ``sample`` (a ``*_total`` counter) makes with the one before, or None."""
        vm, ts, kind, device, value = sample
        per_second = self.step((vm, kind, device), ts, value)
        if per_second is None:
            return None
        return Sample(vm, ts, kind[:-len(TOTAL)], device, per_second)

    def step(self, key: tuple, ts: float, value: float) -> float | None:
        """The per-second rate of counter ``key`` since its last sample, or None (see above)."""
        last = self.last.pop(key, None)
        if last is None:
            self._remember(key, ts, value)
            self.events["primed"] += 1
            return None
        then, before = last
        if ts <= then:
            self.last[key] = last
            self.events["out_of_order"] += 1
            return None
        self.last[key] = (ts, value)
        elapsed = ts - then
        if elapsed > self.max_gap:
            self.events["stale"] += 1
            return None
        if value >= before:
            return (value - before) / elapsed
        self.events["restarted"] += 1
        return None

    def _remember(self, key: tuple, ts: float, value: float) -> None:
        """Hold a new counter; at the bound, forget the least recently updated first, a share
        of the bound at once (``FORGOTTEN_SHARE``): the first key of a dict whose front was
        emptied by forgetting one at a time is found past every empty slot there, so each new
        counter of a sender inventing devices cost tens of microseconds more than the last."""
        if len(self.last) >= self.max_counters:
            count = max(1, self.max_counters // FORGOTTEN_SHARE)
            for old in list(islice(self.last, count)):
                del self.last[old]
            self.events["forgotten"] += count
        self.last[key] = (ts, value)

    def state(self) -> list:
        """``[vm, kind, device, ts, value]`` of every counter, least recently updated first."""
        return [[*key, ts, value] for key, (ts, value) in self.last.items()]

    def load(self, state: list) -> None:
        """Start from ``state`` (what ``state`` returned)."""
        self.last = self.read_state(state)

    @staticmethod
    def read_state(state: list) -> dict[tuple, tuple[float, float]]:
        """``state`` (what ``state`` returned) as ``last`` holds it; raises (ValueError,
        TypeError) on one of another shape, before anything held is replaced."""
        return {(vm, kind, device): (ts, value) for vm, kind, device, ts, value in state}

    def __len__(self) -> int:
        return len(self.last)

