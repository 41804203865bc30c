"""The commands that ask a running server (``--url``) against loopback ports that are not one.

Each runs as an operator runs it (``python -m vmstats``) against a real listener: a port that
takes the connection and never answers (another service waiting for its own protocol, a stuck
process), one whose queue is full (the connection is never taken, as behind a firewall dropping it), one
that answers something other than HTTP or hangs up, one that redirects, and a plain HTTP server
that answers well; for https://, ports that never end the TLS handshake, answer it in plain
HTTP or with a certificate trusted or not; and a name server on loopback that never answers
the command's lookup.  Each ends with one ``Error:`` line that says what happened, promptly;
refusals of the address itself are in tests/test_cli_errors.py.
"""

import datetime
import ipaddress
import json
import os
import random
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from serverproc import STATUS_TOKEN, ServerProcess

from vmstats.serverclient import MAX_ANSWER, is_status_page

#: Every command that asks a server, with what it needs besides --url.
COMMANDS = {
    "alerts": ("alerts",),
    "rules mutes": ("rules", "mutes"),
    "rules mute": ("rules", "mute", "--rule", "hot", "--duration", "1h", "--author", "ana",
                   "--comment", "patching"),
    "rules unmute": ("rules", "unmute", "0123456789ab"),
}


def run(*args: str, env: dict | None = None, memory: int | None = None,
        under: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, float]:
    """The command as an operator runs it (``under`` another command that runs it); with
    ``memory``, its address space held to that many bytes (a command that reads without bound
    then fails fast, not the machine)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    started = time.monotonic()
    done = subprocess.run([*under, sys.executable, "-m", "vmstats", *args], capture_output=True, text=True,
                          timeout=30, env=env, preexec_fn=limit if memory else None)
    return done, time.monotonic() - started


def one_line(done: subprocess.CompletedProcess) -> str:
    """The one ``Error:`` line of a failed run (status 1: the run failed on the way)."""
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    return lines[0]


@contextmanager
def listening(backlog: int = 8) -> Iterator[socket.socket]:
    """A loopback port that takes connections and never reads or answers them: the kernel
    completes each handshake and holds the request until the socket is closed."""
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(backlog)
        yield listener
    finally:
        listener.close()


@contextmanager
def serving(talk: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback port whose each connection ``talk`` has, in a thread, until it returns."""
    with listening() as listener:
        def serve() -> None:
            while True:
                try:
                    peer, _ = listener.accept()
                except OSError:  # the listener was closed
                    return
                with peer:
                    peer.settimeout(5)
                    try:
                        talk(peer)
                    except OSError:  # the command hung up, as it should
                        pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
            thread.join(5)


def answering(reply: bytes | Callable[[socket.socket], None],
              heads: list[bytes] | None = None):
    """A loopback port that reads each request's head and body (its head put in ``heads``),
    sends ``reply`` (or lets ``reply`` talk to the peer) and hangs up."""
    return serving(answer(reply, heads))


