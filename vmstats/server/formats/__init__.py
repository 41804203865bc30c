"""Edge decoders: the data other agents already send, turned into vmstats' partial samples.

One module per format (``influx``, ``collectd``, ``graphite``), each a
``Decoder`` turning one payload's bytes into ``Sample``s and a ``Tally`` of
what it could not use; ``rates`` turns cumulative counters into per-second
rates and ``minutes`` assembles the samples of each VM into the one-minute
records the native agent sends.  ``edge`` wires them to ports and hands the
records to the same ingest path native payloads take, so nothing after the
edge knows the difference.
"""

from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

from vmstats import protocol

#: Gauges: the value is the field itself (cpu and mem in %, mem_mb in MiB, vcpus a count).
GAUGES = ("cpu", "mem", "mem_mb", "vcpus")
#: Per-second rates, summed over a VM's devices (bytes/s).
RATES = ("disk_r", "disk_w", "net_rx", "net_tx")
#: CPU time by state (``device`` is ``cpu:state``): jiffies per second, or a state's percent;
#: a minute's CPU % is the busy share of the total (idle and wait are idle, as for the agent).
CPU_STATE = "cpu_state"
#: Memory by kind in bytes (``device`` is used, free, cached, ...): used / all of them is mem %.
MEM_PART = "mem_part"
#: A cumulative counter of a rate kind is that kind plus this suffix; ``rates`` strips it.
TOTAL = "_total"
COUNTERS = tuple(kind + TOTAL for kind in RATES + (CPU_STATE,))
KINDS = frozenset(GAUGES + RATES + (CPU_STATE, MEM_PART) + COUNTERS)

# Why a line (or packet part) was not used; counted per format in /metrics.
USED = "used"
IGNORED = "ignored"  # a well-formed metric vmstats has no field for: counted, never stored
R_SYNTAX = protocol.R_SYNTAX
R_BAD_VM = protocol.R_BAD_VM
R_NO_VM = "missing_vm"
R_RANGE = protocol.R_RANGE
R_NON_FINITE = protocol.R_NON_FINITE
R_UTF8 = protocol.R_UTF8
R_TOO_LONG = protocol.R_TOO_LONG
R_TYPE = "field_type"
R_SIGNATURE = "signature"
R_UNSIGNED = "unsigned"
R_DECRYPT = "decrypt"
R_TRUNCATED = "truncated"
R_AUTH = "auth"
#: A write to the HTTP API naming new VMs the server has no room for under ``--max-vms``:
#: refused whole at its intake, counted once per write as ``auth`` is (vmroom.py).
R_VM_CAP = "vm_cap"
#: An HTTP request line on a line port: a TCP connection holding one, or a datagram (misdirected.py).
R_HTTP = protocol.R_HTTP
#: A sample naming one device more than its VM's minute holds of that kind (``MAX_DEVICES``).
R_DEVICE_CAP = "device_cap"
#: A sample naming a device new to its minute while the open minutes of every VM together hold
#: ``MAX_NAMES`` device names already.
R_NAME_BUDGET = "name_budget"

#: Field -> (least, greatest) a record may hold: the protocol's own table, the one place for them.
BOUNDS = {name: (low, high) for name, _is_int, low, high, _required, _places in protocol.FIELDS}
#: The most names one table of a VM's open minute holds: one rate's devices (disks,
#: interfaces), one second's CPUs or memory kinds.  Twice the record's bound on vCPUs: no VM's
#: CPUs reach it, a minute naming more CPUs than a record holds still counts past that bound
#: (its ``vcpus`` left empty, never the bound itself), and only a sender making names up has
#: as many disks or interfaces.  Without it one VM's minute held whatever a sender named:
#: 600,000 interfaces took the server to 278 MiB.
MAX_DEVICES = 2 * BOUNDS["vcpus"][1]
#: The most device names the open minutes of all VMs hold together (rates' devices, and each
#: second's CPUs and memory kinds).  ``MAX_DEVICES`` bounds one VM's minute, but 200,000 open
#: minutes of four rate kinds each could still hold 6.5 billion names; this bounds their sum
#: (docs/OPERATIONS.md, "Memory", has the arithmetic of the default).
MAX_NAMES = 1_000_000
#: The longest device name (an interface, disk, CPU, collectd instance, a tag used as a device)
#: taken, in bytes of UTF-8; a sample naming a longer one is refused as ``too_long``.  A name
#: is held in its minute and in its counter, and ``MAX_NAMES`` counts names, not bytes: up to
#: ``--max-line`` (64 KiB) each, a million names could hold 64 GB.  256 holds any name a device
#: has on Linux (a file name under /sys/block or /sys/class/net: ``NAME_MAX``, 255 bytes;
#: an interface's ``IFNAMSIZ`` is 16) and collectd's longest instance (``DATA_MAX_NAME_LEN``,
#: 128 with its NUL: a CPU state's ``cpu:state`` of two is 255).
MAX_NAME_BYTES = 256
#: VMs whose last minute written is remembered (a sample for it is late) beside those with a
#: minute open; past that the half written longest ago are forgotten (--edge-max-written).
#: Here with the other bounds, so the server's settings read it without loading the minutes'
#: C loop.
MAX_WRITTEN = 200_000


