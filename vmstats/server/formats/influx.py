"""InfluxDB line protocol from Telegraf's standard inputs, mapped onto vmstats' fields.

* ``cpu,cpu=cpu-total usage_idle=..,usage_iowait=..``: cpu = 100 - usage_idle - usage_iowait;
* ``mem available_percent=..,used_percent=..,total=..i``: mem = 100 - available_percent (or
  used_percent when it is missing), mem_mb = total in MiB;
* ``diskio,name=sda read_bytes=..i,write_bytes=..i``: disk_r / disk_w, rates of the cumulative
  bytes, whole disks summed;
* ``net,interface=eth0 bytes_recv=..i,bytes_sent=..i``: net_rx / net_tx, rates, every
  interface but loopback summed;
* ``system n_cpus=..i``: vcpus.

iowait counts as idle, as the vmstats agent counts it (a CPU waiting on I/O
could run anything else), so the same machine gives the same cpu either way.
Per-CPU lines (``cpu=cpu0``), other measurements and other fields are
well-formed data vmstats has no use for: counted as ignored, never stored.

Values are passed on as sent, never clamped here: the minute assembler
judges every format's samples by the record's bounds (rounding just past 0
or 100 % is clamped there, anything further refused as out of range).  Only
the CPU states' own percentages are judged here, since a broken one can
hide in a plausible difference (idle 50, iowait -30: cpu 80).
"""

from vmstats import protocol
from vmstats.client.procfs import LOOPBACK_INTERFACES
from vmstats.server import native
from vmstats.server.formats import (
    BOUNDS,
    IGNORED,
    R_BAD_VM,
    R_NO_VM,
    R_RANGE,
    R_SYNTAX,
    R_TOO_LONG,
    R_UTF8,
    TOTAL,
    USED,
    Decoder,
    OutOfRange,
    Sample,
    Tally,
    VmIds,
    Words,
    percent,
)
from vmstats.server.formats.lineprotocol import (
    PLAIN_LINE,
    PRECISIONS,
    LineError,
    fault,
    number,
    parse_line,
    plain_value,
    twice,
)

#: The version of _influxscan.c this module calls (its VERSION): raised with every change to
#: what passes between them, so that a build of an older source is refused (native.py).
INFLUXSCAN_VERSION = 1
#: The C reader of plain lines (setup.py); the same samples, ~4 us a line less.  None where it
#: was not built (no C compiler).
_native = native.load("_influxscan", INFLUXSCAN_VERSION)

_MIB = 1 << 20
#: diskio's and net's cumulative byte counters: (field, the counter kind it becomes).
_DISK_FIELDS = ((b"read_bytes", "disk_r" + TOTAL), (b"write_bytes", "disk_w" + TOTAL))
_NET_FIELDS = ((b"bytes_recv", "net_rx" + TOTAL), (b"bytes_sent", "net_tx" + TOTAL))
#: The mapped measurements, with the tags and fields each reads (the C reader's order).
_MAPPED = ((b"cpu", (b"cpu",), (b"usage_idle", b"usage_iowait")),
           (b"mem", (), (b"available_percent", b"used_percent", b"total")),
           (b"diskio", (b"name",), tuple(field for field, _kind in _DISK_FIELDS)),
           (b"net", (b"interface",), tuple(field for field, _kind in _NET_FIELDS)),
           (b"system", (), (b"n_cpus",)))
#: The tags and fields each mapped measurement reads: (key, the text before its value).
_NEEDS = {measurement: (tuple((key, b"," + key + b"=") for key in tags),
                        tuple((key, b"," + key + b"=") for key in fields))
          for measurement, tags, fields in _MAPPED}
_LOOPBACK = frozenset(name.encode("ascii") for name in LOOPBACK_INTERFACES)
#: The cpu tag of the line that sums every CPU, and the net interface that sums the others.
_CPU_TOTAL = b"cpu-total"
_ALL_INTERFACES = b"all"
#: A percentage's bounds (the record's cpu field's), for the common case's one comparison.
_LOW, _HIGH = BOUNDS["cpu"]


