"""Payload bytes to held rows: the half of the receive path that needs no server state.

Per-field Python code costs tens of microseconds per record on this
interpreter, far above the ingest budget.  Where the package was built with
its C parts, a payload of valid records of known VMs, whatever their
spellings, is read by ``_linescan.c`` in one pass (``Parser.parse``): ~0.4 us
a record.  Everything below is what reads the rest -- new VM ids, stamps
outside the window, lines it cannot prove valid -- and every payload where the
C part was not built; it is also the C's reference, which the tests hold it to.

Without C, the common case -- lines exactly
as ``protocol.encode_record`` writes them -- is matched for a whole payload by
one compiled regex built from ``protocol.FIELDS``, and its groups are turned
into columns (VM ids, timestamps, held rows, seqs) by C-level ``map`` calls,
with no Python loop per record.  Lines with every field, as the agent sends
them, need only a compact form of the regex with five groups; the held row is
then their field section with the names deleted.  The regex only admits
values whose range and finiteness it can prove, so no float() is needed.

Every other valid spelling of a record -- tags and fields in another order,
extra tags, ``i``/``u`` typed values, ms/us/ns timestamps, as InfluxDB client
libraries and Telegraf write them -- is a ``Shape``: the first line's tag and
field names, value types and timestamp length give a regex of that exact
spelling (built once and cached, within a budget of builds:
``SHAPE_BUILD_BURST``), whose groups are reordered into the held row by one
``%`` per line, again mapped in C.  A payload that mixes
spellings, as a parser process joins many senders' datagrams, is sieved: each
spelling's regex, with a catch-all alternative, takes its own lines in one
pass and hands the others on to the next (``Parser._mixed``).  What no regex
proves valid (exponents, bad input) goes through ``protocol.Decoder`` (and
``logstore.format_tail``) line by line: identical rows, just slower, and the
decoder names the reason for every reject.

Parsing needs nothing but the payload and the time, so it can run in a parser
process (``parsers.py``) as well as in the reactor; the result is a tuple of
plain lists that ``marshal`` carries between them.
"""

import math
import re
import sys
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from itertools import chain, compress, repeat
from operator import itemgetter, not_

from vmstats import protocol
from vmstats.logstore import TAGS_SEPARATOR, format_tail
from vmstats.protocol import FIRST_STAMP
from vmstats.server import native
from vmstats.server.clock import outside_window, window_reason

#: The version of _linescan.c this module calls (its VERSION): raised with every change to
#: what passes between them, so that a build of an older source is refused (native.py).
LINESCAN_VERSION = 1
#: The C reader of every spelling (setup.py); the same rows, ~1 us a record less.  None where
#: it was not built (no C compiler).
_native = native.load("_linescan", LINESCAN_VERSION)

#: (vms, timestamps, held rows, seqs (None: none sent), [(reject reason, count)], [detail],
#: [refused]): ``refused`` holds ``(index, vm, seq, ts)`` of each record refused for its stamp
#: that had a seq, ``index`` being how many records taken came before it in the payload.  It
#: came, so its seq is no loss: the receiver steps its VM's counter over it (ingest.py).
Parsed = tuple[list, list, list, list, list, list, list]
#: A time limit no stamp reaches: a parser with it as its future limit and no past one (0)
#: refuses no record for its time (a replay's, the edge's minutes').
NO_LIMIT = 1 << 40
#: Reject details kept per payload for the rate-limited log; beyond this only counts travel.
MAX_DETAILS = 10
#: Digits after a decimal point that the regexes (and the C reader) admit: more than a
#: double's 17 significant ones carry nothing, so such values go to the decoder.
_FRACTION_DIGITS = 17


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


def _float_pattern(lo: float, hi: float, places: int | None = None) -> str:
    """Decimals provably in [lo, hi] (no sign, no exponent: the decoder handles those), with
    at most ``places`` digits after the point (None: ``_FRACTION_DIGITS``).

    The fraction is an empty alternative (``_optional``), neither ``(?:...)?``
    nor a digit lookahead then an optional point and digits: the same
    language, and the whole regex about a sixth faster than with the lookahead
    (measured).  A positive range (``vcpus``) starts at its smallest step,
    10 ** -places, so what it refuses is exactly zero: a lookahead for a
    nonzero digit before any other character (``0``, ``0.000`` go to the
    decoder, which counts them out of range).
    """
    fraction = _FRACTION_DIGITS if places is None else places
    positive = ""
    if lo != 0:
        if places is None or lo != 10.0 ** -places:
            raise ValueError("the fast path only handles float ranges starting at 0, or at "
                             "the smallest step of their places")
        positive = r"(?=[0.]*[1-9])"
    top = int(hi)
    digits = _int_digits(top)
    pattern = r"%s\d{1,%d}%s" % (positive, digits, _optional(r"\.\d{0,%d}" % fraction))
    if top == 10 ** digits:  # e.g. 100: "100" and "100.000" are in range, "100.5" is not
        pattern += r"|%d%s" % (top, _optional(r"\.0{0,%d}" % fraction))
    return pattern


def _typed_int_pattern(lo: float, hi: float) -> str:
    """``i``/``u`` typed integers provably in [lo, hi], without the suffix (a decimal field's
    whole values are sent so: ``vcpus=2i``)."""
    top = int(hi)
    value = _int_pattern(math.ceil(lo), top)
    if top == 10 ** _int_digits(top):  # 100i, a percentage at its top
        value += "|%d" % top
    return value


