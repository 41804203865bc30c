"""What the server shows and to whom: exact HTTP paths, no version banner, /status details
behind a token, --allow on every port, the start-up warning, and start-up errors that name
the listener or the directory."""

import http.client
import json
import logging
import socket
import subprocess
import sys
import time

import pytest
from serverproc import LOOPBACK, serve
from test_server_lifecycle import run_cli
from test_server_tcp import read_reply
from test_server_udp import line, now
from twisted.internet.task import Clock

from vmstats.protocol import Record
from vmstats.server.config import ServerConfig
from vmstats.server.service import Aggregator


def get(port: int, path: str, method: str = "GET", headers: dict | None = None,
        source: str = LOOPBACK, body: bytes | None = None) -> tuple[int, dict, bytes]:
    """A raw request (the path sent exactly as given): status, headers, body."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_http_paths_match_exactly_and_no_response_names_the_server(tmp_path):
    with serve(tmp_path) as server:
        port = server.http_port
        status, headers, body = get(port, "/metrics")
        assert status == 200 and b"vmstats_records_received_total" in body
        for path in ("/metrics/x", "/metrics/", "/status/../metrics", "/status/", "/", "/nope",
                     "/metrics?x=1/../status", "//metrics"):
            status, headers, _ = get(port, path)
            assert (status, "server" in headers) == (404 if "?" not in path else 200, False), path
        status, headers, _ = get(port, "/metrics", method="POST")
        assert status == 405 and headers["allow"] == "GET, HEAD" and "server" not in headers
        status, headers, body = get(port, "/metrics", method="HEAD")
        assert status == 200 and body == b"" and "server" not in headers


def test_idle_http_connections_are_closed_and_counted(tmp_path):
    with serve(tmp_path, "--http-idle-timeout", "1s") as server:
        # Closed at the 1 s given, however slow the host, well before the default 30 s.
        idle = socket.create_connection((LOOPBACK, server.http_port), timeout=20)
        slow = socket.create_connection((LOOPBACK, server.http_port), timeout=20)
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")  # a request that never ends
        assert idle.recv(10) == b"" and slow.recv(10) == b""
        idle.close()
        slow.close()
        metrics = server.wait_metrics(
            lambda m: m['vmstats_connections_idle_closed_total{port="http"}'] >= 2)
    assert metrics['vmstats_connections_idle_closed_total{port="tcp"}'] == 0


def test_status_details_need_the_token_and_counts_stay_public(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    t = now() - 60
    with serve(tmp_path, "--status-token-file", str(token_file)) as server:
        server.send_udp(line(Record(vm="10.70.0.1", ts=t, cpu=1.0, mem=2.0)))
        server.wait_received(1)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            status, _, body = get(server.http_port, "/status", headers=headers)
            assert status == 200
            public = server_json(body)
            assert public["records_received"] == 1 and public["vms_seen"] == 1
            assert "data_dir" not in public and "last_seen" not in public
            assert str(tmp_path) not in body.decode()
        _, _, body = get(server.http_port, "/status",
                         headers={"Authorization": "Bearer s3cret-token"})
        detailed = server_json(body)
        assert detailed["data_dir"] == str(tmp_path / "data")
        assert list(detailed["last_seen"]) == ["10.70.0.1"]


def test_status_token_and_its_file_together_are_a_usage_error(tmp_path, monkeypatch):
    """Both given, the file used to win silently; the environment's token stays a default."""
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")
    common = ("--bind", LOOPBACK, "--udp-port", "0", "--tcp-port", "0", "--no-http", "--parsers",
              "0", "--workers", "1", "--data-dir", str(tmp_path / "d"), "--duration", "1s")
    result = run_cli(*common, "--status-token", "on-the-line", "--status-token-file", str(token_file))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: --status-token and --status-token-file are one setting: give one")
    monkeypatch.setenv("VMSTATS_STATUS_TOKEN", "from-the-environment")  # run_cli passes it on
    assert run_cli(*common, "--status-token-file", str(token_file)).returncode == 0


def server_json(body: bytes) -> dict:
    return json.loads(body)


