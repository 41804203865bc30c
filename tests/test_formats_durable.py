"""What the HTTP write API acknowledges survives SIGKILL: open minutes and counters come back."""

import hmac
import io
import json
import os
import shutil
import time
from hashlib import sha256

import influxdb_client
import pytest
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from serverproc import serve
from test_reliability_journal import changed, raw_rows
from test_server_udp import line, logged
from twisted.internet.task import Clock
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from vmstats import protocol
from vmstats.protocol import Record
from vmstats.server import journal as journal_module
from vmstats.server import replay as replay_module
from vmstats.server.buffer import Buffer
from vmstats.server.formats import Decoder
from vmstats.server.formats.edge import Edge
from vmstats.server.formats.httpwrite import WritePage
from vmstats.server.formats.influx import InfluxDecoder
from vmstats.server.formats.journaling import KEY_FILE, MAC_DIGITS, PREFIX, EdgeJournal
from vmstats.server.formats.minutes import MinuteAssembler
from vmstats.server.ingest import Ingest
from vmstats.server.journal import Journal, check_units, frame, list_segments
from vmstats.server.metrics import Metrics
from vmstats.server.replay import replay

VMS = 12
STEPS = 18  # three minutes of 10 s steps
#: SIGKILL right after the 204 of these steps (inside each minute), waiting first for flushes or
#: not: the first flush after a start checkpoints and retires the segments replayed at the start,
#: so what they held is then in the checkpoint only.
KILLS = {3: False, 5: True, 8: True, 11: False, 16: True}


def busy(i: int, step: int) -> int:
    return (i + step) % 7 + 1


def step_lines(step: int, t0: int) -> list[str]:
    """Telegraf's cpu, mem and net lines of every VM for one 10 s step (seconds precision)."""
    ts = t0 + 10 * step
    out = []
    for i in range(VMS):
        host = "tg-%02d" % i
        out.append("cpu,cpu=cpu-total,host=%s usage_idle=%d,usage_iowait=0 %d"
                   % (host, 100 - busy(i, step), ts))
        out.append("mem,host=%s used_percent=%d,total=2147483648i %d" % (host, 40 + step % 3, ts))
        out.append("net,host=%s,interface=eth0 bytes_recv=%di,bytes_sent=0i %d"
                   % (host, 1000 * (i + 1) * step, ts))
    return out


def expected(i: int, minute: int, steps: range | None = None) -> dict:
    """Minute ``minute`` (1-3) of VM ``i``, worked out by hand from ``step_lines`` (of
    ``steps`` only, if given: the counters primed by the first)."""
    steps = steps or range(6 * (minute - 1) + 1, 6 * minute + 1)
    cpu = [busy(i, s) for s in steps]
    return {"cpu": round(sum(cpu) / len(cpu), 2), "cpu_max": float(max(cpu)),
            "mem": round(sum(40 + s % 3 for s in steps) / len(cpu), 2),
            # bytes_recv grows 1,000 * (i + 1) per 10 s step; the first sample only primes it
            "net_rx": 100.0 * (i + 1), "net_tx": 0.0, "mem_mb": 2048}


def write_step(server, step: int, t0: int) -> None:
    url = "http://127.0.0.1:%d" % server.http_port
    with influxdb_client.InfluxDBClient(url=url, token="any", org="fleet") as client:
        # SYNCHRONOUS: returns once the server answered 204, raises on anything else.
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket="vms", record=step_lines(step, t0), write_precision="s")


