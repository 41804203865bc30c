"""Sub-minute samples of many VMs assembled into the one-minute records the logs hold.

Other agents send each metric on its own, every 10 s or so.  Here each VM's
samples are gathered per minute and become one ``protocol.Record``:

* a record's ``ts`` is the end of its minute, as the vmstats agent stamps a
  record with the end of the interval it covers: a sample at ``t`` belongs to
  the minute ending at the next multiple of 60 at or after ``t`` (Telegraf's
  samples at :10 ... :00 describe the ten seconds before each);
* ``cpu`` is the mean of the minute's CPU samples and ``cpu_max`` the largest;
  ``mem`` the mean of the memory samples; rates (disk, network) are each
  device's mean rate, summed over the VM's devices (partitions and virtual
  disks left out, by the agent's own rule; virtual interfaces by their names,
  interfaces.py); ``vcpus`` and ``mem_mb`` the last value seen;
* a field with no sample in the minute stays empty (unknown), never zero; a
  minute without any cpu or without any mem sample cannot be a record (the
  protocol requires both) and is counted as incomplete instead of written.

A minute is complete once the VM has sent a sample ``grace`` seconds past its
end, or once ``grace`` seconds have passed since the minute ended and since
its last sample arrived (senders that stopped, or history sent in a burst);
at shutdown every open minute is written as it stands.  A sample for a
minute already written is late and counted, never merged into a second row.
At most ``max_open`` minutes are held; beyond that the oldest are completed
early (counted), so memory stays bounded whatever senders do.  Within one, each
kind of names (a rate's devices; the CPUs, or memory kinds, of all its seconds
together) holds at most ``max_devices``: a sample naming one more is refused as
``device_cap``.  All open minutes together hold at most ``max_names`` names: past
that a new one is refused as ``name_budget`` until minutes written make room.  A
name longer than ``max_name_bytes`` is refused as ``too_long`` before it is held
anywhere (a minute, a counter): the bound on names counts names, not their bytes.
"""

import heapq
import math
import sys
from collections import Counter
from typing import NamedTuple

from vmstats import protocol
from vmstats.client.procfs import whole_disks
from vmstats.protocol import FIRST_STAMP
from vmstats.server import native
from vmstats.server.clock import outside_window, window_reason
from vmstats.server.formats import (
    BOUNDS,
    CPU_STATE,
    MAX_DEVICES,
    MAX_NAME_BYTES,
    MAX_NAMES,
    MAX_WRITTEN,
    MEM_PART,
    PERCENT_SLACK,
    R_DEVICE_CAP,
    R_NAME_BUDGET,
    R_RANGE,
    R_TOO_LONG,
    RATES,
    TOTAL,
    Bounds,
    OutOfRange,
    Sample,
    Tally,
    Words,
    shown,
    within,
)
from vmstats.server.formats.interfaces import VirtualInterfaces
from vmstats.server.formats.rates import CounterRates

#: The version of _minutes.c this module calls (its VERSION): raised with every change to
#: what passes between them, so that a build of an older source is refused (native.py).
MINUTES_VERSION = 1
#: add's loop in C (setup.py); the same state and records, ~1 us a Telegraf line less.  None
#: where it was not built (no C compiler).
_native = native.load("_minutes", MINUTES_VERSION)

#: CPU states that are idle time (collectd's names; iowait is idle, as for the agent).
IDLE_STATES = frozenset(("idle", "wait"))
#: Kind -> (least, greatest, slack) of the values a sample may carry; the record's fields take
#: their bounds from the protocol's table.  Percentages (a state's share of the CPU too) within
#: PERCENT_SLACK of theirs are rounding and clamped in; any other value outside is impossible
#: (``usage_idle=-50``, a negative byte rate, 0 vCPUs) and refused, never clamped into a
#: plausible one.
_LIMITS = {
    **{kind: (*BOUNDS[kind], PERCENT_SLACK) for kind in ("cpu", "mem")},
    CPU_STATE: (*BOUNDS["cpu"], PERCENT_SLACK),
    **{kind: (*BOUNDS[kind], 0) for kind in ("vcpus", "mem_mb", *RATES)},
    MEM_PART: (0, math.inf, 0),  # bytes of one kind of memory
}
_MIB = 1 << 20
_VCPU_PLACES = protocol.field_places("vcpus")
_RATE_KINDS = frozenset(RATES)
#: The rates summed over a VM's interfaces: the virtual ones are left out of both alike.
_NET_KINDS = frozenset(("net_rx", "net_tx"))
#: The event counting an interface a minute's network rates left out as virtual.
VIRTUAL_INTERFACE = "virtual_interface"
#: Past the bound on open minutes, one in this many of it is completed early at once (at
#: least one): the pass that finds the oldest is made once per so many new minutes.
FORCED_SHARE = 100
#: The greatest counter value, and CPU state rate, taken: the largest double.  Arithmetic on
#: a counter beyond it (an ``i`` or ``u`` integer of 400 digits) cannot be done in floats and
#: raised out of ``add``; a rate past it is infinite, and an infinite jiffy rate made a minute
#: 100 % busy (or 0 %, as inf / inf).
_DOUBLE_MAX = sys.float_info.max
#: Counter kinds -> (the rate kind they become, the greatest rate a record may hold).
_COUNTERS = {kind + TOTAL: (kind, BOUNDS.get(kind, (0, _DOUBLE_MAX))[1])
             for kind in RATES + (CPU_STATE,)}
