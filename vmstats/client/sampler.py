"""Turning cumulative /proc counters into one interval's usage figures.

CPU accounting (Linux /proc/stat, in jiffies):

* ``guest`` and ``guest_nice`` (time this VM spent running nested guests) are
  already included in ``user`` and ``nice``; adding them again would count
  that time twice, so they are ignored.
* ``steal`` is time a vCPU was runnable but the hypervisor ran someone else.
  It is counted as *busy*: the VM wanted that CPU.  A reclamation report must
  never see a CPU-starved VM on a crowded host as idle, and an idle VM
  accrues no steal, so this only ever errs towards keeping a VM.
* ``iowait`` is idle time (the CPU was free to run anything else).
* busy = user + nice + system + irq + softirq + steal; total = busy + idle +
  iowait; CPU % = 100 * busy / total, which covers all vCPUs (100 % means
  every vCPU busy all the time).

The interval's average is the ratio of the summed busy and total jiffies, so
it is consistent with the maximum, which is the busiest sub-sample.

Counters only grow, except when they wrap or reset (a re-created interface, a
hot-unplugged CPU, ``iowait`` which may step back on tickless kernels).
counter_delta() never returns a negative number.  Only a 32-bit kernel has
counters that wrap in practice (``unsigned long`` sector counts, old drivers'
byte counts); on a 64-bit kernel every drop is a reset, because reading one as a
32-bit wrap turns a re-created interface that had moved 2-4 GiB into a spike
of up to 2 GiB that never happened.

Standard library only, Python 3.6+.
"""

import logging
import os
import sys
import time
from collections import namedtuple

from vmstats.client import cgroup, procfs

#: The usage figures of one interval; names match the record's fields.
Metrics = namedtuple("Metrics", ("cpu", "cpu_max", "mem", "disk_r", "disk_w", "net_rx", "net_tx",
                                 "vcpus", "mem_mb"))

LOG = logging.getLogger("vmstats.agent")
_WRAP32 = 1 << 32
#: The width of the kernel's counters, taken from the agent's own word size: a
#: 64-bit Python runs only on a 64-bit kernel, and a 32-bit one almost always
#: on a 32-bit kernel.
COUNTER_BITS = 64 if sys.maxsize > _WRAP32 else 32