def test_every_acknowledged_sample_survives_sigkills_inside_open_minutes(tmp_path):
    t0 = (int(time.time()) - 3600) // 60 * 60
    args = ("--flush-interval", "0.3")
    server = serve(tmp_path, *args).start()
    kills = flushed_kills = 0
    restored = []
    try:
        for step in range(1, STEPS + 1):
            write_step(server, step, t0)  # acknowledged: every sample in it must be logged
            if step in KILLS:
                if KILLS[step]:
                    time.sleep(1.0)  # a flush: the earlier payloads are in the checkpoint only
                    flushed_kills += 1
                server.kill_outright()
                kills += 1
                server = serve(tmp_path, *args).start()
                restored.append(server_line(tmp_path, "edge:"))
        assert server.stop() == 0, server.output
        # After a clean stop the counters and the minutes written are kept too: the next start
        # makes a rate of the first sample and refuses a late one.
        server = serve(tmp_path, *args).start()
        write_step(server, STEPS + 1, t0)
        late = step_lines(STEPS, t0)[0]  # minute 3's last cpu sample again
        url = "http://127.0.0.1:%d" % server.http_port
        with influxdb_client.InfluxDBClient(url=url, token="any", org="fleet") as client:
            with pytest.raises(ApiException) as refused:  # said, not acknowledged and dropped
                client.write_api(write_options=SYNCHRONOUS).write(bucket="vms", record=late,
                                                                   write_precision="s")
        assert refused.value.status == 400 and "line 1: late" in refused.value.body
        metrics = server.metrics()
        assert metrics.get('vmstats_edge_events_total{event="primed"}', 0) == 0
        assert metrics.get('vmstats_edge_events_total{event="late"}', 0) == 1
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    data = tmp_path / "data"
    rows = raw_rows(data)
    twice = sum(1 for count in rows.values() if count > 1)
    lost = wrong = 0
    for i in range(VMS):
        got = logged(data, "tg-%02d" % i)
        by_ts = {int(row["ts"]): row for row in got.to_dict("records")}
        for minute in (1, 2, 3):
            row = by_ts.get(t0 + 60 * minute)
            if row is None:
                lost += 1
                continue
            want = expected(i, minute)
            wrong += {key: row[key] for key in want} != want
    print("RELIABILITY edge_sigkill: %d SIGKILLs (%d after waiting for a flush to checkpoint "
          "and retire), %d VMs x 3 minutes acknowledged, %d rows, %d lost, %d with other values, "
          "%d duplicated; restarts: %s" % (kills, flushed_kills, VMS, sum(rows.values()), lost,
                                           wrong, twice, " | ".join(restored)))
    assert lost == 0 and wrong == 0 and twice == 0
    assert len(rows) == VMS * 4
    for i in range(VMS):  # minute 4: one step, its rate from minute 3's last counter value
        row = logged(data, "tg-%02d" % i).iloc[-1]
        assert (row["ts"], row["net_rx"]) == (t0 + 240, 100.0 * (i + 1))
    # The restarts did rebuild open minutes, from payloads and from checkpoints alike.
    assert all(" open minute restored" in line or " open minutes restored" in line for line in restored), \
        restored


def server_line(workdir, marker: str) -> str:
    """The last line of the server's output holding ``marker`` ('' if none)."""
    text = (workdir / "server-output.txt").read_text(errors="replace")
    found = [line for line in text.splitlines() if marker in line]
    return found[-1].split(marker, 1)[1].strip() if found else ""


# -- the same on a simulated reactor: clock completions, forged lines, the journal's size -------
def make_edge(directory, clock: Clock, journal: Journal) -> Edge:
    class Filed:
        def __init__(self):
            self.payloads: list = []

        def submit(self, payload, done=None, timed=True):
            assert not timed  # its samples were judged for their time when they came
            self.payloads.append(payload)
            if done is not None:
                done(1, 0, 0)

    edge = Edge(Filed(), Metrics(), MinuteAssembler(grace=30.0), lambda: clock.seconds())
    edge.influx = edge.decoders["influx"] = InfluxDecoder()
    edge.journal = EdgeJournal(journal, edge, directory)
    return edge


def edge_on_a_clock(tmp_path, fsync: str) -> tuple[str, Clock, Journal, Edge]:
    directory = str(tmp_path / "j")
    clock = Clock()
    clock.advance(1_800_000_000)
    journal = Journal(clock, directory, Metrics(), fsync=fsync)
    journal.open()
    return directory, clock, journal, make_edge(directory, clock, journal)