def _optional(piece: str) -> str:
    # An empty alternative is markedly cheaper in sre than ``(?:...)?``.
    return "(?:%s|)" % piece


def build_fast_path(compact: bool = False,
                    extra_tags: tuple[bytes, ...] = ()) -> tuple["re.Pattern[bytes]", int, int]:
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

    ``extra_tags`` (with ``compact``): the agent's lines with these extra
    tags after the host (``protocol.encode_record`` writes them sorted), all
    of them one more group after the host's, before the field section
    (``CompactShape``).
    """
    # Anchored to whole lines by a lookbehind after the literal head and a lookahead at the
    # end rather than ^/$ with MULTILINE: a leading literal lets sre skip ahead to candidate
    # lines, which makes findall over a batch about a quarter faster.
    head = "%s,vm=" % protocol.MEASUREMENT
    # The VM id's alphabet, zones (%) included: what it admits, protocol.normalize_vm_id judges
    # (Parser._vm_id), exactly as the decoder does.
    parts = [r"%s(?<![^\n]%s)([A-Za-z0-9._:%%-]{1,%d})" % (re.escape(head), re.escape(head),
                                                          protocol.MAX_VM_ID_LENGTH),
             _optional(r",host=(%s)" % _VALUE_PATTERNS[b"host"])]
    if extra_tags:
        parts.append(",(%s)" % ",".join("%s=%s" % (re.escape(tag.decode("ascii")),
                                                   _EXTRA_TAG_PATTERN) for tag in extra_tags))
    parts.append(" (" if compact else " ")
    seq_group = -1
    for position, (name, is_int, lo, hi, required, places) in enumerate(protocol.FIELDS):
        if position == 0 and not required:
            raise ValueError("the first field must be required for the fast path")
        group = "(%s)" if not compact or name == "seq" else "(?:%s)"
        if is_int:
            value = group % _int_pattern(lo, hi) + "i"
        elif places is not None:  # whole values as encode_record writes them (2i), or decimals
            value = group % ("%s(?=i)|%s(?!i)" % (_typed_int_pattern(lo, hi),
                                                  _float_pattern(lo, hi, places))) + "(?:i|)"
        else:
            value = group % _float_pattern(lo, hi)
        piece = r"%s%s=%s" % ("" if position == 0 else ",", re.escape(name), value)
        parts.append(piece if required or compact else _optional(piece))
        if name == "seq":
            seq_group = (3 + bool(extra_tags)) if compact else position + 2
    parts.append(r"%s ([1-9]\d{9})\r?(?![^\n])" % (")" if compact else ""))
    regex = re.compile("".join(parts).encode("ascii"))
    return regex, regex.groups - 1, seq_group


#: What deleting from a compact field section leaves the comma-separated values: the field
#: names' letters, ``=`` and the ``i`` of integers (values are digits and a point).
FIELD_NAME_BYTES = bytes(sorted(set("".join(protocol.FIELD_NAMES).encode("ascii") + b"=i")))
#: Commas among the values of a line that has every field.
_ALL_FIELDS_COMMAS = len(protocol.FIELDS) - 1
_VM_OF, _HOST_OF, _SECTION_OF = itemgetter(0), itemgetter(1), itemgetter(2)

#: Timestamp lengths a shape admits: seconds, ms, us, ns (``protocol.normalize_timestamp``
#: tells them apart by magnitude, and for these lengths that is the digits after the tenth).
_STAMP_LENGTHS = (10, 13, 16, 19)
#: Digits of an untyped integer field's value that float() carries exactly (the decoder
#: reads untyped values as floats).
_EXACT_DIGITS = 15
#: Shapes remembered per parser, the least recently used forgotten first (senders use a
#: handful of spellings).
MAX_SHAPES = 1024
#: Regexes of new spellings a parser compiles at once, and per second after that: compiling
#: one costs ~0.5 ms, some 500 lines' reading, so a sender inventing a spelling per line
#: (tag names are free) would otherwise buy half a millisecond of a parser with each line of
#: ~50 bytes.  A spelling met beyond the budget is read by the decoder (~7 us a line, the
#: same rows) until a build is free again; a fleet's few spellings fit in the burst.
SHAPE_BUILD_BURST = 64
SHAPE_BUILDS_PER_SECOND = 8
#: Spellings a line is tried with before its own is looked up (``Parser._matching``), the
#: most recently met first.
MAX_RECENT = 4
#: Spellings one payload is sieved into (``Parser._mixed``); the lines of any further ones go
#: line by line, so that a payload of many spellings never costs a pass over it per line.
MAX_SPELLINGS = 8
#: Payloads sieved after the last one that mixed spellings, before the first line picks the
#: regex again: one sieve pass costs little more than a plain one, a wrong guess a pass.
MIXED_STREAK = 16
#: How every line that any regex admits begins.
_LINE_START = b"%s," % protocol.MEASUREMENT.encode("ascii")
#: The catch-all group a sieve (``_sieve``) ends with: a line its spelling's regex left.
_OTHER_OF = itemgetter(-1)
_VALUE_PATTERNS = {b"vm": r"[A-Za-z0-9._:%%-]{1,%d}" % protocol.MAX_VM_ID_LENGTH,
                   b"host": r"[A-Za-z0-9][A-Za-z0-9._-]{0,%d}" % (protocol.MAX_HOST_LENGTH - 1)}
_EXTRA_TAG_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,%d}" % (protocol.MAX_TAG_VALUE_LENGTH - 1)
_FIELD_SPEC = {name.encode("ascii"): (is_int, lo, hi, places)
               for name, is_int, lo, hi, _required, places in protocol.FIELDS}
#: Every field in the agent's order and typing, as ``shape_key`` reads a line's fields (a
#: whole size typed, ``vcpus=2i``: an agent's line with a fractional one is a shape of its own).
_AGENT_FIELDS = tuple(name.encode("ascii") + (b"=i" if is_int or places is not None else b"")
                      for name, is_int, _lo, _hi, _required, places in protocol.FIELDS)
_TAGS_SEPARATOR = TAGS_SEPARATOR.encode("ascii")
#: A field of fixed places as ``shape_key`` reads it untyped (``vcpus=0.25``) -> typed, the
#: agent's whole size: the agent's regexes admit both.
_AGENT_UNTYPED = {name.encode("ascii"): name.encode("ascii") + b"=i"
                  for name, is_int, _lo, _hi, _required, places in protocol.FIELDS
                  if not is_int and places is not None}


def _as_agents(fields: tuple) -> tuple:
    """A line's fields (``shape_key``) with a size spelled as a decimal read as the agent's
    typed one: the same spelling to the agent's regexes."""
    return tuple(_AGENT_UNTYPED.get(field, field) for field in fields)


