"""What durability costs: the journal on the receive path, fsync, the writer's duplicate check,
and replay speed, each against the same work without it, in the same run.

    .venv/bin/python bench/reliability.py            # about 40 s
    .venv/bin/python bench/reliability.py --quick    # about 15 s

In-process and single-threaded, so the figures are the cost per record, not the
end-to-end throughput (bench/ingest.py measures that, journal included).
Each comparison alternates the two variants and keeps the best of several
rounds: on a shared machine the best run is the least disturbed one.
Nothing listens on the network; scratch files go to a temporary directory.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.internet.task import Clock  # noqa: E402

from vmstats import logstore  # noqa: E402
from vmstats.server import writer  # noqa: E402
from vmstats.server.buffer import Buffer  # noqa: E402
from vmstats.server.ingest import Ingest  # noqa: E402
from vmstats.server.journal import Journal, segment_name  # noqa: E402
from vmstats.server.metrics import Metrics  # noqa: E402
from vmstats.server.replay import replay  # noqa: E402

VMS = 10_000
PER_PAYLOAD = 500  # records per payload: about one 64 KiB TCP read
_TEMPLATE = (b"vmstats,vm=10.%d.%d.%d,host=vm%d cpu=%d.%d,cpu_max=%d.5,mem=%d.25,disk_r=%d,"
             b"disk_w=%d.5,net_rx=%d,net_tx=%d,vcpus=2i,mem_mb=4096i,seq=%di %d")


def payloads(rounds: int, start: int) -> list:
    """``rounds`` minutes of 10,000 VMs, as payloads of PER_PAYLOAD canonical lines."""
    out = []
    for minute in range(rounds):
        ts = start + 60 * minute
        lines = [_TEMPLATE % (i >> 16 & 255, i >> 8 & 255, i & 255, i, i % 100, i % 10, i % 100,
                              i % 100, i, i, i, i, minute, ts) for i in range(VMS)]
        out += [b"\n".join(lines[k:k + PER_PAYLOAD]) + b"\n" for k in range(0, VMS, PER_PAYLOAD)]
    return out


def receive(work: list, scratch: str, policy: str | None, sync_every: int) -> float:
    """Wall microseconds per record to ingest ``work`` (journal policy None = no journal):
    wall, not CPU, because an fsync blocks the reactor without using the CPU."""
    metrics = Metrics()
    buffer = Buffer(metrics, 10 ** 9, 10 ** 6)
    clock = Clock()
    journal = None
    if policy is not None:
        folder = tempfile.mkdtemp(dir=scratch)
        journal = Journal(clock, folder, metrics, fsync=policy)
        journal.open()
    ingest = Ingest(buffer, metrics, 600, 0, clock=lambda: START_NOW, journal=journal)
    payload = ingest.payload
    warm = VMS // PER_PAYLOAD  # the first minute: every VM is new (the slow path), untimed
    for data in work[:warm]:
        payload(data)
    work = work[warm:]
    started = time.perf_counter()
    for n, data in enumerate(work):
        payload(data)
        if journal is not None:
            clock.advance(0)  # the reactor turn ends: the turn's one write (and batch fsync)
            if policy == "interval" and n % sync_every == sync_every - 1:
                journal.sync()
    elapsed = time.perf_counter() - started
    if journal is not None:
        journal.close()
        shutil.rmtree(journal.directory)
    return elapsed / (len(work) * PER_PAYLOAD) * 1e6


def fsync_latency(work: list, scratch: str, per_sync: int, syncs: int = 8) -> list:
    """Wall milliseconds of each fsync after ``per_sync`` payloads were written."""
    folder = tempfile.mkdtemp(dir=scratch)
    journal = Journal(Clock(), folder, Metrics(), fsync="off")
    journal.open()
    times = []
    for _sync in range(syncs):
        for n in range(per_sync):
            journal.append(work[n % len(work)])
            journal.write()
        started = time.perf_counter()
        os.fsync(journal.fd)
        times.append((time.perf_counter() - started) * 1000)
    journal.close()
    shutil.rmtree(folder)
    return times


def plain_append(data_dir: str, share: list) -> None:
    """The reference for dedupe_cost: each VM's rows appended with ``open(path, "ab")`` and
    no check at all, what a writer that trusts every record to be new would do."""
    for vm, rows in share:
        for ts, tail in rows.items():
            with open(logstore.day_path(data_dir, vm, logstore.day_of(ts)), "ab") as handle:
                handle.write(b"%d,%s\n" % (ts, tail))


def dedupe_cost(scratch: str, vms: int, rows_per_day: int) -> tuple:
    """Microseconds per VM to append one row to the day file that already holds
    ``rows_per_day - 1`` rows (its last minute): the writer, which checks for rows already
    logged in the same open as its append, against a plain append with no check."""
    data_dir = os.path.join(scratch, "dedupe")
    day_start = START_NOW - START_NOW % 86400 - 86400
    last_minute = day_start + 60 * (rows_per_day - 1)  # the same day file as the rows before it
    for v in range(vms):
        vm = "10.9.%d.%d" % (v >> 8, v & 255)
        logstore.append_missing(data_dir, vm, {day_start + 60 * i: b"1,,2,,,,,,,%d," % i
                                               for i in range(rows_per_day - 1)})
    results = {"checked": [], "unchecked": []}
    for attempt in range(4):
        for variant in ("checked", "unchecked"):
            share = [("10.9.%d.%d" % (v >> 8, v & 255),
                      {last_minute + attempt * 2 + (variant == "unchecked"): b"1,,2,,,,,,,,"})
                     for v in range(vms)]
            started = time.perf_counter()
            if variant == "checked":
                outcome = writer.write_share(data_dir, share)
                assert all(error is None for _vm, _n, error, _r in outcome)
            else:
                plain_append(data_dir, share)
            results[variant].append((time.perf_counter() - started) / vms * 1e6)
    shutil.rmtree(data_dir)
    return min(results["checked"]), min(results["unchecked"])


def write_segment(folder: str, work: list) -> None:
    """The segment a server that took ``work`` and died before its flush leaves: written by the
    journal itself, one write (a checksummed unit) per payload, as the receive path's turns do."""
    journal = Journal(Clock(), folder, Metrics(), fsync="off", segment_bytes=1 << 40)
    journal.open()
    for data in work:
        journal.append_records(data)
        journal.write()
    journal.close()


