"""Payload bytes to held rows: the half of the receive path that needs no server state.

Per-field Python code costs tens of microseconds per record on this
interpreter, far above the ingest budget.  So the common case -- lines exactly
as ``protocol.encode_record`` writes them -- is matched for a whole payload by
one compiled regex built from ``protocol.FIELDS``, and its groups are turned
into columns (VM ids, timestamps, held rows, seqs) by C-level ``map`` calls,
with no Python loop per record.  Lines with every field, as the agent sends
them, need only a compact form of the regex with five groups; the held row is
then their field section with the names deleted.  The regex only admits
values whose range and finiteness it can prove, so no float() is needed.
Anything else (reordered tags, exponents, ms/ns timestamps, bad input) goes
through ``protocol.Decoder``
(and ``logstore.format_tail``) line by line: identical rows, just slower, and
the decoder names the reason for every reject.

Parsing needs nothing but the payload and the time, so it can run in a parser
process (``parsers.py``) as well as in the reactor; the result is a tuple of
plain lists that ``marshal`` carries between them.
"""

import re
import sys
from collections import Counter
from collections.abc import Callable
from itertools import repeat
from operator import itemgetter

from vmstats import protocol
from vmstats.logstore import format_tail

#: (vms, timestamps, held rows, seqs (None: none sent), [(reject reason, count)], [detail])
Parsed = tuple[list, list, list, list, list, list]
#: Reject details kept per payload for the rate-limited log; beyond this only counts travel.
MAX_DETAILS = 10


def _int_digits(hi: int) -> int:
    """The most decimal digits whose every value is <= hi."""
    digits = len(str(hi))
    return digits if hi >= 10 ** digits - 1 else digits - 1


def _int_pattern(lo: int, hi: int) -> str:
    """Canonical (no leading zero) integers provably in [lo, hi]; narrower is fine."""
    if lo not in (0, 1):
        raise ValueError("the fast path only handles ranges starting at 0 or 1")
    body = r"[1-9]\d{0,%d}" % (_int_digits(hi) - 1)
    return "0|" + body if lo == 0 else body


def _float_pattern(lo: float, hi: float) -> str:
    """Decimals provably in [lo, hi] (no sign, no exponent: the decoder handles those).

    The fraction is an empty alternative (``_optional``), neither ``(?:...)?``
    nor a digit lookahead then an optional point and digits: the same
    language, and the whole regex about a sixth faster than with the lookahead
    (measured).
    """
    if lo != 0:
        raise ValueError("the fast path only handles float ranges starting at 0")
    top = int(hi)
    digits = _int_digits(top)
    pattern = r"\d{1,%d}%s" % (digits, _optional(r"\.\d{0,17}"))
    if top == 10 ** digits:  # e.g. 100: "100" and "100.000" are in range, "100.5" is not
        pattern += r"|%d%s" % (top, _optional(r"\.0{0,17}"))
    return pattern


def _optional(piece: str) -> str:
    # An empty alternative is markedly cheaper in sre than ``(?:...)?``.
    return "(?:%s|)" % piece


def build_fast_path(compact: bool = False) -> tuple["re.Pattern[bytes]", int, int]:
    """The canonical-line regex and where the timestamp and seq are among its groups.

    Returns ``(regex, ts_group, seq_group)`` indexing the tuples that
    ``regex.findall`` yields: group 0 is the VM id, group 1 the host, the last
    one the timestamp.  By default every field is a group of its own: the
    fields then the host, joined with commas, are the held row (buffer.py).
    ``compact`` admits only the lines with every field (what the agent
    sends), with the whole field section as group 2 and only the seq (3)
    captured inside it: with fewer groups to mark and no optional field to try
    sre runs it in two thirds of the per-field form's time (1.3 against 1.9 us
    a line, measured), and deleting the field names (``FIELD_NAME_BYTES``)
    from that section leaves the held row's fields as they are.
    """
    # Anchored to whole lines by a lookbehind after the literal head and a lookahead at the
    # end rather than ^/$ with MULTILINE: a leading literal lets sre skip ahead to candidate
    # lines, which makes findall over a batch about a quarter faster.
    head = "%s,vm=" % protocol.MEASUREMENT
    # The VM id's alphabet, zones (%) included: what it admits, protocol.normalize_vm_id judges
    # (Parser._vm_id), exactly as the decoder does.
    parts = [r"%s(?<![^\n]%s)([A-Za-z0-9._:%%-]{1,%d})" % (re.escape(head), re.escape(head),
                                                          protocol.MAX_VM_ID_LENGTH),
             _optional(r",host=([A-Za-z0-9][A-Za-z0-9._-]{0,254})"), " (" if compact else " "]
    seq_group = -1
    for position, (name, is_int, lo, hi, required) in enumerate(protocol.FIELDS):
        if position == 0 and not required:
            raise ValueError("the first field must be required for the fast path")
        group = "(%s)" if not compact or name == "seq" else "(?:%s)"
        value = group % _int_pattern(lo, hi) + "i" if is_int else group % _float_pattern(lo, hi)
        piece = r"%s%s=%s" % ("" if position == 0 else ",", re.escape(name), value)
        parts.append(piece if required or compact else _optional(piece))
        if name == "seq":
            seq_group = 3 if compact else position + 2
    parts.append(r"%s ([1-9]\d{9})\r?(?![^\n])" % (")" if compact else ""))
    regex = re.compile("".join(parts).encode("ascii"))
    return regex, regex.groups - 1, seq_group


