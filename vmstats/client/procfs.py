"""Reading the kernel's counters from a /proc tree.

Every reader takes a ProcFiles (the agent's open files) or a /proc root path,
so tests can point it at fixture snapshots, and returns raw cumulative counters: turning them into
rates and percentages (with wrap and reset handling) is sampler.py's job, so
the parsing here stays a plain transcription of the kernel's formats.

Standard library only, Python 3.6+: this module is baked into VM images.
"""

import os
import re
from collections import namedtuple

from vmstats.words import counted

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
#: What follows a whole disk's name in its partitions' names, by the kernel's
#: rule (disk_name()): a ``p`` before the number when the disk's name ends in a
#: digit (``nvme0n1p1``, ``mmcblk0p3``), none otherwise (``sda1``, ``vda2``).  So
#: ``nvme0n10`` is a tenth namespace, not a partition of ``nvme0n1``.
_PARTITION_AFTER_DIGIT_RE = re.compile(r"p\d+\Z")
_PARTITION_AFTER_LETTER_RE = re.compile(r"\d+\Z")

LOOPBACK_INTERFACES = ("lo",)
#: Where sysfs lists the interfaces no hardware is behind (bridges, veth pairs,
#: tunnels, bonds, VLANs, ifb), relative to the sysfs root beside the /proc root.
VIRTUAL_INTERFACES_DIR = os.path.join("devices", "virtual", "net")
#: Longest possible aggregate cpu line: 10 counters of up to 20 digits.
CPU_LINE_MAX = 256


class ProcError(Exception):
    """A /proc file is missing or not in the expected format."""


class ProcFiles(object):
    """The /proc files an agent reads every few seconds, opened once.

    Each read is one pread() from offset 0 on a descriptor kept open, which
    makes the kernel regenerate the file.  Python's open()/read() stack costs
    several times the kernel's own work on a cold cache, and the agent runs
    cold: it sleeps between sub-samples (bench/agent.py measures it).  A
    read that fills the buffer is repeated with a larger one, so each result
    is one consistent generation of the file.
    """

    def __init__(self, root="/proc"):
        self.root = root
        self._open = {}  # name -> [fd, buffer size that held the whole file]

    def read(self, name):
        """The file's text."""
        # Interface names may hold any byte but "/"; latin-1 decodes them all.
        return self.read_bytes(name).decode("latin-1")

    def read_bytes(self, name, head=0):
        """The file's bytes; with ``head``, only its first ``head`` bytes (one read)."""
        entry = self._open.get(name)
        try:
            if entry is None:
                path = os.path.join(self.root, name)
                entry = self._open[name] = [os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)),
                                            4096]
            if head:
                data = os.pread(entry[0], head, 0)
            else:
                data = os.pread(entry[0], entry[1], 0)
                while len(data) >= entry[1]:
                    entry[1] *= 4
                    data = os.pread(entry[0], entry[1], 0)
        except OSError as exc:
            raise ProcError("cannot read %s: %s" % (os.path.join(self.root, name),
                                                    exc.strerror or exc))
        return data

    def close(self):
        for entry in self._open.values():
            os.close(entry[0])
        self._open = {}


def read_text(source, name):
    """The text of ``name`` from a ProcFiles or, read once, from a root path."""
    if isinstance(source, ProcFiles):
        return source.read(name)
    files = ProcFiles(source)
    try:
        return files.read(name)
    finally:
        files.close()


def _root(source):
    return source.root if isinstance(source, ProcFiles) else source


def _cpu_line(source, line):
    parts = line.split()
    if not parts or parts[0] != "cpu":
        raise ProcError("%s/stat: no cpu line first" % _root(source))
    try:
        values = [int(v) for v in parts[1:1 + len(CPU_COLUMNS)]]
    except ValueError:
        raise ProcError("%s/stat: malformed cpu line" % _root(source))
    if len(values) < 4:
        raise ProcError("%s/stat: cpu line has %s" % (_root(source), counted(len(values), "column")))
    values.extend([0] * (len(CPU_COLUMNS) - len(values)))
    return CpuTimes(*values)


def read_cpu(source):
    """The all-CPU jiffies (a tuple in CPU_COLUMNS order): all a sub-sample needs.

    This runs at every sub-sample, after a sleep, with cold caches; working
    on the first line's bytes without decoding or building a namedtuple is a
    measurable share of the agent's CPU (bench/agent.py).
    """
    if not isinstance(source, ProcFiles):
        return read_stat(source)[0]
    data = source.read_bytes("stat", CPU_LINE_MAX)
    parts = data[:data.find(b"\n")].split()
    if len(parts) < 5 or parts[0] != b"cpu":
        return _cpu_line(source, data.decode("latin-1").partition("\n")[0])  # the readable error
    try:
        values = [int(v) for v in parts[1:1 + len(CPU_COLUMNS)]]
    except ValueError:
        raise ProcError("%s/stat: malformed cpu line" % _root(source))
    return tuple(values + [0] * (len(CPU_COLUMNS) - len(values)))