def test_a_replay_repeats_clock_completions_and_ignores_forged_lines(tmp_path):
    directory, clock, journal, edge = edge_on_a_clock(tmp_path, "off")
    decoder = edge.influx
    t0 = 1_800_000_000 - 600
    edge.feed(decoder, "\n".join(step_lines(1, t0) + step_lines(2, t0)).encode(), divisor=1)
    clock.advance(31)
    edge.tick()  # the clock completes minute 1 (no sample for 30 s): journaled as `done`
    assert edge.ingest.payloads and edge.assembler.open_count == 0
    # A late sample for minute 1 (refused as late) and minute 2's first step, then a forged line
    # inside a native payload, then a crash (nothing closed, nothing checkpointed).
    edge.feed(decoder, "\n".join(step_lines(3, t0) + step_lines(7, t0)).encode(), divisor=1)
    forged = PREFIX + b"0" * 32 + b" done []"
    journal.append(b"vmstats,vm=10.0.0.1 cpu=1,mem=2 1\n" + forged + b"\n")
    clock.advance(0)
    before = (json.dumps(edge.assembler.state(), sort_keys=True), edge.assembler.events["late"])
    journal.close()

    again = Journal(Clock(), directory, Metrics(), fsync="off")
    leftover = again.open()
    edge2 = make_edge(directory, clock, again)
    records = edge2.journal.restore(leftover)
    assert json.dumps(edge2.assembler.state(), sort_keys=True) == before[0]
    assert before[1] > 0 and edge2.journal.forged == 1
    # Minute 1, completed by the clock, comes back byte for byte (the writer skips it if it
    # was logged; it may not have been filed yet when the server died).
    assert records == edge.ingest.payloads[0]
    # The checkpoint before retiring: the segments go, the state stays, the journal is small.
    again.before_retire.append(edge2.journal.checkpoint)
    again.seal()
    assert again.retire(again.number - 1) == 1
    third = Journal(Clock(), directory, Metrics(), fsync="off")
    edge3 = make_edge(directory, clock, third)
    leftover = third.open()
    kinds = [kind for _n, path in leftover
             for kind, _rest in edge3.journal.lines(open(path, "rb").read())]
    assert kinds == [b"state"]  # the payloads went with their segment: one checkpoint is left
    edge3.journal.restore(leftover)
    assert json.dumps(edge3.assembler.state(), sort_keys=True) == before[0]
    edge3.assembler.complete_all()
    assert len(edge3.assembler.take()) == VMS  # minute 2 of each VM


def test_the_start_reads_and_checks_each_segment_once_and_settles_the_edge_before_retiring(
        tmp_path, monkeypatch):
    """The edge read every leftover segment and checked its units, and the replay did both
    again (3 of every 4 ms of a 64 MiB segment's reading and checking were spent twice).  The
    edge now takes its lines from the replay's one pass, and has its minutes back before the
    replay retires a segment: the checkpoint written then holds them."""
    directory, clock, journal, edge = edge_on_a_clock(tmp_path, "off")
    t0 = 1_800_000_000 - 600
    edge.feed(edge.influx, "\n".join(step_lines(1, t0)).encode(), divisor=1)
    clock.advance(0)
    journal.seal()
    edge.feed(edge.influx, "\n".join(step_lines(2, t0)).encode(), divisor=1)
    native = Record(vm="10.33.0.1", ts=t0, cpu=1.0, mem=2.0)
    journal.append_records(line(native) + b"\n")
    clock.advance(0)
    state = json.dumps(edge.assembler.state(), sort_keys=True)
    journal.close()
    assert len(list_segments(directory)) == 2
    checked = []

    def counted(data):
        checked.append(len(data))
        return check_units(data)

    monkeypatch.setattr(replay_module, "check_units", counted)
    monkeypatch.setattr(journal_module, "check_units", counted)
    again = Journal(Clock(), directory, Metrics(), fsync="off")
    leftover = again.open()
    edge2 = make_edge(directory, clock, again)
    again.before_retire.append(edge2.journal.checkpoint)
    sizes = [os.path.getsize(path) for _n, path in leftover]
    data = str(tmp_path / "data")
    assert replay(again, data, Buffer(Metrics(), 10, 10), Metrics(), readers=[edge2.journal]) == 1
    assert checked == sizes and json.dumps(edge2.assembler.state(), sort_keys=True) == state
    assert [(native.vm, native.ts)] == list(raw_rows(data))
    again.close()
    [(_n, path)] = list_segments(directory)  # the two replayed retired, the checkpoint's left
    edge3 = make_edge(directory, clock, Journal(Clock(), directory, Metrics(), fsync="off"))
    edge3.journal.restore([(_n, path)])
    assert json.dumps(edge3.assembler.state(), sort_keys=True) == state


