"""Signed frames on the server side: the key file, the VMs each key may speak for, and a memory
of accepted signatures that survives a restart.

The framing and the HMAC are the protocol's (``vmstats.protocol``); what lives here is the
server's policy around them, kept out of the listeners' receive loops so that any process that
checks signatures (the reactor today, parser processes later) calls the same functions:

* ``load_keys`` reads ``key_id secret [vm-pattern ...]`` lines; a key with patterns is *bound*:
  its signature vouches only for records of matching VMs (``VmPatterns``, ``bound_lines``).
* ``SignatureMemory`` makes replay protection hold across restarts.  Each accepted signature is
  appended to the journal as a ``#!seen key_id ts nonce`` line, in the same once-per-turn write
  as the records (no file I/O of its own on the receive path), and before the journal deletes
  segments the highest signed time per key is written to ``DIR/signatures``.  At start the
  leftover segments give back the exact signatures accepted since, and the marks file a floor
  per key for everything older: a frame signed at or before its key's floor is a replay.
"""

import ipaddress
import logging
import os
import re
import tempfile
from collections.abc import Iterable

from twisted.internet import task

from vmstats import protocol
from vmstats.selectors import selected
from vmstats.server.journal import read_segments
from vmstats.server.metrics import RateLimitedLog

log = logging.getLogger(__name__)

#: A journal line recording an accepted signature (a comment to every line-protocol reader).
SEEN_PREFIX = b"#!seen "
#: The per-key floors, in the journal directory.
MARKS_FILE = "signatures"
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_GLOB_CHARS = frozenset("*?[")
#: Verdicts remembered per bound key; cleared when full (a fleet has a bounded set of VM ids).
_VERDICT_CACHE = 65536


class VmPatterns:
    """The VM ids a key is bound to: exact ids, shell globs (``web-*``) and CIDRs (``10.1.0.0/16``).

    Ids are compared in their canonical form (``protocol.normalize_vm_id``), so ``::FFFF:1.2.3.4``
    in a record and ``::ffff:102:304`` in the key file are the same VM.
    """

    def __init__(self, patterns: Iterable[str]):
        self.text = list(patterns)
        self.globs: list[str] = []
        self.networks: list = []
        for pattern in self.text:
            if "/" in pattern:
                self.networks.append(ipaddress.ip_network(pattern, strict=False))
            elif _GLOB_CHARS.intersection(pattern):
                self.globs.append(pattern)
            else:  # an exact id: canonical, like the ids it is compared with
                self.globs.append(protocol.normalize_vm_id(pattern))
        self._verdicts: dict[bytes, bool] = {}

    def allows_raw(self, raw: bytes) -> bool:
        """Is the VM id as it appears in a record (``vm=`` tag value) one of ours?"""
        verdict = self._verdicts.get(raw)
        if verdict is None:
            if len(self._verdicts) >= _VERDICT_CACHE:
                self._verdicts.clear()
            try:
                vm = protocol.normalize_vm_id(raw.decode("ascii"))
            except (UnicodeDecodeError, protocol.DecodeError):
                vm = None  # a bound key vouches only for ids it can be checked against
            verdict = self._verdicts[raw] = vm is not None and selected(vm, self.globs,
                                                                        self.networks)
        return verdict


class Key:
    """One line of the key file: the secret and, if bound, the VMs it may sign for."""

    __slots__ = ("secret", "vms")

    def __init__(self, secret: bytes, vms: VmPatterns | None = None):
        self.secret = secret
        self.vms = vms


def load_keys(path: str) -> dict[bytes, Key]:
    """Read the server's key file: ``key_id secret [vm-pattern ...]`` per line, ``#`` comments.

    Raises ValueError with the file and line on anything malformed.
    """
    keys: dict[bytes, Key] = {}
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split()
            if len(parts) < 2 or not _KEY_ID.match(parts[0]):
                raise ValueError("%s:%d: expected 'key_id secret [vm-pattern ...]'" % (path, number))
            try:
                vms = VmPatterns(parts[2:]) if len(parts) > 2 else None
            except (ValueError, protocol.DecodeError) as exc:
                raise ValueError("%s:%d: bad VM pattern: %s" % (path, number, exc)) from None
            keys[parts[0].encode("ascii")] = Key(parts[1].encode("utf-8"), vms)
    if not keys:
        raise ValueError("%s: no keys" % path)
    return keys