def read_stat(source):
    """``(CpuTimes, vcpus)`` from ``stat``: the all-CPU jiffies and the CPU count."""
    lines = read_text(source, "stat").splitlines()
    vcpus = sum(1 for line in lines[1:] if line.startswith("cpu") and line[3:4].isdigit())
    return _cpu_line(source, lines[0] if lines else ""), max(vcpus, 1)


def read_meminfo(source):
    """``{name: kB}`` from ``meminfo``."""
    values = {}
    for line in read_text(source, "meminfo").splitlines():
        name, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and parts and parts[0].isdigit():
            values[name] = int(parts[0])
    if "MemTotal" not in values:
        raise ProcError("%s/meminfo: no MemTotal" % _root(source))
    return values


def read_diskstats(source):
    """``{disk: (sectors_read, sectors_written)}`` for whole disks only.

    Partitions are recognised by their disk being listed too (``sda`` and
    ``sda1``, ``nvme0n1`` and ``nvme0n1p1``), which works for every naming
    scheme without asking /sys; virtual devices are skipped by name.
    """
    devices = {}
    for line in read_text(source, "diskstats").splitlines():
        parts = line.split()
        if len(parts) < 10:
            continue
        name = parts[2]
        if _VIRTUAL_DISK_RE.match(name):
            continue
        try:
            devices[name] = (int(parts[5]), int(parts[9]))
        except ValueError:
            raise ProcError("%s/diskstats: malformed line for %s" % (_root(source), name))
    return dict((name, devices[name]) for name in whole_disks(devices))


def read_block_devices(source):
    """``{"MAJOR:MINOR": name}`` of every block device ``diskstats`` lists: how a cgroup's
    per-device figures are named as /proc's are; none when the file cannot be read (an
    OpenVZ container has none), so a cgroup's devices keep their numbers as names."""
    devices = {}
    try:
        text = read_text(source, "diskstats")
    except ProcError:
        return devices
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            devices["%s:%s" % (parts[0], parts[1])] = parts[2]
    return devices


def whole_disks(names):
    """The names among ``names`` that are whole disks: no partition, no virtual device.

    Partitions are recognised by their disk being listed too (``sda`` and
    ``sda1``, ``nvme0n1`` and ``nvme0n1p1``, named by the kernel's rule);
    summing both would count the same bytes twice.  The server applies the
    same rule to other agents' per-device counters.
    """
    names = [name for name in names if not _VIRTUAL_DISK_RE.match(name)]
    return [name for name in names if not any(_is_partition_of(name, other) for other in names)]


def _is_partition_of(name, disk):
    """Whether ``name`` is how the kernel names a partition of ``disk``."""
    if name == disk or not disk or not name.startswith(disk):
        return False
    suffix = _PARTITION_AFTER_DIGIT_RE if disk[-1].isdigit() else _PARTITION_AFTER_LETTER_RE
    return suffix.match(name[len(disk):]) is not None


def sys_root(proc_root):
    """The sysfs root beside a /proc root: ``/sys`` for ``/proc``, ``/host/sys`` for ``/host/proc``."""
    return os.path.join(os.path.dirname(os.path.normpath(proc_root)), "sys")


def virtual_interfaces(source):
    """The names sysfs lists as virtual interfaces; none when it cannot be read."""
    try:
        return frozenset(os.listdir(os.path.join(sys_root(_root(source)), VIRTUAL_INTERFACES_DIR)))
    except OSError:
        return frozenset()


def read_netdev(source):
    """``{interface: (rx_bytes, tx_bytes)}`` from ``net/dev`` for the VM's own NICs.

    Loopback is left out, and so is every interface sysfs lists as virtual:
    a byte between the VM and its containers crosses a veth and a bridge
    without leaving the VM, and a byte that does leave through a bridge, bond,
    VLAN, tunnel or ifb is counted again on the NIC beneath.  When every
    interface is virtual (a container's veth ``eth0``), they are the only
    way out and all are counted.
    """
    counters = _read_netdev(source)
    virtual = virtual_interfaces(source)
    nics = dict((name, value) for name, value in counters.items() if name not in virtual)
    return nics or counters


def _read_netdev(source):
    """Every interface's ``(rx_bytes, tx_bytes)`` but loopback's."""
    interfaces = {}
    for line in read_text(source, os.path.join("net", "dev")).splitlines():
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or "|" in name or name in LOOPBACK_INTERFACES:
            continue
        parts = rest.split()
        if len(parts) < 9:
            raise ProcError("%s/net/dev: malformed line for %s" % (_root(source), name))
        try:
            interfaces[name] = (int(parts[0]), int(parts[8]))
        except ValueError:
            raise ProcError("%s/net/dev: malformed line for %s" % (_root(source), name))
    return interfaces
