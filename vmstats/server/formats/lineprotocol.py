"""InfluxDB line protocol in full: escapes, quoted strings, typed fields, optional timestamps.

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

As the InfluxDB reference defines it: measurement names escape ``\\,`` and
``\\ ``; tag keys, tag values and field keys escape ``\\,``, ``\\=`` and
``\\ ``; field values are floats (``1``, ``-1.5``, ``1e3``), integers
(``1i``), unsigned integers (``1u``), booleans (``t``, ``T``, ``true``,
``True``, ``TRUE`` and the same for false) or double-quoted strings that
escape ``\\"`` and ``\\\\``; the timestamp is an integer in the precision the
writer names (nanoseconds unless told otherwise) and may be left out, in
which case the receiver's time is used.

Most lines (Telegraf's among them) have neither escapes nor strings: those
are split with ``bytes.split`` and checked by one compiled regex, and only
the fields a caller asks for are converted (``number``).  Any other line goes
through a character scanner that gives the same result.
"""

import math
import re

from vmstats.server.formats import R_NON_FINITE, R_SYNTAX, R_TYPE, Words

#: Divisors from a timestamp in a precision to seconds (v1 and v2 spellings).
PRECISIONS = {"ns": 1e9, "n": 1e9, "us": 1e6, "u": 1e6, "ms": 1e3, "s": 1.0, "m": 1 / 60,
              "h": 1 / 3600}

_EXPONENT = rb"[eE][-+]?\d+"
# One alternative per leading character class, so a value is matched without backtracking
# (a tenth of the cost of trying a float, then an integer, then an unsigned).
_VALUE = (rb"(?:-?\d+(?:\.\d*(?:%s)?|%s|i)?|\d+u|-?\.\d+(?:%s)?"
          rb"|t(?:rue)?|T(?:rue|RUE)?|f(?:alse)?|F(?:alse|ALSE)?)" % (_EXPONENT, _EXPONENT, _EXPONENT))
_PLAIN_FIELDS = re.compile(rb"[^,= ]+=%s(?:,[^,= ]+=%s)*" % (_VALUE, _VALUE))
_PLAIN_TAG = re.compile(rb"[^,= ]+=[^,= ]+")
_PLAIN_FIELD = rb'[^=,\s\\"]+=%s' % _VALUE
#: A whole plain line (no escapes, no strings), for ``findall`` over a payload:
#: (measurement, ",tags" or b"", fields, timestamp or b"").
PLAIN_LINE = re.compile(rb'^([^,\s\\"]+)((?:,[^=,\s\\"]+=[^=,\s\\"]+)*) (%s(?:,%s)*)'
                        rb'(?: (-?\d{1,19}))?\r?$' % (_PLAIN_FIELD, _PLAIN_FIELD), re.M)
_TRUE = frozenset((b"t", b"T", b"true", b"True", b"TRUE"))
_FALSE = frozenset((b"f", b"F", b"false", b"False", b"FALSE"))

#: The words of ``parse_line``'s faults on a line without escapes or strings, in the order of
#: the C reader's codes for them (_influxscan.c's ``syntax_fault``, 1 on): it finds the fault
#: of such a line as ``parse_line`` does, and ``fault`` words it.  A str, or a form that names
#: the start of the text at fault.
FAULTS = ("expected 'measurement[,tags] fields [timestamp]'", "empty timestamp",
          "timestamp %r is not an integer", "empty measurement", "tag %r is not key=value",
          "fields %r are not key=value,...")
_PARTS, _EMPTY_STAMP, _STAMP, _EMPTY_MEASUREMENT, _TAG, _FIELDS = FAULTS

#: (measurement, tags, fields, timestamp or None); raw field values are bytes until converted.
Point = tuple[bytes, dict[bytes, bytes], dict[bytes, object], int | None]


class LineError(ValueError):
    """A line that is not line protocol; ``reason`` is the counter it is filed under.

    ``detail`` is most often ``Words``, worded only if read: a flood of malformed lines is
    counted whole but logged ten lines in ten seconds (formats.Words)."""

    def __init__(self, reason: str, detail: "str | Words"):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return "%s: %s" % (self.reason, self.detail)


