"""A small fleet on two hosts, written as real logs, and what its demand should be.

Shared by the capacity command tests and the admission API tests.  The
expected figures are computed here with numpy from the same series the logs
are written from (each VM's hourly peaks, summed per minute, then the
percentile: the defaults), independently of vmstats.capacity.
"""

import math
import random
import shutil
from pathlib import Path

import numpy as np
from test_report_stats import T0, series, write_records

from vmstats import logstore

DAYS = 7
MINUTES = DAYS * 1440
TS = T0 + 60 * np.arange(MINUTES)
NOISE = np.random.default_rng(11).random(MINUTES)

INVENTORY = """\
[defaults]
reserve_mem_gb = 0
buffer = 0

[[host]]
name = "kvm01"
vcpus = 16
mem_gb = 64

[[host]]
name = "kvm02"
vcpus = 64
mem_gb = 256
vms = ["patchy-*"]
"""

#: vm -> (host tag, vCPUs, MB, CPU % per minute, memory % per minute, disk, net, minutes seen)
_QUIET_DISK, _QUIET_NET = 500 + 500 * NOISE, 200 + 200 * NOISE


def _fleet():
    busy = np.round(60 + 30 * NOISE, 1)
    return {
        # Idle for a week: the report's reclaim candidate.
        "idle": (
            "kvm01",
            8,
            32768,
            np.round(0.5 + NOISE, 1),
            np.round(30 + NOISE, 1),
            _QUIET_DISK,
            _QUIET_NET,
        ),
        "busy": (
            "kvm01",
            4,
            16384,
            busy,
            np.round(70 + 10 * NOISE, 1),
            np.full(MINUTES, 5e5),
            np.full(MINUTES, 5e5),
        ),
        # Steady and small for its size: the report's downsize candidate.
        "oversized": (
            "kvm01",
            8,
            32768,
            np.round(8 + 4 * NOISE, 1),
            np.round(15 + 5 * NOISE, 1),
            np.full(MINUTES, 5e5),
            np.full(MINUTES, 5e5),
        ),
        # Seen in half its minutes, placed by the inventory's glob: kvm02 is below the gate.
        "patchy-1": (
            None,
            2,
            4096,
            np.round(20 + NOISE, 1),
            np.round(40 + NOISE, 1),
            _QUIET_DISK,
            _QUIET_NET,
        ),
        # No host tag, no selector: unplaced.
        "stray": (None, 2, 4096, np.round(20 + NOISE, 1), np.round(40 + NOISE, 1), _QUIET_DISK, _QUIET_NET),
    }


def write_fleet(data_dir: Path, inventory_path: Path) -> dict:
    """Write the logs and the inventory; returns the expected demand of kvm01."""
    fleet = _fleet()
    for vm, (host, vcpus, mem_mb, cpu, mem, disk, net) in fleet.items():
        keep = np.arange(MINUTES) % 2 == 0 if vm.startswith("patchy") else np.ones(MINUTES, bool)
        records = series(
            vm, TS[keep], cpu[keep], mem[keep], disk[keep], net[keep], vcpus=vcpus, mem_mb=mem_mb
        )
        if host:
            records = [r._replace(host=host) for r in records]
        write_records(data_dir, records)
    inventory_path.write_text(INVENTORY)
    members = [fleet[vm] for vm in ("idle", "busy", "oversized")]
    return {
        "now": _demand(members),
        "after_reclaim": _demand([fleet["busy"], fleet["oversized"]]),
        "allocated_vcpus": sum(m[1] for m in members),
        "allocated_mem_gb": sum(m[2] for m in members) / 1024,
        # stray's use, counted on no host: admission withholds it from the known hosts' room.
        "unplaced": _demand([fleet["stray"]]),
    }


def _hourly(values: np.ndarray) -> np.ndarray:
    """Each minute at the peak of its hour (the window starts at midnight, whole hours)."""
    return np.repeat(values.reshape(-1, 60).max(axis=1), 60)


def _demand(members) -> tuple[float, float]:
    """The defaults: p99.9 (an observed minute) of the members' hourly peaks summed, cores and GB."""
    cpu = sum(_hourly(m[3] / 100 * m[1]) for m in members)
    mem = sum(_hourly(m[4] / 100 * m[2] / 1024) for m in members)
    return tuple(float(np.percentile(values, 99.9, method="higher")) for values in (cpu, mem))


def fits(room_cpu: float, room_mem: float, cpu_each: float, mem_each: float) -> int:
    return max(0, min(math.floor(room_cpu / cpu_each + 1e-9), math.floor(room_mem / mem_each + 1e-9)))


def damaged_copy(base: Path, tmp_path: Path, junk: int) -> tuple[Path, Path, list[str]]:
    """The fleet's logs (``base / "data"``) with a malformed line in one day file and ``junk``
    day files of random bytes (one per made-up VM); returns the copy, the file read in part and
    the junk files, so every capacity command can be asked to name the same damage."""
    data = tmp_path / "data"
    shutil.copytree(base / "data", data)
    day = logstore.day_of(int(TS[-1]))
    torn = Path(logstore.day_path(str(data), "stray", day))
    lines = torn.read_bytes().split(b"\n")
    torn.write_bytes(b"\n".join([*lines[:5], b'%d,"12.5,3,40,,,,,2,4096,9,' % (TS[-1] - 30), *lines[5:]]))
    junk_files = []
    for k in range(junk):
        path = Path(logstore.day_path(str(data), "ghost-%02d" % k, day))
        path.parent.mkdir(parents=True)
        path.write_bytes(random.Random(k).randbytes(4096))
        junk_files.append(str(path))
    return data, torn, sorted(junk_files)
