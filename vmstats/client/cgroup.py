"""A container's CPU and memory from its cgroup, when a cgroup limits them.

In a container (LXC/LXD, Docker, a Kubernetes pod, systemd-nspawn) /proc/stat
and /proc/meminfo are the host's.  The kernel keeps the container's own
figures in its cgroup, and its limits are the container's size:

* CPU limit: v2 ``cpu.max`` (``QUOTA PERIOD``) and ``cpuset.cpus.effective``;
  v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` and the cpuset's CPUs.
* CPU used: v2 ``cpu.stat`` ``usage_usec``; v1 ``cpuacct.usage`` (ns).
* Memory limit: v2 ``memory.max``; v1 ``memory.limit_in_bytes``.
* Memory used: v2 ``memory.current`` less ``memory.stat``'s ``inactive_file``;
  v1 ``memory.usage_in_bytes`` less ``total_inactive_file`` (the whole tree's).
* Disk bytes: v2 ``io.stat`` ``rbytes``/``wbytes``; v1 blkio's
  ``blkio.throttle.io_service_bytes_recursive`` (else without ``_recursive``)
  ``Read``/``Write``, per ``MAJOR:MINOR`` device.  v1 charges a container only
  the I/O it issues itself: buffered writes go to disk from the kernel's
  flusher threads, charged to the root cgroup; and recent kernels keep v1's
  figures only for devices with a throttle rule.  A blkio file that lists no
  device cannot tell "no I/O" from "not counted", so it is not taken as 0.

Memory used is the working set, as the kubelet and ``docker stats`` count it:
the charge minus the page cache the kernel would drop first.  The charge
alone counts every file the container ever read until the limit is reached,
so an idle container that once read a big file would look full; the host
figure (MemTotal - MemAvailable) leaves reclaimable cache out in the same way.

Which cgroup: the machine's, not the agent's own, which under systemd is its
service's (the shipped unit caps that at ``MemoryMax=64M``: the agent's
limit, not the machine's).  The machine is what the agent shares with the
first process it can see, /proc/1 (a container's init, or a VM's systemd):
the deepest cgroup holding both, within the tree the agent's mount shows
(its cgroup namespace's root, or the directory a runtime bind-mounted onto
/sys/fs/cgroup).  So a container that sees the host's whole tree
(``docker run --cgroupns=host`` on v2) is read at its own cgroup, not the
host's root, and a VM at its root cgroup, which has no limit.  Where
/proc/1/cgroup cannot say (unreadable, or a PID 1 outside the agent's cgroup
namespace), the top of the tree is read.  /proc/self/cgroup says which
hierarchy and mount hold the agent; /proc/self/mountinfo says where that
mount is and which cgroup is its top.

A limit of ``max``, or as large as the host (v1's "unlimited" is a huge
number), is no limit.  A /proc file that LXCFS serves is already the
container's view, so that resource is read from /proc as on a VM.

Standard library only, Python 3.6+.
"""

import math
import os
import re
from collections import namedtuple

from vmstats import protocol
from vmstats.client import procfs

#: ``--measure``: auto reads the cgroup for each of CPU and memory that has a
#: limit; host reads /proc only; cgroup reads the cgroup's use even without a
#: limit (its size is then the host's).
MODES = ("auto", "host", "cgroup")
#: /proc files LXCFS replaces with the container's own figures.
LXCFS_FILES = ("stat", "meminfo", "diskstats")
#: The blkio files of v1 with per-device bytes, the whole subtree's first.
V1_IO_FILES = ("blkio.throttle.io_service_bytes_recursive", "blkio.throttle.io_service_bytes")
_ESCAPE_RE = re.compile(r"\\([0-7]{3})")

Mount = namedtuple("Mount", ("root", "point", "fstype", "source", "options"))


class Located(namedtuple("Located", ("cpu", "memory", "io", "lxcfs"))):
    """The cgroup readers found (None when none) and the /proc files LXCFS serves."""

    __slots__ = ()


def vcpus_for(cpus):
    """The record's ``vcpus`` for a limit of ``cpus`` CPUs: the limit itself, as the field
    holds it (protocol.FIELDS' places: a quota of 25000 in a period of 100000 is 0.25).

    Rounded to the field's places, and never below its smallest step, so a
    size never rounds to 0.  An integer field would take the ceiling (a
    1.5-CPU limit as 2: the container may run on two CPUs at once).  The
    interval's CPU % is of this size (IntervalSampler), so ``cpu x vcpus`` is
    the CPUs used whatever the rounding.
    """
    places = protocol.field_places("vcpus")
    if places == 0:
        return int(math.ceil(cpus))
    if places is None:
        return cpus
    return protocol.stepped(max(round(cpus, places), 10.0 ** -places), places)