def test_a_past_limit_shorter_than_a_minute_and_its_grace_still_files_the_edges_minutes(
        tmp_path):
    """--max-past applies to the samples, when they come: the minute they make is filed a minute
    and a grace later (or at a restart long after), and must not be refused then as too old."""
    clock = Clock()
    clock.advance(1_800_000_000)
    metrics = Metrics()
    ingest = Ingest(Buffer(metrics, 10 ** 6, 10 ** 6), metrics, max_future=300, max_past=5,
                    clock=clock.seconds)
    edge = Edge(ingest, metrics, MinuteAssembler(grace=30.0, max_past=5), clock.seconds)
    edge.influx = edge.decoders["influx"] = InfluxDecoder()
    t0 = 1_800_000_000 - 60
    edge.feed(edge.influx, "\n".join(step_lines(6, t0)).encode(), divisor=1)  # stamped now
    stale = b"\n".join(b"vmstats,vm=native-%d cpu=1,mem=2 %d" % (i, clock.seconds() - 6)
                       for i in range(3))
    clock.advance(31)
    edge.tick()  # the clock completes the minute ending now - 31 s
    assert ingest.payload(stale) == (0, 3, 0)  # records of agents are held to the limit still
    ingest.payload(b"\n".join(protocol.encode_records(
        [protocol.Record(vm="restarted", ts=t0, cpu=1.0, mem=2.0)])), timed=False)  # as at a restart
    assert sorted(ingest.buffer.table) == ["restarted"] + ["tg-%02d" % i for i in range(VMS)]
    assert all(list(rows) == [t0 + 60] for vm, rows in ingest.buffer.table.items()
               if vm != "restarted")
    assert {r: n for r, n in metrics.rejects.items() if n} == {protocol.R_PAST: 3}


