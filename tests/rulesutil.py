"""Helpers for the rules tests: held rows, a rules file, and loopback receivers that record.

The receivers are real servers on 127.0.0.1: an HTTP server that checks each
webhook's HMAC and remembers idempotency keys (as a careful receiver does),
and a command script that appends its environment to a file.
"""

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

from serverproc import STATUS_TOKEN, ServerProcess

from vmstats import logstore
from vmstats.protocol import Record, encode_record
from vmstats.rules.config import parse_rules
from vmstats.rules.evaluator import Engine


def row(cpu: float, mem: float = 50.0, host: str | None = None, tags=None, **fields) -> bytes:
    """A held row (the buffer's form of a record) with these figures."""
    return logstore.format_tail(Record(vm="x", ts=0, cpu=cpu, mem=mem, host=host, tags=tags,
                                       **fields))


class Clock:
    """The engine's clock, moved by the test: hours of rule time take milliseconds."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def engine(rules: list[dict], clock: Clock, **settings) -> Engine:
    data = {"rule": rules, "action": {"say": {"kind": "log"}}}
    if settings:
        data["settings"] = settings
    return Engine(parse_rules(data), clock)


def feed(eng: Engine, clock: Clock, vm: str, cpu: float, host=None, ts=None) -> list[dict]:
    """One record of ``vm`` through a tick and a sweep; the transitions that came of it."""
    eng.observe([vm], [int(clock.now if ts is None else ts)], [row(cpu, host=host)])
    eng.process()
    eng.sweep()
    return [e for e in eng.take() if e["kind"] == "transition"]


def warmed(eng: Engine, clock: Clock, vms: list, rows: list, period: float = 60.0) -> list[dict]:
    """A group's members' records, and again a period later (a group decides nothing in the
    period after its first member came); the events of the second time."""
    eng.observe(vms, [int(clock.now)] * len(vms), rows)
    eng.process()
    assert eng.take() == []
    clock.now += period
    eng.observe(vms, [int(clock.now)] * len(vms), rows)
    eng.process()
    return eng.take()


def wait_until(test, timeout: float = 15.0):
    """Poll ``test()`` until it gives something truthy (returned); AssertionError past ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = test()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("not within %.0fs" % timeout)


def line(vm: str, ts: int, cpu: float, mem: float = 50.0, host: str | None = None) -> bytes:
    return encode_record(Record(vm=vm, ts=ts, cpu=cpu, mem=mem, host=host, vcpus=2,
                                mem_mb=4096)).encode("ascii")


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # a burst of connections is not refused
    daemon_threads = True


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
            protocol_version = "HTTP/1.1"  # keep-alive, as real receivers do

            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                signature = self.headers.get("X-Vmstats-Signature", "")
                want = "sha256=" + hmac.new(receiver.secret, body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(signature, want):
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    self.reply(401)
                    return
                if receiver.delay:
                    time.sleep(receiver.delay)
                if receiver.down:
                    self.reply(503)
                    return
                with receiver.lock:
                    receiver.received.append({"body": json.loads(body), "at": time.time(),
                                              "key": self.headers.get("Idempotency-Key")})
                    receiver.keys.append(self.headers.get("Idempotency-Key"))
                self.reply(200)

            def reply(self, code: int) -> None:
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
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


SECRET = "hook-secret"


def rules_file(folder, hook_url: str, body: str, extra_actions: str = "") -> str:
    path = folder / "rules.toml"
    path.write_text('[action.hook]\nkind = "webhook"\nurl = "%s"\nsecret = "%s"\ntimeout = "2s"\n\n'
                    '[action.say]\nkind = "log"\n\n%s\n%s\n' % (hook_url, SECRET, extra_actions, body))
    return str(path)


def serve(tmp_path, rules: str, *args: str, **kwargs) -> ServerProcess:
    return ServerProcess(tmp_path, "--rules", rules, "--parsers", "0", "--workers", "1",
                         "--flush-interval", "1s", *args, **kwargs)


HOT = """
[[rule]]
name = "hot"
metric = "cpu"
enter = 90
exit = 70
period = 1
actions = ["hook", "say"%s]
"""




def killed_servers(folder: Path, rules: str, kills: int, drain: float) -> Iterator[ServerProcess]:
    """The server on ``folder``, started ``kills + 1`` times: each run is SIGKILLed once the
    caller's round with it is done, the last is waited on until no delivery is pending
    (``drain`` seconds at most).  The caller's loop variable is the last run afterwards."""
    for kill in range(kills + 1):
        server = serve(folder, rules).start()
        try:
            yield server
            if kill < kills:
                server.kill_outright()  # the round's last transition logged, its delivery under way
            else:
                server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0, drain)
        finally:
            if server.returncode is None:
                server.kill()


