"""The receive path's reactor half: parsed columns into the buffer, in arrival order.

Parsing (``parse.py``) needs no server state, so under load it runs in parser
processes (``parsers.py``) on the other cores while the reactor only reads
sockets and files the results.  Results come back out of order; they are
applied in the order the payloads arrived, so a later record for the same
(vm, ts) still replaces an earlier one and a TCP ``#!sync`` (queued with
``after``) is answered once everything before it, and nothing after it, is
counted.  Filing is C-level ``map`` calls over the columns, no Python loop per
record, unless a cap or a sequence gap needs the careful path.
"""

import logging
import time
from collections import deque
from collections.abc import Callable
from itertools import compress, repeat
from operator import setitem, sub

from twisted.internet import defer

from vmstats import protocol
from vmstats.server.buffer import Buffer
from vmstats.server.idle import IdleWaiters
from vmstats.server.journal import rejected_line
from vmstats.server.metrics import Metrics, RateLimitedLog
from vmstats.server.parse import NO_LIMIT, Parsed, Parser
from vmstats.server.senders import Senders

log = logging.getLogger(__name__)

#: Rejects that depend on when a record came (its stamp against the clock then), which a
#: replay, long after, cannot judge by itself.
TIME_REASONS = frozenset((protocol.R_FUTURE, protocol.R_PAST))
#: A control line before a journaled payload that had such rejects: ``#!window <lo> <hi>``,
#: the lowest and highest stamps of its records the live path took.  Every line it refused for
#: its time lies outside them (outside the window then, which holds them all) and every line
#: it took inside, so the replay (replay.py), which parses the payload up to the next control
#: line (its ``#!rejected`` line) within them, refuses exactly those lines, whatever the clock
#: or ``--max-future``/``--max-past`` at the restart.
WINDOW_PREFIX = b"#!window "

#: Told a filed payload's ``(accepted, rejected, dropped, rejects)``, ``rejects`` its rejected
#: lines' ``(reason, count)`` pairs (a TCP ack names them to a sender that asks).
Done = Callable[[int, int, int, list], None] | None

#: Payloads that may wait behind the oldest one while a parser process has not answered for it.
#: Beyond, the reactor parses that one itself: a stopped parser (found and killed after
#: --parser-timeout) must not hold seconds of a UDP flood in memory meanwhile.
MAX_BEHIND = 2048