def answer(reply: bytes | Callable[[socket.socket], None],
           heads: list[bytes] | None = None) -> Callable[[socket.socket], None]:
    """What ``answering`` says to each connection."""
    def talk(peer: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = peer.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if heads is not None:
            heads.append(head)
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += peer.recv(4096)
        reply(peer) if callable(reply) else peer.sendall(reply)

    return talk


@pytest.mark.parametrize("command", COMMANDS)
def test_a_port_that_never_answers_is_said_so_within_the_timeout(command):
    """A service waiting for its own protocol takes the connection and says nothing: the
    command waited its fixed 10 s, then said only "timed out"."""
    with listening() as listener:
        port = listener.getsockname()[1]
        done, took = run(*COMMANDS[command], "--url", "http://127.0.0.1:%d" % port, "--timeout", "0.5")
    line = one_line(done)
    assert "no HTTP answer from 127.0.0.1:%d within 0.5 s" % port in line, line
    assert "--timeout waits longer" in line
    assert took < 3.5, took


def test_a_connection_never_taken_is_given_up_at_the_connect_limit():
    """The port's queue is full (one connection waits in it): the handshake is never
    answered, as behind a firewall that drops it; the line says the connection never came."""
    with listening(backlog=0) as listener:
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # fills the queue
            done, took = run("alerts", "--url", "http://127.0.0.1:%d" % port, "--timeout", "0.5")
    line = one_line(done)
    assert line.endswith("no connection to 127.0.0.1:%d within 0.5 s" % port), line
    assert took < 3.5, took


@contextmanager
def silent_resolver(folder) -> Iterator[tuple[tuple[str, ...], socket.socket]]:
    """What runs a command whose system resolver asks a name server that never answers, and
    that server: a loopback UDP port 53 that answers nothing, named by a resolv.conf bind-mounted over
    /etc/resolv.conf in a mount namespace of the command's own (``unshare``; root only).  Its
    resolver waits 10 s (``timeout:10``) before it gives up, as one whose server is down."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("a resolver of the test's own needs root and unshare(1)")
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(20):  # an address of loopback's /8 no other run holds
            address = "127.%d.%d.%d" % tuple(random.randrange(1, 255) for _ in range(3))
            try:
                server.bind((address, 53))
                break
            except OSError:
                continue
        else:
            pytest.skip("no loopback address's port 53 was free")
        (folder / "resolv.conf").write_text("nameserver %s\noptions timeout:10 attempts:1\n" % address)
        under = ("unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
                 str(folder / "resolv.conf"))
        if subprocess.run([*under, "true"], capture_output=True).returncode != 0:
            pytest.skip("unshare --mount and mount --bind are not allowed here")
        yield under, server
    finally:
        server.close()


def test_a_name_whose_resolver_never_answers_is_given_up_at_the_timeout(tmp_path):
    """The lookup was http.client's, outside every limit: a resolver that never answered held
    the command for the resolver's own wait (here 10 s; 5 s a try, times its tries and servers,
    by default), whatever --timeout said."""
    with silent_resolver(tmp_path) as (under, server):
        done, took = run("alerts", "--url", "http://vmstats.test:8898", "--timeout", "0.5",
                         under=under)
        server.settimeout(0)
        assert b"\x07vmstats\x04test\x00" in server.recv(512)  # the name was asked of it
    assert one_line(done) == ("Error: cannot read http://vmstats.test:8898/alerts: vmstats.test not "
                              "resolved within 0.5 s (is the name right? --timeout waits longer)")
    assert took < 3.5, took


def tls_trickle(peer: socket.socket) -> None:
    """Reads the ClientHello, announces a 16 KiB handshake record and sends it a byte every
    0.05 s (10 s in all): each wait for the peer's bytes is short, the handshake never ends."""
    peer.recv(4096)
    peer.sendall(b"\x16\x03\x03\x40\x00")
    for _ in range(200):
        time.sleep(0.05)
        peer.sendall(b"\x00")


def tls_silent(peer: socket.socket) -> None:
    """Reads the ClientHello and says nothing, as a service waiting for its own protocol,
    until the command hangs up."""
    peer.recv(4096)
    peer.recv(4096)


@pytest.mark.parametrize("talk", [tls_silent, tls_trickle], ids=["silent", "trickle"])
def test_a_tls_handshake_that_does_not_end_is_given_up_at_the_timeout(talk):
    """https:// to a port that takes the connection and never ends the handshake, silent or
    trickling, was said as "no connection" (though it was made), after a limit of the
    handshake's own (4 s, or --timeout if less) beside the connect's.  The handshake is a
    step of the exchange now, named, and over by --timeout in all however often the peer's
    bytes come."""
    with serving(talk) as port:
        done, took = run("rules", "mutes", "--url", "https://127.0.0.1:%d" % port, "--timeout", "0.5")
    assert one_line(done) == ("Error: cannot read https://127.0.0.1:%d/mutes: the TLS handshake "
                              "with 127.0.0.1:%d did not end within 0.5 s (is it an https:// port? "
                              "--timeout waits longer)" % (port, port))
    assert took < 3.5, took


