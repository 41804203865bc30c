"""Helpers for the rules tests: held rows, a rules file, and loopback receivers that record.

The receivers are real servers on 127.0.0.1: an HTTP server that checks each
webhook's HMAC and remembers idempotency keys (as a careful receiver does),
and a command script that appends its environment to a file.
"""

import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from vmstats import logstore
from vmstats.protocol import Record, encode_record


def row(cpu: float, mem: float = 50.0, host: str | None = None, **fields) -> bytes:
    """A held row (the buffer's form of a record) with these figures."""
    return logstore.format_tail(Record(vm="x", ts=0, cpu=cpu, mem=mem, host=host, **fields))


def line(vm: str, ts: int, cpu: float, mem: float = 50.0, host: str | None = None) -> bytes:
    return encode_record(Record(vm=vm, ts=ts, cpu=cpu, mem=mem, host=host, vcpus=2,
                                mem_mb=4096)).encode("ascii")


class WebhookReceiver:
    """Records webhooks on loopback; ``down`` answers 503; checks the HMAC of every body."""

    def __init__(self, secret: bytes, delay: float = 0.0):
        self.secret = secret
        self.delay = delay
        self.received: list[dict] = []  # every POST with a good signature
        self.keys: list[str] = []  # idempotency keys of the POSTs answered 200
        self.bad_signatures = 0
        self.down = False
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                signature = self.headers.get("X-Vmstats-Signature", "")
                want = "sha256=" + hmac.new(receiver.secret, body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(signature, want):
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if receiver.delay:
                    time.sleep(receiver.delay)
                if receiver.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.received.append({"body": json.loads(body), "at": time.time(),
                                              "key": self.headers.get("Idempotency-Key")})
                    receiver.keys.append(self.headers.get("Idempotency-Key"))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self) -> list[dict]:
        with self.lock:
            return [a for r in self.received for a in r["body"]["alerts"]]

    def wait(self, count: int, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alerts = self.alerts()
            if len(alerts) >= count:
                return alerts
            time.sleep(0.05)
        raise AssertionError("%d webhooks within %.0fs, expected %d: %s"
                             % (len(self.alerts()), timeout, count, self.alerts()))


def recorder_script(folder: Path) -> tuple[Path, Path]:
    """A command action that appends its VMSTATS_* environment as a JSON line to calls.jsonl."""
    calls = folder / "calls.jsonl"
    script = folder / "record-call.py"
    script.write_text("import json, os\n"
                      "with open(%r, 'a') as out:\n"
                      "    out.write(json.dumps({k: v for k, v in os.environ.items()"
                      " if k.startswith('VMSTATS_')}) + '\\n')\n" % str(calls))
    return script, calls


def calls(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x]


PYTHON = sys.executable
ENV = dict(os.environ)
