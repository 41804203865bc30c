"""A simulated fleet: which VMs exist, their sizes and profiles, their truth, their records.

A seed reproduces a fleet exactly: the profile mix, every VM's size and
levels, and every minute of every series (each VM-day draws from its own
seeded generator, so one VM's data does not depend on how many others exist
or on the order they are generated in).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from vmstats import csvcells
from vmstats.protocol import Record
from vmstats.simulator.profiles import GIB, PROFILES, background, local_clock

MINUTE = 60
DAY_MINUTES = 1440
#: Proportions of a typical private cloud: about a third of VMs idle, oversized or stopped.
DEFAULT_MIX = {
    "idle": 14, "low_steady": 10, "business_hours": 12, "nightly_batch": 7, "bursty_web": 10,
    "steady_busy": 9, "memory_heavy": 8, "network_heavy": 5, "growing": 5, "oversized": 15, "stopped": 5,
}
TRUTH_COLUMNS = ("vm", "vcpus", "mem_mb", "profile", "expected")
#: Fields a simulated record carries, in the order the series provides them.
SERIES_FIELDS = ("cpu", "cpu_max", "mem", "disk_r", "disk_w", "net_rx", "net_tx")
_DECIMALS = {"cpu": 2, "cpu_max": 2, "mem": 2, "disk_r": 0, "disk_w": 0, "net_rx": 0, "net_tx": 0}


class MixError(ValueError):
    """A --mix value that names no known profile or has no positive weight."""


@dataclass(frozen=True)
class SimVM:
    """One simulated VM: identity, size, profile and its drawn levels."""

    index: int
    vm: str
    profile: str
    vcpus: int
    mem_mb: int
    offset: int  # second of the minute it reports at (agents jitter)
    params: dict = field(repr=False)
    stop_at: int | None = None  # stamps at or after this are never sent
    host: str | None = None  # the host tag it sends (hosts.place_fleet), None: none

    @property
    def expected(self) -> str:
        return PROFILES[self.profile].expected


def parse_mix(text: str | None) -> dict[str, float]:
    """``idle=30,oversized=20`` -> weights; profiles not named get none. ``None``/``default``: DEFAULT_MIX."""
    if text is None or text.strip() in ("", "default"):
        return dict(DEFAULT_MIX)
    weights = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        name = name.strip().replace("-", "_")
        if name not in PROFILES:
            raise MixError("unknown profile %r in --mix (known: %s)" % (name, ", ".join(PROFILES)))
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise MixError("weight of %s in --mix is not a number: %r" % (name, value)) from None
        if not 0 <= weight < math.inf:  # inf would make every share NaN
            raise MixError("weight of %s in --mix must be a finite number >= 0" % name)
        if name in weights:  # which weight was meant? The later one would win unseen.
            raise MixError("%s given twice in --mix" % name)
        weights[name] = weight
    if not sum(weights.values()) > 0:
        raise MixError("--mix gives no profile a positive weight")
    return weights


def profile_counts(n: int, mix: dict[str, float]) -> dict[str, int]:
    """Split ``n`` VMs by the weights exactly (largest remainder): proportions are not left to chance."""
    total = sum(mix.values())
    shares = {name: n * weight / total for name, weight in mix.items()}
    counts = {name: int(share) for name, share in shares.items()}
    left = n - sum(counts.values())
    for name in sorted(shares, key=lambda k: (counts[k] - shares[k], list(mix).index(k)))[:left]:
        counts[name] += 1
    return counts


def vm_address(index: int) -> str:
    """VMs are keyed by IP as in a real fleet: 10.0.0.1, 10.0.0.2, ... (254 hosts per /24)."""
    if index >= 254 * 256 * 256:
        raise ValueError("too many VMs for 10.0.0.0/8")
    return "10.%d.%d.%d" % (index // (254 * 256), (index // 254) % 256, index % 254 + 1)


def make_fleet(n: int, seed: int, mix: dict[str, float] | None = None, start: int = 0,
               end: int = 0) -> list[SimVM]:
    """``n`` VMs for the period ``[start, end)``; the same arguments give the same fleet."""
    counts = profile_counts(n, mix or DEFAULT_MIX)
    names = [name for name in PROFILES if counts.get(name)]
    assigned = np.repeat(names, [counts[name] for name in names])
    assigned = np.random.default_rng([seed, 0xF1EE7]).permutation(assigned)
    fleet = []
    for index, name in enumerate(assigned.tolist()):
        profile = PROFILES[name]
        rng = np.random.default_rng([seed, index])
        vcpus, mem_gib = profile.sizes[int(rng.integers(len(profile.sizes)))]
        params = profile.draw(rng)
        params.update(background(rng), t0=start, t1=end)
        stop_at = None
        if "stop" in params:
            stop_at = start + int((end - start) * (1.0 - params["stop"])) // MINUTE * MINUTE
        fleet.append(SimVM(index, vm_address(index), name, vcpus, mem_gib * GIB,
                           int(rng.integers(0, MINUTE)), params, stop_at))
    return fleet


def truth_csv(fleet: list[SimVM]) -> str:
    """The truth file: each VM's size, profile and the category a correct report gives it."""
    out = io.StringIO()
    writer = csvcells.writer(out)
    writer.writerow(TRUTH_COLUMNS)
    for vm in fleet:
        writer.writerow((vm.vm, vm.vcpus, vm.mem_mb, vm.profile, vm.expected))
    return out.getvalue()


