"""Signed frames on the server side: what needs one memory for every process -- accepted
nonces, and accepted signatures remembered across a restart.

The framing and the HMAC are the protocol's (``vmstats.protocol``); the checks a frame can be
given anywhere (key, HMAC, freshness, the VMs a key may speak for) are ``signing``'s, run by the
parser processes as they parse.  What lives here is the reactor's half, kept out of the
listeners' receive loops:

* ``Authenticator.admit_all`` checks each frame a parser accepted against the one memory of
  accepted frames (``Verifier``), in arrival order, so that a replay is refused once whichever
  parser checked it.
* ``SignatureMemory`` makes replay protection hold across restarts.  Each accepted signature is
  appended to the journal as a ``#!seen key_id ts nonce`` line, in the same once-per-turn write
  as the records (no file I/O of its own on the receive path), and before the journal deletes
  segments the highest signed time per key is written to ``DIR/signatures``.  At start the
  leftover segments give back the exact signatures accepted since, and the marks file a floor
  per key for everything older: a frame signed at or before its key's floor is a replay.
"""

import logging
import os
from collections.abc import Callable, Iterable
from itertools import compress, repeat
from operator import gt

from vmstats import protocol
from vmstats.inputfile import Damage
from vmstats.server.every import Every
from vmstats.server.journal import read_segments
from vmstats.server.metrics import RateLimitedLog
from vmstats.server.ownfiles import read_file, replace_durably
from vmstats.server.signing import (
    KEY_ID,
    Accepted,
    Checked,
    FrameCheck,
    Key,
    check_frames,
    split_frames,
    stale,
    unsigned_lines,
)
from vmstats.words import counted

log = logging.getLogger(__name__)

#: A journal line recording an accepted signature (a comment to every line-protocol reader):
#: ``#!seen <key_id> <ts> <nonce>``.  Only the server writes one: record payloads are journaled
#: without their control lines (``journal.without_control_lines``).
SEEN_PREFIX = b"#!seen "
_SEEN_JOIN = b"\n" + SEEN_PREFIX
#: The per-key floors, in the journal directory.
MARKS_FILE = "signatures"
#: Distinct signed seconds in one answer that are admitted a second at a time with C-level
#: dict operations; an answer with more goes frame by frame.
_FEW_SECONDS = 4


#: A mark is a signed second: more digits than this is no time a frame was accepted at.
_MARK_DIGITS = 12


def mark_problem(line: bytes, latest: float) -> str | None:
    """Why a line of the marks file is not ``<key_id> <seconds>`` as ``save`` writes it, or None.

    A mark beyond ``latest`` (the clock plus the window) is damage too: kept, it would refuse
    every frame of its key until that time came.
    """
    parts = line.split()
    if len(parts) != 2:
        return "not 'key_id seconds'"
    key_id, stamp = parts
    if not key_id.isascii() or not KEY_ID.match(key_id.decode("ascii")):
        return "no key id"
    if not (stamp.isdigit() and len(stamp) <= _MARK_DIGITS):
        return "no time in seconds"
    if int(stamp) > latest:
        return "a time in the future"
    return None


