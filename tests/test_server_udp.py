"""The real server on loopback: what is sent over UDP is exactly what lands in the logs."""

import os
import signal
import threading
import time

from serverproc import parsers_of, serve

from vmstats import logstore, protocol
from vmstats.protocol import Record


def now() -> int:
    return int(time.time())


def logged(data_dir, vm):
    """The log rows of one VM as a list of dicts (via the layout's own reader)."""
    frame, bad = logstore.read_rows(path for _day, path in logstore.day_files(str(data_dir), vm))
    assert bad == 0
    return frame


def line(record: Record) -> bytes:
    return protocol.encode_record(record).encode()


def test_records_land_exactly_with_values_and_timestamps(tmp_path):
    t0 = now() - 600
    sent = [Record(vm="10.0.0.%d" % (i % 3 + 1), ts=t0 + 60 * i, cpu=1.5 + i, mem=40.25,
                   cpu_max=99.5, disk_r=1024.0, disk_w=0.0, net_rx=812.5, net_tx=300.0, vcpus=2,
                   mem_mb=4096, seq=i, host="web%d" % (i % 3)) for i in range(9)]
    sparse = Record(vm="db-1.example", ts=t0, cpu=0.0, mem=100.0)  # optional fields unknown
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        server.send_udp(b"\n".join(line(r) for r in sent[:5]))  # packed
        for record in sent[5:] + [sparse]:
            server.send_udp(line(record))  # one per datagram
        server.wait_received(10)
    assert server.returncode == 0
    for vm in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        frame = logged(tmp_path / "data", vm)
        expected = [r for r in sent if r.vm == vm]
        assert list(frame["ts"]) == [r.ts for r in expected]
        for column in ("cpu", "cpu_max", "mem", "disk_r", "disk_w", "net_rx", "net_tx", "vcpus",
                       "mem_mb", "seq"):
            assert list(frame[column]) == [getattr(r, column) for r in expected], column
        assert list(frame["host"]) == [r.host for r in expected]
    frame = logged(tmp_path / "data", "db-1.example")
    assert len(frame) == 1 and frame["cpu"][0] == 0.0 and frame["mem"][0] == 100.0
    assert frame["cpu_max"].isna().all() and frame["vcpus"].isna().all()


def test_duplicates_are_replaced_not_repeated(tmp_path):
    t0 = now() - 120
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        server.send_udp(line(Record(vm="10.1.0.1", ts=t0, cpu=1.0, mem=1.0)))
        # Held first: two parsers may read datagrams sent together and file either first.
        server.wait_received(1)
        server.send_udp(line(Record(vm="10.1.0.1", ts=t0, cpu=2.0, mem=2.0)))  # same (vm, ts)
        server.wait_received(2)
        # A retransmit after a flush lands again; the reader keeps the last one.
        server.wait_metrics(lambda m: m["vmstats_flushed_records_total"] == 1)
        server.send_udp(line(Record(vm="10.1.0.1", ts=t0, cpu=3.0, mem=3.0)))
        server.wait_received(3)
    frame = logged(tmp_path / "data", "10.1.0.1")
    assert list(frame["ts"]) == [t0]
    assert list(frame["cpu"]) == [3.0]
    raw = next(iter(logstore.day_files(str(tmp_path / "data"), "10.1.0.1")))[1]
    rows = open(raw, "rb").read().splitlines()[1:]
    assert [r.split(b",")[1] for r in rows] == [b"2", b"3"]  # in-memory duplicate replaced