def test_allow_drops_udp_and_refuses_tcp_and_http_from_other_sources(tmp_path):
    t = now() - 60
    with serve(tmp_path, "--flush-interval", "0.3", "--allow", "127.0.0.2/32,10.0.0.0/8",
               "--http-allow", "127.0.0.3") as server:
        for source, vm in (("127.0.0.1", "10.71.0.1"), ("127.0.0.2", "10.71.0.2")):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((source, 0))
                sock.sendto(line(Record(vm=vm, ts=t, cpu=1.0, mem=2.0)), (LOOPBACK, server.udp_port))
        with socket.create_connection((LOOPBACK, server.tcp_port), timeout=5,
                                      source_address=("127.0.0.2", 0)) as allowed:
            allowed.sendall(line(Record(vm="10.71.0.3", ts=t, cpu=1.0, mem=2.0)) + b"\n#!sync a\n")
            assert read_reply(allowed) == b"#!ack a 1 0\n"
        with socket.create_connection((LOOPBACK, server.tcp_port), timeout=5) as refused:
            try:
                refused.sendall(line(Record(vm="10.71.0.4", ts=t, cpu=1.0, mem=2.0))
                                + b"\n#!sync r\n")
                assert read_reply(refused) == b""  # closed at once
            except ConnectionResetError:
                pass  # closed at once, before or after what was sent arrived
        with pytest.raises(OSError):  # closed before it can answer
            get(server.http_port, "/metrics")

        def metrics() -> dict:
            _, _, body = get(server.http_port, "/metrics", source="127.0.0.3")
            return {k: float(v) for k, _, v in (row.rpartition(" ") for row in
                    body.decode().splitlines() if row and not row.startswith("#"))}

        found = {}
        deadline = 50
        while deadline and not (found.get('vmstats_not_allowed_total{port="udp"}')
                                and found.get("vmstats_records_received_total", 0) >= 2):
            found = metrics()
            deadline -= 1
            time.sleep(0.1)
    assert found['vmstats_not_allowed_total{port="udp"}'] == 1
    assert found['vmstats_not_allowed_total{port="tcp"}'] == 1
    assert found['vmstats_not_allowed_total{port="http"}'] == 1
    assert found["vmstats_records_received_total"] == 2
    assert sorted(p.name for p in (tmp_path / "data" / "vms").iterdir()) == ["10.71.0.2",
                                                                           "10.71.0.3"]


def _dual_stack() -> bool:
    """Can this machine listen on :: and take IPv4 (as ::ffff:a.b.c.d) and ::1 on it?"""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
            sock.listen()
            for peer in ("127.0.0.1", "::1"):
                socket.create_connection((peer, sock.getsockname()[1]), timeout=5).close()
        return True
    except OSError:
        return False


def _synced(family: int, source: str, port: int, vm: str, t: int) -> bytes:
    """A record sent over TCP from ``source`` to the server's ``port``, and its reply
    (b"" when the connection was refused)."""
    target = "::1" if family == socket.AF_INET6 else LOOPBACK
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect((target, port))
        try:
            sock.sendall(line(Record(vm=vm, ts=t, cpu=1.0, mem=2.0)) + b"\n#!sync s\n")
            return read_reply(sock)
        except ConnectionResetError:
            return b""


@pytest.mark.skipif(not _dual_stack(), reason="no dual-stack IPv6 loopback here")
def test_allow_matches_ipv4_peers_of_a_dual_stack_listener_by_either_spelling(tmp_path):
    """On --bind :: an IPv4 peer arrives as ::ffff:a.b.c.d: an IPv4 rule matches it, and so
    does an IPv4-mapped rule (::ffff:127.0.0.0/104), which matched nothing before."""
    t = now() - 60
    server = serve(tmp_path, "--flush-interval", "0.3", "--allow", "::ffff:127.0.0.2/127,::1",
                   "--http-allow", "127.0.0.1/32")
    server.args += ["--bind", "::"]  # after the helper's --bind 127.0.0.1: it wins
    with server:
        port = server.tcp_port
        assert _synced(socket.AF_INET, "127.0.0.2", port, "10.73.0.2", t) == b"#!ack s 1 0\n"
        assert _synced(socket.AF_INET, "127.0.0.3", port, "10.73.0.3", t) == b"#!ack s 1 0\n"
        assert _synced(socket.AF_INET, "127.0.0.4", port, "10.73.0.4", t) == b""
        assert _synced(socket.AF_INET6, "::1", port, "10.73.0.6", t) == b"#!ack s 1 0\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # UDP: the same rule
            sock.bind(("127.0.0.3", 0))
            sock.sendto(line(Record(vm="10.73.1.3", ts=t, cpu=1.0, mem=2.0)), (LOOPBACK, server.udp_port))
        with pytest.raises(OSError):  # ::1 is outside --http-allow's IPv4 network: closed
            conn = http.client.HTTPConnection("::1", server.http_port, timeout=10)
            conn.request("GET", "/metrics")
            conn.getresponse()
        # 127.0.0.1 arrives as ::ffff:127.0.0.1 and is in --http-allow 127.0.0.1/32.
        found = server.wait_metrics(lambda m: m.get("vmstats_records_received_total") == 4)
        assert found['vmstats_not_allowed_total{port="tcp"}'] == 1
        assert found['vmstats_not_allowed_total{port="http"}'] == 1
    # The start-up warning names the networks as they are matched.
    assert "from the networks in --allow (127.0.0.2/31, ::1/128)" in server.output, server.output


