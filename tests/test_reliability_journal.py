"""The journal: an acknowledged record survives SIGKILL, replay adds no duplicate rows."""

import os
import shutil
import socket
from collections import Counter

import pytest
from serverproc import ServerError, ServerProcess, serve
from test_server_lifecycle import fifo_in_the_way, run_cli
from test_server_tcp import read_reply
from test_server_udp import line, now
from twisted.internet.task import Clock

from vmstats import logstore
from vmstats.protocol import Record
from vmstats.server import replay as replay_module
from vmstats.server.journal import Journal, check_units, frame, list_segments, unit_chunks
from vmstats.server.metrics import Metrics
from vmstats.server.writer import write_share


def raw_rows(data_dir) -> Counter:
    """``Counter((vm, ts))`` of every row physically in the logs (no last-row-wins folding)."""
    rows: Counter = Counter()
    for vm in logstore.iter_vms(str(data_dir)):
        for _day, path in logstore.day_files(str(data_dir), vm):
            with open(path, "rb") as handle:
                lines = handle.read().split(b"\n")
            assert lines[0] + b"\n" == logstore.HEADER
            for row in lines[1:]:
                if row.count(b",") in logstore.ROW_COMMAS:  # not a torn piece
                    rows[(vm, int(row.split(b",", 1)[0]))] += 1
    return rows