class Shape:
    """One spelling of records and how its regex groups become columns.

    ``row`` is ``format % pick(groups)``: the fields in the log's order (an
    empty cell for each one not sent), the host, and the extra tags sorted by
    key, as ``logstore.format_tail`` writes them.  ``seq_of`` is None when the
    spelling has no seq.  ``sieve`` is ``_sieve`` of the regex.
    """

    __slots__ = ("regex", "findall", "fullmatch", "sieve", "vm_of", "ts_of", "seq_of", "pick",
                 "format")

    def __init__(self, regex, vm: int, ts: int, seq: int | None, cells: list[int | None],
                 tags: list[bytes] = (), tag_groups: list[int] = ()):
        """``cells``: the group of each comma-separated cell (None: empty); ``tags``: the extra
        tags' keys in sorted order, ``tag_groups`` their groups."""
        self.regex = regex
        self.findall = regex.findall
        self.fullmatch = regex.fullmatch
        self.sieve = _sieve(regex)
        self.vm_of = itemgetter(vm)
        self.ts_of = itemgetter(ts)
        self.seq_of = None if seq is None else itemgetter(seq)
        self.pick = itemgetter(*[cell for cell in cells if cell is not None], *tag_groups)
        self.format = b",".join(b"" if cell is None else b"%s" for cell in cells)
        if tags:
            self.format += b"," + TAGS_SEPARATOR.encode("ascii").join(b"%s=%%s" % tag
                                                                      for tag in tags)

    def row(self, groups: tuple) -> bytes:
        return self.format % self.pick(groups)

    def rows(self, matches: list) -> list[bytes]:
        """``row`` of every match, mapped in C."""
        return list(map(self.format.__mod__, map(self.pick, matches)))


class CompactShape(Shape):
    """The agent's spelling with extra tags: the compact regex (``build_fast_path``), tags and all.

    A held row is the field section with the names deleted, the host, and the
    extra tags as they were sent with ``;`` for ``,`` (sorted, as the row keeps
    them): three C calls a line where a per-field ``Shape`` formats a dozen
    groups, which brings a payload of tagged lines close to an untagged one's
    cost.
    """

    __slots__ = ("host_of", "tags_of", "section_of")

    def __init__(self, extra_tags: tuple[bytes, ...]):
        regex, ts_group, seq_group = build_fast_path(compact=True, extra_tags=extra_tags)
        self.regex = regex
        self.findall = regex.findall
        self.fullmatch = regex.fullmatch
        self.sieve = _sieve(regex)
        self.vm_of, self.host_of, self.tags_of, self.section_of = map(itemgetter, range(4))
        self.ts_of = itemgetter(ts_group)
        self.seq_of = itemgetter(seq_group)

    def row(self, groups: tuple) -> bytes:
        """(``groups`` of one match: the host's is None when it was not sent.)"""
        return b",".join((groups[3].translate(None, FIELD_NAME_BYTES), groups[1] or b"",
                          groups[2].replace(b",", _TAGS_SEPARATOR)))

    def rows(self, matches: list) -> list[bytes]:
        values = map(bytes.translate, map(self.section_of, matches), repeat(None),
                     repeat(FIELD_NAME_BYTES))
        tags = map(bytes.replace, map(self.tags_of, matches), repeat(b","),
                   repeat(_TAGS_SEPARATOR))
        return list(map(b",".join, zip(values, map(self.host_of, matches), tags, strict=True)))


def _sieve(regex: "re.Pattern[bytes]") -> Callable:
    """``findall`` of ``regex`` that also yields each line the regex leaves, whole, as the
    last group (``_OTHER_OF``; empty when the regex matched).

    Every non-empty line gives one tuple, in order.  One pass so both matches
    a spelling's lines and gathers the rest for the next spelling's pass
    (``Parser._mixed``), rather than each spelling's regex running over
    every line of the payload and failing on the others'.
    """
    return re.compile(b"(?<![^\n])(?:%s|([^\n]+))" % regex.pattern).findall


