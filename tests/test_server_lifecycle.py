"""Lifecycle and safety: shutdown loses nothing, --duration, HTTP, hostile ids, failed writes."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from serverproc import ROOT, decoders_of, descendants, serve
from test_server_tcp import read_reply
from test_server_udp import line, logged, now

from vmstats import logstore
from vmstats.protocol import Record


def all_rows(data_dir) -> int:
    return sum(len(logged(data_dir, vm)) for vm in logstore.iter_vms(str(data_dir)))


def test_sigterm_mid_stream_loses_nothing_received(tmp_path):
    """Everything acknowledged over TCP, and everything the server counted over UDP, is logged."""
    start = now() - 20 * 86400
    acked = []
    stop = threading.Event()

    def tcp_sender(port):
        i = 0
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                while not stop.is_set():
                    batch = [Record(vm="10.4.0.%d" % (j % 50), ts=start + 60 * (i + j), cpu=1.0,
                                    mem=2.0) for j in range(100)]
                    sock.sendall(b"\n".join(line(r) for r in batch) + b"\n#!sync b%d\n" % i)
                    if not read_reply(sock).startswith(b"#!ack"):
                        break
                    acked.extend(batch)
                    i += 100
        except OSError:
            pass  # the server went away mid-batch: that batch was never acknowledged

    with serve(tmp_path, "--flush-interval", "0.5") as server:
        sender = threading.Thread(target=tcp_sender, args=(server.tcp_port,))
        sender.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            for i in range(3000):
                udp.sendto(line(Record(vm="10.5.0.%d" % (i % 20), ts=start + 60 * i, cpu=3.0,
                                       mem=4.0)), ("127.0.0.1", server.udp_port))
        server.wait_for(lambda _s: len(acked) >= 2000, timeout=20)
        code = server.stop()
        stop.set()
        sender.join(10)
    assert code == 0, server.output
    received = int(server.output.split("records received")[1].split()[0])
    data = tmp_path / "data"
    assert all_rows(data) == received  # every record the server held reached the logs
    logged_tcp = {(vm, ts) for vm in logstore.iter_vms(str(data)) if vm.startswith("10.4.")
                  for ts in logged(data, vm)["ts"]}
    assert {(r.vm, r.ts) for r in acked} <= logged_tcp


def test_duration_stops_on_time_and_flushes(tmp_path):
    server = serve(tmp_path, "--duration", "2s", "--flush-interval", "60").start()
    started = time.monotonic()
    server.send_udp(line(Record(vm="10.6.0.1", ts=now() - 5, cpu=1.0, mem=2.0)))
    server.wait_received(1)
    code = server.wait(50)  # not for ever, nor until the flush interval (60 s)
    elapsed = time.monotonic() - started
    assert code == 0, server.output
    assert elapsed >= 1.5  # not before --duration
    assert len(logged(tmp_path / "data", "10.6.0.1")) == 1  # the final flush, not the interval


def test_metrics_and_status_agree_with_what_was_sent(tmp_path):
    t = now() - 300
    with serve(tmp_path, "--flush-interval", "60") as server:
        server.send_udp(b"\n".join(line(Record(vm="10.7.0.%d" % i, ts=t, cpu=1.0, mem=2.0,
                                                 seq=i)) for i in range(1, 4)))
        # Datagrams may be parsed by different parser processes, so they are
        # filed in no set order: the gap is sent once seq 1 has been filed.
        server.wait_received(3)
        server.send_udp(b"vmstats,vm=10.7.0.1 cpu=1,mem=2,seq=9i %d" % (t + 60),  # 7 lost
                        b"vmstats,vm=10.7.0.9 cpu=200,mem=1 %d" % t)
        server.wait_received(5)
        # A jump up is counted at the VM's next record (docs/PROTOCOL.md, Loss estimate).
        server.send_udp(b"vmstats,vm=10.7.0.1 cpu=1,mem=2,seq=10i %d" % (t + 120))
        metrics = server.wait_received(6)
        status = server.status_json()
        text = server.http("/metrics")
    assert metrics["vmstats_records_received_total"] == 5
    assert metrics["vmstats_datagrams_received_total"] == 4
    assert metrics["vmstats_buffered_records"] == 5
    assert metrics["vmstats_vms_seen"] == 3
    assert metrics["vmstats_estimated_lost_records_total"] == 7
    assert metrics['vmstats_rejected_total{reason="out_of_range"}'] == 1
    assert "# TYPE vmstats_rejected_total counter" in text
    assert status["records_received"] == 5 and status["buffered_records"] == 5
    assert status["rejected"]["out_of_range"] == 1 and status["rejected_total"] == 1
    assert sorted(status["last_seen"]) == ["10.7.0.1", "10.7.0.2", "10.7.0.3"]
    assert status["udp_port"] == server.udp_port
    assert server.returncode == 0
    assert "  records written   5 in " in server.output and all_rows(tmp_path / "data") == 5


def test_hostile_vm_ids_never_escape_the_data_dir(tmp_path):
    t = now() - 60
    hostile = [b"../../escape", b"/etc/passwd", b"..", b"a/../../b", b".hidden", b"x%2f..",
               b"fe80::1%../../x", b"-rf", b"a" * 65, b"10.0.0.1\x00", b"a\\b", b"~root"]
    payload = b"\n".join(b"vmstats,vm=%s cpu=1,mem=2 %d" % (vm, t) for vm in hostile)
    outside = set(os.listdir(tmp_path))
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        server.send_udp(payload)
        metrics = server.wait_received(len(hostile))
    assert metrics['vmstats_rejected_total{reason="bad_vm_id"}'] >= len(hostile) - 1
    assert metrics["vmstats_records_received_total"] == 0
    created = set(os.listdir(tmp_path)) - outside
    assert created <= {"data", "server-status.json", "server-output.txt"}
    assert list(logstore.iter_vms(str(tmp_path / "data"))) == []
    for _root, _dirs, files in os.walk(tmp_path.parent):
        assert "escape" not in files


def test_a_failed_write_is_counted_and_retried_once_fixed(tmp_path):
    data = tmp_path / "data"
    (data / "vms").mkdir(parents=True)
    blocker = data / "vms" / "10.8.0.1"
    blocker.write_text("a file where the VM's folder should be")
    t = now() - 120
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        server.send_udp(line(Record(vm="10.8.0.1", ts=t, cpu=1.0, mem=2.0)),
                        line(Record(vm="10.8.0.2", ts=t, cpu=3.0, mem=4.0)))
        server.wait_for(lambda s: s.metrics()["vmstats_write_failures_total"] >= 2)
        assert len(logged(data, "10.8.0.2")) == 1  # the healthy VM was not held back
        assert server.metrics()["vmstats_buffered_records"] == 1  # kept for retry
        blocker.unlink()
        server.wait_for(lambda s: s.metrics()["vmstats_flushed_records_total"] == 2)
    assert list(logged(data, "10.8.0.1")["cpu"]) == [1.0]
    assert server.returncode == 0
    assert "will retry" in server.output


def test_unwritable_at_shutdown_exits_non_zero_with_a_summary(tmp_path):
    data = tmp_path / "data"
    (data / "vms").mkdir(parents=True)
    (data / "vms" / "10.8.1.1").write_text("in the way")
    with serve(tmp_path, "--flush-interval", "60", "--drain-timeout", "5s") as server:
        server.send_udp(line(Record(vm="10.8.1.1", ts=now() - 60, cpu=1.0, mem=2.0)))
        server.wait_received(1)
    assert server.returncode == 1
    summary = server.output.splitlines()
    assert "  NOT WRITTEN       1 record" in summary, server.output  # the whole line: not "1 records"
    assert any(line.startswith("  records received  1 (1 datagram, ") for line in summary), server.output
    assert "writing the records of 1 VM failed (will retry; 1 record held)" in server.output


def run_cli(*args, timeout=20):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "vmstats", "serve", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_bad_command_line_gives_one_readable_line(tmp_path):
    result = run_cli("--duration", "soon")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "duration" in result.stderr
    # Enough digits read as inf (a server that would never stop on its own), or so many days
    # that the flush timer overflows: one line naming the option.
    for option, value in (("--duration", "9" * 400 + "s"), ("--flush-interval", "9" * 23 + "d")):
        result = run_cli(option, value, "--bind", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0",
                         "--http-port", "0", "--data-dir", str(tmp_path / "d"))
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            "Error: Invalid value for '%s': '%s' is longer than 36500d" % (option, value))
    keys = tmp_path / "keys"
    keys.write_text("only-an-id\n")
    result = run_cli("--auth-keys", str(keys), "--bind", "127.0.0.1")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "auth-keys" in result.stderr


def test_a_port_in_use_is_one_line_and_no_leftover_processes(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("--bind", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0",
                         "--http-port", str(port), "--data-dir", str(tmp_path / "d"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert str(port) in result.stderr.strip().splitlines()[-1]


def test_every_child_process_ends_within_seconds_of_the_server_being_killed(tmp_path):
    """SIGKILL (the OOM killer, ``kill -9``) leaves no process behind: the parsers, the writers
    and their forkserver, the other formats' decoding processes and multiprocessing's resource
    tracker all end.  Before, the decoders waited on a queue they held both ends of, and kept
    the resource tracker alive with them, for good: a crash loop leaked three a restart."""
    with serve(tmp_path, "--graphite-port", "0", "--workers", "1") as server:
        with server.tcp_to(server.status["graphite_port"]) as sock:  # the decoders start on use
            sock.sendall(b"servers.gr-1.cpu.percent 7 %d\n" % now())
        server.wait_for(lambda s: decoders_of(s.pid), timeout=20)
        family = descendants(server.pid)
        commands = [Path("/proc/%d/cmdline" % pid).read_bytes() for pid in family]
        for kind in (b"parseworker", b"forkserver", b"resource_tracker", b"spawn_main"):
            assert kind in b" ".join(commands)
        left = server.killed_leaving(family)
    assert not left, [command for pid, command in zip(family, commands, strict=True) if pid in left]


def test_children_stopped_when_the_server_is_killed_end_with_it(tmp_path):
    """A child stopped when the server is killed (``kill -STOP``, a debugger, a frozen cgroup)
    cannot notice the death itself: the kernel kills it (``PR_SET_PDEATHSIG``).  Before, the
    parser, the writer and its forkserver and the decoding process, stopped then, stayed for
    good.  Multiprocessing's resource tracker, left running, ends once the others are gone."""
    used = 'vmstats_edge_lines_total{format="graphite",outcome="used"}'
    with serve(tmp_path, "--graphite-port", "0", "--graphite-template",
               "servers.{vm}.cpu.percent cpu", "--workers", "1", "--parsers", "1",
               "--flush-interval", "0.3") as server:
        with server.tcp_to(server.status["graphite_port"]) as sock:  # the decoders start on use
            sock.sendall(b"servers.gr-1.cpu.percent 7 %d\n" % now())
        server.send_udp(line(Record(vm="10.9.0.9", ts=now() - 60, cpu=1.0, mem=2.0)))
        # Each child asks for the signal as it starts: stopped only once each is at work (the
        # parser reads the UDP socket, a decoder decoded the line, the writer logged the record).
        server.wait_metrics(lambda m: m.get("vmstats_parsers_reading_udp") == 1
                            and m.get(used) == 1 and m.get("vmstats_flushed_records_total") == 1)
        family = descendants(server.pid)
        commands = {pid: Path("/proc/%d/cmdline" % pid).read_bytes() for pid in family}
        stopped = [pid for pid in family if b"resource_tracker" not in commands[pid]]
        for kind in (b"parseworker", b"forkserver", b"spawn_main"):
            assert kind in b" ".join(commands[pid] for pid in stopped)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        server.wait_for(lambda s: all(state(pid) == "T" for pid in stopped), timeout=5)
        left = server.killed_leaving(family)
    assert not left, [commands[pid] for pid in left]