def send_acked(port: int, batch: list, token: str) -> bytes:
    """Send one batch and its sync over a fresh connection; the server's reply line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\n".join(line(r) for r in batch) + b"\n#!sync %s\n" % token.encode())
        return read_reply(sock)


def batch_of(vm_prefix: str, count: int, start: int) -> list:
    return [Record(vm="%s.%d" % (vm_prefix, i % 7), ts=start + 60 * (i // 7), cpu=1.0 + i % 50,
                   mem=30.5, seq=i) for i in range(count)]


def journal_files(data_dir) -> list:
    return list_segments(os.path.join(str(data_dir), "journal"))


def test_an_acked_batch_survives_sigkill_and_is_replayed_before_listening(tmp_path):
    sent = batch_of("10.20.0", 700, now() - 7200)
    server = serve(tmp_path, "--flush-interval", "1h").start()
    try:
        assert send_acked(server.tcp_port, sent, "k1") == b"#!ack k1 700 0\n"
        server.kill_outright()  # right after the ack: nothing was flushed
    finally:
        server.kill()
    assert raw_rows(tmp_path / "data") == Counter()
    assert journal_files(tmp_path / "data")  # the records are only in the journal
    with serve(tmp_path, "--flush-interval", "1h") as again:
        # Replayed before the status file appeared, i.e. before listening.
        assert raw_rows(tmp_path / "data") == Counter((r.vm, r.ts) for r in sent)
        status = again.status_json()
        assert status["journal"]["replayed_records"] == 700
    assert again.returncode == 0
    assert journal_files(tmp_path / "data") == []


def test_a_second_server_on_a_data_dir_or_journal_in_use_is_refused_and_nothing_acked_is_lost(
        tmp_path):
    # Before: the second server took the first one's open segment for a crash's leftover,
    # replayed and deleted it; the first then acknowledged into the deleted file, and after its
    # SIGKILL those records were nowhere (10 of 20 lost).
    data = tmp_path / "data"
    first = batch_of("10.23.0", 70, now() - 7200)
    second = batch_of("10.23.1", 70, now() - 7200)
    server = serve(tmp_path / "a", "--flush-interval", "1h", data_dir=data).start()
    try:
        assert send_acked(server.tcp_port, first, "a") == b"#!ack a 70 0\n"
        for name, args, other in (("data", [], data),
                                  ("journal", ["--journal-dir", str(data / "journal")],
                                   tmp_path / "other")):
            intruder = serve(tmp_path / name, "--flush-interval", "1h", *args, data_dir=other)
            try:
                with pytest.raises(ServerError):
                    intruder.start()
            finally:
                intruder.kill()
            assert intruder.returncode == 1
            lines = intruder.output.strip().splitlines()
            assert len(lines) == 1 and "listening" not in intruder.output, intruder.output
            assert ("another vmstats serve (pid %d) is using it" % server.pid) in lines[0]
            assert ("--%s-dir" % name) in lines[0]
        assert send_acked(server.tcp_port, second, "b") == b"#!ack b 70 0\n"
        server.kill_outright()
    finally:
        server.kill()
    with serve(tmp_path / "c", "--flush-interval", "1h", data_dir=data) as again:
        assert again.status_json()["journal"]["replayed_records"] == 140
    assert raw_rows(data) == Counter((r.vm, r.ts) for r in first + second)


def acked_then_killed(workdir, data, sent: list) -> list:
    """``sent`` acknowledged by a server on ``data``, then SIGKILL before any flush: the
    records are in its journal only."""
    server = serve(workdir, "--flush-interval", "1h", data_dir=data).start()
    try:
        assert send_acked(server.tcp_port, sent, "a") == b"#!ack a %d 0\n" % len(sent)
        server.kill_outright()
    finally:
        server.kill()
    return sent


def test_segments_left_in_another_journal_dir_are_named_at_every_start_until_replayed(tmp_path):
    # Before: a restart after a crash with another --journal-dir said nothing of the acknowledged
    # records left in the old one, which no later run wrote unless it used that folder again.
    data = tmp_path / "data"
    sent = acked_then_killed(tmp_path / "a", data, batch_of("10.24.0", 70, now() - 7200))
    left = "%s holds 1 journal segment that this run" % (data / "journal")
    for name, args in (("b", ["--journal-dir", str(tmp_path / "elsewhere")]),
                       ("c", ["--no-journal"])):  # named again: the data dir remembers
        with serve(tmp_path / name, "--flush-interval", "1h", *args, data_dir=data):
            pass
        assert left in serve_output(tmp_path / name), name
        assert raw_rows(data) == Counter()
    with serve(tmp_path / "d", "--flush-interval", "1h", data_dir=data) as again:
        assert again.status_json()["journal"]["replayed_records"] == 70
    assert raw_rows(data) == Counter((r.vm, r.ts) for r in sent)
    with serve(tmp_path / "e", "--flush-interval", "1h", "--journal-dir", str(tmp_path / "elsewhere"),
               data_dir=data):
        pass
    assert "does not replay" not in serve_output(tmp_path / "e")


class WithoutOverride(ServerProcess):
    """A server run as root without CAP_DAC_OVERRIDE (setpriv): file modes bind it, as they
    bind a server run as another user than the one that wrote the files."""

    def command(self) -> list:
        return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] + super().command()


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0,
                    reason="needs root and setpriv to run a server that file modes bind")
def test_a_segment_that_cannot_be_read_stays_for_the_next_start(tmp_path):
    # Before: replay logged the unreadable segment and kept it, and the first flush that
    # wrote everything it took deleted it with the rest: 70 acknowledged records gone.
    data = tmp_path / "data"
    sent = acked_then_killed(tmp_path / "a", data, batch_of("10.25.0", 70, now() - 7200))
    (segment,) = journal_files(data)
    os.chmod(segment[1], 0)  # written by root, say, before the service ran as another user
    later = Record(vm="10.25.1.1", ts=now() - 60, cpu=1.0, mem=2.0)
    with WithoutOverride(tmp_path / "b", "--flush-interval", "0.3", data_dir=data) as bound:
        assert send_acked(bound.tcp_port, [later], "b") == b"#!ack b 1 0\n"
        bound.wait_for(lambda s: s.metrics()["vmstats_flushed_records_total"] >= 1
                       and s.metrics()["vmstats_journal_segments"] <= 1, timeout=15)
    assert "cannot read journal segment" in bound.output
    assert os.path.exists(segment[1])  # kept, whatever the flushes retired
    os.chmod(segment[1], 0o600)
    with serve(tmp_path / "c", "--flush-interval", "1h", data_dir=data) as again:
        assert again.status_json()["journal"]["replayed_records"] == 70
    assert raw_rows(data) == Counter((r.vm, r.ts) for r in sent + [later])


def serve_output(workdir) -> str:
    """What the server run in ``workdir`` printed (ServerProcess keeps it there)."""
    return (workdir / "server-output.txt").read_text()


def test_replaying_segments_already_logged_adds_no_rows_however_often(tmp_path):
    """A crash between a flush and the deletion of its segments, several times over."""
    data = tmp_path / "data"
    first = batch_of("10.21.0", 350, now() - 3 * 86400)  # spans several day files
    second = batch_of("10.21.1", 350, now() - 3600)
    with serve(tmp_path, "--flush-interval", "1h") as server:
        assert send_acked(server.tcp_port, first, "a").startswith(b"#!ack a 350")
        assert send_acked(server.tcp_port, second, "b").startswith(b"#!ack b 350")
        server.wait_for(lambda s: s.status_json()["journal"]["bytes"] > 0)
        copy = tmp_path / "saved-journal"
        # The open segment holds both batches (one write per reactor turn, each already done).
        shutil.copytree(data / "journal", copy)
    assert server.returncode == 0  # SIGTERM: flushed, then the segments were retired
    expected = Counter((r.vm, r.ts) for r in first + second)
    assert raw_rows(data) == expected and journal_files(data) == []
    for attempt in range(3):
        for name in os.listdir(copy):
            shutil.copy(copy / name, data / "journal" / name)
        with serve(tmp_path / ("run%d" % attempt), "--flush-interval", "1h",
                   data_dir=data) as again:
            assert again.status_json()["journal"]["replayed_records"] == 700
        assert raw_rows(data) == expected  # every (vm, ts) exactly once
        assert journal_files(data) == []


def test_a_torn_journal_tail_is_ignored_and_the_whole_lines_replayed(tmp_path):
    data = tmp_path / "data"
    folder = data / "journal"
    folder.mkdir(parents=True)
    t = now() - 600
    good = b"".join(line(Record(vm="10.22.0.1", ts=t + 60 * i, cpu=2.0, mem=3.0)) + b"\n"
                    for i in range(5))
    torn = line(Record(vm="10.22.0.1", ts=t + 600, cpu=2.0, mem=3.0))[:-4]  # no newline
    (folder / "0000000007.journal").write_bytes(good + torn)
    with serve(tmp_path, "--flush-interval", "1h") as server:
        assert server.status_json()["journal"]["replayed_records"] == 5
    assert raw_rows(data) == Counter(("10.22.0.1", t + 60 * i) for i in range(5))


def test_fsync_batch_syncs_before_each_ack_and_no_journal_means_none(tmp_path):
    t = now() - 600
    with serve(tmp_path / "batch", "--flush-interval", "1h", "--fsync", "batch") as server:
        for i in range(3):
            assert send_acked(server.tcp_port, batch_of("10.23.%d" % i, 20, t), "s%d" % i
                              ).startswith(b"#!ack s%d 20 0" % i)
        assert server.metrics()["vmstats_journal_syncs_total"] >= 3
    with serve(tmp_path / "none", "--flush-interval", "1h", "--no-journal") as server:
        assert send_acked(server.tcp_port, batch_of("10.23.9", 20, t), "n") == b"#!ack n 20 0\n"
        assert "vmstats_journal_segments" not in server.metrics()
    assert not (tmp_path / "none" / "data" / "journal").exists()


# -- the Journal on a simulated reactor ----------------------------------------------------------
def make_journal(tmp_path, **kwargs) -> tuple:
    clock = Clock()
    journal = Journal(clock, str(tmp_path / "j"), Metrics(), **kwargs)
    journal.open()
    return clock, journal


def test_one_write_per_reactor_turn_and_replies_wait_for_it(tmp_path, monkeypatch):
    clock, journal = make_journal(tmp_path, fsync="off")
    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(len(data)) or real_write(fd, data))
    order = []
    journal.append(b"a 1")
    journal.when_durable(lambda ok: order.append(("first", ok)), journal.next_write())
    journal.append(b"b 2\n")
    journal.when_durable(lambda ok: order.append(("second", ok)), journal.next_write())
    assert order == [] and writes == []
    clock.advance(0)
    unit = frame(b"a 1\nb 2\n")  # one unit: its header and checksum with the bytes
    assert writes == [len(unit)] and order == [("first", True), ("second", True)]
    journal.when_durable(lambda ok: order.append(("idle", ok)), None)  # nothing queued: at once
    assert order[-1] == ("idle", True)
    journal.close()
    assert open(list_segments(journal.directory)[0][1], "rb").read() == unit


def test_a_failed_write_refuses_its_waiters_and_the_next_write_starts_a_new_segment(
        tmp_path, monkeypatch):
    clock, journal = make_journal(tmp_path, fsync="off")
    journal.append(b"x 1\n")
    clock.advance(0)
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 3:
            return real_write(fd, bytes(data[:3]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    results = []
    journal.append(b"y 2\n")
    spread = journal.next_write()  # a TCP batch whose first records are in the failing write
    journal.when_durable(results.append, journal.next_write())
    clock.advance(0)
    assert results == [False] and journal.failing and journal.metrics.journal_errors == 1
    journal.when_durable(results.append, None)  # a batch of rejects only: nothing to lose
    assert results == [False, True]
    monkeypatch.setattr(os, "write", real_write)
    journal.append(b"z 3\n")
    journal.when_durable(results.append, journal.next_write())
    journal.when_durable(results.append, spread)  # ... and its last ones in the good write
    clock.advance(0)
    assert results == [False, True, True, False] and not journal.failing
    journal.close()
    contents = [open(path, "rb").read() for _n, path in list_segments(journal.directory)]
    first, second = frame(b"x 1\n"), frame(b"y 2\n")
    torn = contents[0][len(first):]  # the torn segment ends there, inside its second unit
    assert contents[0].startswith(first) and 0 < len(torn) < len(second)
    assert second.startswith(torn) and contents[1] == frame(b"z 3\n")
    units = check_units(contents[0])
    assert units.torn == len(frame(b"x 1\n")) and not units.damaged
    assert list(unit_chunks(contents[0], units.good, 100)) == [b"x 1\n"]


def test_chunks_cut_at_line_ends_only():
    data = b"".join(b"line %d\n" % i for i in range(1000)) + b"torn"
    pieces = list(replay_module.chunks(data, size=100))
    assert b"".join(pieces) == data[:-4]
    assert all(piece.endswith(b"\n") and len(piece) <= 100 for piece in pieces)
    assert list(replay_module.chunks(b"x" * 300 + b"\n", size=100)) == [b"x" * 300 + b"\n"]


def test_an_unknown_fsync_policy_is_refused(tmp_path):
    with pytest.raises(ValueError):
        Journal(Clock(), str(tmp_path), Metrics(), fsync="sometimes")


def test_the_writer_appends_only_missing_rows_and_ends_a_torn_line_first(tmp_path):
    data = str(tmp_path)
    t = now() - now() % 86400 - 86400  # a whole past day
    held = {t + 60 * i: logstore.format_tail(Record(vm="10.24.0.1", ts=t + 60 * i, cpu=float(i),
                                                mem=1.0)) for i in range(5)}
    first = {ts: held[ts] for ts in list(held)[:3]}
    assert write_share(data, [("10.24.0.1", first)]) == [("10.24.0.1", 3, None, False)]
    again = {ts: held[ts] for ts in list(held)[:4]}
    assert write_share(data, [("10.24.0.1", again)]) == [("10.24.0.1", 1, None, False)]
    path = logstore.day_path(data, "10.24.0.1", logstore.day_of(t))
    with open(path, "rb+") as handle:  # a writer killed mid-write: the last row is cut short
        handle.truncate(os.path.getsize(path) - 5)
    assert write_share(data, [("10.24.0.1", held)]) == [("10.24.0.1", 2, None, False)]
    frame, bad = logstore.read_rows([path])
    assert bad == 1  # the torn piece, on a line of its own
    assert list(frame["ts"]) == list(held) and list(frame["cpu"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert raw_rows(tmp_path) == Counter(("10.24.0.1", ts) for ts in held)


def test_records_a_missed_drain_deadline_left_behind_are_written_at_the_next_start(tmp_path):
    t = now() - 60
    data = tmp_path / "data"
    fifo = fifo_in_the_way(data, "10.25.0.1", t)  # the writer blocks until the drain deadline
    sent = [Record(vm="10.25.0.1", ts=t, cpu=1.0, mem=2.0),
            Record(vm="10.25.0.2", ts=t, cpu=3.0, mem=4.0)]
    with serve(tmp_path / "a", "--flush-interval", "1h", "--drain-timeout", "1s",
               data_dir=data) as server:
        assert send_acked(server.tcp_port, sent, "d") == b"#!ack d 2 0\n"
    assert server.returncode == 1
    assert "  journal           1 segment kept in" in server.output  # not "1 segments"
    assert "replayed at the next start" in server.output
    fifo.unlink()
    with serve(tmp_path / "b", "--flush-interval", "1h", data_dir=data) as again:
        assert again.status_json()["journal"]["replayed_records"] == 2
    assert raw_rows(data) == Counter((r.vm, r.ts) for r in sent)


def test_an_unusable_journal_directory_is_one_readable_line(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    result = run_cli("--bind", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0", "--no-http",
                     "--data-dir", str(tmp_path / "data"),
                     "--journal-dir", str(tmp_path / "a-file" / "journal"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "journal directory" in result.stderr


def _rejected(metrics: dict) -> dict:
    prefix = 'vmstats_rejected_total{reason="'
    return {key[len(prefix):-2]: value for key, value in metrics.items()
            if key.startswith(prefix) and value}


def test_lines_a_replay_rejects_are_counted_as_live_ones_and_named_per_segment(tmp_path):
    """A segment's lines the parser refuses (damage, or a refused line journaled with the
    accepted ones of its payload) were dropped uncounted: they go into the reject counters the
    live path uses, reason by reason, and each segment that had any is named with its count."""
    data = tmp_path / "data"
    folder = data / "journal"
    folder.mkdir(parents=True)
    t = now() - 600
    good = [line(Record(vm="10.23.0.1", ts=t + 60 * i, cpu=2.0, mem=3.0)) for i in range(4)]
    bad = [b"not a record at all", b"vmstats,vm=10.23.0.1 cpu=oops,mem=3 %d" % t,
           b"vmstats,vm=10.23.0.2 cpu=500,mem=3 %d" % t]
    segments = {3: good[:2] + bad[:1], 4: good[2:] + bad[1:], 5: [good[0]]}
    for number, lines in segments.items():
        (folder / ("%010d.journal" % number)).write_bytes(b"\n".join(lines) + b"\n")
    with serve(tmp_path, "--flush-interval", "1h") as server:
        assert server.status_json()["journal"]["replayed_records"] == 5
        replayed = _rejected(server.metrics())
        assert sum(replayed.values()) == 3
        # The same lines through the live path count the same, reason by reason.
        with server.tcp(timeout=10) as sock:
            sock.sendall(b"\n".join(bad) + b"\n#!sync live\n")
            assert read_reply(sock) == b"#!ack live 0 3\n"
        assert _rejected(server.metrics()) == {reason: 2 * n for reason, n in replayed.items()}
    assert server.returncode == 0, server.output
    named = [text for text in server.output.splitlines() if "of journal segment" in text]
    assert len(named) == 2, server.output
    assert "1 line of journal segment %s rejected" % (folder / "0000000003.journal") in named[0]
    assert "2 lines of journal segment %s rejected" % (folder / "0000000004.journal") in named[1]
    assert raw_rows(data) == Counter(("10.23.0.1", t + 60 * i) for i in range(4))


def test_a_line_refused_live_is_not_counted_again_when_its_payload_is_replayed(tmp_path):
    """A refused line is journaled with the accepted lines of its payload: after a crash, the
    replay parsed it again and counted it a second time, on top of the count when it came."""
    data = tmp_path / "data"
    t = now() - 600
    good = [line(Record(vm="10.24.0.1", ts=t + 60 * i, cpu=2.0, mem=3.0)) for i in range(2)]
    bad = b"vmstats,vm=10.24.0.1 cpu=oops,mem=3 %d" % t
    server = serve(tmp_path, "--flush-interval", "1h").start()
    try:
        with server.tcp(timeout=10) as sock:
            sock.sendall(b"\n".join(good + [bad]) + b"\n#!sync k\n")
            assert read_reply(sock) == b"#!ack k 2 1\n"
        assert _rejected(server.metrics()) == {"non_numeric": 1}
        server.kill_outright()  # before any flush: the payload is replayed
    finally:
        server.kill()
    for _ in range(2):
        with serve(tmp_path, "--flush-interval", "1h") as server:
            assert _rejected(server.metrics()) == {}
        assert "of journal segment" not in server.output
    assert raw_rows(data) == Counter(("10.24.0.1", t + 60 * i) for i in range(2))


def test_lines_a_replay_rejects_count_once_however_often_the_segment_is_replayed(tmp_path):
    """A segment whose rows cannot be written yet (a folder where a day file goes) stays for
    the next start, which replays it again: its damaged lines were counted at every start.
    They count at the first; the segment keeps that they were (a torn tail, which no replay
    reads, is cut off first), until its rows are written and it is retired."""
    data = tmp_path / "data"
    folder = data / "journal"
    folder.mkdir(parents=True)
    t = now() - 600
    good = line(Record(vm="10.25.0.1", ts=t, cpu=2.0, mem=3.0))
    bad = [b"not a record at all", b"vmstats,vm=10.25.0.1 cpu=oops,mem=3 %d" % t]
    segment = folder / "0000000003.journal"
    segment.write_bytes(b"\n".join([good] + bad) + b"\nvmstats,vm=10.25.0.1 cpu=1,me")
    in_the_way = logstore.day_path(str(data), "10.25.0.1", logstore.day_of(t))
    os.makedirs(in_the_way)
    counted = []
    for _ in range(3):
        with serve(tmp_path, "--flush-interval", "1h", "--drain-timeout", "1s") as server:
            assert server.status_json()["journal"]["replayed_records"] == 1
            counted.append(_rejected(server.metrics()))
        assert segment.exists()
    os.rmdir(in_the_way)
    with serve(tmp_path, "--flush-interval", "1h") as server:
        counted.append(_rejected(server.metrics()))
    assert server.returncode == 0, server.output
    assert counted == [{"non_numeric": 1, "syntax": 1}, {}, {}, {}]
    assert not segment.exists()
    assert raw_rows(data) == Counter([("10.25.0.1", t)])


def test_a_line_refused_for_its_time_stays_refused_when_its_payload_is_replayed(tmp_path):
    """A payload is journaled whole, refused lines and all, and the replay parses it with no
    time window (it cannot know when the payload came): a line acked as refused for its time,
    too far ahead of the clock or behind it, was written to the logs after a crash.  The
    journal names the stamps the live path took; the replay refuses the same lines, whatever
    the clock or the limits at the restart (here a window that takes the refused lines and
    refuses the honest one), and counts none of them again."""
    data = tmp_path / "data"
    t = now()
    honest = Record(vm="10.26.0.1", ts=t - 60, cpu=2.0, mem=3.0)
    ahead = Record(vm="10.26.0.1", ts=t + 3 * 86400, cpu=4.0, mem=3.0)
    behind = Record(vm="10.26.0.2", ts=t - 2 * 86400, cpu=5.0, mem=3.0)
    server = serve(tmp_path, "--flush-interval", "1h", "--max-past", "1d").start()
    try:
        with server.tcp(timeout=10) as sock:
            sock.sendall(b"\n".join(map(line, [ahead, honest, behind])) + b"\n#!sync k\n")
            assert read_reply(sock) == b"#!ack k 1 2\n"
        assert _rejected(server.metrics()) == {"future_timestamp": 1, "past_timestamp": 1}
        server.kill_outright()  # before any flush: the payload is replayed
    finally:
        server.kill()
    assert raw_rows(data) == Counter()
    with serve(tmp_path, "--flush-interval", "1h", "--max-future", "7d", "--max-past", "1s") as again:
        assert again.status_json()["journal"]["replayed_records"] == 1
        assert _rejected(again.metrics()) == {}
    assert again.returncode == 0, again.output
    assert "of journal segment" not in again.output
    # Named by the stamps the payload was taken within, not by limits of this run's or a clock.
    window = "outside %d..%d, the stamps its journaled payload was taken within" % (honest.ts, honest.ts)
    for record in (ahead, behind):
        assert "vm %s stamped %d, %s" % (record.vm, record.ts, window) in again.output, again.output
    assert raw_rows(data) == Counter([(honest.vm, honest.ts)])
    assert journal_files(data) == []


def test_a_window_applies_to_its_payload_only_across_chunks():
    """The lines after a window line up to the next control line are its payload, though a
    chunk's end cuts them; the lines before and after it are under no window."""
    from vmstats.server.replay import chunks, windowed
    segment = (b"a 1\n#!window 5 9\nb 2\nc 3\nd 4\n#!rejected future_timestamp=1\ne 5\n"
               b"#!window 7 x\nf 6\n#!rejected past_timestamp=1\n")
    for size in (1, 8, 20, 1 << 20):
        pieces, window = [], None
        for chunk in chunks(segment, size):
            found, window = windowed(chunk, window)
            pieces += found
        assert b"".join(text for text, _bounds in pieces) == segment.replace(
            b"#!window 5 9\n", b"").replace(b"#!window 7 x\n", b"")
        under = b"".join(text for text, bounds in pieces if bounds == (5, 9))
        assert under == b"b 2\nc 3\nd 4\n"
        assert {bounds for _text, bounds in pieces} <= {None, (5, 9)}
        assert window is None