#: What deleting from a compact field section leaves the comma-separated values: the field
#: names' letters, ``=`` and the ``i`` of integers (values are digits and a point).
FIELD_NAME_BYTES = bytes(sorted(set("".join(protocol.FIELD_NAMES).encode("ascii") + b"=i")))
#: Commas among the values of a line that has every field.
_ALL_FIELDS_COMMAS = len(protocol.FIELDS) - 1
_VM_OF, _HOST_OF, _SECTION_OF = itemgetter(0), itemgetter(1), itemgetter(2)


class Parser:
    """Turns payloads into ``Parsed`` columns; the same rows whichever process runs it."""

    def __init__(self, max_future: int, max_past: int):
        self.max_future = max_future
        self.max_past = max_past
        self.decoder = protocol.Decoder(max_future=max_future, max_past=max_past)
        regex, ts_group, seq_group = build_fast_path()
        self._findall = regex.findall
        self._fullmatch = regex.fullmatch
        self._ts_of = itemgetter(ts_group)
        self._seq_of = itemgetter(seq_group)
        # Held row (buffer.py): the fields, then the host tag, as logstore.format_tail.
        self._row_of = itemgetter(*range(2, ts_group), 1)
        compact, compact_ts, compact_seq = build_fast_path(compact=True)
        self._compact_findall = compact.findall
        self._compact_ts_of = itemgetter(compact_ts)
        self._compact_seq_of = itemgetter(compact_seq)
        self._vm_ids: dict[bytes, str] = {}

    def parse(self, data: bytes, now: float) -> Parsed:
        """Every record of one payload, in order, and a count of every reject by reason.

        The whole payload takes the column path when every line matched the
        regex, every VM id is known and every timestamp is in the window
        (one min/max); otherwise the lines are checked one by one.  Lines
        with every field (what the agent sends) need only the compact regex
        (``_every_field``).
        """
        compact = _every_field(data)
        matches = (self._compact_findall if compact else self._findall)(data)
        if not _all_lines_matched(data, len(matches)):
            if compact:  # a line lacks a field, or is bad: then the per-field regex, or the decoder
                compact, matches = False, self._findall(data)
            if not _all_lines_matched(data, len(matches)):
                return self._line_by_line(data, now)
        if not matches:
            return [], [], [], [], [], []
        vms = list(map(self._vm_ids.get, map(_VM_OF, matches)))
        tss = list(map(int, map(self._compact_ts_of if compact else self._ts_of, matches)))
        hi = int(now) + self.max_future
        lo = int(now) - self.max_past if self.max_past else 0
        if None in vms or min(tss) < lo or max(tss) > hi:
            return self._checked(self._findall(data) if compact else matches, now)
        if compact:
            values = map(bytes.translate, map(_SECTION_OF, matches), repeat(None),
                         repeat(FIELD_NAME_BYTES))
            rows = list(map(b",".join, zip(values, map(_HOST_OF, matches), strict=True)))
            return vms, tss, rows, list(map(int, map(self._compact_seq_of, matches))), [], []
        rows = list(map(b",".join, map(self._row_of, matches)))
        raw_seqs = list(map(self._seq_of, matches))
        if b"" in raw_seqs:
            seqs = [int(s) if s else None for s in raw_seqs]
        else:
            seqs = list(map(int, raw_seqs))
        return vms, tss, rows, seqs, [], []

    def _vm_id(self, raw: bytes) -> str:
        vm = self._vm_ids.get(raw)
        if vm is None:
            # Interned, so marshal carries it as interned and the reactor's copy is the very
            # object its tables are keyed by: lookups compare pointers, not strings.
            vm = sys.intern(self.decoder.vm_id(raw.decode("ascii")))  # the regex admits ASCII
            if len(self._vm_ids) >= 65536:
                self._vm_ids.clear()
            self._vm_ids[raw] = vm
        return vm

    def _checked(self, matches: list, now: float) -> Parsed:
        """Regex matches checked one by one (new VM ids, timestamps near the window's edges)."""
        out: Parsed = ([], [], [], [], [], [])
        add = self._adder(out, now)
        for groups in matches:
            add(groups, None)
        return _counted(out)

    def _line_by_line(self, data: bytes, now: float) -> Parsed:
        """A payload the regex did not cover whole: the decoder decides the lines it left."""
        out: Parsed = ([], [], [], [], [], [])
        add = self._adder(out, now)
        fullmatch, decode = self._fullmatch, self.decoder.decode_line
        for line in data.split(b"\n"):
            if not line or line[:1] == b"#":
                continue
            found = fullmatch(line)
            if found is not None:
                add(found.groups(b""), None)
                continue
            try:
                add(None, decode(line, now))
            except protocol.DecodeError as exc:
                _reject(out, exc.reason, str(exc))
        return _counted(out)

    def _adder(self, out: Parsed, now: float) -> Callable:
        vms, tss, rows, seqs = out[:4]
        hi = int(now) + self.max_future
        lo = int(now) - self.max_past if self.max_past else 0
        join = b",".join
        ts_of, seq_of, row_of = self._ts_of, self._seq_of, self._row_of

        def add(groups: tuple | None, record: protocol.Record | None) -> None:
            if record is not None:  # the decoder checked everything
                vms.append(sys.intern(record.vm))
                tss.append(record.ts)
                rows.append(format_tail(record))
                seqs.append(record.seq)
                return
            try:
                vm = self._vm_id(groups[0])
            except protocol.DecodeError as exc:
                _reject(out, exc.reason, str(exc))
                return
            ts = int(ts_of(groups))
            if ts > hi or ts < lo:
                reason = protocol.R_FUTURE if ts > hi else protocol.R_PAST
                _reject(out, reason, "%s: vm %s timestamp %d (server time %d)"
                        % (reason, vm, ts, now))
                return
            vms.append(vm)
            tss.append(ts)
            rows.append(join(row_of(groups)))
            seq = seq_of(groups)
            seqs.append(int(seq) if seq else None)

        return add