class Verifier:
    """The replay check: one memory of accepted frames, and per key the last signed time
    before a restart (``floors``).  The reactor's alone, so that no replay passes twice.

    A frame is known by its identity, ``<key_id> <ts> <nonce>``, all three
    under its HMAC: a replay repeats them, and a frame that differs in any is
    another message its key signed.  The identities are kept per signed
    second (``_seen``) and a second's are dropped whole once frames signed
    then are stale: expiry costs one dict deletion a second, never a pass over
    everything remembered, so the reactor's turn stays short however many
    frames the window holds.

    A second's identities are the keys of a dict (values None), not a set:
    a dict holding only bytes and None is one the garbage collector does not
    track, while it walks every element of a set.  At 175,000 one-record
    frames a second the window holds millions of identities, and each full
    collection of the reactor's objects took 0.1-0.5 s walking them, long
    enough for the UDP socket to overflow behind the parsers waiting on it.
    """

    def __init__(self, window: int, clock: Callable[[], float]):
        self.window = window
        self.clock = clock
        self._seen: dict[int, dict[bytes, None]] = {}
        self.floors: dict[bytes, int] = {}

    def remembered(self) -> int:
        """Frames remembered now (for tests and /status)."""
        return sum(map(len, self._seen.values()))

    def admit(self, key_id: bytes, stamp: int, identity: bytes, now: float | None = None) -> None:
        """Note a frame whose HMAC passed; raise SignatureError (S_REPLAY, S_STALE) if it is
        no new one.

        Freshness is checked again here: a frame checked by a parser may have
        waited, and a second's identities are forgotten only once a frame
        signed then would be stale, so a frame admitted within the window finds
        any earlier use of its identity.
        """
        if now is None:
            now = self.clock()
        stale(stamp, now, self.window)
        second = self._second(stamp, now)
        if identity in second:
            raise protocol.SignatureError(protocol.S_REPLAY, "nonce already used")
        floor = self.floors.get(key_id)
        if floor is not None and stamp <= floor:
            raise protocol.SignatureError(
                protocol.S_REPLAY, "signed at %d, not after %d: the last signature of key %r "
                "before the restart" % (stamp, floor, key_id[:40]))
        second[identity] = None

    def admit_all(self, key_ids: list, stamps: list, identities: list, now: float) -> list | None:
        """``admit`` each frame of a parser's answer: None if all pass, else each one's
        SignatureError or None.

        The usual case (every frame fresh, new and after its key's floor,
        signed within a few seconds) is decided by C-level set and ``map``
        operations over the whole answer, no Python step per frame:
        one-record datagrams make a frame per record, on the one core that
        files them all.
        """
        window, floors = self.window, self.floors
        low, high = min(stamps), max(stamps)
        if (low >= now - window and high <= now + window
                and (not floors or all(map(gt, stamps, map(floors.get, key_ids, repeat(-1)))))):
            if low == high:
                groups = [(low, identities)]
            else:
                seconds = set(stamps)
                groups = [] if len(seconds) > _FEW_SECONDS else [
                    (second, list(compress(identities, map(second.__eq__, stamps))))
                    for second in seconds]
            if groups:
                fresh = [(self._second(second, now), dict.fromkeys(group))
                         for second, group in groups]
                if (sum(map(len, [group for _second, group in fresh])) == len(identities)
                        and all(known.keys().isdisjoint(group.keys()) for known, group in fresh)):
                    for known, group in fresh:
                        known.update(group)
                    return None
        return [self._one(*frame, now) for frame in zip(key_ids, stamps, identities, strict=True)]

    def _one(self, key_id: bytes, stamp: int, identity: bytes,
             now: float) -> protocol.SignatureError | None:
        try:
            self.admit(key_id, stamp, identity, now)
        except protocol.SignatureError as exc:
            return exc
        return None

    def remember(self, stamp: int, identity: bytes, now: float) -> None:
        """A signature accepted before the restart (read back from the journal)."""
        if stamp >= now - self.window:
            self._second(stamp, now)[identity] = None

    def _second(self, stamp: int, now: float) -> dict[bytes, None]:
        """The identities accepted of frames signed at ``stamp`` (as keys); a new second's drops
        the seconds gone stale."""
        second = self._seen.get(stamp)
        if second is None:
            horizon = now - self.window
            for old in [old for old in self._seen if old < horizon]:
                del self._seen[old]
            second = self._seen[stamp] = {}
        return second


