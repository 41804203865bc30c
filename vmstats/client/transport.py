"""Getting records to the aggregator: UDP datagrams or acknowledged TCP batches.

UDP is fire-and-forget: records are packed into datagrams that never
fragment, and the ``seq`` field lets the server estimate what was lost.

TCP is reliable end to end (docs/PROTOCOL.md, "TCP acknowledgement"): every
record goes to the on-disk spool first; the oldest records are sent as a
batch followed by ``#!sync <token>``; only ``#!ack <token> ...`` removes them
from the spool.  ``#!nak``, a timeout or a lost connection keep the batch for
a later resend, which is harmless because the server keeps one record per
(vm, timestamp).  Reconnection backs off exponentially with jitter so a
fleet does not reconnect in lock-step after a server restart.

Standard library only, Python 3.6+.
"""

import collections
import errno
import logging
import os
import random
import re
import select
import socket
import time

from vmstats import protocol
from vmstats.words import counted

LOG = logging.getLogger("vmstats.agent")

#: A TCP batch stays well inside the largest payload the server accepts.
TCP_BATCH_BYTES = 32768
TCP_BATCH_RECORDS = 200
#: Room a signature header takes in a datagram: prefix, ts, nonce, length,
#: 64 hex digits and separators, plus the key id.
_SIG_OVERHEAD = 112
#: Records a TCP agent holds in memory while the disk refuses to spool them (a day of minutes,
#: ~300 KiB): the oldest beyond it are lost.
HELD_MAX = 1440
#: How long (s) a TCP connection to one of the server's addresses is waited for before the next
#: address is tried beside it (RFC 8305's "Connection Attempt Delay").
ATTEMPT_DELAY = 0.25
#: How often (s) a sender looks the server's name up again, so that an aggregator moved to a
#: new address (a DNS change) is followed without restarting the agents.
RESOLVE_EVERY = 300.0
#: A record stamped further ahead of this VM's clock than this (s) was stamped by a clock that
#: was ahead then: the agent stamps with the clock, a few seconds on at most after a step back.
AHEAD_SLACK = 5.0
#: What each reason a server gives for rejected records (protocol.reply_reasons) means for the
#: agent's own records, which are well formed: what it refuses is most often a stamp.
REASON_WORDS = {
    protocol.R_PAST: "stamped before the server's time window: before 2000-01-01 (made while "
                     "this VM's clock was not set) or older than its --max-past (spooled "
                     "longer than that)",
    protocol.R_FUTURE: "stamped further ahead of the server's clock than its --max-future: "
                       "this VM's clock was ahead (run NTP)",
    protocol.S_UNBOUND: "signed with a key the server does not bind to this VM id",
}


class TransportError(ValueError):
    """The server address or key cannot be used (one readable line)."""


class KeyFileError(TransportError):
    """The key file was read and is damaged: a bad setting, which no restart mends (exit 2),
    unlike a key file not there or not readable yet (provisioned after the agent started)."""


class DeliveryError(Exception):
    """A batch was not acknowledged; it stays in the spool."""


class Refused(DeliveryError):
    """The server answered ``#!nak``: the connection is fine, the batch waits."""


#: What no host name or address holds: a URL's scheme, user or path, a space.  A URL given as
#: the server (``http://stats:8899``) was looked up as a name, "cannot resolve", exit 1, and
#: the unit restarted the agent every 10 s for ever on a setting only an edit mends.
_NOT_IN_HOST_RE = re.compile(r"[/@?#\[\]\s]")


def parse_server(text):
    """``(host, port)`` from ``HOST:PORT``, ``[IPv6]:PORT`` or ``HOST`` (default port)."""
    text = (text or "").strip()
    if not text:
        raise TransportError("no server address (use --server HOST:PORT)")
    host, port = text, str(protocol.DEFAULT_PORT)
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1:] and not text[end + 1:].startswith(":")):
            raise TransportError("bad server address %r: expected [IPv6]:PORT" % text)
        host, port = text[1:end], text[end + 2:] or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text and not _ipv6(text):
        raise TransportError("bad server address %r: expected HOST:PORT, [IPv6]:PORT or an "
                             "IPv6 address%s" % (text, ", not a URL" if "://" in text else ""))
    if _NOT_IN_HOST_RE.search(host):
        raise TransportError("bad server address %r: expected HOST:PORT, not a URL or a path"
                             % text)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TransportError("bad server address %r: expected HOST:PORT with a port 1-65535" % text)
    return host, int(port)