class Ingest:
    """Files payloads into the buffer; shared by the UDP and TCP listeners.

    ``payload`` parses and files at once and returns ``(accepted, rejected,
    dropped)``; ``submit`` may parse elsewhere and calls ``done`` with the same
    triple, and the rejects' reasons, when the payload's turn to be filed comes.
    """

    def __init__(self, buffer: Buffer, metrics: Metrics, max_future: int, max_past: int,
                 clock: Callable[[], float] = time.time, journal=None, parsers=None):
        self.buffer = buffer
        self.journal = journal
        self.metrics = metrics
        self.clock = clock
        self.parser = Parser(max_future, max_past)
        #: For payloads whose records' samples were checked against --max-future and
        #: --max-past when they came (the edge's minutes): filed a minute and its grace later,
        #: or at a restart long after, with the clock stepped back or the limits changed since,
        #: they may be outside the window now, and were acknowledged.  So no time is refused.
        self.untimed = Parser(NO_LIMIT, 0)
        self.parsers = parsers
        #: With --auth-keys, what checks signed frames here and admits them (auth.Authenticator).
        self.signatures = None
        #: Called with each filed payload's (vms, timestamps, rows): the live rules' intake.
        self.observe: Callable[[list, list, list], None] | None = None
        #: Payloads submitted and not yet filed, oldest first: [data, parsed, done, verdict,
        #: source]; a marker from ``after`` is [None, True, callback, None, ""].  ``verdict`` is
        #: None for plain payloads; for signed frames it is told (refused any, records unbound).
        #: ``source``: the sender's address where known (a TCP peer), else "".
        self.queue: deque[list] = deque()
        self._idle = IdleWaiters()
        self._bad_log = RateLimitedLog(log, "rejected record")

    def reject(self, reason: str, detail: str, count: int = 1) -> None:
        """Count (and rate-limited log) rejects that happen outside the parser."""
        self.metrics.reject(reason, count)
        self._bad_log.emit("%s: %s", reason, detail)

    # -- arrival order ---------------------------------------------------------------------------
    def payload(self, data: bytes, timed: bool = True) -> tuple[int, int, int]:
        """Parse and file one payload now (nothing may be waiting: that would reorder).

        ``timed=False``: its records' times were judged earlier, as samples (``untimed``).
        """
        return self.file(data, self._parse_now(data, timed))

    def submit(self, data: bytes, done: Done = None, timed: bool = True,
               source: str | Senders = "") -> None:
        """Parse ``data`` where there is room (a parser process, else here) and file it in turn.

        ``timed=False`` as for ``payload``: such a payload is parsed here, the parser processes
        knowing only the live window (it is one record a VM a minute, the edge's).  ``source``:
        the sender's address where known (a TCP peer; a UDP payload's ``Senders``), named if
        its VM id proves shared.
        """
        parsers = self.parsers
        if parsers is None or not parsers.has_room() or not timed:
            self.metrics.parsed_here += 1
            if not self.queue:
                parsed = self._parse_now(data, timed)
                result = self.file(data, parsed, source)
                if done is not None:
                    done(*result, parsed[4])
                return
            self.queue.append([data, self._parse_now(data, timed), done, None, source])
            return
        entry = [data, None, done, None, source]
        self.queue.append(entry)
        parsers.parse(data, self.clock()).addBoth(self._parsed, entry)
        self._bound()

    def _parse_now(self, data: bytes, timed: bool) -> Parsed:
        return (self.parser if timed else self.untimed).parse(data, self.clock())

    def submit_signed(self, frames: bytes, done: Done = None,
                      verdict: Callable[[bool, int], None] = lambda refused, unbound: None,
                      source: str = "") -> None:
        """Signed frames (laid end to end) under --auth-keys: checked and parsed where there is
        room, then, in turn, admitted (no replay) and filed.

        ``verdict(refused, unbound)`` is told, before ``done``, whether any
        frame was refused and how many records were removed as unbound.
        """
        entry = [frames, None, done, verdict, source]
        self.queue.append(entry)
        parsers = self.parsers
        if parsers is None or not parsers.has_room():
            self.metrics.parsed_here += 1
            entry[1] = self.signatures.check(frames, self.clock())
            self._drain()
            return
        parsers.parse(frames, self.clock()).addBoth(self._parsed, entry)
        self._bound()

    def parsed_elsewhere(self, data: bytes, parsed: Parsed | None,
                         senders: Senders | None = None) -> None:
        """File a payload a parser process read and parsed itself (UDP), after what is queued.

        ``parsed`` is None when the parser failed on it: it is parsed here.  ``senders``: its
        datagrams' addresses, where they were read (senders.py).
        """
        entry = [data, None, None, None, senders or ""]
        self.queue.append(entry)
        self._parsed(parsed, entry)
        self._bound()

    def checked_elsewhere(self, checked) -> None:
        """Signed datagrams a parser process read, checked and parsed itself (``signing.Checked``):
        admitted and filed after what is queued."""
        self.metrics.parsed_remote += 1
        self.queue.append([None, checked, None, lambda refused, unbound: None, ""])
        self._drain()

    def after(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything submitted so far is filed."""
        if self.queue:
            self.queue.append([None, True, callback, None, ""])
        else:
            callback()

    def idle(self) -> defer.Deferred:
        """Fires when nothing submitted is waiting to be filed (the drain before a final flush)."""
        return self._idle.wait(bool(self.queue))

    def _bound(self) -> None:
        """Parse the oldest payload here when too many wait behind a parser's answer for it."""
        queue = self.queue
        while len(queue) > MAX_BEHIND + 1 and queue[0][1] is None:
            self.metrics.parsed_here += 1
            self._parse_here(queue[0])
            self._drain()

    def _parse_here(self, entry: list) -> None:
        if entry[3] is not None:
            entry[1] = self.signatures.check(entry[0], self.clock())
        else:
            entry[1] = self.parser.parse(entry[0], self.clock())

    def _parsed(self, parsed, entry: list) -> None:
        if entry[1] is not None:  # parsed here already (_bound): the parser's answer came late
            return
        signed = entry[3] is not None
        if isinstance(parsed, tuple) and len(parsed) == (4 if signed else 7):
            self.metrics.parsed_remote += 1
            entry[1] = parsed
        else:  # the parser process died or failed (a Failure or None): parse it here
            self.metrics.parsed_here += 1
            self._parse_here(entry)
        self._drain()

    def _drain(self) -> None:
        """File every payload at the head of the queue whose columns are in, in order."""
        queue = self.queue
        while queue and queue[0][1] is not None:
            data, parsed, done, verdict, source = queue.popleft()
            if parsed is True:
                done()
                continue
            if verdict is not None:
                data, parsed = self._admitted(parsed, verdict)
                if data is None:
                    if done is not None:
                        done(0, 0, 0, [])
                    continue
            result = self.file(data, parsed, source)
            if done is not None:
                done(*result, parsed[4])
        if not queue:
            self._idle.fire()

    def _admitted(self, checked, verdict: Callable[[bool, int], None]) -> tuple:
        """``(payload, parsed)`` of the frames of a ``signing.Checked`` that are no replay, or
        ``(None, None)`` when none is; the refused ones are counted.

        Replays are rare (an attack, or a sender's bug), so the parser parsed
        every frame that passed its checks as one payload; if the reactor
        refuses one of them, the rest are parsed again here.
        """
        parsed, data, accepted, refused = checked
        failed = False
        for reason, detail, count in refused:
            self.reject(reason, detail, count)
            # An HTTP request cut from a frame's payload (signing.check_frames) is no failed
            # signature: the frame passed, the records before the request are filed.
            failed = failed or reason != protocol.R_HTTP
        lengths = accepted[4]
        verdicts = self.signatures.admit_all(accepted) if lengths else None
        removed = accepted[3]
        if verdicts is not None:
            data = b"\n".join(compress(_pieces(data, lengths), verdicts))
            removed = list(compress(removed, verdicts))
            failed = True
        verdict(failed, sum(removed))
        if not lengths or (verdicts is not None and not any(verdicts)):
            return None, None
        if parsed is None or verdicts is not None:
            self.metrics.parsed_here += 1
            parsed = self.parser.parse(data, self.clock())
        return data, parsed

    # -- filing ----------------------------------------------------------------------------------
    def file(self, data: bytes, parsed: Parsed,
             source: str | Senders = "") -> tuple[int, int, int]:
        """Put one payload's parsed records in the buffer and journal the payload if any held
        (``source``: the sender's address, where known)."""
        vms, tss, rows, seqs, rejects, details, refused = parsed
        metrics = self.metrics
        rejected = 0
        if rejects:
            for reason, count in rejects:
                metrics.reject(reason, count)
                rejected += count
            for detail in details:
                self._bad_log.emit("%s", detail)
        count = len(vms)
        if not count:
            self._step_over(refused, 0, len(refused), source)
            return 0, rejected, 0
        buffer = self.buffer
        now = buffer.clock()  # when the VMs were heard from: monotonic (buffer.py)
        table = buffer.table
        dropped = 0
        seen = buffer.last_seen
        if buffer.count + count >= buffer.max_buffered:
            accepted, dropped = self._file_each(parsed, now, source)
        elif len(seen) + count > buffer.max_vms and not seen.keys() >= set(vms):
            accepted, dropped = self._file_each(parsed, now, source)  # new VMs near the VM cap
        else:
            vm_set = set(vms)
            for vm in vm_set.difference(table):
                table[vm] = {}
            rows_of = table.__getitem__
            sizes = list(map(len, map(rows_of, vm_set)))
            if max(sizes) + count > buffer.max_per_vm:
                accepted, dropped = self._file_each(parsed, now, source)
            else:
                deque(map(setitem, map(rows_of, vms), tss, rows), 0)
                added = sum(map(len, map(rows_of, vm_set))) - sum(sizes)
                buffer.count += added
                metrics.repeated += count - added  # resends of rows held: replaced, kept once
                if refused:
                    self._sequence_around(vms, tss, seqs, refused, source)
                else:
                    self._sequence(vms, tss, seqs, len(vm_set) == count, source)
                seen.update(zip(vm_set, repeat(now)))  # after: a jump is judged since the last
                accepted = count
        metrics.records += accepted
        if accepted:
            if self.journal is not None:
                if rejected:
                    self._journal_with_rejects(data, tss, rejects)
                else:
                    self.journal.append_records(data)
            if self.observe is not None:
                self.observe(vms, tss, rows)
        return accepted, rejected, dropped

    def _journal_with_rejects(self, data: bytes, tss: list, rejects: list) -> None:
        """Journal a payload some of whose lines were refused, so that its replay refuses them
        and counts none of them again: a WINDOW_PREFIX line of the stamps taken before it if
        any was refused for its time, the count of what was refused after it."""
        if not TIME_REASONS.isdisjoint(dict(rejects)):
            self.journal.append(b"%s%d %d\n" % (WINDOW_PREFIX, min(tss), max(tss)))
        self.journal.append_records(data)
        self.journal.append(rejected_line(rejects))

    def _sequence(self, vms: list, tss: list, seqs: list, distinct: bool,
                  source: str | Senders) -> None:
        """Count seq gaps; when every VM's seq is its last one plus one, without a loop.

        A VM watched for a second agent under its id (sharedids.py) has
        ``WATCHED`` as its last seq, which no seq follows: its payloads take the loop.
        """
        last_seq = self.buffer.last_seq
        if distinct and None not in seqs:
            steps = set(map(sub, seqs, map(last_seq.get, vms, repeat(-2))))
            if steps == {1}:
                last_seq.update(zip(vms, seqs, strict=True))
                return
        sequence = self.buffer.sequence
        for vm, ts, seq in zip(vms, tss, seqs, strict=True):
            if seq is not None:
                sequence(vm, seq, ts, source)

    def _sequence_around(self, vms: list, tss: list, seqs: list, refused: list,
                         source: str | Senders) -> None:
        """``_sequence`` for a payload some of whose records were refused for their stamp:
        every seq in the payload's order, the refused ones stepped over (``Buffer.step_over``),
        so that the record after one is no gap.  Rare: a loop."""
        sequence = self.buffer.sequence
        done = 0
        for at, (index, _vm, _seq, _ts) in enumerate(refused):
            for vm, ts, seq in zip(vms[done:index], tss[done:index], seqs[done:index], strict=True):
                if seq is not None:
                    sequence(vm, seq, ts, source)
            done = index
            self._step_over(refused, at, at + 1, source)
        for vm, ts, seq in zip(vms[done:], tss[done:], seqs[done:], strict=True):
            if seq is not None:
                sequence(vm, seq, ts, source)

    def _step_over(self, refused: list, start: int, end: int, source: str | Senders) -> None:
        """Step over the seqs of ``refused[start:end]`` (Parsed's last column)."""
        step_over = self.buffer.step_over
        for _index, vm, seq, ts in refused[start:end]:
            step_over(vm, seq, ts, source)

    def _file_each(self, parsed: Parsed, now: float, source: str | Senders) -> tuple[int, int]:
        """One record at a time, for payloads that meet a cap: each drop is counted by cause,
        and the records refused for their stamp are stepped over in their place."""
        put, seen = self.buffer.put, self.buffer.last_seen
        refused = parsed[6]
        accepted = dropped = over = 0
        for index, (vm, ts, row, seq) in enumerate(zip(*parsed[:4], strict=True)):
            if over < len(refused) and refused[over][0] == index:
                start = over
                while over < len(refused) and refused[over][0] == index:
                    over += 1
                self._step_over(refused, start, over, source)
            if put(vm, ts, row, seq, source):
                accepted += 1
                seen[vm] = now
            else:
                dropped += 1
                if vm in seen:  # a known VM over a record cap: still heard from
                    seen[vm] = now
        self._step_over(refused, over, len(refused), source)
        return accepted, dropped


def _pieces(data: bytes, lengths: list[int]) -> list[bytes]:
    """The payloads of ``lengths`` that were joined with newlines into ``data``."""
    pieces = []
    start = 0
    for length in lengths:
        pieces.append(data[start:start + length])
        start += length + 1
    return pieces