def test_malformed_records_are_counted_by_cause_and_the_good_ones_still_land(tmp_path):
    t = now() - 60
    good = line(Record(vm="10.2.0.1", ts=t, cpu=5.0, mem=6.0))
    good2 = line(Record(vm="10.2.0.2", ts=t, cpu=7.0, mem=8.0))
    bad = [
        b"vmstats,vm=10.2.0.9 cpu=101,mem=1 %d" % t,          # out_of_range
        b"vmstats,vm=10.2.0.9 cpu=nan,mem=1 %d" % t,          # non_finite
        b"vmstats,vm=10.2.0.9 cpu=abc,mem=1 %d" % t,          # non_numeric
        b"vmstats,vm=10.2.0.9 mem=1 %d" % t,                  # missing_field
        b"cpu,vm=10.2.0.9 cpu=1,mem=1 %d" % t,                # measurement
        b"vmstats,vm=10.2.0.9 cpu=1,mem=1,foo=2 %d" % t,      # unknown_key
        b"vmstats,vm=10.2.0.9 cpu=1,mem=1 %d" % (t + 3600),   # future_timestamp
        b"vmstats,vm=../../etc cpu=1,mem=1 %d" % t,           # bad_vm_id
        b"vmstats,vm=10.2.0.9 cpu=1,mem=\xff %d" % t,         # bad_utf8
        b"garbage",                                           # syntax
    ]
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        server.send_udp(b"\n".join([good] + bad + [good2]))
        metrics = server.wait_received(12)
    assert metrics["vmstats_records_received_total"] == 2
    for reason in ("out_of_range", "non_finite", "non_numeric", "missing_field", "measurement",
                   "unknown_key", "future_timestamp", "bad_vm_id", "bad_utf8", "syntax"):
        assert metrics['vmstats_rejected_total{reason="%s"}' % reason] == 1, reason
    assert server.returncode == 0
    assert sorted(logstore.iter_vms(str(tmp_path / "data"))) == ["10.2.0.1", "10.2.0.2"]
    assert "rejected          10" in server.output


def test_stopping_the_port_takes_the_datagrams_already_queued():
    """Datagrams the kernel holds for the socket when the port stops are delivered, not lost.

    The port is bound on a reactor that never runs, so nothing is read until
    the stop: everything delivered was read by ``stopListening`` itself.
    """
    import socket

    from twisted.internet.epollreactor import EPollReactor
    from twisted.internet.protocol import DatagramProtocol

    from vmstats.server.listeners import BatchingUDPPort, set_rcvbuf

    class Collect(DatagramProtocol):
        def __init__(self):
            self.got: list[bytes] = []

        def datagramsReceived(self, batch):
            self.got.extend(batch)

    reactor = EPollReactor()
    collect = Collect()
    port = BatchingUDPPort(0, collect, "127.0.0.1", protocol.MAX_DATAGRAM_SIZE, reactor)
    port.startListening()
    assert set_rcvbuf(port.socket, 4 << 20) >= 1 << 20  # room for all of them, queued
    sent = [line(Record(vm="10.9.0.%d" % (i % 7), ts=now() - 60 * i, cpu=1.0, mem=2.0))
            for i in range(2000)]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for datagram in sent:
                sock.sendto(datagram, port.socket.getsockname())
        port.stopListening()
        assert collect.got == sent
    finally:
        port.connectionLost()
        reactor._poller.close()


# -- parser processes reading the socket --------------------------------------------------------
def reading_udp(server, count: int) -> dict:
    """Wait until ``count`` parser processes say they read the UDP socket."""
    return server.wait_metrics(lambda m: m["vmstats_parsers_reading_udp"] == count, timeout=20)