def shape_key(line: bytes) -> tuple | None:
    """What tells one spelling from another: tag names, field names and types, stamp length.

    None for what is no record line at all.  A key only chooses the regex to
    try: the regex alone decides whether a line is valid.
    """
    head, _sep, rest = line.partition(b" ")
    body, _sep, stamp = rest.partition(b" ")
    tags = head.split(b",")
    if tags[0] != protocol.MEASUREMENT.encode("ascii") or not body:
        return None
    fields = tuple(field.partition(b"=")[0] + (b"=" + field[-1:] if field[-1:] in b"iu" else b"")
                   for field in body.split(b","))
    return (tuple(tag.partition(b"=")[0] for tag in tags[1:]), fields,
            len(stamp) - (stamp[-1:] == b"\r"))


def _agents_spelling(key: tuple) -> bool:
    """Is this the agent's spelling?  The canonical regex admits it and is tried first, so a
    shape of it would only take a place among the recent ones (``Parser._stage``)."""
    tag_keys, fields, stamp_length = key
    if tag_keys not in ((b"vm",), (b"vm", b"host")) or stamp_length != 10:
        return False
    canonical = list(_AGENT_FIELDS)
    positions = [canonical.index(field) if field in canonical else -1
                 for field in _as_agents(fields)]
    return -1 not in positions and positions == sorted(set(positions))


def line_spec() -> tuple:
    """The field table and the tags' limits as ``_linescan.spec`` reads them: each field's
    values as ``build_shape``'s regexes admit them, so the C reader's grammar has every limit
    from ``protocol`` and this module, none of its own.

    Per field: its name; whether 0 is in range (a positive range starts at 1 for
    i/u typed values and at its smallest step for decimals: ``_float_pattern``);
    for i/u typed values the most digits and the top spelled out when it is a
    power of ten (``100i``); whether untyped values are integers (exact up to
    ``_EXACT_DIGITS``) and their most digits before any point; for untyped
    decimals the top spelled out likewise; whether the field is required; the
    most digits after a decimal point (the field's places).  Then the longest VM
    id, host, extra tags, tag key and tag value, and the most digits after a
    decimal point of any field.
    """
    spec = []
    for name, is_int, lo, hi, required, places in protocol.FIELDS:
        top = int(hi)
        digits = _int_digits(top)
        top_spelled = b"%d" % top if top == 10 ** digits else b""
        untyped = _int_digits(min(hi, 10 ** _EXACT_DIGITS - 1)) if is_int else digits
        spec.append((name.encode("ascii"), lo <= 0, digits, top_spelled, is_int, untyped,
                     b"" if is_int else top_spelled, required,
                     _FRACTION_DIGITS if places is None else places))
    limits = (protocol.MAX_VM_ID_LENGTH, protocol.MAX_HOST_LENGTH, protocol.MAX_EXTRA_TAGS,
              protocol.MAX_TAG_KEY_LENGTH, protocol.MAX_TAG_VALUE_LENGTH, _FRACTION_DIGITS)
    return tuple(spec), limits


def has_shape(key: tuple) -> bool:
    """Can a line of this spelling (``shape_key``) be valid?  What ``build_shape`` checks
    before it compiles anything, and costs no regex."""
    tag_keys, fields, stamp_length = key
    names = [field.partition(b"=")[0] for field in fields]
    if (stamp_length not in _STAMP_LENGTHS or tag_keys.count(b"vm") != 1
            or len(set(tag_keys)) != len(tag_keys) or len(set(names)) != len(names)
            or not set(names) <= _FIELD_SPEC.keys()
            or not set(protocol.REQUIRED_FIELDS) <= {name.decode() for name in names}):
        return False
    try:
        protocol.check_tags([(tag.decode("ascii"), "x") for tag in tag_keys
                             if tag not in _VALUE_PATTERNS])
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def build_shape(key: tuple) -> Shape | None:
    """The regex of one spelling (``shape_key``), or None if no line of it can be valid.

    Anything the decoder would have to judge beyond the values' grammar -- a
    tag or field given twice, an unknown field, a required one missing, extra
    tags beyond the limits, an odd timestamp length -- gets no regex: such
    lines go to the decoder, which names the reason.  Values are admitted as
    the canonical regex admits them: integers without leading zeros, decimals
    without exponent, each provably in its field's range.
    """
    if not has_shape(key):
        return None
    tag_keys, fields, stamp_length = key
    names = [field.partition(b"=")[0] for field in fields]
    extras = [tag for tag in tag_keys if tag not in _VALUE_PATTERNS]
    if (extras and _as_agents(fields) == _AGENT_FIELDS and stamp_length == 10 and extras == sorted(extras)
            and tag_keys[:len(tag_keys) - len(extras)] in ((b"vm",), (b"vm", b"host"))):
        return CompactShape(tuple(extras))  # the agent's lines with tags (protocol.encode_record)
    parts = []
    for tag in tag_keys:
        pattern = _VALUE_PATTERNS.get(tag, _EXTRA_TAG_PATTERN)
        parts.append(r"%s=(%s)" % (re.escape(tag.decode("ascii")), pattern))
    lead = "%s,%s" % (protocol.MEASUREMENT, parts[0].partition("(")[0])
    pattern = r"%s(?<![^\n]%s)%s" % (re.escape(lead), re.escape(lead),
                                     ",".join(parts)[len(parts[0].partition("(")[0]):])
    values = []
    for field, name in zip(fields, names, strict=True):
        is_int, lo, hi, places = _FIELD_SPEC[name]
        suffix = field[len(name) + 1:].decode("ascii")
        if suffix:  # i or u: read with int(), in range when its digits say so
            value = "(%s)%s" % (_typed_int_pattern(lo, hi), suffix)
        elif is_int:  # untyped: read with float(), exact up to 15 digits
            value = "(%s)" % _int_pattern(lo, min(hi, 10 ** _EXACT_DIGITS - 1))
        else:
            value = "(%s)" % _float_pattern(lo, hi, places)
        values.append("%s=%s" % (re.escape(name.decode("ascii")), value))
    pattern += " %s ([1-9]\\d{9})\\d{%d}\\r?(?![^\n])" % (",".join(values), stamp_length - 10)
    regex = re.compile(pattern.encode("ascii"))
    first_field = len(tag_keys)
    position = {name: first_field + offset for offset, name in enumerate(names)}
    cells = [position.get(name.encode("ascii")) for name in protocol.FIELD_NAMES]
    cells.append(tag_keys.index(b"host") if b"host" in tag_keys else None)
    ordered = sorted(extras)
    return Shape(regex, tag_keys.index(b"vm"), regex.groups - 1, position.get(b"seq"), cells,
                 ordered, [tag_keys.index(tag) for tag in ordered])


