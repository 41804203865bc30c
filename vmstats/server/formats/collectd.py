"""collectd's binary network protocol (the ``network`` plugin), plain, signed and encrypted.

A packet is a sequence of parts, each ``type (u16) length (u16, header
included) body``, big-endian.  String parts (host 0x0000, plugin 0x0002,
plugin instance 0x0003, type 0x0004, type instance 0x0005) are
NUL-terminated; time (0x0001, seconds) and interval (0x0007) are u64, their
high-resolution forms (0x0008, 0x0009) u64 in 2^-30 s.  These set the
identity of the value lists that follow; a values part (0x0006) is ``count
(u16)``, ``count`` data-source type bytes, then ``count`` 8-byte values:
COUNTER (0) and ABSOLUTE (3) u64 and DERIVE (2) s64 big-endian, GAUGE (1) a
little-endian double.  Notifications (0x0100, 0x0101) are skipped.

A signed packet starts with a signature part (0x0200): the HMAC-SHA256 (32
bytes) then the user name; the HMAC, keyed with the user's password, covers
the user name and everything after the part.  An encrypted part (0x0210)
holds ``user name length (u16)``, the user name, a 16-byte IV, then with
AES-256 in OFB mode (key: SHA-256 of the password) the SHA-1 of the payload
followed by the payload, which is a packet of its own.  Decryption needs
the ``cryptography`` library (the ``collectd`` extra); signing does not.

collectd signs or encrypts a packet once: a signature part inside a signed or
encrypted packet, or an encrypted part inside an encrypted one, is ``syntax``
(nested a thousand deep, they cost an HMAC of the rest each and exhausted the
interpreter's recursion).

Mapped plugins (everything else is counted as ignored, per value list):

| plugin / type | vmstats |
|---|---|
| ``cpu`` / ``cpu`` (jiffies) | cpu = busy share of all states' rates (idle, wait idle); vcpus |
| ``cpu`` / ``percent`` | the same from the states' percentages; ``active`` is cpu itself |
| ``memory`` / ``memory`` | mem = used / the sum of all kinds; mem_mb = that sum |
| ``memory`` / ``percent`` | mem = ``used`` |
| ``interface`` / ``if_octets`` | net_rx / net_tx: rates of rx / tx, loopback left out |
| ``disk`` / ``disk_octets`` | disk_r / disk_w: rates of read / write, whole disks summed |
"""

import hashlib
import hmac
import struct

from vmstats import inputfile, protocol
from vmstats.client.procfs import LOOPBACK_INTERFACES
from vmstats.server.formats import (
    CPU_STATE,
    IGNORED,
    MEM_PART,
    R_BAD_VM,
    R_DECRYPT,
    R_NON_FINITE,
    R_SIGNATURE,
    R_SYNTAX,
    R_TRUNCATED,
    R_UNSIGNED,
    TOTAL,
    USED,
    Decoder,
    Sample,
    Tally,
    VmIds,
    Words,
)

HOST, TIME, PLUGIN, PLUGIN_INSTANCE, TYPE, TYPE_INSTANCE, VALUES, INTERVAL = range(8)
TIME_HR, INTERVAL_HR = 8, 9
MESSAGE, SEVERITY = 0x100, 0x101
SIGNATURE, ENCRYPTION = 0x200, 0x210
COUNTER, GAUGE, DERIVE, ABSOLUTE = range(4)
SECURITY_LEVELS = ("none", "sign", "encrypt")
R_NO_VALUES = "no_values"
_STRINGS = {HOST: 0, PLUGIN: 2, PLUGIN_INSTANCE: 3, TYPE: 4, TYPE_INSTANCE: 5}
_HR = float(1 << 30)
_HEADER = struct.Struct("!HH")
_LOOPBACK = frozenset(LOOPBACK_INTERFACES)
_PAIRS = {("interface", "if_octets"): ("net_rx" + TOTAL, "net_tx" + TOTAL),
          ("disk", "disk_octets"): ("disk_r" + TOTAL, "disk_w" + TOTAL)}