# -- damage inside a segment ---------------------------------------------------------------------
DAMAGED_UNITS = 'vmstats_journal_damaged_total{part="unit"}'


def kill_after(workdir, data, *batches: list) -> str:
    """Each batch acknowledged (one journal write each: the next is sent after the ack), then
    SIGKILL before any flush; returns the one segment left."""
    server = serve(workdir, "--flush-interval", "1h", data_dir=data).start()
    try:
        for number, batch in enumerate(batches):
            with server.tcp(timeout=10) as sock:
                sock.sendall(b"\n".join(map(line, batch)) + b"\n#!sync %d\n" % number)
                assert read_reply(sock).startswith(b"#!ack %d " % number)
        server.kill_outright()
    finally:
        server.kill()
    [(_number, path)] = journal_files(data)
    return path


def changed(path: str, old: bytes, new: bytes) -> int:
    """``old`` in the segment at ``path`` replaced by ``new`` of the same length (the bytes a
    flipped bit or a damaged copy would hold); returns where the unit holding it starts."""
    with open(path, "rb") as handle:
        segment = handle.read()
    at = segment.index(old)
    with open(path, "wb") as handle:
        handle.write(segment[:at] + new + segment[at + len(new):])
    return segment.rfind(b"#!crc32 ", 0, at)