def test_parsers_read_the_socket_and_file_exactly_what_the_reactor_would(tmp_path):
    """The reactor stops reading once the parsers do; logs and counters come out the same."""
    t0 = now() - 86400
    sent = [Record(vm="10.8.0.%d" % (i % 5), ts=t0 + 60 * (i // 5), cpu=float(i % 100),
                   mem=50.5, seq=i // 5) for i in range(1000)]
    late = Record(vm="10.8.0.9", ts=t0, cpu=9.0, mem=9.0)
    datagrams = [line(r) for r in sent] + [
        b"vmstats,vm=10.8.0.1 cpu=abc,mem=1 %d" % t0,  # non_numeric, alone in its datagram
        b"#!a control line for other readers",
        b"#!another\n" + line(late),  # a frame-like datagram: the lines after it still count
    ]
    with serve(tmp_path, "--flush-interval", "60", "--parsers", "2") as server:
        reading_udp(server, 2)
        server.send_udp(*datagrams)
        metrics = server.wait_received(len(sent) + 2)
    assert server.returncode == 0, server.output
    for vm in sorted({r.vm for r in sent}):
        frame = logged(tmp_path / "data", vm)
        expected = sorted((r.ts, r.cpu, r.seq) for r in sent if r.vm == vm)
        assert list(zip(frame["ts"], frame["cpu"], frame["seq"], strict=True)) == expected
    assert list(logged(tmp_path / "data", "10.8.0.9")["cpu"]) == [9.0]
    assert metrics["vmstats_records_received_total"] == len(sent) + 1
    assert metrics['vmstats_rejected_total{reason="non_numeric"}'] == 1
    assert metrics["vmstats_datagrams_received_total"] == len(datagrams)
    assert metrics["vmstats_bytes_received_total"] == sum(map(len, datagrams))
    assert metrics['vmstats_parsed_payloads_total{where="remote"}'] >= 1
    assert metrics['vmstats_parsed_payloads_total{where="here"}'] == 0  # the reactor read none


def test_a_stop_takes_the_datagrams_the_parsers_have_not_read_yet(tmp_path):
    """Stopped parsers leave datagrams queued in the socket; the stop still files them all."""
    t0 = now() - 86400
    sent = [line(Record(vm="10.8.1.%d" % (i % 10), ts=t0 + 60 * (i // 10), cpu=1.0, mem=2.0))
            for i in range(2000)]
    with serve(tmp_path, "--flush-interval", "60", "--parsers", "2") as server:
        reading_udp(server, 2)
        parsers = parsers_of(server.pid)
        for pid in parsers:
            os.kill(pid, signal.SIGSTOP)
        try:
            server.send_udp(*sent)
            assert server.metrics()["vmstats_datagrams_received_total"] == 0  # nobody read them
        finally:
            # Resumed only once the stop has asked them for what they hold.
            threading.Timer(0.5, lambda: [os.kill(pid, signal.SIGCONT) for pid in parsers]).start()
        code = server.stop()
    assert code == 0, server.output
    rows = sum(len(logged(tmp_path / "data", vm)) for vm in logstore.iter_vms(str(tmp_path / "data")))
    assert rows == len(sent)
    assert "records received  %d (%d datagrams" % (len(sent), len(sent)) in server.output


def test_when_the_parsers_die_the_reactor_reads_the_socket_until_they_are_back(tmp_path):
    t0 = now() - 3600
    first = [line(Record(vm="10.8.2.%d" % (i % 10), ts=t0 + 60 * (i // 10), cpu=1.0, mem=2.0))
             for i in range(500)]
    second = [line(Record(vm="10.8.3.%d" % (i % 10), ts=t0 + 60 * (i // 10), cpu=1.0, mem=2.0))
              for i in range(500)]
    with serve(tmp_path, "--flush-interval", "60", "--parsers", "2") as server:
        reading_udp(server, 2)
        for pid in parsers_of(server.pid):
            os.kill(pid, signal.SIGKILL)
        reading_udp(server, 0)
        server.send_udp(*first)
        here = server.wait_received(len(first))['vmstats_parsed_payloads_total{where="here"}']
        assert here >= 1  # the reactor read them: the parsers are not back yet
        reading_udp(server, 2)  # restarted, and reading again
        server.send_udp(*second)
        metrics = server.wait_received(len(first) + len(second))
        assert metrics['vmstats_parsed_payloads_total{where="here"}'] == here
        assert metrics["vmstats_parser_deaths_total"] == 2
    assert server.returncode == 0, server.output
    rows = sum(len(logged(tmp_path / "data", vm)) for vm in logstore.iter_vms(str(tmp_path / "data")))
    assert rows == len(first) + len(second)
