"""The form a record takes while the server holds it.

Held: ``<fields in protocol.FIELDS order>,host`` under the key ``ts`` -- the
log row without its leading ``ts,`` (``logstore.format_tail``).  The receive
path builds it from the regex's groups with one C-level join (fields, then
the host tag), the timestamp is not repeated (it is the key, which saves ~11
bytes per held record), and the writer process hands it to
``logstore.append_missing`` as it is, which completes each row as it writes it.
"""

from vmstats import logstore
from vmstats.protocol import FIELD_NAMES, Record

# The held form relies on this column order; fail at import, not in a log file.
assert logstore.COLUMNS == ("ts",) + FIELD_NAMES + ("host",)


def held_from_record(record: Record) -> bytes:
    """The held form of a record the general decoder produced."""
    return logstore.format_tail(record)