def parse_mountinfo(text):
    """The mounts of /proc/self/mountinfo, in order (a later one over the same point wins)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 3:
            continue
        unescape = [_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 8)), f) for f in fields[3:5]]
        options = fields[dash + 3] if len(fields) > dash + 3 else ""
        mounts.append(Mount(unescape[0], unescape[1], fields[dash + 1], fields[dash + 2],
                            frozenset(options.split(","))))
    return mounts


def parse_memberships(text):
    """``{controller: path}`` from /proc/self/cgroup; cgroup v2's ``0::`` line is under ``""``."""
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _holds(root, path):
    """Whether the cgroup ``path`` lies in the tree a mount of ``root`` shows."""
    return root == "/" or path == root or path.startswith(root.rstrip("/") + "/")


def machine_cgroup(own, init, root):
    """The cgroup that is the machine: the deepest one holding the agent's (``own``) and
    PID 1's (``init``), when it lies in the tree a mount of ``root`` shows; else ``root``.

    A PID 1 outside the agent's cgroup namespace is shown as ``/..`` paths, which say
    nothing of where the machine is; so does a PID 1 whose cgroup is unknown (None).
    """
    if init is None or ".." in init.split("/"):
        return root
    common = []
    for mine, theirs in zip(own.strip("/").split("/"), init.strip("/").split("/")):  # noqa: B905
        if mine != theirs or not mine:
            break
        common.append(mine)
    path = "/" + "/".join(common)
    return path if _holds(root, path) else root


def cpu_count(cpulist):
    """The CPUs a kernel CPU list names (``0-3,8``: 5); None for an empty or unreadable list."""
    count = 0
    for part in cpulist.strip().split(","):
        first, _sep, last = part.partition("-")
        if not (first.isdigit() and (last or first).isdigit()):
            return None
        count += max(0, int(last or first) - int(first) + 1)
    return count or None


class _Reader(object):
    """One cgroup directory's files, opened once and re-read as /proc's are."""

    def __init__(self, version, directory):
        self.version = version
        self.directory = directory
        self.files = procfs.ProcFiles(directory)

    def read(self, name):
        return self.files.read(name)

    def optional(self, name):
        """The file's text, or None when it is not there (a controller not enabled here)."""
        try:
            return self.files.read(name)
        except procfs.ProcError:
            return None

    def number(self, name):
        try:
            return int(self.read(name).split()[0])
        except (ValueError, IndexError):
            raise procfs.ProcError("%s/%s: not a number" % (self.directory, name))

    def stat(self, name, key):
        """One ``key value`` line's value of a flat-keyed file."""
        for line in self.read(name).splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key and parts[1].isdigit():
                return int(parts[1])
        raise procfs.ProcError("%s/%s: no %s" % (self.directory, name, key))

    def close(self):
        self.files.close()


class CpuCgroup(object):
    """The CPU time a cgroup used and the CPUs its limits leave it."""

    def __init__(self, version, usage_dir, quota_dir=None, cpuset_dir=None):
        self.usage = _Reader(version, usage_dir)
        self.quota = _Reader(version, quota_dir) if quota_dir else None
        self.cpuset = _Reader(version, cpuset_dir) if cpuset_dir else None

    def used_ns(self):
        """Cumulative CPU time of the whole cgroup, in nanoseconds."""
        if self.usage.version == 2:
            return self.usage.stat("cpu.stat", "usage_usec") * 1000
        return self.usage.number("cpuacct.usage")

    def limit(self):
        """The CPUs the cgroup may use at once (fractional with a quota), or None."""
        limits = []
        if self.quota is not None:
            if self.quota.version == 2:
                text = self.quota.optional("cpu.max")
                parts = text.split() if text else ()
                if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit() and int(parts[1]):
                    limits.append(int(parts[0]) / int(parts[1]))
            else:
                quota, period = (self.quota.optional(name) for name in ("cpu.cfs_quota_us",
                                                                        "cpu.cfs_period_us"))
                if quota and period and quota.strip().isdigit() and period.strip().isdigit() \
                        and int(period):
                    limits.append(int(quota) / int(period))   # -1: no quota
        if self.cpuset is not None:
            names = (("cpuset.cpus.effective",) if self.cpuset.version == 2
                     else ("cpuset.effective_cpus", "cpuset.cpus"))
            for name in names:
                text = self.cpuset.optional(name)
                if text is not None:
                    count = cpu_count(text)
                    if count:
                        limits.append(float(count))
                    break
        return min(limits) if limits else None

    def close(self):
        for reader in (self.usage, self.quota, self.cpuset):
            if reader is not None:
                reader.close()