def test_a_plain_http_port_asked_over_https_is_said_so():
    """The server's own port speaks plain HTTP: its answer to the ClientHello is no TLS, and
    the line says so without OpenSSL's codes."""
    def plain(peer: socket.socket) -> None:
        peer.recv(4096)
        peer.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    with serving(plain) as port:
        done, _took = run("alerts", "--url", "https://127.0.0.1:%d" % port)
    line = one_line(done)
    assert line.startswith("Error: cannot read https://127.0.0.1:%d/alerts: the TLS handshake with "
                           "127.0.0.1:%d failed: " % (port, port)), line
    assert line.endswith(" (is it an https:// port?)") and "_ssl.c" not in line, line


def self_signed(folder) -> ssl.SSLContext:
    """A server's TLS context with a new certificate for 127.0.0.1, written to
    ``folder/cert.pem`` for a client to trust."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vmstats test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def test_https_asks_through_a_certificate_it_checks(tmp_path):
    """The TLS is made here, not by http.client: a server whose certificate the machine trusts
    (SSL_CERT_FILE names it) is asked and answers; one it does not trust is said so."""
    context = self_signed(tmp_path)
    page = json.dumps({"mutes": []}).encode()
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(page), page)
    heads: list[bytes] = []
    talk = answer(reply, heads)
    with serving(lambda peer: talk(context.wrap_socket(peer, server_side=True))) as port:
        url = "https://127.0.0.1:%d" % port
        trusted, _took = run("rules", "mutes", "--url", url, "--json",
                             env=dict(os.environ, SSL_CERT_FILE=str(tmp_path / "cert.pem")))
        untrusted, _took = run("rules", "mutes", "--url", url,
                               env={k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"})
    assert trusted.returncode == 0, trusted.stderr
    assert json.loads(trusted.stdout) == {"mutes": []}
    assert heads[0].startswith(b"GET /mutes HTTP/1.1\r\n"), heads
    assert b"\r\nHost: 127.0.0.1:%d\r\n" % port in heads[0], heads
    line = one_line(untrusted)
    assert line.startswith("Error: cannot read %s/mutes: the certificate of 127.0.0.1:%d is not "
                           "trusted: self" % (url, port)), line  # OpenSSL's "self-signed certificate"


@pytest.mark.parametrize("reply, says", [
    (b"hello\n", "does not answer HTTP (it said 'hello\\n')"),
    (b"", "closed the connection without an HTTP answer"),
])
def test_a_port_that_does_not_speak_http_is_said_so(reply, says):
    with answering(reply) as port:
        done, took = run("rules", "mutes", "--url", "http://127.0.0.1:%d" % port)
    line = one_line(done)
    assert line == "Error: cannot read http://127.0.0.1:%d/mutes: 127.0.0.1:%d %s" % (port, port, says)
    assert took < 3.5, took


def test_a_redirect_is_reported_not_followed():
    """urllib followed it (a POST became a GET there, so a mute was never made); the operator
    is told where the server said to go instead."""
    to = b"http://127.0.0.1:9/mutes"
    reply = b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % to
    with answering(reply) as port:
        done, _took = run(*COMMANDS["rules mute"], "--url", "http://127.0.0.1:%d" % port)
    assert one_line(done) == ("Error: cannot read http://127.0.0.1:%d/mutes: HTTP 302 Found "
                              "to %s (give the address it names as --url)" % (port, to.decode()))


def test_the_address_is_asked_directly_whatever_proxy_the_environment_names():
    """An ``http_proxy`` meant for the outside world sent the request for 127.0.0.1 to it.

    The path before the pages and the token are sent as the server reads them: a path that
    is not ASCII %-encoded (http.client refused it), the token in UTF-8 (it was Latin-1)."""
    page = json.dumps({"states": [], "recent": [], "counts": {}}).encode()
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(page), page)
    env = dict(os.environ, http_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    heads: list[bytes] = []
    with answering(reply, heads) as port:
        done, _took = run("alerts", "--url", "http://127.0.0.1:%d/près/" % port, "--json",
                          "--token", "jeton-é", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"states": [], "recent": [], "counts": {}}
    [head] = heads
    assert head.startswith(b"GET /pr%C3%A8s/alerts HTTP/1.1\r\n"), head
    assert b"\r\nAuthorization: Bearer jeton-\xc3\xa9" in head, head


def trickle(head: bytes, rest: bytes) -> Callable[[socket.socket], None]:
    """Sends ``head`` at once, then ``rest`` a byte every 0.05 s: each wait for data is short,
    the answer never ends in time."""
    def talk(peer: socket.socket) -> None:
        peer.sendall(head)
        for byte in rest:
            time.sleep(0.05)
            peer.sendall(bytes([byte]))
    return talk


@pytest.mark.parametrize("head, rest", [
    (b"HTTP/1.1 200 OK\r\n", b"X-Slow: y\r\n" * 500),  # its headers
    (b"HTTP/1.1 200 OK\r\nContent-Length: 6000\r\n\r\n", b"[" + b"0," * 2999),  # its body
])
def test_an_answer_trickled_a_byte_at_a_time_is_given_up_at_the_timeout(head, rest):
    """--timeout was the limit on each wait for data: a byte every 0.05 s held the command
    open as long as the server kept it up (here 5 minutes).  It is the whole exchange's."""
    with answering(trickle(head, rest)) as port:
        done, took = run("rules", "mutes", "--url", "http://127.0.0.1:%d" % port, "--timeout", "0.5")
    line = one_line(done)
    assert line.startswith("Error: cannot read http://127.0.0.1:%d/mutes: the answer from "
                           "127.0.0.1:%d did not end within 0.5 s (" % (port, port)), line
    assert line.endswith(" bytes by then; --timeout waits longer)"), line
    assert took < 3.5, took


