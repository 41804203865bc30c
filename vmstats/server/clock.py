"""The server's two clocks: a monotonic one for every delay, the wall clock for every stamp.

Twisted times its calls by ``time.time()``.  When NTP (or an operator's ``date -s``) steps the
wall clock back by an hour, every timed call of the server waits that hour longer: no flush, no
fsync of the journal, no minute completed, no rule ticked, no watchdog, and ``--duration``
runs an hour too long; a step forward fires them all at once.  ``install`` makes the reactor
time its calls by ``time.monotonic()``, which steps never move, so ``reactor.seconds()`` is a
monotonic reading in the server and serves durations only (idle timeouts, watchdogs, holds).

What is a time of day -- a record's arrival against its stamp (``--max-past``,
``--max-future``), the minutes of other agents, the action log's ``at`` -- is ``time.time()``.
``WallClock`` is ``time.time()`` that also notices a step (the server reads it every second
and at each rule tick; a payload reads ``time.time()`` alone, a third of the cost): the offset
between the wall and the monotonic clock only moves when the wall clock is stepped (both are
slewed alike by NTP), so a change of more than ``STEP_SECONDS`` is logged once, counted
(``vmstats_clock_steps_total``) and told to the parts that keep a time of day as the start of
a duration (``on_step``), which move it by the step instead of waiting the step out or firing
at once.
"""

import logging
import time
from collections.abc import Callable

from vmstats import protocol
from vmstats.protocol import FIRST_STAMP
from vmstats.stamps import moment

log = logging.getLogger(__name__)

#: A change of the wall clock's offset from the monotonic clock larger than this is a step.
#: NTP slews smaller errors (ntpd steps from 0.128 s, chrony's ``makestep`` from 1 s); a
#: leap second is a 1-second step and changes nothing worth telling.
STEP_SECONDS = 1.0


def window_reason(ahead: bool) -> str:
    """The reason a stamp outside the time window is refused for, without its words: the one
    place the choice is made, for ``outside_window`` and for the refusals worded only when
    read (the edge's minutes) or worded otherwise (a journaled payload's stamps)."""
    return protocol.R_FUTURE if ahead else protocol.R_PAST


def outside_window(ts: float, now: float, ahead: bool, max_future: int, max_past: int,
                   vm: str | None = None, minute: bool = False) -> tuple[str, str]:
    """The reason and the words for a stamp refused for the time window, whichever path
    refused it (native records by the C reader's regexes or the decoder, other agents'
    samples by the C loop or its Python): which way, by how much, which limit and its value,
    the stamp and the clock.  Built only for a refusal, never on the way of a record taken.

    A VM stamping ahead of the server has a clock that is off (or the server's is); one
    behind, more often, records that waited (an agent's spool through an outage).  The
    operator reads by how much and against which setting, not two epoch numbers to
    subtract.  ``minute``: a sample refused because the minute it makes would end past the
    limit (the edge's minutes, formats/minutes.py), though the sample itself is not.
    """
    who = "stamped" if vm is None else "vm %s stamped" % vm
    reason = window_reason(ahead)
    if not ahead and ts < FIRST_STAMP:
        # Refused whatever --max-past (protocol.FIRST_STAMP): the words name no limit of 0.
        return reason, (
            "%s %d, before %s, the first moment a stamp is taken from: a clock not set since "
            "boot (counting from 1970) or a stamp left unset, not a time measured; refused "
            "whatever --max-past (server time %d)" % (who, ts, moment(FIRST_STAMP), now))
    if ahead:
        edge = ": its minute would end past" if minute else ", past"
        return reason, (
            "%s %.0fs ahead of this server's clock%s --max-future %ds (timestamp %d, server time "
            "%d): the VM's clock or the server's is off" % (who, ts - now, edge, max_future, ts, now))
    return reason, (
        "%s %.0fs before this server's clock, past --max-past %ds (timestamp %d, server time %d)"
        % (who, now - ts, max_past, ts, now))


def install(reactor) -> None:
    """Time ``reactor``'s calls by the monotonic clock; before any call is scheduled on it."""
    if reactor.getDelayedCalls():
        raise RuntimeError("the reactor's clock is changed before anything is scheduled on it")
    reactor.seconds = time.monotonic


class WallClock:
    """``time.time()``, which notices steps of the wall clock and tells ``on_step`` listeners.

    Read every second (``Every``), so a step is noticed within a second whether or not
    anything arrives; not per payload, where its ~180 ns (three clock reads) would cost a
    one-record datagram a few per cent.
    """

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 threshold: float = STEP_SECONDS):
        self.wall = wall
        self.monotonic = monotonic
        self.threshold = threshold
        self.offset = wall() - monotonic()
        #: Steps seen, and the last one in seconds (negative: back).
        self.steps = 0
        self.last_step = 0.0
        #: Called with the step in seconds (negative: back) once it is noticed.
        self.on_step: list[Callable[[float], object]] = []

    def __call__(self) -> float:
        before = self.monotonic()
        now = self.wall()
        step = now - before - self.offset
        if step > self.threshold or step < -self.threshold:
            if self.monotonic() - before > self.threshold / 2:
                # The thread stood still between the two reads (another held the GIL for a
                # second): that is not a step, and the next reading tells.
                return now
            self.offset += step
            self.steps += 1
            self.last_step = step
            log.warning("the wall clock stepped %s by %.1fs (NTP, or set by hand): schedules "
                        "and rule timers keep their intervals; records are judged by the new "
                        "time", "forward" if step > 0 else "back", abs(step))
            for listener in self.on_step:
                listener(step)
        return now

    def families(self) -> list:
        """The /metrics families of the steps seen."""
        return [("clock_steps_total", "counter",
                 "Steps of the server's wall clock (NTP, or set by hand) of more than 1 s.",
                 [((), self.steps)]),
                ("clock_last_step_seconds", "gauge",
                 "The last such step in seconds (negative: back; 0: none since start).",
                 [((), round(self.last_step, 3))])]
