"""Signed frames' checks that need no server state, run wherever the records are parsed.

A signed frame costs an HMAC over its payload, about what parsing the payload
costs, so with ``--auth-keys`` the parser processes check the frames they
read or are handed (``check_frames``) on every core, as they parse.  What
needs one memory for all of them -- has this frame been accepted before, is
it signed after its key's last signature before a restart -- stays in the
reactor (``auth.Authenticator.admit_all``), which sees every accepted frame
in arrival order: a replay reaching another parser than the original is
still caught there, once.

Here: the key file (``load_keys``), the VMs each key may speak for
(``VmPatterns``, ``bound_lines``), and the stateless checks in the
protocol's order -- unknown key, HMAC, freshness (``check_frames``).  This
module imports nothing from Twisted: parser processes load it.

A one-record datagram makes a frame per record, so the per-frame cost is
the signed ingest's cost.  The usual header is read by one regex
(``read_frame``), not ``protocol.split_signed``'s split and tests, and the
HMAC starts from each key's padded states computed once (``Key.inner``,
``Key.outer``): a copy and an update each, about half of a one-shot
``hmac.digest``, which pads the key again for every frame.  Where the
package was built with its C part (``_framecheck.c``), a batch's frames are
read and their HMACs computed there instead (~0.4 us a datagram against
~1.9): this module's Python is the reference it is tested against, and what
runs without it.  What passes
goes to the reactor as columns (``Accepted``) and one joined payload, which
it admits with C-level set operations.
"""

import hashlib
import hmac
import ipaddress
import marshal
import re
from collections import deque
from collections.abc import Iterable
from operator import attrgetter

from vmstats import inputfile, protocol
from vmstats.selectors import selected
from vmstats.server import native
from vmstats.server.formats import misdirected
from vmstats.server.parse import Parsed, Parser
from vmstats.words import counted

#: The version of _framecheck.c this module calls (its VERSION): raised with every change to
#: what passes between them, so that a build of an older source is refused (native.py).
FRAMECHECK_VERSION = 1
#: The C fast path (setup.py); the same answers, ~1.6 us a datagram less.  None where it was
#: not built (no C compiler or OpenSSL's headers).
_native = native.load("_framecheck", FRAMECHECK_VERSION)

_compare = hmac.compare_digest
#: SHA-256's block: HMAC pads (or first hashes) its key to this length.
_BLOCK = 64
#: ``protocol.split_signed``'s reading of a header, in one match: the frame's identity
#: (``<key_id> <ts> <nonce>``, what its HMAC covers after ``sig1 ``), within it the key id and
#: the time, then the payload's length and the HMAC.  What it does not match (an empty part, a
#: header split differently) goes to ``split_signed``, which names what is wrong.
_HEADER = re.compile(rb"#!sig1 (([^ \n]+) ([0-9]+) [^ \n]+) ([0-9]+) ([^ \n]{64})\n")
#: A batch of datagrams joined with NULs (none of them holding one), read by one ``findall``:
#: ``_HEADER`` at each datagram's start, then its payload, to the next NUL or the end.  A
#: datagram that is no whole frame leaves its NUL to no match, so the matches are fewer than
#: the datagrams; the header's parts exclude the NUL so that no match spans two datagrams.
_DATAGRAMS = re.compile(rb"(?:\A|\0)#!sig1 (([^ \n\0]+) ([0-9]+) [^ \n\0]+) ([0-9]+) "
                        rb"([^ \n\0]{64})\n([^\0]*)")
#: What every signed message begins with (``protocol._sig_message``); ``Key.inner`` holds it.
_SIGNED_PREFIX = b"sig1 "
#: The hash objects' methods, called by ``map`` over a batch's frames (hashlib's sha256 type).
_HASH = type(hashlib.sha256())
_COPY, _UPDATE, _DIGEST, _HEXDIGEST = _HASH.copy, _HASH.update, _HASH.digest, _HASH.hexdigest
_INNER, _OUTER, _BINDING = attrgetter("inner"), attrgetter("outer"), attrgetter("vms")
_PADS = attrgetter("pads")
KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
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
    """One line of the key file: the secret and, if bound, the VMs it may sign for.

    ``inner`` and ``outer`` are HMAC-SHA256's two hashes with the padded key
    already taken in (RFC 2104), ``inner`` with the ``sig1 `` every signed
    message begins with too: a frame's HMAC copies them (``hex_macs``).  ``pads``
    is the padded key XORed with each pad, what the C fast path starts from.
    """

    __slots__ = ("secret", "vms", "inner", "outer", "pads")

    def __init__(self, secret: bytes, vms: VmPatterns | None = None):
        self.secret = secret
        self.vms = vms
        padded = (hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret) \
            .ljust(_BLOCK, b"\0")
        ipad, opad = bytes(byte ^ 0x36 for byte in padded), bytes(byte ^ 0x5C for byte in padded)
        self.inner = hashlib.sha256(ipad + _SIGNED_PREFIX)
        self.outer = hashlib.sha256(opad)
        self.pads = ipad + opad

    def mac(self, identity: bytes, payload: bytes) -> bytes:
        """The hex HMAC-SHA256 of ``sig1 <identity>\\n<payload>`` (``protocol.sign_payload``'s)."""
        return hex_macs([self], [identity], [payload])