KEYS = {b"k": b"s"}


@pytest.mark.parametrize("bind, keys, others, warned", [
    ("0.0.0.0", None, {}, "udp 8899 / tcp 8899 / http /write 8898 from ANY"),
    ("::", None, {"allow": ("10.0.0.0/8",), "http_allow": ("127.0.0.1/32",)},
     "udp 8899 / tcp 8899 from the networks in --allow (10.0.0.0/8); http /write 8898 from "
     "the networks in --http-allow (127.0.0.1/32)"),
    ("::", None, {}, "udp 8899"), ("10.1.2.3", None, {}, "udp 8899"),
    ("0.0.0.0", None, {"write_token": "w"}, "udp 8899 / tcp 8899 from"),
    ("127.0.0.1", None, {}, ""), ("::1", None, {}, ""), ("0.0.0.0", KEYS, {}, ""),
    ("127.0.0.1", KEYS, {"influx_port": 8094}, ""),
    # --auth-keys guards only the native ports: each other format's port takes unsigned records
    ("0.0.0.0", KEYS, {"influx_port": 8094, "graphite_port": 2003}, "influx 8094 / graphite 2003"),
    ("0.0.0.0", KEYS, {"collectd_port": 25826}, "collectd 25826"),
    ("0.0.0.0", KEYS, {"collectd_port": 25826, "collectd_security": "sign",
                       "collectd_auth": {"u": "p"}}, "")])
def test_the_warning_comes_exactly_when_unsigned_records_are_taken_from_beyond_loopback(
        tmp_path, caplog, bind, keys, others, warned):
    config = ServerConfig(bind=bind, auth_keys=keys, data_dir=str(tmp_path), parsers=0, workers=1,
                          **others)
    aggregator = Aggregator(config, Clock())  # built, never started: nothing listens
    assert aggregator.exposed() is bool(warned)
    with caplog.at_level(logging.WARNING):
        aggregator._announce_exposure({"udp_port": 8899, "tcp_port": 8899, "http_port": 8898,
                                       "influx_port": 8094, "graphite_port": 2003,
                                       "collectd_port": 25826})
    assert ("UNSIGNED records on %s %s" % (bind, warned) in caplog.text) is bool(warned)
    assert aggregator.metrics.gauges["unsigned_accepted_beyond_loopback"][1]() == int(bool(warned))


def test_bind_takes_a_host_name(tmp_path):
    t = now() - 60
    server = serve(tmp_path, "--flush-interval", "0.3")
    server.args += ["--bind", "localhost"]  # after the helper's --bind 127.0.0.1: it wins
    with server:
        assert server.status["bind"] == "127.0.0.1"
        server.send_udp(line(Record(vm="10.72.0.1", ts=t, cpu=1.0, mem=2.0)))
        server.wait_received(1)
    assert server.returncode == 0


def one_line_error(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _taken(kind: str) -> socket.socket:
    """A loopback port taken in ``kind`` (UDP bound, or TCP listening) and free in the other.

    The graphite listener takes its port in both; a UDP port the kernel picked may be, by
    chance, another test's TCP connection at that moment, and then the TCP side would be named.
    """
    for _attempt in range(100):
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
        busy.bind((LOOPBACK, 0))
        if kind != "udp":
            busy.listen()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "udp" else socket.SOCK_DGRAM
                           ) as other:
            try:
                other.bind((LOOPBACK, busy.getsockname()[1]))
                return busy
            except OSError:
                busy.close()
    raise AssertionError("no loopback port free in both UDP and TCP")


@pytest.mark.parametrize("option, kind", [("udp", "udp"), ("tcp", "tcp"), ("http", "tcp"),
                                          ("graphite", "tcp"), ("graphite", "udp")])
def test_a_port_in_use_names_its_listener(tmp_path, option, kind):
    with _taken(kind) as busy:
        port = busy.getsockname()[1]
        ports = {"udp": "0", "tcp": "0", "http": "0", "graphite": "-1", option: str(port)}
        result = run_cli("--bind", LOOPBACK, "--udp-port", ports["udp"], "--tcp-port",
                         ports["tcp"], "--http-port", ports["http"], "--graphite-port",
                         ports["graphite"], "--data-dir", str(tmp_path / "d"), "--parsers", "0",
                         "--workers", "1")
    shown = "HTTP" if option == "http" else kind.upper()
    assert one_line_error(result) == ("Error: cannot listen on %s 127.0.0.1 port %d (--%s-port): "
                                      "Address already in use" % (shown, port, option))