class Parser:
    """Turns payloads into ``Parsed`` columns; the same rows whichever process runs it."""

    def __init__(self, max_future: int, max_past: int):
        # The decoder judges no stamp: every path's are judged here (``_adder``), against
        # the limits or a replay's stamps alike, in the same words.
        self.decoder = protocol.Decoder(max_future=NO_LIMIT, max_past=0, first=0)
        #: The stamps taken while a replay parses a journaled payload (``parse_within``).
        self._stamps: tuple[int, int] | None = None
        self.limit(max_future, max_past)
        regex, ts_group, seq_group = build_fast_path()
        self._findall = regex.findall
        self._fullmatch = regex.fullmatch
        self._ts_of = itemgetter(ts_group)
        self._seq_of = itemgetter(seq_group)
        # Held row (buffer.py): the fields, then the host tag, as logstore.format_tail.
        self._row_of = itemgetter(*range(2, ts_group), 1)
        compact, compact_ts, compact_seq = build_fast_path(compact=True)
        self._compact_findall = compact.findall
        self._compact_fullmatch = compact.fullmatch
        # The per-field regex as a Shape, for the paths that check lines one by one.
        self._canonical = Shape(regex, 0, ts_group, seq_group, list(range(2, ts_group)) + [1])
        self._shapes: OrderedDict[tuple, Shape | None] = OrderedDict()
        #: Compilations of new spellings' regexes allowed at once and per second after that.
        self.build_burst: float = SHAPE_BUILD_BURST
        self.builds_per_second: float = SHAPE_BUILDS_PER_SECOND
        # The compilations left, and when they were counted.
        self._builds = float(SHAPE_BUILD_BURST)
        self._builds_at = time.monotonic()
        self._recent: list[Shape] = []
        self._compact_sieve = _sieve(compact)
        self._compact_ts_of = itemgetter(compact_ts)
        self._compact_seq_of = itemgetter(compact_seq)
        self._vm_ids: dict[bytes, str] = {}
        # Payloads left to sieve at once (``_mixed``): set when one mixed spellings (or bad
        # lines among good ones); and the stage of the spelling most of that payload's lines
        # had, which then sieves first.
        self._mixing = 0
        self._lead: tuple[Callable, Shape | None] | None = None
        self._scan_spec = None if _native is None else _native.spec(*line_spec())

    def limit(self, max_future: int, max_past: int) -> None:
        """The stamps taken, from ``now - max_past`` (0: no limit) to ``now + max_future``,
        for the fast paths and the decoder's lines alike (``_window``); never one before
        ``FIRST_STAMP`` (2000: a clock not yet set, a stamp left unset), but by a parser of no limit
        (``NO_LIMIT``: a replay's, the edge's minutes'), which takes what was acknowledged."""
        self.max_future = max_future
        self.max_past = max_past
        #: The least stamp taken.
        self.first = 0 if max_future >= NO_LIMIT else FIRST_STAMP

    def parse_within(self, data: bytes, lo: int, hi: int) -> Parsed:
        """``parse``, taking the stamps from ``lo`` to ``hi`` and no other, whatever the limits
        and the clock: a journaled payload some of whose lines were refused for their time
        when it came names the stamps taken then (replay.py).  The same parser serves every
        payload, so that it learns VM ids once."""
        self._stamps = (lo, hi)
        try:
            return self.parse(data, float(hi))
        finally:
            self._stamps = None

    def parse(self, data: bytes, now: float) -> Parsed:
        """Every record of one payload, in order, and a count of every reject by reason.

        The C reader (``_linescan``, where built) takes the payload when every
        line is a record it proves valid, of a known VM id, inside the window:
        whatever the spellings, in one pass, at a third of the agent's regex's
        cost.  Every other payload -- a new VM id, a stamp outside the window,
        a line it cannot prove valid -- goes to the regexes (``_matched``), as
        every payload does without the C part.
        """
        out = self._scanned(data, now)
        return self._matched(data, now) if out is None else out

    def _matched(self, data: bytes, now: float) -> Parsed:
        """A payload parsed by the regexes, and the decoder for the lines they leave.

        The whole payload takes the column path when every line matched the
        regex, every VM id is known and every timestamp is in the window
        (one min/max); otherwise the lines are checked one by one.  Lines
        with every field (what the agent sends) need only the compact regex
        (``_every_field``).  A payload whose first line is spelled otherwise
        takes the regex of that line's spelling (``_shaped``) at once.  After
        a payload that mixed spellings (or bad lines among good ones), the
        next ones are sieved (``_mixed``) at once: a parser joins the
        datagrams of many senders, so the next payload of a mixed fleet mixes
        them too.
        """
        if self._mixing:
            return self._mixed(data, now)
        end = data.find(b"\n")
        first = data if end < 0 else data[:end]
        compact = _every_field(first)
        if first[:1] not in (b"", b"#") and \
                (self._compact_fullmatch if compact else self._fullmatch)(first) is None:
            return self._shaped(data, first, now)
        matches = (self._compact_findall if compact else self._findall)(data)
        if not _all_lines_matched(data, len(matches)):
            if compact:  # a line lacks a field, or is bad: then the per-field regex, or the decoder
                compact, matches = False, self._findall(data)
            if not _all_lines_matched(data, len(matches)):
                return self._mixed(data, now)
        if not matches:
            return [], [], [], [], [], [], []
        if compact:
            out = self._compact_columns(matches, now)
            return self._checked(self._findall(data), now, self._canonical) if out is None else out
        vms = list(map(self._vm_ids.get, map(_VM_OF, matches)))
        tss = list(map(int, map(self._ts_of, matches)))
        hi, lo = self._window(now)
        if None in vms or min(tss) < lo or max(tss) > hi:
            return self._checked(matches, now, self._canonical)
        rows = list(map(b",".join, map(self._row_of, matches)))
        raw_seqs = list(map(self._seq_of, matches))
        if b"" in raw_seqs:
            seqs = [int(s) if s else None for s in raw_seqs]
        else:
            seqs = list(map(int, raw_seqs))
        return vms, tss, rows, seqs, [], [], []

    def _scanned(self, data: bytes, now: float) -> Parsed | None:
        """The payload read by the C reader (``_linescan``), if it was built: the records it
        proves valid, of known VM ids, inside the window, and the lines it left read by the
        regexes (``_matched``); None when it left most lines, or the lines it left hold
        records of a VM it read records of (the payload's order then matters, and the
        regexes read it whole).

        A bad line among a payload's hundreds -- a parser joins many senders'
        datagrams, and a line of garbage is a datagram away -- so costs the regexes
        that line, not the payload's good ones their ~3x the C's cost.
        """
        if self._scan_spec is None:
            return None
        hi, lo = self._window(now)
        found = _native.scan(data, self._scan_spec, self._vm_ids, lo, hi)
        if found is None:
            return None
        vms, tss, rows, seqs, rest = found
        if not rest:
            return vms, tss, rows, seqs, [], [], []
        left = self._matched(b"\n".join(rest), now)
        if (left[0] or left[6]) and not set(_named(left)).isdisjoint(vms):
            return None
        taken = len(vms)
        vms += left[0]
        tss += left[1]
        rows += left[2]
        seqs += left[3]
        return vms, tss, rows, seqs, left[4], left[5], _after(left[6], taken)

    def _shaped(self, data: bytes, first: bytes, now: float) -> Parsed:
        """A payload whose first line is not the agent's spelling: its shape's regex, whole."""
        shape = self._matching(first)
        if shape is None:  # a bad first line, or one for the decoder
            return self._mixed(data, now)
        matches = shape.findall(data)
        if not _all_lines_matched(data, len(matches)):
            return self._mixed(data, now)
        return self._columns(shape, matches, now)

    def _mixed(self, data: bytes, now: float) -> Parsed:
        """A payload that no one regex matched whole: the lines of several spellings, as a
        parser joins the datagrams of many senders, or bad lines.

        The payload is sieved: the regex of its first line's spelling
        (``_stage``) runs over it with a catch-all alternative (``_sieve``),
        so one pass yields that spelling's matches and the lines it left,
        joined, are what the next spelling's pass runs over; each line is
        matched once, by its own spelling's regex, plus one failed try of
        each spelling before it -- so the spelling most lines had in the last
        mixed payload sieves first, whatever the first line's (a fleet's mix
        changes slowly).  Lines no regex admits go to the decoder
        (``_line_by_line``).  Each spelling's matches become columns as a
        payload of its own would, one spelling after the other.  That
        reorders lines of different spellings, which is exact only when no
        VM has records in two of them (the last record of a (vm, ts) wins,
        and seq gaps are counted per VM in order): otherwise the whole
        payload goes line by line.
        """
        parts: list[Parsed] = []
        slow: list[bytes] = []
        spellings = 0
        rest, start = data, 0  # what the sieves before left, from its line at ``start``
        stage = self._lead if self._mixing else None
        lead, most = None, 0
        while start < len(rest):
            end = rest.find(b"\n", start)
            end = len(rest) if end < 0 else end
            first = rest[start:end]
            if not first or first[:1] == b"#" or first == b"\r":  # blank lines, comments
                start = end + 1
                continue
            if spellings == MAX_SPELLINGS:  # the rest goes line by line
                slow.append(rest[start:])
                break
            stage = stage or self._stage(first)
            if stage is None:  # this line, and those after it that no regex can match
                end = rest.find(b"\n" + _LINE_START, end)
                end = len(rest) if end < 0 else end
                slow.append(rest[start:end])
                start = end + 1
                continue
            rest, start = rest[start:], 0
            sieve, shape = stage
            matches, left = _sifted(sieve(rest))
            if not matches:  # the lead spelling, none of whose lines came this time
                stage = None
                continue
            if len(matches) > most:
                lead, most = stage, len(matches)
            stage = None
            part = self._compact_columns(matches, now) if shape is None else \
                self._columns(shape, matches, now)
            if part is None:  # a new VM id or a stamp near the window: the per-field regex's path
                matches, left = _sifted(self._canonical.sieve(rest))
                part = self._columns(self._canonical, matches, now)
            parts.append(part)
            spellings += 1
            rest = left
        if slow:
            parts.append(self._line_by_line(b"\n".join(slow), now))
        # Bad lines among good ones count as mixing: a broken sender goes on sending them.
        self._mixing = MIXED_STREAK if spellings + bool(slow) > 1 else max(self._mixing - 1, 0)
        self._lead = lead
        if len(parts) == 1:
            return parts[0]
        vm_lists = [_named(part) for part in parts if part[0] or part[6]]
        if len(vm_lists) > 1 and \
                sum(map(len, map(set, vm_lists))) != len(set(chain.from_iterable(vm_lists))):
            return self._line_by_line(data, now)
        out: Parsed = ([], [], [], [], [], [], [])
        for part in parts:
            refused = _after(part[6], len(out[0]))
            for mine, theirs in zip(out[:6], part[:6], strict=True):
                mine.extend(theirs)
            out[6].extend(refused)
        if out[4]:
            counts: Counter = Counter()
            for reason, count in out[4]:
                counts[reason] += count
            out[4][:] = sorted(counts.items())
            del out[5][MAX_DETAILS:]
        return out

    def _stage(self, first: bytes) -> tuple[Callable, Shape | None] | None:
        """The sieve of the spelling whose regex matches ``first``, and its shape (None: the
        compact regex's); None when none does (a bad line, or one for the decoder).

        The agent's regexes are tried first (``_matching``).
        """
        if not first.startswith(_LINE_START):  # no regex can match: spare shape_key
            return None
        if _every_field(first) and self._compact_fullmatch(first) is not None:
            return self._compact_sieve, None
        shape = self._matching(first, self._canonical)
        return None if shape is None else (shape.sieve, shape)

    def _matching(self, line: bytes, *first: Shape) -> Shape | None:
        """The shape whose regex matches ``line``, if any: ``first``, then the spellings met
        last, before the line's own is looked up (``shape_key`` costs a few microseconds in
        Python, a regex failing within the first tags a fraction of one)."""
        for shape in (*first, *self._recent):
            if shape.fullmatch(line) is not None:
                return shape
        shape = self._shape_of(line)
        return shape if shape is not None and shape.fullmatch(line) is not None else None

    def _compact_columns(self, matches: list, now: float) -> Parsed | None:
        """The columns of the compact regex's matches; None when a VM id is new or a stamp
        lies near the window's edges (the per-field regex's matches are then checked one
        by one)."""
        vms = list(map(self._vm_ids.get, map(_VM_OF, matches)))
        tss = list(map(int, map(self._compact_ts_of, matches)))
        hi, lo = self._window(now)
        if None in vms or min(tss) < lo or max(tss) > hi:
            return None
        values = map(bytes.translate, map(_SECTION_OF, matches), repeat(None),
                     repeat(FIELD_NAME_BYTES))
        rows = list(map(b",".join, zip(values, map(_HOST_OF, matches), strict=True)))
        return vms, tss, rows, list(map(int, map(self._compact_seq_of, matches))), [], [], []

    def _columns(self, shape: Shape, matches: list, now: float) -> Parsed:
        """The columns of a shape's matches, every line of them valid but perhaps for the VM id
        and the timestamp's window."""
        vms = list(map(self._vm_ids.get, map(shape.vm_of, matches)))
        tss = list(map(int, map(shape.ts_of, matches)))
        hi, lo = self._window(now)
        if None in vms or min(tss) < lo or max(tss) > hi:
            return self._checked(matches, now, shape)
        rows = shape.rows(matches)
        if shape.seq_of is None:
            return vms, tss, rows, [None] * len(rows), [], [], []
        raw_seqs = list(map(shape.seq_of, matches))
        if b"" in raw_seqs:  # the agent's regex, whose seq is optional
            return vms, tss, rows, [int(s) if s else None for s in raw_seqs], [], [], []
        return vms, tss, rows, list(map(int, raw_seqs)), [], [], []

    def _shape_of(self, line: bytes) -> Shape | None:
        key = shape_key(line)
        if key is None:
            return None
        try:
            shape = self._shapes[key]
        except KeyError:
            buildable = has_shape(key)
            if buildable and not self._may_build():
                return None  # the decoder reads it until a build is free (SHAPE_BUILD_BURST)
            while len(self._shapes) >= MAX_SHAPES:
                old_key, old = self._shapes.popitem(last=False)
                if old is not None and old in self._recent:  # in use, matched before lookups
                    self._shapes[old_key] = old
            shape = self._shapes[key] = build_shape(key) if buildable else None
        else:
            self._shapes.move_to_end(key)
        # The agent's spelling is the canonical regex's: a shape of it would match its lines twice.
        if shape is not None and shape not in self._recent and not _agents_spelling(key):
            self._recent.insert(0, shape)
            del self._recent[MAX_RECENT:]
        return shape

    def _may_build(self) -> bool:
        """Take one of the builds the budget allows (``SHAPE_BUILD_BURST``), if one is left."""
        clock = time.monotonic()
        self._builds = min(self.build_burst,
                           self._builds + (clock - self._builds_at) * self.builds_per_second)
        self._builds_at = clock
        if self._builds < 1:
            return False
        self._builds -= 1
        return True

    def _window(self, now: float) -> tuple[int, int]:
        """The highest and lowest timestamps taken at ``now`` (integers): ``now + max_future``
        and ``now - max_past`` or ``first``, the later (the protocol decoder's arithmetic,
        which takes a stamp ``max_future`` ahead of a clock between seconds), or a replay's
        stamps."""
        if self._stamps is not None:
            return self._stamps[1], self._stamps[0]
        return int(now) + self.max_future, (
            max(math.ceil(now) - self.max_past, self.first) if self.max_past else self.first)

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

    def _checked(self, matches: list, now: float, shape: Shape) -> Parsed:
        """Regex matches checked one by one (new VM ids, timestamps near the window's edges)."""
        out: Parsed = ([], [], [], [], [], [], [])
        add = self._adder(out, now)
        for groups in matches:
            add(groups, None, shape)
        return _counted(out)

    def _line_by_line(self, data: bytes, now: float) -> Parsed:
        """A payload the regex did not cover whole: the decoder decides the lines it left."""
        out: Parsed = ([], [], [], [], [], [], [])
        add = self._adder(out, now)
        fullmatch, decode, canonical = self._fullmatch, self.decoder.decode_line, self._canonical
        for line in data.split(b"\n"):
            if not line or line[:1] == b"#" or line == b"\r":  # a blank line of a CRLF sender
                continue
            found = fullmatch(line)
            if found is not None:
                add(found.groups(b""), None, canonical)
                continue
            shape = self._shape_of(line)
            found = None if shape is None else shape.fullmatch(line)
            if found is not None:
                add(found.groups(), None, shape)
                continue
            try:
                add(None, decode(line, now), None)
            except protocol.DecodeError as exc:
                _reject(out, exc.reason, str(exc))
        return _counted(out)

    def _adder(self, out: Parsed, now: float) -> Callable:
        vms, tss, rows, seqs = out[:4]
        refused = out[6]
        hi, lo = self._window(now)

        def add(groups: tuple | None, record: protocol.Record | None, shape: Shape | None) -> None:
            if record is not None:  # the decoder checked everything but the stamp
                if record.ts > hi or record.ts < lo:
                    _reject(out, *self._refusal(record.vm, record.ts, now, record.ts > hi))
                    if record.seq is not None:
                        refused.append((len(vms), sys.intern(record.vm), record.seq, record.ts))
                    return
                vms.append(sys.intern(record.vm))
                tss.append(record.ts)
                rows.append(format_tail(record))
                seqs.append(record.seq)
                return
            try:
                vm = self._vm_id(shape.vm_of(groups))
            except protocol.DecodeError as exc:
                _reject(out, exc.reason, str(exc))
                return
            ts = int(shape.ts_of(groups))
            seq = None if shape.seq_of is None else shape.seq_of(groups)
            if ts > hi or ts < lo:
                _reject(out, *self._refusal(vm, ts, now, ts > hi))
                if seq:
                    refused.append((len(vms), vm, int(seq), ts))
                return
            vms.append(vm)
            tss.append(ts)
            rows.append(shape.row(groups))
            seqs.append(int(seq) if seq else None)

        return add

    def _refusal(self, vm: str, ts: int, now: float, ahead: bool) -> tuple[str, str]:
        """The reason and the log's words for a record stamped outside the stamps taken."""
        if self._stamps is None:
            reason, words = outside_window(ts, now, ahead, self.max_future, self.max_past, vm)
            return reason, "%s: %s" % (reason, words)
        reason = window_reason(ahead)
        return reason, (
            "%s: vm %s stamped %d, outside %d..%d, the stamps its journaled payload was taken "
            "within when it came (refused then for its time)" % (reason, vm, ts, *self._stamps))


