"""Signed UDP's cost per datagram, in process: a parser's half and the reactor's, beside plain.

    .venv/bin/python bench/signed.py                       # about 30 s
    .venv/bin/python bench/signed.py --code OTHER_CHECKOUT # the same work on another commit's code
    .venv/bin/python bench/signed.py --remembered 0        # without the longest-turn figures

One-record datagrams from 10,000 VM ids (every id known, as in steady
state) go through what a parser process does with a batch it read
(``parseworker.Worker.send_datagrams``: checks, parse, the marshalled
answer) and what the reactor does with that answer
(``UDPReceiver.parsed_elsewhere``: admission against the replay memory,
filing, the journal's queue), signed under ``--auth-keys`` and plain.  CPU
microseconds per datagram, best of the rounds: on a shared machine the
best round is the least disturbed one, and plain datagrams are measured
in the same run as the reference.

Then the reactor's longest turns: with the replay memory already holding
``--remembered`` identities (what 15 s of 150,000 one-record frames a second
leave; the window is 300 s), the reactor's half of 500 answers of 240 frames
each, timed one by one (median, 99th percentile, longest, in ms), and the
full collections of the garbage collector that happened meanwhile.  A turn
longer than the ~80 ms the UDP socket's buffer holds at that rate loses
datagrams however fast the rest is.
"""

import argparse
import gc
import io
import marshal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VMS = 10_000
KEY, SECRET = "bench", "bench-secret-0123456789"
_LINE = (b"vmstats,vm=10.%d.%d.%d,host=vm%d cpu=%d.%d,cpu_max=%d.5,mem=%d.25,disk_r=%d,"
         b"disk_w=%d.5,net_rx=%d,net_tx=%d,vcpus=2i,mem_mb=4096i,seq=%di %d")


def lines(start: int, count: int, base: int) -> list[bytes]:
    """Records ``start`` .. ``start + count`` of a fleet sending one a minute per VM."""
    out = []
    for i in range(start, start + count):
        vm, k = i % VMS, i // VMS
        out.append(_LINE % (vm >> 16, (vm >> 8) & 255, vm & 255, vm, i % 97, i % 10, i % 100,
                            i % 99, i * 7 % 100000, i % 65536, i * 13 % 900000, i % 4096, k,
                            base + 60 * k))
    return out


class Pipe:
    """What a parser writes to its stdout, kept."""

    def __init__(self):
        self.buffer = io.BytesIO()

    def write(self, data: bytes) -> None:
        self.buffer.write(data)

    def flush(self) -> None:
        pass


class Queue:
    """The journal's once-per-turn queue, without the disk."""

    def __init__(self):
        self.pending: list[bytes] = []

    def append(self, data: bytes) -> None:
        self.pending.append(data)

    def append_records(self, data: bytes) -> None:
        from vmstats.server import journal
        self.pending.append(getattr(journal, "records_of", lambda data: data)(data))

    def next_write(self) -> int:
        return 1


def pipeline(signed: bool) -> tuple:
    """A parser's Worker and the reactor's receiver, buffer and journal queue, wired as the
    server wires them (``--auth-keys`` if ``signed``): ``(worker, receiver, buffer, journal,
    auth)``."""
    from vmstats.server import parseworker, signing
    from vmstats.server.auth import Authenticator
    from vmstats.server.buffer import Buffer
    from vmstats.server.ingest import Ingest
    from vmstats.server.listeners import UDPReceiver
    from vmstats.server.metrics import Metrics
    from vmstats.server.parse import Parser

    metrics = Metrics()
    buffer = Buffer(metrics, 1 << 40, 1 << 40)
    journal = Queue()
    ingest = Ingest(buffer, metrics, 300, 0, journal=journal)
    ingest.parser = Parser(300, 86400 * 60)
    auth = Authenticator(ingest, {KEY.encode(): SECRET.encode()} if signed else None, 300)
    if signed:  # the marks file is written only before segments are retired: never here
        auth.remember_in(tempfile.gettempdir(), journal, None)
    receiver = UDPReceiver(ingest, auth, metrics, None)
    worker = parseworker.Worker(Parser(300, 86400 * 60), None,
                                signing.FrameCheck(auth.keys, 300) if signed else None)
    return worker, receiver, buffer, journal, auth