def parse_line(line: bytes, repeated: list | None = None) -> Point:
    """One line (no newline) as a Point; raises LineError, whatever the input.

    A key given twice keeps its last value in the Point; ``repeated`` (if given) gets
    ``("tag", key)`` or ``("field", key)`` for each such key, for a reader that refuses a line
    giving twice a key it reads (which value was meant, no one knows) and ignores the rest.
    """
    if line[-1:] == b"\r":
        line = line[:-1]
    if b"\\" in line or b'"' in line:
        return _scan(line, repeated)
    parts = line.split(b" ")
    if len(parts) == 2:
        head, body = parts
        stamp = None
    elif len(parts) == 3:
        head, body, text = parts
        stamp = _timestamp(text)
    else:
        raise LineError(R_SYNTAX, _PARTS)
    tags = head.split(b",")
    measurement = tags[0]
    if not measurement:
        raise LineError(R_SYNTAX, _EMPTY_MEASUREMENT)
    tag_map = {}
    for tag in tags[1:]:
        if not _PLAIN_TAG.fullmatch(tag):
            raise LineError(R_SYNTAX, Words(_clipped, _TAG, tag))
        key, _sep, value = tag.partition(b"=")
        if repeated is not None and key in tag_map:
            repeated.append(("tag", key))
        tag_map[key] = value
    if not _PLAIN_FIELDS.fullmatch(body):
        raise LineError(R_SYNTAX, Words(_clipped, _FIELDS, body))
    pairs = body.split(b",")
    fields = dict(field.split(b"=", 1) for field in pairs)
    if repeated is not None and len(fields) < len(pairs):
        seen: set[bytes] = set()
        for field in pairs:
            key = field.partition(b"=")[0]
            if key in seen:
                repeated.append(("field", key))
            seen.add(key)
    return measurement, tag_map, fields, stamp


def fault(code: int, text: bytes) -> "str | Words":
    """The words ``parse_line`` gives its fault ``code`` (1 on, ``FAULTS``') naming ``text``."""
    form = FAULTS[code - 1]
    return Words(_clipped, form, text) if "%r" in form else form


def lines(data: bytes) -> int:
    """How many lines of ``data`` are line protocol to read: not blank, not a ``#`` comment."""
    return sum(1 for line in data.split(b"\n") if line and line[:1] != b"#" and not line.isspace())


def plain_value(text: bytes, key: bytes, what: str = "tag") -> bytes | None:
    """The value after ``key`` (``b",name="``) in ``b"," + tags`` or ``b"," + fields``
    (``what``); LineError (``syntax``) if the key is given twice, as ``parse_line``'s
    ``repeated`` would say (a plain value holds no ``,`` or ``=``: a second match is a key)."""
    start = text.find(key)
    if start < 0:
        return None
    start += len(key)
    end = text.find(b",", start)
    if end < 0:
        return text[start:]
    if text.find(key, end) >= 0:
        raise twice(what, key[1:-1])
    return text[start:end]


def twice(what: str, key: bytes) -> LineError:
    """The error of a line giving a tag or field it is read for twice."""
    return LineError(R_SYNTAX, Words(_twice_words, what, key))


def number(value) -> float:
    """A field's value as a number (float, integer or unsigned); LineError for strings/booleans."""
    if type(value) is bytes:
        last = value[-1:]
        if last == b"i" or last == b"u":
            return int(value[:-1])
        if value in _TRUE or value in _FALSE:
            raise LineError(R_TYPE, "boolean where a number is needed")
        result = float(value)
        if result != result or result in (math.inf, -math.inf):
            raise LineError(R_NON_FINITE, Words(_clipped, "%r is not finite", value))
        return result
    if type(value) in (bool, str):
        raise LineError(R_TYPE, Words("%s where a number is needed", type(value).__name__))
    return value


def typed(value):
    """A field's value as Python sees it: float, int, bool or str."""
    if type(value) is bytes:
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        return number(value)
    return value


