"""Signed frames' checks that need no server state, run wherever the records are parsed.

A signed frame costs an HMAC over its payload, about what parsing the payload
costs, so with ``--auth-keys`` the parser processes check the frames they
read or are handed (``check_frames``) on every core, as they parse.  What
needs one memory for all of them -- has this nonce been accepted before, is
the frame signed after its key's last signature before a restart -- stays in
the reactor (``auth.Authenticator.admit``), which sees every accepted frame
in arrival order: a replay reaching another parser than the original is
still caught there, once.

Here: the key file (``load_keys``), the VMs each key may speak for
(``VmPatterns``, ``bound_lines``), and the stateless checks in the
protocol's order -- unknown key, HMAC, freshness (``FrameCheck``).  This
module imports nothing from Twisted: parser processes load it.
"""

import hmac
import ipaddress
import marshal
import re
from collections.abc import Iterable

from vmstats import protocol
from vmstats.selectors import selected
from vmstats.server.parse import Parsed, Parser

_digest, _compare = hmac.digest, hmac.compare_digest
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


#: What a parser answers for signed frames: the ``Parsed`` columns of the accepted frames'
#: payloads joined (None if none, or if parsing failed), those payloads (bound lines removed),
#: each one's ``(key_id, ts, nonce, records removed as unbound)``, and the refused frames'
#: ``(reason, detail, count)``.  Plain tuples and lists, so ``marshal`` carries it.
Checked = tuple[Parsed | None, list, list, list]


class FrameCheck:
    """Key, HMAC and freshness of signed frames: the checks any process can make alone."""

    def __init__(self, keys: dict[bytes, Key], window: int):
        self.keys = keys
        self.window = window

    def check(self, key_id: bytes, ts: bytes, nonce: bytes, mac: bytes, payload: bytes,
              now: float) -> tuple[bytes, int]:
        """``(payload without the records of VMs the key is not bound to, how many removed)``.

        Raises ``protocol.SignatureError`` (unknown key, bad HMAC, stale) in
        the protocol's order; the replay check is the reactor's.
        """
        key = self.keys.get(key_id)
        if key is None:
            raise protocol.SignatureError(protocol.S_UNKNOWN_KEY, "unknown key id %r" % key_id[:40])
        # One-shot C HMAC, the digest named by a string (a constructor is the slower path).
        expected = _digest(key.secret, b"sig1 %s %s %s\n%s" % (key_id, ts, nonce, payload),
                           "sha256").hex().encode("ascii")
        if not _compare(expected, mac):
            raise protocol.SignatureError(protocol.S_BAD, "signature does not match")
        if abs(int(ts) - now) > self.window:
            stale(ts, now, self.window)
        if key.vms is None:
            return payload, 0
        return bound_lines(key.vms, payload)


def stale(ts: bytes, now: float, window: int) -> None:
    """Raise S_STALE if a frame signed at ``ts`` is outside the window around ``now``."""
    stamp = int(ts)
    if abs(stamp - now) > window:
        raise protocol.SignatureError(protocol.S_STALE, "signed %ds from server time"
                                      % (stamp - now))


def check_frames(checker: FrameCheck, parser: Parser, frames: list[tuple], now: float) -> Checked:
    """Check ``frames`` (``split_signed``'s first five parts each) and parse what passed, joined.

    One parse for all of them, as for plain datagrams: a frame's fixed cost
    is then its HMAC, not a parse of its own.
    """
    payloads: list[bytes] = []
    accepted: list[tuple] = []
    refused: list[tuple] = []
    for key_id, ts, nonce, mac, payload in frames:
        try:
            payload, removed = checker.check(key_id, ts, nonce, mac, payload, now)
        except protocol.SignatureError as exc:
            refused.append((exc.reason, exc.detail, 1))
            continue
        payloads.append(payload)
        accepted.append((key_id, ts, nonce, removed))
    parsed = parser.parse(b"\n".join(payloads), now) if payloads else None
    return parsed, payloads, accepted, refused


def split_frames(data: bytes) -> list[tuple]:
    """Frames laid end to end (what the reactor hands a parser) as ``split_signed`` parts."""
    frames = []
    while data:
        parts = protocol.split_signed(data)
        if not parts:  # the reactor splits what it sends: a bug, not input
            raise ValueError("not a whole signed frame")
        frames.append(parts[:5])
        data = parts[5]
    return frames


def unsigned_lines(data: bytes) -> int:
    """Record lines of ``data`` (not blank, not ``#``): each is a sig_missing reject."""
    return sum(1 for line in data.split(b"\n") if line and line[:1] != b"#")


def keys_config(keys: dict[bytes, Key], window: int) -> bytes:
    """The keys and window as a parser process is given them (on its stdin, never argv)."""
    return marshal.dumps((window, [(key_id, key.secret, None if key.vms is None else key.vms.text)
                                   for key_id, key in keys.items()]))


def checker_from(config: bytes) -> FrameCheck:
    window, keys = marshal.loads(config)
    return FrameCheck({key_id: Key(secret, None if vms is None else VmPatterns(vms))
                       for key_id, secret, vms in keys}, window)