class PacketError(ValueError):
    """A packet that is not collectd's; ``detail`` is often ``Words``, worded only if read."""

    def __init__(self, reason: str, detail: "str | Words"):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def load_auth_file(path: str) -> dict[str, str]:
    """collectd's AuthFile: ``user: password`` per line (``#`` comments).

    ValueError names the file (and the line) for all that is wrong with it, unreadable or not
    UTF-8 included (``inputfile``), so the server's start fails in one line.
    """
    users = {}
    for number, line in enumerate(inputfile.read_text(path).split("\n"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password.strip():
            raise ValueError("%s:%d: expected 'user: password'" % (path, number))
        users[user.strip()] = password.strip()
    if not users:
        raise ValueError("%s: no users" % path)
    return users


class CollectdDecoder(Decoder):
    """collectd packets to samples; ``security`` is the least a packet must have."""

    name = "collectd"
    title = "collectd"
    unit = "value list"
    #: The journal keeps the samples of a packet, not the packet (formats/journaling.py): a
    #: signed or encrypted one was verified by passwords a restart may no longer have (an auth
    #: file changed, or left out with the port), and one taken under a lower --collectd-security
    #: would be refused by a higher one; and the passwords must never be written to the journal.
    journal_samples = True

    def __init__(self, users: dict[str, str] | None = None, security: str = "none"):
        if security not in SECURITY_LEVELS:
            raise ValueError("security must be one of %s" % ", ".join(SECURITY_LEVELS))
        if security != "none" and not users:
            raise ValueError("collectd security %r needs an auth file" % security)
        self.users = {user.encode("utf-8"): password.encode("utf-8")
                      for user, password in (users or {}).items()}
        self.level = SECURITY_LEVELS.index(security)
        self.vm_ids = VmIds()
        #: ``lines`` of the ``decode`` under way (a decoder decodes one packet at a time).
        self._lines: list | None = None
        self._counted = 0

    def decode(self, data: bytes, now: float, tally: Tally,
               lines: list | None = None) -> list[Sample]:
        """Samples of every value list vmstats maps; ``lines`` numbers value lists (Decoder)."""
        out: list[Sample] = []
        before = sum(tally.counts.values())
        self._lines, self._counted = lines, before
        try:
            self._packet(data, 0, out, tally)
        except PacketError as exc:
            tally.reject(exc.reason, exc.detail)
        except (struct.error, IndexError) as exc:
            tally.reject(R_TRUNCATED, Words("packet ends inside a part (%s)", str(exc)))
        if sum(tally.counts.values()) == before:  # notifications only, or no parts at all
            tally.reject(R_NO_VALUES, Words("packet of %d bytes without values", len(data)))
        return out

    # -- the packet ------------------------------------------------------------------------------
    def _packet(self, data: bytes, level: int, out: list, tally: Tally) -> None:
        """Parts of ``data``, read with security ``level`` (0 plain, 1 signed, 2 encrypted)."""
        state = ["", 0.0, "", "", "", ""]  # host, time, plugin, plugin instance, type, instance
        pos = 0
        end = len(data)
        while pos + 4 <= end:
            kind, length = _HEADER.unpack_from(data, pos)
            if length < 4 or pos + length > end:
                raise PacketError(R_TRUNCATED, Words("part 0x%04x of %d bytes at %d in a %d-byte "
                                                     "packet", kind, length, pos, end))
            body = data[pos + 4:pos + length]
            if kind == SIGNATURE:
                if level:  # each layer would cost an HMAC of the rest and a level of recursion
                    raise PacketError(R_SYNTAX, "a signature part inside a signed or encrypted "
                                                "packet (collectd signs a packet once, first)")
                self._signed(data, pos, length, level, out, tally)
                return
            if kind == ENCRYPTION:
                if level == 2:
                    raise PacketError(R_SYNTAX, "an encrypted part inside an encrypted one "
                                                "(collectd encrypts a packet once)")
                self._encrypted(body, out, tally)
                pos += length
                continue
            if level < self.level:
                raise PacketError(R_UNSIGNED, "a %s packet where %s is required" % (
                    SECURITY_LEVELS[level] if level else "plain", SECURITY_LEVELS[self.level]))
            if kind in _STRINGS:
                if not body or body[-1] != 0:
                    raise PacketError(R_SYNTAX, Words("string part 0x%04x is not NUL-terminated", kind))
                try:
                    state[_STRINGS[kind]] = body[:-1].decode("utf-8")
                except UnicodeDecodeError:
                    raise PacketError(protocol.R_UTF8, "string part is not UTF-8") from None
            elif kind == TIME or kind == TIME_HR:
                if length != 12:
                    raise PacketError(R_SYNTAX, Words("time part of %d bytes", length))
                (value,) = struct.unpack_from("!Q", body)
                state[1] = value / _HR if kind == TIME_HR else float(value)
            elif kind == VALUES:
                self._values(state, body, out, tally)
            pos += length  # interval, notifications, unknown parts: nothing to take
        if pos != end:
            raise PacketError(R_TRUNCATED, Words("%d bytes after the last part", end - pos))

    def _signed(self, data: bytes, pos: int, length: int, level: int, out: list,
                tally: Tally) -> None:
        if length <= 36:
            raise PacketError(R_SIGNATURE, Words("signature part of %d bytes", length))
        mac = data[pos + 4:pos + 36]
        user = data[pos + 36:pos + length]
        password = self.users.get(user)
        if password is None:
            raise PacketError(R_SIGNATURE, "unknown user %r" % user[:40])
        expected = hmac.new(password, data[pos + 36:], hashlib.sha256).digest()
        if not hmac.compare_digest(expected, mac):
            raise PacketError(R_SIGNATURE, "HMAC-SHA256 does not match (wrong password?)")
        self._packet(data[pos + length:], max(level, 1), out, tally)

    def _encrypted(self, body: bytes, out: list, tally: Tally) -> None:
        if len(body) < 2:
            raise PacketError(R_DECRYPT, "encrypted part too short")
        (user_length,) = struct.unpack_from("!H", body)
        user = body[2:2 + user_length]
        iv = body[2 + user_length:18 + user_length]
        sealed = body[18 + user_length:]
        if user_length == 0 or len(iv) != 16 or len(sealed) <= 20:
            raise PacketError(R_DECRYPT, "encrypted part too short")
        password = self.users.get(user)
        if password is None:
            raise PacketError(R_DECRYPT, "unknown user %r" % user[:40])
        try:
            decryptor = _aes256_ofb(password, iv).decryptor()
        except ImportError:
            raise PacketError(R_DECRYPT, "encrypted packets need the cryptography library "
                                         "(pip install 'vmstats[collectd]')") from None
        plain = decryptor.update(sealed) + decryptor.finalize()
        checksum, payload = plain[:20], plain[20:]
        if not hmac.compare_digest(hashlib.sha1(payload).digest(), checksum):
            raise PacketError(R_DECRYPT, "checksum mismatch (wrong password?)")
        self._packet(payload, 2, out, tally)

    # -- one value list --------------------------------------------------------------------------
    def _values(self, state: list, body: bytes, out: list, tally: Tally) -> None:
        (count,) = struct.unpack_from("!H", body)
        if len(body) != 2 + 9 * count or count == 0:
            raise PacketError(R_SYNTAX, Words("values part of %d bytes for %d values", len(body), count))
        kinds = body[2:2 + count]
        values = []
        for index in range(count):
            offset = 2 + count + 8 * index
            kind = kinds[index]
            if kind == GAUGE:
                values.append(struct.unpack_from("<d", body, offset)[0])
            elif kind == DERIVE:
                values.append(struct.unpack_from("!q", body, offset)[0])
            elif kind in (COUNTER, ABSOLUTE):
                values.append(struct.unpack_from("!Q", body, offset)[0])
            else:
                raise PacketError(R_SYNTAX, Words("unknown data source type %d", kind))
        host, ts, plugin, instance, type_, type_instance = state
        mapped = _map(plugin, instance, type_, type_instance, kinds, values)
        if mapped is None:
            tally.counts[IGNORED] += 1
            return
        if any(value != value or value in (float("inf"), float("-inf")) for _k, _d, value in mapped):
            tally.reject(R_NON_FINITE, Words("%s/%s value is not finite", plugin, type_))
            return
        try:
            vm = self.vm_ids(host)
        except protocol.DecodeError as exc:
            tally.reject(R_BAD_VM, exc.detail)
            return
        if ts <= 0:
            tally.reject(R_SYNTAX, "value list before any time part")
            return
        if self._lines is not None:
            self._lines += len(out), sum(tally.counts.values()) - self._counted + 1
        for kind, device, value in mapped:
            out.append(Sample(vm, ts, kind, device, value))
        tally.counts[USED] += 1


def _aes256_ofb(password: bytes, iv: bytes):
    """collectd's cipher: AES-256 in OFB mode, keyed with the SHA-256 of the password.

    ImportError without the cryptography library.  OFB lives among its
    "decrepit" modes from version 43 on (kept for protocols like this one).
    """
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    try:
        from cryptography.hazmat.decrepit.ciphers.modes import OFB
    except ImportError:
        from cryptography.hazmat.primitives.ciphers.modes import OFB
    return Cipher(algorithms.AES(hashlib.sha256(password).digest()), OFB(iv))


def _map(plugin: str, instance: str, type_: str, type_instance: str, kinds: bytes,
         values: list) -> list[tuple[str, str, float]] | None:
    """``[(kind, device, value)]`` for a value list vmstats uses, else None."""
    if plugin == "cpu" and len(values) == 1:
        if type_ == "cpu" and kinds[0] in (COUNTER, DERIVE):
            return [(CPU_STATE + TOTAL, "%s:%s" % (instance, type_instance), values[0])]
        if type_ == "percent" and kinds[0] == GAUGE:
            if type_instance == "active":
                return [("cpu", instance, values[0])]
            return [(CPU_STATE, "%s:%s" % (instance, type_instance), values[0])]
        return None
    if plugin == "memory" and len(values) == 1 and kinds[0] == GAUGE:
        if type_ == "memory":
            return [(MEM_PART, type_instance, values[0])]
        if type_ == "percent" and type_instance == "used":
            return [("mem", "", values[0])]
        return None
    pair = _PAIRS.get((plugin, type_))
    if pair is not None and len(values) == 2 and kinds[0] in (COUNTER, DERIVE):
        if plugin == "interface" and instance in _LOOPBACK:
            return None
        return [(pair[0], instance, values[0]), (pair[1], instance, values[1])]
    return None


# -- building packets (tests and the benchmark send what collectd sends) --------------------------
def part_string(kind: int, text: str) -> bytes:
    data = text.encode("utf-8") + b"\0"
    return _HEADER.pack(kind, 4 + len(data)) + data


def part_number(kind: int, value: int) -> bytes:
    return _HEADER.pack(kind, 12) + struct.pack("!Q", value)


def part_values(values: list[tuple[int, float]]) -> bytes:
    """``[(data source type, value)]`` as a values part."""
    body = struct.pack("!H", len(values)) + bytes(kind for kind, _value in values)
    for kind, value in values:
        if kind == GAUGE:
            body += struct.pack("<d", value)
        elif kind == DERIVE:
            body += struct.pack("!q", int(value))
        else:
            body += struct.pack("!Q", int(value))
    return _HEADER.pack(VALUES, 4 + len(body)) + body


def sign(packet: bytes, user: str, password: str) -> bytes:
    """``packet`` behind a signature part, as collectd's ``SecurityLevel Sign`` sends it."""
    name = user.encode("utf-8")
    mac = hmac.new(password.encode("utf-8"), name + packet, hashlib.sha256).digest()
    return _HEADER.pack(SIGNATURE, 36 + len(name)) + mac + name + packet


def encrypt(packet: bytes, user: str, password: str, iv: bytes) -> bytes:
    """``packet`` as one encrypted part, as collectd's ``SecurityLevel Encrypt`` sends it."""
    name = user.encode("utf-8")
    encryptor = _aes256_ofb(password.encode("utf-8"), iv).encryptor()
    sealed = encryptor.update(hashlib.sha1(packet).digest() + packet) + encryptor.finalize()
    body = struct.pack("!H", len(name)) + name + iv + sealed
    return _HEADER.pack(ENCRYPTION, 4 + len(body)) + body
