"""Faults that must lose nothing: SIGKILL and SIGTERM under load, a full disk, a dead writer,
an agent whose server is gone.  Each test prints a ``RELIABILITY`` line with its figures."""

import os
import random
import signal
import socket
import threading
import time
from collections import Counter

from serverproc import children, children_running, decoders_of, living, parsers_of, serve
from test_reliability_journal import journal_files, raw_rows, send_acked
from test_server_lifecycle import fifo_in_the_way
from test_server_tcp import read_reply
from test_server_udp import line, now

from vmstats import logstore
from vmstats.client.spool import Spool
from vmstats.client.transport import Backoff, TcpSender
from vmstats.protocol import Record
from vmstats.server.formats.pool import RESTART_DELAY


def report(scenario: str, **figures) -> None:
    """One line per scenario for RELIABILITY.md (``pytest -s`` shows it)."""
    print("RELIABILITY %s: %s" % (scenario, ", ".join("%s=%s" % kv for kv in figures.items())))


class Agent(threading.Thread):
    """The agent's own spool and acknowledged TCP sender, producing one record every ``period``.

    Each produced record is remembered; ``finish`` delivers the backlog.
    """

    def __init__(self, index: int, port: int, spool_dir, period: float, start_ts: int):
        super().__init__(daemon=True)
        self.vm = "10.40.0.%d" % index
        self.spool = Spool(str(spool_dir), 100_000)
        self.sender = TcpSender("127.0.0.1", port, self.spool, timeout=3.0,
                                backoff=Backoff(initial=0.05, maximum=0.3))
        self.period = period
        self.start_ts = start_ts
        self.produced: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            ts = self.start_ts + 60 * i
            self.sender.send([line(Record(vm=self.vm, ts=ts, cpu=float(i % 97), mem=20.5, seq=i))])
            self.produced.append(ts)
            i += 1
            self.stopping.wait(self.period)

    def finish(self, timeout: float) -> bool:
        """Stop producing; deliver everything spooled (True when the spool is empty)."""
        self.stopping.set()
        self.join(10)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sender.flush(force=True):
                return True
            time.sleep(0.05)
        return False


def sending(agents, acked: list[int], timeout: float = 30) -> None:
    """Wait until every agent has had records acknowledged past ``acked`` (its count before):
    each has found the server and is sending to it."""
    deadline = time.monotonic() + timeout
    while any(agent.sender.acked <= before for agent, before in zip(agents, acked, strict=True)):
        assert time.monotonic() < deadline, [agent.sender.acked for agent in agents]
        time.sleep(0.02)


def expected_rows(agents) -> Counter:
    return Counter((agent.vm, ts) for agent in agents for ts in agent.produced)


def halt(agents, server) -> None:
    """Stop the agents' threads and make sure no server is left running."""
    for agent in agents:
        agent.stopping.set()
    server.kill()


def tally(agents, data) -> tuple[Counter, Counter, int]:
    """What the agents produced, what the logs hold, and how many rows were logged twice."""
    logged = raw_rows(data)
    return expected_rows(agents), logged, sum(n - 1 for n in logged.values() if n > 1)


def test_sigkill_at_random_moments_under_tcp_load_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(6)
    data = tmp_path / "data"
    server = serve(tmp_path / "run0", "--flush-interval", "0.5", data_dir=data).start()
    port = server.tcp_port
    agents = [Agent(i, port, tmp_path / ("spool%d" % i), 0.004, now() - 5 * 86400)
              for i in range(4)]
    kills = 4
    received_before_kill = []
    try:
        for agent in agents:
            agent.start()
        for kill in range(kills):
            time.sleep(rng.uniform(0.8, 1.6))
            received_before_kill.append(server.metrics()["vmstats_records_received_total"])
            server.kill_outright()
            time.sleep(rng.uniform(0.0, 0.3))  # the agents find nobody listening
            server = serve(tmp_path / ("run%d" % (kill + 1)), "--flush-interval", "0.5",
                           "--tcp-port", str(port), data_dir=data).start()
        # The last server under the same load: every agent has found it and been acknowledged.
        acked = [agent.sender.acked for agent in agents]
        sending(agents, acked)
        delivered = [agent.finish(timeout=30) for agent in agents]
        final = server.status_json()
        code = server.stop()
    finally:
        halt(agents, server)
    assert all(delivered) and code == 0, server.output
    expected, logged, duplicates = tally(agents, data)
    missing = sum(1 for key in expected if key not in logged)
    report("sigkill", agents=len(agents), kills=kills, produced=sum(expected.values()),
           logged_rows=sum(logged.values()), missing=missing, duplicates=duplicates,
           replayed_in_last_start=final["journal"]["replayed_records"],
           received_before_each_kill="/".join(str(int(n)) for n in received_before_kill))
    assert missing == 0 and duplicates == 0 and set(logged) == set(expected)
    assert journal_files(data) == []  # every segment replayed and retired


