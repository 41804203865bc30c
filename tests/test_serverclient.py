"""The commands that ask a running server (``--url``) against loopback ports that are not one.

Each runs as an operator runs it (``python -m vmstats``) against a real listener: a port that
takes the connection and never answers (another service waiting for its own protocol, a stuck
process), one whose queue is full (the connection is never taken, as behind a firewall dropping it), one
that answers something other than HTTP or hangs up, one that redirects, and a plain HTTP server
that answers well.  Each ends with one ``Error:`` line that says what happened, promptly;
refusals of the address itself are in tests/test_cli_errors.py.
"""

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from serverproc import STATUS_TOKEN, ServerProcess

from vmstats.serverclient import MAX_ANSWER

#: Every command that asks a server, with what it needs besides --url.
COMMANDS = {
    "alerts": ("alerts",),
    "rules mutes": ("rules", "mutes"),
    "rules mute": ("rules", "mute", "--rule", "hot", "--duration", "1h", "--author", "ana",
                   "--comment", "patching"),
    "rules unmute": ("rules", "unmute", "0123456789ab"),
}


def run(*args: str, env: dict | None = None,
        memory: int | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """The command as an operator runs it; with ``memory``, its address space held to that
    many bytes (a command that reads without bound then fails fast, not the machine)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "vmstats", *args], capture_output=True, text=True,
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
def answering(reply: bytes | Callable[[socket.socket], None],
              heads: list[bytes] | None = None) -> Iterator[int]:
    """A loopback port that reads each request's head and body (its head put in ``heads``),
    sends ``reply`` (or lets ``reply`` talk to the peer) and hangs up."""
    with listening() as listener:
        def serve() -> None:
            while True:
                try:
                    peer, _ = listener.accept()
                except OSError:  # the listener was closed
                    return
                with peer:
                    peer.settimeout(5)
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
                    try:
                        reply(peer) if callable(reply) else peer.sendall(reply)
                    except OSError:  # the command hung up, as it should
                        pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept
            thread.join(5)


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
    why = "this server runs without --rules: start it with --rules FILE for /alerts and /mutes"
    for command, path in (("alerts", "/alerts"), ("rules mutes", "/mutes"), ("rules mute", "/mutes")):
        done = said[command]
        assert (done.returncode, done.stderr) == (2, "Error: %s%s: %s\n" % (url, path, why)), command
    assert other.stderr == "Error: %s/elsewhere/alerts: not found\n" % url  # a wrong address