def sigkill_rounds(folder: Path, hook: "WebhookReceiver", rounds: int) -> dict:
    """SIGKILL a server ``rounds`` times while deliveries are under way; what the receiver got.

    Each round starts the server on the same data dir and sends six records
    over TCP, each acknowledged (so filed: its transition is the server's to
    deliver) and each flipping the VM's state, each once the one before is in
    the action log (so no two records of a VM meet in one rules tick, however
    slow the host), then kills it.  A last round
    runs until nothing is pending.  Compared against the action log: every
    logged transition's key received (not lost), no key acted on twice
    (duplicated: the receiver dedups by key, as it should), and the chain of
    states unbroken (seq 1..n, each a change).
    """
    body = HOT % "" + '[settings]\nretry_min = "0.2s"\nretry_max = "0.5s"\n'
    rules = rules_file(folder, hook.url, body)
    ts = int(time.time()) - 100
    vms = ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    server = None
    sent = 0
    for server in killed_servers(folder, rules, rounds, 30):
        log = server.data_dir / "rules" / "actions.log"
        for _ in range(6):
            # Three VMs in turn, each flipping at each of its records: the next record waits
            # for this one's transition in the log, so a VM's records are never in one rules
            # tick and each must make a transition.  Past 5 s without it the rounds go on:
            # the count of transitions against records says what went missing.
            vm = vms[sent % 3]
            cpu = 95.0 if (sent // 3) % 2 == 0 else 10.0
            sent += 1
            ts += 1
            with server.tcp() as sock:
                sock.sendall(line(vm, ts, cpu) + b"\n#!sync 1\n")
                sock.recv(100)
            deadline = time.monotonic() + 5.0
            while _logged_events(log) < sent and time.monotonic() < deadline:
                time.sleep(0.01)
    with hook.lock:
        keys = list(hook.keys)
    entries = [json.loads(x) for x in (server.data_dir / "rules" / "actions.log").read_text().splitlines()]
    events = [e["event"] for e in entries if e["type"] == "event"]
    broken = 0
    for vm in vms:
        chain = sorted((e for e in events if e["scope"] == vm), key=lambda e: e["seq"])
        states = [e["to"] for e in chain]
        broken += ([e["seq"] for e in chain] != list(range(1, len(chain) + 1))
                   or any(a == b for a, b in zip(states, states[1:], strict=False)))
    return {"rounds": rounds, "records": sent, "transitions": len(events),
            "lost": sorted({e["key"] + ".hook" for e in events} - set(keys)),
            # A transition decided twice (two keys for one step of a chain), or a POST that the
            # log never held: what a key-honouring receiver could not catch.
            "duplicated": len(events) - len({(e["scope"], e["seq"]) for e in events})
            + len(set(keys) - {e["key"] + ".hook" for e in events}),
            # The same key POSTed again after a kill: caught by the receiver's key check.
            "posts": len(keys), "repeats_caught_by_key": len(keys) - len(set(keys)),
            "resent": sum(1 for e in entries if e["type"] == "attempt" and e["n"] > 1),
            "chain_broken": broken}


def _logged_events(log: Path) -> int:
    """The events in an action log so far (its entries are written compact, keys sorted)."""
    try:
        return log.read_bytes().count(b'"type":"event"')
    except FileNotFoundError:
        return 0


def log_entries(server) -> list[dict]:
    """The server's action log (DATA_DIR/rules/actions.log), an entry a line; none if not yet made."""
    path = server.data_dir / "rules" / "actions.log"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def post(server, body: bytes, token: str | None = STATUS_TOKEN, method: str = "POST",
         path: str = "/mutes") -> tuple[int, dict]:
    """``body`` sent to the server's HTTP port: the status and the JSON answer, errors included."""
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (server.http_port, path),
                                     data=body, method=method)
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