def vm_day(vm: SimVM, seed: int, start: int, day: int, minutes: int) -> dict[str, np.ndarray]:
    """Arrays (``ts`` plus SERIES_FIELDS) of one VM for ``minutes`` minutes of simulated day ``day``."""
    first = start + day * DAY_MINUTES * MINUTE + vm.offset
    ts = first + MINUTE * np.arange(minutes, dtype=np.int64)
    if vm.stop_at is not None:
        ts = ts[ts < vm.stop_at]
    rng = np.random.default_rng([seed, vm.index, day])
    profile = PROFILES[vm.profile]
    hour, weekday = local_clock(ts, vm.params.get("tz", 0.0))
    series = profile.series(vm.params, ts, hour, weekday, rng) if ts.shape[0] else {
        name: np.zeros(0) for name in SERIES_FIELDS}
    out = {"ts": ts}
    for name in SERIES_FIELDS:
        out[name] = np.round(series[name], _DECIMALS[name])
    return out


def vm_records(vm: SimVM, arrays: dict[str, np.ndarray]) -> list[Record]:
    """Records of one VM from its arrays.

    Built in C loops (``zip`` and ``tuple.__new__``) with every field given
    in Record's order (seq and tags None), so no per-record Python runs: Record's own ``__new__``
    (which fills in omitted optional fields) would cost more than the rest of
    the generation.
    """
    return list(map(tuple.__new__, repeat(Record), zip(
        repeat(vm.vm), arrays["ts"].tolist(), *(arrays[name].tolist() for name in SERIES_FIELDS),
        repeat(vm.vcpus), repeat(vm.mem_mb), repeat(None), repeat(vm.host), repeat(None))))


def period(end: int, days: float) -> tuple[int, int]:
    """``(start, end)`` of ``days`` of 1-minute steps ending at the minute ``end`` falls in."""
    end = int(end) // MINUTE * MINUTE
    return end - int(round(days * DAY_MINUTES)) * MINUTE, end


def generate(fleet: list[SimVM], seed: int, start: int, end: int,
             slice_minutes: int = 60) -> Iterator[tuple[int, list[Record]]]:
    """The fleet's records in time order: ``(slice_start, records)`` per ``slice_minutes``.

    Every VM reports in every slice (as a real fleet does each minute), so a
    server's per-VM buffers fill evenly instead of one VM at a time.
    """
    total = (end - start) // MINUTE
    for day in range(-(-total // DAY_MINUTES)):
        minutes = min(DAY_MINUTES, total - day * DAY_MINUTES)
        per_vm = []
        for vm in fleet:
            arrays = vm_day(vm, seed, start, day, minutes)
            per_vm.append((vm_records(vm, arrays), arrays["ts"]))
        for offset in range(0, minutes, slice_minutes):
            low = start + (day * DAY_MINUTES + offset) * MINUTE
            high = low + slice_minutes * MINUTE
            batch: list[Record] = []
            for records, ts in per_vm:
                lo, hi = np.searchsorted(ts, [low, high])
                batch.extend(records[lo:hi])
            yield low, batch


def job_payloads(job: tuple) -> list[tuple[bytes, int]]:
    """One worker's share: a group of VMs for one simulated day, encoded and cut into payloads.

    ``job`` is ``(vms, seed, start, day, minutes, transport, batch)``; the
    result is sender.cut_payloads of the group's lines.
    """
    from vmstats.protocol import encode_records
    from vmstats.simulator.sender import cut_payloads

    vms, seed, start, day, minutes, transport, batch = job
    lines: list[bytes] = []
    for vm in vms:
        lines += encode_records(vm_records(vm, vm_day(vm, seed, start, day, minutes)))
    return cut_payloads(lines, transport, batch)


def jobs(fleet: list[SimVM], seed: int, start: int, end: int, transport: str, batch: int = 1000,
         group: int = 25) -> Iterator[tuple]:
    """The work of a parallel run in time order: each day, the fleet in groups of ``group`` VMs."""
    total = (end - start) // MINUTE
    for day in range(-(-total // DAY_MINUTES)):
        minutes = min(DAY_MINUTES, total - day * DAY_MINUTES)
        for first in range(0, len(fleet), group):
            yield fleet[first:first + group], seed, start, day, minutes, transport, batch


def parallel_payloads(fleet: list[SimVM], seed: int, start: int, end: int, transport: str,
                      workers: int, batch: int = 1000) -> Iterator[list[tuple[bytes, int]]]:
    """``job_payloads`` of every job, computed by ``workers`` processes, yielded in job order.

    At most two jobs per worker are in flight, so memory stays bounded
    whatever the fleet's size or the period's length.
    """
    import multiprocessing
    from collections import deque

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        pending: deque = deque()
        for job in jobs(fleet, seed, start, end, transport, batch):
            pending.append(pool.apply_async(job_payloads, (job,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
