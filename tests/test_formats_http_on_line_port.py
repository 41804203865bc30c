"""An HTTP client pointed at a line port by mistake: its request is not read as lines.

Before, Telegraf's ``outputs.influxdb`` given the line-protocol TCP port had its request line
and headers refused line by line, each quoted in the log: ``timestamp 's3cr3t-influx' is not an
integer`` put its ``Authorization`` token in the server's log, and the connection stayed open.
"""

import http.client
import time

import pytest
from serverproc import LOOPBACK, ROOT, serve
from test_formats_server import edge

from vmstats import protocol

SECRET = "s3cr3t-influx"
BEARER = "b34r3r-graphite"
#: Makes a parser process fail on a payload holding VMSTATS_TEST_PARSER_FAULT, as a bug would.
PARSER_FAULT = str(ROOT / "tests" / "parserfault")


def misdirected(stamp: int, host: bytes = b"stats") -> bytes:
    """A request as curl sends it to the native UDP port, a record in its body: headers with no
    space after their colon are the ones a refusal quoted whole."""
    return (b"POST /write?db=x HTTP/1.1\r\nHost: %s\r\nX-Token:%s\r\n"
            b"Authorization:Token %s\r\nContent-Length: 37\r\n\r\n"
            b"vmstats,vm=10.9.0.9 cpu=5,mem=40 %d\n"
            % (host, SECRET.encode(), BEARER.encode(), stamp))


def rejects(metrics: dict) -> dict:
    return {key: n for key, n in metrics.items() if key.startswith("vmstats_rejected_total") and n}


def assert_no_secret(root) -> None:
    """No file the server wrote under ``root`` (its log, the journal, the VMs' logs) holds
    either token: neither quoted in a refusal nor kept as a line."""
    for path in root.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert SECRET.encode() not in text and BEARER.encode() not in text, path


def test_an_http_request_on_a_line_port_is_answered_400_counted_once_and_logs_no_header(tmp_path):
    with serve(tmp_path, "--flush-interval", "0.3", "--influx-port", "0", "--graphite-port", "0",
               "--graphite-template", "servers.{vm}.cpu.percent cpu") as server:
        influx, graphite = server.status["influx_port"], server.status["graphite_port"]
        # A real HTTP client, as Telegraf's outputs.influxdb_v2 writes (a v1 client's token
        # rides in the query: p=).
        client = http.client.HTTPConnection(LOOPBACK, influx, timeout=5)
        client.request("POST", "/api/v2/write?org=o&bucket=b&p=" + SECRET,
                       body=b"cpu,cpu=cpu-total,host=vm1 usage_idle=5 %d\n" % time.time_ns(),
                       headers={"Authorization": "Token " + SECRET})
        response = client.getresponse()
        assert response.status == 400
        assert b"/api/v2/write (--http-port)" in response.read()
        assert client.sock is None or client.sock.recv(1) == b""  # closed by the server
        client.close()
        with server.tcp_to(graphite, timeout=5) as sock:
            sock.sendall(b"POST /metrics/write HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         + BEARER.encode() + b"\r\nContent-Length: 28\r\n\r\n"
                         b"servers.vm1.cpu.percent 5 1\n")
            answer = b""
            while chunk := sock.recv(4096):  # to the server's close
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        metrics = server.wait_metrics(lambda m: edge(m, "influx", "http_request") == 1
                                      and edge(m, "graphite", "http_request") == 1)
        # Counted once each, and nothing of the request read as lines.
        outcomes = {key: n for key, n in metrics.items() if key.startswith("vmstats_edge_lines_total")}
        assert sum(outcomes.values()) == 2, outcomes
    assert server.returncode == 0, server.output
    assert ("influx: http_request: an HTTP client (POST /api/v2/write) wrote to the influx line port (TCP)"
            in server.output), server.output
    assert "graphite: http_request: an HTTP client (POST /metrics/write)" in server.output
    assert_no_secret(tmp_path)