def measure(signed: bool, batch: int, rounds: int, batches: int) -> tuple[float, float]:
    """Best CPU us per datagram of the parser's half and the reactor's half."""
    from vmstats import protocol
    from vmstats.server import parseworker

    worker, receiver, buffer, journal, _auth = pipeline(signed)
    metrics = receiver.metrics
    base = (int(time.time()) // 86400 - 30) * 86400
    best = [float("inf"), float("inf")]
    counter = 0
    for _ in range(rounds):
        work = []
        for _ in range(batches):
            records = lines(counter, batch, base)
            counter += batch
            work.append([protocol.sign_payload(KEY, SECRET, one) for one in records] if signed
                        else records)
        spent = [0.0, 0.0]
        before = metrics.records
        for datagrams in work:
            worker.out = Pipe()
            started = time.process_time()
            worker.send_datagrams(datagrams)
            answered = time.process_time()
            answer = worker.out.buffer.getvalue()[parseworker.REPLY.size:]
            receiver.parsed_elsewhere(*marshal.loads(answer))
            spent[0] += answered - started
            spent[1] += time.process_time() - answered
            buffer.table.clear()
            buffer.count = 0
            journal.pending.clear()
        if metrics.records - before != batch * batches:
            raise RuntimeError("%d records filed of %d" % (metrics.records - before,
                                                           batch * batches))
        best = [min(best[0], spent[0]), min(best[1], spent[1])]
    return best[0] / (batch * batches) * 1e6, best[1] / (batch * batches) * 1e6


def turns(remembered: int, answers: int = 500, frames: int = 240) -> str:
    """The reactor's turns (ms) for signed answers with ``remembered`` identities in its memory."""
    from vmstats import protocol
    from vmstats.server import parseworker

    worker, receiver, buffer, journal, auth = pipeline(True)
    now = int(time.time())
    per_second = max(1, remembered // 250)
    for i in range(remembered):  # the last 250 s of the window
        second = now - 250 + i // per_second
        auth.verifier.remember(second, b"%s %d %016x" % (KEY.encode(), second, i), now)
    base = (now // 86400 - 30) * 86400
    work = []
    for k in range(answers):
        worker.out = Pipe()
        worker.send_datagrams([protocol.sign_payload(KEY, SECRET, one)
                               for one in lines(k * frames, frames, base)])
        work.append(worker.out.buffer.getvalue()[parseworker.REPLY.size:])
    full = []
    gc.callbacks.append(lambda phase, info: full.append(1)
                        if phase == "stop" and info["generation"] == 2 else None)
    spent = []
    try:
        for answer in work:
            started = time.perf_counter()
            receiver.parsed_elsewhere(*marshal.loads(answer))
            spent.append((time.perf_counter() - started) * 1e3)
            if len(buffer.table) > 5000:  # as a flush would
                buffer.table.clear()
                buffer.count = 0
            journal.pending.clear()
    finally:
        gc.callbacks.pop()
    spent.sort()
    return ("%d answers of %d frames, %d identities remembered: median %.2f ms, 99th percentile "
            "%.2f, longest %.1f; %d full collections" % (answers, frames, remembered,
                                                        spent[len(spent) // 2],
                                                        spent[len(spent) * 99 // 100], spent[-1],
                                                        len(full)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", default=str(ROOT), help="checkout whose vmstats to measure")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=200,
                        help="datagrams a parser reads at once (~2 ms at 100,000/s)")
    parser.add_argument("--remembered", type=int, default=2_000_000,
                        help="identities in the replay memory for the longest-turn figures (0: "
                        "skip them)")
    args = parser.parse_args()
    sys.path.insert(0, args.code)
    __import__("vmstats")
    print("code: %s" % Path(sys.modules["vmstats"].__file__).parent.parent)
    for signed in (False, True, False, True):  # alternated: a slow phase touches both
        parse_us, reactor_us = measure(signed, args.batch, args.rounds, 40)
        print("  %-7s parser %.2f us per datagram, reactor %.2f (batches of %d)"
              % ("signed" if signed else "plain", parse_us, reactor_us, args.batch), flush=True)
    if args.remembered:
        print("  reactor's turns: " + turns(args.remembered), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