def test_the_http_answer_waits_for_the_journal_and_a_failing_journal_takes_nothing(
        tmp_path, monkeypatch):
    _directory, clock, _journal, edge = edge_on_a_clock(tmp_path, "batch")
    page = WritePage(edge, edge.influx, 2, None)
    body = "\n".join(step_lines(1, 1_800_000_000 - 600)).encode()

    def post() -> tuple[DummyRequest, bytes]:
        request = DummyRequest([b""])
        request.method = b"POST"
        request.args = {b"bucket": [b"vms"], b"precision": [b"s"]}
        request.content = io.BytesIO(body)
        return request, page.render(request)

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    request, answer = post()
    assert answer == NOT_DONE_YET and not request.finished
    assert edge.assembler.open_count == VMS  # taken, not yet answered
    clock.advance(0)  # the reactor turn's journal write (and, with --fsync batch, its fsync)
    assert request.finished and request.responseCode == 204 and synced

    def refuse(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", refuse)
    request, answer = post()
    clock.advance(0)  # this body's own write fails: taken, but not acknowledged
    assert request.responseCode == 503 and b"retry later" in b"".join(request.written)
    before = json.dumps(edge.assembler.state(), sort_keys=True)
    request, answer = post()  # while writes fail: refused at once, nothing of it taken
    assert request.responseCode == 503 and b"retry later" in answer
    assert json.dumps(edge.assembler.state(), sort_keys=True) == before


def test_binary_and_text_payloads_come_back_byte_for_byte(tmp_path):
    directory, clock, journal, edge = edge_on_a_clock(tmp_path, "off")
    seen = []

    class Recorder(Decoder):
        name = "rec"

        def decode(self, data, now, tally, **options):
            seen.append((data, now, options))
            return [("vm-1", now - 600, "cpu", "", 5.0)]

    edge.decoders["rec"] = recorder = Recorder()
    payloads = [b"\x00\x01 binary\n\xff \x00", b"text line one\ntwo \\ three\n"]
    for payload in payloads:
        edge.feed(recorder, payload)
    edge.feed(recorder, b"with options", divisor=1000, errors=[])
    journal.close()
    first, seen[:] = list(seen), []
    again = Journal(Clock(), directory, Metrics(), fsync="off")
    replayed = make_edge(directory, clock, again)
    replayed.decoders["rec"] = recorder
    replayed.journal.restore(again.open())
    assert [data for data, _now, _options in seen] == payloads + [b"with options"]
    for _data, _now, options in first:  # line boundaries only matter for counting, live
        assert options.pop("lines") == []
    assert seen == first


USED_GRAPHITE = 'vmstats_edge_lines_total{format="graphite",outcome="used"}'


def test_an_emptied_edge_key_neither_stops_the_start_nor_loses_payloads(tmp_path):
    # A key file too short to be a key is replaced, and said.  (Something other than a file in
    # its place stops the start, test_server_paths.py; one unusable later, the run's key is in
    # memory.)
    journal = tmp_path / "data" / "journal"
    journal.mkdir(parents=True)
    key = journal / "edge.key"
    key.write_bytes(b"")
    t0 = (int(time.time()) - 3600) // 60 * 60
    native = line(protocol.Record(vm="10.0.0.9", ts=t0, cpu=1.0, mem=2.0)) + b"\n"
    forged = PREFIX + b"0" * 32 + b" done []\n"
    (journal / "0000000001.journal").write_bytes(forged + native)
    with serve(tmp_path, "--flush-interval", "0.3", "--graphite-port", "0",
               "--graphite-template", "servers.{vm}.cpu.percent cpu",
               "--graphite-template", "servers.{vm}.mem.percent mem") as server:
        assert server.status_json()["journal"]["replayed_records"] == 1
        server.send_udp_to(server.status["graphite_port"], b"".join(
            b"servers.gr-1.cpu.percent 5 %d\nservers.gr-1.mem.percent 6 %d\n" % (t, t)
            for t in range(t0 + 10, t0 + 70, 10)))
        server.wait_metrics(lambda m: m.get(USED_GRAPHITE, 0) == 12)
    assert "Traceback" not in server.output and len(logged(tmp_path / "data", "10.0.0.9")) == 1
    assert len(logged(tmp_path / "data", "gr-1")) == 1
    assert server.output.count("holds no key") == 1  # told once
    # and what it cost: the line made under the lost key. Before, a journal whose every edge
    # line failed its HMAC (a new key, a flipped byte) was passed over in silence.
    assert server.output.count("1 #!edge line without this journal's HMAC ignored") == 1


def test_a_journal_directory_removed_under_the_server_keeps_the_edge_key_and_minutes(tmp_path):
    # Before: the key file went with the directory and was not written again, so the restart
    # after a crash made another key and took every edge line since for forged ("without this
    # journal's HMAC"), and the checkpoint of the samples from before the removal waited 30 s:
    # acknowledged samples of the open minutes were lost.
    t0 = (int(time.time()) - 3600) // 60 * 60
    args = ("--flush-interval", "0.3")
    server = serve(tmp_path, *args).start()
    try:
        for step in (1, 2):
            write_step(server, step, t0)
        time.sleep(1.0)  # flushes: the segment holding them is sealed, a checkpoint written
        shutil.rmtree(str(tmp_path / "data" / "journal"))
        write_step(server, 3, t0)  # the next segment makes the directory again
        time.sleep(1.0)  # flushes: steps 1-2 are now in memory only, until a checkpoint
        for step in (4, 5, 6):
            write_step(server, step, t0)
        server.kill_outright()
        before = (tmp_path / "server-output.txt").read_text()
        server = serve(tmp_path, *args).start()
        for step in range(7, 14):
            write_step(server, step, t0)
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    assert "was gone: made again" in before
    assert "HMAC" not in (tmp_path / "server-output.txt").read_text()
    for i in range(VMS):
        by_ts = {int(row["ts"]): row for row in
                 logged(tmp_path / "data", "tg-%02d" % i).to_dict("records")}
        for minute in (1, 2):
            row = by_ts[t0 + 60 * minute]
            assert {key: row[key] for key in expected(i, minute)} == expected(i, minute), i


DAMAGED = 'vmstats_journal_damaged_total{part="%s"}'


def killed_after_a_checkpoint(workdir, args: tuple, t0: int) -> None:
    """A server at ``workdir`` that checkpointed step 1, took steps 2-3 after it, and was
    SIGKILLed: its journal holds the checkpoint and the payloads after it."""
    server = serve(workdir, *args).start()
    try:
        write_step(server, 1, t0)
        # A flush checkpoints step 1 and retires its segment; the next is due in 30 s.
        server.wait_metrics(lambda m: m["vmstats_journal_segments_retired_total"] >= 1)
        for step in (2, 3):
            write_step(server, step, t0)
        server.kill_outright()
    finally:
        server.kill()


def restarted_for_steps_4_to_6(workdir, args: tuple, t0: int) -> tuple[tuple, str]:
    """The server at ``workdir`` started again, sent steps 4-6 and stopped: the damaged units
    and edge lines it counted at start, and its output."""
    server = serve(workdir, *args).start()
    try:
        counts = (server.metrics()[DAMAGED % "unit"], server.metrics()[DAMAGED % "edge_line"])
        for step in (4, 5, 6):
            write_step(server, step, t0)
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    assert "Traceback" not in server.output, server.output
    return counts, server.output


def test_a_damaged_or_unreadable_edge_checkpoint_is_refused_counted_and_the_rest_replayed(
        tmp_path):
    """A checkpoint (``#!edge ... state``) with a byte changed failed its HMAC and was taken
    for a forged line: it is a damaged write now, refused by its checksum, named and counted.
    One that passes both but is JSON nested past the parser (written with the key by someone
    else) stopped the start with a RecursionError: it is skipped and counted, and the
    checkpoint and payloads before it are still replayed."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    args = ("--flush-interval", "0.3")
    first = tmp_path / "first"
    killed_after_a_checkpoint(first, args, t0)
    shutil.copytree(first / "data", tmp_path / "nested" / "data")
    os.rename(first, tmp_path / "flipped")  # no journal left behind at the first one's path
    # A bit flipped inside the checkpoint: { (0x7b) read as [ (0x5b).
    segments = [path for _n, path in list_segments(str(tmp_path / "flipped" / "data" / "journal"))]
    [holder] = [path for path in segments if b" state {" in open(path, "rb").read()]
    start = changed(holder, b" state {", b" state [")
    # A checkpoint signed with the key, after the payloads of steps 2 and 3.
    journal = tmp_path / "nested" / "data" / "journal"
    key = (journal / KEY_FILE).read_bytes().strip()
    body = b"state " + b"[" * 100_000
    mac = hmac.new(key, body, sha256).hexdigest()[:MAC_DIGITS].encode()
    with open(list_segments(str(journal))[-1][1], "ab") as segment:
        segment.write(frame(PREFIX + mac + b" " + body + b"\n"))
    counts = {}
    for case in ("flipped", "nested"):
        counts[case], output = restarted_for_steps_4_to_6(tmp_path / case, args, t0)
        assert "HMAC" not in output, output
        if case == "flipped":
            assert "journal segment %s: " % holder in output
            assert " at offset %d fail their checksum" % start in output
    assert counts == {"flipped": (1, 0), "nested": (0, 1)}
    for i in range(VMS):
        # Without its checkpoint, minute 1 is what the payloads after it hold: steps 2-6, the
        # counters primed again by step 2.  With it, steps 1-6, as acknowledged.
        for case, steps in (("flipped", range(2, 7)), ("nested", None)):
            [row] = logged(tmp_path / case / "data", "tg-%02d" % i).to_dict("records")
            want = expected(i, 1, steps)
            assert row["ts"] == t0 + 60 and {key: row[key] for key in want} == want, (case, i)



def test_a_checkpoint_written_partly_or_unloadable_is_refused_whole_never_half_applied(tmp_path):
    """A checkpoint the crash cut short is a write cut short: left out, said, and the one before
    it in force with the lines after that.  One whose bytes are whole (its checksum and HMAC
    pass) but which cannot be loaded whole (its counters not the list of five they are, written
    by a bug or with the key by someone else) was applied up to the failing part: its open
    minutes replaced the ones held, the lines before it were dropped and its counters left
    empty, and minute 1 lost steps 1-3.  It is read whole before anything is applied: refused,
    counted, and the checkpoint before it in force with every line after that."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    args = ("--flush-interval", "0.3")
    first = tmp_path / "first"
    killed_after_a_checkpoint(first, args, t0)
    for case in ("torn", "unloadable"):
        shutil.copytree(first / "data", tmp_path / case / "data")
    journal = first / "data" / "journal"
    key = (journal / KEY_FILE).read_bytes().strip()
    [holder] = [path for _n, path in list_segments(str(journal))
                if b" state {" in open(path, "rb").read()]
    text = open(holder, "rb").read()
    at = text.index(b" state {") + len(b" state ")
    state = json.loads(text[at:text.index(b"\n", at)])
    assert state["open"] and state["counters"]  # step 1's minutes and its primed counters

    def signed(checkpoint: dict) -> bytes:
        body = b"state " + json.dumps(checkpoint).encode()
        return PREFIX + hmac.new(key, body, sha256).hexdigest()[:MAC_DIGITS].encode() + b" " \
            + body + b"\n"

    # After the payloads of steps 2 and 3: a checkpoint of other minutes (every sample's
    # minute a copy of the first VM's) whose write the crash cut short ...
    other = dict(state, open=[[vm, end, state["open"][0][2]] for vm, end, _m in state["open"]])
    unit = frame(signed(other))
    last = list_segments(str(tmp_path / "torn" / "data" / "journal"))[-1][1]
    size = os.path.getsize(last)
    with open(last, "ab") as segment:
        segment.write(unit[:len(unit) * 2 // 3])
    # ... and one written whole whose counters cannot be loaded, after its open minutes.
    last = list_segments(str(tmp_path / "unloadable" / "data" / "journal"))[-1][1]
    with open(last, "ab") as segment:
        segment.write(frame(signed(dict(other, counters=[["tg-00", "bytes_recv_total"]]))))
    counts = {}
    for case in ("torn", "unloadable"):
        counts[case], output = restarted_for_steps_4_to_6(tmp_path / case, args, t0)
        said = "ends in a write cut short at offset %d" % size
        assert (said in output) == (case == "torn"), output
    assert counts == {"torn": (0, 0), "unloadable": (0, 1)}
    for case in ("torn", "unloadable"):
        for i in range(VMS):
            [row] = logged(tmp_path / case / "data", "tg-%02d" % i).to_dict("records")
            want = expected(i, 1)
            assert row["ts"] == t0 + 60 and {key: row[key] for key in want} == want, (case, i)
