"""The vmstats wire format: one module shared by the agent and the aggregator.

The agent is baked into VM images that may carry an old interpreter, so this
module uses only the standard library and stays Python 3.6 compatible (no
dataclasses, no walrus, no ``from __future__ import annotations``).

A record is one line of InfluxDB line protocol::

    vmstats,vm=10.0.0.5,host=web1 cpu=3.2,mem=41.0,cpu_max=9.1,disk_r=0i,... 1732262400

Lines are separated by ``\\n``; a datagram or TCP stream carries several.
Lines starting with ``#`` are comments to other line-protocol readers; vmstats
uses ``#!`` lines for its own control frames (signatures, TCP sync), so a plain
InfluxDB/Telegraf receiver ignores them.  docs/PROTOCOL.md is the reference.
"""

import ipaddress
import math
import operator
import os
import re
from collections import namedtuple

MEASUREMENT = "vmstats"
PROTOCOL_VERSION = 1
DEFAULT_PORT = 8899
#: Senders keep datagrams at or below this size so they never fragment.
SAFE_DATAGRAM_SIZE = 1400
#: The server accepts datagrams (and TCP lines) up to this size.
MAX_DATAGRAM_SIZE = 65536
MAX_VM_ID_LENGTH = 64
#: The longest ``host`` tag (a DNS name's limit).
MAX_HOST_LENGTH = 255
#: Records stamped further than this in the future are rejected (seconds).
DEFAULT_MAX_FUTURE = 300
#: Records stamped further than this in the past are rejected (seconds); the
#: agent's spool and trace replay legitimately send old records, so the
#: default is generous and the server makes it configurable (0 = no limit).
DEFAULT_MAX_PAST = 0

#: Field name -> (is_integer, minimum, maximum, required, places).  Ranges are closed.
#: ``places``: the most digits after the point a decimal field's value may have (None: any),
#: so its smallest step is 10 ** -places and a positive range starts there.  Such a field
#: (``vcpus``, a size: a container limited to 250m of a CPU is 0.25) holds an int when its
#: value is whole, and a whole value keeps the integer's wire form (``2i``), so what an
#: older server reads from a whole-CPU VM is unchanged.
#: One place for what a record may hold; the log layout follows this order.
FIELDS = (
    ("cpu", False, 0.0, 100.0, True, None),
    ("cpu_max", False, 0.0, 100.0, False, None),
    ("mem", False, 0.0, 100.0, True, None),
    ("disk_r", False, 0.0, 1e15, False, None),
    ("disk_w", False, 0.0, 1e15, False, None),
    ("net_rx", False, 0.0, 1e15, False, None),
    ("net_tx", False, 0.0, 1e15, False, None),
    ("vcpus", False, 0.001, 4096, False, 3),
    ("mem_mb", True, 1, 1 << 32, False, None),
    ("seq", True, 0, (1 << 63) - 1, False, None),
)
FIELD_NAMES = tuple(f[0] for f in FIELDS)
REQUIRED_FIELDS = tuple(f[0] for f in FIELDS if f[4])
TAG_NAMES = ("vm", "host")
#: Extra tags a record may carry beside ``vm`` and ``host`` (``project``, ``owner``, ``env``,
#: ...): labels for grouping the report, at most this many, each ``key=value`` with the key
#: and value grammars below.  Bounded so a sender cannot grow the logs or the report's groups
#: without limit; docs/PROTOCOL.md states the same limits.
MAX_EXTRA_TAGS = 8
MAX_TAG_KEY_LENGTH = 32
MAX_TAG_VALUE_LENGTH = 64
_TAG_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,%d}\Z" % (MAX_TAG_KEY_LENGTH - 1))
_TAG_VALUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,%d}\Z" % (MAX_TAG_VALUE_LENGTH - 1))

#: The record type.  Optional fields that were not sent are ``None``
#: (unknown), never zero.  ``ts`` is integer Unix seconds.
#: ``tags`` is None (no extra tags) or a tuple of ``(key, value)`` pairs sorted by key
#: (``check_tags``), so equal tag sets compare and hash equal.
_OPTIONAL_NAMES = frozenset(f[0] for f in FIELDS if not f[4]) | frozenset(["host", "tags"])
_RecordBase = namedtuple("Record", ("vm", "ts") + FIELD_NAMES + ("host", "tags"))


class Record(_RecordBase):
    """A namedtuple whose optional fields default to None wherever they sit.

    namedtuple defaults only cover trailing fields, and optional ``cpu_max``
    sits between the required ``cpu`` and ``mem``.
    """

    __slots__ = ()

    def __new__(cls, *args, **kwargs):
        for name in _RecordBase._fields[len(args):]:
            if name in _OPTIONAL_NAMES and name not in kwargs:
                kwargs[name] = None
        return _RecordBase.__new__(cls, *args, **kwargs)

