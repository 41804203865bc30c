"""How a record's time is written in every output: ISO 8601 in UTC, to the second.

The report (first and last seen, its window), the backtest and capacity's
demand (a VM last heard from) name times alike, so a reader can match them
across files; this module imports nothing of vmstats, so any of them can
import it at the top without a cycle or the report's weight.
"""

import datetime

#: A stamp that stands for "no time" in an int64 column (its largest value): written as "".
NO_STAMP = (1 << 63) - 1


def iso(ts: float) -> str:
    """``2026-12-06T02:33:14Z`` for Unix seconds ``ts``; "" for none (0, NaN or NO_STAMP)."""
    if not ts or ts != ts or ts >= NO_STAMP:
        return ""
    return datetime.datetime.fromtimestamp(int(ts), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