def counter_delta(previous, current, bits=COUNTER_BITS):
    """How much a cumulative counter grew, never negative.

    With 32-bit counters, a decrease from the upper half of the 32-bit range
    to a small value is a wrap; any other decrease (and every decrease of a
    64-bit counter) is a reset, after which the counter counted ``current``
    from zero (the rule Prometheus' rate() applies).
    """
    if current >= previous:
        return current - previous
    if (bits == 32 and _WRAP32 // 2 <= previous < _WRAP32
            and current + _WRAP32 - previous < _WRAP32 // 2):
        return current + _WRAP32 - previous
    return current


def cpu_busy_total(previous, current):
    """``(busy, total)`` jiffies between two CpuTimes (see the module notes)."""
    # Positional for speed (this runs at every sub-sample): CPU_COLUMNS order.
    d = [c - p if c > p else 0 for p, c in zip(previous, current)]  # noqa: B905 (3.6: no strict)
    busy = d[0] + d[1] + d[2] + d[5] + d[6] + d[7]   # user nice system irq softirq steal
    return busy, busy + d[3] + d[4]                  # + idle iowait


def percent(part, whole):
    """``part`` as a % of ``whole``, 0 when nothing elapsed, clamped to [0, 100]."""
    if whole <= 0:
        return 0.0
    return min(100.0, max(0.0, 100.0 * part / whole))


def memory(meminfo):
    """``(used %, total MiB)`` from meminfo: used is MemTotal - MemAvailable.

    Kernels older than 3.14 have no MemAvailable; the estimate they would
    give is free + buffers + page cache + reclaimable slab.
    """
    total = meminfo["MemTotal"]
    available = meminfo.get("MemAvailable")
    if available is None:
        available = sum(meminfo.get(name, 0) for name in ("MemFree", "Buffers", "Cached",
                                                          "SReclaimable"))
    available = min(available, total)
    return percent(total - available, total), max(1, total // 1024)


def traffic(previous, current, bits=COUNTER_BITS):
    """Summed ``(a, b)`` growth over the devices present in both snapshots, or None when
    either snapshot could not read its devices (Snapshot.read): unknown, never 0.

    A device that appeared or vanished during the interval has no baseline
    and is left out for this interval rather than guessed.  ``bits`` is the
    counters' width (counter_delta()).
    """
    if previous is None or current is None:
        return None
    first = second = 0
    for name, (a, b) in current.items():
        before = previous.get(name)
        if before is not None:
            first += counter_delta(before[0], a, bits)
            second += counter_delta(before[1], b, bits)
    return first, second


def rate(amount, seconds):
    """Per-second rate, rounded to a tenth; 0 when no time elapsed."""
    if seconds <= 0:
        return 0.0
    return round(amount / seconds, 1)


#: The /proc files a record can go without, with the fields they give: an OpenVZ container
#: has no /proc/diskstats, and a host hardened by hand may hide one.  Without ``stat`` and
#: ``meminfo`` there is no record (``cpu`` and ``mem`` are required), so those stop the agent.
OPTIONAL_FILES = (("diskstats", "disk_r/disk_w"), (os.path.join("net", "dev"), "net_rx/net_tx"))


class Snapshot(namedtuple("Snapshot", ("cpu", "vcpus", "disks", "nics"))):
    """The cumulative counters of one moment (CPU, whole disks, interfaces).

    ``disks`` or ``nics`` is None when its file (OPTIONAL_FILES) cannot be read or parsed:
    the interval's fields from it are then sent as none (unknown), and the CPU and memory
    still go.  ``unread``, a list, collects ``(fields, reason)`` for each such file.
    """

    __slots__ = ()

    @classmethod
    def read(cls, source, unread=None):
        cpu, vcpus = procfs.read_stat(source)
        optional = []
        for (_name, fields), reader in zip(OPTIONAL_FILES,  # noqa: B905 (3.6: no strict)
                                           (procfs.read_diskstats, procfs.read_netdev)):
            try:
                optional.append(reader(source))
            except procfs.ProcError as exc:
                optional.append(None)
                if unread is not None:
                    unread.append((fields, str(exc)))
        return cls(cpu, vcpus, *optional)


def measure(start, end, cpu_slices, meminfo, seconds, bits=COUNTER_BITS):
    """The Metrics of an interval from its first and last snapshots, all read from /proc.

    ``cpu_slices`` are the ``(busy, total)`` jiffies of each sub-sample in
    the interval; the average is their summed ratio and the maximum the
    busiest one.  Memory is read at the end of the interval.  ``bits`` is the
    width of the kernel's counters (counter_delta()), the agent's own by default.
    """
    return combine(start, end, cpu_slices, memory(meminfo), end.vcpus, seconds, bits)


def combine(start, end, cpu_slices, mem, vcpus, seconds, bits=COUNTER_BITS,
            disk_unit=procfs.SECTOR_BYTES):
    """measure() with the CPU slices (any unit), ``(mem %, mem_mb)`` and vcpus already chosen.

    A container's come from its cgroup (IntervalSampler), a VM's from /proc;
    disks and network always come from the snapshots.  ``disk_unit`` is the
    bytes one of the snapshots' disk counts stands for: a sector for
    /proc/diskstats (counters of the kernel's width), 1 for a cgroup's bytes
    (64-bit counters whatever the kernel), None when the interval's disk
    traffic is unknown (sent as no field, never as 0).
    """
    busy = sum(s[0] for s in cpu_slices)
    total = sum(s[1] for s in cpu_slices)
    cpu = percent(busy, total)
    cpu_max = max([percent(b, t) for b, t in cpu_slices if t > 0] or [cpu])
    disk_r = disk_w = net_rx = net_tx = None
    moved = None if disk_unit is None else traffic(
        start.disks, end.disks, bits if disk_unit == procfs.SECTOR_BYTES else 64)
    if moved is not None:
        disk_r, disk_w = rate(moved[0] * disk_unit, seconds), rate(moved[1] * disk_unit, seconds)
    moved = traffic(start.nics, end.nics, bits)
    if moved is not None:
        net_rx, net_tx = rate(moved[0], seconds), rate(moved[1], seconds)
    return Metrics(
        cpu=round(cpu, 2), cpu_max=round(max(cpu_max, cpu), 2), mem=round(mem[0], 2),
        disk_r=disk_r, disk_w=disk_w, net_rx=net_rx, net_tx=net_tx, vcpus=vcpus, mem_mb=mem[1])


class IntervalSampler(object):
    """Reads /proc (and a container's cgroup) at interval and sub-interval boundaries.

    One interval's end is the next one's start, so no jiffy or byte falls
    between two records.  ``clock`` is monotonic: rates divide by the time
    that really elapsed, even if a sub-sample or a send ran late.

    ``measure`` is cgroup.MODES' choice.  Where CPU comes from is chosen at
    each interval's start: the cgroup's CPU time over ``size x elapsed``
    when a limit confines it, the size being the limit as the record's
    ``vcpus`` holds it (cgroup.vcpus_for: 0.25 for a quarter of a CPU), so
    100 % is a container running at its limit;
    else /proc/stat's jiffies.  Memory is chosen at the end, when it is read.
    Disks are chosen at the start too (cgroup.Confinement.disks_from_cgroup):
    a cgroup that cannot say leaves the interval to /proc/diskstats, the
    host's, and the log says so once until it can again; one that could at the
    start but not at the end leaves the interval's disk traffic unknown.
    """

    def __init__(self, root="/proc", clock=time.monotonic, bits=COUNTER_BITS, measure="auto"):
        self.proc = procfs.ProcFiles(root)
        self.clock = clock
        self.bits = bits
        self.confinement = cgroup.Confinement(root, measure)
        self._start = None
        self._started_at = None
        self._cpus = None        # the interval's vcpus when read from the cgroup, else None
        self._last_cpu = None    # jiffies, or (cgroup ns, clock) when self._cpus is set
        self._slices = []
        self._disk_unit = procfs.SECTOR_BYTES   # the interval's (combine()); 1: the cgroup's
        self._host_bytes = None
        # Why the cgroup's disk bytes could not be read, as the log last said (first: the
        # agent's start line, cgroup.Confinement.describe), so it is said once, not every interval.
        self._disks_unread = False
        # The OPTIONAL_FILES that could not be read, as the log last said: [(fields, reason)].
        self._files_unread = []

    def begin(self):
        """Start an interval now (also re-syncs after a long pause)."""
        self._host_bytes = procfs.read_meminfo(self.proc)["MemTotal"] * 1024
        snapshot = self._snapshot()
        if self._disks_unread is False:
            self._disks_unread = self.confinement.disks_unread(
                snapshot.vcpus, self._host_bytes, procfs.read_block_devices(self.proc))
        self._started_at = self.clock()
        self._start = self._open(snapshot, self._started_at)
        self._slices = []

    def _open(self, snapshot, now, used_ns=None, disks=None):
        """Choose the next interval's CPU and disk sources; its baseline (``used_ns`` and
        ``disks``, the cgroup's, if just read) is the snapshot returned."""
        limit = self.confinement.cpus(snapshot.vcpus)
        # The size the record will carry (vcpus_for): the CPU % is of it, as a VM's is of its CPUs.
        self._cpus = None if limit is None else cgroup.vcpus_for(limit)
        if self._cpus is None:
            self._last_cpu = snapshot.cpu
        else:
            self._last_cpu = (self.confinement.used_ns() if used_ns is None else used_ns, now)
        self._disk_unit = procfs.SECTOR_BYTES
        if self.confinement.disks_from_cgroup(self._cpus, self._host_bytes):
            if disks is None:
                disks = self._cgroup_disks()
            if disks is not None:
                self._disk_unit = 1
                return snapshot._replace(disks=disks)
        return snapshot

    def _snapshot(self):
        """Snapshot.read, saying once which fields go unsent for a file it cannot read (and
        once when they are back), not at every interval."""
        unread = []
        snapshot = Snapshot.read(self.proc, unread)
        if unread != self._files_unread:
            for fields, reason in unread:
                if (fields, reason) not in self._files_unread:
                    LOG.warning("%s; records carry no %s until it can be read", reason, fields)
            back = set(f for f, _r in self._files_unread) - set(f for f, _r in unread)
            for fields in sorted(back):
                LOG.info("%s read again", fields)
            self._files_unread = unread
        return snapshot

    def _cgroup_disks(self):
        """The cgroup's disk bytes, or None (said in the log once) when it cannot say."""
        try:
            disks = self.confinement.disks(procfs.read_block_devices(self.proc))
        except procfs.ProcError as exc:
            if str(exc) != self._disks_unread:
                LOG.warning("disk from /proc, the host's: %s", exc)
                self._disks_unread = str(exc)
            return None
        if self._disks_unread is not None:
            LOG.info("disk from the cgroup again")
            self._disks_unread = None
        return disks

    def _close_slice(self, jiffies=None):
        """The ``(busy, total)`` since the last sub-sample, and the cgroup ns read (or None)."""
        if self._cpus is None:
            cpu = procfs.read_cpu(self.proc) if jiffies is None else jiffies
            busy_total = cpu_busy_total(self._last_cpu, cpu)
            self._last_cpu = cpu
            return busy_total, None
        used, now = self.confinement.used_ns(), self.clock()
        before, then = self._last_cpu
        self._last_cpu = (used, now)
        return (counter_delta(before, used, 64), self._cpus * (now - then) * 1e9), used

    def sub_sample(self):
        """Close one CPU sub-sample; its busy share may become the interval's max."""
        self._slices.append(self._close_slice()[0])

    def finish(self):
        """The Metrics of the interval since begin()/the last finish(); starts the next."""
        end = self._snapshot()
        now = self.clock()
        busy_total, used_ns = self._close_slice(end.cpu)
        self._slices.append(busy_total)
        disks = self._cgroup_disks() if self._disk_unit == 1 else None
        meminfo = procfs.read_meminfo(self.proc)
        self._host_bytes = meminfo["MemTotal"] * 1024
        from_cgroup = self.confinement.memory(self._host_bytes)
        if from_cgroup is None:
            mem = memory(meminfo)
        else:
            mem = percent(*from_cgroup), max(1, from_cgroup[1] >> 20)
        vcpus = end.vcpus if self._cpus is None else self._cpus
        unit = None if self._disk_unit == 1 and disks is None else self._disk_unit
        metrics = combine(self._start, end if disks is None else end._replace(disks=disks),
                          self._slices, mem, vcpus, now - self._started_at, self.bits, unit)
        self._started_at = now
        self._start = self._open(end, now, used_ns, disks)
        self._slices = []
        return metrics

    def close(self):
        self.proc.close()
        self.confinement.close()