def _vm_tags(line: bytes) -> list[bytes]:
    """The values of the ``vm`` tags of a record line (its first space-separated part)."""
    tags = line.split(b" ", 1)[0].rstrip(b"\r").split(b",")[1:]
    return [tag[3:] for tag in tags if tag[:3] == b"vm="]


def bound_lines(vms: VmPatterns, payload: bytes) -> tuple[bytes, int]:
    """The payload without the records of VMs ``vms`` does not allow, and how many were removed.

    A line without a ``vm`` tag is left for the parser to reject; a line with any ``vm`` tag
    outside the binding (or one that is no valid id) is removed.
    """
    kept: list[bytes] = []
    removed = 0
    for line in payload.split(b"\n"):
        if line and line[:1] != b"#" and not all(map(vms.allows_raw, _vm_tags(line))):
            removed += 1
        else:
            kept.append(line)
    return (b"\n".join(kept) if removed else payload), removed


class Verifier(protocol.SignatureVerifier):
    """The protocol's verifier plus floors: per key, the last signed time before a restart."""

    def __init__(self, keys: dict[bytes, Key], window: int, clock):
        super().__init__({key_id: key.secret for key_id, key in keys.items()}, window, clock)
        self.floors: dict[bytes, int] = {}

    def verify(self, key_id, ts, nonce, mac, payload, now=None):
        super().verify(key_id, ts, nonce, mac, payload, now)
        floor = self.floors.get(key_id)
        if floor is not None and int(ts) <= floor:
            raise protocol.SignatureError(
                protocol.S_REPLAY, "signed at %s, not after %d: the last signature of key %r "
                "before the restart" % (ts.decode("ascii", "replace"), floor, key_id[:40]))

    def remember(self, key_id: bytes, nonce: bytes, stamp: int) -> None:
        """A signature accepted before the restart (read back from the journal)."""
        self._seen[(key_id, nonce)] = stamp


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

    Every check of a frame (signature, freshness, replay, the VMs its key may speak for) is
    here; the listeners only call ``frame`` and ``unsigned`` and submit what they return.
    """

    def __init__(self, ingest, keys: dict[bytes, Key] | dict[bytes, bytes] | None, window: int):
        self.ingest = ingest
        self.required = bool(keys)
        self.keys: dict[bytes, Key] = {k: v if isinstance(v, Key) else Key(v)
                                       for k, v in (keys or {}).items()}
        self.verifier = Verifier(self.keys, window, ingest.clock) if keys else None
        self.memory: SignatureMemory | None = None

    def remember_in(self, directory: str, journal, reactor) -> SignatureMemory | None:
        """Keep the memory of accepted signatures in ``directory`` (the journal's)."""
        if self.verifier is not None:
            self.memory = SignatureMemory(directory, journal, self.verifier, reactor)
        return self.memory

    def frame(self, key_id, ts, nonce, mac, payload) -> tuple[bytes | None, int]:
        """``(payload to ingest or None, records removed)``; every refusal is counted.

        ``removed`` counts records of VMs the key is not bound to: they are final rejects, not a
        reason to refuse the whole frame (a resend would not change them).
        """
        if self.verifier is None:
            return payload, 0  # signatures are optional without --auth-keys: not checked
        try:
            self.verifier.verify(key_id, ts, nonce, mac, payload)
        except protocol.SignatureError as exc:
            self.ingest.reject(exc.reason, exc.detail)
            return None, 0
        if self.memory is not None:
            self.memory.accepted(key_id, ts, nonce)
        vms = self.keys[key_id].vms
        if vms is None:
            return payload, 0
        payload, removed = bound_lines(vms, payload)
        if removed:
            self.ingest.reject(protocol.S_UNBOUND, "%d records for VMs key %r is not bound to"
                               % (removed, key_id[:40]), removed)
        return payload, removed

    def unsigned(self, data: bytes) -> bool:
        """May unsigned data be ingested?  Counts its lines as sig_missing if not."""
        if not self.required:
            return True
        lines = sum(1 for line in data.split(b"\n") if line and line[:1] != b"#")
        if lines:
            self.ingest.reject(protocol.S_UNSIGNED, "%d unsigned lines" % lines, lines)
        return False