def state(pid: int) -> str:
    """The process's state letter (/proc/PID/stat): R, S, T (stopped), Z..."""
    return Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]


def test_sigint_also_drains(tmp_path):
    with serve(tmp_path, "--flush-interval", "60") as server:
        server.send_udp(line(Record(vm="10.9.0.1", ts=now() - 60, cpu=1.0, mem=2.0)))
        server.wait_received(1)
        assert server.stop(signal.SIGINT) == 0
    assert len(logged(tmp_path / "data", "10.9.0.1")) == 1


def test_the_stop_waits_for_every_process_pools_thread_so_its_exit_prints_no_error(tmp_path):
    """Python 3.11's exit wakes each process pool's thread still running without the lock the
    thread closes its pipe under (CPython gh-125451): a stop sometimes ended in a traceback of
    ``OSError: [Errno 9] Bad file descriptor``.  Here (tests/slowwakeup) each pool's thread
    reaps slowly, as on a loaded host, and the exit's wake-up is slower still, so a thread not
    joined before the exit -- the writers', or the decoders' that the Graphite port starts --
    closes its pipe under the wake-up every time."""
    env = {"PYTHONPATH": str(ROOT / "tests" / "slowwakeup"), "VMSTATS_TEST_SLOW_WAKEUP": "0.5"}
    with serve(tmp_path, "--flush-interval", "60", "--workers", "1", "--parsers", "1",
               "--graphite-port", "0", env=env) as server:
        server.send_udp(line(Record(vm="10.9.0.2", ts=now() - 60, cpu=1.0, mem=2.0)))
        server.wait_received(1)
        assert server.stop() == 0, server.output
    assert "Traceback" not in server.output and "OSError" not in server.output, server.output
    assert len(logged(tmp_path / "data", "10.9.0.2")) == 1


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_to_the_whole_process_group_still_drains(tmp_path, number):
    """systemd (KillMode=control-group), ``timeout`` and Ctrl-C signal every process of the
    service: the writers and parsers must not die with the records of the final flush."""
    with serve(tmp_path, "--flush-interval", "60", "--parsers", "1") as server:
        for i in range(20):
            server.send_udp(line(Record(vm="10.9.1.%d" % i, ts=now() - 60, cpu=1.0, mem=2.0)))
        server.wait_received(20)
        family = descendants(server.pid)
        assert len(family) >= 3, family  # the forkserver, its writers, a parser
        for pid in family + [server.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)
        assert server.stop(number) == 0, server.output
    assert "Traceback" not in server.output and "missed the" not in server.output, server.output
    assert all_rows(tmp_path / "data") == 20


