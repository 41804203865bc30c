"""The receive path: payload bytes in, buffered log rows out, every reject counted.

Per-field Python code costs tens of microseconds per record on this
interpreter, far above the ingest budget.  So the common case -- lines exactly
as ``protocol.encode_record`` writes them -- is matched for a whole payload by
one compiled regex built from ``protocol.FIELDS`` and turned into the held row
(``rows.py``) by one bytes join.  The regex only admits
values whose range and finiteness it can prove, so no float() is needed.
Anything else (reordered tags, exponents, ms/ns timestamps, bad input) goes
through ``protocol.Decoder`` (and ``rows.held_from_record``): identical rows,
just slower, and the decoder names the reason for every reject.
"""

import logging
import re
import time
from collections.abc import Callable

from vmstats import protocol
from vmstats.server.buffer import Buffer
from vmstats.server.metrics import Metrics, RateLimitedLog
from vmstats.server.rows import held_from_record

log = logging.getLogger(__name__)


def _int_digits(hi: int) -> int:
    """The most decimal digits whose every value is <= hi."""
    digits = len(str(hi))
    return digits if hi >= 10 ** digits - 1 else digits - 1


def _int_pattern(lo: int, hi: int) -> str:
    """Canonical (no leading zero) integers provably in [lo, hi]; narrower is fine."""
    if lo not in (0, 1):
        raise ValueError("the fast path only handles ranges starting at 0 or 1")
    body = r"[1-9]\d{0,%d}" % (_int_digits(hi) - 1)
    return "0|" + body if lo == 0 else body


def _float_pattern(lo: float, hi: float) -> str:
    """Decimals provably in [lo, hi] (no sign, no exponent: the decoder handles those).

    A digit lookahead after the integer part stands in for an optional fraction
    group: sre runs optional groups slowly, single-character repeats fast.
    """
    if lo != 0:
        raise ValueError("the fast path only handles float ranges starting at 0")
    top = int(hi)
    digits = _int_digits(top)
    pattern = r"\d{1,%d}(?!\d)\.?\d{0,17}" % digits
    if top == 10 ** digits:  # e.g. 100: "100" and "100.000" are in range, "100.5" is not
        pattern += r"|%d(?!\d)\.?0{0,17}" % top
    return pattern


def _optional(piece: str) -> str:
    # An empty alternative is markedly cheaper in sre than ``(?:...)?``.
    return "(?:%s|)" % piece


def build_fast_path() -> tuple["re.Pattern[bytes]", int, int]:
    """The canonical-line regex and where the timestamp and seq are among its groups.

    Returns ``(regex, ts_group, seq_group)`` indexing the tuples that
    ``regex.findall`` yields: group 0 is the VM id, the last one the
    timestamp, and ``b",".join(groups[1:-1])`` is the held row (rows.py).
    """
    # Anchored to whole lines by a lookbehind after the literal head and a lookahead at the
    # end rather than ^/$ with MULTILINE: a leading literal lets sre skip ahead to candidate
    # lines, which makes findall over a batch about a quarter faster.
    head = "%s,vm=" % protocol.MEASUREMENT
    parts = [r"%s(?<![^\n]%s)([A-Za-z0-9._:-]{1,%d})" % (re.escape(head), re.escape(head),
                                                         protocol.MAX_VM_ID_LENGTH),
             _optional(r",host=([A-Za-z0-9][A-Za-z0-9._-]{0,254})")]
    seq_group = -1
    for position, (name, is_int, lo, hi, required) in enumerate(protocol.FIELDS):
        if position == 0 and not required:
            raise ValueError("the first field must be required for the fast path")
        value = r"(%s)i" % _int_pattern(lo, hi) if is_int else "(%s)" % _float_pattern(lo, hi)
        piece = r"%s%s=%s" % (" " if position == 0 else ",", re.escape(name), value)
        parts.append(piece if required else _optional(piece))
        if name == "seq":
            seq_group = position + 2
    parts.append(r" ([1-9]\d{9})\r?(?![^\n])")
    regex = re.compile("".join(parts).encode("ascii"))
    return regex, len(protocol.FIELDS) + 2, seq_group