class Bounds(NamedTuple):
    """The bounds on what the assembler holds (the ``--edge-max-*`` options), as one value: the
    edge journals them with each payload (journaling.py) so that a replay takes a payload by
    the bounds it was taken under.  An operator may lower one between a crash and the next
    start; a sample acknowledged then must not be refused, nor a minute's later samples made
    late by one forced out early, when it is replayed."""

    name_bytes: int
    devices: int
    names: int
    open: int
    written: int
    counters: int


#: The option that sets each of ``Bounds`` (the devices of a kind in a minute have none).
BOUND_OPTIONS = {"name_bytes": "--edge-max-name-bytes", "devices": "MAX_DEVICES",
                 "names": "--edge-max-names", "open": "--edge-max-open",
                 "written": "--edge-max-written", "counters": "--edge-max-counters"}
#: How far a percentage may stray outside 0..100 and still be taken, clamped, as rounding:
#: Telegraf prints ``usage_idle=100.00000001``, and idle plus iowait can add up to a hair over
#: 100.  Further out it is no rounding but a broken sender (``usage_idle=-50``), and clamping it
#: would store a plausible lie (cpu 100 %), so it is refused as out of range instead.
PERCENT_SLACK = 1.0


class Sample(NamedTuple):
    """One value of one VM at one moment: what every edge decoder produces.

    ``device`` names the disk, interface or CPU state the value is for
    ('' for the VM as a whole); ``kind`` is one of KINDS.
    """

    vm: str
    ts: float
    kind: str
    device: str
    value: float


class Words:
    """A refusal's words, put together only when read (``str``): most never are.

    A flood of refused samples is counted whole, but logged ten lines in ten seconds
    (metrics.RateLimitedLog) and answered ten lines a request: wording every refusal (a time
    window's sentence, a device's ``%r``) made a refused line cost more than a line taken.
    ``form`` is a %-format of ``args``, or a function of them; either is applied on each read.
    Anything that prints one (``%s``, ``str``, a log line) reads the same text as before.
    """

    __slots__ = ("form", "args")

    def __init__(self, form: "str | Callable[..., str]", *args) -> None:
        self.form = form
        self.args = args

    def __str__(self) -> str:
        form = self.form
        return form % self.args if form.__class__ is str else form(*self.args)

    def __repr__(self) -> str:
        return repr(str(self))

    def __eq__(self, other: object) -> bool:
        """The same words: made alike (the C loop's refusals and its reference's, compared
        without wording them), or reading the same."""
        if isinstance(other, Words) and self.form == other.form and self.args == other.args:
            return True
        if isinstance(other, (str, Words)):
            return str(self) == str(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))


class Tally:
    """What a decoder made of its input, by outcome: used, ignored, or a reject reason.

    Every line (or value of a collectd packet) lands in exactly one outcome,
    so nothing a sender sent goes uncounted.
    """

    __slots__ = ("counts", "details")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        #: The first few reject messages, for the rate-limited log (a ``Words`` is worded only
        #: if its line is printed).
        self.details: list[str | Words] = []

    def reject(self, reason: str, detail: "str | Words", count: int = 1) -> None:
        self.counts[reason] += count
        if len(self.details) < 10:
            self.details.append(Words("%s: %s", reason, detail) if detail.__class__ is Words
                                else "%s: %s" % (reason, detail))

    @property
    def rejected(self) -> int:
        return sum(n for outcome, n in self.counts.items() if outcome not in (USED, IGNORED))