class SignatureMemory:
    """Accepted signatures, remembered across restarts (see the module's docstring).

    ``directory`` is the journal's; ``journal`` None (``--no-journal``) leaves only the marks
    file, written once a second while it changes: a crash can then forget the last second.
    """

    def __init__(self, directory: str, journal, verifier: Verifier, reactor=None, metrics=None):
        self.directory = directory
        self.metrics = metrics
        self.path = os.path.join(directory, MARKS_FILE)
        self.journal = journal
        self.verifier = verifier
        self.reactor = reactor
        self.marks: dict[bytes, int] = {}
        self.saved: dict[bytes, int] = {}
        self._saver: Every | None = None
        self._trouble = RateLimitedLog(log, "signature marks error", burst=1, period=60.0)
        self.failing = False
        #: Signatures restored from the journal, and #!seen lines skipped as from the future.
        self._restored = self._ahead = 0

    def restore(self, segments: list[tuple[int, str]]) -> int:
        """Load the floors and the signatures journaled since; returns the signatures restored.

        The server's start calls ``load_marks`` and hands ``take`` the journal replay's pieces
        instead (replay.replay's ``readers``), so each segment is read and checked once."""
        self.load_marks()
        for _number, data in read_segments(segments, "its signatures"):
            self.take(data)
        return self.settle()

    def load_marks(self) -> None:
        """The floors saved in the marks file (a damaged line costs its key's floor only)."""
        text = read_file(self.path, "signature marks file")
        now = self.verifier.clock()
        damage = Damage()
        for number, line in enumerate(text.splitlines(), 1):
            why = mark_problem(line, now + self.verifier.window)
            if why is None:
                key_id, stamp = line.split()
                self.marks[key_id] = int(stamp)
            elif line.strip():
                damage.skip(number, why)
        if damage.count:
            # Only that key's floor is lost: the journal's #!seen lines and the window still
            # refuse replays of the last minutes; the next save writes the file whole again.
            log.warning("%s", damage.note(self.path))
        self.verifier.floors = dict(self.marks)
        self.saved = dict(self.marks)
        self._restored = self._ahead = 0

    def take(self, data: bytes) -> None:
        """The signatures seen in whole lines of a leftover segment (its checked units)."""
        now = self.verifier.clock()
        for key_id, stamp, identity in seen_in(data):
            if stamp > now + self.verifier.window:  # damage: no frame accepted is signed so
                self._ahead += 1
                continue
            self.verifier.remember(stamp, identity, now)
            self._mark(key_id, stamp)
            self._restored += 1

    def settle(self) -> int:
        """Every leftover segment was taken: says what was skipped; returns the signatures
        restored."""
        if self._ahead:
            log.warning("journal: %s signed in the future skipped (damaged)",
                        counted(self._ahead, "#!seen line"))
        return self._restored

    def start(self) -> None:
        if self.journal is not None:
            self.journal.before_retire.append(self.save_marks)
        elif self.reactor is not None:
            self._saver = Every(self.reactor, 1.0, self.save, "saving the signatures seen")
            self._saver.start()

    def stop(self) -> None:
        if self._saver is not None:
            self._saver.stop()
        self.save()

    def accepted_all(self, key_ids: list, stamps: list, identities: list) -> None:
        """Accepted signatures: one journal append for all, and each key's mark moved to its
        latest."""
        if key_ids.count(key_ids[0]) == len(key_ids):  # one key (a host's agent, a relay)
            self._mark(key_ids[0], max(stamps))
        else:
            for key_id, stamp in zip(key_ids, stamps, strict=True):
                self._mark(key_id, stamp)
        if self.journal is not None:
            self.journal.append(SEEN_PREFIX + _SEEN_JOIN.join(identities) + b"\n")

    def _mark(self, key_id: bytes, stamp: int) -> None:
        if stamp > self.marks.get(key_id, -1):
            self.marks[key_id] = stamp

    def save_marks(self) -> None:
        """Before segments are retired: they go even if this fails (the failure is logged)."""
        self.save()

    def save(self) -> bool:
        """Write the marks durably if they moved (before the journal deletes any segment), or
        if their file is gone (the journal directory removed under the server: the segments
        retired next hold the only other copy)."""
        if self.marks == self.saved and (not self.marks or os.path.lexists(self.path)):
            return True
        text = b"".join(b"%s %d\n" % item for item in sorted(self.marks.items()))
        try:
            os.makedirs(self.directory, exist_ok=True)
            replace_durably(self.path, text, os.path.join(self.directory, ".signatures.new"), 0o600)
        except OSError as exc:
            if self.metrics is not None:
                self.metrics.signature_marks_errors += 1
            self._trouble.emit("cannot save the signature marks in %s (replays of frames signed "
                               "since the last save would pass after a restart): %s",
                               self.path, exc)
            self.failing = True
            return False
        self.saved = dict(self.marks)
        if self.failing:
            self.failing = False
            log.warning("the signature marks are saved again in %s", self.path)
        return True


