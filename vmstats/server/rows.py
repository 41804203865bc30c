"""The form a record takes while the server holds it, and its conversion to a log row.

Held: ``<fields in protocol.FIELDS order>,host`` under the key ``ts`` -- the
``logstore.COLUMNS`` row without its leading ``ts,``.  The receive path builds
it from the regex's groups with one C-level join (fields, then the host tag),
the timestamp is not repeated (it is the key, which saves ~11 bytes per held
record), and the writer process makes the log row with one ``%`` per row,
mapped in C over a VM's rows, off the reactor.
"""

from vmstats import logstore
from vmstats.protocol import FIELD_NAMES, Record

# The held form relies on this column order; fail at import, not in a log file.
assert logstore.COLUMNS == ("ts",) + FIELD_NAMES + ("host",)

_LOG_ROW = b"%d,%s"


def held_from_record(record: Record) -> bytes:
    """The held form of a record the general decoder produced."""
    return logstore.format_row(record).split(b",", 1)[1]


def log_rows(rows: dict[int, bytes]) -> dict[int, bytes]:
    """``{ts: held}`` to ``{ts: log row}`` for ``logstore.append_rows``."""
    return dict(zip(rows, map(_LOG_ROW.__mod__, rows.items()), strict=True))