#: The least stamp taken whatever --max-past (protocol.FIRST_STAMP: 2000, before which no
#: clock that was set reads), as a float: the C loop compares two floats at once.  A sample
#: stamped 0 was refused before as ``late`` ("already written": its minute ends at 0), in words
#: that sent an operator looking for a minute no one wrote; a replay judges by it too, so it
#: refuses what the run refused (and, of a journal left by a version that took stamps from 1,
#: the samples before 2000 it journaled after its last checkpoint: their minutes are not
#: written after the upgrade; a minute the checkpoint holds open is, as it stands).
_FIRST_STAMP = float(FIRST_STAMP)
#: Stamps within this of 0 are worded as any other (outside_window's ``%d`` and ``%.0f``).
_STAMP_MAX = 1e300


class Minute:
    """What one VM sent for one minute so far.

    Held as running sums, counts and dicts of floats rather than lists: the collector
    untracks dicts of atomic values but walks every list on each pass, and ten thousand
    VMs' open minutes are most of what it would walk.  The sums are added in the order
    the samples came, as ``sum`` over a list of them would be, so records are the same.
    """

    __slots__ = ("cpu_sum", "cpu_count", "cpu_max", "mem_sum", "mem_count", "mem_mb", "vcpus",
                 "sums", "counts", "states", "parts", "cpu_names", "part_names", "touched")

    def __init__(self, now: float):
        self.cpu_sum = 0.0
        self.cpu_count = 0
        self.cpu_max = -math.inf
        self.mem_sum = 0.0
        self.mem_count = 0
        self.mem_mb: float | None = None
        self.vcpus: float | None = None
        #: rate kind -> device -> sum of its rates, and -> how many; second -> [idle, total,
        #: CPUs] over every CPU and state; second -> {memory kind: bytes}.  Made when first
        #: needed: most minutes (Telegraf's) need none of the last two.
        self.sums: dict[str, dict[str, float]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.states: dict[int, list] | None = None
        self.parts: dict[int, dict[str, float]] | None = None
        #: The (second, CPU) and (second, memory kind) names ``states`` and ``parts`` hold:
        #: each bounded per minute, not per second (61 seconds of 8,192 CPUs were 50 MB).
        self.cpu_names = 0
        self.part_names = 0
        self.touched = now


class MinuteAssembler:
    """Samples in, complete one-minute Records out (``take``)."""

    def __init__(self, grace: float = 30.0, max_open: int = 200_000, max_future: int = 300,
                 max_past: int = 0, rates: CounterRates | None = None,
                 virtual: VirtualInterfaces | None = None, max_devices: int = MAX_DEVICES,
                 max_names: int = MAX_NAMES, max_name_bytes: int = MAX_NAME_BYTES,
                 max_written: int = MAX_WRITTEN):
        self.grace = grace
        self.max_open = max_open
        #: The most names of each kind a minute holds (``MAX_DEVICES``), an int of at least 1.
        self.max_devices = max_devices
        #: The most names all open minutes hold together (``MAX_NAMES``), and those they hold:
        #: counted up as each is filed, down as its minute is written.
        self.max_names = max_names
        self.names = 0
        #: The longest device name taken, in bytes of UTF-8 (``MAX_NAME_BYTES``).
        self.max_name_bytes = max_name_bytes
        self.max_future = max_future
        self.max_past = max_past
        self.rates = rates if rates is not None else CounterRates()  # an empty one is falsy
        #: Which interfaces' rates a record leaves out (--virtual-interfaces).
        self.virtual = virtual if virtual is not None else VirtualInterfaces()
        #: vm -> minute end -> Minute
        self.open: dict[str, dict[int, Minute]] = {}
        self.open_count = 0
        #: vm -> the latest minute end written (samples at or before it are late)
        self.written: dict[str, int] = {}
        #: vm -> the latest sample time seen
        self.newest: dict[str, float] = {}
        #: VMs whose minute last written is remembered beside those open (``MAX_WRITTEN``).
        self.max_vms = max_written
        self.ready: list[protocol.Record] = []
        self.events: Counter[str] = Counter(records=0, incomplete=0, late=0, forced=0,
                                            **{R_RANGE: 0, VIRTUAL_INTERFACE: 0})
        #: The C loop that files samples (None: ``_file``, the Python it is held to).
        self.native = _native

    @property
    def bounds(self) -> Bounds:
        """The bounds samples are taken and minutes held by now."""
        return Bounds(self.max_name_bytes, self.max_devices, self.max_names, self.max_open,
                      self.max_vms, self.rates.max_counters)

    @bounds.setter
    def bounds(self, bounds: Bounds) -> None:
        (self.max_name_bytes, self.max_devices, self.max_names, self.max_open, self.max_vms,
         self.rates.max_counters) = bounds

    @staticmethod
    def named_past(samples: list[Sample], most: int, refused: list) -> int:
        """How many of ``samples`` that ``add`` filed (not among ``refused``, its list) name a
        device longer than ``most`` bytes: those a replay kept past a bound lowered since."""
        out = {item[0] for item in refused}
        return sum(1 for index, sample in enumerate(samples)
                   if index not in out and _too_long(sample[3], most))

    # -- samples in ------------------------------------------------------------------------------
    def add(self, samples: list[Sample], now: float, tally: Tally,
            refused: list | None = None, limits: tuple[int, int] | None = None) -> None:
        """File samples (counter samples become rates first); complete what they finish.

        A sample not filed is counted in ``tally`` -- or, with ``refused`` given, listed there
        as ``(index in samples, reason, detail)`` for a caller that counts by line (the edge:
        a line its decoder counted as used must not count twice, however many samples it made).
        ``limits`` are the ``(max_future, max_past)`` to judge them by, if not this run's: a
        replay's, those of the run that took them (its answer said which it refused).

        The samples are filed by the C loop (``_minutes.c``) where it was built, else by
        ``_file``: this runs in the reactor for every sample of every other agent, and was
        most of a Telegraf line's cost there in Python.
        """
        # A sample's minute ends up to 59 s after it, and that minute's record must pass the
        # native ingest's own --max-future check when it is filed, later: a sample whose minute
        # would end past now + max_future is refused now, not dropped once acknowledged.
        max_future, max_past = limits if limits is not None else (self.max_future, self.max_past)
        latest = (int(now) + max_future) // 60 * 60
        earliest = now - max_past if max_past else _FIRST_STAMP
        if earliest < _FIRST_STAMP:
            earliest = _FIRST_STAMP
        reject = _Rejects((max_future, max_past), tally, refused)
        if self.native is not None:
            finished = self.native.add(self, samples, now, earliest, latest, reject)
        else:
            finished = self._file(samples, now, earliest, latest, reject)
        grace = self.grace
        open_ = self.open
        newest = self.newest
        for vm in finished:
            horizon = newest[vm] - grace
            minutes = open_.get(vm, {})
            for end in sorted(minutes):
                if end <= horizon:
                    self._complete(vm, end)

    def _file(self, samples: list[Sample], now: float, earliest: float, latest: float,
              reject) -> set[str]:
        """``add``'s loop in Python: the reference the C (``_minutes.c``) is held to, and what
        runs where the C is not built.  Returns the VMs whose newer samples may have finished
        an earlier minute.

        This runs once per sample of every other agent, so it is written for speed: one
        pass, local names, the rates (most samples) filed here and the other kinds in
        ``_put``.  A line's samples (and a sender's lines of one moment) come together with
        one VM and time: the minute found for the first serves the rest, the lookups and the
        newest time being the same.
        """
        step = self.rates.step
        most_bytes = self.max_name_bytes
        short = most_bytes // 4  # a name of no more characters is no more bytes (UTF-8)
        open_ = self.open
        written = self.written
        newest = self.newest
        finished: set[str] = set()
        held_vm = held_ts = held = None  # the minute of the last sample filed, its vm and ts
        for index, (vm, ts, kind, device, value) in enumerate(samples):
            if not earliest <= ts <= latest:
                _refuse_time(index, ts, now, latest, reject)
                continue
            if len(device) > short and _too_long(device, most_bytes):  # before a counter holds it
                self._refuse_long(index, vm, kind, device, reject)
                continue
            if kind in _COUNTERS:
                # Bytes or jiffies so far: never negative, nor beyond what a double holds.
                if not (value >= 0 and value <= _DOUBLE_MAX):
                    _refuse_counter(index, kind, value, None, reject)
                    continue
                value = step((vm, kind, device), ts, value)
                if value is None:
                    continue
                kind, high = _COUNTERS[kind]
                if value > high:
                    _refuse_rate(index, kind, value, high, reject)
                    continue
            elif kind in _LIMITS:
                low, high, slack = _LIMITS[kind]
                if not low <= value <= high:
                    try:
                        value = within(kind, value, low, high, slack)
                    except OutOfRange as exc:
                        reject(index, R_RANGE, exc.detail)
                        continue
            if ts != held_ts or vm != held_vm:  # else found, touched and newest already
                end = int(-(-ts // 60)) * 60
                minutes = open_.get(vm)
                if minutes is None:
                    if end <= written.get(vm, 0):
                        self._late(index, vm, end, reject)
                        continue
                    minutes = open_[vm] = {}
                held = minutes.get(end)
                held_vm, held_ts = vm, ts
                if held is None:
                    if end <= written.get(vm, 0):
                        held_vm = None
                        self._late(index, vm, end, reject)
                        continue
                    held = minutes[end] = Minute(now)
                    self.open_count += 1
                    if self.open_count > self.max_open:
                        held_vm = None  # the minute forced out may be this one
                        self._force_oldest(held)
                else:
                    held.touched = now
                if ts > newest.get(vm, 0.0):
                    newest[vm] = ts
                    if len(minutes) > 1:  # an earlier minute may be done with
                        finished.add(vm)
            if kind in _RATE_KINDS:  # the most common kind: Telegraf's and collectd's devices
                sums = held.sums.get(kind)
                if sums is None:
                    refused = self._admit(0)
                    if refused is not None:
                        self._refuse_name(index, vm, kind, device, refused, reject)
                        continue
                    held.sums[kind] = {device: value}
                    held.counts[kind] = {device: 1}
                else:
                    total = sums.get(device)
                    if total is None:  # a new device: past a bound, refused
                        refused = self._admit(len(sums))
                        if refused is not None:
                            self._refuse_name(index, vm, kind, device, refused, reject)
                            continue
                        total = 0.0
                    counts = held.counts[kind]
                    sums[device] = total + value
                    counts[device] = counts.get(device, 0) + 1
            else:
                refused = _put(held, kind, device, value, ts, self)
                if refused is not None:
                    self._refuse_name(index, vm, kind, device, refused, reject)
        return finished

    def _admit(self, held: int) -> str | None:
        """One name more for a minute holding ``held`` of its kind: counted in ``names`` and
        None, or the reason it is refused -- the minute's bound (``max_devices``), then all
        open minutes' (``max_names``).  Called for new names only, never for each sample."""
        if held >= self.max_devices:
            return R_DEVICE_CAP
        if self.names >= self.max_names:
            return R_NAME_BUDGET
        self.names += 1
        return None

    def _refuse_name(self, index: int, vm: str, kind: str, device: str, reason: str,
                     reject) -> None:
        """A sample naming a device past a bound (``_admit``'s reason): refused, so a sender
        making names up costs no more memory than the bounds, and loses only that sample."""
        if reason == R_DEVICE_CAP:
            detail = Words("%s's minute already holds %d devices of %s: %r refused",
                           vm, self.max_devices, kind, device)
        else:
            detail = Words("open minutes already hold %d device names: %s's %s %r refused",
                           self.max_names, vm, kind, device)
        reject(index, reason, detail)

    def _refuse_long(self, index: int, vm: str, kind: str, device: str, reject) -> None:
        """A sample naming a device longer than ``max_name_bytes``: refused before a minute or
        a counter holds the name, so the bound on names bounds their bytes too.  The detail
        shows the name's start and its length, not all of it (up to 64 KiB)."""
        reject(index, R_TOO_LONG, Words(_long_words, vm, kind, device, self.max_name_bytes))

    def _late(self, index: int, vm: str, end: int, reject) -> None:
        self.events["late"] += 1
        reject(index, "late", Words("sample for %s's minute ending %d, already written", vm, end))

    def clock_stepped(self, step: float) -> None:
        """The wall clock was stepped (vmstats/server/clock.py): each open minute's last
        arrival moves with it, so its grace runs from its last sample, not from the step (a
        step forward would complete every open minute at once and refuse the rest of its
        samples as late; one back would hold the minutes of a sender that stopped that much
        longer)."""
        for minutes in self.open.values():
            for minute in minutes.values():
                minute.touched += step

    def touched_by(self, now: float) -> None:
        """No open minute was last touched after ``now``: one that says so was restored
        (journaling.py) from before the clock went back, and would wait the way back on top
        of its grace -- for ever if the clock, wrong at the start, is stepped forward later."""
        for minutes in self.open.values():
            for minute in minutes.values():
                if minute.touched > now:
                    minute.touched = now

    # -- records out -----------------------------------------------------------------------------
    def tick(self, now: float) -> list[tuple[str, int]]:
        """Complete the minutes nothing more is coming for (called every second or so).

        Returns the ``(vm, end)`` completed: unlike completions by samples, these depend on
        the clock, so the edge's journal notes them for a replay to repeat (journaling.py).
        """
        grace = self.grace
        due = [(vm, end) for vm, minutes in self.open.items() for end, minute in minutes.items()
               if now >= max(end, minute.touched) + grace]
        return self.complete(sorted(due, key=lambda item: item[1]))

    def complete_all(self) -> list[tuple[str, int]]:
        """Every open minute as it stands (shutdown); returns the ``(vm, end)`` completed."""
        return self.complete(sorted(((vm, end) for vm, minutes in self.open.items()
                                     for end in minutes), key=lambda item: item[1]))

    def complete(self, keys: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """Complete the open minutes among ``keys``, in that order; returns those completed."""
        done = [(vm, end) for vm, end in keys if end in self.open.get(vm, ())]
        for vm, end in done:
            self._complete(vm, end)
        return done

    def take(self) -> list[protocol.Record]:
        ready, self.ready = self.ready, []
        return ready

    def _force_oldest(self, opened: Minute) -> None:
        """Past ``max_open``: complete the oldest open minutes early, a share of the bound at
        once (``FORCED_SHARE``).  Finding them is a pass over every open minute: made for each
        new minute past the bound (a sender inventing VMs), it held the reactor 30 ms a sample
        at 200,000 minutes.  The minute just opened (``opened``) is never one of them: the
        sample it was opened for would be filed into a minute already written.  Others that
        hold nothing are (their samples all refused, past ``max_names``): were they skipped
        too, the oldest could all be such and none be forced, each new minute one more and
        one more pass.  The oldest are those of the earliest end, then of the least VM id:
        the same after a replay."""
        count = max(1, self.max_open // FORCED_SHARE)
        oldest = heapq.nsmallest(count + 1, ((end, vm) for vm, minutes in self.open.items()
                                             for end in minutes))
        for end, vm in [(end, vm) for end, vm in oldest
                        if self.open[vm][end] is not opened][:count]:
            self.events["forced"] += 1
            self._complete(vm, end)

    def _complete(self, vm: str, end: int) -> None:
        minutes = self.open[vm]
        minute = minutes.pop(end)
        self.open_count -= 1
        self.names -= _names_in(minute)
        if not minutes:
            del self.open[vm]
        if end > self.written.get(vm, 0):
            self.written[vm] = end
        if len(self.written) > self.max_vms + len(self.open):  # senders inventing hosts
            self._forget_written()
        record = _record(vm, end, minute, self.events, self.virtual)
        if record is None:
            self.events["incomplete"] += 1
            return
        self.events["records"] += 1
        self.ready.append(record)

    def _forget_written(self) -> None:
        """Forget the minute last written of the ``max_vms // 2`` VMs written longest ago that
        have no minute open.  Called only once more VMs than ``max_vms`` without an open minute
        are known, so there are that many to forget and the pass over them all is made once per
        ``max_vms // 2`` minutes written.  (It was made whenever more than ``max_vms`` were
        known and forgot only among the first half: with those all open again -- a sender's
        next samples -- it forgot nothing and was made again for every minute written, 5 ms
        each at 200,000 VMs.)"""
        left = self.max_vms // 2
        for old in list(self.written):
            if old not in self.open:
                del self.written[old]
                self.newest.pop(old, None)
                left -= 1
                if not left:
                    break

    # -- state across a restart (journaling.py) --------------------------------------------------
    def state(self) -> dict:
        """Everything a replay must start from, as JSON-able values, in the dicts' own order
        (the order decides what the caps evict, so a replay evicts the same)."""
        return {
            "open": [[vm, end, _minute_state(minute)] for vm, minutes in self.open.items()
                     for end, minute in minutes.items()],
            "written": list(self.written.items()),
            "newest": list(self.newest.items()),
            "counters": self.rates.state(),
        }

    def load(self, state: dict) -> None:
        """Start from ``state`` (what ``state`` returned), replacing whatever is held."""
        self.adopt(self.read_state(state))

    def read_state(self, state: dict) -> "LoadedState":
        """``state`` (what ``state`` returned, read back) made ready for ``adopt``, without
        touching what is held: one that cannot be read whole (a part missing or of another
        shape) raises here, KeyError, TypeError or ValueError, before anything is replaced."""
        opened: dict[str, dict[int, Minute]] = {}
        for vm, end, minute in state["open"]:
            opened.setdefault(vm, {})[int(end)] = _minute_from(minute)
        return LoadedState(opened, {vm: int(end) for vm, end in state["written"]},
                           {vm: float(ts) for vm, ts in state["newest"]},
                           self.rates.read_state(state["counters"]))

    def adopt(self, state: "LoadedState") -> None:
        """Replace whatever is held by ``state`` (``read_state``'s): assignments only, so a
        checkpoint is applied whole or, refused by ``read_state``, not at all."""
        self.open = state.open
        self.open_count = sum(map(len, self.open.values()))
        self.names = sum(_names_in(minute) for minutes in self.open.values()
                         for minute in minutes.values())
        self.written = state.written
        self.newest = state.newest
        self.rates.last = state.counters


class LoadedState(NamedTuple):
    """A checkpoint's state read whole (``MinuteAssembler.read_state``), not yet in force."""

    open: dict
    written: dict
    newest: dict
    counters: dict


class _Rejects:
    """Where ``add``'s refusals go (``tally``, or the ``refused`` list of a caller that counts
    by line), with the ``(max_future, max_past)`` its samples were judged by: the C loop
    hands it to ``_refuse_time`` as it is, which words a refusal with them."""

    __slots__ = ("limits", "_tally", "_refused")

    def __init__(self, limits: tuple[int, int], tally, refused: list | None):
        self.limits = limits
        self._tally = tally
        self._refused = refused

    def __call__(self, index: int, reason: str, detail: str) -> None:
        if self._refused is None:
            self._tally.reject(reason, detail)
        else:
            self._refused.append((index, reason, detail))


def _too_long(device: str, most: int) -> bool:
    """Is ``device`` more than ``most`` bytes of UTF-8?  Counted without encoding it where its
    characters alone say (a name of ASCII, or of no more than ``most // 4`` characters): the
    C loop calls this only for the other names, rare, and for what is not a str at all."""
    return len(device) > most // 4 and (
        len(device) > most
        or (not device.isascii() and len(device.encode("utf-8", "surrogatepass")) > most))


def _refuse_time(index: int, ts: float, now: float, latest: float, reject: _Rejects) -> None:
    """A sample too far ahead of the clock or behind it (``--max-future``, ``--max-past``),
    in the words every refusal for the window uses (clock.outside_window): which window,
    which way and by how much -- a sender's first sample from days ago is refused for the
    window, not "late" (a minute already written) nor merely "old".  Worded when read: a
    sender whose clock is a day off sends nothing else.  (A stamp those words cannot show,
    NaN or past a double, is worded at once and raises here as it always did.)"""
    ahead = ts > latest
    if (ts.__class__ is float or ts.__class__ is int) and -_STAMP_MAX < ts < _STAMP_MAX:
        reject(index, window_reason(ahead), Words(_window_words, ts, now, ahead, reject.limits))
    else:
        reject(index, *outside_window(ts, now, ahead, *reject.limits, minute=True))


def _window_words(ts: float, now: float, ahead: bool, limits: tuple[int, int]) -> str:
    return outside_window(ts, now, ahead, *limits, minute=True)[1]


def _refuse_counter(index: int, kind: str, value: float, _high: None, reject) -> None:
    """A cumulative counter below zero or past the largest double (the C calls each refusal
    with the same arguments)."""
    reject(index, R_RANGE, Words(_counter_words, kind, value))


def _counter_words(kind: str, value: float) -> str:
    return "%s=%s outside [0, %s]" % (kind, shown(value), _DOUBLE_MAX)


def _refuse_rate(index: int, kind: str, value: float, high: float, reject) -> None:
    """A counter's rate no record could hold: the whole minute would be lost with it."""
    reject(index, R_RANGE, Words("%s=%s/s outside [0, %s]", kind, value, high))


def _long_words(vm: str, kind: str, device: str, most: int) -> str:
    """``_refuse_long``'s words: the name's start and its size (a name that is no str, which
    no decoder makes, by its length)."""
    size = (len(device.encode("utf-8", "surrogatepass")) if isinstance(device, str)
            else len(device))
    return "%s's %s device name of %d bytes is over %d: %r... refused" % (
        vm, kind, size, most, device[:32])


def _minute_state(minute: Minute) -> list:
    """The minute as JSON; cpu and mem as objects of their sums (a checkpoint written before
    held them as lists of samples, which ``_minute_from`` still reads)."""
    states = parts = None
    if minute.states is not None:
        states = [[second, idle, total, sorted(names)]
                  for second, (idle, total, names) in minute.states.items()]
    if minute.parts is not None:
        parts = [[second, kinds] for second, kinds in minute.parts.items()]
    cpu = {"sum": minute.cpu_sum, "count": minute.cpu_count,
           "max": minute.cpu_max if minute.cpu_count else None}
    mem = {"sum": minute.mem_sum, "count": minute.mem_count}
    rates = {kind: {device: [total, minute.counts[kind][device]]
                    for device, total in devices.items()}
             for kind, devices in minute.sums.items()}
    return [minute.touched, cpu, mem, minute.mem_mb, minute.vcpus, rates, states, parts]


def _minute_from(state: list) -> Minute:
    touched, cpu, mem, mem_mb, vcpus, rates, states, parts = state
    minute = Minute(touched)
    if isinstance(cpu, list):  # a checkpoint of the samples themselves
        for value in cpu:
            _put(minute, "cpu", "", value, touched, None)
        for value in mem:
            _put(minute, "mem", "", value, touched, None)
    else:
        minute.cpu_sum, minute.cpu_count = cpu["sum"], cpu["count"]
        if cpu["count"]:
            minute.cpu_max = cpu["max"]
        minute.mem_sum, minute.mem_count = mem["sum"], mem["count"]
    minute.mem_mb, minute.vcpus = mem_mb, vcpus
    minute.sums = {kind: {device: total for device, (total, _n) in devices.items()}
                   for kind, devices in rates.items()}
    minute.counts = {kind: {device: n for device, (_total, n) in devices.items()}
                     for kind, devices in rates.items()}
    if states is not None:
        minute.states = {second: [idle, total, set(names)]
                         for second, idle, total, names in states}
        minute.cpu_names = sum(len(names) for _idle, _total, names in minute.states.values())
    if parts is not None:
        minute.parts = {second: kinds for second, kinds in parts}
        minute.part_names = sum(map(len, minute.parts.values()))
    return minute


def _names_in(minute: Minute) -> int:
    """The device names ``minute`` holds, as ``MinuteAssembler.names`` counted them in."""
    return sum(map(len, minute.sums.values())) + minute.cpu_names + minute.part_names


def _put(minute: Minute, kind: str, device: str, value: float, ts: float,
         assembler: MinuteAssembler | None) -> str | None:
    """Every kind but the rates, which ``add`` files itself (they are most of the samples).
    None when filed, else why not (``assembler._admit``'s reason): a CPU or memory kind new
    to its second, past the minute's or all minutes' bound.  (``assembler`` may be None for
    the cpu and mem kinds only, which name nothing.)"""
    if kind == "cpu":
        minute.cpu_sum += value
        minute.cpu_count += 1
        if value > minute.cpu_max:
            minute.cpu_max = value
    elif kind == "mem":
        minute.mem_sum += value
        minute.mem_count += 1
    elif kind == CPU_STATE:
        second = int(round(ts))
        states = minute.states
        acc = states.get(second) if states is not None else None
        cpu, _colon, state = device.rpartition(":")
        if acc is None or cpu not in acc[2]:
            refused = assembler._admit(minute.cpu_names)
            if refused is not None:
                return refused
            minute.cpu_names += 1
            if acc is None:
                if states is None:
                    states = minute.states = {}
                acc = states[second] = [0.0, 0.0, set()]
            acc[2].add(cpu)
        if state in IDLE_STATES:
            acc[0] += value
        acc[1] += value
    elif kind == MEM_PART:
        second = int(round(ts))
        held = minute.parts
        parts = held.get(second) if held is not None else None
        if parts is None or device not in parts:
            refused = assembler._admit(minute.part_names)
            if refused is not None:
                return refused
            minute.part_names += 1
            if parts is None:
                if held is None:
                    held = minute.parts = {}
                parts = held[second] = {}
        parts[device] = value
    elif kind == "mem_mb":
        minute.mem_mb = value
    elif kind == "vcpus":
        minute.vcpus = value
    return None


def _double(value: float) -> float:
    """``value`` as a double, infinite past a double's range: an integer part (a 64-bit
    counter-typed memory value, or anything handed to the assembler) can exceed what
    float() takes, and dividing it would raise instead of counting the second as out of range."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _record(vm: str, end: int, minute: Minute, events: Counter,
            virtual: VirtualInterfaces) -> protocol.Record | None:
    """The minute's record, or None when cpu or mem is unknown.

    ``virtual`` says which of the minute's interfaces its network rates leave out (each one
    counted in ``events``): judged here, once a minute, rather than per line as they come.

    Each sample was within its bounds, but what the minute makes of many of them need not be:
    rates summed over a thousand devices past 1e15 bytes/s, ``vcpus`` counted from 5,000 CPU
    names, ``mem_mb`` from memory parts of 1e300 bytes.  The native ingest would refuse such
    a record whole, cpu and mem with it; instead the field stays empty (unknown, as when no
    sample came) and ``events`` counts it as out of range.
    """
    cpu, cpu_count, cpu_max = minute.cpu_sum, minute.cpu_count, minute.cpu_max
    cpus: set[str] = set()
    for idle, total, names in (minute.states or {}).values():
        if total == math.inf:  # rates each finite can still sum past a double
            events[R_RANGE] += 1
        elif total > 0:
            busy = min(100.0, max(0.0, 100.0 * (1.0 - idle / total)))
            cpu += busy
            cpu_count += 1
            if busy > cpu_max:
                cpu_max = busy
            cpus |= names
    mem, mem_count = minute.mem_sum, minute.mem_count
    mem_mb = minute.mem_mb
    for _second, parts in sorted((minute.parts or {}).items()):
        total = sum(_double(part) for part in parts.values())
        # Parts each finite can still sum past a double (two of 1.7e308 from a hostile
        # collectd): such a second says nothing, and int() of its infinite size would raise.
        if not math.isfinite(total):
            events[R_RANGE] += 1
        elif "used" in parts and total > 0:
            # The share first: 100 times a used part of 1e307 is already infinite.
            mem += 100.0 * (_double(parts["used"]) / total)
            mem_count += 1
            mem_mb = total / _MIB
    if not cpu_count or not mem_count:
        return None
    vcpus = minute.vcpus
    if vcpus is None and cpus and all(name.isdigit() for name in cpus):
        vcpus = len(cpus)
    rates = {}
    left_out = virtual.left_out(minute.sums.get("net_rx", ()), minute.sums.get("net_tx", ()))
    if left_out:
        events[VIRTUAL_INTERFACE] += len(left_out)
    for kind, sums in minute.sums.items():
        counts = minute.counts[kind]
        names = sums
        if kind.startswith("disk"):
            names = whole_disks(sums)
        elif left_out and kind in _NET_KINDS:
            names = [name for name in sums if name not in left_out]
        rates[kind] = round(sum(sums[name] / counts[name] for name in names), 1)
    mean = cpu / cpu_count
    fields = {"cpu": round(mean, 2), "cpu_max": round(max(cpu_max, mean), 2),
              "mem": round(mem / mem_count, 2), **rates,
              # A size as the record holds it (a 1.5-CPU container's gauge stays 1.5).
              "vcpus": protocol.stepped(vcpus, _VCPU_PLACES) if vcpus is not None else None,
              "mem_mb": int(mem_mb) if mem_mb is not None else None}
    for name, value in fields.items():
        if value is not None:
            low, high = BOUNDS[name]
            if not low <= value <= high:
                fields[name] = None
                events[R_RANGE] += 1
    if fields["cpu"] is None or fields["mem"] is None:  # not seen: each sample is a percentage
        return None
    return protocol.Record(vm=vm, ts=end, **fields)


def native_filing() -> bool:
    """Are samples filed into their minutes by the C part (``_minutes``, built with the package)?"""
    return _native is not None


if _native is not None:
    _native.configure(Minute, _put, within, OutOfRange, _COUNTERS, _LIMITS, _RATE_KINDS,
                      _refuse_time, _refuse_counter, _refuse_rate, R_RANGE, R_DEVICE_CAP,
                      R_NAME_BUDGET, _too_long)