def test_an_http_request_in_a_datagram_to_a_line_port_is_counted_once_and_logs_no_header(
        tmp_path):
    """The same request sent as a datagram to the line ports' UDP twins: before, the Influx
    decoder refused its header lines one by one, quoting the token in the log."""
    with serve(tmp_path, "--flush-interval", "0.3", "--influx-port", "0", "--graphite-port", "0",
               "--graphite-template", "servers.{vm}.cpu.percent cpu",) as server:
        influx, graphite = server.status["influx_port"], server.status["graphite_port"]
        for port, secret in ((influx, SECRET), (graphite, BEARER)):
            server.send_udp_to(port, b"POST /write?db=x&p=%s HTTP/1.1\r\nHost: x\r\n"
                               b"Authorization: Token %s\r\nContent-Length: 46\r\n\r\n"
                               b"cpu,host=vm1 usage_idle=5 1700000000000000000\n"
                               % (secret.encode(), secret.encode()))
        # A line of each format whose measurement or path starts with a capital is read.
        server.send_udp_to(influx, b"POST,host=vm1 usage_idle=5\n")
        metrics = server.wait_metrics(lambda m: edge(m, "influx", "http_request") == 1
                                      and edge(m, "graphite", "http_request") == 1
                                      and edge(m, "influx", "ignored") == 1)
        outcomes = {key: n for key, n in metrics.items() if key.startswith("vmstats_edge_lines_total")}
        assert sum(outcomes.values()) == 3, outcomes
    assert "an HTTP client (POST /write) wrote to the influx line port (UDP), dropped" in (
        server.output), server.output
    assert_no_secret(tmp_path)


