"""The form a record takes while the server holds it, and its conversion to a log row.

Held: ``host,<fields in protocol.FIELDS order>`` under the key ``ts`` -- exactly
the regex's groups between the VM id and the timestamp, joined with commas,
so the receive path builds it with one C-level join.  The timestamp is not
repeated (it is the key), which saves ~11 bytes per held record.  The writer
process turns it into the ``logstore.COLUMNS`` row (``ts,<fields>,host``),
off the reactor.
"""

from vmstats import logstore
from vmstats.protocol import FIELD_NAMES, Record

# The held form relies on this column order; fail at import, not in a log file.
assert logstore.COLUMNS == ("ts",) + FIELD_NAMES + ("host",)


def held_from_record(record: Record) -> bytes:
    """The held form of a record the general decoder produced."""
    _ts, rest = logstore.format_row(record).split(b",", 1)
    fields, _, host = rest.rpartition(b",")  # a host tag never contains a comma
    return host + b"," + fields


def log_row(ts: int, held: bytes) -> bytes:
    """The log row of one held record."""
    host, _, fields = held.partition(b",")
    return b"%d,%s,%s" % (ts, fields, host)


def log_rows(rows: dict[int, bytes]) -> dict[int, bytes]:
    """``{ts: held}`` to ``{ts: log row}`` for ``logstore.append_rows``."""
    return {ts: log_row(ts, held) for ts, held in rows.items()}