def test_a_byte_changed_inside_a_journaled_line_refuses_its_write_and_replays_the_rest(tmp_path):
    """A byte changed inside a segment (a bit flipped on the disk, a damaged copy) was replayed
    as it was: a record whose VM id or value changed went to the logs as if it had been sent.
    Each write carries a CRC-32 of its bytes; the one that fails it is refused, named with its
    segment and offset, and counted, and the writes after it are replayed."""
    data = tmp_path / "data"
    t = now() - 7200
    first = [Record(vm="10.27.0.1", ts=t + 60 * i, cpu=2.0, mem=3.0) for i in range(3)]
    second = [Record(vm="10.27.0.2", ts=t + 60 * i, cpu=4.0, mem=5.0) for i in range(3)]
    path = kill_after(tmp_path / "a", data, first, second)
    start = changed(path, b"vm=10.27.0.1", b"vm=10.27.0.9")  # one bit: 1 is 0x31, 9 0x39
    assert start == 0
    with serve(tmp_path / "b", "--flush-interval", "1h", data_dir=data) as again:
        assert again.metrics()[DAMAGED_UNITS] == 1
        assert again.status_json()["journal"]["replayed_records"] == 3
        assert _rejected(again.metrics()) == {}
    assert again.returncode == 0, again.output
    named = [text for text in again.output.splitlines() if "fail their checksum" in text]
    assert len(named) == 1 and path in named[0] and " at offset 0 " in named[0], again.output
    assert raw_rows(data) == Counter((r.vm, r.ts) for r in second)
    assert journal_files(data) == []


