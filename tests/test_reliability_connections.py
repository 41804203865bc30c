"""Crowds of idle connections (TCP and HTTP) cannot lock agents out, starve the journal, or
silence /metrics: the caps evict the longest silent connection for a newcomer.

The hostile connections come from other loopback addresses (127.0.0.2 and up) so the
per-source caps see several sources, as they would on a network; the agent connects from
127.0.0.1.  Everything is sent to the server's own address, 127.0.0.1.
"""

import resource
import socket
import time
from contextlib import contextmanager

import pytest
from serverproc import LOOPBACK, serve
from test_reliability_faults import report
from test_reliability_journal import raw_rows
from test_server_tcp import read_reply
from test_server_udp import line, now

from vmstats.protocol import Record
from vmstats.server.config import ServerConfig

#: Without eviction a newcomer would wait for an idle connection to time out (the defaults:
#: 300 s for TCP, 30 s for HTTP); a tenth of that is the bound, however loaded the host.
AGENT_BOUND = ServerConfig.idle_timeout / 10
METRICS_BOUND = ServerConfig.http_idle_timeout / 3

#: Descriptors this process needs beyond the hostile sockets (pytest, the server's pipes...).
OWN_FDS = 256


@contextmanager
def descriptors(count: int):
    """Raise this process's soft file limit for ``count`` sockets, and put it back after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = count + OWN_FDS
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.fail("the test needs %d descriptors; the hard limit is %d" % (need, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def crowd(port: int, count: int, sources: int, opening: bytes = b"") -> list:
    """``count`` connections spread over ``sources`` loopback source addresses, left idle
    (after ``opening``, a partial line or request on every other one).  Connections the server
    closes at once (evicted while the crowd is still coming) are simply part of the crowd."""
    socks = []
    for i in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.bind(("127.0.0.%d" % (2 + i % sources), 0))
        try:
            sock.connect((LOOPBACK, port))
            if opening and i % 2:
                sock.sendall(opening)
        except OSError:
            pass  # reset by an eviction before the send: still a descriptor the server spent
        socks.append(sock)
    return socks


def agent_batch(port: int, records: list, token: str) -> tuple[bytes, float]:
    """A well-behaved agent's batch on a new connection: the reply and seconds to it."""
    started = time.monotonic()
    with socket.create_connection((LOOPBACK, port), timeout=AGENT_BOUND) as sock:
        sock.sendall(b"\n".join(line(r) for r in records) + b"\n#!sync %s\n" % token.encode())
        reply = read_reply(sock)
    return reply, time.monotonic() - started


def metrics_timed(server) -> tuple[dict, float]:
    started = time.monotonic()
    metrics = server.metrics(timeout=METRICS_BOUND)
    return metrics, time.monotonic() - started


def open_count(metrics: dict, port: str) -> int:
    return int(metrics['vmstats_connections_open{port="%s"}' % port])


def evicted(metrics: dict, port: str) -> int:
    return int(sum(metrics['vmstats_connections_evicted_total{port="%s",cause="%s"}' % (port, c)]
                   for c in ("per_source", "full")))


def run_crowd(tmp_path, tcp_count: int, http_count: int, sources: int, **server_kwargs) -> dict:
    """Hold the crowd open, then an agent's batches and /metrics; returns the figures."""
    t = now() - 3600
    figures: dict = {}
    with descriptors(tcp_count + http_count), \
            serve(tmp_path, "--flush-interval", "0.5", **server_kwargs) as server:
        started = time.monotonic()
        hostile = crowd(server.tcp_port, tcp_count, sources, b"vmstats,vm=10.1.1.1 cpu=")
        hostile += crowd(server.http_port, http_count, sources, b"GET /metrics HTTP/1.1\r\n")
        figures["crowd_seconds"] = round(time.monotonic() - started, 1)
        try:
            # The crowd is in: every admitted connection is open, and now the agent comes.
            server.wait_for(lambda s: s.metrics()['vmstats_connections_total{port="tcp"}']
                            >= tcp_count, timeout=30)
            before, _ = metrics_timed(server)
            batch = [Record(vm="10.60.0.%d" % i, ts=t, cpu=1.0, mem=2.0) for i in range(20)]
            reply, took = agent_batch(server.tcp_port, batch, "a1")
            assert reply == b"#!ack a1 20 0\n"
            assert took < AGENT_BOUND, "the agent waited %.2fs for its ack" % took
            metrics, metrics_took = metrics_timed(server)
            assert metrics_took < METRICS_BOUND, "/metrics took %.2fs" % metrics_took
            # Past a flush the journal opens a new segment: it must still have a descriptor.
            server.wait_for(lambda s: s.metrics()["vmstats_flushed_records_total"] >= len(batch),
                            timeout=30)
            batch2 = [Record(vm="10.60.0.%d" % i, ts=t + 60, cpu=1.0, mem=2.0) for i in range(20)]
            reply2, took2 = agent_batch(server.tcp_port, batch2, "a2")
            assert reply2 == b"#!ack a2 20 0\n"
            after, _ = metrics_timed(server)
        finally:
            for sock in hostile:
                sock.close()
        figures.update(
            tcp_open_before=open_count(before, "tcp"), http_open_before=open_count(before, "http"),
            tcp_evicted=evicted(after, "tcp"), http_evicted=evicted(after, "http"),
            ack_seconds=round(took, 3), ack2_seconds=round(took2, 3),
            metrics_seconds=round(metrics_took, 3), file_limit=int(after["vmstats_file_limit"]),
            open_files_peak=int(max(before["vmstats_open_files"], after["vmstats_open_files"])),
            journal_errors=int(after["vmstats_journal_errors_total"]),
            naks=int(after["vmstats_naks_total"]))
    assert server.returncode == 0, server.output
    assert figures["journal_errors"] == 0 and figures["naks"] == 0
    assert figures["open_files_peak"] < figures["file_limit"]
    rows = raw_rows(tmp_path / "data")
    assert len(rows) == 40 and set(rows.values()) == {1}
    return figures


def test_five_thousand_idle_connections_do_not_lock_an_agent_out(tmp_path):
    # Defaults: 4,096 TCP (512 per source) and 256 HTTP (32 per source) connections.
    figures = run_crowd(tmp_path, tcp_count=4500, http_count=500, sources=10)
    report("idle_crowd", tcp=4500, http=500, **figures)
    assert figures["tcp_open_before"] == 4096 and figures["http_open_before"] <= 256
    assert figures["tcp_evicted"] >= 4500 - 4096 and figures["http_evicted"] >= 500 - 256


def test_under_a_1024_file_limit_the_caps_shrink_and_the_journal_keeps_its_descriptors(tmp_path):
    # The limit that made the journal fail for 44 s before: the caps fit under it now.
    figures = run_crowd(tmp_path, tcp_count=1500, http_count=300, sources=5, nofile=1024)
    report("idle_crowd_1024", tcp=1500, http=300, **figures)
    assert figures["file_limit"] == 1024
    assert figures["tcp_open_before"] + figures["http_open_before"] < 1024 - 128
    assert figures["tcp_evicted"] > 0 and figures["http_evicted"] > 0