def test_sigterm_under_load_drains_in_seconds_and_loses_nothing(tmp_path):
    """A large buffer (long flush interval) and agents still sending when SIGTERM arrives."""
    data = tmp_path / "data"
    start = now() - 86400
    held = 60_000
    server = serve(tmp_path / "a", "--flush-interval", "1h", data_dir=data).start()
    port = server.tcp_port
    try:
        with server.tcp() as sock:  # fill the buffer: 60,000 records from 600 VMs
            for first in range(0, held, 2000):
                sock.sendall(b"".join(line(Record(vm="10.41.%d.%d" % (i // 250 % 4, i % 250),
                                                  ts=start + 60 * (i // 1000), cpu=1.0, mem=2.0))
                                      + b"\n" for i in range(first, first + 2000)))
            sock.sendall(b"#!sync fill\n")
            sock.settimeout(20)
            assert sock.recv(100) == b"#!ack fill %d 0\n" % held
        server.wait_received(held, timeout=30)
        agents = [Agent(i, port, tmp_path / ("spool%d" % i), 0.004, start) for i in range(3)]
        for agent in agents:
            agent.start()
        sending(agents, [0] * len(agents))  # still sending when SIGTERM arrives
        signalled = time.monotonic()
        code = server.stop(signal.SIGTERM)
        drain = time.monotonic() - signalled
        server = serve(tmp_path / "b", "--flush-interval", "0.5", "--tcp-port", str(port),
                       data_dir=data).start()
        delivered = [agent.finish(timeout=30) for agent in agents]
        code_b = server.stop()
    finally:
        server.kill()
    assert code == 0 and code_b == 0 and all(delivered)
    logged = raw_rows(data)
    fill = Counter(("10.41.%d.%d" % (i // 250 % 4, i % 250), start + 60 * (i // 1000))
                   for i in range(held))
    expected = expected_rows(agents) + fill
    duplicates = sum(n - 1 for n in logged.values() if n > 1)
    report("sigterm", buffered_at_signal=held, agents=len(agents),
           produced=sum(expected.values()), drain_seconds="%.2f" % drain,
           logged_rows=sum(logged.values()), duplicates=duplicates,
           missing=sum(1 for key in expected if key not in logged))
    assert code == 0  # drained within its deadline (--drain-timeout, 30 s): no bound on the clock
    assert set(logged) == set(expected) and duplicates == 0


# -- a full disk ---------------------------------------------------------------------------------
def fill_up(folder) -> list:
    """Fill the filesystem of ``folder`` to the last byte; returns the files made."""
    path = os.path.join(folder, "ballast")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"x" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return [path]


def failing_flushes(server, since: dict, count: int) -> None:
    """Wait for ``count`` more flushes after the metrics ``since``, each failing every VM that
    was failing then: the retries a fixed sleep hoped to see, counted instead of timed."""
    vms = since["vmstats_write_failing_vms"]
    assert vms >= 1, since
    server.wait_metrics(lambda m: m["vmstats_flushes_total"] >= since["vmstats_flushes_total"] + count
                        and m["vmstats_write_failures_total"]
                        >= since["vmstats_write_failures_total"] + count * vms, timeout=20)


def test_a_full_disk_keeps_receiving_reports_it_and_writes_everything_once_space_returns(
        tmp_path, small_disk):
    data = small_disk / "data"
    t = now() - 4 * 86400  # every record below is in the past
    with serve(tmp_path, "--flush-interval", "0.3", "--max-buffered", "20000",
               data_dir=data) as server:
        server.send_udp(line(Record(vm="10.42.0.1", ts=t - 60, cpu=1.0, mem=2.0)))
        server.wait_for(lambda s: s.metrics()["vmstats_flushed_records_total"] == 1)
        ballast = fill_up(small_disk)
        # UDP first: it also uses up the slack in the journal file's last page.
        udp = [Record(vm="10.42.2.%d" % (i % 10), ts=t + 60 * i, cpu=5.0, mem=6.0)
               for i in range(3000)]
        for first in range(0, len(udp), 10):
            server.send_udp(b"\n".join(line(r) for r in udp[first:first + 10]))
        server.wait_received(1 + len(udp), timeout=20)
        acked = nak = 0
        sent = []
        with server.tcp() as sock:
            for batch in range(20):  # TCP: refused (busy) while the journal cannot be written
                records = [Record(vm="10.42.1.%d" % (i % 10), ts=t + 60 * (batch * 50 + i),
                                  cpu=3.0, mem=4.0) for i in range(50)]
                sock.sendall(b"\n".join(line(r) for r in records) + b"\n#!sync t%d\n" % batch)
                reply = sock.recv(200)
                acked += reply.startswith(b"#!ack")
                nak += reply.startswith(b"#!nak t%d busy" % batch)
                sent += records
        full = server.wait_metrics(lambda m: m["vmstats_write_failing_vms"] >= 1
                                  and m["vmstats_journal_failing"] == 1, timeout=10)
        received = server.wait_received(1 + len(sent) + len(udp), timeout=20)
        failing_flushes(server, full, 3)
        rss_kib = int(open("/proc/%d/status" % server.pid).read().split("VmRSS:")[1].split()[0])
        for path in ballast:
            os.unlink(path)
        server.wait_for(lambda s: s.metrics()["vmstats_write_failing_vms"] == 0
                        and s.metrics()["vmstats_buffered_records"] == 0, timeout=20)
        with server.tcp() as sock:  # the refused batches, resent, are now acknowledged
            sock.sendall(b"\n".join(line(r) for r in sent) + b"\n#!sync again\n")
            assert sock.recv(200).startswith(b"#!ack again %d 0" % len(sent))
        server.wait_for(lambda s: s.metrics()["vmstats_buffered_records"] == 0, timeout=20)
    assert server.returncode == 0, server.output
    logged = raw_rows(data)
    expected = Counter([("10.42.0.1", t - 60)] + [(r.vm, r.ts) for r in sent + udp])
    # Failures are logged once per period, not once per VM and flush.
    write_errors = server.output.count("failed (will retry")
    journal_errors = server.output.count("journal in")
    report("disk_full", filesystem="tmpfs 2 MiB", tcp_batches=20, acked_while_full=acked,
           naked_busy=nak, udp_records=len(udp), received=int(received[
               "vmstats_records_received_total"]), rss_mib_while_full=round(rss_kib / 1024, 1),
           write_failures=int(full["vmstats_write_failures_total"]),
           log_lines_write=write_errors, log_lines_journal=journal_errors,
           logged_rows=sum(logged.values()), missing=sum(1 for k in expected if k not in logged))
    assert nak == 20 and acked == 0
    assert logged == expected  # everything, exactly once
    assert partial_rows(data) == 0
    assert 1 <= write_errors <= 3 and 1 <= journal_errors <= 3
    assert rss_kib < 200 * 1024


def partial_rows(data_dir) -> int:
    """Lines of the logs that are neither a header nor a whole row (a write cut short)."""
    partial = 0
    for vm in logstore.iter_vms(str(data_dir)):
        for _day, path in logstore.day_files(str(data_dir), vm):
            with open(path, "rb") as handle:
                data = handle.read()
            partial += bool(data) and not data.endswith(b"\n")
            partial += sum(1 for row in data.split(b"\n") if row and row + b"\n" != logstore.HEADER
                           and row.count(b",") not in logstore.ROW_COMMAS)
    return partial


def test_a_write_cut_short_by_a_full_disk_leaves_no_partial_row(tmp_path, small_disk):
    """A full disk takes part of a flush's append (up to its last free block) and refuses the
    rest: the day file is cut back to where it ended, every flush while full, so readers never
    see half a row, and the retried rows land whole once space returns."""
    data = small_disk / "data"
    # 01:00 UTC three days ago: the 80 minutes of rows below stay in one day file.  Started
    # within 80 minutes of midnight, they split over two days, and the first day's share fit
    # in its file's last block, a whole append the full disk rightly took.
    t = (now() // 86400 - 3) * 86400 + 3600
    vms = ["10.46.0.%d" % i for i in range(5)]
    with serve(tmp_path, "--flush-interval", "0.3", "--journal-dir", str(tmp_path / "journal"),
               data_dir=data) as server:
        server.send_udp(b"\n".join(line(Record(vm=vm, ts=t, cpu=1.0, mem=2.0)) for vm in vms))
        server.wait_for(lambda s: s.metrics()["vmstats_flushed_records_total"] == len(vms))
        sizes = {path: path.stat().st_size for path in data.glob("vms/*/*.csv")}
        ballast = fill_up(small_disk)
        # Each VM's rows (~8 KiB) are more than the free end of its day file's last block.
        sent = [Record(vm=vm, ts=t + 60 * (1 + i), cpu=12.5, cpu_max=99.25, mem=45.5,
                       disk_r=1234567.0, disk_w=7654321.0, net_rx=1e6, net_tx=2e6, vcpus=4,
                       mem_mb=16384, seq=i) for vm in vms for i in range(80)]
        for first in range(0, len(sent), 10):
            server.send_udp(b"\n".join(line(r) for r in sent[first:first + 10]))
        server.wait_received(len(vms) + len(sent), timeout=20)
        full = server.wait_metrics(lambda m: m["vmstats_write_failing_vms"] == len(vms),
                                   timeout=10)
        failing_flushes(server, full, 3)
        partial_while_full = partial_rows(data)
        grew = sum(path.stat().st_size != size for path, size in sizes.items())
        for path in ballast:
            os.unlink(path)
        server.wait_for(lambda s: s.metrics()["vmstats_write_failing_vms"] == 0
                        and s.metrics()["vmstats_buffered_records"] == 0, timeout=20)
    assert server.returncode == 0, server.output
    logged = raw_rows(data)
    partial_after = partial_rows(data)
    report("torn_rows", filesystem="tmpfs 2 MiB", records=len(sent) + len(vms),
           write_failures=int(full["vmstats_write_failures_total"]),
           partial_rows_while_full=partial_while_full, files_changed_while_full=grew,
           partial_rows_after=partial_after, logged_rows=sum(logged.values()))
    assert partial_while_full == 0 and grew == 0
    assert partial_after == 0
    assert logged == Counter((r.vm, r.ts) for r in sent) + Counter((vm, t) for vm in vms)


def test_an_unwritable_data_dir_is_reported_and_written_once_fixed(tmp_path):
    """No log can be written (a file put where DATA_DIR/vms should be once the server runs: at
    start it is refused), the journal elsewhere works: TCP batches are still acknowledged, and
    everything lands once the way is clear."""
    data = tmp_path / "data"
    data.mkdir()
    blocker = data / logstore.VMS_DIR
    t = now() - 7200
    sent = [Record(vm="10.45.0.%d" % (i % 20), ts=t + 60 * (i // 20), cpu=1.0, mem=2.0)
            for i in range(400)]
    with serve(tmp_path, "--flush-interval", "0.3", "--journal-dir",
               str(tmp_path / "journal")) as server:
        blocker.write_text("in the way of every VM's folder")
        with server.tcp() as sock:
            sock.sendall(b"\n".join(line(r) for r in sent) + b"\n#!sync u\n")
            assert sock.recv(100) == b"#!ack u 400 0\n"
        failing = server.wait_metrics(lambda m: m["vmstats_write_failing_vms"] == 20, timeout=10)
        failing_flushes(server, failing, 2)
        assert server.metrics()["vmstats_journal_segments"] >= 1
        blocker.unlink()
        server.wait_for(lambda s: s.metrics()["vmstats_write_failing_vms"] == 0
                        and s.metrics()["vmstats_buffered_records"] == 0, timeout=10)
        server.wait_for(lambda s: s.metrics()["vmstats_journal_segments"] == 0, timeout=10)
    assert server.returncode == 0, server.output
    logged = raw_rows(data)
    report("data_dir_unwritable", records=len(sent), acked=len(sent),
           write_failures=int(failing["vmstats_write_failures_total"]),
           log_lines=server.output.count("failed (will retry"), logged_rows=sum(logged.values()))
    assert logged == Counter((r.vm, r.ts) for r in sent)
    assert 1 <= server.output.count("failed (will retry") <= 2


# -- a dead writer -------------------------------------------------------------------------------
def blocked_writer(server_pid: int, timeout: float = 10.0) -> int:
    """The pool worker that is stuck opening the FIFO (the kernel function it sleeps in)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children(server_pid):
            for worker in children(child):
                try:
                    wchan = open("/proc/%d/wchan" % worker).read()
                except OSError:
                    continue
                if wchan in ("wait_for_partner", "fifo_open"):  # open() of a FIFO, no reader
                    return worker
        time.sleep(0.05)
    raise AssertionError("no writer blocked on the FIFO")


def test_a_writer_killed_mid_flush_is_detected_the_pool_rebuilt_and_its_records_written(tmp_path):
    t = now() - 600
    data = tmp_path / "data"
    fifo = fifo_in_the_way(data, "10.43.0.1", t)  # a writer is mid-flush for as long as we like
    with serve(tmp_path, "--flush-interval", "0.3", "--workers", "2", "--drain-timeout", "5s") as server:
        server.send_udp(line(Record(vm="10.43.0.1", ts=t, cpu=1.0, mem=2.0)),
                        line(Record(vm="10.43.0.2", ts=t, cpu=3.0, mem=4.0)))
        server.wait_received(2)
        worker = blocked_writer(server.pid)
        fifo.unlink()  # the next writer finds a plain path
        os.kill(worker, signal.SIGKILL)
        metrics = server.wait_metrics(lambda m: m["vmstats_writer_deaths_total"] >= 1
                                     and m["vmstats_buffered_records"] == 0
                                     and m["vmstats_in_flight_records"] == 0, timeout=15)
        # A later flush goes through the rebuilt pool.
        server.send_udp(line(Record(vm="10.43.0.3", ts=t, cpu=5.0, mem=6.0)))
        server.wait_for(lambda s: s.metrics()["vmstats_buffered_records"] == 0
                        and (data / "vms" / "10.43.0.3").exists(), timeout=10)
    assert server.returncode == 0, server.output
    logged = raw_rows(data)
    report("writer_killed", records=3, writer_deaths=int(metrics["vmstats_writer_deaths_total"]),
           logged_rows=sum(logged.values()))
    assert logged == Counter({("10.43.0.1", t): 1, ("10.43.0.2", t): 1, ("10.43.0.3", t): 1})
    assert "died during a flush" in server.output


def writers_of(server_pid: int) -> tuple[list, list]:
    """``(forkserver pids, writer pids)`` that run: the writers are the forkserver's children."""
    forkservers = living(children_running(server_pid, b"forkserver"))
    return forkservers, living([writer for forkserver in forkservers
                                for writer in children(forkserver)])


def new_writers(server_pid: int, killed: set, count: int = 2) -> tuple[list, list] | None:
    """``(forkserver pids, writer pids)`` once ``count`` writers run that are not of ``killed``
    (a killed pool's writers may still be ending); None before."""
    forkservers, writers = writers_of(server_pid)
    fresh = [writer for writer in writers if writer not in killed]
    return (forkservers, fresh) if len(fresh) == count else None


def test_writers_killed_between_flushes_are_replaced_and_the_next_flush_writes(tmp_path):
    # Before: an idle writer waits for its next task holding the pool's queue lock; killed
    # there, the pool's new workers never took a task again and every later flush waited for
    # ever (nothing written, every TCP batch refused once the buffer was full); once the
    # forkserver was killed too, rebuilding the pool waited for that lock in the reactor, and
    # the server answered nothing at all.
    t = now() - 600
    data = tmp_path / "data"
    sent = []
    killed: set = set()
    with serve(tmp_path, "--flush-interval", "0.3", "--workers", "2") as server:
        for round_, with_forkserver in enumerate((False, True)):
            record = Record(vm="10.44.0.%d" % (round_ + 1), ts=t, cpu=1.0, mem=2.0)
            assert send_acked(server.tcp_port, [record], "w") == b"#!ack w 1 0\n"
            sent.append(record)
            count = len(sent)
            server.wait_for(lambda s, n=count: s.metrics()["vmstats_flushed_records_total"] >= n,
                            timeout=15)
            forkservers, writers = server.wait_for(lambda s: new_writers(s.pid, killed))
            for pid in writers + (forkservers if with_forkserver else []):
                try:
                    os.kill(pid, signal.SIGKILL)  # idle: one of them held the queue's lock
                except ProcessLookupError:
                    pass  # the pool, finding the first one dead, killed the other itself
            killed.update(writers)
            server.wait_metrics(lambda m, r=round_: m["vmstats_writer_deaths_total"] >= r + 1,
                                timeout=15)
        last = Record(vm="10.44.0.9", ts=t, cpu=3.0, mem=4.0)
        assert send_acked(server.tcp_port, [last], "z") == b"#!ack z 1 0\n"
        sent.append(last)
        server.wait_for(lambda s: s.metrics(timeout=5)["vmstats_flushed_records_total"] >= 3,
                        timeout=15)
    assert server.returncode == 0, server.output
    logged = raw_rows(data)
    report("writers_killed_idle", records=len(sent), rounds=2, logged_rows=sum(logged.values()))
    assert logged == Counter((r.vm, r.ts) for r in sent)
    assert server.output.count("died between flushes") == 2


# -- a dead parser -------------------------------------------------------------------------------
def test_parsers_killed_under_tcp_load_lose_nothing_and_are_restarted(tmp_path):
    """Payloads a dead parser held are parsed by the reactor; acknowledged means logged."""
    data = tmp_path / "data"
    server = serve(tmp_path / "run", "--flush-interval", "0.5", "--parsers", "2",
                   data_dir=data).start()
    agents = [Agent(i, server.tcp_port, tmp_path / ("spool%d" % i), 0.002, now() - 3 * 86400)
              for i in range(3)]
    killed = 0
    try:
        for agent in agents:
            agent.start()
        for _ in range(3):
            time.sleep(0.7)
            victims = parsers_of(server.pid)
            assert victims, "no parser processes found"
            os.kill(victims[0], signal.SIGKILL)
            killed += 1
        time.sleep(0.5)
        delivered = [agent.finish(timeout=30) for agent in agents]
        metrics = server.wait_metrics(lambda m: m["vmstats_parsers_running"] == 2, timeout=10)
        code = server.stop()
    finally:
        halt(agents, server)
    assert all(delivered) and code == 0, server.output
    expected, logged, duplicates = tally(agents, data)
    report("parser_killed", kills=killed, produced=sum(expected.values()),
           logged_rows=sum(logged.values()), duplicates=duplicates,
           parser_deaths=int(metrics["vmstats_parser_deaths_total"]),
           parsed_by_reactor=int(metrics['vmstats_parsed_payloads_total{where="here"}']))
    assert metrics["vmstats_parser_deaths_total"] == killed
    assert set(logged) == set(expected) and duplicates == 0


def test_parsers_killed_under_udp_load_log_the_rest_once_and_seq_sees_every_loss(tmp_path):
    """A parser reading the UDP socket dies with the datagrams it had not handed over yet.

    Those (at most a few milliseconds of them) are missing from the logs, and
    the agents' seq counters see every one; everything else is logged once.
    """
    vms, per_vm, rate = 500, 120, 20_000
    start = now() - 2 * 86400
    sent = [line(Record(vm="10.44.%d.%d" % (v // 250, v % 250), ts=start + 60 * n, cpu=1.0,
                        mem=2.0, seq=n)) for n in range(per_vm) for v in range(vms)]
    data = tmp_path / "data"
    server = serve(tmp_path / "run", "--flush-interval", "1", "--parsers", "2",
                   data_dir=data).start()
    kills = []

    def kill_parsers():
        for _ in range(3):
            time.sleep(0.6)
            victims = parsers_of(server.pid)
            if victims:
                os.kill(victims[0], signal.SIGKILL)
                kills.append(victims[0])

    def settled(s):
        m = s.metrics()
        counted = m["vmstats_records_received_total"] + m["vmstats_estimated_lost_records_total"]
        return m if m["vmstats_parsers_reading_udp"] == 2 and counted >= len(sent) else None

    try:
        server.wait_for(lambda s: s.metrics()["vmstats_parsers_reading_udp"] == 2, timeout=20)
        killer = threading.Thread(target=kill_parsers)
        killer.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            began = time.perf_counter()
            for offset in range(0, len(sent), 100):
                for datagram in sent[offset:offset + 100]:
                    sock.sendto(datagram, ("127.0.0.1", server.udp_port))
                delay = began + (offset + 100) / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
        killer.join()
        metrics = server.wait_for(settled, timeout=15)
        code = server.stop()
    finally:
        server.kill()
    assert code == 0, server.output
    received = int(metrics["vmstats_records_received_total"])
    estimated = int(metrics["vmstats_estimated_lost_records_total"])
    logged = raw_rows(data)
    report("parser_killed_udp", kills=len(kills), sent=len(sent), logged_rows=sum(logged.values()),
           lost=len(sent) - received, seq_estimate=estimated,
           parser_deaths=int(metrics["vmstats_parser_deaths_total"]))
    assert len(kills) == 3 and metrics["vmstats_parser_deaths_total"] == 3
    assert max(logged.values()) == 1 and sum(logged.values()) == received
    # Every record lost is in the estimate (a record filed after a later one of its VM, read by
    # the other parser, would make the estimate one too high, never too low).
    assert len(sent) - received <= estimated


def test_a_stuck_parser_is_killed_and_what_it_held_is_parsed_by_the_reactor(tmp_path):
    """A parser stopped (SIGSTOP: a frozen or swapped-out process) holds the UDP socket and the
    payloads sent to it.  The watchdog finds it idle-and-silent (UDP) or holding payloads (TCP),
    kills it after --parser-timeout; the datagrams and the TCP batch are logged and acknowledged."""
    t = now() - 3600
    data = tmp_path / "data"
    with serve(tmp_path / "run", "--flush-interval", "0.3", "--parsers", "1",
               "--parser-timeout", "2s", data_dir=data) as server:
        server.wait_for(lambda s: s.metrics()["vmstats_parsers_reading_udp"] == 1, timeout=20)
        first = parsers_of(server.pid)
        os.kill(first[0], signal.SIGSTOP)
        began = time.monotonic()
        server.send_udp(line(Record(vm="10.45.0.1", ts=t, cpu=1.0, mem=2.0)))
        server.wait_received(1, timeout=15)  # read by the reactor once the parser is gone
        udp_took = time.monotonic() - began

        server.wait_for(lambda s: s.metrics()["vmstats_parsers_reading_udp"] == 1
                        and parsers_of(s.pid) != first, timeout=20)
        second = parsers_of(server.pid)
        os.kill(second[0], signal.SIGSTOP)
        sent = [Record(vm="10.45.0.2", ts=t + 60 * i, cpu=float(i), mem=3.0) for i in range(40)]
        with server.tcp(timeout=20) as sock:
            began = time.monotonic()
            sock.sendall(b"\n".join(line(r) for r in sent) + b"\n#!sync stuck\n")
            assert read_reply(sock) == b"#!ack stuck 40 0\n"
            tcp_took = time.monotonic() - began
        metrics = server.wait_metrics(lambda m: m["vmstats_parsers_running"] == 1
                                      and m["vmstats_buffered_records"] == 0, timeout=15)
    assert server.returncode == 0, server.output
    report("parser_stuck", udp_seconds=round(udp_took, 1), tcp_seconds=round(tcp_took, 1),
           stalls=int(metrics["vmstats_parser_stalls_total"]))
    assert metrics["vmstats_parser_stalls_total"] == 2
    assert metrics["vmstats_parser_deaths_total"] == 2
    # The TCP batch waited for the timeout (2 s), not for ever (the socket's 20 s and the wait's
    # 15 s would have failed first); the idle parser was found by its probe.
    assert 1.5 < tcp_took
    logged = raw_rows(data)
    assert logged == Counter([("10.45.0.1", t)] + [("10.45.0.2", r.ts) for r in sent])
    assert "answered nothing for" in server.output


def test_stuck_and_dead_decoding_processes_are_replaced_and_stop_does_not_wait_for_them(tmp_path):
    """The other formats' decoding processes: one stopped (SIGSTOP) has its payloads decoded by the
    reactor after --parser-timeout, one killed is replaced, and one stopped at shutdown does not
    hold the server's exit or lose what it held."""
    t0 = (now() - 3600) // 60 * 60
    data = tmp_path / "data"

    def graphite(vm: str) -> bytes:
        return b"servers.%s.cpu.percent 7 %d\nservers.%s.mem.percent 40 %d\n" % (
            vm.encode(), t0 + 10, vm.encode(), t0 + 10)

    def used(count: int):
        return lambda m: m.get('vmstats_edge_lines_total{format="graphite",outcome="used"}') == count

    server = serve(tmp_path / "run", "--flush-interval", "0.3", "--parsers", "1",
                   "--parser-timeout", "2s", "--graphite-port", "0",
                   "--graphite-template", "servers.{vm}.cpu.percent cpu",
                   "--graphite-template", "servers.{vm}.mem.percent mem", data_dir=data).start()
    try:
        port = server.status["graphite_port"]

        def send(vm: str) -> None:
            with server.tcp_to(port) as sock:
                sock.sendall(graphite(vm))

        send("gr-1")
        server.wait_metrics(used(2), timeout=20)
        stuck = decoders_of(server.pid)
        assert len(stuck) == 1
        os.kill(stuck[0], signal.SIGSTOP)
        began = time.monotonic()
        send("gr-2")
        metrics = server.wait_metrics(used(4), timeout=30)  # not for ever
        rescued_in = time.monotonic() - began
        assert metrics["vmstats_parser_stalls_total"] == 1 and 1.5 < rescued_in  # at the timeout

        send("gr-3")  # a new pool's worker decodes it; then it is killed
        server.wait_metrics(used(6), timeout=20)
        fresh = decoders_of(server.pid)
        assert fresh and stuck[0] not in fresh
        os.kill(fresh[0], signal.SIGKILL)
        send("gr-4")
        server.wait_metrics(lambda m: used(8)(m) and m["vmstats_parser_deaths_total"] == 1,
                            timeout=15)
        time.sleep(RESTART_DELAY + 0.5)
        send("gr-5")  # through the pool started a second after the death
        server.wait_metrics(used(10), timeout=20)
        third = decoders_of(server.pid)
        assert third and fresh[0] not in third

        os.kill(third[0], signal.SIGSTOP)
        send("gr-6")
        time.sleep(0.3)
        began = time.monotonic()
        code = server.stop()  # a stop that waited for the stopped decoder: ServerError at 30 s
        stopped_in = time.monotonic() - began
    finally:
        server.kill()
    assert code == 0, server.output
    report("decoder_stuck", rescued_seconds=round(rescued_in, 1),
           stop_seconds=round(stopped_in, 1))
    logged = raw_rows(data)
    assert logged == Counter(("gr-%d" % k, t0 + 60) for k in range(1, 7))
    assert "answered nothing for" in server.output


# -- the agent side ------------------------------------------------------------------------------
def test_an_agent_without_a_server_drops_its_oldest_records_counted_and_stays_bounded(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on (yet)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spool = Spool(str(tmp_path / "spool"), 200)
    sender = TcpSender("127.0.0.1", port, spool, timeout=1.0,
                       backoff=Backoff(initial=0.01, maximum=0.02))
    start = now() - 86400
    produced = [line(Record(vm="10.44.0.1", ts=start + 60 * i, cpu=1.0, mem=2.0, seq=i))
                for i in range(1000)]
    peak_files = 0
    for i, record in enumerate(produced):
        sender.send([record])
        if i % 50 == 0:
            time.sleep(0.02)  # let the backoff expire now and then: real reconnect attempts
        peak_files = max(peak_files, len(os.listdir(spool.path)))
    assert len(spool) == 200 and spool.dropped == 800
    assert peak_files <= 201 + 1  # 200 records and the lock file (+1 being renamed)
    with serve(tmp_path, "--flush-interval", "0.3", "--tcp-port", str(port)) as server:
        assert sender.flush(force=True) and len(spool) == 0
        server.wait_for(lambda s: s.metrics()["vmstats_buffered_records"] == 0
                        and s.metrics()["vmstats_flushed_records_total"] == 200)
    sender.close()
    logged = raw_rows(tmp_path / "data")
    report("agent_spool_full", produced=1000, spool_max=200, dropped_oldest=spool.dropped,
           peak_spool_files=peak_files, delivered=sum(logged.values()))
    # The newest 200 arrived, exactly once; the 800 oldest were the ones dropped.
    assert logged == Counter(("10.44.0.1", start + 60 * i) for i in range(800, 1000))