@pytest.mark.parametrize("digit", [b"9", b"0"], ids=["past_the_end", "short"])
def test_a_damaged_length_refuses_its_write_and_replays_the_writes_after_it(tmp_path, digit):
    """A unit header whose length was changed names other bytes than its write's: past the end
    of the segment it looks like the last write cut short by a crash, which a replay leaves out
    with everything after it; shorter, its checksum covers part of the write.  A header found
    at a line start after the claimed start tells damage from a tear: the unit is refused,
    named and counted, and the replay takes up again at that header."""
    data = tmp_path / "data"
    t = now() - 7200
    batches = [[Record(vm="10.31.0.%d" % n, ts=t + 60 * i, cpu=2.0, mem=3.0) for i in range(30)]
               for n in (1, 2, 3)]
    path = kill_after(tmp_path / "a", data, *batches)
    with open(path, "rb") as handle:
        segment = handle.read()
    start = segment.index(b"#!crc32 ", 1)  # the middle write's header
    length = segment[start + 8:segment.index(b" ", start + 8)]
    assert len(length) == 4 and length[:1] == b"1"  # 9xxx is past the end, 0xxx short of it
    with open(path, "r+b") as handle:
        handle.seek(start + 8)
        handle.write(digit)
    assert (start + 30 + int(digit + length[1:]) > len(segment)) == (digit == b"9")
    with serve(tmp_path / "b", "--flush-interval", "1h", data_dir=data) as again:
        assert again.metrics()[DAMAGED_UNITS] == 1
        assert again.status_json()["journal"]["replayed_records"] == 60
    assert again.returncode == 0, again.output
    named = [text for text in again.output.splitlines() if "fail their checksum" in text]
    assert len(named) == 1 and path in named[0] and " at offset %d " % start in named[0]
    assert "cut short" not in again.output
    assert raw_rows(data) == Counter((r.vm, r.ts) for r in batches[0] + batches[2])
    assert journal_files(data) == []


