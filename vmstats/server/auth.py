"""Signed frames on the server side: what needs one memory for every process -- accepted
nonces, and accepted signatures remembered across a restart.

The framing and the HMAC are the protocol's (``vmstats.protocol``); the checks a frame can be
given anywhere (key, HMAC, freshness, the VMs a key may speak for) are ``signing``'s, run by the
parser processes as they parse.  What lives here is the reactor's half, kept out of the
listeners' receive loops:

* ``Authenticator.admit`` checks each frame a parser accepted against the one memory of nonces
  (``Verifier``), in arrival order, so that a replay is refused once whichever parser checked it.
* ``SignatureMemory`` makes replay protection hold across restarts.  Each accepted signature is
  appended to the journal as a ``#!seen key_id ts nonce`` line, in the same once-per-turn write
  as the records (no file I/O of its own on the receive path), and before the journal deletes
  segments the highest signed time per key is written to ``DIR/signatures``.  At start the
  leftover segments give back the exact signatures accepted since, and the marks file a floor
  per key for everything older: a frame signed at or before its key's floor is a replay.
"""

import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from itertools import repeat
from operator import gt, itemgetter

from twisted.internet import task

from vmstats import protocol
from vmstats.server.journal import read_segments
from vmstats.server.metrics import RateLimitedLog
from vmstats.server.signing import Checked, FrameCheck, Key, check_frames, split_frames, stale, unsigned_lines

log = logging.getLogger(__name__)

#: A journal line recording an accepted signature (a comment to every line-protocol reader).
SEEN_PREFIX = b"#!seen "
_SEEN_LINE = SEEN_PREFIX + b"%s %s %s\n"
#: Parts of a parser's ``(key_id, ts, nonce, removed)`` for an accepted frame.
_KEY_OF, _TS_OF, _TOKEN_OF, _SEEN_OF = itemgetter(0), itemgetter(1), itemgetter(0, 2), \
    itemgetter(0, 1, 2)
#: The per-key floors, in the journal directory.
MARKS_FILE = "signatures"
class Verifier:
    """The replay check: one memory of accepted nonces, and per key the last signed time
    before a restart (``floors``).  The reactor's alone, so that no replay passes twice."""

    def __init__(self, window: int, clock: Callable[[], float]):
        self.window = window
        self.clock = clock
        self._seen: dict[tuple[bytes, bytes], int] = {}
        self.floors: dict[bytes, int] = {}

    def admit(self, key_id: bytes, ts: bytes, nonce: bytes, now: float | None = None) -> None:
        """Note a frame whose HMAC passed; raise SignatureError (S_REPLAY, S_STALE) if it is
        no new one.

        Freshness is checked again here: a frame checked by a parser may have
        waited, and a nonce is forgotten only once a frame carrying it would
        be stale, so a frame admitted within the window finds any earlier use
        of its nonce.
        """
        if now is None:
            now = self.clock()
        stale(ts, now, self.window)
        token = (key_id, nonce)
        if token in self._seen:
            raise protocol.SignatureError(protocol.S_REPLAY, "nonce already used")
        stamp = int(ts)
        floor = self.floors.get(key_id)
        if floor is not None and stamp <= floor:
            raise protocol.SignatureError(
                protocol.S_REPLAY, "signed at %d, not after %d: the last signature of key %r "
                "before the restart" % (stamp, floor, key_id[:40]))
        if len(self._seen) > 1000000:
            self._expire(now)
        self._seen[token] = stamp

    def admit_all(self, accepted: list[tuple], now: float) -> list | None:
        """``admit`` each ``(key_id, ts, nonce, removed)``: None if all pass, else each one's
        SignatureError or None.

        The usual case (every frame fresh, new and after its key's floor) is
        decided by C-level set and ``map`` operations over the whole answer,
        no Python step per frame: one-record datagrams make a frame per
        record, on the one core that files them all.
        """
        tokens = list(map(_TOKEN_OF, accepted))
        stamps = list(map(int, map(_TS_OF, accepted)))
        seen, floors = self._seen, self.floors
        if (min(stamps) >= now - self.window and max(stamps) <= now + self.window
                and seen.keys().isdisjoint(tokens) and len(set(tokens)) == len(tokens)
                and (not floors or all(map(gt, stamps, map(floors.get, map(_KEY_OF, accepted),
                                                           repeat(-1)))))):
            seen.update(zip(tokens, stamps, strict=True))
            if len(seen) > 1000000:
                self._expire(now)
            return None
        return list(self._each(accepted, now))

    def _each(self, accepted: list[tuple], now: float) -> Iterable:
        for key_id, ts, nonce, _removed in accepted:
            try:
                self.admit(key_id, ts, nonce, now)
            except protocol.SignatureError as exc:
                yield exc
            else:
                yield None

    def remember(self, key_id: bytes, nonce: bytes, stamp: int) -> None:
        """A signature accepted before the restart (read back from the journal)."""
        self._seen[(key_id, nonce)] = stamp

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        self._seen = {token: stamp for token, stamp in self._seen.items() if stamp >= horizon}


