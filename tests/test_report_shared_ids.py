"""A VM id two machines send under is flagged by the report (data quality ``shared-id``, with its
day, and no confident verdict); an agent restart, a resend and a replayed spool are not.

The records go to the real server over TCP in the order they would arrive, and the real
``vmstats report`` reads the logs it wrote.  Each report holds a shared id beside the case
that must not be taken for one, so each test also shows the flag is there to be missed.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from serverproc import serve

from vmstats import logstore, protocol, seqturns
from vmstats.protocol import Record
from vmstats.report import sharedseq
from vmstats.server import compact
from vmstats.server.buffer import Buffer
from vmstats.server.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
SHARED = "clone-1"
#: Minutes of a day sent per VM (one record a minute per machine).
MINUTES = 600


def _record(vm: str, seq: int, ts: int, cpu: float) -> bytes:
    return protocol.encode_record(Record(
        vm=vm, ts=ts, seq=seq, cpu=cpu, mem=30.0 if cpu < 5 else 80.0, disk_r=100.0, disk_w=100.0,
        net_rx=50.0, net_tx=50.0, vcpus=4, mem_mb=8192)).encode() + b"\n"


def _start() -> int:
    """The first of MINUTES minutes before now, all in one UTC day (the report finds a shared id
    in a VM-day): today's if it has had that many, else the end of yesterday's.  (Today's
    midnight was taken before 10:05 UTC, which put most records hours in the future.)"""
    now = int(time.time()) // 60 * 60
    today = now // 86400 * 86400
    start = now - (MINUTES + 5) * 60
    return start if start >= today else today - (MINUTES + 5) * 60


def _shared(start: int) -> list[bytes]:
    """An idle VM and a busy clone with its baked id, each a record a minute, half a minute apart:
    two counters (7 and 5000) taking turns under one id."""
    lines = []
    for i in range(MINUTES):
        lines.append(_record(SHARED, 7 + i, start + 60 * i, 0.5))
        lines.append(_record(SHARED, 5000 + i, start + 60 * i + 30, 90.0))
    return lines


def _report(tmp_path, lines: list[bytes], days: int = 2) -> dict:
    """The report.json of the logs the real server wrote from ``lines`` (sent in their order)."""
    if lines:
        with serve(tmp_path, "--flush-interval", "0.5") as server:
            reply = server.send_synced(b"".join(lines), "all", timeout=30)
            assert reply[:3] == ["#!ack", "all", str(len(lines))]
        assert server.returncode == 0, server.output
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "vmstats", "report", str(tmp_path / "data"), "-o", str(out),
         "--days", str(days), "--set", "min_days=0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {v["vm"]: v for v in json.loads((out / "report.json").read_text())["vms"]}


def _assert_only_shared_flagged(by_vm: dict, start: int, other: str) -> None:
    day = time.strftime("%Y-%m-%d", time.gmtime(start))
    shared = by_vm[SHARED]
    assert shared["data_quality"].startswith("shared-id: ") and day in shared["data_quality"], shared
    assert shared["confidence"] <= 0.39
    assert "shared-id" not in by_vm[other]["data_quality"], by_vm[other]


def test_a_restarted_agent_is_not_a_second_machine(tmp_path):
    """An agent restarted twice (its counter back to 0 each time) beside a shared id."""
    start = _start()
    seqs = list(range(400, 600)) + list(range(200)) + list(range(MINUTES - 400))
    lines = [_record("restarted", seq, start + 60 * i, 0.5) for i, seq in enumerate(seqs)]
    by_vm = _report(tmp_path, _shared(start) + lines)
    _assert_only_shared_flagged(by_vm, start, "restarted")
    assert by_vm["restarted"]["records"] == MINUTES


def test_a_resend_is_not_a_second_machine(tmp_path):
    """Every record of a VM sent twice (a sender that did not hear it was held) beside a shared id."""
    start = _start()
    lines = [_record("resent", 40 + i, start + 60 * i, 0.5) for i in range(MINUTES)]
    by_vm = _report(tmp_path, _shared(start) + lines + lines[MINUTES // 2:] + lines[:10])
    _assert_only_shared_flagged(by_vm, start, "resent")
    assert by_vm["resent"]["records"] == MINUTES


def test_a_replayed_spool_is_not_a_second_machine(tmp_path):
    """A spool replayed after the agent sent on (its records older than the counter's head,
    in order, between the live ones) beside a shared id."""
    start = _start()
    live = [_record("replayed", 40 + i, start + 60 * i, 0.5) for i in range(MINUTES)]
    spool = live[100:300]
    lines = live[:300]
    for k, record in enumerate(live[300:]):  # the spool's records take turns with the live ones
        lines.append(record)
        if k < len(spool):
            lines.append(spool[k])
    by_vm = _report(tmp_path, _shared(start) + lines)
    _assert_only_shared_flagged(by_vm, start, "replayed")
    assert by_vm["replayed"]["records"] == MINUTES


def test_a_clock_set_back_is_not_a_second_machine(tmp_path):
    """An agent whose VM's clock was set back 30 minutes while it ran: its later stamps fall
    between its earlier ones, one counter throughout, beside a shared id."""
    start = _start()
    lines = [_record("stepped", 40 + i, start + 60 * (i if i < 300 else i - 30) + (20 if i >= 300 else 0),
                     0.5) for i in range(MINUTES)]
    by_vm = _report(tmp_path, _shared(start) + lines)
    _assert_only_shared_flagged(by_vm, start, "stepped")
    assert by_vm["stepped"]["records"] == MINUTES


def test_a_shared_day_rolled_up_keeps_its_flag_and_only_its_day(tmp_path):
    """Logs written by the project's writer, compacted and their rows retired: the day two
    machines sent under the id is flagged from its rollup, the day before (one machine) is not."""
    first = 20400  # 2025-11-08
    data = str(tmp_path / "data")
    for day in (first, first + 1):
        start = day * 86400
        rows = {start + 60 * i: logstore.format_tail(Record(
            vm=SHARED, ts=start + 60 * i, seq=10 + i, cpu=0.5 + i % 7 / 10, mem=30.0, vcpus=4, mem_mb=8192))
            for i in range(MINUTES)}
        if day == first + 1:  # a clone with the same id, half a minute after each record
            rows.update({ts + 30: logstore.format_tail(Record(
                vm=SHARED, ts=ts + 30, seq=9000 + i, cpu=90.0, mem=80.0, vcpus=4, mem_mb=8192))
                for i, ts in enumerate(sorted(rows))})
        logstore.append_missing(data, SHARED, rows)
    policy = compact.Policy(compact_after=86400, retain_raw=2 * 86400, retain_rollups=60 * 86400)
    compact.compact(data, policy, now=(first + 10) * 86400, trust_clock=True)
    assert not list((tmp_path / "data" / "vms").glob("*/*.csv"))
    assert not list((tmp_path / "data" / "columnar").glob("*.parquet"))
    assert len(list((tmp_path / "data" / "rollups").glob("*.parquet"))) == 2
    flags = _report(tmp_path, [], days=3)[SHARED]["data_quality"]
    assert flags == "shared-id: two machines send under this id (seq counters take turns) on 2025-11-09"


def test_the_report_counts_turns_as_the_server_does():
    """The server's buffer (its clock the records' stamps) and the report's reading of the logs
    agree, record for record: two counters (a snapshot's, 3 apart; a clone's, far apart, the
    lower or the higher first), a restart with one straggler of the old process, two counters
    that take turns too seldom (more than WATCH_FOR apart), two that pause for longer
    between their turns than the watch lasts (three turns before, three after), and forged
    records far above a counter (jumps too far to be loss)."""
    gap = int(seqturns.WATCH_FOR) + 60
    taking_turns = [10, 5000, 11, 5001, 12, 5002, 13, 5003]
    cases = {
        "snapshot": ([100 + i // 2 + 3 * (i % 2) for i in range(20)], [30 * i for i in range(20)], True),
        "restart": ([500, 501, 502, 0, 503, 1, 2, 3, 4, 5], [60 * i for i in range(10)], False),
        "seldom": ([10, 11, 5000, 12, 5001, 13, 5002, 14, 5003], [gap * i for i in range(9)], False),
        "often": ([10, 11, 5000, 12, 5001, 13, 5002, 14, 5003], [60 * i for i in range(9)], True),
        "higher first": ([seq for pair in zip(taking_turns[1::2], taking_turns[::2], strict=True)
                          for seq in pair], [30 * i for i in range(8)], True),
        "paused": (taking_turns[:7] + [5003, 14, 5004, 15, 5005, 16],
                   [60 * i for i in range(7)] + [gap + 60 * i for i in range(7, 13)], False),
        "forged": ([10, 11, (1 << 63) - 2, 12, 13, (1 << 63) - 1, 14, 15],
                   [60 * i for i in range(8)], False),
    }
    for name, (seqs, stamps, expected) in cases.items():
        clock = [0.0]
        metrics = Metrics()
        buffer = Buffer(metrics, 10 ** 9, 10 ** 9, clock=lambda clock=clock: clock[0])
        for seq, ts in zip(seqs, stamps, strict=True):
            clock[0] = float(ts)
            assert buffer.put(name, ts, b"row", seq)
            buffer.last_seen[name] = clock[0]  # as the ingest does after each payload
        assert (name in buffer.shared.found) == expected, name
        assert metrics.shared_ids == expected, name
        assert sharedseq.shared(np.array(seqs, float), np.array(stamps, float)) == expected, name