def _ipv6(text):
    """Whether ``text`` is an IPv6 address (with a zone, ``fe80::1%eth0``, or not)."""
    try:
        socket.inet_pton(socket.AF_INET6, text.partition("%")[0])
    except (OSError, ValueError):
        return False
    return True


def stamp_of(line):
    """A record line's stamp (its last field, in seconds), or None."""
    tail = line.rpartition(b" ")[2]
    return protocol.normalize_timestamp(int(tail)) if tail.isdigit() else None


def resolve(host, port, kind):
    """The socket address of the server (first answer of the resolver)."""
    return addresses(host, port, kind)[0]


def addresses(host, port, kind):
    """``[(family, address)]`` of the server, in the resolver's order."""
    try:
        answers = socket.getaddrinfo(host, port, 0, kind)
    except (socket.gaierror, UnicodeError) as exc:
        raise TransportError("cannot resolve server %s: %s" % (host, getattr(exc, "strerror", exc)))
    return [(family, address) for family, _type, _proto, _name, address in answers]


def local_address(host, port):
    """The source address the kernel would use to reach ``host``.

    Connecting a UDP socket only chooses a route; no packet is sent.  This is
    the VM's id by default because the aggregator keys VMs by address.
    """
    family, address = resolve(host, port, socket.SOCK_DGRAM)
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect(address)
        return probe.getsockname()[0]
    except OSError as exc:
        raise TransportError("no route to server %s: %s" % (host, exc.strerror or exc))
    finally:
        probe.close()


class Signer(object):
    """Signs payloads with the one key of an agent's key file."""

    def __init__(self, key_id, secret):
        self.key_id = key_id
        self.secret = secret

    @classmethod
    def from_file(cls, path):
        try:
            keys = protocol.load_keys(path)
        except (IOError, OSError) as exc:
            raise TransportError("cannot read key file %s: %s" % (path, exc.strerror or exc))
        except (ValueError, UnicodeError) as exc:
            raise KeyFileError("bad key file: %s" % exc)
        if len(keys) != 1:
            raise KeyFileError("key file %s must hold exactly one key for the agent, not %d"
                               % (path, len(keys)))
        key_id, secret = list(keys.items())[0]
        return cls(key_id, secret)

    @property
    def overhead(self):
        return _SIG_OVERHEAD + len(self.key_id)

    def sign(self, payload):
        return protocol.sign_payload(self.key_id, self.secret, payload)