def native_scan() -> bool:
    """Are Telegraf's plain lines read by the C part (``_influxscan``, built with the package)?"""
    return _native is not None


def scan_spec(vm_tag: bytes, max_line: int) -> tuple:
    """What the C reader (``_influxscan.spec``) maps lines with: this module's tables."""
    kinds = ("cpu", "mem", "mem_mb", *(kind for _field, kind in _DISK_FIELDS + _NET_FIELDS),
             "vcpus")
    return (_MAPPED, kinds, "", vm_tag, _CPU_TOTAL, _ALL_INTERFACES, _LOOPBACK, _LOW, _HIGH,
            _MIB, max_line, Sample)


class InfluxDecoder(Decoder):
    """Telegraf's cpu, mem, diskio, net and system lines to samples; the VM is a tag."""

    name = "influx"
    title = "line-protocol"
    options = {"max_line": "--max-line", "vm_tag": "--influx-vm-tag"}

    def __init__(self, vm_tag: str = "host", precision: str = "ns", max_line: int = 65536):
        self.vm_tag = vm_tag.encode("utf-8")
        self.precision = precision
        self.divisor = PRECISIONS[precision]
        self.max_line = max_line
        self.vm_ids = VmIds()
        #: Raw tag value -> VM id, for the fast path (bounded like VmIds).
        self._vms: dict[bytes, str] = {}
        #: Raw tag value -> the words of its refusal as a VM id (bounded, and only values of
        #: an id's length, like VmIds'): a sender flooding one bad name has each line refused
        #: without decoding the name and raising twice again (``_vm``).
        self._bad_vms: dict[bytes, str] = {}
        self._map = {b"cpu": self._cpu, b"mem": self._mem, b"diskio": self._diskio,
                     b"net": self._net, b"system": self._system}
        #: The C reader's tables (None: not built, every payload read here).
        self._scan_spec = self._new_scan_spec()

    def settings(self) -> dict:
        """What a replay decodes this decoder's journaled payloads by (Decoder.settings)."""
        return {"max_line": self.max_line, "vm_tag": self.vm_tag.decode("utf-8"),
                "precision": self.precision}

    def _new_scan_spec(self):
        return None if _native is None else _native.spec(*scan_spec(self.vm_tag, self.max_line))

    def __getstate__(self) -> dict:
        """The decoder as the decoding processes get it: a capsule does not pickle, so each
        makes the C reader's tables again."""
        return {**self.__dict__, "_scan_spec": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._scan_spec = self._new_scan_spec()

    def decode(self, data: bytes, now: float, tally: Tally, divisor: float | None = None,
               errors: list | None = None, lines: list | None = None) -> list[Sample]:
        """Samples of every usable line; ``errors`` (if given) gets ``(line number, message)``,
        ``lines`` (if given) the index of the line's first sample and its number per used line
        (Decoder.decode).

        The C reader, where it was built, reads the lines it uses or ignores and
        leaves the others, each read here as the reader of the whole payload would
        read it (``_scanned``).  Without it, or when a line it left gives samples,
        a payload whose every line is plain (no escapes, no strings, no blank or
        comment lines: what Telegraf sends) is split by one regex pass, and only
        the tags and fields the mapping needs are looked up (``_plain``, the C's
        reference); anything else goes line by line through ``parse_line``.
        """
        divisor = divisor or self.divisor
        samples = self._scanned(data, now, tally, divisor, lines, errors)
        if samples is not None:
            return samples
        if (b"\n\n" not in data and data[:1] not in (b"\n", b"#") and b"\n#" not in data
                and (len(data) <= self.max_line
                     or max(map(len, data.split(b"\n"))) <= self.max_line)):
            matches = PLAIN_LINE.findall(data)
            if len(matches) == data.count(b"\n") + (not data.endswith(b"\n")):
                fast = Tally()
                out = self._plain(matches, now, fast, divisor, lines)
                if errors is None or not fast.rejected:
                    tally.counts.update(fast.counts)
                    tally.details.extend(fast.details[:10 - len(tally.details)])
                    return out
                # A writer waiting for line numbers (HTTP) gets them from the careful path.
                if lines is not None:
                    lines.clear()
        return self._line_by_line(data, now, tally, divisor, errors, lines)

    def quick(self, data: bytes, now: float) -> tuple[list[Sample], Tally, list] | None:
        tally: Tally = Tally()
        lines: list = []
        samples = self._scanned(data, now, tally, self.divisor, lines)
        return None if samples is None else (samples, tally, lines)

    def _scanned(self, data: bytes, now: float, tally: Tally, divisor: float,
                 lines: list | None, errors: list | None = None) -> list[Sample] | None:
        """The payload read by the C reader, if it was built; else None.

        The lines it leaves (a reject, a value to clamp, an escape) are read here, one by
        one, as the reader of the whole payload it would otherwise go to reads them (the
        plain one or the line-by-line one, whose words differ: ``line N:``): a sender of
        malformed lines costs no more than one of Telegraf's.  Should one of them give
        samples, the whole payload is that reader's (None): their order is the lines'.
        """
        # An integer divisor (not one of PRECISIONS) divides exactly in Python, not in C.
        if self._scan_spec is None or type(divisor) is not float:
            return None
        left: list = []
        before = 0 if lines is None else len(lines)
        found = _native.scan(data, self._scan_spec, self._vms, self._known, now, divisor, lines,
                             self._bad_vms, left)
        if found is None:
            return None
        samples, used, ignored, plain = found
        counts = tally.counts
        if left:
            read = self._left(data, left, plain and errors is None, now, divisor, errors)
            if read is None:
                if lines is not None:
                    del lines[before:]
                return None
            for outcome, count in read.counts.items():  # in the readers' order: rejects first
                if outcome != USED and outcome != IGNORED:
                    counts[outcome] += count
            used += read.counts[USED]
            ignored += read.counts[IGNORED]
            tally.details.extend(read.details[:10 - len(tally.details)])
        counts[USED] += used
        counts[IGNORED] += ignored
        return samples

    def _left(self, data: bytes, left: list, plain: bool, now: float, divisor: float,
              errors: list | None) -> Tally | None:
        """The lines the C reader left (``scan``'s ``deferred``), read by ``_plain`` if the
        payload is one it reads, else as ``_line_by_line`` does; their tally, or None if
        one gives samples.  A line the C found refused comes with why, counted and not read
        again: the words of its VM tag value's refusal (the decoder's memory of that value),
        or ``parse_line``'s fault and the text it names (``fault``)."""
        tally = Tally()
        if plain:  # every line plain: none has a fault
            for _number, start, end, why, _at, _to in left:
                if why is not None:
                    tally.reject(R_BAD_VM, why)
                    continue
                match = PLAIN_LINE.match(data, start, end)
                if match is None or self._plain([match.groups()], now, tally, divisor):
                    return None
            return tally
        found: list | None = None if errors is None else []
        if self._read_lines([(number_, data[start:end] if why is None
                              else (R_SYNTAX, fault(why, data[at:to])) if why.__class__ is int
                              else (R_BAD_VM, why))
                             for number_, start, end, why, at, to in left],
                            now, tally, divisor, found):
            return None
        if errors is not None:
            errors.extend(found[:10 - len(errors)])
        return tally

    def _plain(self, matches: list, now: float, tally: Tally, divisor: float,
               lines: list | None = None) -> list[Sample]:
        out: list[Sample] = []
        mapping = self._map
        needs = _NEEDS
        vm_key = b"," + self.vm_tag + b"="
        vm_of = self._vms
        used = ignored = 0
        note = lines.append if lines is not None else None
        for line_no, (measurement, tags, body, stamp) in enumerate(matches, 1):
            handler = mapping.get(measurement)
            if handler is None:
                ignored += 1
                continue
            before = len(out)
            try:
                raw = plain_value(tags, vm_key)
                tag_keys, field_keys = needs[measurement]
                body = b"," + body
                tag_map = {}
                for key, text in tag_keys:
                    value = plain_value(tags, text)
                    if value is not None:
                        tag_map[key] = value
                field_map = {}
                for key, text in field_keys:
                    value = plain_value(body, text, "field")
                    if value is not None:
                        field_map[key] = value
                vm = vm_of.get(raw)
                if vm is None:
                    vm = self._vm(raw)
                handler(out, vm, int(stamp) / divisor if stamp else now, tag_map, field_map)
            except (LineError, ValueError, OverflowError) as exc:
                if exc.__class__ is LineError:  # its words, unread (Words) until logged
                    tally.reject(exc.reason, exc.detail)
                else:
                    tally.reject("syntax", str(exc))
                del out[before:]  # a refused line gives nothing, not the values before its fault
                continue
            if len(out) > before:
                used += 1
                if note is not None:
                    note(before)
                    note(line_no)
            else:
                ignored += 1
        tally.counts[USED] += used
        tally.counts[IGNORED] += ignored
        return out

    def _read_once(self, measurement: bytes, repeated: list) -> None:
        """LineError (``syntax``) if a key ``repeated`` (``parse_line``'s) is one this line is
        read for, in the order ``_plain`` looks them up: the VM's tag, then the measurement's
        tags and fields.  A line naming two VMs, or two idle times, could mean either: it is
        refused, as the native protocol refuses one (keys not read are data it has no use
        for)."""
        tag_keys, field_keys = _NEEDS[measurement]
        for what, keys in (("tag", (self.vm_tag,)), ("tag", [key for key, _text in tag_keys]),
                           ("field", [key for key, _text in field_keys])):
            for key in keys:
                if (what, key) in repeated:
                    raise twice(what, key)

    def _vm(self, raw: bytes | None) -> str:
        """The VM id a tag value names (cached); LineError if it names none."""
        if raw is None:
            raise LineError(R_NO_VM, Words(_no_tag, self.vm_tag))
        detail = self._bad_vms.get(raw)
        if detail is not None:
            raise LineError(R_BAD_VM, detail)
        try:
            vm = self.vm_ids(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise LineError(R_UTF8, "tag value is not UTF-8") from None
        except protocol.DecodeError as exc:
            if len(raw) <= protocol.MAX_VM_ID_LENGTH:
                if len(self._bad_vms) >= 65536:
                    self._bad_vms.clear()
                self._bad_vms[raw] = exc.detail
            raise LineError(R_BAD_VM, exc.detail) from None
        if len(self._vms) >= 65536:
            self._vms.clear()
        self._vms[raw] = vm
        return vm

    def _known(self, raw: bytes) -> str | None:
        """The VM id of a tag value the C reader meets first, or None if it names none."""
        try:
            return self._vm(raw)
        except LineError:
            return None

    def _line_by_line(self, data: bytes, now: float, tally: Tally, divisor: float,
                      errors: list | None, lines: list | None = None) -> list[Sample]:
        return self._read_lines(enumerate(data.split(b"\n"), 1), now, tally, divisor, errors,
                                lines)

    def _read_lines(self, numbered, now: float, tally: Tally, divisor: float,
                    errors: list | None, lines: list | None = None) -> list[Sample]:
        """``(number, line)`` read one by one; a line that is not bytes is the reject the C
        reader found it is (``_left``): ``(reason, detail)``."""
        out: list[Sample] = []
        used = ignored = 0
        mapping = self._map
        vm_tag = self.vm_tag
        for number_, line in numbered:
            if line.__class__ is not bytes:
                reason, detail = line
                tally.reject(reason, Words("line %d: %s", number_, detail))
                if errors is not None and len(errors) < 10:
                    errors.append((number_, "%s: %s" % (reason, detail)))
                continue
            if not line or line[:1] == b"#" or line.isspace():
                continue
            before = len(out)
            try:
                if len(line) > self.max_line:
                    raise LineError(R_TOO_LONG, Words("line of %d bytes", len(line)))
                repeated: list = []
                measurement, tags, fields, stamp = parse_line(line, repeated)
                handler = mapping.get(measurement)
                if handler is None:
                    ignored += 1
                    continue
                if repeated:
                    self._read_once(measurement, repeated)
                raw = tags.get(vm_tag)
                vm = self._vms.get(raw) or self._vm(raw)
                ts = now if stamp is None else stamp / divisor
                handler(out, vm, ts, tags, fields)
                if len(out) > before:
                    used += 1
                    if lines is not None:
                        lines += before, number_
                else:
                    ignored += 1
            except LineError as exc:
                del out[before:]
                tally.reject(exc.reason, Words("line %d: %s", number_, exc.detail))
                if errors is not None and len(errors) < 10:
                    errors.append((number_, "%s: %s" % (exc.reason, exc.detail)))
            except (ValueError, OverflowError) as exc:  # float() of a value the regex let through
                del out[before:]
                tally.reject("syntax", Words("line %d: %s", number_, str(exc)))
                if errors is not None and len(errors) < 10:
                    errors.append((number_, "syntax: %s" % exc))
        tally.counts[USED] += used
        tally.counts[IGNORED] += ignored
        return out

    # -- one method per Telegraf input -------------------------------------------------------
    @staticmethod
    def _cpu(out: list, vm: str, ts: float, tags: dict, fields: dict) -> None:
        if tags.get(b"cpu") != _CPU_TOTAL:
            return
        idle = fields.get(b"usage_idle")
        if idle is None:
            return
        idle = number(idle)
        iowait = number(fields.get(b"usage_iowait", b"0"))
        if not (_LOW <= idle <= _HIGH and _LOW <= iowait <= _HIGH):  # rare: judged at length
            try:
                idle, iowait = percent("usage_idle", idle), percent("usage_iowait", iowait)
            except OutOfRange as exc:
                raise LineError(R_RANGE, exc.detail) from None
        # 100 - idle - iowait a hair under 0 is rounding too: the minutes clamp it.
        out.append(Sample(vm, ts, "cpu", "", 100.0 - idle - iowait))

    @staticmethod
    def _mem(out: list, vm: str, ts: float, tags: dict, fields: dict) -> None:
        available = fields.get(b"available_percent")
        if available is not None:
            out.append(Sample(vm, ts, "mem", "", _used(number(available))))
        else:
            used = fields.get(b"used_percent")
            if used is not None:
                out.append(Sample(vm, ts, "mem", "", number(used)))
        total = fields.get(b"total")
        if total is not None:
            out.append(Sample(vm, ts, "mem_mb", "", number(total) // _MIB))

    @staticmethod
    def _diskio(out: list, vm: str, ts: float, tags: dict, fields: dict) -> None:
        _counters(out, vm, ts, tags.get(b"name"), fields, _DISK_FIELDS)

    @staticmethod
    def _net(out: list, vm: str, ts: float, tags: dict, fields: dict) -> None:
        interface = tags.get(b"interface")
        if interface not in _LOOPBACK and interface != _ALL_INTERFACES:
            _counters(out, vm, ts, interface, fields, _NET_FIELDS)

    @staticmethod
    def _system(out: list, vm: str, ts: float, tags: dict, fields: dict) -> None:
        cpus = fields.get(b"n_cpus")
        if cpus is not None:
            out.append(Sample(vm, ts, "vcpus", "", number(cpus)))


def _no_tag(vm_tag: bytes) -> str:
    """The words of a line without the VM's tag (a ``Words`` form)."""
    return "no %r tag" % vm_tag.decode("utf-8", "replace")


def _used(available: float) -> float:
    """100 - ``available`` (a percentage).  An ``i`` integer past what a double holds stays an
    integer, for the minutes to refuse as out of range like any other value: in floats it
    raised, and the whole line was counted as a syntax error."""
    try:
        return 100.0 - available
    except OverflowError:
        return 100 - available


def _counters(out: list, vm: str, ts: float, device: bytes | None, fields: dict,
              names: tuple) -> None:
    """A device's cumulative byte counters (diskio's and net's) as counter samples."""
    if device is None:
        return
    name = device.decode("utf-8", "replace")
    for field, kind in names:
        value = fields.get(field)
        if value is not None:
            out.append(Sample(vm, ts, kind, name, number(value)))