@contextlib.contextmanager
def started_with(disposition: dict, tmp_path, *args: str):
    """A server started with the given signals' dispositions inherited (``{SIGINT: SIG_IGN}``:
    how a shell starts a background job; ``{SIGHUP: SIG_IGN}``: nohup)."""
    server = serve(tmp_path, *args)
    before = {number: signal.signal(number, handler) for number, handler in disposition.items()}
    try:
        server.start()
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)
    try:
        yield server
    finally:
        server.__exit__(None, None, None)


def ignored_by(pid: int, number: int) -> bool:
    mask = open("/proc/%d/status" % pid).read().split("SigIgn:")[1].split()[0]
    return bool(int(mask, 16) & (1 << (number - 1)))


def test_sigint_drains_a_server_started_with_sigint_ignored(tmp_path):
    with started_with({signal.SIGINT: signal.SIG_IGN}, tmp_path, "--flush-interval", "60") as server:
        assert not ignored_by(server.pid, signal.SIGINT)  # its own handler, not the inherited one
        server.send_udp(line(Record(vm="10.9.0.2", ts=now() - 60, cpu=1.0, mem=2.0)))
        server.wait_received(1)
        assert server.stop(signal.SIGINT) == 0
    assert len(logged(tmp_path / "data", "10.9.0.2")) == 1


