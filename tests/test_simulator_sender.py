"""The simulator's senders against scripted loopback peers: naks and lost connections lose nothing."""

import socket
import threading
import time

import pytest

from vmstats.simulator.sender import Pacer, SendError, TcpSender, UdpSender


class ScriptedServer:
    """A loopback TCP peer that follows the ack contract, naks batch 2 once and drops one connection.

    Each connection's records are kept, so the test can check that every
    record arrived and which batches came twice.
    """

    def __init__(self, nak_batch=2, drop_after=5):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.nak_batch = nak_batch
        self.drop_after = drop_after
        self.records = []
        self.syncs = 0
        self.connections = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        self.listener.settimeout(10)
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                self.serve(conn)

    def serve(self, conn):
        buffer = b""
        pending = []
        while True:
            data = conn.recv(65536)
            if not data:
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.startswith(b"#!sync "):
                    pending.append(line)
                    continue
                token = line.split(b" ")[1]
                self.syncs += 1
                if self.syncs == self.nak_batch:
                    conn.sendall(b"#!nak " + token + b" busy\n")
                elif self.syncs == self.drop_after:
                    conn.shutdown(socket.SHUT_RDWR)  # lost: nothing since the last ack is held
                    return
                else:
                    self.records += pending
                    conn.sendall(b"#!ack %s %d 0\n" % (token, len(pending)))
                pending = []

    def close(self):
        self.listener.close()


def lines(count, vm="10.0.0.1"):
    return [b"vmstats,vm=%s cpu=1,mem=2 %d" % (vm.encode(), 1732262400 + 60 * i) for i in range(count)]


def test_tcp_sender_resends_on_nak_and_after_a_lost_connection():
    peer = ScriptedServer(nak_batch=2, drop_after=5)
    try:
        sent = lines(1000)
        sender = TcpSender("127.0.0.1", peer.port, batch=100, window=4, timeout=20)
        sender.send(sent[:500])
        sender.send(sent[500:])
        stats = sender.close()
    finally:
        peer.close()
    assert sorted(set(peer.records)) == sorted(sent)  # everything held once acknowledged
    assert stats.accepted == len(peer.records) >= len(sent)
    assert stats.naks == {"busy": 1} and stats.reconnects == 1 and stats.unacknowledged == 0
    assert stats.resent_batches >= 2 and peer.connections == 2
    assert stats.records == 1000


def test_tcp_sender_gives_up_readably_when_nothing_listens():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SendError, match="refused"):
        TcpSender("127.0.0.1", port, timeout=2)


def test_tcp_sender_reports_unacknowledged_records_at_its_deadline():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        sender = TcpSender("127.0.0.1", listener.getsockname()[1], batch=10, window=100, timeout=5)
        sender.send(lines(30))
        stats = sender.close(timeout=0.5)
    finally:
        listener.close()
    assert stats.unacknowledged == 30 and stats.accepted == 0


def test_udp_sender_packs_datagrams_and_keeps_its_pace():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(2)
    try:
        sender = UdpSender("127.0.0.1", receiver.getsockname()[1], rate=2000)
        began = time.monotonic()
        sender.send(lines(1000))
        spent = time.monotonic() - began
        stats = sender.close()
        got = []
        while len(got) < 1000:
            datagram = receiver.recv(65536)
            assert len(datagram) <= 1400
            got += datagram.split(b"\n")
    finally:
        receiver.close()
    assert got == lines(1000)
    assert stats.records == 1000 and stats.payloads < 200
    assert spent >= 0.35  # 1000 records at 2000/s: about half a second, not a burst


def test_pacer_without_rate_never_sleeps(monkeypatch):
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    for rate in (None, 0):
        Pacer(rate).wait(10**9)
    assert slept == []
    Pacer(1000).wait(10**9)  # a rate does make it wait (here, a day and more)
    assert slept and slept[0] > 86400