def test_unusable_directories_and_names_are_one_line_that_names_them(tmp_path):
    in_the_way = tmp_path / "file"
    in_the_way.write_text("not a directory")
    common = ("--bind", LOOPBACK, "--udp-port", "0", "--tcp-port", "0", "--no-http",
              "--parsers", "0", "--workers", "1")
    refused = run_cli(*common, "--data-dir", str(in_the_way))
    assert refused.returncode == 2 and one_line_error(refused) == (
        "Error: cannot use the data directory (--data-dir) %s: a file, not a directory" % in_the_way)
    refused = run_cli(*common, "--data-dir", str(in_the_way / "sub" / "deeper"))
    assert refused.returncode == 2 and one_line_error(refused) == (
        "Error: cannot use the data directory (--data-dir) %s: %s is a file, not a directory"
        % (in_the_way / "sub" / "deeper", in_the_way))
    refused = run_cli(*common, "--data-dir", str(tmp_path / "d"), "--journal-dir",
                      str(in_the_way / "j"))
    assert refused.returncode == 2 and one_line_error(refused) == (
        "Error: cannot use the journal directory (--journal-dir) %s: %s is a file, not a directory"
        % (in_the_way / "j", in_the_way))
    error = one_line_error(run_cli(*common, "--data-dir", str(tmp_path / "d"), "--bind",
                                   "no-such-host.invalid"))
    assert error.startswith("Error: cannot resolve --bind no-such-host.invalid")
    error = one_line_error(run_cli(*common, "--data-dir", str(tmp_path / "d"), "--allow",
                                   "10.0.0.0/33"))
    assert "--allow" in error and "10.0.0.0/33" in error


def test_a_data_dir_that_is_a_file_is_one_refused_line_in_process(tmp_path):
    """Run inside a program (click's runner, whose stderr has no file descriptor), it said
    "Error: fileno", status 1: the server started before it looked at the folder."""
    from click.testing import CliRunner

    from vmstats import cli

    (tmp_path / "file").write_text("not a directory")
    result = CliRunner().invoke(cli.main, ["serve", "--bind", LOOPBACK, "--udp-port", "0",
                                           "--tcp-port", "0", "--no-http", "--data-dir",
                                           str(tmp_path / "file"), "--duration", "1s"])
    assert (result.exit_code, result.stdout, result.stderr) == (
        2, "", "Error: cannot use the data directory (--data-dir) %s: a file, not a directory\n"
        % (tmp_path / "file"))
    assert (tmp_path / "file").read_text() == "not a directory"


#: serve run inside a program whose stderr is a stream without a file descriptor.
_IN_PROCESS = """
import io, sys
from vmstats import cli
captured = io.StringIO()
sys.stderr = captured
try:
    cli.main(sys.argv[1:], "vmstats")
except SystemExit as end:
    sys.stdout.write("status %s\\n" % end.code)
sys.stdout.write(captured.getvalue())
"""


def test_a_server_run_inside_a_program_with_captured_stderr_starts(tmp_path):
    result = subprocess.run([sys.executable, "-c", _IN_PROCESS, "serve", "--bind", LOOPBACK,
                             "--udp-port", "0", "--tcp-port", "0", "--no-http", "--data-dir",
                             str(tmp_path / "d"), "--duration", "1s", "--parsers", "0",
                             "--workers", "1"], capture_output=True, text=True, timeout=60)
    assert "status 0" in result.stdout and "fileno" not in result.stdout, result.stdout + result.stderr
    assert "listening" in result.stdout, result.stdout


@pytest.mark.parametrize("option", ["--flush-interval", "--fsync-interval", "--capacity-refresh"])
def test_a_period_of_zero_is_refused_not_run_back_to_back(tmp_path, option):
    """0 between two runs kept a core busy fsyncing or summarising (the flush ran every second,
    silently): refused at start, as a usage error naming the option."""
    result = run_cli("--bind", LOOPBACK, "--udp-port", "0", "--tcp-port", "0", "--no-http",
                     "--data-dir", str(tmp_path / "d"), "--duration", "1s", option, "0s")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for '%s': '0s' is a period between two runs: it must be more than 0s"
        % option), result.stderr
    assert not (tmp_path / "d").exists()