class MemoryCgroup(object):
    """A cgroup's memory limit and working set."""

    def __init__(self, version, directory):
        self.files = _Reader(version, directory)

    def limit(self):
        """The limit in bytes, or None (``max``, or no memory controller here)."""
        text = self.files.optional("memory.max" if self.files.version == 2
                                   else "memory.limit_in_bytes")
        text = text.strip() if text else ""
        return int(text) if text.isdigit() else None

    def used(self):
        """The working set in bytes: the charge less the inactive page cache, never negative."""
        if self.files.version == 2:
            charge = self.files.number("memory.current")
            inactive = self.files.stat("memory.stat", "inactive_file")
        else:
            charge = self.files.number("memory.usage_in_bytes")
            inactive = self.files.stat("memory.stat", "total_inactive_file")
        return max(0, charge - inactive)

    def close(self):
        self.files.close()


class IoCgroup(object):
    """The bytes a cgroup read from and wrote to each block device."""

    def __init__(self, version, directory):
        self.files = _Reader(version, directory)

    def counters(self):
        """``{"MAJOR:MINOR": (read, written)}`` cumulative bytes; ProcError when the file is
        missing or lists no device (v1 on a kernel that counts only throttled devices)."""
        devices = {}
        if self.files.version == 2:
            for line in self.files.read("io.stat").splitlines():
                parts = line.split()
                values = dict(part.partition("=")[::2] for part in parts[1:])
                if parts and values.get("rbytes", "").isdigit() and values.get("wbytes", "").isdigit():
                    devices[parts[0]] = (int(values["rbytes"]), int(values["wbytes"]))
            name = "io.stat"
        else:
            name = next((n for n in V1_IO_FILES if self.files.optional(n) is not None), V1_IO_FILES[-1])
            read, written = {}, {}
            for line in self.files.read(name).splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[2].isdigit() and parts[1] in ("Read", "Write"):
                    (read if parts[1] == "Read" else written)[parts[0]] = int(parts[2])
            devices = dict((device, (read[device], written.get(device, 0))) for device in read)
        if not devices:
            raise procfs.ProcError("%s/%s lists no device" % (self.files.directory, name))
        return devices

    def traffic(self, names):
        """``{disk: (read, written)}`` bytes of the whole disks among the devices, as /proc's
        disks are chosen (procfs.whole_disks), or every device if none is a whole disk (a
        device-mapper volume whose disks beneath were not charged); ``names`` maps
        ``MAJOR:MINOR`` to the kernel's names (procfs.read_block_devices)."""
        named = dict((names.get(device, device), value) for device, value in self.counters().items())
        disks = procfs.whole_disks(named)
        return dict((name, named[name]) for name in disks) if disks else named

    def close(self):
        self.files.close()


def locate(proc_root):
    """The machine's cgroup readers beside ``proc_root``; ProcError if /proc/self is unreadable.

    Mount points are read relative to the directory holding the /proc root,
    as sysfs is (``/sys/fs/cgroup`` for ``/proc``): a test's tree or a
    mounted host's is read as the agent's own would be.
    """
    memberships = parse_memberships(procfs.read_text(proc_root, "self/cgroup"))
    mounts = parse_mountinfo(procfs.read_text(proc_root, "self/mountinfo"))
    try:
        init = parse_memberships(procfs.read_text(proc_root, "1/cgroup"))
    except procfs.ProcError:
        init = {}   # hidepid, or a test's tree without it: the top of the tree, as before
    base = os.path.dirname(os.path.normpath(proc_root))
    top = {}   # controller ("" for v2) -> (version, the machine's directory), the last mount winning
    lxcfs = set()
    for mount in mounts:
        where = os.path.join(base, mount.point.lstrip("/"))
        if "lxcfs" in mount.fstype or mount.source == "lxcfs":
            lxcfs.update(name for name in LXCFS_FILES
                         if where == os.path.join(os.path.normpath(proc_root), name))
            continue
        if mount.fstype == "cgroup2":
            candidates = [("", 2)]
        elif mount.fstype == "cgroup":
            candidates = [(c, 1) for c in ("cpu", "cpuacct", "cpuset", "memory", "blkio")
                          if c in mount.options]
        else:
            continue
        for controller, version in candidates:
            path = memberships.get(controller)
            if path is not None and _holds(mount.root, path):
                home = machine_cgroup(path, init.get(controller), mount.root)
                below = os.path.relpath(home, mount.root) if home != mount.root else ""
                top[controller] = (version, os.path.join(where, below) if below else where)
    io = top.get("blkio", top.get(""))
    return Located(_cpu(top), _memory(top), io and IoCgroup(*io), frozenset(lxcfs))


def _cpu(top):
    """A v1 reader where cpuacct is a v1 controller, else a v2 reader, else None."""
    if "cpuacct" in top:
        quota, cpuset = top.get("cpu"), top.get("cpuset")
        return CpuCgroup(1, top["cpuacct"][1], quota and quota[1], cpuset and cpuset[1])
    if "" in top:
        return CpuCgroup(2, top[""][1], top[""][1], top[""][1])
    return None