class Ingest:
    """Decodes payloads into the buffer; shared by the UDP and TCP listeners.

    ``payload`` returns ``(accepted, rejected, dropped)`` so the TCP listener
    can acknowledge exactly what it holds.
    """

    def __init__(self, buffer: Buffer, metrics: Metrics, max_future: int, max_past: int,
                 clock: Callable[[], float] = time.time, journal=None):
        self.buffer = buffer
        self.journal = journal
        self.metrics = metrics
        self.max_future = max_future
        self.max_past = max_past
        self.clock = clock
        self.decoder = protocol.Decoder(max_future=max_future, max_past=max_past, clock=clock)
        self._regex, self._ts_group, self._seq_group = build_fast_path()
        self._vm_ids: dict[bytes, str] = {}
        self._bad_log = RateLimitedLog(log, "rejected record")
        self.payload = self._make_payload()
        if journal is not None:
            self.payload = self._journaled(self.payload, journal.append)

    @staticmethod
    def _journaled(payload: Callable[[bytes], tuple[int, int, int]],
                   append: Callable[[bytes], None]) -> Callable[[bytes], tuple[int, int, int]]:
        """``payload`` that also queues, for the journal, every payload that added a record.

        The payload bytes are journaled as they are (replay parses them the same way), so the
        cost on the receive path is one call and one list append per payload, not per record.
        """
        def journaled(data: bytes) -> tuple[int, int, int]:
            result = payload(data)
            if result[0]:
                append(data)
            return result

        return journaled

    def _vm_id(self, raw: bytes) -> str:
        vm = self._vm_ids.get(raw)
        if vm is None:
            vm = self.decoder.vm_id(raw.decode("ascii"))  # the regex admits ASCII only
            if len(self._vm_ids) >= 65536:
                self._vm_ids.clear()
            self._vm_ids[raw] = vm
        return vm

    def reject(self, reason: str, detail: str, count: int = 1) -> None:
        """Count (and rate-limited log) rejects that happen outside the decoder."""
        self.metrics.reject(reason, count)
        self._bad_log.emit("%s: %s", reason, detail)

    def _make_payload(self) -> Callable[[bytes], tuple[int, int, int]]:
        """Build ``payload``: the hot path as one closure over local names.

        A datagram of one record spends more time in Python call overhead
        and attribute lookups than in the regex, so the common case (known VM,
        timestamp in the window, room in the buffer, next seq) is handled here
        with everything inlined; the first record that is anything else hands
        the rest of the payload to ``_store``, which checks each record fully.
        """
        findall = self._regex.findall
        join = b",".join
        ts_group, seq_group = self._ts_group, self._seq_group
        vm_ids = self._vm_ids
        buffer, metrics, clock = self.buffer, self.metrics, self.clock
        max_future, max_past = self.max_future, self.max_past
        max_per_vm = buffer.max_per_vm
        store, mixed = self._store, self._mixed

        def payload(data: bytes) -> tuple[int, int, int]:
            """Buffer every valid record of one datagram or TCP batch."""
            now = clock()
            matches = findall(data)
            if len(matches) != data.count(b"\n") + (data[-1:] != b"\n"):
                return mixed(data, now)
            if buffer.count + len(matches) >= buffer.max_buffered:
                return store(matches, [], now)
            table, last_seen, last_seq = buffer.table, buffer.last_seen, buffer.last_seq
            hi = int(now) + max_future
            lo = int(now) - max_past if max_past else 0
            accepted = new = 0
            for groups in matches:
                vm = vm_ids.get(groups[0])
                ts = int(groups[ts_group])
                if vm is None or ts > hi or ts < lo:
                    break
                rows = table.get(vm)
                if rows is None:
                    break
                if ts not in rows:
                    if len(rows) >= max_per_vm:
                        break
                    new += 1
                rows[ts] = join(groups[1:-1])
                last_seen[vm] = now
                seq = groups[seq_group]
                if seq:
                    seq = int(seq)
                    if last_seq.get(vm, -2) + 1 == seq:
                        last_seq[vm] = seq
                    else:
                        buffer.sequence(vm, seq)
                accepted += 1
            buffer.count += new
            metrics.records += accepted
            if accepted == len(matches):
                return accepted, 0, 0
            more, rejected, dropped = store(matches[accepted:], [], now)
            return accepted + more, rejected, dropped

        return payload

    def _mixed(self, data: bytes, now: float) -> tuple[int, int, int]:
        """A payload the regex did not cover whole: line by line, the decoder decides the rest."""
        matches = []
        records = []
        rejected = 0
        fullmatch = self._regex.fullmatch
        for line in data.split(b"\n"):
            if not line or line[:1] == b"#":
                continue
            found = fullmatch(line)
            if found is not None:
                matches.append(found.groups(b""))
                continue
            try:
                records.append(self.decoder.decode_line(line, now))
            except protocol.DecodeError as exc:
                rejected += 1
                self.metrics.reject(exc.reason)
                self._bad_log.emit("%s", exc)
        accepted, more_rejected, dropped = self._store(matches, records, now)
        return accepted, rejected + more_rejected, dropped

    def _store(self, matches: list, records: list, now: float) -> tuple[int, int, int]:
        buffer = self.buffer
        metrics = self.metrics
        hi = int(now) + self.max_future
        lo = int(now) - self.max_past if self.max_past else 0
        join = b",".join
        vm_ids = self._vm_ids
        ts_group, seq_group = self._ts_group, self._seq_group
        put = buffer.put
        seen = buffer.last_seen
        accepted = rejected = dropped = 0
        for groups in matches:
            vm = vm_ids.get(groups[0])
            if vm is None:
                try:
                    vm = self._vm_id(groups[0])
                except protocol.DecodeError as exc:
                    rejected += 1
                    metrics.reject(exc.reason)
                    self._bad_log.emit("%s", exc)
                    continue
            ts = int(groups[ts_group])
            if ts > hi or ts < lo:
                reason = protocol.R_FUTURE if ts > hi else protocol.R_PAST
                rejected += 1
                metrics.reject(reason)
                self._bad_log.emit("%s: vm %s timestamp %d (server time %d)", reason, vm, ts, now)
                continue
            seen[vm] = now
            seq = groups[seq_group]
            if put(vm, ts, join(groups[1:-1]), int(seq) if seq else None):
                accepted += 1
            else:
                dropped += 1
        for record in records:
            seen[record.vm] = now
            if put(record.vm, record.ts, held_from_record(record), record.seq):
                accepted += 1
            else:
                dropped += 1
        metrics.records += accepted
        return accepted, rejected, dropped