class UdpSender(object):
    """Fire-and-forget datagrams of packed records.

    The server's name is resolved again every RESOLVE_EVERY seconds, so
    agents follow an aggregator that moved to a new address without a
    restart; a failed lookup keeps the last known addresses.

    The socket is connected to one of the name's addresses: a datagram to a
    port nobody listens on comes back as an ICMP "port unreachable", which
    the kernel reports to a connected socket (and only to one) as
    ECONNREFUSED on a later send.  That, or an address the VM cannot route,
    moves the agent to the name's next address (IPv4 after IPv6, for a
    server listening on IPv4 alone): one datagram is lost there, not every
    one after it.
    """

    RESOLVE_EVERY = RESOLVE_EVERY
    #: Errors of one address that another of the same name may not have.
    _MOVE_ON = (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH,
                errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)

    def __init__(self, host, port, signer=None, clock=time.monotonic):
        self.host = host
        self.port = port
        self.clock = clock
        self.candidates = addresses(host, port, socket.SOCK_DGRAM)
        self.resolved_at = clock()
        self.signer = signer
        self.limit = protocol.SAFE_DATAGRAM_SIZE - (signer.overhead if signer else 0)
        self.sock = None
        self.family, self.address = self.candidates[0]
        self._connect(0)
        self.sent = 0
        self.failed = 0
        self.last_error = None
        self.said_moves = set()

    def _connect(self, index):
        """Point the socket at candidate ``index``; an error of connect() itself (no route)
        is left for the next send to meet."""
        family, address = self.candidates[index]
        if self.sock is None or family != self.family:
            if self.sock is not None:
                self.sock.close()
            self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.index, self.family, self.address = index, family, address
        try:
            self.sock.connect(address)
            self.unroutable = None
        except OSError as exc:
            self.unroutable = exc

    def _refresh(self):
        self.resolved_at = self.clock()
        try:
            candidates = addresses(self.host, self.port, socket.SOCK_DGRAM)
        except TransportError as exc:
            LOG.debug("%s; still sending to %s", exc, self.address[0])
            return
        if candidates != self.candidates:
            moved = (self.family, self.address) not in candidates
            self.candidates = candidates
            if moved:
                LOG.info("server %s moved from %s to %s", self.host, self.address[0], candidates[0][1][0])
            self._connect(0 if moved else candidates.index((self.family, self.address)))

    def _send(self, payload):
        if self.unroutable is not None:
            raise self.unroutable
        self.sock.send(payload)

    def look_up_again(self):
        """Look the server's name up at the next send (SIGHUP), not at the next RESOLVE_EVERY."""
        self.resolved_at = float("-inf")

    def send(self, lines):
        """Send encoded lines now; a failure is logged and the records are lost."""
        if self.clock() - self.resolved_at >= self.RESOLVE_EVERY:
            self._refresh()
        for payload in protocol.pack_lines(lines, self.limit):
            if self.signer:
                payload = self.signer.sign(payload)
            for attempt in range(len(self.candidates) + 1):
                try:
                    self._send(payload)
                except OSError as exc:
                    if exc.errno in self._MOVE_ON and attempt < len(self.candidates):
                        self._next(exc)
                        continue
                    self.failed += 1
                    if str(exc) != self.last_error:  # once a streak: a server away for an hour
                        LOG.warning("UDP send to %s failed: %s", self.address[0], exc.strerror or exc)
                    self.last_error = str(exc)
                else:
                    self.sent += 1
                    self.last_error = None
                break

    def _next(self, exc):
        """After a refusal (which reports an EARLIER datagram: this one was not sent) or no
        route: the name's next address, or this one again when it has only one."""
        was = self.address[0]
        self._connect((self.index + 1) % len(self.candidates))
        if self.address[0] != was and (was, self.address[0]) not in self.said_moves:
            self.said_moves.add((was, self.address[0]))  # a server down on both: two lines, not one a minute
            LOG.info("UDP to %s failed (%s): sending to %s, the server's next address",
                     was, exc.strerror or exc, self.address[0])

    def flush(self, force=False):
        """Nothing is ever pending over UDP."""
        return True

    def close(self):
        self.sock.close()


class Backoff(object):
    """Exponential reconnect delay with jitter: 1 s, 2 s, 4 s ... up to ``maximum``.

    Each delay is drawn between half and all of the step ("equal jitter"),
    so agents that lost the same server spread their reconnects.
    """

    def __init__(self, initial=1.0, maximum=60.0, rng=None):
        self.initial = initial
        self.maximum = maximum
        self.failures = 0
        self.rng = rng or random.Random()

    def next_delay(self):
        step = min(self.maximum, self.initial * (2 ** min(self.failures, 30)))
        self.failures += 1
        return step / 2 + self.rng.uniform(0, step / 2)

    def reset(self):
        self.failures = 0