def test_sighup_drains_unless_the_server_was_started_under_nohup(tmp_path):
    # Started with SIGHUP at its default whatever this suite inherited: a suite run under
    # nohup would otherwise start a server that rightly outlives the signal.
    with started_with({signal.SIGHUP: signal.SIG_DFL}, tmp_path / "a", "--flush-interval",
                      "60") as server:
        assert not ignored_by(server.pid, signal.SIGHUP)
        server.send_udp(line(Record(vm="10.9.0.3", ts=now() - 60, cpu=1.0, mem=2.0)))
        server.wait_received(1)
        assert server.stop(signal.SIGHUP) == 0
    assert len(logged(tmp_path / "a" / "data", "10.9.0.3")) == 1
    with started_with({signal.SIGHUP: signal.SIG_IGN}, tmp_path / "b", "--flush-interval",
                      "60") as server:
        assert ignored_by(server.pid, signal.SIGHUP)
        server.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert server.proc.poll() is None  # nohup asked it to outlive its terminal
        assert server.stop(signal.SIGTERM) == 0


def test_reaching_the_global_cap_flushes_early_and_beyond_it_drops_are_counted(tmp_path):
    t = now() - 3600
    with serve(tmp_path, "--flush-interval", "1h", "--max-buffered", "50") as server:
        server.send_udp(b"\n".join(line(Record(vm="10.12.0.%d" % (i % 5), ts=t + i, cpu=1.0,
                                                 mem=2.0)) for i in range(50)))
        # No interval flush for an hour: only the cap can have written these.
        server.wait_for(lambda s: s.metrics()["vmstats_flushed_records_total"] == 50)
        server.send_udp(b"\n".join(line(Record(vm="10.12.1.1", ts=t + i, cpu=1.0, mem=2.0))
                                   for i in range(60)))
        metrics = server.wait_received(110)
    assert metrics['vmstats_dropped_total{cause="global_cap"}'] == 10
    assert all_rows(tmp_path / "data") == 100