def _memory(top):
    for controller in ("memory", ""):
        if controller in top:
            return MemoryCgroup(*top[controller])
    return None


class Confinement(object):
    """Where the agent reads CPU and memory from, interval by interval.

    The cgroup's limits are read again at every interval boundary (a few
    small files a minute), so a limit set or lifted on a running container
    moves the next interval to the cgroup or back to /proc.
    """

    def __init__(self, proc_root="/proc", mode="auto"):
        if mode not in MODES:
            raise ValueError("measure must be one of %s" % ", ".join(MODES))
        self.mode = mode
        self.found = Located(None, None, None, frozenset())
        if mode == "host":
            return
        try:
            self.found = locate(proc_root)
        except procfs.ProcError:
            if mode == "cgroup":
                raise
            return   # a kernel without cgroups, or a /proc tree without self/: measured as a VM
        if mode == "cgroup" and (self.found.cpu is None or self.found.memory is None):
            raise procfs.ProcError(
                "--measure cgroup: no cgroup mount holds this process's CPU and memory "
                "cgroups (%s/self/cgroup, %s/self/mountinfo)" % (proc_root, proc_root))

    def cpus(self, host_cpus):
        """The CPUs an interval's CPU % is of when read from the cgroup, else None (/proc/stat)."""
        cpu = self.found.cpu
        if cpu is None or (self.mode == "auto" and "stat" in self.found.lxcfs):
            return None
        limit = cpu.limit()
        if limit is not None and limit < host_cpus:
            return limit
        return float(host_cpus) if self.mode == "cgroup" else None

    def used_ns(self):
        return self.found.cpu.used_ns()

    def memory(self, host_bytes):
        """``(used, size)`` bytes from the cgroup, or None to read /proc/meminfo."""
        memory = self.found.memory
        if memory is None or (self.mode == "auto" and "meminfo" in self.found.lxcfs):
            return None
        limit = memory.limit()
        if limit is None or limit >= host_bytes:
            if self.mode != "cgroup":
                return None
            limit = host_bytes
        return memory.used(), limit

    def disks_from_cgroup(self, cpus, host_bytes):
        """Whether an interval's disk bytes are to come from the cgroup: always with
        ``--measure cgroup``; with ``auto`` when a limit has the cgroup measure CPU (``cpus``,
        what cpus() said) or memory, as a container's disks are its own too, unless LXCFS
        serves /proc/diskstats."""
        if self.mode == "host" or (self.mode == "auto" and "diskstats" in self.found.lxcfs):
            return False
        return self.mode == "cgroup" or cpus is not None or self.memory(host_bytes) is not None

    def disks(self, names):
        """The cgroup's ``{disk: (read, written)}`` bytes (IoCgroup.traffic); ProcError when
        no blkio or io controller holds the agent, or its file cannot say."""
        if self.found.io is None:
            raise procfs.ProcError("no cgroup mount holds this process's blkio or io cgroup")
        return self.found.io.traffic(names)

    def disks_unread(self, host_cpus, host_bytes, names):
        """Why disk bytes that are to come from the cgroup cannot (a line for the log), or
        None: they can, or /proc is to be read anyway."""
        if not self.disks_from_cgroup(self.cpus(host_cpus), host_bytes):
            return None
        try:
            self.disks(names)
        except procfs.ProcError as exc:
            return str(exc)
        return None

    def describe(self, host_cpus, host_bytes, names):
        """One line for the log at start: what the records will measure (``names``: the
        block devices' names, procfs.read_block_devices)."""
        cpus, memory = self.cpus(host_cpus), self.memory(host_bytes)
        parts = []
        if cpus is not None:
            parts.append("CPU from the cgroup (%g CPUs, sent as %s vCPUs)" % (cpus, vcpus_for(cpus)))
        if memory is not None:
            parts.append("memory from the cgroup (%d MiB)" % (memory[1] >> 20))
        if self.disks_from_cgroup(cpus, host_bytes):
            unread = self.disks_unread(host_cpus, host_bytes, names)
            parts.append("disk from the cgroup" if unread is None else
                         "disk from /proc, the host's (%s)" % unread)
        if cpus is None or memory is None:
            parts.append("%s from /proc%s" % (
                "CPU and memory" if cpus is None and memory is None else
                "CPU" if cpus is None else "memory",
                "" if self.mode == "host" else " (no cgroup limit%s)"
                % (", LXCFS" if self.found.lxcfs else "")))
        return "; ".join(parts)

    def close(self):
        for reader in self.found[:3]:
            if reader is not None:
                reader.close()