class SignatureMemory:
    """Accepted signatures, remembered across restarts (see the module's docstring).

    ``directory`` is the journal's; ``journal`` None (``--no-journal``) leaves only the marks
    file, written once a second while it changes: a crash can then forget the last second.
    """

    def __init__(self, directory: str, journal, verifier: Verifier, reactor=None):
        self.directory = directory
        self.path = os.path.join(directory, MARKS_FILE)
        self.journal = journal
        self.verifier = verifier
        self.reactor = reactor
        self.marks: dict[bytes, int] = {}
        self.saved: dict[bytes, int] = {}
        self._saver: task.LoopingCall | None = None
        self._trouble = RateLimitedLog(log, "signature marks error", burst=1, period=60.0)

    def restore(self, segments: list[tuple[int, str]]) -> int:
        """Load the floors and the signatures journaled since; returns the signatures restored."""
        try:
            with open(self.path, "rb") as handle:
                for line in handle:
                    parts = line.split()
                    if len(parts) == 2 and parts[1].isdigit():
                        self.marks[parts[0]] = int(parts[1])
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise OSError(exc.errno, "cannot read %s: %s" % (self.path, exc.strerror)) from None
        self.verifier.floors = dict(self.marks)
        self.saved = dict(self.marks)
        restored = 0
        for _number, data in read_segments(segments, "its signatures"):
            for key_id, stamp, nonce in seen_in(data):
                self.verifier.remember(key_id, nonce, stamp)
                self._mark(key_id, stamp)
                restored += 1
        return restored

    def start(self) -> None:
        if self.journal is not None:
            self.journal.before_retire.append(self.save_marks)
        elif self.reactor is not None:
            self._saver = task.LoopingCall(self.save)
            self._saver.clock = self.reactor
            self._saver.start(1.0, now=False)

    def stop(self) -> None:
        if self._saver is not None and self._saver.running:
            self._saver.stop()
        self.save()

    def accepted(self, key_id: bytes, ts: bytes, nonce: bytes) -> None:
        """Note an accepted signature: in memory, and in this turn's journal write."""
        self._mark(key_id, int(ts))
        if self.journal is not None:
            self.journal.append(b"%s%s %s %s\n" % (SEEN_PREFIX, key_id, ts, nonce))

    def accepted_all(self, accepted: list[tuple]) -> None:
        """``accepted`` for each ``(key_id, ts, nonce, removed)``: one journal append, and the
        marks moved once per key."""
        # Sorted by time, the last of each key's pairs is its latest.
        pairs = sorted(zip(map(int, map(_TS_OF, accepted)), map(_KEY_OF, accepted), strict=True))
        for key_id, stamp in {key_id: stamp for stamp, key_id in pairs}.items():
            self._mark(key_id, stamp)
        if self.journal is not None:
            self.journal.append(b"".join(map(_SEEN_LINE.__mod__, map(_SEEN_OF, accepted))))

    def _mark(self, key_id: bytes, stamp: int) -> None:
        if stamp > self.marks.get(key_id, -1):
            self.marks[key_id] = stamp

    def save_marks(self) -> None:
        """Before segments are retired: they go even if this fails (the failure is logged)."""
        self.save()

    def save(self) -> bool:
        """Write the marks durably if they moved (before the journal deletes any segment)."""
        if self.marks == self.saved:
            return True
        text = b"".join(b"%s %d\n" % item for item in sorted(self.marks.items()))
        try:
            os.makedirs(self.directory, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=self.directory, prefix=".signatures-")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(text)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, self.path)
            except BaseException:
                os.unlink(temp)
                raise
            folder = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as exc:
            self._trouble.emit("cannot save the signature marks in %s (replays of frames signed "
                               "since the last save would pass after a restart): %s",
                               self.path, exc)
            return False
        self.saved = dict(self.marks)
        return True