def connect_first(candidates, timeout, clock=time.monotonic):
    """A connected TCP socket to the first of ``candidates`` (``[(family, address)]``, in the
    resolver's order) to answer, all within ``timeout`` seconds; the last failure else.

    One address after the other, each given ATTEMPT_DELAY before the next is tried beside it,
    and at once after a refusal: the first that connects wins, the others are closed.  Each
    address was given the whole timeout in turn, so an address whose packets are dropped (an
    AAAA record where IPv6 is filtered) held every connection for the timeout, N times it for
    N such addresses, and the agent's sampling with it.
    """
    deadline = clock() + timeout
    waiting = list(candidates)
    trying = {}
    failure = None
    winner = None
    next_at = clock()
    try:
        while winner is None and (waiting or trying):
            if waiting and (not trying or clock() >= next_at):
                family, address = waiting.pop(0)
                try:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                except OSError as exc:            # a family the VM has switched off
                    failure = exc
                    continue
                sock.setblocking(False)
                code = sock.connect_ex(address)
                if code == 0:
                    winner = sock
                elif code in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                    trying[sock] = address
                    next_at = clock() + ATTEMPT_DELAY
                else:
                    sock.close()
                    failure = OSError(code, os.strerror(code))
                continue
            remaining = deadline - clock()
            if remaining <= 0:
                break
            wait = min(remaining, max(0.0, next_at - clock())) if waiting else remaining
            _r, ready, _x = select.select([], list(trying), [], wait)
            for sock in ready:
                del trying[sock]
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0 and winner is None:
                    winner = sock
                    continue
                sock.close()
                if code:
                    failure = OSError(code, os.strerror(code))
                    next_at = clock()
    finally:
        for sock in trying:
            sock.close()
    if winner is not None:
        winner.setblocking(True)
        return winner
    if trying or failure is None:
        raise socket.timeout("timed out")
    raise failure