# Reject reasons: every rejected line is counted under exactly one of these.
R_SYNTAX = "syntax"
R_MEASUREMENT = "measurement"
R_MISSING = "missing_field"
R_UNKNOWN = "unknown_key"
R_NON_NUMERIC = "non_numeric"
R_NON_FINITE = "non_finite"
R_RANGE = "out_of_range"
R_FUTURE = "future_timestamp"
R_PAST = "past_timestamp"
R_BAD_VM = "bad_vm_id"
R_UTF8 = "bad_utf8"
R_TOO_LONG = "too_long"
R_TRUNCATED = "truncated"  # a stream closed inside a line: the line may be cut anywhere
R_HTTP = "http_request"  # a TCP connection, or a datagram, whose first line is an HTTP request line
REJECT_REASONS = (
    R_SYNTAX, R_MEASUREMENT, R_MISSING, R_UNKNOWN, R_NON_NUMERIC, R_NON_FINITE,
    R_RANGE, R_FUTURE, R_PAST, R_BAD_VM, R_UTF8, R_TOO_LONG, R_TRUNCATED, R_HTTP,
)


class DecodeError(ValueError):
    """The only exception the decoder raises; ``reason`` is one of REJECT_REASONS."""

    def __init__(self, reason, detail, length=None):
        ValueError.__init__(self, "%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail
        #: The payload length a broken header still gives (a stream reader refuses that many
        #: bytes with it), else None.
        self.length = length


_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
#: A decimal number as InfluxDB's line protocol spells one, and so every text format here:
#: ASCII digits, an optional leading minus, point and exponent.  ``float()`` alone also takes
#: ``1_000``, Unicode digits (``\u0661``), surrounding whitespace and a leading ``+``, none of
#: which any sender writes; ``[0-9]`` rather than ``\d``, which matches every script's digits.
DECIMAL = r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
DECIMAL_RE = re.compile(DECIMAL + r"\Z")
#: A typed integer: signed ``i`` or unsigned ``u``.
_TYPED_INT_RE = re.compile(r"(?:-?[0-9]+i|[0-9]+u)\Z")
#: What float() reads as nan or infinity: refused as ``non_finite``, not as ``non_numeric``.
_NON_FINITE_WORDS = ("nan", "inf", "infinity")
_STAMP_RE = re.compile(r"[0-9]{1,20}\Z")
# A dotted quad already in canonical form (no leading zeros, each part <= 255): what agents send
# by default, accepted without the ipaddress module's ~30 us per new id.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4_RE = re.compile(r"%s(?:\.%s){3}\Z" % (_OCTET, _OCTET))
_FIELD_SPEC = dict((f[0], f[1:4] + f[5:6]) for f in FIELDS)


def is_integer_field(name):
    """Whether a record's field ``name`` holds an integer (FIELDS): senders round to what it holds."""
    return _FIELD_SPEC[name][0]


def field_places(name):
    """The most digits after the point field ``name`` holds (FIELDS), or None (any; an integer
    field holds none): senders round to what it holds."""
    return 0 if _FIELD_SPEC[name][0] else _FIELD_SPEC[name][3]


def holds_places(value, places):
    """Whether ``value`` has at most ``places`` digits after the point (FIELDS' rule for a
    field of fixed places): the decoder and every reader of logged values ask it here."""
    return round(value, places) == value


def stepped(value, places):
    """``value`` as a field of ``places`` digits holds it: an int when whole (its wire form is
    then an integer's, ``2i``), else the float rounded to ``places`` digits."""
    whole = int(value)
    return whole if whole == value else round(value, places)


def normalize_vm_id(value):
    """Return the canonical VM id or raise DecodeError(R_BAD_VM).

    The canonical id is the name of the VM's folder under the data dir
    (``logstore.vm_dir``), so the grammar (docs/PROTOCOL.md, "VM ids") admits
    only what is a safe folder name and one name per VM:

    - an IPv4 address, as a dotted quad;
    - an IPv6 address in its compressed lower-case form (``ipaddress``), with
      an optional zone (``fe80::1%eth0``): the zone names an interface of the
      sender, and link-local addresses repeat from one link to the next, so
      it is kept rather than dropped, but only when it is a name of the token
      alphabet below (an interface name or index), never ``..``, ``/`` or
      punctuation;
    - a name ``[A-Za-z0-9][A-Za-z0-9._-]*`` without ``..``, kept as sent
      (case included: ``Web1`` and ``web1`` are two VMs).

    At most MAX_VM_ID_LENGTH characters, as sent and as canonical.  Whatever
    this returns is a fixed point of it and a folder ``logstore.vm_dir``
    accepts (tests/test_protocol.py checks both for any input), so an
    acknowledged record is always writable.
    """
    if not value or len(value) > MAX_VM_ID_LENGTH:
        raise DecodeError(R_BAD_VM, "vm id must be 1-%d characters" % MAX_VM_ID_LENGTH)
    if _CANONICAL_IPV4_RE.match(value):
        return value
    if ":" in value or value[0].isdigit():
        address, percent, zone = value.partition("%")
        try:
            canonical = str(ipaddress.ip_address(address))
        except ValueError:
            if ":" in value:
                raise DecodeError(R_BAD_VM, "invalid IP address %r" % value[:80])
        else:
            if percent:
                if ":" not in canonical:
                    raise DecodeError(R_BAD_VM, "a zone (%%) only follows an IPv6 address: %r"
                                      % value[:80])
                if not _TOKEN_RE.match(zone) or ".." in zone:
                    raise DecodeError(R_BAD_VM, "IPv6 zone %r is not an interface name"
                                      % zone[:80])
                canonical += "%" + zone
            if len(canonical) > MAX_VM_ID_LENGTH:  # not seen; the folder name's bound holds anyway
                raise DecodeError(R_BAD_VM, "vm id must be 1-%d characters" % MAX_VM_ID_LENGTH)
            return canonical
    if not _TOKEN_RE.match(value) or ".." in value:
        raise DecodeError(R_BAD_VM, "vm id %r is not an IP or a safe name" % value[:80])
    return value


def check_tags(pairs):
    """``pairs`` (``(key, value)``) as a Record's ``tags``: sorted by key, None when empty.

    Raises ValueError naming the first pair that breaks the limits: more than
    MAX_EXTRA_TAGS, a key not ``[a-z][a-z0-9_]*`` (at most 32) or one of
    ``vm``/``host``, a key given twice, a value not ``[A-Za-z0-9][A-Za-z0-9._-]*``
    (at most 64).  Values never hold a space, comma, ``=`` or ``;``, so they
    need no escaping on the wire or in the logs.
    """
    pairs = list(pairs)
    if len(pairs) > MAX_EXTRA_TAGS:
        raise ValueError("%d extra tags, at most %d allowed" % (len(pairs), MAX_EXTRA_TAGS))
    seen = set()
    for key, value in pairs:
        if key in TAG_NAMES or not _TAG_KEY_RE.match(key):
            raise ValueError("tag key %r is not [a-z][a-z0-9_]* (1-%d characters, not vm or host)"
                             % (key[:40], MAX_TAG_KEY_LENGTH))
        if key in seen:
            raise ValueError("tag %r given twice" % key)
        seen.add(key)
        if not _TAG_VALUE_RE.match(value):
            raise ValueError("tag %s=%r is not [A-Za-z0-9][A-Za-z0-9._-]* (1-%d characters)"
                             % (key, value[:40], MAX_TAG_VALUE_LENGTH))
    return tuple(sorted(pairs)) or None


def parse_tags(text, separator=","):
    """Tags from ``key=value`` pairs joined by ``separator`` (the agent's setting, a log cell).

    Blank pieces and spaces around them are ignored; raises ValueError as check_tags.
    """
    pairs = []
    for piece in text.split(separator):
        piece = piece.strip()
        if not piece:
            continue
        key, sep, value = piece.partition("=")
        if not sep:
            raise ValueError("tag %r is not key=value" % piece[:40])
        pairs.append((key.strip(), value.strip()))
    return check_tags(pairs)


def format_tags(tags, separator=","):
    """``key=value`` pairs joined by ``separator``; the inverse of parse_tags."""
    return separator.join("%s=%s" % pair for pair in tags) if tags else ""


#: Stamps below this are Unix seconds (until year 5138); larger ones are ms, us or ns.
SECONDS_BELOW = 100000000000
#: The least stamp the server takes a record or sample with, whatever ``--max-past`` (0, its
#: default, sets no limit): 2000-01-01T00:00:00Z.  An earlier stamp is no reading of a real
#: clock: a VM booted without a hardware clock counts from the epoch until NTP sets it (300,
#: 86400, 1e6), and a sender writes 0 for a stamp it has not got; each made its VM a
#: ``1970-01-01.csv``.  The one place this moment is set: the server's parsers, the other
#: formats' minutes, its log's words and ``vmstats simulate`` all read it from here.
FIRST_STAMP = 946684800


def normalize_timestamp(value):
    """Unix seconds from seconds, ms, us or ns, told apart by magnitude.

    Up to 1e11 is seconds (until year 5138), up to 1e14 milliseconds, up to
    1e17 microseconds, beyond that nanoseconds (Telegraf's default).
    """
    if value < SECONDS_BELOW:
        return value
    if value < 100000000000000:
        return value // 1000
    if value < 100000000000000000:
        return value // 1000000
    return value // 1000000000


def spells_non_finite(text):
    """Is ``text`` (not a ``DECIMAL``) one of float()'s spellings of nan or infinity (``NaN``,
    ``-inf``, ``Infinity``)?  Those are refused as ``non_finite``, whatever else refuses them."""
    return text.lstrip("+-").lower() in _NON_FINITE_WORDS


def decimal(text):
    """float() of ``text`` spelled as ``DECIMAL``, or as nan or infinity, which go on to the
    caller's check that names them not finite; ValueError for what float() alone would also
    take (``1_0``, other scripts' digits, a leading ``+``)."""
    if not DECIMAL_RE.match(text) and not spells_non_finite(text):
        raise ValueError("%r is not a decimal number" % text[:40])
    return float(text)


def _parse_number(name, text, is_int, lo, hi, places):
    """A field's value by the one grammar (``DECIMAL``, ``_TYPED_INT_RE``), never by what
    int() and float() would also make of it.  A field of ``places`` digits refuses a value
    with more (``0.0005``) as ``non_numeric``, as an integer field refuses ``2.5``; its value
    is an int when whole (``stepped``)."""
    if text[-1:] in ("i", "u"):
        if not _TYPED_INT_RE.match(text):
            raise DecodeError(R_NON_NUMERIC, "%s=%r is not an integer" % (name, text[:40]))
        value = int(text[:-1])
    else:
        if not DECIMAL_RE.match(text):
            if spells_non_finite(text):
                raise DecodeError(R_NON_FINITE, "%s=%r is not finite" % (name, text[:40]))
            raise DecodeError(R_NON_NUMERIC, "%s=%r is not a number" % (name, text[:40]))
        value = float(text)
        if value in (math.inf, -math.inf):  # digits past a double's range (1e999)
            raise DecodeError(R_NON_FINITE, "%s=%r is not finite" % (name, text[:40]))
        if is_int:
            if value != int(value):
                raise DecodeError(R_NON_NUMERIC, "%s=%r must be an integer" % (name, text[:40]))
            value = int(value)
        elif places is not None:
            if not holds_places(value, places):
                raise DecodeError(R_NON_NUMERIC, "%s=%r has more than %d digits after the point"
                                  % (name, text[:40], places))
            if value == int(value):
                value = int(value)
    if not lo <= value <= hi:
        raise DecodeError(R_RANGE, "%s=%s outside [%s, %s]" % (name, text[:40], lo, hi))
    return value


class Decoder(object):
    """Parses and validates record lines.

    Holds the time window and a bounded cache of already-validated VM ids, so
    the hot path does not re-run IP parsing for every record of a known VM.
    """

    def __init__(self, max_future=DEFAULT_MAX_FUTURE, max_past=DEFAULT_MAX_PAST,
                 clock=None, vm_cache_size=65536, first=FIRST_STAMP):
        import time
        self.max_future = max_future
        self.max_past = max_past
        #: The least stamp taken, whatever ``max_past``: FIRST_STAMP, as the server, whose
        #: parser accepts exactly what this decoder accepts (docs/PROTOCOL.md); 0 for a caller
        #: that judges no stamp (the agent's spool, the server's parser, which judges every
        #: path's stamps itself).
        self.first = first
        self.clock = clock or time.time
        self._vm_cache = {}
        self._vm_cache_size = vm_cache_size

    def vm_id(self, raw):
        """Canonical VM id for ``raw`` (cached)."""
        vm = self._vm_cache.get(raw)
        if vm is None:
            vm = normalize_vm_id(raw)
            if len(self._vm_cache) >= self._vm_cache_size:
                self._vm_cache.clear()
            self._vm_cache[raw] = vm
        return vm

    def decode_line(self, line, now=None):
        """Decode one line (``str`` or ``bytes``, no newline) into a Record.

        Raises only DecodeError, whatever the input.
        """
        if isinstance(line, (bytes, bytearray)):
            if len(line) > MAX_DATAGRAM_SIZE:
                raise DecodeError(R_TOO_LONG, "line of %d bytes" % len(line))
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DecodeError(R_UTF8, "invalid UTF-8 at byte %d" % exc.start)
        elif len(line) > MAX_DATAGRAM_SIZE:
            raise DecodeError(R_TOO_LONG, "line of %d characters" % len(line))
        if line.endswith("\r"):
            line = line[:-1]
        if not line.isprintable():
            raise DecodeError(R_SYNTAX, "control characters in line")
        parts = line.split(" ")
        if len(parts) != 3:
            if len(parts) < 3:
                raise DecodeError(R_MISSING if len(parts) == 2 else R_SYNTAX,
                                  "expected 'measurement,tags fields timestamp'")
            raise DecodeError(R_SYNTAX, "unexpected spaces (escaping is not supported)")
        head, body, stamp = parts
        tags = head.split(",")
        if tags[0] != MEASUREMENT:
            raise DecodeError(R_MEASUREMENT, "measurement %r is not %r" % (tags[0][:40], MEASUREMENT))
        vm = host = None
        extra = None
        for tag in tags[1:]:
            key, sep, value = tag.partition("=")
            if not sep or not value:
                raise DecodeError(R_SYNTAX, "tag %r is not key=value" % tag[:40])
            if key == "vm":
                if vm is not None:  # a line naming two VMs: which one it is for, no one knows
                    raise DecodeError(R_SYNTAX, "tag 'vm' given twice")
                vm = self.vm_id(value)
            elif key == "host":
                if host is not None:
                    raise DecodeError(R_SYNTAX, "tag 'host' given twice")
                if len(value) > MAX_HOST_LENGTH or not _TOKEN_RE.match(value):
                    raise DecodeError(R_SYNTAX, "host tag %r is not a safe name" % value[:40])
                host = value
            elif extra is None:
                extra = [(key, value)]
            else:
                extra.append((key, value))
        if vm is None:
            raise DecodeError(R_MISSING, "no vm tag")
        if extra is not None:
            try:
                extra = check_tags(extra)
            except ValueError as exc:
                raise DecodeError(R_SYNTAX, str(exc))
        values = {}
        for field in body.split(","):
            key, sep, text = field.partition("=")
            spec = _FIELD_SPEC.get(key)
            if spec is None:
                if not sep:
                    raise DecodeError(R_SYNTAX, "field %r is not key=value" % field[:40])
                raise DecodeError(R_UNKNOWN, "unknown field %r" % key[:40])
            if key in values:
                raise DecodeError(R_SYNTAX, "field %r given twice" % key)
            values[key] = _parse_number(key, text, *spec)
        for name in REQUIRED_FIELDS:
            if name not in values:
                raise DecodeError(R_MISSING, "no %s field" % name)
        if not _STAMP_RE.match(stamp):  # str.isdigit() takes every script's digits
            raise DecodeError(R_SYNTAX if stamp else R_MISSING, "timestamp %r is not an integer" % stamp[:40])
        ts = normalize_timestamp(int(stamp))
        if ts < self.first:
            raise DecodeError(R_PAST, "timestamp %d is before %d, the first stamp taken: a clock "
                              "not yet set, or a stamp left unset" % (ts, self.first))
        if now is None:
            now = self.clock()
        if ts > now + self.max_future:
            raise DecodeError(R_FUTURE, "timestamp %d is %ds ahead" % (ts, ts - now))
        if self.max_past and ts < now - self.max_past:
            raise DecodeError(R_PAST, "timestamp %d is %ds old" % (ts, now - ts))
        values["vm"] = vm
        values["ts"] = ts
        values["host"] = host
        values["tags"] = extra
        return Record(**values)

    def decode_payload(self, data, now=None):
        """Decode every line of a datagram or batch.

        Returns ``(records, rejects)`` where rejects is a list of DecodeError;
        one bad line never costs the good lines around it.  Comment and
        control lines (``#``) are skipped here: callers that understand
        control frames handle them before.
        """
        records = []
        rejects = []
        if now is None:
            now = self.clock()
        for line in data.split(b"\n") if isinstance(data, (bytes, bytearray)) else data.split("\n"):
            if not line or line[:1] in (b"#", "#") or line in (b"\r", "\r"):
                continue
            try:
                records.append(self.decode_line(line, now))
            except DecodeError as exc:
                rejects.append(exc)
        return records, rejects


def format_float(value):
    """The shortest text that reads back as ``value``: ``41`` for 41.0, and ``0`` for -0.0
    (``-0.0 + 0.0`` is 0.0), which a log or a line need not tell from 0."""
    text = repr(float(value) + 0.0)
    return text[:-2] if text.endswith(".0") else text


def _format_number(value, is_int, places):
    """An integer field's value as ``2i``; a field of ``places`` digits likewise when whole
    (the wire form older servers read), else its shortest decimal (``0.25``)."""
    if is_int or (places is not None and value == int(value)):
        return "%di" % value
    return format_float(value)


def encode_record(record):
    """One line (``str``, no newline) for a Record; the inverse of decode_line."""
    parts = []
    for name, is_int, _lo, _hi, _req, places in FIELDS:
        value = getattr(record, name)
        if value is not None:
            parts.append("%s=%s" % (name, _format_number(value, is_int, places)))
    return "%s %s %d" % (_head(record), ",".join(parts), record.ts)


def _head(record):
    """``vmstats,vm=...[,host=...][,key=value...]``: a record without extra tags is
    written exactly as before tags existed, the spelling the server's fast path admits."""
    head = "%s,vm=%s" % (MEASUREMENT, record.vm)
    if record.host:
        head += ",host=%s" % record.host
    if record.tags:
        head += "," + format_tags(record.tags)
    return head


def _batch_template(kinds):
    """``(body_format, pick_values, last_is_float, sizes)`` for records of these types, or None.

    None means "use encode_record": a value whose exact type is not the plain
    float/int the template formats (numpy scalars, bools, ints in float
    fields) could print differently through ``%r``.  A field of fixed places
    (``vcpus``) takes the template as an int (``2i``), and as a float (a
    container's 0.25) as ``%r``, its shortest decimal as encode_record writes
    it; ``sizes`` are the positions of such floats, since only encode_record
    writes one that is whole (``2i``) or not finite (it refuses those).
    """
    parts = []
    present = []
    sizes = []
    for offset, (name, is_int, _lo, _hi, _req, places) in enumerate(FIELDS):
        kind = kinds[offset + 2]
        if kind is type(None):
            continue
        if places is not None and kind is float:
            sizes.append(offset + 2)
        elif kind is not (int if is_int or places is not None else float):
            return None
        parts.append(name + ("=%r" if kind is float else "=%di"))
        present.append(offset + 2)
    if kinds[1] is not int or not parts:
        return None
    last_is_float = parts[-1].endswith("%r")
    # Every float is followed by a comma (the last one too), so one replace strips ".0".
    body = ",".join(parts) + ("," if last_is_float else "") + " %d"
    return body, operator.itemgetter(*(present + [1])), last_is_float, tuple(sizes)


def _whole_or_not_finite(value):
    """A float size only encode_record writes: whole (``2i``), or nan/inf (it refuses them)."""
    return value.is_integer() or not math.isfinite(value)


def encode_records(records):
    """Encoded lines (``bytes``, no newline) for many Records, byte-identical to encode_record.

    For senders of many records (the simulator, trace replay, the edge's
    minutes of thousands of VMs), where the per-field work of encode_record
    dominates: records of one shape (the same fields sent, of the same types)
    share one format string, so each line is its head and a single ``%``
    operation.  A float's ``%r`` ends in ``.0`` exactly when encode_record
    strips it, and the comma that follows every float in the template makes
    that strip one ``replace``.  A fractional size (``vcpus=0.25``) is such a
    float; one that is whole goes to encode_record, which writes it ``2i``.
    """
    templates = {}
    lines = []
    append = lines.append
    for record in records:
        kinds = tuple(map(type, record))
        template = templates.get(kinds, False)
        if template is False:
            template = templates[kinds] = _batch_template(kinds)
        if template is None:
            append(encode_record(record).encode("utf-8"))
            continue
        body, pick, last_is_float, sizes = template
        if sizes and any(_whole_or_not_finite(record[i]) for i in sizes):
            append(encode_record(record).encode("utf-8"))
            continue
        line = (body % pick(record)).replace(".0,", ",")
        if last_is_float:
            line = line.replace(", ", " ")
        append((_head(record) + " " + line).encode("utf-8"))
    return lines


def pack_lines(lines, limit=SAFE_DATAGRAM_SIZE):
    """Group encoded lines (``bytes`` each, no newline) into payloads <= limit bytes.

    A single line longer than the limit travels alone (the server accepts up
    to MAX_DATAGRAM_SIZE), so nothing is silently dropped here.
    """
    batch = []
    size = 0
    for line in lines:
        extra = len(line) + (1 if batch else 0)
        if batch and size + extra > limit:
            yield b"\n".join(batch)
            batch = []
            size = 0
            extra = len(line)
        batch.append(line)
        size += extra
    if batch:
        yield b"\n".join(batch)


# ---------------------------------------------------------------------------
# Control frames: signatures and TCP acknowledgement (docs/PROTOCOL.md)
# ---------------------------------------------------------------------------

SIG_PREFIX = b"#!sig1 "
SYNC_PREFIX = b"#!sync "
ACK_PREFIX = b"#!ack "
#: The server's refusal of a TCP batch: ``#!nak <token> <reason>`` (busy or auth); resend it.
NAK_PREFIX = b"#!nak "
NAK_BUSY = "busy"
NAK_AUTH = "auth"
#: A sender's request, once on a connection, that its acks name why records were rejected:
#: ``#!ack <token> <accepted> <rejected> <reason>=<count>[,<reason>=<count>...]``.  Asked for,
#: not sent to all: a sender written to the three-field ack (an older agent) took a fourth
#: field for a broken reply, and a server older than it ignores the line, as it ignores every
#: control line it does not know, and answers with three fields.
REASONS_REQUEST = b"#!reasons"
_REASON_RE = re.compile(br"[a-z][a-z0-9_]{0,31}\Z")


def format_reply(token, accepted=0, rejected=0, refused=None, reasons=None):
    """The server's answer to ``#!sync <token>``: an ack, or a nak when ``refused`` names why.

    ``reasons`` (``{reason: count}``), for a sender that asked (REASONS_REQUEST), is the
    rejected records' count by reason: an ack with rejected records names them in its fourth
    field.
    """
    if refused:
        return NAK_PREFIX + token + b" " + refused.encode("ascii") + b"\n"
    tail = ""
    if reasons and rejected:
        tail = " " + ",".join("%s=%d" % pair for pair in sorted(reasons.items()) if pair[1])
    return ACK_PREFIX + token + (" %d %d%s\n" % (accepted, rejected, tail)).encode("ascii")


def parse_reply(line):
    """``(token, accepted, rejected, refused)`` from one reply line (no newline), else None.

    An ack gives ``refused`` None; a nak gives the reason (``str``) and zero counts.  An ack's
    fourth field, the reasons (reply_reasons), is allowed and not read here.
    Anything else (noise, a truncated line) is None, never an exception.
    """
    if line.startswith(ACK_PREFIX):
        parts = line[len(ACK_PREFIX):].split(b" ")
        if len(parts) in (3, 4) and parts[0] and parts[1].isdigit() and parts[2].isdigit():
            return parts[0], int(parts[1]), int(parts[2]), None
    elif line.startswith(NAK_PREFIX):
        token, _sep, reason = line[len(NAK_PREFIX):].partition(b" ")
        if token:
            return token, 0, 0, reason.decode("ascii", "replace") or "unknown"
    return None


def reply_reasons(line):
    """``{reason: count}`` an ack names its rejected records by (format_reply), or ``{}``: an
    ack without reasons (a server older than them, or nothing rejected), a nak, noise.  A
    piece that is no ``reason=count`` is skipped."""
    parts = line[len(ACK_PREFIX):].split(b" ") if line.startswith(ACK_PREFIX) else ()
    reasons = {}
    if len(parts) == 4:
        for piece in parts[3].split(b","):
            name, _sep, count = piece.partition(b"=")
            if _REASON_RE.match(name) and count.isdigit():
                key = name.decode("ascii")
                reasons[key] = reasons.get(key, 0) + int(count)
    return reasons
#: A signed frame's timestamp may differ from the server clock by this much.
DEFAULT_SIG_WINDOW = 300


class SignatureError(ValueError):
    """A signed frame that cannot be accepted; ``reason`` names the cause."""

    def __init__(self, reason, detail, length=None):
        ValueError.__init__(self, "%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail
        #: The payload length a broken header still gives (a stream reader refuses that many
        #: bytes with it), else None.
        self.length = length


S_MALFORMED = "sig_malformed"
S_UNSIGNED = "sig_missing"
S_UNKNOWN_KEY = "sig_unknown_key"
S_BAD = "sig_bad"
S_STALE = "sig_stale"
S_REPLAY = "sig_replay"
#: A signed record for a VM its key is not bound to (the server's key file binds keys to VMs).
S_UNBOUND = "sig_vm_not_bound"
SIGNATURE_REASONS = (S_MALFORMED, S_UNSIGNED, S_UNKNOWN_KEY, S_BAD, S_STALE, S_REPLAY, S_UNBOUND)


def _sig_message(key_id, ts, nonce, payload):
    return b"sig1 " + key_id + b" " + ts + b" " + nonce + b"\n" + payload


def sign_payload(key_id, secret, payload, now=None, nonce=None):
    """Wrap ``payload`` (bytes) in a signed frame.

    Frame: ``#!sig1 <key_id> <unix_ts> <nonce> <length> <hmac_hex>\\n`` then
    exactly ``length`` payload bytes.  The HMAC-SHA256 covers key id,
    timestamp, nonce and the payload, so none can be altered or replayed
    outside the window.
    """
    # hashlib/hmac load OpenSSL (~4 MiB resident): imported only by those who
    # sign or verify, so an agent without a key stays small (bench/agent.py).
    import hashlib
    import hmac
    import time
    if isinstance(key_id, str):
        key_id = key_id.encode("ascii")
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    ts = str(int(now if now is not None else time.time())).encode("ascii")
    nonce = nonce or os.urandom(8).hex().encode("ascii")
    mac = hmac.new(secret, _sig_message(key_id, ts, nonce, payload), hashlib.sha256).hexdigest()
    header = b" ".join((SIG_PREFIX.rstrip(), key_id, ts, nonce, str(len(payload)).encode("ascii"),
                        mac.encode("ascii")))
    return header + b"\n" + payload


def split_signed(data):
    """Split a signed frame into ``(key_id, ts, nonce, mac, payload, rest)``.

    ``rest`` is what follows the frame (more stream data over TCP).  Raises
    SignatureError(S_MALFORMED) on a broken header; returns ``None`` when the
    data does not start with a signature header (an unsigned payload), and
    ``False`` when the header is complete but the payload is not yet (TCP).
    """
    if not data.startswith(SIG_PREFIX):
        return None
    end = data.find(b"\n")
    if end < 0:
        if len(data) > 512:
            raise SignatureError(S_MALFORMED, "signature header too long")
        return False
    parts = data[:end].split(b" ")
    length = int(parts[4]) if len(parts) == 6 and parts[4].isdigit() else None
    if length is not None and length > MAX_DATAGRAM_SIZE:
        raise SignatureError(S_MALFORMED, "signed payload of %d bytes is too large" % length)
    if length is None or not parts[2].isdigit() or len(parts[5]) != 64:
        raise SignatureError(S_MALFORMED, "bad signature header", length)
    start = end + 1
    if len(data) < start + length:
        return False
    return (parts[1], parts[2], parts[3], parts[5], data[start:start + length],
            data[start + length:])


class SignatureVerifier(object):
    """Checks signed frames against a key table, with a time window and replay cache."""

    def __init__(self, keys, window=DEFAULT_SIG_WINDOW, clock=None):
        import hashlib
        import hmac
        import time
        self._hmac = hmac
        self._sha256 = hashlib.sha256
        self.keys = dict((k.encode("ascii") if isinstance(k, str) else k,
                          v.encode("utf-8") if isinstance(v, str) else v) for k, v in keys.items())
        self.window = window
        self.clock = clock or time.time
        self._seen = {}

    def verify(self, key_id, ts, nonce, mac, payload, now=None):
        """Return None if the frame is authentic and fresh, else raise SignatureError."""
        secret = self.keys.get(key_id)
        if secret is None:
            raise SignatureError(S_UNKNOWN_KEY, "unknown key id %r" % key_id[:40])
        expected = self._hmac.new(secret, _sig_message(key_id, ts, nonce, payload),
                                  self._sha256).hexdigest().encode("ascii")
        if not self._hmac.compare_digest(expected, mac):
            raise SignatureError(S_BAD, "signature does not match")
        if now is None:
            now = self.clock()
        stamp = int(ts)
        if abs(stamp - now) > self.window:
            raise SignatureError(S_STALE, "signed %ds from server time" % (stamp - now))
        token = (key_id, nonce)
        if token in self._seen:
            raise SignatureError(S_REPLAY, "nonce already used")
        if len(self._seen) > 1000000:
            self._expire(now)
        self._seen[token] = stamp
        return None

    def _expire(self, now):
        horizon = now - self.window
        self._seen = dict((k, v) for k, v in self._seen.items() if v >= horizon)


def load_keys(path):
    """Read a key file: one ``key_id secret`` pair per line, ``#`` comments.

    Raises ValueError with a readable message, naming the file, on a malformed
    one.  A damaged file (bytes that are not UTF-8, a NUL or other control
    character inside the secret) is refused here: loaded, it would only sign
    with a key the server does not share, and every batch would be refused.
    A byte order mark (an editor's) is skipped, as in the agent's other files:
    it stopped the agent with "expected 'key_id secret'" on a line that is one.
    """
    keys = {}
    try:
        with open(path, "r", encoding="utf-8-sig") as handle:
            text = handle.read()
    except UnicodeDecodeError as exc:
        raise ValueError("%s: not UTF-8 text (byte %d)" % (path, exc.start))
    for number, line in enumerate(text.split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not _TOKEN_RE.match(parts[0]):
            raise ValueError("%s:%d: expected 'key_id secret'" % (path, number))
        if not parts[1].isprintable():
            raise ValueError("%s:%d: the secret holds control characters" % (path, number))
        keys[parts[0]] = parts[1]
    if not keys:
        raise ValueError("%s: no keys" % path)
    return keys
