"""The listeners never raise on any input, and account for every record line they are given."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from vmstats import protocol
from vmstats.server.auth import Authenticator
from vmstats.server.buffer import Buffer
from vmstats.server.connections import ConnectionTable
from vmstats.server.ingest import Ingest
from vmstats.server.listeners import TCPFactory, UDPReceiver
from vmstats.server.metrics import Metrics

NOW = 1_732_262_400
GOOD = b"vmstats,vm=10.0.0.1 cpu=1,mem=2 %d" % NOW
#: The same record as an InfluxDB client spells it, and in a sender's own order with a tag.
INFLUX = b"vmstats,host=h,vm=10.0.0.2 cpu=1i,mem=2,seq=3i %d000000000" % NOW
SHUFFLED = b"vmstats,env=prod,vm=10.0.0.3 mem=2.5,cpu=1 %d000" % NOW


def parts(keys=None):
    metrics = Metrics()
    ingest = Ingest(Buffer(metrics, 1000, 100), metrics, 300, 0, clock=lambda: NOW)
    return metrics, ingest, Authenticator(ingest, keys, 300)


def tcp_receiver(metrics, ingest, auth, max_line=65536):
    table = ConnectionTable("tcp", metrics.connections["tcp"], 10, 10, None, Clock())
    factory = TCPFactory(ingest, auth, metrics, max_line, table)
    return factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)), table


# Fragments that reach every branch of the framing code.
fragments = st.sampled_from([
    GOOD, b"\n", b"\r\n", b"#!sync t1\n", b"#!sync bad token!\n", b"#!sig1 ", b"#!sig1 k 1 n 5 "
    + b"0" * 64 + b"\n", b"#!ack x 1 1\n", b"# comment\n", b"vmstats,vm=", b"cpu=1,mem=2", b" ",
    b"\xff\x00", b"x" * 300, protocol.sign_payload("k", "s", GOOD, now=NOW), INFLUX, SHUFFLED,
    protocol.sign_payload("k", "s", INFLUX + b"\n" + SHUFFLED, now=NOW), b"vmstats,env=prod,",
])
streams = st.one_of(st.binary(max_size=600), st.lists(fragments, max_size=30).map(b"".join))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(streams, max_size=5), st.booleans())
def test_udp_receiver_survives_any_datagrams(batch, signed):
    metrics, ingest, auth = parts({b"k": b"s"} if signed else None)
    receiver = UDPReceiver(ingest, auth, metrics)
    receiver.datagramsReceived(batch)
    assert metrics.datagrams == len(batch)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.lists(st.integers(1, 50), max_size=20), st.booleans())
def test_tcp_receiver_survives_any_stream_cut_anywhere(stream, cuts, signed):
    metrics, ingest, auth = parts({b"k": b"s"} if signed else None)
    receiver, table = tcp_receiver(metrics, ingest, auth, max_line=256)
    transport = StringTransport()
    receiver.makeConnection(transport)
    offset = 0
    for size in cuts + [len(stream)]:
        receiver.dataReceived(stream[offset:offset + size])
        offset += size
    for reply in transport.value().splitlines():
        assert reply.startswith((protocol.ACK_PREFIX, protocol.NAK_PREFIX))
    receiver.connectionLost(None)
    assert not table.open


def test_tcp_replies_once_per_sync_in_order_whatever_the_segmentation():
    stream = b"".join([GOOD, b"\n#!sync a\n", b"junk\n", b"#!sync b\n", GOOD, b"\n#!sync c\n"])
    for size in range(1, len(stream) + 1):
        metrics, ingest, auth = parts()
        receiver, _table = tcp_receiver(metrics, ingest, auth)
        transport = StringTransport()
        receiver.makeConnection(transport)
        for offset in range(0, len(stream), size):
            receiver.dataReceived(stream[offset:offset + size])
        assert transport.value() == b"#!ack a 1 0\n#!ack b 0 1\n#!ack c 1 0\n", size


def test_every_spelling_is_counted_once_over_udp_and_tcp_signed_or_not():
    """Accepted or rejected, each line is accounted for once, whichever spelling and path."""
    lines = [GOOD, INFLUX, SHUFFLED, b"vmstats,vm=10.0.0.4 cpu=1e999,mem=2 %d" % NOW]
    for signed in (False, True):
        keys = {b"k": b"s"} if signed else None
        payload = b"\n".join(lines)
        frame = protocol.sign_payload("k", "s", payload, now=NOW) if signed else payload
        metrics, ingest, auth = parts(keys)
        UDPReceiver(ingest, auth, metrics).datagramsReceived([frame])
        assert metrics.records == 3 and sum(metrics.rejects.values()) == 1, signed
        metrics, ingest, auth = parts(keys)
        receiver, _table = tcp_receiver(metrics, ingest, auth)
        transport = StringTransport()
        receiver.makeConnection(transport)
        receiver.dataReceived(frame + (b"" if signed else b"\n") + b"#!sync t\n")
        assert transport.value() == b"#!ack t 3 1\n", signed
        receiver.dataReceived(frame + b"#!sync u\n" if signed else b"")
        if signed:  # the same frame again: a replay, refused once
            assert transport.value().endswith(b"#!nak u auth\n")
            assert metrics.rejects["sig_replay"] == 1 and metrics.records == 3