def _timestamp(text: bytes) -> int:
    if not text:
        raise LineError(R_SYNTAX, _EMPTY_STAMP)
    digits = text[1:] if text[:1] == b"-" else text
    if not digits.isdigit() or len(digits) > 19:
        raise LineError(R_SYNTAX, Words(_clipped, _STAMP, text))
    return int(text)


def _clip(data: bytes) -> str:
    return data[:40].decode("utf-8", "replace")


def _clipped(form: str, data: bytes) -> str:
    """A refusal's words naming the start of what it refuses (a ``Words`` form)."""
    return form % _clip(data)


def _twice_words(what: str, key: bytes) -> str:
    return "%s %r given twice" % (what, _clip(key))


# -- the slow path: escapes and quoted strings -------------------------------------------------
def _scan(line: bytes, repeated: list | None = None) -> Point:
    """A character scanner for lines with escapes or strings (the fast path's equal)."""
    measurement, pos = _token(line, 0, b", ")
    if not measurement:
        raise LineError(R_SYNTAX, _EMPTY_MEASUREMENT)
    tags = {}
    while pos < len(line) and line[pos:pos + 1] == b",":
        key, pos = _token(line, pos + 1, b",= ")
        if not key or line[pos:pos + 1] != b"=":
            raise LineError(R_SYNTAX, "tag without key=value")
        value, pos = _token(line, pos + 1, b",= ")
        if not value:
            raise LineError(R_SYNTAX, Words(_clipped, "tag %r has no value", key))
        if repeated is not None and key in tags:
            repeated.append(("tag", key))
        tags[key] = value
    if line[pos:pos + 1] != b" ":
        raise LineError(R_SYNTAX, "no fields")
    fields: dict[bytes, object] = {}
    pos += 1
    while True:
        key, pos = _token(line, pos, b",= ")
        if not key or line[pos:pos + 1] != b"=":
            raise LineError(R_SYNTAX, "field without key=value")
        pos += 1
        if repeated is not None and key in fields:
            repeated.append(("field", key))
        if line[pos:pos + 1] == b'"':
            value, pos = _string(line, pos + 1)
            fields[key] = value
        else:
            end = pos
            while end < len(line) and line[end:end + 1] not in (b",", b" "):
                end += 1
            raw = line[pos:end]
            if not re.fullmatch(_VALUE, raw):
                raise LineError(R_SYNTAX, Words(_clipped, "field %r has no valid value", key))
            fields[key] = raw
            pos = end
        if line[pos:pos + 1] == b",":
            pos += 1
            continue
        break
    if pos == len(line):
        return measurement, tags, fields, None
    if line[pos:pos + 1] != b" ":
        raise LineError(R_SYNTAX, "unexpected character after fields")
    return measurement, tags, fields, _timestamp(line[pos + 1:])


def _token(line: bytes, pos: int, stops: bytes) -> tuple[bytes, int]:
    """Read up to an unescaped stop character; a backslash escapes the next byte if it is one."""
    out = bytearray()
    escapable = stops + b"\\"
    end = len(line)
    while pos < end:
        byte = line[pos:pos + 1]
        if byte == b"\\" and pos + 1 < end and line[pos + 1:pos + 2] in escapable:
            out += line[pos + 1:pos + 2]
            pos += 2
            continue
        if byte in stops:
            break
        out += byte
        pos += 1
    return bytes(out), pos


def _string(line: bytes, pos: int) -> tuple[str, int]:
    """A quoted field value from after its opening quote; returns it and the position past it."""
    out = bytearray()
    end = len(line)
    while pos < end:
        byte = line[pos:pos + 1]
        if byte == b"\\" and line[pos + 1:pos + 2] in (b'"', b"\\"):
            out += line[pos + 1:pos + 2]
            pos += 2
            continue
        if byte == b'"':
            try:
                return out.decode("utf-8"), pos + 1
            except UnicodeDecodeError:
                raise LineError(R_SYNTAX, "string field is not UTF-8") from None
        out += byte
        pos += 1
    raise LineError(R_SYNTAX, "unterminated string field")