def seen_in(data: bytes) -> Iterable[tuple[bytes, int, bytes]]:
    """``(key_id, ts, identity)`` of every ``#!seen`` line of a journal segment; the identity
    is the line's ``<key_id> <ts> <nonce>`` as the frame's header had it."""
    marker = b"\n" + SEEN_PREFIX
    at = 0 if data.startswith(SEEN_PREFIX) else (data.find(marker) + 1 or -1)
    while at >= 0:
        end = data.find(b"\n", at)
        if end < 0:
            return  # torn by the crash: it was not acknowledged either
        identity = data[at + len(SEEN_PREFIX):end]
        parts = identity.split(b" ")
        if len(parts) == 3 and parts[1].isdigit() and len(parts[1]) <= _MARK_DIGITS:
            yield parts[0], int(parts[1]), identity
        at = data.find(marker, end) + 1 or -1


class Authenticator:
    """Unwraps signed frames and, when keys are configured, insists on them.

    With keys, frames are checked (key, HMAC, freshness, binding) where they
    are parsed -- a parser process, or ``check`` here when none has room --
    and the ones that passed are admitted here (``admit_all``), in arrival
    order, against the one memory of accepted frames; Ingest calls both
    (``Ingest.submit_signed``).
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
            self.memory = SignatureMemory(directory, journal, self.verifier, reactor,
                                          self.ingest.metrics)
        return self.memory

    def frame(self, key_id, ts, nonce, mac, payload) -> tuple[bytes | None, int]:
        """``(payload to ingest, 0)`` for a frame a server without keys unwraps: signatures are
        optional then, and not checked (with keys, frames go through ``Ingest.submit_signed``)."""
        if self.required:
            raise RuntimeError("with --auth-keys, frames are checked by Ingest.submit_signed")
        return payload, 0

    def check(self, frames: bytes, now: float) -> Checked:
        """What a parser process answers for ``frames`` (laid end to end), worked out here."""
        return check_frames(self.checker, self.ingest.parser, split_frames(frames), now)

    def admit_all(self, accepted: Accepted) -> list[bool] | None:
        """Admit a parser's answer (no replay): None if every frame passed, else each one's
        verdict.  Every accepted signature goes to the journal in one piece, and the marks
        move once per key, not once per frame; refusals and unbound records are counted."""
        key_ids, stamps, identities, removed, _lengths = accepted
        errors = self.verifier.admit_all(key_ids, stamps, identities, self.ingest.clock())
        if errors is not None:
            passed = [error is None for error in errors]
            key_ids, stamps, identities, removed = (list(compress(column, passed))
                                                    for column in accepted[:4])
        memory = self.memory
        if memory is not None and key_ids:
            memory.accepted_all(key_ids, stamps, identities)
        unbound = sum(removed)
        if unbound:
            self.ingest.reject(protocol.S_UNBOUND, "%s for VMs keys %r are not bound to"
                               % (counted(unbound, "record"), sorted({key_id[:40] for key_id, count
                                                   in zip(key_ids, removed, strict=True)
                                                   if count})), unbound)
        if errors is None:
            return None
        for error in errors:
            if error is not None:
                self.ingest.reject(error.reason, error.detail)
        return passed

    def unsigned(self, data: bytes) -> bool:
        """May unsigned data be ingested?  Counts its lines as sig_missing if not.

        Blank lines and comments are no records, signed or not: between the frames of a TCP
        stream they pass (and file nothing) rather than refuse the batch with ``auth`` for a
        reject no counter shows."""
        if not self.required:
            return True
        lines = unsigned_lines(data)
        if lines:
            self.ingest.reject(protocol.S_UNSIGNED, counted(lines, "unsigned line"), lines)
        return not lines
