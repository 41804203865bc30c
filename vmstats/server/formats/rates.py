"""Cumulative counters to per-second rates, per VM and device, in bounded memory.

A counter's first sample only primes it (there is nothing to subtract yet).
After that each sample gives the rate since the one before, stamped with the
later sample's time.  When a counter goes down:

* from the upper half of the 32-bit (or 64-bit) range to a value that makes a
  small step past the top, it wrapped, and the step across the wrap is the
  amount (as the vmstats agent reads /proc);
* otherwise the sender restarted or the device was re-created: the counter
  is primed again from the new value, and no rate is made of the drop.

A gap longer than ``max_gap`` also primes again, since a rate over it would
smear a restart's unknown interval.  Samples at or before the last one's
time are duplicates or out of order and are not used.  The state holds at
most ``max_counters`` counters; beyond that the least recently updated one is
forgotten (counted), so senders inventing devices cannot grow memory.
"""

from collections import Counter

from vmstats.server.formats import TOTAL, Sample

_WRAPS = (1 << 32, 1 << 64)


class CounterRates:
    """Per-(vm, kind, device) last values; turns ``*_total`` samples into rate samples."""

    def __init__(self, max_counters: int = 200_000, max_gap: float = 600.0):
        self.max_counters = max_counters
        self.max_gap = max_gap
        #: (vm, kind, device) -> (ts, value), least recently updated first.
        self.last: dict[tuple, tuple[float, float]] = {}
        self.events: Counter[str] = Counter(primed=0, wrapped=0, restarted=0, stale=0,
                                            out_of_order=0, forgotten=0)

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
        amount = _wrapped(before, value)
        if amount is None:
            self.events["restarted"] += 1
            return None
        self.events["wrapped"] += 1
        return amount / elapsed

    def _remember(self, key: tuple, ts: float, value: float) -> None:
        if len(self.last) >= self.max_counters:
            del self.last[next(iter(self.last))]
            self.events["forgotten"] += 1
        self.last[key] = (ts, value)

    def state(self) -> list:
        """``[vm, kind, device, ts, value]`` of every counter, least recently updated first."""
        return [[*key, ts, value] for key, (ts, value) in self.last.items()]

    def load(self, state: list) -> None:
        """Start from ``state`` (what ``state`` returned)."""
        self.last = {(vm, kind, device): (ts, value) for vm, kind, device, ts, value in state}

    def __len__(self) -> int:
        return len(self.last)


def _wrapped(before: float, value: float) -> float | None:
    """The step across a 32- or 64-bit wrap from ``before`` to ``value``, or None (a restart)."""
    for top in _WRAPS:
        if top // 2 <= before < top:
            step = top - before + value
            return step if step < top // 2 else None
    return None