def native_reader() -> bool:
    """Are payloads read by the C part (``_linescan``, built with the package)?"""
    return _native is not None


def _every_field(first: bytes) -> bool:
    """Does the payload's first line carry every field?  It picks the regex to try.

    A payload comes from one sender, or from a fleet of one agent, so its
    first line tells its shape: a payload of lines lacking some field then
    takes the regex with a group per field at once, rather than the compact
    one first and that one again.  A wrong guess costs time, never a row.
    """
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


def _sifted(found: list) -> tuple[list, bytes]:
    """A sieve's (``_sieve``) matches of its spelling, and the lines it left, joined."""
    others = list(filter(None, map(_OTHER_OF, found)))
    if not others:
        return found, b""
    return list(compress(found, map(not_, map(_OTHER_OF, found)))), b"\n".join(others)


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


def _named(parsed: Parsed) -> list:
    """The VMs of a part's records, those taken and those refused for their stamp alike: parts
    may be put together only when no VM has records in two of them (its seqs' order)."""
    return parsed[0] + [vm for _index, vm, _seq, _ts in parsed[6]]


def _after(refused: list, taken: int) -> list:
    """A part's refused records (Parsed's last column) once ``taken`` records come before it."""
    return [(index + taken, vm, seq, ts) for index, vm, seq, ts in refused] if taken else refused


def _counted(out: Parsed) -> Parsed:
    if out[4]:
        out[4][:] = sorted(Counter(out[4]).items())
    return out