class TcpSender(object):
    """Acknowledged delivery of the spool's records over one TCP connection.

    The name is looked up at every connection, and again every RESOLVE_EVERY seconds while
    one is open: a connection to an address the name no longer has is closed and the next
    batch goes to the new one.  Before, a connection lived as long as the old aggregator
    answered, so a fleet kept sending to a server moved away from (left running for its
    reports) for as long as it ran, and the new one never heard of it.
    """

    def __init__(self, host, port, spool, signer=None, timeout=10.0, backoff=None,
                 clock=time.monotonic, wall=time.time):
        self.host = host
        self.port = port
        self.spool = spool
        self.signer = signer
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.wall = wall
        self.sock = None
        self.resolved_at = float("-inf")
        self._pending = b""
        self._tokens = 0
        self._prefix = os.urandom(3).hex()
        self.retry_at = 0.0
        #: When (on ``clock``) a delivery last failed, or None.
        self.failed_at = None
        self.acked = 0
        self.rejected = 0
        #: Of ``acked`` and ``rejected``, records spooled before this start (Spool.earlier).
        self.earlier = 0
        #: Of ``rejected``, the count by the reason the server gave (servers since reasons).
        self.rejected_by = {}
        #: The reasons said in the log already: each once (a clock not set for an hour, or a
        #: week of spool past --max-past, said the same line for every batch).
        self._said_reasons = set()
        #: Of ``rejected``, records stamped ahead of this VM's clock (AHEAD_SLACK): the server
        #: refuses them as from the future, for good.  The agent stops stamping ahead on it.
        self.refused_ahead = 0
        #: Records lost: the disk refused them and HELD_MAX newer ones came before delivery.
        self.lost = 0
        #: Records the disk refused to spool, oldest first, until the server acknowledges them.
        self.held = collections.deque()
        self._spool_error = None

    @property
    def waiting(self):
        """Records not yet acknowledged: spooled, and held in memory."""
        return len(self.spool) + len(self.held)

    def send(self, lines):
        """Spool the records, then deliver what the backoff allows.

        A record the spool cannot store (disk full, a quota) is held in memory
        and delivered after the spooled ones.  It was lost: on a VM whose disk
        filled up a TCP agent delivered nothing at all, with the server up, and
        ``--count`` said 0 left in the spool and passed.  A record held in
        memory is lost if the agent stops before delivering it.
        """
        for line in lines:
            try:
                self.spool.add(line)
            except (IOError, OSError) as exc:
                if len(self.held) >= HELD_MAX:
                    self.held.popleft()
                    self.lost += 1
                self.held.append(line)
                error = exc.strerror or str(exc)    # not the file's name: one per record
                if error != self._spool_error:        # once a streak: a disk full for hours
                    LOG.error("cannot spool a record (%s): held in memory until delivered "
                              "(lost if the agent stops first)", error)
                self._spool_error = error
            else:
                if self._spool_error is not None:
                    LOG.info("spooling records again")
                self._spool_error = None
        self.flush()

    def flush(self, force=False):
        """Send spooled batches until the spool is empty or delivery fails.

        Returns True when the spool is empty (and no record is held in memory).
        Before the backoff delay has passed this does nothing, unless ``force``
        (a last try at exit).
        """
        if not self.waiting:
            return True
        if not force and self.clock() < self.retry_at:
            return False
        if self.sock is not None and self.clock() - self.resolved_at >= RESOLVE_EVERY:
            self._check_address()
        fresh = self.sock is None
        while self.waiting:
            try:
                if self.sock is None:
                    self._connect()
                    fresh = True
                self._deliver(self.spool.oldest(TCP_BATCH_RECORDS, TCP_BATCH_BYTES)
                              if len(self.spool) else self._held_batch())
            except Refused as exc:
                return self._later(exc)
            except (DeliveryError, TransportError, OSError) as exc:
                self._disconnect()
                if not fresh:
                    # A connection idle since the last interval may have been
                    # closed by a restarted server: one retry on a new one.
                    fresh = True
                    continue
                return self._later(exc)
        return True

    def look_up_again(self):
        """Close the connection, so the next batch goes where the name points now (SIGHUP), and
        try at once rather than after the backoff's delay."""
        self._disconnect()
        self.retry_at = 0.0

    def _check_address(self):
        """Close the connection if the name no longer has its address; a failed lookup keeps it."""
        self.resolved_at = self.clock()
        try:
            answers = addresses(self.host, self.port, socket.SOCK_STREAM)
            peer = self.sock.getpeername()
        except (TransportError, OSError) as exc:
            LOG.debug("%s; still sending over the open connection", exc)
            return
        if all(address[:2] != peer[:2] for _family, address in answers):
            LOG.info("server %s moved from %s to %s", self.host, peer[0], answers[0][1][0])
            self._disconnect()

    def _later(self, exc):
        delay = self.backoff.next_delay()
        self.failed_at = self.clock()
        self.retry_at = self.failed_at + delay
        LOG.warning("TCP delivery to %s:%d failed (%s); %s spooled, retry in %.1fs",
                    self.host, self.port, getattr(exc, "strerror", None) or exc,
                    counted(self.waiting, "record"),
                    delay)
        return False

    def _held_batch(self):
        """``[(None, line)]`` of the oldest records held in memory, within a batch's limits."""
        batch, size = [], 0
        for line in self.held:
            if len(batch) >= TCP_BATCH_RECORDS or (batch and size + len(line) + 1 > TCP_BATCH_BYTES):
                break
            batch.append((None, line))
            size += len(line) + 1
        return batch

    def _connect(self):
        """Connect to the first of the server's addresses that answers (connect_first).

        A name with an IPv6 and an IPv4 address (IPv6 first where the VM has a route for it)
        of a server listening on IPv4 alone (``--bind 0.0.0.0``, the default) was refused on
        IPv6 at every try, and nothing was ever delivered.
        """
        self.sock = connect_first(addresses(self.host, self.port, socket.SOCK_STREAM),
                                  self.timeout, self.clock)
        self.sock.settimeout(self.timeout)
        # Acks naming why records were rejected; a server older than that ignores the line.
        self.sock.sendall(protocol.REASONS_REQUEST + b"\n")
        self.resolved_at = self.clock()
        self._pending = b""
        if self.backoff.failures:
            LOG.info("connected to %s:%d", self.host, self.port)

    def _disconnect(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self._pending = b""

    def _deliver(self, batch):
        payload = b"\n".join(line for _name, line in batch) + b"\n"
        if self.signer:
            payload = self.signer.sign(payload)
        self._tokens += 1
        token = ("%s-%d" % (self._prefix, self._tokens)).encode("ascii")
        self.sock.sendall(payload + protocol.SYNC_PREFIX + token + b"\n")
        accepted, rejected, refused, reasons = self._await_reply(token)
        if refused is not None:
            raise Refused("server refused the batch: %s" % refused)
        spooled = [name for name, _line in batch if name is not None]
        if spooled:
            self.earlier += self.spool.earlier(spooled)
            self.spool.remove(spooled)
        for _held in range(len(batch) - len(spooled)):
            self.held.popleft()
        self.backoff.reset()
        self.retry_at = 0.0
        self.acked += accepted
        self.rejected += rejected
        if rejected:
            self._said_rejected(rejected, batch, reasons)

    def _said_rejected(self, rejected, batch, reasons):
        """Count and say the records of ``batch`` the server rejected (final: not resent).

        A server that names the reasons (``reasons``, ``{reason: count}``) has each said once,
        in words (REASON_WORDS), and counted in ``rejected_by``; an older one's ack has none,
        and the rejection is said as before, for each batch.  Records stamped ahead of this
        VM's clock now were stamped by a clock that was ahead and has been set right since (by
        hand or by time sync, while the agent was stopped): the server refuses them as from
        the future, and they are named so.  A clock not set (before protocol.FIRST_STAMP)
        judges no stamp ahead: every record made before it went back to 1970 would lead it.
        """
        now = self.wall()
        leads = [ts - now for ts in (stamp_of(line) for _name, line in batch)
                 if ts is not None and ts > now + AHEAD_SLACK] if now >= protocol.FIRST_STAMP else []
        if reasons:
            ahead = min(len(leads), reasons.get(protocol.R_FUTURE, 0))
        else:
            # Taken as refused for their stamps only when as many records were rejected at
            # least: records spooled before a reboot with a clock behind lead that clock too,
            # and a batch of them refused for age (--max-past) beside accepted ones is no such
            # refusal.
            ahead = len(leads) if rejected >= len(leads) else 0
        self.refused_ahead += ahead
        for reason, count in reasons.items():
            self.rejected_by[reason] = self.rejected_by.get(reason, 0) + count
        if ahead:
            LOG.warning("server rejected %d of %s (not resent, not stamped again): %d stamped up "
                        "to %ds ahead of this VM's clock, from the future to the server: the "
                        "clock that stamped them was ahead, and has been set back since",
                        rejected, counted(len(batch), "record"), ahead, max(leads))
            self._said_reasons.add(protocol.R_FUTURE)
        if not reasons:
            if not ahead:
                LOG.warning("server rejected %d of %s (not resent): invalid, or stamped "
                            "outside the server's time window (spooled longer than its "
                            "--max-past, or this VM's clock off: run NTP)",
                            rejected, counted(len(batch), "record"))
            return
        for reason in sorted(reasons):
            if reason in self._said_reasons:
                LOG.debug("server rejected %s as %s", counted(reasons[reason], "record"), reason)
                continue
            self._said_reasons.add(reason)
            LOG.warning("server rejected %s as %s (not resent): %s; said once, later ones are "
                        "counted", counted(reasons[reason], "record"), reason,
                        REASON_WORDS.get(reason, "not taken by the server as a record"))

    def _await_reply(self, token):
        """``(accepted, rejected, refused, reasons)`` for ``token``; ``refused`` is None for an
        ack, ``reasons`` its rejected records by reason (``{}`` from an older server).

        Replies to older tokens (a batch given up on after a timeout) are skipped.  The first
        line that is no control line at all is named in the failure: the port of another
        service (the aggregator's HTTP port given for its TCP one) answered with its own
        error, and "connection closed by the server" pointed at a server in trouble instead.
        """
        deadline = self.clock() + self.timeout
        stray = None
        while True:
            end = self._pending.find(b"\n")
            while end >= 0:
                line, self._pending = self._pending[:end], self._pending[end + 1:]
                reply = protocol.parse_reply(line)
                if reply is not None and reply[0] == token:
                    return reply[1:] + (protocol.reply_reasons(line),)
                if reply is None and token in line:
                    raise DeliveryError("unexpected reply %r" % line[:80])
                if stray is None and reply is None and line.strip() and not line.startswith(b"#!"):
                    stray = line.strip()[:60].decode("ascii", "replace")
                end = self._pending.find(b"\n")
            remaining = deadline - self.clock()
            said = "" if stray is None else (", after answering %r: is port %d the aggregator's "
                                             "TCP port?" % (stray, self.port))
            if remaining <= 0:
                raise DeliveryError("no acknowledgement within %.1fs%s" % (self.timeout, said))
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                raise DeliveryError("no acknowledgement within %.1fs%s" % (self.timeout, said))
            if not data:
                raise DeliveryError("connection closed by the server" + said)
            if len(self._pending) > 65536:
                raise DeliveryError("oversized reply")
            self._pending += data

    def close(self):
        self._disconnect()
        self.spool.close()