def test_a_garbled_window_line_refuses_its_write_rather_than_trust_it(tmp_path):
    """A ``#!window`` line one byte off named other stamps, and the replay parsed its payload
    within them: a line refused for its time went to the logs.  The line is in its write's
    checksum like every other, so the write is refused (with its payload's honest record, which
    cannot be told from the others), counted, and the next write replayed."""
    data = tmp_path / "data"
    t = now()
    honest = Record(vm="10.28.0.1", ts=t - 60, cpu=2.0, mem=3.0)
    ahead = Record(vm="10.28.0.1", ts=t + 3 * 86400, cpu=4.0, mem=3.0)
    later = Record(vm="10.28.0.2", ts=t - 60, cpu=5.0, mem=3.0)
    path = kill_after(tmp_path / "a", data, [ahead, honest], [later])
    # The high stamp's first digit from 1 to 9 (one bit): a window to the year 2280.
    changed(path, b"#!window %d %d\n" % (honest.ts, honest.ts),
            b"#!window %d 9%s\n" % (honest.ts, str(honest.ts)[1:].encode()))
    with serve(tmp_path / "b", "--flush-interval", "1h", data_dir=data) as again:
        assert again.metrics()[DAMAGED_UNITS] == 1
        assert again.status_json()["journal"]["replayed_records"] == 1
        assert _rejected(again.metrics()) == {}
    assert again.returncode == 0, again.output
    assert raw_rows(data) == Counter([(later.vm, later.ts)])


