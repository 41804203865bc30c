"""The one writer of the CSV files people open in a spreadsheet, and the guard of their cells.

report.csv, statement.csv, backtest.csv, headroom.csv and the simulator's
truth file carry text from the operator's own files (policy group names,
exclusion reasons, price book sizes and currency, inventory host names) and
from agents' tags.  A spreadsheet runs a cell that begins with ``=``, ``+``,
``-`` or ``@`` as a formula (and one that begins with a tab or a carriage
return after stripping it): ``=HYPERLINK(...)`` in an exclusion reason would
be a live link, ``-2+3+cmd|...`` a command, in the operator's own bill.  Such
text is written with a leading ``'`` (OWASP's advice), which the spreadsheet
shows as the text it is.  Numbers are written as numbers: a negative saving
stays -12.5, and text that is exactly a number ("-5") is left as it is, since
a spreadsheet reads it as that number and nothing else.  Text that only looks like a
number, a date or a truth value (a tag ``0012``, ``1E5``, ``3-4``, ``TRUE``) is written as it
is, never as ``="0012"``: that would be the wrong value for every program reading the file as
CSV.  docs/REPORT.md ("Reading the CSV files") says how to read such columns as text.
"""

import csv
import math
import re
from collections.abc import Iterable
from typing import Any, TextIO

#: First characters a spreadsheet takes for the start of a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")


def cell(value: Any) -> Any:
    """``value`` as a CSV cell: empty for None or NaN, text a formula could start quoted by ``'``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER_RE.match(value):
        return "'" + value
    return value


class Writer:
    """csv.writer (RFC 4180, ``\\n`` line ends) whose every cell goes through ``cell``."""

    def __init__(self, handle: TextIO) -> None:
        self._writer = csv.writer(handle, lineterminator="\n")

    def writerow(self, cells: Iterable[Any]) -> None:
        self._writer.writerow([cell(value) for value in cells])


def writer(handle: TextIO) -> Writer:
    """The writer every CSV file of vmstats is written with (open ``handle`` with ``newline=""``)."""
    return Writer(handle)