def load_keys(path: str) -> dict[bytes, Key]:
    """Read the server's key file: ``key_id secret [vm-pattern ...]`` per line, ``#`` comments.

    Raises ValueError with the file and line on anything malformed, and with the file and the
    problem when it cannot be read or is not UTF-8 (``inputfile``): one line, never a traceback.
    A key id given twice is malformed too: the later line's secret and VMs would silently
    replace the earlier's, voiding the secret the agents hold or widening what the key signs.
    """
    keys: dict[bytes, Key] = {}
    lines: dict[bytes, int] = {}  # key id -> the line that gave it
    for number, text in enumerate(inputfile.read_text(path).split("\n"), 1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        parts = text.split()
        if len(parts) < 2 or not KEY_ID.match(parts[0]):
            raise ValueError("%s:%d: expected 'key_id secret [vm-pattern ...]'" % (path, number))
        if not parts[1].isprintable():  # the agent refuses such a secret: no VM could share it
            raise ValueError("%s:%d: the secret holds control characters" % (path, number))
        try:
            vms = VmPatterns(parts[2:]) if len(parts) > 2 else None
        except (ValueError, protocol.DecodeError) as exc:
            raise ValueError("%s:%d: bad VM pattern: %s" % (path, number, exc)) from None
        key_id = parts[0].encode("ascii")
        if key_id in lines:  # which secret, and which VMs? The later line would win unseen.
            raise ValueError("%s:%d: key %r given twice (first on line %d): one line per key; "
                             "to rotate, add the new secret under a new key id"
                             % (path, number, parts[0], lines[key_id]))
        lines[key_id] = number
        keys[key_id] = Key(parts[1].encode("utf-8"), vms)
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


#: A frame as read (``read_frame``): key id, time, identity (``<key_id> <ts> <nonce>``, what a
#: replay repeats and the journal keeps), HMAC, payload.
Frame = tuple[bytes, bytes, bytes, bytes, bytes]
#: Frames as five lists, one per part of a ``Frame``.
Columns = tuple[list, list, list, list, list]
#: The frames that passed a parser's checks, as columns: key ids, signed times (int),
#: identities, the records of each removed as unbound, and the length of each one's payload
#: (bound lines removed) in the joined payload.
Accepted = tuple[list, list, list, list, list]
#: What a parser answers for signed frames: the ``Parsed`` columns of the accepted frames'
#: payloads (None if none, or if parsing failed), those payloads joined with newlines, their
#: ``Accepted`` columns, and the refused frames' ``(reason, detail, count)``.  Plain tuples and
#: lists, so ``marshal`` carries it.
Checked = tuple[Parsed | None, bytes, Accepted, list]


class FrameCheck:
    """The keys and the window: what any process needs to check frames alone."""

    def __init__(self, keys: dict[bytes, Key], window: int):
        self.keys = keys
        self.window = window


def read_frame(data: bytes, pos: int = 0) -> tuple[Frame, int] | None | bool:
    """The frame at ``pos`` of ``data`` and where it ends; what ``protocol.split_signed`` says
    otherwise: None (no frame starts there), False (incomplete), or SignatureError (malformed).
    """
    found = _HEADER.match(data, pos)
    if found is not None:
        start = found.end()
        end = start + int(found[4])
        if end <= len(data) and end - start <= protocol.MAX_DATAGRAM_SIZE:
            identity, key_id, ts, _length, mac = found.groups()
            return (key_id, ts, identity, mac, data[start:end]), end
    parts = protocol.split_signed(data[pos:] if pos else data)
    if not parts:
        return parts
    return ((parts[0], parts[1], b"%s %s %s" % parts[:3], parts[3], parts[4]),
            len(data) - len(parts[5]))


def datagram_frames(batch: list[bytes]) -> tuple[Columns, list[tuple]]:
    """Datagrams under --auth-keys, each one whole signed frame: ``(frames as columns, refused)``.

    ``refused`` holds ``(reason, detail, count)``: malformed frames, HTTP
    requests (``http_request``, as without --auth-keys: ``unsigned_refused``), and
    the lines of other unsigned datagrams (each a sig_missing reject).  When every
    datagram is a frame with the usual header, the columns come from C-level
    ``map`` calls over the batch, no Python step per datagram.
    """
    if batch:
        found = _usual_frames(batch)
        if found is not None:
            return found, []
    frames: list[Frame] = []
    refused: list[tuple] = []
    unsigned = 0
    for data in batch:
        if data[:7] != protocol.SIG_PREFIX:
            lines, request = unsigned_refused(data)
            unsigned += lines
            if request is not None:
                refused.append(request)
            continue
        try:
            read = read_frame(data)
        except protocol.SignatureError as exc:
            refused.append((exc.reason, exc.detail, 1))
            continue
        if not read or read[1] != len(data):
            refused.append((protocol.S_MALFORMED, "datagram length does not match its frame", 1))
            continue
        frames.append(read[0])
    if unsigned:
        refused.append((protocol.S_UNSIGNED, counted(unsigned, "unsigned line"), unsigned))
    return columns(frames), refused


def _usual_frames(batch: list[bytes]) -> Columns | None:
    """The columns of a batch whose every datagram is a whole frame with the usual header, in
    one pass over the batch (C, or one regex); None for any other batch."""
    if _native is not None:
        return _native.datagram_frames(batch, protocol.MAX_DATAGRAM_SIZE)
    joined = b"\0".join(batch)
    found = _DATAGRAMS.findall(joined) if joined.count(b"\0") == len(batch) - 1 else ()
    if len(found) == len(batch):
        identities, key_ids, tss, lengths, macs, payloads = map(list, zip(*found, strict=True))
        sizes = list(map(len, payloads))
        if list(map(int, lengths)) == sizes and max(sizes) <= protocol.MAX_DATAGRAM_SIZE:
            return key_ids, tss, identities, macs, payloads
    return None


def columns(frames: list[Frame]) -> Columns:
    """Frames as five columns (``check_frames``' argument)."""
    if not frames:
        return [], [], [], [], []
    key_ids, tss, identities, macs, payloads = map(list, zip(*frames, strict=True))
    return key_ids, tss, identities, macs, payloads


def check_frames(checker: FrameCheck, parser: Parser, frames: Columns, now: float) -> Checked:
    """Check ``frames`` in the protocol's order (unknown key, HMAC, freshness), remove the
    records of VMs a bound key may not write, and parse what passed, joined.

    One parse for all of them, as for plain datagrams: a frame's fixed cost
    is then its HMAC, not a parse of its own.  When every frame passes (the
    usual case) the checks are C-level ``map`` calls over the columns
    (``_all_pass``); otherwise each frame is checked in turn, and refused
    with its reason.  The replay check is the reactor's.
    """
    key_ids, tss, identities, macs, payloads = frames
    keys = list(map(checker.keys.get, key_ids))
    stamps = _all_pass(checker.window, keys, tss, identities, macs, payloads, now)
    if stamps is not None:
        removed = [0] * len(keys)
        if any(map(_BINDING, keys)):
            for index, key in enumerate(keys):
                if key.vms is not None:
                    payloads[index], removed[index] = bound_lines(key.vms, payloads[index])
        refused: list[tuple] = []
    else:
        payloads, (key_ids, stamps, identities, removed), refused = _each(checker.window, keys,
                                                                          frames, now)
    joined = b"\n".join(payloads)
    # A payload holding an HTTP request (a sender that signs what it joins): cut there, as an
    # unsigned datagram is.  One memchr for the batch: no valid record holds "/".
    if b"/" in joined and b" HTTP/" in joined:
        payloads, requests = _without_requests(payloads)
        refused = refused + requests
        joined = b"\n".join(payloads)
    parsed = parser.parse(joined, now) if payloads else None
    return (parsed, joined, (key_ids, stamps, identities, removed, list(map(len, payloads))),
            refused)


def _without_requests(payloads: list[bytes]) -> tuple[list[bytes], list[tuple]]:
    """Frames' payloads, each up to its HTTP request if it holds one (misdirected.cut), and
    ``(http_request, detail, 1)`` for each request.  The frame itself passed its checks and
    stays accepted (its signature is remembered, the records before the request filed): its
    request's headers are neither parsed, quoted in the log, nor journaled."""
    kept: list[bytes] = []
    requests: list[tuple] = []
    for payload in payloads:
        payload, what = misdirected.cut(payload)
        kept.append(payload)
        if what is not None:
            requests.append((protocol.R_HTTP, misdirected.words("native", what, "signed frame"),
                             1))
    return kept, requests


def _all_pass(window: int, keys: list, tss: list, identities: list, macs: list, payloads: list,
              now: float) -> list[int] | None:
    """The signed times of the frames if every one has a known key, its HMAC and is fresh;
    else None."""
    if not keys or None in keys:
        return None
    stamps = list(map(int, tss))
    if min(stamps) < now - window or max(stamps) > now + window:
        return None
    # Every HMAC is 64 hex digits: the joined ones are equal if and only if each one is.
    if not _compare(hex_macs(keys, identities, payloads), b"".join(macs)):
        return None
    return stamps


def hex_macs(keys: list, identities: list, payloads: list) -> bytes:
    """The hex HMACs of frames (``Key.mac``'s), joined: C-level calls over the batch either way."""
    if _native is not None:
        return _native.hex_macs(list(map(_PADS, keys)), identities, payloads)
    inners = list(map(_COPY, map(_INNER, keys)))
    deque(map(_UPDATE, inners, map(b"%s\n%s".__mod__, zip(identities, payloads, strict=True))),
          0)
    outers = list(map(_COPY, map(_OUTER, keys)))
    deque(map(_UPDATE, outers, map(_DIGEST, inners)), 0)
    return "".join(map(_HEXDIGEST, outers)).encode("ascii")


def _each(window: int, keys: list, frames: Columns, now: float) -> tuple[list, Accepted, list]:
    """``check_frames`` a frame at a time: ``(payloads, accepted, refused)``."""
    payloads: list[bytes] = []
    key_ids: list[bytes] = []
    stamps: list[int] = []
    identities: list[bytes] = []
    removed: list[int] = []
    refused: list[tuple] = []
    for key, (key_id, ts, identity, mac, payload) in zip(keys, zip(*frames, strict=True),
                                                         strict=True):
        if key is None:
            refused.append((protocol.S_UNKNOWN_KEY, "unknown key id %r" % key_id[:40], 1))
            continue
        if not _compare(key.mac(identity, payload), mac):
            refused.append((protocol.S_BAD, "signature does not match", 1))
            continue
        stamp = int(ts)
        try:
            stale(stamp, now, window)
        except protocol.SignatureError as exc:
            refused.append((exc.reason, exc.detail, 1))
            continue
        unbound = 0
        if key.vms is not None:
            payload, unbound = bound_lines(key.vms, payload)
        payloads.append(payload)
        key_ids.append(key_id)
        stamps.append(stamp)
        identities.append(identity)
        removed.append(unbound)
    return payloads, (key_ids, stamps, identities, removed), refused


def stale(stamp: int, now: float, window: int) -> None:
    """Raise S_STALE if a frame signed at ``stamp`` is outside the window around ``now``."""
    if abs(stamp - now) > window:
        raise protocol.SignatureError(protocol.S_STALE, "signed %ds from server time"
                                      % (stamp - now))


def split_frames(data: bytes) -> Columns:
    """Frames laid end to end (what the reactor hands a parser), as ``read_frame`` reads them."""
    frames = []
    pos = 0
    while pos < len(data):
        read = read_frame(data, pos)
        if not read:  # the reactor splits what it sends: a bug, not input
            raise ValueError("not a whole signed frame")
        frame, pos = read
        frames.append(frame)
    return columns(frames)


def unsigned_refused(data: bytes) -> tuple[int, tuple[str, str, int] | None]:
    """What the unsigned datagram ``data`` is refused as: its record lines (``unsigned_lines``,
    each a sig_missing reject) and, if it holds an HTTP request (curl, or a client given the
    native UDP port for the HTTP port's), ``(http_request, detail, 1)``.  The request is counted
    as what it is, once, as without --auth-keys, named by its method and path only
    (misdirected.py); only the lines before it count as unsigned, wherever in the datagram it
    comes.  Before, only the first line was looked at: a request after records counted a
    sig_missing for each of its header lines."""
    kept, what = misdirected.cut(data)
    lines = unsigned_lines(kept) if kept else 0
    if what is None:
        return lines, None
    return lines, (protocol.R_HTTP, misdirected.words("native", what, "UDP"), 1)


def unsigned_lines(data: bytes) -> int:
    """Record lines of ``data`` (not blank, not ``#``): each is a sig_missing reject.  A lone
    ``\r`` is a blank line that ended in CRLF."""
    return sum(1 for line in data.split(b"\n") if line and line[:1] != b"#" and line != b"\r")


def native_checks() -> bool:
    """Are frames read and HMACs computed by the C part (built with the package)?"""
    return _native is not None


def keys_config(keys: dict[bytes, Key], window: int) -> bytes:
    """The keys and window as a parser process is given them (on its stdin, never argv)."""
    return marshal.dumps((window, [(key_id, key.secret, None if key.vms is None else key.vms.text)
                                   for key_id, key in keys.items()]))


def checker_from(config: bytes) -> FrameCheck:
    window, keys = marshal.loads(config)
    return FrameCheck({key_id: Key(secret, None if vms is None else VmPatterns(vms))
                       for key_id, secret, vms in keys}, window)
