"""Run the real ``vmstats serve`` as a subprocess on loopback, for tests and benchmarks.

    with ServerProcess(tmp_path, "--flush-interval", "0.5") as server:
        server.send_udp(b"vmstats,vm=10.0.0.1 cpu=1,mem=2 1732262400")
        ...
    server.returncode, server.output   # after the block: SIGTERM, then wait

Everything binds 127.0.0.1 with ephemeral ports; the ports come from the
server's status file, so there is no race on choosing them.
"""

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
#: The /status token every test server gets (tests of the token itself pass their own).
STATUS_TOKEN = "test-status-token"


#: How long a wait on a condition of the server (wait_for, wait_metrics, wait_received) lasts
#: before the test fails.  The suite runs four workers on two cores, beside whatever else the host
#: does: a flush met in 2 s alone took over 10 s in a loaded full run.  The bound costs time only
#: when a test fails.
WAIT = 30.0


#: Seconds a killed server's processes get to end (kill_outright): they are killed by the kernel
#: as it dies, the resource tracker ends once they are gone; the bound costs time only when
#: one is left.
GONE_WITHIN = 10.0


class ServerError(RuntimeError):
    """The server did not start, or did not stop, as expected."""


class ServerProcess:
    """A started ``vmstats serve``; use as a context manager or call start()/stop()."""

    def __init__(self, workdir, *args: str, data_dir=None, start_timeout: float = 20.0,
                 stop_timeout: float = 30.0, env=None, nofile: int | None = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir) if data_dir else self.workdir / "data"
        self.status_file = self.workdir / "server-status.json"
        self.args = list(args)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.env = dict(os.environ, **(env or {}))
        self.env["PYTHONPATH"] = str(ROOT) + os.pathsep + self.env.get("PYTHONPATH", "")
        #: Start the server with this soft and hard open file limit (what a host may impose).
        self.nofile = nofile
        self.proc = None
        self.status = {}
        self.returncode = None
        self.output = ""
        self._log = self.workdir / "server-output.txt"

    # -- lifecycle -----------------------------------------------------------------------------
    def command(self) -> list:
        base = [sys.executable, "-m", "vmstats", "serve", "--bind", LOOPBACK, "--udp-port", "0",
                "--tcp-port", "0", "--status-file", str(self.status_file),
                "--data-dir", str(self.data_dir)]
        if "--no-http" not in self.args and "--http-port" not in self.args:
            base += ["--http-port", "0"]
        if "--status-token" not in self.args and "--status-token-file" not in self.args:
            base += ["--status-token", STATUS_TOKEN]
        if "--duration" not in self.args:
            # A safety bound: a test run that is killed must not leave servers running.
            base += ["--duration", "15m"]
        return base + self.args

    def start(self) -> "ServerProcess":
        if self.status_file.exists():
            self.status_file.unlink()
        self._out = open(self._log, "wb")
        limit = self.nofile
        self.proc = subprocess.Popen(
            self.command(), cwd=str(self.workdir), env=self.env, stdout=self._out,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
            if limit else None)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._collect()
                raise ServerError("server exited with %s before listening:\n%s"
                                  % (self.proc.returncode, self.output))
            if self.status_file.exists():
                self.status = json.loads(self.status_file.read_text())
                return self
            time.sleep(0.05)
        self.kill()
        raise ServerError("server did not write its status file in %.0fs:\n%s"
                          % (self.start_timeout, self.output))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it; returns its exit code (output in .output).
        SIGKILL is :meth:`kill_outright`, with its guard."""
        if self.proc is None:
            return self.returncode
        if sig == signal.SIGKILL and self.proc.poll() is None:
            self.kill_outright()
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            # Where it is stuck: the server prints every thread's stack on SIGUSR1.
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            self.kill()
            raise ServerError("server did not stop within %.0fs (its threads' stacks at the end):"
                              "\n%s" % (self.stop_timeout, self.output)) from None
        return self._collect()

    def wait(self, timeout: float) -> int:
        """Wait for a server that stops by itself (--duration)."""
        self.proc.wait(timeout)
        return self._collect()

    def kill_outright(self, within: float = GONE_WITHIN) -> None:
        """SIGKILL the server (the OOM killer, ``kill -9``) and fail (ServerError) if a process
        of its family, as it was just before, outlives it by ``within`` seconds: the guard each
        test that kills a server outright has, that no process is left behind
        (docs/OPERATIONS.md).  What is left is killed, not to outlive the test."""
        family = descendants(self.proc.pid)
        commands = {pid: command_line(pid) for pid in family}
        left = self.killed_leaving(family, within)
        if left:
            raise ServerError("%d processes outlived the killed server by %.0fs: %s" % (
                len(left), within, "; ".join(commands[pid] for pid in left)))

    def killed_leaving(self, pids: list[int], within: float = 5.0) -> list[int]:
        """SIGKILL the server (the OOM killer, ``kill -9``): which of ``pids`` still run
        ``within`` seconds after it is gone.  Those are then killed, not to outlive the test."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._collect()
        deadline = time.monotonic() + within
        while living(pids) and time.monotonic() < deadline:
            time.sleep(0.01)
        left = living(pids)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        return left

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._collect()

    def _collect(self) -> int:
        self.returncode = self.proc.returncode
        self._out.close()
        self.output = self._log.read_text(errors="replace")
        return self.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.returncode is None:
            try:
                self.stop()
            finally:
                self.kill()

    # -- talking to it -------------------------------------------------------------------------
    @property
    def udp_port(self) -> int:
        return self.status["udp_port"]

    @property
    def tcp_port(self) -> int:
        return self.status["tcp_port"]

    @property
    def http_port(self):
        return self.status.get("http_port")

    @property
    def pid(self) -> int:
        return self.status["pid"]

    def send_udp(self, *payloads: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for payload in payloads:
                sock.sendto(payload, (LOOPBACK, self.udp_port))

    def tcp(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection((LOOPBACK, self.tcp_port), timeout=timeout)

    def send_synced(self, payload: bytes, token: str = "all", timeout: float = 60.0) -> list[str]:
        """``payload`` over TCP, then ``#!sync token``; the server's reply, split (``#!ack token
        held dropped`` once it holds every record: UDP may drop under load, this may not)."""
        with self.tcp(timeout=timeout) as sock:
            sock.sendall(payload + b"#!sync %s\n" % token.encode())
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(4096)
                assert chunk, "server closed the connection"
                reply += chunk
        return reply.decode().split()

    def tcp_to(self, port: int, timeout: float = 10.0) -> socket.socket:
        """A connection to another of the server's TCP ports (the other formats')."""
        return socket.create_connection((LOOPBACK, port), timeout=timeout)

    def send_udp_to(self, port: int, *payloads: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for payload in payloads:
                sock.sendto(payload, (LOOPBACK, port))

    def http(self, path: str, timeout: float = 10.0, token: str | None = STATUS_TOKEN) -> str:
        url = "http://%s:%d%s" % (LOOPBACK, self.http_port, path)
        headers = {"Authorization": "Bearer " + token} if token else {}
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=timeout) as response:
            return response.read().decode("utf-8")

    def status_json(self) -> dict:
        return json.loads(self.http("/status"))

    def metrics(self, timeout: float = 10.0) -> dict:
        """/metrics as ``{'name{labels}': value}``."""
        samples = {}
        for line in self.http("/metrics", timeout=timeout).splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def wait_for(self, predicate, timeout: float = WAIT, interval: float = 0.05):
        """Poll ``predicate(self)`` until truthy; returns its value or raises ServerError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            if time.monotonic() > deadline:
                raise ServerError("condition not met within %.0fs" % timeout)
            time.sleep(interval)

    def wait_metrics(self, test, timeout: float = WAIT) -> dict:
        """Poll /metrics until ``test(metrics)`` holds; returns those metrics, the ones it judged."""
        return self.wait_for(lambda server: (lambda m: m if test(m) else None)(server.metrics()),
                             timeout)

    def wait_received(self, count: int, timeout: float = WAIT) -> dict:
        """Wait until the server counts ``count`` accepted + rejected + dropped records.

        Rejects made before parsing (signatures, over-long TCP lines) are counted
        before the records beside them: to wait for accepted records, wait on
        ``vmstats_records_received_total`` itself (``wait_metrics``).
        """
        return self.wait_metrics(
            lambda m: m.get("vmstats_records_received_total", 0)
            + sum(v for k, v in m.items() if k.startswith(("vmstats_rejected_total",
                                                           "vmstats_dropped_total"))) >= count,
            timeout)


def parents() -> dict[int, int]:
    """Each process's parent (from /proc, in one pass): ``{pid: ppid}``."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc/%s/stat" % entry).read_text()
            except OSError:
                continue
            found[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def children(pid: int) -> list:
    """The process ids whose parent is ``pid`` (from /proc)."""
    return [child for child, parent in parents().items() if parent == pid]


def descendants(pid: int) -> list[int]:
    """The process ids of ``pid``'s children, theirs, and so on (from /proc, in one pass)."""
    below: dict[int, list[int]] = {}
    for child, parent in parents().items():
        below.setdefault(parent, []).append(child)
    found, level = [], below.get(pid, [])
    while level:
        found += level
        level = [child for parent in level for child in below.get(parent, [])]
    return found


def command_line(pid: int) -> str:
    """The process's command line, its arguments joined by spaces ('' if it is gone)."""
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


def living(pids: list) -> list:
    """The processes of ``pids`` that run (not gone, not a zombie awaiting its parent)."""
    alive = []
    for pid in pids:
        try:
            state = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def children_running(server_pid: int, marker: bytes) -> list:
    """The server's child processes whose command line holds ``marker``."""
    found = []
    for child in children(server_pid):
        try:
            if marker in Path("/proc/%d/cmdline" % child).read_bytes():
                found.append(child)
        except OSError:
            continue
    return found


def parsers_of(server_pid: int) -> list:
    """The server's parser processes."""
    return children_running(server_pid, b"parseworker")


def decoders_of(server_pid: int) -> list:
    """The server's decoding processes (the other formats' ProcessPoolExecutor workers)."""
    return children_running(server_pid, b"spawn_main")


def cpu_seconds(pids: list) -> float:
    """User and system CPU the processes have used, from /proc."""
    ticks = 0
    for pid in pids:
        with open("/proc/%d/stat" % pid) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def serve(workdir, *args: str, **kwargs) -> ServerProcess:
    """Shorthand: ``with serve(tmp_path, "--flush-interval", "0.5") as server: ...``."""
    return ServerProcess(workdir, *args, **kwargs)