def fifo_in_the_way(data, vm: str, ts: int) -> Path:
    """A FIFO where the day file of ``vm`` at ``ts`` goes: a writer's open() of it blocks (no
    reader) for as long as the test likes; unlink it and the next writer finds a plain path."""
    path = Path(logstore.day_path(str(data), vm, logstore.day_of(ts)))
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    return path


def test_a_hung_writer_misses_the_drain_deadline_and_the_exit_code_says_so(tmp_path):
    t = now() - 60
    fifo_in_the_way(tmp_path / "data", "10.13.0.1", t)
    with serve(tmp_path, "--flush-interval", "1h", "--drain-timeout", "1s") as server:
        server.send_udp(line(Record(vm="10.13.0.1", ts=t, cpu=1.0, mem=2.0)))
        server.wait_received(1)
    # The writer's open() never returns: a stop that waited for it would not end (ServerError).
    assert server.returncode == 1
    assert "drain deadline of 1.0s MISSED" in server.output
    assert "  NOT WRITTEN       1 record" in server.output.splitlines(), server.output


def test_the_udp_receive_buffer_is_what_was_asked_when_privileged(tmp_path):
    """Past net.core.rmem_max with CAP_NET_ADMIN (root here); else the cap and a warning."""
    asked = 16 << 20
    cap = int(open("/proc/sys/net/core/rmem_max").read())
    with serve(tmp_path, "--rcvbuf", str(asked)) as server:
        granted = server.status["rcvbuf"]
    if os.geteuid() == 0:
        assert granted == asked
    else:
        assert granted == min(asked, cap)
        assert granted == asked or "raise net.core.rmem_max" in server.output


def test_sigusr1_prints_every_threads_stack_and_the_server_carries_on(tmp_path):
    """What to ask a server that seems stuck; the test helper asks it when a stop times out."""
    with serve(tmp_path, "--flush-interval", "60") as server:
        server.proc.send_signal(signal.SIGUSR1)
        output = tmp_path / "server-output.txt"
        server.wait_for(lambda _s: "most recent call first" in output.read_text(errors="replace"),
                        timeout=10)
        server.send_udp(line(Record(vm="10.9.0.2", ts=now() - 60, cpu=1.0, mem=2.0)))
        server.wait_received(1)
        assert server.stop() == 0
    dump = server.output
    assert "Current thread" in dump and "service.py" in dump  # the reactor thread, in run()
    assert len(logged(tmp_path / "data", "10.9.0.2")) == 1


def test_a_status_file_on_a_full_disk_is_one_line_naming_it_and_leaves_nothing(tmp_path, small_disk):
    """The status file's folder is full: the start fails (1) naming the file, as its other
    checks name theirs. Before, the line was a bare "No space left on device", and each start
    (a unit restarting on failure) left one more empty ``.status-*`` file on that disk."""
    from test_reliability_faults import fill_up

    fill_up(small_disk)
    before = set(os.listdir(small_disk))
    status = small_disk / "status.json"
    for _start in range(2):
        result = subprocess.run(
            [sys.executable, "-m", "vmstats", "serve", "--bind", "127.0.0.1", "--udp-port", "0",
             "--tcp-port", "0", "--http-port", "0", "--data-dir", str(tmp_path / "data"),
             "--status-file", str(status), "--duration", "60s"],
            capture_output=True, text=True, timeout=60, cwd=str(ROOT))
        assert result.returncode == 1, result.stderr
        errors = [text for text in result.stderr.splitlines() if text.startswith("Error")]
        assert errors == ["Error: cannot write the status file (--status-file) %s: No space left "
                          "on device" % status], result.stderr
        assert "Traceback" not in result.stderr
    assert set(os.listdir(small_disk)) == before
