"""One VM id sent by two machines is found, counted, listed and logged once; an agent restart, a
replayed spool and UDP reordering are not taken for it; every record is logged either way."""

import json
import socket
import time

from serverproc import LOOPBACK, serve

from vmstats import logstore, protocol
from vmstats.protocol import Record
from vmstats.seqturns import WATCH_FOR
from vmstats.server import sharedids, sharedkept
from vmstats.server.buffer import Buffer
from vmstats.server.metrics import Metrics
from vmstats.server.senders import Senders

FOUND = "vmstats_shared_vm_ids_found_total"
LOGGED = "is sent by more than one machine"


def line(vm: str, seq: int, ts: int) -> bytes:
    return protocol.encode_record(Record(vm=vm, ts=ts, cpu=1.5, mem=40.0, seq=seq)).encode()


def logged_seqs(data_dir, vm: str) -> list:
    """(ts, seq) of every row logged for ``vm``, in stamp order."""
    frame, bad = logstore.read_rows(path for _day, path in logstore.day_files(str(data_dir), vm))
    assert bad == 0
    return sorted(zip(frame["ts"], frame["seq"], strict=True))


def udp_from(address: str) -> socket.socket:
    """A sender of its own (its own source address and port), as a second machine is."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    return sock


def test_two_machines_under_one_id_are_found_counted_listed_and_logged_once(tmp_path):
    """A clone with the original's baked id (counters far apart) and a snapshot beside its
    original (counters 3 apart), each two real senders a minute apart, half a minute between."""
    t0 = int(time.time()) - 3600
    pairs = {"clone-1": (7, 5000), "snap-1": (100, 103)}
    sent = {vm: [] for vm in pairs}
    first, second = udp_from(LOOPBACK), udp_from("127.0.0.2")
    with first, second, serve(tmp_path, "--flush-interval", "0.5") as server:
        count = 0

        def minutes(start: int, end: int) -> None:
            nonlocal count
            for i in range(start, end):
                for vm, (a, b) in pairs.items():
                    for sock, seq, ts in ((first, a + i, t0 + 60 * i),
                                          (second, b + i, t0 + 60 * i + 30)):
                        sock.sendto(line(vm, seq, ts), (LOOPBACK, server.udp_port))
                        sent[vm].append((ts, seq))
                        count += 1
                        # Each filed before the next is sent: two parser processes read the
                        # port, and a minute's datagrams sent at once could be filed in either
                        # order, a reordering (its own test below) that is not this test's.
                        server.wait_received(count)

        minutes(0, 8)
        metrics = server.wait_metrics(lambda m: m[FOUND] == 2)
        assert metrics["vmstats_shared_vm_ids"] == 2
        status = server.status_json()
        assert sorted(status["shared_vm_ids"]) == ["clone-1", "snap-1"]
        assert all(entry["now"] and entry["times"] == 1
                   and sorted(entry["senders"]) == ["127.0.0.1", "127.0.0.2"]
                   for entry in status["shared_vm_ids"].values()), status["shared_vm_ids"]
        assert status["shared_vm_ids_found"] == 2
        # The steps between two counters are no loss, not even the first one up, before the
        # step back that begins the watch: the counters here skip nothing.
        assert metrics["vmstats_estimated_lost_records_total"] == 0
        assert status["estimated_lost_records"] == 0
        minutes(8, 12)  # more of the same: counted and logged once all the same
        server.wait_for(lambda s: s.metrics()["vmstats_flushed_records_total"] == count)
        metrics = server.metrics()
        assert metrics[FOUND] == 2
        assert metrics["vmstats_estimated_lost_records_total"] == 0
    assert server.returncode == 0
    for vm in pairs:  # detection only: every record is logged as it came
        assert logged_seqs(tmp_path / "data", vm) == sorted(sent[vm])
        assert server.output.count("VM id %s %s" % (vm, LOGGED)) == 1, server.output
    said_senders(server.output, pairs, ["127.0.0.1", "127.0.0.2"])
    assert "shared VM ids     2" in server.output


def said_senders(output: str, vms, senders: list[str]) -> None:
    """The log line and the stop summary of each of ``vms`` name ``senders``, in any order."""
    for vm in vms:
        said = [text for text in output.splitlines() if "VM id %s %s" % (vm, LOGGED) in text]
        assert len(said) == 1 and sorted(said[0].split("Senders: ")[1].split(". ")[0].split(
            ", ")) == senders, said
        summary = [text.split() for text in output.splitlines() if text.startswith("    " + vm)]
        assert len(summary) == 1 and sorted(" ".join(summary[0][2:]).split(", ")) == senders, \
            summary


def test_over_udp_read_by_the_reactor_the_senders_are_named(tmp_path):
    """The same over UDP with no parser processes (--parsers 0: the reactor reads the port),
    datagrams a burst at a time: /status, the log line and the stop summary name both senders,
    and nothing is counted lost."""
    t0 = int(time.time()) - 3600
    first, second = udp_from("127.0.0.2"), udp_from("127.0.0.3")
    with first, second, serve(tmp_path, "--flush-interval", "0.5", "--parsers", "0") as server:
        for i in range(8):
            for sock, seq, ts in ((first, 7 + i, t0 + 60 * i), (second, 5000 + i, t0 + 60 * i + 30)):
                sock.sendto(line("baked-udp", seq, ts), (LOOPBACK, server.udp_port))
                server.wait_received(2 * i + 1 + (sock is second))
        metrics = server.wait_metrics(lambda m: m[FOUND] == 1)
        entry = server.status_json()["shared_vm_ids"]["baked-udp"]
    assert server.returncode == 0, server.output
    assert sorted(entry["senders"]) == ["127.0.0.2", "127.0.0.3"] and entry["now"], entry
    assert metrics["vmstats_estimated_lost_records_total"] == 0
    said_senders(server.output, ["baked-udp"], ["127.0.0.2", "127.0.0.3"])


def test_an_id_found_is_kept_across_a_restart_for_a_week(tmp_path):
    """Found by one server, which is killed; the next lists it before any record and says so at its
    start, watches it from its first record (the first step between the counters is no loss)
    and finds it again. An id last found eight days ago is not kept; a damaged line costs itself."""
    t0 = int(time.time()) - 3600
    first, second = udp_from(LOOPBACK), udp_from("127.0.0.2")

    def minutes(server, start: int, end: int) -> None:
        for i in range(start, end):  # the lower counter first: its next record is a step back
            for sock, seq, ts in ((first, 7 + i, t0 + 60 * i), (second, 5000 + i, t0 + 60 * i + 30)):
                sock.sendto(line("clone-1", seq, ts), (LOOPBACK, server.udp_port))
            server.wait_received(2 * (i - start + 1))

    kept = tmp_path / "data" / "journal" / sharedkept.FILE
    with first, second:
        with serve(tmp_path, "--flush-interval", "0.5", "--parsers", "0") as server:
            minutes(server, 0, 5)
            server.wait_metrics(lambda m: m[FOUND] == 1)
            found = server.status_json()["shared_vm_ids"]["clone-1"]
            # Killed, not stopped: the finding is saved when made, not only at the stop.
            server.wait_for(lambda _s: kept.exists())
            server.kill_outright()
        saved = kept.read_text().splitlines()
        assert [json.loads(text)["vm"] for text in saved] == ["clone-1"]
        gone = dict(json.loads(saved[0]), vm="gone-1", first=time.time() - 9 * 86400,
                    last=time.time() - 8 * 86400)
        kept.write_text("\n".join([saved[0], json.dumps(gone), "{damaged"]) + "\n")
        with serve(tmp_path, "--flush-interval", "0.5", "--parsers", "0") as server:
            listed = server.status_json()["shared_vm_ids"]
            assert listed == {"clone-1": dict(found, now=False, before_start=True)}
            minutes(server, 5, 10)
            metrics = server.wait_metrics(lambda m: m[FOUND] == 1)
            entry = server.status_json()["shared_vm_ids"]["clone-1"]
    assert metrics["vmstats_estimated_lost_records_total"] == 0
    assert entry["times"] == 2 and entry["now"] and not entry["before_start"]
    assert entry["first"] == found["first"]
    said = [text for text in server.output.splitlines() if "before this start" in text]
    assert len(said) == 1 and ": clone-1; listed on /status" in said[0], said
    assert "%s: 1 damaged line skipped" % kept in server.output
    assert "shared VM ids     1 found (" in server.output
    assert [json.loads(text)["vm"] for text in kept.read_text().splitlines()] == ["clone-1"]


def synced(sock: socket.socket, payload: bytes) -> str:
    """``payload`` and ``#!sync``, on a connection kept open; the reply's first word."""
    sock.sendall(payload + b"\n#!sync t\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(4096)
        assert chunk, "server closed the connection"
        reply += chunk
    return reply.split()[0].decode()


def test_over_tcp_the_shared_ids_senders_are_named(tmp_path):
    """Two machines (two source addresses) under one id over TCP: /status and the log name both."""
    t0 = int(time.time()) - 3600
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        first = socket.create_connection((LOOPBACK, server.tcp_port), source_address=("127.0.0.2", 0))
        second = socket.create_connection((LOOPBACK, server.tcp_port),
                                          source_address=("127.0.0.3", 0))
        with first, second:
            for i in range(8):
                assert synced(first, line("baked-id", 40 + i, t0 + 60 * i)) == "#!ack"
                assert synced(second, line("baked-id", 9000 + i, t0 + 60 * i + 20)) == "#!ack"
        entry = server.status_json()["shared_vm_ids"]["baked-id"]
        server.wait_for(lambda s: s.metrics()["vmstats_flushed_records_total"] == 16)
    assert sorted(entry["senders"]) == ["127.0.0.2", "127.0.0.3"] and entry["now"]
    said = [text for text in server.output.splitlines() if LOGGED in text]
    assert len(said) == 1 and "Senders: 127.0.0.2, 127.0.0.3" in said[0], said
    assert [seq for _ts, seq in logged_seqs(tmp_path / "data", "baked-id")] == [
        seq for i in range(8) for seq in (40 + i, 9000 + i)]


def test_a_restart_a_replayed_spool_and_reordering_are_no_second_machine(tmp_path):
    """Each non-case under an id of its own, in one server: none is listed, none counted."""
    t0 = int(time.time()) - 7200
    restart = [(seq, t0 + 60 * seq) for seq in range(10)]  # then a new process from 0
    restart += [(seq, t0 + 900 + 60 * seq) for seq in range(10)]
    restart += [(seq, t0 + 1800 + 60 * seq) for seq in range(1, 10)]  # again, its 0 lost
    # Reordered datagrams: the late one of a pair comes after the next, seven times.
    order = [0, 1, 3, 2, 4, 6, 5, 7, 9, 8, 10, 12, 11, 13, 15, 14, 16, 18, 17, 19, 21, 20, 22]
    reordered = [(seq, t0 + 60 * seq) for seq in order]
    # A TCP agent's batch filed but not acknowledged, sent again four times, then its restart
    # (the spool delivered first: records before the process's own, with older stamps).
    batch = [(seq, t0 + 60 * seq) for seq in range(10, 30)]
    spool = [(seq, t0 + 60 * seq) for seq in range(10)] + batch * 5
    spool += [(seq, t0 + 60 * seq) for seq in range(30, 40)]
    spool += [(seq, t0 + 3000 + 60 * seq) for seq in range(10)]
    # No parser processes: the reactor reads the datagrams, in the order sent (the reordering
    # here is the one made above).
    with serve(tmp_path, "--flush-interval", "0.5", "--parsers", "0") as server:
        for vm, records in (("restarted", restart), ("reordered", reordered)):
            server.send_udp(*(line(vm, seq, ts) for seq, ts in records))
        server.wait_received(len(restart) + len(reordered))
        for start in range(0, len(spool), 10):
            reply = server.send_synced(b"\n".join(line("spooled", seq, ts)
                                                   for seq, ts in spool[start:start + 10]) + b"\n")
            assert reply[0] == "#!ack", reply
        distinct = len(restart) + len(reordered) + len(set(spool))
        server.wait_for(lambda s: s.metrics()["vmstats_flushed_records_total"] == distinct)
        metrics = server.metrics()
        status = server.status_json()
    assert metrics[FOUND] == 0 and metrics["vmstats_shared_vm_ids"] == 0
    assert status["shared_vm_ids"] == {}
    # Reordering's holes count as before (a late record comes after its gap was counted), the
    # restarts and resends nothing.
    assert metrics["vmstats_estimated_lost_records_total"] == 7
    assert LOGGED not in server.output
    assert logged_seqs(tmp_path / "data", "restarted") == sorted(
        {(ts, seq) for seq, ts in restart})
    assert logged_seqs(tmp_path / "data", "reordered") == sorted((ts, seq) for seq, ts in reordered)
    assert logged_seqs(tmp_path / "data", "spooled") == sorted({(ts, seq) for seq, ts in spool})


def test_what_is_kept_is_bounded_and_a_vm_left_unwatched_counts_as_before():
    """More shared ids than /status lists, more stepping-back VMs than are watched: the listing
    keeps the latest MAX_LISTED, and a VM past MAX_WATCHED is filed and counted as it was."""
    clock = [0.0]
    metrics = Metrics()
    buffer = Buffer(metrics, 10 ** 9, 10 ** 9, clock=lambda: clock[0])
    t0 = 1_800_000_000
    for n in range(sharedids.MAX_LISTED + 5):
        for i in range(8):
            clock[0] += 1.0
            buffer.put("clone-%d" % n, t0 + 60 * i, b"row", 7 + i)
            buffer.put("clone-%d" % n, t0 + 60 * i + 30, b"row", 5000 + i)
    assert metrics.shared_ids == sharedids.MAX_LISTED + 5
    listed = buffer.shared.listing(time.time())
    assert len(listed) == sharedids.MAX_LISTED and "clone-%d" % (sharedids.MAX_LISTED + 4) in listed
    assert "clone-0" not in listed
    for n in range(sharedids.MAX_WATCHED):  # fill the watch with restarts whose 0 was lost
        buffer.put("restarted-%d" % n, t0, b"row", 9)
        buffer.put("restarted-%d" % n, t0 + 60, b"row", 1)
    assert len(buffer.shared.watched) == sharedids.MAX_WATCHED
    lost = metrics.seq_lost
    for seq, ts in ((0, t0), (1, t0 + 60), (4, t0 + 240), (3, t0 + 180), (0, t0 + 300)):
        buffer.put("late", ts, b"row", seq)
    assert "late" not in buffer.shared.watched and buffer.last_seq["late"] == 0
    assert metrics.seq_lost == lost + 2  # 2 and 3 skipped, 3 came late: as before the watch


def test_a_jump_up_is_counted_at_the_next_record_as_what_the_counter_below_skipped():
    """The step up from one counter to a second one is no loss, whichever sends first; the lower
    counter's own gap right after it is; a record late into a jump's hole (stamped before the one
    that jumped) leaves the jump counted whole, as before; a jump is counted at the next record."""
    t0 = 1_800_000_000
    cases = {  # (seq, stamp) in the order received, and the records lost
        "lower first, one skipped": ([(7, t0), (5000, t0 + 30), (9, t0 + 120), (5001, t0 + 90),
                                      (10, t0 + 180)], 1),
        "higher first": ([(5000, t0 + 30), (7, t0 + 60), (5001, t0 + 90), (8, t0 + 120)], 0),
        "late into the hole": ([(1, t0), (4, t0 + 180), (3, t0 + 120), (5, t0 + 240)], 2),
        "a jump, then on": ([(1, t0), (9, t0 + 60), (10, t0 + 120)], 7),
    }
    for name, (records, lost) in cases.items():
        metrics = Metrics()
        buffer = Buffer(metrics, 10 ** 9, 10 ** 9, clock=lambda: 0.0)
        for seq, ts in records[:-1]:
            buffer.put(name, ts, b"row", seq)
        before_last = metrics.seq_lost
        seq, ts = records[-1]
        buffer.put(name, ts, b"row", seq)
        assert metrics.seq_lost == lost, name
        if name == "a jump, then on":
            assert before_last == 0  # the jump waited for the next record


def test_a_records_sender_is_the_address_of_the_datagram_that_held_it():
    """Senders.of, as the careful path of the seq asks it: by the VM id as a whole tag and the
    seq as a whole field, in the datagram that held them; unnamed when two senders' datagrams
    hold the same record, or none does."""
    datagrams = [line("web-1", 12, 1_800_000_000), line("web-12", 1, 1_800_000_000),
                 line("web-1", 1, 1_800_000_060) + b"\n" + line("db-1", 7, 1_800_000_060),
                 line("web-1", 12, 1_800_000_000)]
    payload = b"\n".join(datagrams)
    addresses = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]
    senders = Senders(payload, list(map(len, datagrams)), addresses)
    assert senders.of("web-1", 1) == "192.0.2.3"  # not web-12's seq 1, nor web-1's seq 12
    assert senders.of("web-12", 1) == "192.0.2.2"
    assert senders.of("db-1", 7) == "192.0.2.3"  # the second line of a datagram
    assert senders.of("web-1", 12) == ""  # two senders' datagrams hold it
    assert senders.of("web-1", 2) == senders.of("other", 1) == ""
    one = Senders(payload, list(map(len, datagrams)), ["192.0.2.9"] * 4)
    assert one.of("other", 5) == "192.0.2.9"  # every datagram from one sender


def test_the_senders_are_read_only_while_a_vm_is_watched_over_udp():
    """The buffer asks the UDP readers for the senders' addresses when a VM whose records come
    with none (UDP) begins to be watched, and stops asking when its watch is let go; a VM
    watched over TCP (its peer known) asks nothing."""
    clock = [1000.0]
    buffer = Buffer(Metrics(), 10 ** 6, 10 ** 6, clock=lambda: clock[0])
    told: list[bool] = []
    buffer.on_senders = told.append
    for seq, source in ((5, "192.0.2.1"), (6, "192.0.2.1"), (5, "192.0.2.1")):
        buffer.sequence("over-tcp", seq, 1_800_000_000 + seq, source)
    assert told == [] and "over-tcp" in buffer.shared.watched
    for seq in (5, 6, 5):
        buffer.sequence("over-udp", seq, 1_800_000_000 + seq)
    assert told == [True]
    clock[0] += WATCH_FOR + 1
    buffer.sequence("over-udp", 7, 1_800_000_007)  # its watch let go
    assert told == [True, False] and "over-udp" not in buffer.shared.watched