def replay_speed(work: list, scratch: str) -> dict:
    """Seconds to replay a segment into empty logs, again when every row is already logged,
    and for the pool writer to write the same records (what the lost flush would have cost)."""
    data_dir = os.path.join(scratch, "replay")
    folder = os.path.join(data_dir, "journal")
    segment = b"".join(work)
    scratch_buffer = Buffer(Metrics(), 10 ** 9, 10 ** 6)
    Ingest(scratch_buffer, scratch_buffer.metrics, 1 << 40, 0).payload(segment)
    table = scratch_buffer.swap()
    started = time.perf_counter()
    writer.write_share(os.path.join(scratch, "flush"), list(table.items()))
    result = {"records": sum(len(rows) for rows in table.values()), "vms": len(table),
              "flush": time.perf_counter() - started}
    shutil.rmtree(os.path.join(scratch, "flush"))
    for run in ("empty", "present"):
        write_segment(folder, work)
        journal = Journal(Clock(), folder, Metrics(), fsync="off")
        assert [os.path.basename(path) for _n, path in journal.open()] == [segment_name(1)]
        started = time.perf_counter()
        replay(journal, data_dir, Buffer(Metrics(), 10, 10), Metrics())
        result[run] = time.perf_counter() - started
    shutil.rmtree(data_dir)
    return result


START_NOW = int(time.time())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about 15 s)")
    args = parser.parse_args()
    rounds, repeats = (6, 3) if args.quick else (12, 5)
    scratch = tempfile.mkdtemp(prefix="vmstats-bench-reliability-")
    try:
        work = payloads(rounds, START_NOW - 86400)
        records = (len(work) - VMS // PER_PAYLOAD) * PER_PAYLOAD
        # ~100,000 records/s is this server's order of magnitude: an fsync per second is one
        # per 200 payloads of 500 records.
        sync_every = 200
        variants = [("no journal", None), ("journal, fsync off", "off"),
                    ("journal, fsync interval (1 s at 100k rec/s)", "interval"),
                    ("journal, fsync every batch", "batch")]
        best = {name: float("inf") for name, _p in variants}
        for _repeat in range(repeats):
            for name, policy in variants:
                best[name] = min(best[name], receive(work, scratch, policy, sync_every))
        print("receive path, %d records in payloads of %d (best of %d, wall us/record):"
              % (records, PER_PAYLOAD, repeats))
        base = best["no journal"]
        for name, _p in variants:
            print("  %-44s %6.2f  (%+.2f vs no journal)" % (name, best[name], best[name] - base))
        latencies = fsync_latency(work, scratch, sync_every)
        print("fsync of 1 s of journal at 100k rec/s (%.1f MiB): median %.1f ms, max %.1f ms"
              % (sync_every * len(work[0]) / 2 ** 20, statistics.median(latencies), max(latencies)))
        checked, unchecked = dedupe_cost(scratch, 300 if args.quick else 1000, 1440)
        print("writer, the last row of a day appended to its file (1,439 rows in it): %.0f us/VM "
              "with the check for rows already logged, %.0f us/VM without (+%.0f us)"
              % (checked, unchecked, checked - unchecked))
        timing = replay_speed(work, scratch)
        print("replay of a %s segment, %d records of %d VMs: %.2f s into empty logs (%.1f "
              "us/record), %.2f s when all are already logged (%.1f us/record); the pool writer "
              "writing the same records: %.2f s"
              % (segment_name(1), timing["records"], timing["vms"], timing["empty"],
                 timing["empty"] / timing["records"] * 1e6, timing["present"],
                 timing["present"] / timing["records"] * 1e6, timing["flush"]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
