"""How a time is written in every output: ISO 8601 in UTC, to the second.

The report (first and last seen, its window), the backtest, capacity's demand
(a VM last heard from), /status's last-seen table, the rules' notifications,
action log listing and mutes all name times alike, so a reader can match them
across files; this module imports nothing of vmstats, so any of them can
import it at the top without a cycle or the report's weight.
"""

import time

#: A stamp that stands for "no time" in an int64 column (its largest value): written as "".
NO_STAMP = (1 << 63) - 1
#: ``2026-12-06T02:33:14Z``.
FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso(ts: float) -> str:
    """A record's stamp: ``2026-12-06T02:33:14Z`` for Unix seconds ``ts``; "" for none (0, NaN
    or NO_STAMP), as an empty cell of a column says "never"."""
    if not ts or ts != ts or ts >= NO_STAMP:
        return ""
    return moment(int(ts))


def moment(at: float) -> str:
    """A time of day that is always one (a mute's end, an alert's start, an entry of the
    action log): ``2026-12-06T02:33:14Z``, the second it falls in; 0 is 1970's first."""
    return time.strftime(FORMAT, time.gmtime(at))