def seen_in(data: bytes) -> Iterable[tuple[bytes, int, bytes]]:
    """``(key_id, ts, nonce)`` of every ``#!seen`` line of a journal segment."""
    marker = b"\n" + SEEN_PREFIX
    at = 0 if data.startswith(SEEN_PREFIX) else (data.find(marker) + 1 or -1)
    while at >= 0:
        end = data.find(b"\n", at)
        if end < 0:
            return  # torn by the crash: it was not acknowledged either
        parts = data[at + len(SEEN_PREFIX):end].split(b" ")
        if len(parts) == 3 and parts[1].isdigit():
            yield parts[0], int(parts[1]), parts[2]
        at = data.find(marker, end) + 1 or -1


class Authenticator:
    """Unwraps signed frames and, when keys are configured, insists on them.

    With keys, frames are checked (key, HMAC, freshness, binding) where they
    are parsed -- a parser process, or ``check`` here when none has room --
    and each one that passed is ``admit``-ted here, in arrival order, against
    the one memory of nonces; Ingest calls both (``Ingest.submit_signed``).
    """

    def __init__(self, ingest, keys: dict[bytes, Key] | dict[bytes, bytes] | None, window: int):
        self.ingest = ingest
        self.required = bool(keys)
        self.window = window
        self.keys: dict[bytes, Key] = {k: v if isinstance(v, Key) else Key(v)
                                       for k, v in (keys or {}).items()}
        self.checker = FrameCheck(self.keys, window) if keys else None
        self.verifier = Verifier(window, ingest.clock) if keys else None
        self.memory: SignatureMemory | None = None
        if keys:
            ingest.signatures = self

    def remember_in(self, directory: str, journal, reactor) -> SignatureMemory | None:
        """Keep the memory of accepted signatures in ``directory`` (the journal's)."""
        if self.verifier is not None:
            self.memory = SignatureMemory(directory, journal, self.verifier, reactor)
        return self.memory

    def frame(self, key_id, ts, nonce, mac, payload) -> tuple[bytes | None, int]:
        """``(payload to ingest or None, records removed)``, checked here and now.

        ``removed`` counts records of VMs the key is not bound to: they are final rejects, not a
        reason to refuse the whole frame (a resend would not change them).
        """
        if self.checker is None:
            return payload, 0  # signatures are optional without --auth-keys: not checked
        try:
            payload, removed = self.checker.check(key_id, ts, nonce, mac, payload,
                                                  self.ingest.clock())
        except protocol.SignatureError as exc:
            self.ingest.reject(exc.reason, exc.detail)
            return None, 0
        if not self.admit(key_id, ts, nonce, removed):
            return None, 0
        return payload, removed

    def check(self, frames: bytes, now: float) -> Checked:
        """What a parser process answers for ``frames`` (laid end to end), worked out here."""
        return check_frames(self.checker, self.ingest.parser, split_frames(frames), now)

    def admit_all(self, accepted: list[tuple]) -> list[bool] | None:
        """``admit`` for a parser's answer: None if every frame passed, else each one's verdict.

        Every accepted signature goes to the journal in one piece, and the
        marks move once per key, not once per frame.
        """
        errors = self.verifier.admit_all(accepted, self.ingest.clock())
        passed = accepted if errors is None else [one for one, error in zip(accepted, errors,
                                                                            strict=True)
                                                  if error is None]
        memory = self.memory
        if memory is not None and passed:
            memory.accepted_all(passed)
        unbound = sum(map(itemgetter(3), passed))
        if unbound:
            self.ingest.reject(protocol.S_UNBOUND, "%d records for VMs keys %r are not bound to"
                               % (unbound, sorted({one[0][:40] for one in passed if one[3]})),
                               unbound)
        if errors is None:
            return None
        for error in errors:
            if error is not None:
                self.ingest.reject(error.reason, error.detail)
        return [error is None for error in errors]

    def admit(self, key_id: bytes, ts: bytes, nonce: bytes, removed: int) -> bool:
        """May a frame whose HMAC passed be ingested (no replay)?  Counts every refusal, and the
        records removed as unbound of the frames it admits."""
        try:
            self.verifier.admit(key_id, ts, nonce)
        except protocol.SignatureError as exc:
            self.ingest.reject(exc.reason, exc.detail)
            return False
        if self.memory is not None:
            self.memory.accepted(key_id, ts, nonce)
        if removed:
            self.ingest.reject(protocol.S_UNBOUND, "%d records for VMs key %r is not bound to"
                               % (removed, key_id[:40]), removed)
        return True

    def unsigned(self, data: bytes) -> bool:
        """May unsigned data be ingested?  Counts its lines as sig_missing if not."""
        if not self.required:
            return True
        lines = unsigned_lines(data)
        if lines:
            self.ingest.reject(protocol.S_UNSIGNED, "%d unsigned lines" % lines, lines)
        return False
