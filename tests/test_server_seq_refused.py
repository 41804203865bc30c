"""Records the server refuses after reading their ``seq`` are no loss: a record that came and
was refused (stamped past --max-future or before --max-past, a field out of range, a cap)
was not lost in transit, so the loss estimate (``vmstats_estimated_lost_records_total``)
leaves it to its reject or drop count and counts only what never came.

Real datagrams and TCP writes in the agent's wire format to the real server on loopback,
/metrics, /status and the stop summary read back.
"""

import time

from serverproc import serve
from test_server_shared_ids import line

from vmstats import protocol
from vmstats.protocol import Record

LOST = "vmstats_estimated_lost_records_total"


def test_a_record_refused_for_its_stamp_is_counted_once_as_a_reject_not_as_lost(tmp_path):
    """An agent's counter 1..7 in order, over UDP, its 2nd stamped an hour ahead (refused past
    --max-future), its 4th two days back (refused past --max-past): two rejects, no loss; its
    5th never sent is the one record lost (counted at the 7th, which shows the 6th was no
    jump to a second counter)."""
    t0 = int(time.time()) - 600
    sent = [(1, t0), (2, t0 + 3600 + 600), (3, t0 + 60), (4, t0 - 2 * 86400), (6, t0 + 120), (7, t0 + 180)]
    with serve(tmp_path, "--flush-interval", "0.5", "--max-past", "1d") as server:
        for n, (seq, ts) in enumerate(sent, 1):
            server.send_udp(line("refused-1", seq, ts))
            server.wait_received(n)  # in order, one at a time
        metrics = server.wait_metrics(lambda m: m["vmstats_records_received_total"] == 4)
        status = server.status_json()
    assert server.returncode == 0, server.output
    assert metrics['vmstats_rejected_total{reason="future_timestamp"}'] == 1
    assert metrics['vmstats_rejected_total{reason="past_timestamp"}'] == 1
    assert metrics[LOST] == 1 and status["estimated_lost_records"] == 1
    assert "est. lost (seq)   1\n" in server.output


def test_over_tcp_refused_records_in_one_payload_are_stepped_over_in_their_place(tmp_path):
    """One TCP batch of a VM's counter 10..16 whose 11th and 14th are stamped ahead, and a VM
    whose every record is refused: the ack counts the five refused, the estimate counts only the
    17th, never sent, and the VM never taken is not known (/status lists one VM)."""
    t0 = int(time.time()) - 1800
    ahead = t0 + 3600 + 1800
    batch = [line("batched-1", seq, ahead if seq in (11, 14) else t0 + 60 * seq)
             for seq in range(10, 17)]
    batch += [line("never-taken", seq, ahead + seq) for seq in (1, 2, 5)]
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        reply = server.send_synced(b"\n".join(batch) + b"\n")
        assert reply[:4] == ["#!ack", "all", "5", "5"], reply
        later = server.send_synced(b"".join(line("batched-1", seq, t0 + 60 * seq) + b"\n"
                                            for seq in (18, 19)))
        assert later[:4] == ["#!ack", "all", "2", "0"], later
        metrics = server.metrics()
        status = server.status_json()
    assert server.returncode == 0, server.output
    assert metrics['vmstats_rejected_total{reason="future_timestamp"}'] == 5
    assert metrics[LOST] == 1  # the 17th, never sent
    assert status["vms_seen"] == 1 and list(status["last_seen"]) == ["batched-1"]


def _record(vm: str, seq: int, ts: int) -> bytes:
    return protocol.encode_record(Record(vm=vm, ts=ts, cpu=1.5, mem=40.0, seq=seq)).encode()


def test_a_record_dropped_for_a_cap_is_counted_as_dropped_not_as_lost():
    """The server's ingest and buffer at --max-buffered 2: a VM's 3rd record finds the buffer
    full and is dropped (counted so); after the flush its 4th is no gap (nor a jump its 5th settles)."""
    from vmstats.server.buffer import Buffer
    from vmstats.server.ingest import Ingest
    from vmstats.server.metrics import Metrics

    metrics = Metrics()
    buffer = Buffer(metrics, 2, 10 ** 6)
    ingest = Ingest(buffer, metrics, max_future=300, max_past=0)
    t0 = int(time.time()) - 600
    assert ingest.payload(_record("capped-1", 1, t0) + b"\n" + _record("capped-1", 2, t0 + 60)) \
        == (2, 0, 0)
    assert ingest.payload(_record("capped-1", 3, t0 + 120)) == (0, 0, 1)
    buffer.swap()
    assert ingest.payload(_record("capped-1", 4, t0 + 180)) == (1, 0, 0)
    assert ingest.payload(_record("capped-1", 5, t0 + 240)) == (1, 0, 0)
    assert metrics.seq_lost == 0 and metrics.seq_too_far == 0
