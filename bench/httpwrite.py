"""The InfluxDB HTTP write API's speed on a real server: bodies of lines, and chunked bodies.

    .venv/bin/python bench/httpwrite.py                        # about 30 s
    .venv/bin/python bench/httpwrite.py --code OTHER_CHECKOUT  # the same on another commit's code

One ``vmstats serve --influx-port 0`` on loopback (its defaults otherwise) takes, best of
``--rounds``:

* ``bodies``: ``--writers`` keep-alive connections each POSTing ``--bodies`` bodies of 5,000 of
  Telegraf's cpu lines (~650 KB, with a Content-Length) to ``/write``, one after another, each
  sent once the last one's 204 came; lines per second from the first byte to the last 204;
* the same bodies gzip-compressed (``Content-Encoding: gzip``);
* ``chunks``: a body of ``--chunked-kib`` KiB of those lines sent chunked in 1-byte chunks (what
  a sender can make the server do per byte: refused since chunks must carry 64 bytes on average),
  16 such bodies' worth in 64-byte chunks (the smallest taken), and 90 in 16 KiB chunks: the
  server's CPU microseconds per chunk, and per KiB, from its /proc times around the request
  (to its close), and per KiB against the plain bodies' (``x plain``: their CPU per KiB in
  the same run).

Every line sent is checked to have been taken (``vmstats_edge_lines_total{outcome="used"}``).

Run it on both checkouts in the same minutes (``--code``) to compare: a shared host's figures
move from run to run.
"""

import argparse
import gzip
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from serverproc import LOOPBACK, ServerProcess  # noqa: E402

LINES_PER_BODY = 5000
USED = 'vmstats_edge_lines_total{format="influx",outcome="used"}'


def body_lines(count: int, offset: int = 0) -> bytes:
    """``count`` lines of Telegraf's cpu input, from 1,000 hosts, two minutes old."""
    stamp = (int(time.time()) - 120) * 10**9
    return b"".join(b"cpu,cpu=cpu-total,host=vm%d usage_user=%d.5,usage_system=1.25,"
                    b"usage_idle=%d.75,usage_iowait=0.5,usage_steal=0 %d\n"
                    % ((offset + i) % 1000, i % 90, 90 - i % 90, stamp) for i in range(count))


def answer(sock: socket.socket) -> bytes:
    """One answer's head (the write API answers 204 with no body on success)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise RuntimeError("the server closed: %r" % data[:200])
        data += more
    if not data.startswith(b"HTTP/1.1 204 "):
        raise RuntimeError("not a 204: %r" % data[:300])
    return data


def post_all(port: int, writers: int, bodies: list[bytes], headers: bytes) -> float:
    """Seconds for ``writers`` connections to each POST every body, one at a time."""
    start = threading.Barrier(writers + 1)
    failures: list = []

    def writer() -> None:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=60) as sock:
                start.wait()
                for body in bodies:
                    sock.sendall(b"POST /write?db=x HTTP/1.1\r\nHost: x\r\n%s"
                                 b"Content-Length: %d\r\n\r\n" % (headers, len(body)) + body)
                    answer(sock)
        except Exception as exc:  # noqa: BLE001 - said below
            failures.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - began
    if failures:
        raise failures[0]
    return took


def cpu_seconds(pid: int) -> float:
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def chunked(port: int, pid: int, data: bytes, size: int) -> tuple[float, bool]:
    """Server CPU seconds to take (or refuse) ``data`` as a chunked body of ``size``-byte
    chunks, to the connection's close; and whether it was taken (204)."""
    framed = b"".join(b"%x\r\n%s\r\n" % (len(data[at:at + size]), data[at:at + size])
                      for at in range(0, len(data), size)) + b"0\r\n\r\n"
    with socket.create_connection((LOOPBACK, port), timeout=120) as sock:
        before = cpu_seconds(pid)
        try:
            sock.sendall(b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n" + framed)
        except OSError:  # refused, and closed before the rest was sent
            pass
        said = b""
        try:
            while more := sock.recv(65536):
                said += more
        except OSError:
            pass
        taken = said.startswith(b"HTTP/1.1 204 ")
        if not taken and not said.startswith(b"HTTP/1.1 400 "):
            raise RuntimeError("neither 204 nor 400: %r" % said[:300])
        return cpu_seconds(pid) - before, taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--code", default=str(ROOT), help="checkout whose vmstats to run")
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--bodies", type=int, default=20, help="bodies per writer and round")
    parser.add_argument("--chunked-kib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    plain = [body_lines(LINES_PER_BODY, i * 37) for i in range(args.bodies)]
    zipped = [gzip.compress(body, 1) for body in plain]
    data = body_lines(args.chunked_kib * 1024 // 120 + 1)[:args.chunked_kib * 1024]
    data = data[:data.rindex(b"\n") + 1]
    lines = args.writers * args.bodies * LINES_PER_BODY
    with tempfile.TemporaryDirectory(prefix="vmstats-bench-http-") as workdir:
        server = ServerProcess(Path(workdir), "--influx-port", "0",
                               env={"PYTHONPATH": str(Path(args.code).resolve())})
        server.env["PYTHONPATH"] = str(Path(args.code).resolve())
        with server:
            port, pid = server.http_port, server.proc.pid
            print("code: %s" % Path(args.code).resolve())
            print("bodies: %d writers x %d bodies x %d lines (%d KB plain, %d KB gzip each)"
                  % (args.writers, args.bodies, LINES_PER_BODY, len(plain[0]) // 1000,
                     len(zipped[0]) // 1000))
            plain_kib = None
            for name, bodies, headers in (("plain", plain, b""),
                                          ("gzip", zipped, b"Content-Encoding: gzip\r\n")):
                took, cpu = [], []
                for _ in range(args.rounds):
                    before = cpu_seconds(pid)
                    took.append(post_all(port, args.writers, bodies, headers))
                    cpu.append(cpu_seconds(pid) - before)
                best = min(took)
                kib = min(cpu) / (args.writers * sum(map(len, plain)) / 1024) * 1e6
                plain_kib = plain_kib or kib
                print("  %-5s %9.0f lines/s  (%.3f s a round, best of %d; %.2f us CPU a plain "
                      "KiB)" % (name, lines / best, best, args.rounds, kib))
            print("chunks: a %d KiB body" % (len(data) // 1024))
            sent = 2 * args.rounds * lines
            for size, body in ((1, data), (64, data * 16), (16 << 10, data * 90)):
                runs = [chunked(port, pid, body, size) for _ in range(args.rounds)]
                best = min(cpu for cpu, _ in runs)
                taken = sum(taken for _, taken in runs)
                count = -(-len(body) // size)
                sent += taken * body.count(b"\n")
                per_kib = best / (len(body) / 1024) * 1e6
                if not best:  # under one 10 ms tick of /proc's
                    print("  %5d-byte chunks: %s, under 0.01 s CPU (%d chunks sent)"
                          % (size, "taken" if taken else "refused", count))
                    continue
                print("  %5d-byte chunks: %s, %7.2f us a chunk, %8.2f us a KiB (%.1f x plain), "
                      "%.3f s CPU" % (size, "taken" if taken else "refused", best / count * 1e6,
                                      per_kib, per_kib / plain_kib, best))
            used = server.wait_metrics(lambda m: m.get(USED, 0) >= sent, timeout=60)[USED]
            if used != sent:
                raise SystemExit("%d lines sent, %d taken" % (sent, used))


if __name__ == "__main__":
    main()
