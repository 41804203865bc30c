"""Reading the kernel's counters from a /proc tree.

Every reader takes the /proc root as a parameter so tests can point it at
fixture snapshots, and returns raw cumulative counters: turning them into
rates and percentages (with wrap and reset handling) is sampler.py's job, so
the parsing here stays a plain transcription of the kernel's formats.

Standard library only, Python 3.6+: this module is baked into VM images.
"""

import os
import re
from collections import namedtuple

#: /proc/stat column order of the ``cpu`` lines (older kernels print fewer
#: columns; missing ones read as zero).
CPU_COLUMNS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
               "guest", "guest_nice")
CpuTimes = namedtuple("CpuTimes", CPU_COLUMNS)

#: The kernel counts disk traffic in 512-byte sectors whatever the device's
#: real sector size (Documentation/admin-guide/iostats.rst).
SECTOR_BYTES = 512

#: Block devices that are not disks of their own: loop and ram disks, zram,
#: device-mapper and md (their I/O is also counted on the disks beneath them,
#: so summing them would count it twice), optical and floppy drives.
_VIRTUAL_DISK_RE = re.compile(r"(loop|ram|zram|dm-|md|sr|fd)\d")
#: What follows a whole disk's name in its partitions' names: ``sda1``,
#: ``vda2``, ``nvme0n1p1``, ``mmcblk0p3``.
_PARTITION_SUFFIX_RE = re.compile(r"p?\d+\Z")

LOOPBACK_INTERFACES = ("lo",)


class ProcError(Exception):
    """A /proc file is missing or not in the expected format."""


def _read(root, name):
    path = os.path.join(root, name)
    try:
        with open(path, "r") as handle:
            return handle.read()
    except (IOError, OSError) as exc:
        raise ProcError("cannot read %s: %s" % (path, exc.strerror or exc))


def read_stat(root):
    """``(CpuTimes, vcpus)`` from ``stat``: the all-CPU jiffies and the CPU count."""
    total = None
    vcpus = 0
    for line in _read(root, "stat").splitlines():
        if not line.startswith("cpu"):
            continue
        parts = line.split()
        if parts[0] == "cpu":
            try:
                values = [int(v) for v in parts[1:1 + len(CPU_COLUMNS)]]
            except ValueError:
                raise ProcError("%s/stat: malformed cpu line" % root)
            if len(values) < 4:
                raise ProcError("%s/stat: cpu line has %d columns" % (root, len(values)))
            values.extend([0] * (len(CPU_COLUMNS) - len(values)))
            total = CpuTimes(*values)
        elif parts[0][3:].isdigit():
            vcpus += 1
    if total is None:
        raise ProcError("%s/stat: no cpu line" % root)
    return total, max(vcpus, 1)


def read_meminfo(root):
    """``{name: kB}`` from ``meminfo``."""
    values = {}
    for line in _read(root, "meminfo").splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and parts and parts[0].isdigit():
            values[name] = int(parts[0])
    if "MemTotal" not in values:
        raise ProcError("%s/meminfo: no MemTotal" % root)
    return values


def read_diskstats(root):
    """``{disk: (sectors_read, sectors_written)}`` for whole disks only.

    Partitions are recognised by their disk being listed too (``sda`` and
    ``sda1``, ``nvme0n1`` and ``nvme0n1p1``), which works for every naming
    scheme without asking /sys; virtual devices are skipped by name.
    """
    devices = {}
    for line in _read(root, "diskstats").splitlines():
        parts = line.split()
        if len(parts) < 10:
            continue
        name = parts[2]
        if _VIRTUAL_DISK_RE.match(name):
            continue
        try:
            devices[name] = (int(parts[5]), int(parts[9]))
        except ValueError:
            raise ProcError("%s/diskstats: malformed line for %s" % (root, name))
    disks = {}
    for name, counters in devices.items():
        if not any(name != other and name.startswith(other)
                   and _PARTITION_SUFFIX_RE.match(name[len(other):])
                   for other in devices):
            disks[name] = counters
    return disks


def read_netdev(root):
    """``{interface: (rx_bytes, tx_bytes)}`` from ``net/dev``, loopback excluded."""
    interfaces = {}
    for line in _read(root, os.path.join("net", "dev")).splitlines():
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or "|" in name or name in LOOPBACK_INTERFACES:
            continue
        parts = rest.split()
        if len(parts) < 9:
            raise ProcError("%s/net/dev: malformed line for %s" % (root, name))
        try:
            interfaces[name] = (int(parts[0]), int(parts[8]))
        except ValueError:
            raise ProcError("%s/net/dev: malformed line for %s" % (root, name))
    return interfaces