def endless(head: bytes) -> Callable[[socket.socket], None]:
    """Sends ``head``, then JSON's opening of a list that never ends, as fast as it is read."""
    def talk(peer: socket.socket) -> None:
        peer.sendall(head + b"[")
        piece = b"0," * (32 << 10)
        for _ in range(4 * MAX_ANSWER // len(piece)):  # bounded, four times the cap
            peer.sendall(piece)
    return talk


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n",  # until it hangs up
    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_ANSWER + 1),
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\n",  # a 1 TB chunk
])
def test_an_answer_without_end_is_given_up_at_the_size_cap(head):
    """A broken or hostile endpoint that answers without end was read whole: the command's
    memory grew until the machine's ran out.  Held here to 1 GiB of address space, it fails
    there without the cap; with it, it stops at MAX_ANSWER, long before --timeout."""
    with answering(endless(head)) as port:
        done, took = run("alerts", "--url", "http://127.0.0.1:%d" % port, "--timeout", "20",
                         memory=1 << 30)
    assert one_line(done) == ("Error: cannot read http://127.0.0.1:%d/alerts: the answer from "
                              "127.0.0.1:%d is larger than %d MiB, more than a vmstats page (is it "
                              "the server's HTTP port?)" % (port, port, MAX_ANSWER >> 20))
    assert took < 4, took


