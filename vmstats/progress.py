"""Progress of long commands (simulate, replay, report) on stderr.

On a terminal one line is redrawn in place.  Anywhere else (a log file, CI,
a systemd unit's journal) a line is written every ``interval`` seconds, so a
run of an hour shows it is alive without flooding the log, and a short run
(every test) writes none.  ``VMSTATS_PROGRESS_SECONDS`` sets the interval
(default 30; 0 or less: no periodic lines); it is read once per command.
"""

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

ENV = "VMSTATS_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def interval_from_env() -> float:
    """The periodic interval in seconds; a value that is not a number gets the default."""
    try:
        return float(os.environ.get(ENV, DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL


class Progress:
    """Counts of one long task, shown live on a terminal or as periodic lines elsewhere.

    ``what`` names the command (the line's prefix) and ``unit`` what is
    counted; ``total`` may be unknown (None).  Tasks with a ``total`` below
    ``quiet_below`` show nothing: a small run is over before a line helps.
    """

    def __init__(
        self,
        what: str,
        unit: str,
        stream: TextIO | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        quiet_below: int = 0,
    ) -> None:
        self.what = what
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty()
        self.interval = interval_from_env() if interval is None else interval
        self.clock = clock
        self.started = clock()
        self.last_line = self.started
        self.done = 0
        self.total: int | None = None
        self.drawn = 0  # width of the live line on the terminal
        self.quiet_below = quiet_below

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        if self.total is not None and self.total < self.quiet_below:
            return
        now = self.clock()
        if self.live:
            text = self.text(now)
            self.stream.write("\r" + text.ljust(self.drawn))
            self.stream.flush()
            self.drawn = len(text)
        elif self.interval > 0 and now - self.last_line >= self.interval:
            self.stream.write(self.text(now) + "\n")
            self.stream.flush()
            self.last_line = now

    def __call__(self, done: int, total: int | None = None) -> None:
        self.update(done, total)

    def text(self, now: float) -> str:
        elapsed = now - self.started
        count = "%d/%d" % (self.done, self.total) if self.total else "%d" % self.done
        rate = " (%.0f/s)" % (self.done / elapsed) if elapsed > 0 else ""
        return "%s: %s %s after %.0f s%s" % (self.what, count, self.unit, elapsed, rate)

    def elapsed(self) -> float:
        return self.clock() - self.started

    def close(self, line: str | None = None) -> None:
        """End the live line (if drawn) and write ``line``, a closing summary, if given.

        Nothing at all when nothing was counted or the task was too small to show.
        """
        if self.total is None and not self.done or (self.total or 0) < self.quiet_below:
            return
        if self.drawn:
            self.stream.write("\r" + (line or "").ljust(self.drawn) + "\n")
        elif line:
            self.stream.write(line + "\n")
        self.stream.flush()
