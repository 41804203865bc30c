"""Usage profiles of a simulated fleet: what each kind of VM does, minute by minute.

Each profile draws its own levels once per VM (``draw``) and then produces a
whole block of minutes at once with numpy (``series``): per-record Python
work is what makes a simulator slower than the server it is meant to load.

Every profile states the category a sensible reclamation report must give
it (``expected``), and its sizes and levels are chosen so that answer is
unambiguous (docs/SIMULATOR.md has the table and the reasons): an idle VM
never peaks, an oversized VM is never idle, a nightly batch is busy long
enough each day for a 95th percentile to see it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

GIB = 1024
KIB = 1024.0
MIB = 1024.0 * 1024.0
#: Report categories a simulated VM can be expected to land in.
EXPECTED = ("reclaim", "schedule", "downsize", "keep", "stopped")
#: (vcpus, GiB) steps of a typical private-cloud flavour ladder.
GENERAL = ((1, 1), (1, 2), (2, 4), (2, 8), (4, 8), (4, 16), (8, 16), (8, 32), (16, 64))
Series = dict[str, np.ndarray]


def smooth_noise(rng: np.random.Generator, n: int, scale: float, width: int = 9) -> np.ndarray:
    """Gaussian noise with a few minutes of memory, as real load has (not white)."""
    raw = rng.normal(0.0, scale, n + width - 1)
    kernel = np.ones(width) / np.sqrt(width)
    return np.convolve(raw, kernel, mode="valid")


def os_noise(rng: np.random.Generator, n: int, level: float) -> np.ndarray:
    """CPU % of an idle guest: kernel ticks, agents, now and then a short cron spike."""
    cpu = level + rng.gamma(2.0, level / 4.0, n)
    spikes = rng.random(n) < 1.0 / 240.0
    cpu[spikes] += rng.uniform(2.0, 6.0, int(spikes.sum()))
    return cpu


def local_clock(ts: np.ndarray, tz_hours: float) -> tuple[np.ndarray, np.ndarray]:
    """(hour of day as a float, weekday with Monday = 0) in the VM's time zone."""
    local = ts + int(tz_hours * 3600)
    hour = (local % 86400) / 3600.0
    weekday = (local // 86400 + 3) % 7  # 1970-01-01 was a Thursday
    return hour, weekday


def _traffic(rng: np.random.Generator, activity: np.ndarray, level: float, floor: float) -> np.ndarray:
    """Bytes/s: an idle guest's background ``floor`` plus ``level`` x ``activity`` (0..1), jittered.

    The floor is absolute, not a share of the level: a VM idle at night
    moves as few bytes as an idle VM (a little NTP, ARP, its own agent),
    which is what makes its nights look idle to a report.
    """
    return (floor + level * activity) * rng.lognormal(0.0, 0.35, activity.shape[0])


def _common(rng: np.random.Generator, cpu: np.ndarray, mem: np.ndarray, activity: np.ndarray,
            p: dict) -> Series:
    n = cpu.shape[0]
    cpu = np.clip(cpu, 0.05, 100.0)
    cpu_max = np.clip(cpu * (1.0 + np.abs(rng.normal(0.0, 0.25, n))) + np.abs(rng.normal(0, 1.5, n)),
                      cpu, 100.0)
    return {
        "cpu": cpu,
        "cpu_max": cpu_max,
        "mem": np.clip(mem, 0.5, 99.5),
        "disk_r": _traffic(rng, activity, p["disk"] * 0.4, p["disk_floor"] * 0.2),
        "disk_w": _traffic(rng, activity, p["disk"], p["disk_floor"]),
        "net_rx": _traffic(rng, activity, p["net"], p["net_floor"]),
        "net_tx": _traffic(rng, activity, p["net"] * 0.6, p["net_floor"] * 0.6),
    }


# --- the profiles -------------------------------------------------------------------------------
# draw(rng) -> per-VM levels; series(p, ts, hour, weekday, rng) -> arrays for those minutes.


def background(rng: np.random.Generator) -> dict:
    """Per-VM background I/O every profile has: what an idle guest writes and sends (bytes/s)."""
    return {"disk_floor": rng.uniform(1, 8) * KIB, "net_floor": rng.uniform(150, 600)}


def _steady(cpu_noise: float, mem_noise: float, activity: float) -> Callable[..., Series]:
    """A level held all day and week, each kind of VM with noise and I/O of its own size.

    Low steady, steady busy, memory-heavy, network-heavy and oversized VMs differ only in
    their levels (drawn per VM) and in these three figures, so one generator serves them.
    """
    def series(p, ts, hour, weekday, rng):
        n = ts.shape[0]
        cpu = p["level"] + smooth_noise(rng, n, cpu_noise)
        mem = p["mem"] + smooth_noise(rng, n, mem_noise)
        return _common(rng, cpu, mem, np.full(n, activity), p)
    return series


def _idle_draw(rng):
    return {"base": rng.uniform(0.3, 1.0), "mem": rng.uniform(5.0, 15.0), "disk": 0.0, "net": 0.0}


def _idle(p, ts, hour, weekday, rng):
    n = ts.shape[0]
    cpu = os_noise(rng, n, p["base"])
    mem = p["mem"] + smooth_noise(rng, n, 0.3)
    return _common(rng, cpu, mem, np.zeros(n), p)


def _low_steady_draw(rng):
    return {"level": rng.uniform(14.0, 26.0), "mem": rng.uniform(45.0, 70.0),
            "disk": rng.uniform(20, 100) * KIB, "net": rng.uniform(20, 200) * KIB}


_low_steady = _steady(cpu_noise=2.5, mem_noise=1.0, activity=0.5)


def _business_draw(rng):
    return {"busy": rng.uniform(35.0, 65.0), "idle": rng.uniform(0.4, 1.2), "mem_day": rng.uniform(35, 55),
            "mem_night": rng.uniform(12, 22), "tz": float(rng.choice([-8, -5, 0, 1, 2, 5.5, 8, 9])),
            "disk": rng.uniform(50, 400) * KIB, "net": rng.uniform(100, 1500) * KIB}


def _business(p, ts, hour, weekday, rng):
    n = ts.shape[0]
    working = ((hour >= 9.0) & (hour < 18.0) & (weekday < 5)).astype(float)
    # Ramps up in the first hour of the day and down in the last.
    shape = working * np.clip(np.minimum(hour - 9.0, 18.0 - hour) * 2.0, 0.3, 1.0)
    cpu = np.where(working > 0, p["busy"] * shape + smooth_noise(rng, n, 6.0), os_noise(rng, n, p["idle"]))
    mem = np.where(working > 0, p["mem_day"], p["mem_night"]) + smooth_noise(rng, n, 1.0)
    return _common(rng, cpu, mem, shape, p)


def _batch_draw(rng):
    return {"start": rng.uniform(0.0, 3.0), "hours": rng.uniform(1.5, 2.5), "busy": rng.uniform(80.0, 97.0),
            "idle": rng.uniform(0.4, 1.2), "mem": rng.uniform(20, 30), "mem_busy": rng.uniform(60, 80),
            "tz": float(rng.choice([-5, 0, 1, 8])), "disk": rng.uniform(2, 20) * MIB,
            "net": rng.uniform(200, 2000) * KIB}


def _batch(p, ts, hour, weekday, rng):
    n = ts.shape[0]
    running = ((hour >= p["start"]) & (hour < p["start"] + p["hours"])).astype(float)
    cpu = np.where(running > 0, p["busy"] + smooth_noise(rng, n, 2.5), os_noise(rng, n, p["idle"]))
    mem = np.where(running > 0, p["mem_busy"], p["mem"]) + smooth_noise(rng, n, 1.0)
    return _common(rng, cpu, mem, running, p)


def _bursty_draw(rng):
    return {"base": rng.uniform(8.0, 18.0), "bursts": rng.uniform(9.0, 14.0), "peak": rng.uniform(70.0, 98.0),
            "mem": rng.uniform(35, 55), "tz": float(rng.choice([-8, -5, 0, 1, 8])),
            "disk": rng.uniform(50, 300) * KIB, "net": rng.uniform(0.5, 5) * MIB}


def _bursty(p, ts, hour, weekday, rng):
    n = ts.shape[0]
    daily = 0.75 + 0.25 * np.sin((hour - 8.0) / 24.0 * 2 * np.pi)
    load = p["base"] * daily + smooth_noise(rng, n, 2.0)
    # Bursts start as a Poisson process and last 10-40 minutes each.
    starts = np.flatnonzero(rng.random(n) < p["bursts"] / 1440.0)
    burst = np.zeros(n)
    for start, length in zip(starts, rng.integers(10, 41, starts.shape[0]), strict=True):
        burst[start:start + length] = 1.0
    cpu = np.where(burst > 0, p["peak"] + smooth_noise(rng, n, 4.0), load)
    mem = p["mem"] + 8.0 * burst + smooth_noise(rng, n, 1.5)
    return _common(rng, cpu, mem, np.maximum(daily - 0.5, burst), p)


def _busy_draw(rng):
    return {"level": rng.uniform(50.0, 82.0), "mem": rng.uniform(50, 80),
            "disk": rng.uniform(0.5, 10) * MIB, "net": rng.uniform(0.5, 10) * MIB}


_busy = _steady(cpu_noise=5.0, mem_noise=1.5, activity=0.8)


def _memory_draw(rng):
    return {"level": rng.uniform(2.0, 6.0), "mem": rng.uniform(75.0, 92.0),
            "disk": rng.uniform(10, 80) * KIB, "net": rng.uniform(100, 800) * KIB}


_memory = _steady(cpu_noise=0.8, mem_noise=0.5, activity=0.5)


def _network_draw(rng):
    return {"level": rng.uniform(4.0, 10.0), "mem": rng.uniform(20.0, 35.0),
            "disk": rng.uniform(10, 50) * KIB, "net": rng.uniform(20, 100) * MIB}


_network = _steady(cpu_noise=1.0, mem_noise=0.8, activity=0.9)


def _growing_draw(rng):
    return {"from": rng.uniform(18.0, 28.0), "to": rng.uniform(60.0, 78.0),
            "mem_from": rng.uniform(30, 40), "mem_to": rng.uniform(65, 80),
            "disk": rng.uniform(100, 500) * KIB, "net": rng.uniform(0.2, 2) * MIB}


def _growing(p, ts, hour, weekday, rng):
    n = ts.shape[0]
    trend = np.clip((ts - p["t0"]) / max(1, p["t1"] - p["t0"]), 0.0, 1.0)
    cpu = p["from"] + (p["to"] - p["from"]) * trend + smooth_noise(rng, n, 3.0)
    mem = p["mem_from"] + (p["mem_to"] - p["mem_from"]) * trend + smooth_noise(rng, n, 1.0)
    return _common(rng, cpu, mem, 0.3 + 0.6 * trend, p)


def _oversized_draw(rng):
    return {"level": rng.uniform(10.0, 18.0), "mem": rng.uniform(12.0, 25.0),
            "disk": rng.uniform(50, 300) * KIB, "net": rng.uniform(50, 500) * KIB}


_oversized = _low_steady


def _stopped_draw(rng):
    return {"level": rng.uniform(15.0, 40.0), "mem": rng.uniform(40.0, 60.0),
            "disk": rng.uniform(50, 300) * KIB, "net": rng.uniform(50, 500) * KIB,
            "stop": rng.uniform(0.15, 0.5)}


_stopped = _low_steady


@dataclass(frozen=True)
class Profile:
    """One kind of VM: its sizes, its per-VM levels, its series and the verdict it deserves."""

    name: str
    expected: str
    sizes: tuple[tuple[int, int], ...]
    draw: Callable[[np.random.Generator], dict]
    series: Callable[..., Series]
    summary: str


PROFILES = {p.name: p for p in (
    Profile("idle", "reclaim", GENERAL, _idle_draw, _idle,
            "OS noise only (CPU ~1 %, rare cron spikes), little memory and traffic"),
    Profile("low_steady", "keep", ((1, 1), (1, 2)), _low_steady_draw, _low_steady,
            "the smallest size, steady 14-26 % CPU and half its memory: nothing to shrink"),
    Profile("business_hours", "schedule", ((2, 4), (2, 8), (4, 8), (4, 16), (8, 16), (8, 32)),
            _business_draw, _business,
            "busy weekdays 9-18 in its own time zone, idle nights and weekends"),
    Profile("nightly_batch", "keep", ((4, 8), (4, 16), (8, 16), (8, 32), (16, 64)), _batch_draw, _batch,
            "idle except a 1.5-2.5 h nightly run at 80-97 % CPU"),
    Profile("bursty_web", "keep", ((2, 4), (2, 8), (4, 8), (4, 16), (8, 16)), _bursty_draw, _bursty,
            "modest diurnal load with 9-14 bursts a day to 70-98 % CPU"),
    Profile("steady_busy", "keep", ((2, 4), (4, 8), (4, 16), (8, 16), (8, 32), (16, 64)), _busy_draw, _busy,
            "steady 50-82 % CPU, most of its memory"),
    Profile("memory_heavy", "keep", ((2, 16), (4, 32), (8, 64), (16, 128)), _memory_draw, _memory,
            "a cache: CPU 2-6 %, memory 75-92 % used"),
    Profile("network_heavy", "keep", ((2, 4), (2, 8), (4, 8), (4, 16)), _network_draw, _network,
            "a proxy: CPU 4-10 %, 20-100 MiB/s of traffic"),
    Profile("growing", "keep", ((2, 4), (2, 8), (4, 8), (4, 16), (8, 32)), _growing_draw, _growing,
            "load trending up from ~20 % to ~70 % over the period"),
    Profile("oversized", "downsize", ((8, 32), (16, 64), (16, 128), (32, 128)), _oversized_draw, _oversized,
            "a large VM at a steady 10-18 % CPU and 12-25 % memory"),
    Profile("stopped", "stopped", GENERAL, _stopped_draw, _stopped,
            "works normally, then stops reporting 50-85 % of the way through the period"),
)}