def test_a_server_without_rules_says_so_on_its_rules_pages(tmp_path):
    """``alerts --url`` of a server started without --rules said only "not found", as for a
    wrong address: the server's 404 for /alerts and /mutes says why (a mute's POST too,
    refused at its headers), and the commands show it."""
    with ServerProcess(tmp_path) as server:
        url = "http://127.0.0.1:%d" % server.http_port
        with ThreadPoolExecutor() as pool:  # at once: each command's start is most of its time
            runs = {command: pool.submit(run, *COMMANDS[command], "--url", url, "--token",
                                         STATUS_TOKEN) for command in ("alerts", "rules mutes",
                                                                       "rules mute")}
            elsewhere = pool.submit(run, "alerts", "--url", url + "/elsewhere")
            said = {command: done.result()[0] for command, done in runs.items()}
            other = elsewhere.result()[0]
        with urllib.request.urlopen(url + "/status", timeout=5) as answer:
            status = answer.read()
    why = "this server runs without --rules: start it with --rules FILE for /alerts and /mutes"
    for command, path in (("alerts", "/alerts"), ("rules mutes", "/mutes"), ("rules mute", "/mutes")):
        done = said[command]
        assert (done.returncode, done.stderr) == (2, "Error: %s%s: %s\n" % (url, path, why)), command
    # a wrong address: the path before the pages (or the port) is not the server's
    assert other.stderr == ("Error: %s/elsewhere/alerts: not found, nor is %s/elsewhere/status a "
                            "vmstats page (HTTP 404 Not Found): no vmstats server answers at "
                            "%s/elsewhere (is --url its HTTP port, and the path a proxy serves it "
                            "under?)\n" % (url, url, url)), other.stderr
    assert is_status_page(status)  # how the commands know a vmstats server from its /status


#: A 404 of a vmstats server older than its pages' naming why one is absent: JSON since the
#: routes counted their refusals, plain text before.
OLD_404 = {
    "json": b'HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 23\r\n'
            b'\r\n{"error": "not found"}\n',
    "text": b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"
            b"not found\n",
}


@pytest.mark.parametrize("shape", OLD_404)
def test_a_server_older_than_a_page_is_told_from_a_wrong_address(shape):
    """An older server lacks /mutes and said only "not found", as a wrong port or path does:
    the operator could not tell which.  Here a loopback server answers as one did (its /status
    as every version has, each other path its 404): the line says a vmstats server answers
    there without the page, and at a wrong path that none does."""
    status = json.dumps({"uptime_seconds": 12.5, "records_received": 0, "vms_seen": 0}).encode()
    heads: list[bytes] = []

    def reply(peer: socket.socket) -> None:
        if heads[-1].split(b" ")[1] == b"/status":
            peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(status), status))
        else:
            peer.sendall(OLD_404[shape])

    with answering(reply, heads) as port:
        url = "http://127.0.0.1:%d" % port
        old, _took = run(*COMMANDS["rules mute"], "--url", url)
        wrong, _took = run("rules", "mutes", "--url", url + "/vm")
    said = "%s/mutes: not found" % url if shape == "json" else \
        "cannot read %s/mutes: HTTP 404 Not Found" % url
    assert (old.returncode, old.stderr) == (
        2 if shape == "json" else 1,
        "Error: %s: %s is a vmstats server (its /status answers) without /mutes: older than this "
        "command, or run without the option that serves it (a current server says which)\n"
        % (said, url)), old.stderr
    said = "%s/vm/mutes: not found" % url if shape == "json" else \
        "cannot read %s/vm/mutes: HTTP 404 Not Found" % url
    assert wrong.stderr == ("Error: %s, nor is %s/vm/status a vmstats page (HTTP 404 Not Found): "
                            "no vmstats server answers at %s/vm (is --url its HTTP port, and the "
                            "path a proxy serves it under?)\n" % (said, url, url)), wrong.stderr
    assert [head.split(b"\r\n")[0] for head in heads] == [
        b"POST /mutes HTTP/1.1", b"GET /status HTTP/1.1", b"GET /vm/mutes HTTP/1.1",
        b"GET /vm/status HTTP/1.1"]


def test_a_page_of_the_servers_wording_is_not_asked_further():
    """A 404 that says why (no such mute, a server without --rules) is the server's answer:
    shown as it is, with no /status asked after it."""
    page = b'{"error": "no mute 0123456789ab in force"}'
    reply = b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(page), page)
    heads: list[bytes] = []
    with answering(reply, heads) as port:
        done, _took = run(*COMMANDS["rules unmute"], "--url", "http://127.0.0.1:%d" % port)
    assert (done.returncode, done.stderr) == (2, "Error: http://127.0.0.1:%d/mutes?id=0123456789ab: "
                                                 "no mute 0123456789ab in force\n" % port)
    assert len(heads) == 1, heads
