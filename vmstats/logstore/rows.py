"""What a row of a day file holds: its columns, header and types, and its bytes as written.

Each day file is CSV with a header line, one row per minute record.  An empty
cell is an unknown value (the agent did not send it), never zero.  The writer
(append.py), the readers (text.py, read.py, labels.py) and the columnar tier
(tiers.py) take the columns from here, so they can never disagree.
"""

from vmstats.protocol import FIELD_NAMES, FIELDS, Record, format_float, format_tags

LOG_VERSION = 2
#: ``tags`` (version 2) is the record's extra tags as ``key=value;key=value``; a row without
#: extra tags ends after ``host``, so it is byte for byte a version-1 row, and version-1
#: files (whose header lacks ``tags``) read as rows without tags.
COLUMNS = ("ts",) + FIELD_NAMES + ("host", "tags")
HEADER = (",".join(COLUMNS) + "\n").encode("ascii")
#: The header of version-1 files, still read.
HEADER_V1 = (",".join(COLUMNS[:-1]) + "\n").encode("ascii")
#: Columns that hold text, not numbers.
TEXT_COLUMNS = ("host", "tags")
#: Separator of the ``tags`` cell's pairs (never in a key or value: protocol.check_tags).
TAGS_SEPARATOR = ";"
#: Commas in a row without tags, and in one with tags: the two shapes of a whole row.
UNTAGGED_COMMAS = len(COLUMNS) - 2
TAGGED_COMMAS = len(COLUMNS) - 1
ROW_COMMAS = (UNTAGGED_COMMAS, TAGGED_COMMAS)
#: Bytes that no row the flusher writes holds (VM ids and host names are safe tokens), and
#: that pandas would read differently from the lines: a quote makes it read on to the next
#: quote, across lines ("EOF inside string"; text.py's parsers are told to take quotes as
#: plain cells), and a carriage return ends a line for it.  A line holding one is malformed.
FOREIGN = (b'"', b"\r")
#: pandas dtypes for reading; integers are nullable because fields are optional.
DTYPES = dict([("ts", "int64")] + [(name, "Int64" if is_int else "float64")
                                   for name, is_int, _lo, _hi, _req, _places in FIELDS]
              + [(name, "string") for name in TEXT_COLUMNS])


def strip_header(data: bytes) -> bytes:
    """A day file's bytes without its header line, of either version (none if it has none)."""
    if data.startswith(HEADER):
        return data[len(HEADER):]
    return data[len(HEADER_V1):] if data.startswith(HEADER_V1) else data


def well_formed(line: bytes) -> bool:
    """A line with a row's shape: the right number of cells, no byte a row never holds."""
    return (line.count(b",") in ROW_COMMAS and line not in (HEADER[:-1], HEADER_V1[:-1])
            and not any(byte in line for byte in FOREIGN))


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format_float(value)
    return str(value)


def format_tail(record: Record) -> bytes:
    """A Record's log row without its leading ``ts,``: what append_missing is given.

    The server holds records in this form under their timestamp (so it is not
    stored twice), and the row is completed only as it is written.
    """
    cells = [_cell(getattr(record, name)) for name in FIELD_NAMES] + [record.host or ""]
    if record.tags:
        cells.append(format_tags(record.tags, TAGS_SEPARATOR))
    return ",".join(cells).encode("utf-8")


def format_row(record: Record) -> bytes:
    """One log row (no newline) for a Record, columns in COLUMNS order."""
    return b"%d,%s" % (record.ts, format_tail(record))
