"""Run Debian's real nginx with the shipped stream configuration in front of test aggregators.

nginx and its stream module come from Debian (nginx, libnginx-mod-stream);
``.ci/debian-packages`` installs them when missing and is run from here too.
The configuration is packaging/nginx-stream.conf itself, with only its
upstream servers and listen port replaced by loopback ones, under a main
configuration of the test's own (foreground, pid and logs in a tmp dir).
"""

import re
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX = Path("/usr/sbin/nginx")
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
SHIPPED = ROOT / "packaging" / "nginx-stream.conf"
LOOPBACK = "127.0.0.1"


def nginx_binary() -> Path:
    """nginx with its stream module, installed through the project's own script when missing."""
    if not (NGINX.exists() and STREAM_MODULE.exists()):
        subprocess.run([str(ROOT / ".ci" / "debian-packages")], check=True)
    return NGINX


def stream_config(port: int, upstreams: dict[str, list[int]]) -> str:
    """The shipped stream block listening on loopback ``port`` (TCP and UDP), each upstream's
    servers replaced by loopback ones: ``{"vmstats_tcp": [port, ...], "vmstats_udp": [...]}``."""
    text = SHIPPED.read_text()
    for name, ports in upstreams.items():
        block = re.search(r"upstream %s \{.*?\n    \}" % name, text, re.S)
        assert block, "no upstream %s in %s" % (name, SHIPPED)
        servers = re.findall(r"\n        server \S+", block.group(0))
        assert len(servers) == len(ports), "%s has %d servers" % (name, len(servers))
        replaced = block.group(0)
        for line, new in zip(servers, ports, strict=True):
            replaced = replaced.replace(line, "\n        server %s:%d" % (LOOPBACK, new), 1)
        text = text.replace(block.group(0), replaced)
    text, listens = re.subn(
        r"\n        listen 8899( udp)?;", r"\n        listen %s:%d\1;" % (LOOPBACK, port), text
    )
    assert listens == 2, "expected a TCP and a UDP listen in %s" % SHIPPED
    return text


class Nginx:
    """nginx in the foreground with its own config, pid file and logs under ``workdir``."""

    def __init__(self, workdir: Path, port: int, upstreams: dict[str, list[int]]) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port
        (self.workdir / "vmstats-stream.conf").write_text(stream_config(port, upstreams))
        self.conf = self.workdir / "nginx.conf"
        self.conf.write_text(
            "daemon off;\n"
            "worker_processes 1;\n"
            "pid %(dir)s/nginx.pid;\n"
            "error_log %(dir)s/error.log info;\n"
            "load_module %(module)s;\n"
            "events { worker_connections 256; }\n"
            "include %(dir)s/vmstats-stream.conf;\n" % {"dir": self.workdir, "module": STREAM_MODULE}
        )
        self.proc = None

    def start(self, timeout: float = 10.0) -> "Nginx":
        binary = str(nginx_binary())
        prefix = ["-p", str(self.workdir), "-e", str(self.workdir / "error.log"), "-c", str(self.conf)]
        checked = subprocess.run([binary, "-t", *prefix], capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr
        self.proc = subprocess.Popen([binary, *prefix], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "nginx exited: %s" % self.log()
            try:
                socket.create_connection((LOOPBACK, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nginx did not listen on %d: %s" % (self.port, self.log()))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast stop: the test is over, nothing in flight
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> "Nginx":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