def test_an_http_client_on_the_native_tcp_port_is_answered_400_at_once_and_logs_no_header(
        tmp_path):
    """``curl`` or Telegraf given the native port (8899) instead of the HTTP port: before, its
    request line and headers were refused line by line as records and it heard nothing until
    --idle-timeout (5 minutes).  Now it is answered 400 at once, counted once as ``http_request``
    among the port's rejects, and the agents' connections are read as before."""
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        client = http.client.HTTPConnection(LOOPBACK, server.tcp_port, timeout=3)
        client.request("POST", "/write?db=x&p=" + SECRET, body=b"cpu,host=vm1 usage_idle=5 1\n",
                       headers={"Authorization": "Token " + SECRET})
        response = client.getresponse()
        assert response.status == 400
        assert b"the HTTP port (--http-port) serves /metrics" in response.read()
        client.close()
        # A request line that arrives in two reads.
        with server.tcp(timeout=3) as sock:
            sock.sendall(b"GE")
            time.sleep(0.05)
            sock.sendall(b"T /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                         % BEARER.encode())
            answer = b""
            while chunk := sock.recv(4096):  # to the server's close
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
        # An agent's connection is read as ever, its batch acknowledged.
        stamp = int(time.time()) - 120
        replies = server.send_synced(b"vmstats,vm=10.9.0.1 cpu=5,mem=40 %d\n" % stamp)
        assert replies == ["#!ack", "all", "1", "0"], replies
        metrics = server.metrics()
    rejected = {key: n for key, n in metrics.items() if key.startswith("vmstats_rejected_total") and n}
    assert rejected == {'vmstats_rejected_total{reason="http_request"}': 2}, rejected
    assert server.returncode == 0, server.output
    assert "an HTTP client (POST /write) wrote to the native line port (TCP), closed" in server.output
    assert "an HTTP client (GET /metrics)" in server.output
    assert_no_secret(tmp_path)


def test_an_http_request_in_a_datagram_to_the_native_udp_port_is_counted_once_and_logs_no_header(
        tmp_path):
    """The native UDP port (8899) read a request sent there as a datagram line by line: its
    request line and headers were refused one by one, and a header with no space after its
    colon (``X-Token:...``, ``Authorization:Token ...``) was quoted whole in the log.  Now the
    datagram is dropped, counted once as ``http_request``, whether a parser process reads the
    socket (the default) or the reactor does (``--parsers 0``); records sent beside it are read."""
    stamp = int(time.time()) - 120
    request = (b"POST /write?db=x HTTP/1.1\r\nHost: stats\r\nX-Token:%s\r\n"
               b"Authorization:Token %s\r\nContent-Length: 37\r\n\r\n"
               b"vmstats,vm=10.9.0.9 cpu=5,mem=40 %d\n" % (SECRET.encode(), BEARER.encode(), stamp))
    record = b"vmstats,vm=10.9.0.%d cpu=5,mem=40 %d\n"
    for parsers in ("2", "0"):
        with serve(tmp_path / parsers, "--parsers", parsers) as server:
            if parsers != "0":  # the parser processes read the socket
                server.wait_for(lambda s: s.metrics()["vmstats_parsers_reading_udp"] == 2,
                                timeout=10)
            server.send_udp(record % (1, stamp), request, record % (2, stamp),
                            b"GET /metrics HTTP/1.1\r\nHost: stats\r\n\r\n")
            metrics = server.wait_metrics(
                lambda m: m.get('vmstats_rejected_total{reason="http_request"}') == 2
                and m["vmstats_records_received_total"] == 2, timeout=5)
            rejected = {key: n for key, n in metrics.items()
                        if key.startswith("vmstats_rejected_total") and n}
            assert rejected == {'vmstats_rejected_total{reason="http_request"}': 2}, rejected
            assert metrics["vmstats_datagrams_received_total"] == 4
        assert server.returncode == 0, server.output
        assert ("http_request: an HTTP client (POST /write) wrote to the native line port (UDP), "
                "dropped unread") in server.output, server.output
        assert "an HTTP client (GET /metrics)" in server.output
        assert_no_secret(tmp_path / parsers)


def test_a_datagram_batch_a_parser_process_fails_on_is_read_by_the_reactor_without_its_requests(
        tmp_path):
    """A parser process that fails on the datagrams it read (a bug) hands them to the reactor.
    Before, it handed them over joined, and the reactor parsed them line by line: an HTTP
    request among them had its headers refused as records, the record in its body filed, and
    the payload, token and all, journaled.  Now the reactor takes them as it takes the ones it
    reads itself: the request is dropped and counted once, the records beside it kept."""
    stamp = int(time.time()) - 120
    record = b"vmstats,vm=10.9.0.%d cpu=5,mem=40 %d\n"
    env = {"PYTHONPATH": PARSER_FAULT, "VMSTATS_TEST_PARSER_FAULT": "Host: faulty"}
    with serve(tmp_path, "--parsers", "1", "--flush-interval", "60", env=env) as server:
        server.wait_for(lambda s: s.metrics()["vmstats_parsers_reading_udp"] == 1, timeout=10)
        server.send_udp(record % (1, stamp), misdirected(stamp, b"faulty"), record % (2, stamp))
        metrics = server.wait_metrics(
            lambda m: m.get('vmstats_rejected_total{reason="http_request"}') == 1
            and m["vmstats_records_received_total"] == 2, timeout=10)
        assert rejects(metrics) == {'vmstats_rejected_total{reason="http_request"}': 1}
        assert metrics["vmstats_datagrams_received_total"] == 3
        assert_no_secret(tmp_path)  # the journal holds the records until the flush: not the request
    assert server.returncode == 0, server.output
    assert "RuntimeError(\"a parser fault" in server.output, server.output
    assert "an HTTP client (POST /write) wrote to the native line port (UDP)" in server.output
    assert sorted(path.name for path in (tmp_path / "data" / "vms").iterdir()) == [
        "10.9.0.1", "10.9.0.2"]
    assert_no_secret(tmp_path)


def test_under_auth_keys_an_http_request_in_a_datagram_is_counted_as_one_not_as_unsigned_lines(
        tmp_path):
    """With --auth-keys every unsigned line is refused as sig_missing, and a request sent to the
    native UDP port was counted so, one per header line (six here): the counters told the
    operator unsigned records came.  It is counted once as http_request, as without keys,
    whether a parser process reads the socket or the reactor does (``--parsers 0``)."""
    keys = tmp_path / "keys"
    keys.write_text("k1 first-secret\n")
    stamp = int(time.time()) - 120
    record = b"vmstats,vm=10.9.1.%d cpu=5,mem=40 %d\n"
    for parsers in ("2", "0"):
        with serve(tmp_path / parsers, "--parsers", parsers, "--auth-keys", str(keys)) as server:
            if parsers != "0":
                server.wait_for(lambda s: s.metrics()["vmstats_parsers_reading_udp"] == 2,
                                timeout=10)
            server.send_udp(protocol.sign_payload("k1", "first-secret", record % (1, stamp)),
                            misdirected(stamp), record % (2, stamp))
            metrics = server.wait_metrics(
                lambda m: m.get('vmstats_rejected_total{reason="http_request"}') == 1
                and m.get('vmstats_rejected_total{reason="sig_missing"}') == 1
                and m["vmstats_records_received_total"] == 1, timeout=10)
            assert rejects(metrics) == {'vmstats_rejected_total{reason="http_request"}': 1,
                                        'vmstats_rejected_total{reason="sig_missing"}': 1}
        assert server.returncode == 0, server.output
        assert ("http_request: an HTTP client (POST /write) wrote to the native line port (UDP), "
                "dropped unread") in server.output, server.output
        assert_no_secret(tmp_path / parsers)


def read_to_close(sock) -> bytes:
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    return answer


def test_an_http_request_after_records_on_the_native_tcp_port_is_answered_as_at_its_start(
        tmp_path):
    """A request line after records (``cat records request | nc stats 8899``): before, only a
    connection's first line was looked at, and the request's lines were refused one by one as
    records (six rejects), the record in its body filed, the payload journaled with its token,
    and the connection left open.  Now it ends the stream as a request at its start does:
    counted once, answered 400 and closed; the records before it are filed, and the sync
    before it answered first.  Nothing after it is read, its sync included."""
    stamp = int(time.time()) - 120
    record = b"vmstats,vm=10.9.2.%d cpu=5,mem=40 %d\n"
    keys = tmp_path / "keys"
    keys.write_text("k1 first-secret\n")
    for signed in (False, True):
        run = tmp_path / ("signed" if signed else "plain")
        options = ("--auth-keys", str(keys)) if signed else ()
        with serve(run, "--flush-interval", "60", *options) as server:
            first, second = record % (1, stamp), record % (2, stamp)
            if signed:
                first = protocol.sign_payload("k1", "first-secret", first)
                second = protocol.sign_payload("k1", "first-secret", second)
            with server.tcp(timeout=5) as sock:  # all of it in one write
                sock.sendall(first + b"#!sync one\n" + second + misdirected(stamp)
                             + b"#!sync two\n")
                answer = read_to_close(sock)
            assert answer.startswith(b"#!ack one 1 0\nHTTP/1.1 400 Bad Request\r\n"), answer
            with server.tcp(timeout=5) as sock:  # the request in a read of its own
                sock.sendall(record % (3, stamp) + b"#!sync three\n")
                assert sock.recv(100) == (b"#!nak three auth\n" if signed else b"#!ack three 1 0\n")
                sock.sendall(b"GET /metrics?token=%s HTTP/1.1\r\nX-Token:%s\r\n\r\n"
                             % (SECRET.encode(), SECRET.encode()))
                assert read_to_close(sock).startswith(b"HTTP/1.1 400 Bad Request\r\n")
            expected = {'vmstats_rejected_total{reason="http_request"}': 2}
            if signed:
                expected['vmstats_rejected_total{reason="sig_missing"}'] = 1
            filed = 2 if signed else 3
            metrics = server.wait_metrics(
                lambda m, n=filed: m["vmstats_records_received_total"] == n)
            assert rejects(metrics) == expected
            assert_no_secret(run)  # the journal, until the flush, holds the records alone
        assert server.returncode == 0, server.output
        assert "an HTTP client (POST /write) wrote to the native line port (TCP)" in server.output
        assert "an HTTP client (GET /metrics)" in server.output
        vms = sorted(path.name for path in (run / "data" / "vms").iterdir())
        assert vms == (["10.9.2.1", "10.9.2.2"] if signed else ["10.9.2.1", "10.9.2.2", "10.9.2.3"])
        assert_no_secret(run)


def test_an_http_request_after_lines_on_a_line_port_is_answered_as_at_its_start(tmp_path):
    """curl or Telegraf speaking HTTP to the line-protocol or Graphite TCP port after some lines
    (``cat lines request | nc stats 8086``): before, only a connection's first line was looked
    at, so the request's lines went to the decoder, which refused its headers one by one and
    quoted them (``Authorization:Token ...`` in the log), filed the line in its body, journaled
    the payload with the token, and left the connection open.  Now it ends the stream as a
    request at its start does: counted once, answered 400 and closed, the lines before it read."""
    now = int(time.time())
    with serve(tmp_path, "--flush-interval", "60", "--influx-port", "0", "--graphite-port", "0",
               "--graphite-template", "servers.{vm}.cpu.percent cpu") as server:
        influx, graphite = server.status["influx_port"], server.status["graphite_port"]
        with server.tcp_to(influx, timeout=5) as sock:  # lines and the request in one write
            sock.sendall(b"cpu,cpu=cpu-total,host=vm1 usage_idle=5 %d\n" % (now * 10**9)
                         + misdirected(now))
            assert read_to_close(sock).startswith(b"HTTP/1.1 400 Bad Request\r\n")
        with server.tcp_to(graphite, timeout=5) as sock:  # the request in a read of its own
            sock.sendall(b"servers.vm2.cpu.percent 5 %d\n" % now)
            server.wait_metrics(lambda m: edge(m, "graphite", "used") == 1)
            sock.sendall(b"POST /metrics/write HTTP/1.1\r\nHost: x\r\nAuthorization:Bearer "
                         + BEARER.encode() + b"\r\nContent-Length: 28\r\n\r\n"
                         b"servers.vm3.cpu.percent 5 %d\n" % now)
            assert read_to_close(sock).startswith(b"HTTP/1.1 400 Bad Request\r\n")
        metrics = server.wait_metrics(lambda m: edge(m, "influx", "http_request") == 1
                                      and edge(m, "graphite", "http_request") == 1)
        outcomes = {key: n for key, n in metrics.items()
                    if key.startswith("vmstats_edge_lines_total") and n}
        assert outcomes == {'vmstats_edge_lines_total{format="influx",outcome="used"}': 1,
                            'vmstats_edge_lines_total{format="influx",outcome="http_request"}': 1,
                            'vmstats_edge_lines_total{format="graphite",outcome="used"}': 1,
                            'vmstats_edge_lines_total{format="graphite",outcome="http_request"}': 1,
                            }, outcomes
        assert_no_secret(tmp_path)  # the journal holds the lines alone
    assert server.returncode == 0, server.output
    assert "an HTTP client (POST /write) wrote to the influx line port (TCP)" in server.output
    assert "an HTTP client (POST /metrics/write) wrote to the graphite line port (TCP)" in (
        server.output)
    assert_no_secret(tmp_path)


def after_records(stamp: int, first: int, host: bytes = b"stats") -> bytes:
    """One datagram: a record, then a request (a client that joins both, or a request written
    after records to the wrong port), a record of 10.9.0.9 in the request's body."""
    return b"vmstats,vm=10.9.4.%d cpu=5,mem=40 %d\n" % (first, stamp) + misdirected(stamp, host)


def reading_udp(server, parsers: str) -> None:
    """Wait until the parser processes read the UDP socket, if there are any."""
    if parsers != "0":
        server.wait_for(lambda s: s.metrics()["vmstats_parsers_reading_udp"] == int(parsers),
                        timeout=10)


@pytest.mark.parametrize("parsers", ["2", "0"])
def test_an_http_request_after_records_in_a_datagram_is_dropped_and_the_records_kept(
        tmp_path, parsers):
    """A datagram to the native UDP port holding records and then an HTTP request: only its
    first line was looked at, so the request's lines were refused one by one as records, the
    token in its headers quoted in the log and journaled with the payload.  Now the request is
    counted once as http_request, named by its method and path, and nothing of it read; the
    records before it are filed, in the reactor (``--parsers 0``) or a parser process."""
    stamp = int(time.time()) - 120
    with serve(tmp_path, "--parsers", parsers, "--flush-interval", "60") as server:
        reading_udp(server, parsers)
        server.send_udp(after_records(stamp, 1), b"vmstats,vm=10.9.4.2 cpu=5,mem=40 %d" % stamp)
        metrics = server.wait_metrics(
            lambda m: m["vmstats_records_received_total"] >= 2 and rejects(m), timeout=5)
        assert_no_secret(tmp_path)  # the log, and the journal until the flush: records alone
        assert rejects(metrics) == {'vmstats_rejected_total{reason="http_request"}': 1}
        assert metrics["vmstats_records_received_total"] == 2
    assert server.returncode == 0, server.output
    assert ("http_request: an HTTP client (POST /write) wrote to the native line port (UDP), "
            "dropped unread") in server.output, server.output
    assert sorted(path.name for path in (tmp_path / "data" / "vms").iterdir()) == [
        "10.9.4.1", "10.9.4.2"]
    assert_no_secret(tmp_path)


def test_a_request_after_records_in_a_datagram_a_parser_fails_on_is_dropped_by_the_reactor(
        tmp_path):
    """The datagrams a parser process fails on (a bug) go to the reactor as they came, which
    looked at each one's first line only: the request after a record was read as records."""
    stamp = int(time.time()) - 120
    env = {"PYTHONPATH": PARSER_FAULT, "VMSTATS_TEST_PARSER_FAULT": "Host: faulty"}
    with serve(tmp_path, "--parsers", "1", "--flush-interval", "60", env=env) as server:
        reading_udp(server, "1")
        server.send_udp(after_records(stamp, 1, b"faulty"))
        metrics = server.wait_metrics(
            lambda m: m["vmstats_records_received_total"] >= 1 and rejects(m), timeout=5)
        assert_no_secret(tmp_path)
        assert rejects(metrics) == {'vmstats_rejected_total{reason="http_request"}': 1}
        assert metrics["vmstats_records_received_total"] == 1
    assert server.returncode == 0, server.output
    assert "RuntimeError(\"a parser fault" in server.output, server.output
    assert sorted(path.name for path in (tmp_path / "data" / "vms").iterdir()) == ["10.9.4.1"]
    assert_no_secret(tmp_path)


@pytest.mark.parametrize("parsers", ["2", "0"])
def test_under_auth_keys_a_request_after_unsigned_lines_in_a_datagram_is_counted_once(
        tmp_path, parsers):
    """Under --auth-keys an unsigned datagram's lines are refused as sig_missing; a request
    after them was counted so too, a line each (seven for one record), as only the first line
    was looked at.  Now the lines before it are sig_missing and the request one http_request,
    in the reactor (``--parsers 0``) or a parser process."""
    keys = tmp_path / "keys"
    keys.write_text("k1 first-secret\n")
    stamp = int(time.time()) - 120
    with serve(tmp_path, "--parsers", parsers, "--auth-keys", str(keys)) as server:
        reading_udp(server, parsers)
        server.send_udp(after_records(stamp, 1), protocol.sign_payload(
            "k1", "first-secret", b"vmstats,vm=10.9.4.2 cpu=5,mem=40 %d\n" % stamp))
        metrics = server.wait_metrics(
            lambda m: m["vmstats_records_received_total"] >= 1
            and m.get('vmstats_rejected_total{reason="sig_missing"}'), timeout=5)
        assert_no_secret(tmp_path)
        assert rejects(metrics) == {'vmstats_rejected_total{reason="http_request"}': 1,
                                    'vmstats_rejected_total{reason="sig_missing"}': 1}
    assert server.returncode == 0, server.output
    assert "an HTTP client (POST /write) wrote to the native line port (UDP)" in (
        server.output), server.output
    assert_no_secret(tmp_path)


@pytest.mark.parametrize("run", ["parser", "reactor", "optional"])
def test_an_http_request_after_records_in_a_signed_frame_is_dropped_and_the_records_kept(
        tmp_path, run):
    """A sender that signs what it joins (records, then a request) sends a frame whose payload
    holds the request: its signature checked, the payload was parsed line by line, the token
    in the request's headers quoted in the log and journaled.  Now the payload is cut at the
    request once the frame's checks pass, with --auth-keys (in a parser process or the
    reactor) or without (signatures optional, unwrapped by the reactor)."""
    keys = tmp_path / "keys"
    keys.write_text("k1 first-secret\n")
    stamp = int(time.time()) - 120
    options = {"parser": ("--auth-keys", str(keys)),
               "reactor": ("--parsers", "0", "--auth-keys", str(keys)), "optional": ()}[run]
    with serve(tmp_path, "--flush-interval", "60", *options) as server:
        reading_udp(server, "0" if run == "reactor" else "2")
        server.send_udp(protocol.sign_payload("k1", "first-secret", after_records(stamp, 1)))
        metrics = server.wait_metrics(
            lambda m: m["vmstats_records_received_total"] >= 1 and rejects(m), timeout=5)
        assert_no_secret(tmp_path)
        assert rejects(metrics) == {'vmstats_rejected_total{reason="http_request"}': 1}
        assert metrics["vmstats_records_received_total"] == 1
    assert server.returncode == 0, server.output
    assert "an HTTP client (POST /write) wrote to the native line port (%s), dropped" % (
        "UDP" if run == "optional" else "signed frame") in server.output, server.output
    assert sorted(path.name for path in (tmp_path / "data" / "vms").iterdir()) == ["10.9.4.1"]
    assert_no_secret(tmp_path)


@pytest.mark.parametrize("keyed", [False, True])
def test_an_http_request_after_records_in_a_signed_frame_over_tcp_is_dropped_the_stream_read_on(
        tmp_path, keyed):
    """The same frame over the native TCP port: under --auth-keys its payload is cut once its
    checks pass (signing.check_frames), but a server without keys unwrapped it and read all of
    it as lines, the request's headers refused one by one, the token quoted in the log and
    journaled, the record in its body filed.  Now both cut it: the request counted once and
    named by its method and path, the frame's records before it filed, and the stream read on
    (a frame after it filed, the sync answered for both)."""
    keys = tmp_path / "keys"
    keys.write_text("k1 first-secret\n")
    stamp = int(time.time()) - 120
    options = ("--auth-keys", str(keys)) if keyed else ()
    with serve(tmp_path, "--flush-interval", "60", *options) as server:
        after = protocol.sign_payload("k1", "first-secret",
                                      b"vmstats,vm=10.9.5.2 cpu=5,mem=40 %d\n" % stamp)
        reply = server.send_synced(
            protocol.sign_payload("k1", "first-secret", after_records(stamp, 1).replace(
                b"10.9.4.1", b"10.9.5.1")) + after, "one", timeout=5)
        metrics = server.wait_metrics(lambda m: m["vmstats_records_received_total"] >= 2)
        assert_no_secret(tmp_path)  # the log, and the journal until the flush: records alone
        assert reply == ["#!ack", "one", "2", "0"], reply
        assert rejects(metrics) == {'vmstats_rejected_total{reason="http_request"}': 1}
        assert metrics["vmstats_records_received_total"] == 2
    assert server.returncode == 0, server.output
    assert ("an HTTP client (POST /write) wrote to the native line port (signed frame), dropped "
            "unread") in server.output, server.output
    assert sorted(path.name for path in (tmp_path / "data" / "vms").iterdir()) == [
        "10.9.5.1", "10.9.5.2"]
    assert_no_secret(tmp_path)


def test_an_http_request_after_lines_in_a_datagram_to_a_line_port_is_dropped_the_lines_read(
        tmp_path):
    """The line ports' UDP twins looked at a datagram's first line only: a request after lines
    went to the decoder, which refused its headers one by one, quoting the token."""
    now = int(time.time())
    with serve(tmp_path, "--flush-interval", "60", "--influx-port", "0", "--graphite-port", "0",
               "--graphite-template", "servers.{vm}.cpu.percent cpu") as server:
        influx, graphite = server.status["influx_port"], server.status["graphite_port"]
        server.send_udp_to(influx, b"cpu,cpu=cpu-total,host=vm1 usage_idle=5 %d\n" % (now * 10**9)
                           + misdirected(now))
        server.send_udp_to(graphite, b"servers.vm2.cpu.percent 5 %d\n" % now
                           + b"POST /metrics/write HTTP/1.1\r\nHost: x\r\nAuthorization:Bearer "
                           + BEARER.encode() + b"\r\n\r\nservers.vm3.cpu.percent 5 %d\n" % now)
        metrics = server.wait_metrics(lambda m: edge(m, "influx", "used")
                                      and edge(m, "graphite", "used") and len([
                                          n for key, n in m.items() if n and key.startswith(
                                              "vmstats_edge_lines_total")]) > 3, timeout=5)
        assert_no_secret(tmp_path)
        outcomes = {key: n for key, n in metrics.items()
                    if key.startswith("vmstats_edge_lines_total") and n}
        assert outcomes == {'vmstats_edge_lines_total{format="influx",outcome="used"}': 1,
                            'vmstats_edge_lines_total{format="influx",outcome="http_request"}': 1,
                            'vmstats_edge_lines_total{format="graphite",outcome="used"}': 1,
                            'vmstats_edge_lines_total{format="graphite",outcome="http_request"}': 1,
                            }, outcomes
    assert server.returncode == 0, server.output
    assert "an HTTP client (POST /write) wrote to the influx line port (UDP)" in server.output
    assert "an HTTP client (POST /metrics/write) wrote to the graphite line port (UDP)" in (
        server.output)
    assert_no_secret(tmp_path)