def _every_field(data: bytes) -> bool:
    """Does the payload's first line carry every field?  It picks the regex to try.

    A payload comes from one sender, or from a fleet of one agent, so its
    first line tells its shape: a payload of lines lacking some field then
    takes the regex with a group per field at once, rather than the compact
    one first and that one again.  A wrong guess costs time, never a row.
    """
    end = data.find(b"\n")
    first = data if end < 0 else data[:end]
    return first.partition(b" ")[2].count(b",") == _ALL_FIELDS_COMMAS


def frame_start(data: bytes) -> int:
    """The index of the newline before the first control line (``#!``), or -1.

    What ``data.find(b"\\n#!")`` returns, but that search stops at every
    newline of a payload of records, ~1 us per KiB (0.2 us per record).  ``#``
    is rare in records, and a search for one byte is a ``memchr``.  A control
    line at the very start has no newline before it: ``has_frame`` sees both.
    """
    if b"#" not in data:
        return -1
    return data.find(b"\n#!")


def has_frame(data: bytes) -> bool:
    """Does any line of ``data`` (joined datagrams) begin with ``#!``?"""
    return data[:2] == b"#!" or frame_start(data) >= 0


def _all_lines_matched(data: bytes, matched: int) -> bool:
    """Did the regex match every non-empty line of ``data``?  Then the column path is exact.

    A match lies within one line and a line holds at most one (the regex is
    anchored to line starts and ends and admits no newline), so ``matched``
    equal to the count of newline-separated pieces (less the empty one after a
    final newline) proves it with one count.  Otherwise blank lines may
    explain the difference: ``_lines`` counts them out, at two more passes.
    """
    if matched == data.count(b"\n") + (data[-1:] != b"\n"):
        return True
    return matched == _lines(data)


def _lines(data: bytes) -> int:
    """Non-empty lines in ``data``: what the regex must have matched for the column path.

    Blank lines are common (UDP datagrams that end with a newline, as Telegraf's
    do, joined with newlines); they must not send a payload down the slow path.
    """
    lines = data.count(b"\n") + (data[-1:] not in (b"\n", b""))
    if b"\n\n" in data or data[:1] == b"\n":
        lines -= data.split(b"\n").count(b"") - (data[-1:] == b"\n")
    return lines


def _reject(out: Parsed, reason: str, detail: str) -> None:
    """Note one reject: reasons go in out[4] one per reject until ``_counted`` sums them."""
    out[4].append(reason)
    if len(out[5]) < MAX_DETAILS:
        out[5].append(detail)


def _counted(out: Parsed) -> Parsed:
    if out[4]:
        out[4][:] = sorted(Counter(out[4]).items())
    return out