class Decoder:
    """Bytes to samples: the one interface every format implements."""

    #: The name the format's counters carry in /metrics.
    name = "?"
    #: The format as the log names it to an operator.
    title = "?"
    #: What the format counts as one outcome in ``Tally`` (collectd: a value list).
    unit = "line"
    #: Does the journal keep what a payload was decoded to, not the payload (formats/
    #: journaling.py)?  Then a replay never decodes it again, and none of ``settings`` matters
    #: to it (collectd's passwords are never journaled).
    journal_samples = False
    #: The command-line option that sets each of ``settings`` (a replay's log line names it).
    options: dict[str, str] = {}

    def settings(self) -> dict:
        """Everything ``decode`` reads besides its input, as JSON values.

        For a format whose payloads the journal keeps as they came, the journal keeps these
        too, and a replay decodes each payload by a decoder made from those it was taken under
        (``from_settings``): whatever the server acknowledged is written as it was decoded
        then, whatever the settings at the restart.  This is the one place for them: a
        setting a decoder reads and does not return here would make a replay decode
        acknowledged payloads differently, and tests/test_formats_replay_settings.py fails for
        it (it makes every decoder from each of the server's settings changed, and from what
        this returns, and compares them).
        """
        return {}

    @classmethod
    def from_settings(cls, settings: dict) -> "Decoder":
        """A decoder that decodes as one whose ``settings()`` were ``settings``; TypeError or
        ValueError if no decoder can (a journal of another version, a template that no longer
        parses)."""
        return cls(**settings)

    def decode(self, data: bytes, now: float, tally: Tally,
               lines: list | None = None) -> list[Sample]:
        """The samples of ``data``; every line lands in ``tally`` under one outcome.

        ``lines`` (if given) gets, for each line counted as used and in order, the index in the
        result of the line's first sample, then the line's number, so that a line whose samples
        the minute assembler refuses later can be counted under that reason instead of as used:
        once, however many samples it made.  Two plain ints a line, not a tuple: they cross from
        the decoding processes with every payload, and the reactor unpickles them.
        """
        raise NotImplementedError

    def quick(self, data: bytes, now: float) -> tuple[list[Sample], Tally, list] | None:
        """``decode``'s samples, tally and lines if reading ``data`` costs less than taking
        a decoding process's answer for it (unpickling as many samples): the decoders that
        read in C.  None otherwise, and for any payload they leave to their Python."""
        return None


def within(name: str, value: float, low: float, high: float, slack: float = 0.0) -> float:
    """``value``, or the bound it strays past by at most ``slack`` (rounding); a value further
    out raises OutOfRange.  NaN is never within."""
    if low <= value <= high:
        return value
    if low - slack <= value <= high + slack:
        return low if value < low else high
    raise OutOfRange(Words(_outside, name, value, low, high))


def _outside(name: str, value: float, low: float, high: float) -> str:
    return "%s=%s outside [%s, %s]" % (name, shown(value), low, high)


def shown(value: float) -> str:
    """``value`` for a reject's detail: an integer of 400 digits (an ``i`` field may be one)
    by its first digits and its length, since its size is the point and a log line is short."""
    text = str(value)
    return text if len(text) <= 30 else "%s...(%d digits)" % (text[:12], len(text))


def percent(name: str, value: float) -> float:
    """``value`` as the percentage (0..100, as cpu and mem) a sender meant; see PERCENT_SLACK."""
    return within(name, value, *BOUNDS["cpu"], PERCENT_SLACK)


class OutOfRange(ValueError):
    """An impossible value: refused and counted as ``R_RANGE``, never clamped into the range."""

    reason = R_RANGE

    def __init__(self, detail: "str | Words"):
        super().__init__(detail)
        self.detail = detail


class VmIds:
    """The VM id grammar of the native protocol applied to other formats' host names, cached.

    A host name becomes a directory under the data dir, so it must pass the
    same check; the cache is bounded (cleared when full) like the native one.
    """

    def __init__(self, size: int = 65536) -> None:
        self._cache: dict[str, str] = {}
        #: Names refused, with their refusal's words: a sender flooding a bad name (each line
        #: refused, ten logged in ten seconds) is not judged and worded again line by line.
        #: Only names of an id's length: a longer one is refused at its first check, and
        #: names of up to a line's 64 KiB would make the bound on entries none on bytes.
        self._refused: dict[str, str] = {}
        self._size = size

    def __call__(self, raw: str) -> str:
        """The canonical id; raises protocol.DecodeError (reason bad_vm_id) if ``raw`` is not one."""
        vm = self._cache.get(raw)
        if vm is None:
            detail = self._refused.get(raw)
            if detail is not None:
                raise protocol.DecodeError(protocol.R_BAD_VM, detail)
            try:
                vm = protocol.normalize_vm_id(raw)
            except protocol.DecodeError as exc:
                if len(raw) <= protocol.MAX_VM_ID_LENGTH:
                    if len(self._refused) >= self._size:
                        self._refused.clear()
                    self._refused[raw] = exc.detail
                raise
            if len(self._cache) >= self._size:
                self._cache.clear()
            self._cache[raw] = vm
        return vm