def test_segments_of_the_version_before_checksums_replay_beside_checksummed_ones(tmp_path):
    """A segment's name tells its form: ``N.journal`` (written before checksums, replayed as
    it is) or ``N.v2.journal`` (checked unit by unit), so no damage to its bytes can make a
    checked segment pass for an unchecked one.  A damaged unit of a segment kept for the next
    start (a row that cannot be written yet) counts once, like its rejected lines."""
    data = tmp_path / "data"
    folder = data / "journal"
    folder.mkdir(parents=True)
    t = now() - 600
    old = Record(vm="10.29.0.1", ts=t, cpu=1.0, mem=2.0)
    new = Record(vm="10.29.0.2", ts=t, cpu=3.0, mem=4.0)
    (folder / "0000000004.journal").write_bytes(line(old) + b"\nnot a record\n")
    good = frame(line(new) + b"\n")
    bad = frame(line(Record(vm="10.29.0.3", ts=t, cpu=5.0, mem=6.0)) + b"\n")
    bad = bad[:-5] + b"X" + bad[-4:]
    (folder / "0000000005.v2.journal").write_bytes(bad + good + b"#!crc32 99 0000")  # torn tail
    in_the_way = logstore.day_path(str(data), new.vm, logstore.day_of(t))
    os.makedirs(in_the_way)
    counted, outputs = [], []
    for run in range(2):
        with serve(tmp_path / str(run), "--flush-interval", "1h", "--drain-timeout", "1s",
                   data_dir=data) as server:
            assert server.status_json()["journal"]["replayed_records"] == 2 - run
            metrics = server.metrics()
            counted.append((metrics[DAMAGED_UNITS], _rejected(metrics)))
        outputs.append(server.output)
    assert counted == [(1, {"measurement": 1}), (0, {})]
    assert "ends in a write cut short at offset %d" % len(bad + good) in outputs[0]
    os.rmdir(in_the_way)
    extra = Record(vm="10.29.0.4", ts=t, cpu=7.0, mem=8.0)
    with serve(tmp_path / "last", "--flush-interval", "1h", data_dir=data) as server:
        assert server.metrics()[DAMAGED_UNITS] == 0
        assert send_acked(server.tcp_port, [extra], "x") == b"#!ack x 1 0\n"
        # What this version writes is checked, numbered after the segments it found.
        assert [os.path.basename(path) for _n, path in journal_files(data)] == [
            "0000000006.v2.journal"]
    assert server.returncode == 0, server.output
    assert raw_rows(data) == Counter((r.vm, r.ts) for r in (old, new, extra))
