"""The receive path's Python cost per record, in process: parsing a payload and filing it.

    .venv/bin/python bench/parse.py                       # about 30 s
    .venv/bin/python bench/parse.py --code OTHER_CHECKOUT # the same work on another commit's code
    .venv/bin/python bench/parse.py --shapes every,influx # only these record shapes

What changes to ``vmstats/server/parse.py`` and ``ingest.py`` are judged by: the fast path
was tuned hard, so a change there states these figures before and after.  Each
case alternates with a reference in the same round (splitting the same payload
into lines, C speed: it moves with the host's speed, not with vmstats' code),
and the best of several rounds is kept: on a shared machine the best run is the
least disturbed one.  Run it with ``--code`` on a checkout of the commit before
a change, then without, and compare both the microseconds and the ratios.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

VMS = 10_000
PER_PAYLOAD = 500  # records per payload: about one 64 KiB TCP read
NOW = 1_800_000_000
_EVERY_FIELD = (b"vmstats,vm=10.%d.%d.%d,host=vm%d cpu=%d.%d,cpu_max=%d.5,mem=%d.25,disk_r=%d,"
                b"disk_w=%d.5,net_rx=%d,net_tx=%d,vcpus=2i,mem_mb=4096i,seq=%di %d")
_SOME_FIELDS = b"vmstats,vm=10.%d.%d.%d cpu=%d.%d,mem=%d.25,net_rx=%d,seq=%di %d"
#: The same values as an InfluxDB client library writes them: tags and fields sorted by name,
#: Python ints typed ``i``, nanosecond timestamps.
_INFLUX = (b"vmstats,host=vm%d,vm=10.%d.%d.%d cpu=%d.%d,cpu_max=%d.5,disk_r=%di,disk_w=%d.5,"
           b"mem=%d.25,mem_mb=4096i,net_rx=%di,net_tx=%di,seq=%di,vcpus=2i %d000000000")
#: Fields in another order, an extra tag, millisecond timestamps.
_SHUFFLED = (b"vmstats,vm=10.%d.%d.%d,project=billing,host=vm%d mem=%d.25,seq=%di,cpu=%d.%d,"
             b"net_tx=%d,vcpus=2i,disk_w=%d.5,cpu_max=%d.5,net_rx=%d,mem_mb=4096i,disk_r=%d %d000")
#: The record shapes measured: the agent's two, then the other senders' spellings.
SHAPES = ("every", "some", "influx", "shuffled")


def payloads(template: str) -> list[bytes]:
    """One minute of VMS VMs as payloads of PER_PAYLOAD lines."""
    ts = NOW - 60
    if template == "every":
        lines = [_EVERY_FIELD % (i >> 16 & 255, i >> 8 & 255, i & 255, i, i % 100, i % 10, i % 100,
                                 i % 100, i, i, i, i, 7, ts) for i in range(VMS)]
    elif template == "influx":
        lines = [_INFLUX % (i, i >> 16 & 255, i >> 8 & 255, i & 255, i % 100, i % 10, i % 100, i,
                            i, i % 100, i, i, 7, ts) for i in range(VMS)]
    elif template == "shuffled":
        lines = [_SHUFFLED % (i >> 16 & 255, i >> 8 & 255, i & 255, i, i % 100, 7, i % 100, i % 10,
                              i, i, i % 100, i, i, ts) for i in range(VMS)]
    else:
        lines = [_SOME_FIELDS % (i >> 16 & 255, i >> 8 & 255, i & 255, i % 100, i % 10, i % 100,
                                 i, 7, ts) for i in range(VMS)]
    return [b"\n".join(lines[k:k + PER_PAYLOAD]) + b"\n" for k in range(0, VMS, PER_PAYLOAD)]


def timed(work, rounds: int) -> float:
    """Best CPU microseconds per record of ``work()`` (which handles VMS records)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        spent = work()  # a case that sets up state first times its filing itself
        best = min(best, spent if spent is not None else time.process_time() - started)
    return best / VMS * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", default=str(ROOT), help="checkout whose vmstats to measure")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--shapes", default=",".join(SHAPES),
                        help="comma-separated, of: %s" % ", ".join(SHAPES))
    args = parser.parse_args()
    sys.path.insert(0, args.code)
    from vmstats.server.buffer import Buffer
    from vmstats.server.ingest import Ingest
    from vmstats.server.metrics import Metrics
    from vmstats.server.parse import Parser

    print("code: %s" % Path(sys.modules["vmstats"].__file__).parent.parent)
    for shape in args.shapes.split(","):
        work = payloads(shape)
        known = Parser(300, 0)
        for data in work:  # every VM id known, as in steady state
            known.parse(data, NOW)

        def reference(work=work):
            for data in work:
                data.split(b"\n")

        def parse_known(work=work, parse=known.parse):
            for data in work:
                parse(data, NOW)

        def parse_new(work=work):
            parse = Parser(300, 0).parse  # every VM id seen for the first time
            for data in work:
                parse(data, NOW)

        parsed = [known.parse(data, NOW) for data in work]

        def file_known(work=work, parsed=parsed, at_cap=False):
            metrics = Metrics()
            buffer = Buffer(metrics, 10 ** 9, 10 ** 6)
            if at_cap:  # every VM known and no room for another: the careful check each payload
                buffer.max_vms = VMS
                buffer.last_seen.update((vm, NOW) for columns in parsed for vm in columns[0])
            ingest = Ingest(buffer, metrics, 300, 0, clock=lambda: NOW)
            for data, columns in zip(work, parsed, strict=True):
                ingest.file(data, columns)

        #: Every VM's last seq the one before its record's (7): the steady state, where each
        #: payload's counters take the fast path (the case above meets each VM's first seq).
        next_seqs = dict.fromkeys((vm for columns in parsed for vm in columns[0]), 6)

        def file_next(work=work, parsed=parsed, next_seqs=next_seqs):
            metrics = Metrics()
            buffer = Buffer(metrics, 10 ** 9, 10 ** 6)
            buffer.last_seq = next_seqs.copy()
            ingest = Ingest(buffer, metrics, 300, 0, clock=lambda: NOW)
            started = time.process_time()
            for data, columns in zip(work, parsed, strict=True):
                ingest.file(data, columns)
            spent = time.process_time() - started
            assert metrics.seq_lost == 0
            return spent

        cases = [("parse, known ids", parse_known), ("parse, new ids", parse_new),
                 ("file into the buffer", file_known), ("file, seq = last + 1", file_next)]
        if "max_vms" in Buffer.__init__.__code__.co_varnames:
            cases.append(("file, at --max-vms", lambda: file_known(at_cap=True)))
        if hasattr(Buffer(Metrics(), 1, 1), "shared"):
            def file_watched(work=work, parsed=parsed, next_seqs=next_seqs):
                """Every VM watched for a second sender (its counter stepped back): the
                careful path for each record, what a fleet restarted at once costs."""
                metrics = Metrics()
                buffer = Buffer(metrics, 10 ** 9, 10 ** 6)
                for vm in next_seqs:
                    buffer.sequence(vm, 6, NOW - 120)
                    buffer.sequence(vm, 3, NOW - 90)
                ingest = Ingest(buffer, metrics, 300, 0, clock=lambda: NOW)
                started = time.process_time()
                for data, columns in zip(work, parsed, strict=True):
                    ingest.file(data, columns)
                return time.process_time() - started

            cases.append(("file, every VM watched", file_watched))
        results = {name: [] for name, _ in cases}
        results["reference"] = []
        for _ in range(3):  # interleaved, so a slow phase of the host touches every case
            results["reference"].append(timed(reference, args.rounds))
            for name, work_of in cases:
                results[name].append(timed(work_of, args.rounds if "new" not in name
                                           else max(3, args.rounds // 5)))
        ref = min(results["reference"])
        print("lines with %s fields (reference: split into lines, %.3f us per record)"
              % (shape, ref))
        for name, _ in cases:
            best = min(results[name])
            print("  %-22s %6.3f us per record  (%5.1fx the reference)" % (name, best, best / ref))
    return 0


if __name__ == "__main__":
    sys.exit(main())
