"""The loss estimate from agents' ``seq`` counters: a jump up further than one agent numbers in
the time between its records is counted apart, not as records lost (one datagram made the
estimate 9.2e18); a loss followed by one record and silence is counted, at a flush or the stop.

Real datagrams in the agent's wire format to the real server on loopback, /metrics and /status
read back, and the real report over the logs it wrote; the clock-driven cases (a long outage, a
jump waiting past WAIT_FOR) through the server's ingest with a clock of the test's own.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from serverproc import LOOPBACK, serve
from test_server_shared_ids import line, udp_from

from vmstats import seqturns
from vmstats.server.buffer import FORGET_AFTER, Buffer
from vmstats.server.ingest import Ingest
from vmstats.server.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
LOST = "vmstats_estimated_lost_records_total"
TOO_FAR = "vmstats_seq_jumps_too_far_total"
TOP = (1 << 63) - 1  # the highest seq the protocol takes


def _report(data_dir: Path, out: Path) -> dict:
    """report.json's VMs, by id, of the real report over ``data_dir``."""
    result = subprocess.run(
        [sys.executable, "-m", "vmstats", "report", str(data_dir), "-o", str(out),
         "--days", "2", "--set", "min_days=0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return {v["vm"]: v for v in json.loads((out / "report.json").read_text())["vms"]}


def test_a_jump_no_agent_numbers_so_fast_is_counted_apart_not_as_lost_records(tmp_path):
    """Forged records a minute apart (the highest seq after 1; after 1 and down again; after a
    restart's 0) beside an agent that lost two records and a clone under another's
    id: the estimate is the two lost records, the three forged jumps are counted apart and said
    once; the report flags the clone's id only, as the server finds it."""
    t0 = int(time.time()) - 3600
    sent = {
        "forged-up": [(1, t0), (TOP - 1, t0 + 60), (TOP, t0 + 120)],
        "forged-back": [(1, t0), (TOP - 1, t0 + 60), (2, t0 + 30)],
        "forged-restart": [(TOP - 2, t0), (0, t0 + 60), (TOP - 1, t0 + 120), (TOP, t0 + 180)],
        "lossy": [(1, t0), (2, t0 + 60), (5, t0 + 240), (6, t0 + 300)],
    }
    first, second = udp_from(LOOPBACK), udp_from("127.0.0.2")
    with first, second, serve(tmp_path, "--flush-interval", "0.5") as server:
        count = 0
        for vm, records in sent.items():
            for seq, ts in records:
                first.sendto(line(vm, seq, ts), (LOOPBACK, server.udp_port))
                count += 1
                server.wait_received(count)  # in order, one at a time
        for i in range(8):  # a clone far ahead (no forged jump: the step up is a second counter)
            for sock, seq, ts in ((first, 7 + i, t0 + 60 * i), (second, 5000 + i, t0 + 60 * i + 30)):
                sock.sendto(line("clone-1", seq, ts), (LOOPBACK, server.udp_port))
                count += 1
                server.wait_received(count)  # each filed before the next: no parser reorders
        metrics = server.wait_metrics(lambda m: m["vmstats_shared_vm_ids_found_total"] == 1)
        status = server.status_json()
        server.wait_for(lambda s: s.metrics()["vmstats_flushed_records_total"] == count)
    assert server.returncode == 0, server.output
    assert metrics[LOST] == 2 and status["estimated_lost_records"] == 2
    assert metrics[TOO_FAR] == 3 and status["seq_jumps_too_far"] == 3
    said = [text for text in server.output.splitlines() if "seq jumped from" in text]
    assert len(said) == 1 and "VM forged-up's seq jumped from 1 to %d" % (TOP - 1) in said[0], said
    assert "not counted as lost records" in said[0]
    assert "est. lost (seq)   2 (and 3 jumps too far to be loss, not counted)" in server.output
    by_vm = _report(tmp_path / "data", tmp_path / "out")
    assert by_vm["clone-1"]["data_quality"].startswith("shared-id: ")
    for vm, records in sent.items():  # detection only: every record is logged and reported
        assert "shared-id" not in by_vm[vm]["data_quality"], by_vm[vm]
        assert by_vm[vm]["records"] == len(records)


def test_a_loss_then_one_record_then_silence_is_counted_at_the_stop(tmp_path):
    """Two records lost, the next one arrives, and the agent says no more: the jump waits for a
    next record that never comes; the stop counts it (and /metrics said nothing meanwhile)."""
    t0 = int(time.time()) - 3600
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        for n, (seq, ts) in enumerate([(1, t0), (2, t0 + 60), (5, t0 + 240)], 1):
            server.send_udp(line("quiet", seq, ts))
            server.wait_received(n)
        server.wait_for(lambda s: s.metrics()["vmstats_flushed_records_total"] == 3)
        assert server.metrics()[LOST] == 0  # its next record may yet show a second counter
    assert server.returncode == 0, server.output
    assert "est. lost (seq)   2\n" in server.output


def _ingest() -> tuple[Ingest, list[float]]:
    """The server's ingest and buffer, on a clock the test moves."""
    clock = [1000.0]
    metrics = Metrics()
    buffer = Buffer(metrics, 10 ** 9, 10 ** 9, clock=lambda: clock[0], max_vms=10)
    return Ingest(buffer, metrics, max_future=300, max_past=0, clock=lambda: time.time()), clock


def test_a_long_outage_is_loss_and_the_same_jump_at_once_is_not():
    """An agent silent half an hour (1,500 records at one a second, an interval under a second's
    most) lost them; the same jump a second after its last record is too far for one agent."""
    ingest, clock = _ingest()
    t0 = int(time.time()) - 3600
    for vm, wait in (("outage", 1800.0), ("at-once", 1.0)):
        ingest.payload(line(vm, 10, t0))
        clock[0] += wait
        ingest.payload(line(vm, 1511, t0 + int(wait)))
        ingest.payload(line(vm, 1512, t0 + int(wait) + 1))
    assert ingest.metrics.seq_lost == 1500
    assert ingest.metrics.seq_too_far == 1


def test_a_jump_waiting_past_wait_for_is_counted_at_a_flush_and_one_forgotten_at_once():
    """A flush before WAIT_FOR leaves a jump waiting for its VM's next record; one after counts
    it, and the VM's next record follows the counter it jumped to; a VM forgotten at the VM cap
    with a jump waiting has it counted, not dropped."""
    ingest, clock = _ingest()
    buffer, metrics = ingest.buffer, ingest.metrics
    t0 = int(time.time()) - 3600
    for seq in (1, 2, 5):
        ingest.payload(line("quiet", seq, t0 + 60 * seq))
        clock[0] += 60
    buffer.swap()
    assert metrics.seq_lost == 0 and buffer.last_seq["quiet"] == seqturns.JUMPED
    clock[0] += seqturns.WAIT_FOR
    buffer.swap()
    assert metrics.seq_lost == 2 and buffer.last_seq["quiet"] == 5
    ingest.payload(line("quiet", 6, t0 + 3600))
    assert metrics.seq_lost == 2 and not buffer.shared.jumped
    for seq in (1, 9):
        ingest.payload(line("gone", seq, t0 + 60 * seq))
    clock[0] += FORGET_AFTER + 1
    assert buffer.forget(clock[0] - FORGET_AFTER) == 2
    assert metrics.seq_lost == 2 + 7 and not buffer.shared.jumped
