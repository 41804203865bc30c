"""Simulated fleets and replayed traces through the real server: the logs hold exactly what was sent."""

import bisect
import csv
import gzip
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serverproc import ROOT, serve

from vmstats import logstore
from vmstats.protocol import Record
from vmstats.simulator import fleet as fleets
from vmstats.simulator import traces

DATA = Path(__file__).resolve().parent / "data" / "traces"
BITBRAINS = DATA / "bitbrains"
QUIRKS_FILE = DATA / "quirks" / "bitbrains-quirks.csv"


def vmstats(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "vmstats", *args], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=timeout)


def logged_rows(data_dir) -> dict:
    """vm -> the raw rows of its log files, sorted by time.

    A batch resent after a busy nak may land in a later flush than part of
    its first attempt, so a (vm, ts) can be written twice; like the report's
    reader (logstore.read_rows), the last row written wins.
    """
    out = {}
    for vm in logstore.iter_vms(str(data_dir)):
        rows = {}
        for _day, path in logstore.day_files(str(data_dir), vm):
            lines = Path(path).read_bytes().split(b"\n")
            assert lines[0] + b"\n" == logstore.HEADER
            for line in lines[1:]:
                if line:
                    rows[int(line.split(b",", 1)[0])] = line
        out[vm] = [rows[ts] for ts in sorted(rows)]
    return out


def expected_rows(records) -> dict:
    out = {}
    for record in sorted(records, key=lambda r: (r.vm, r.ts)):
        out.setdefault(record.vm, []).append(logstore.format_row(record))
    return out


def simulate_and_compare(tmp_path, transport, vms, days, mix=None, extra=()):
    end = int(time.time()) // 60 * 60
    truth = tmp_path / "truth.csv"
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        port = server.tcp_port if transport == "tcp" else server.udp_port
        args = ["simulate", "--vms", str(vms), "--days", str(days), "--seed", "7", "--end", str(end),
                "--server", "127.0.0.1:%d" % port, "--transport", transport, "--truth", str(truth)]
        if mix:
            args += ["--mix", mix]
        result = vmstats(*args, *extra)
        assert result.returncode == 0, result.stdout + result.stderr
        start, stop = fleets.period(end, days)
        fleet = fleets.make_fleet(vms, 7, fleets.parse_mix(mix), start, stop)
        sent = [r for _t, batch in fleets.generate(fleet, 7, start, stop) for r in batch]
        server.wait_received(len(sent), timeout=30)
    assert server.returncode == 0, server.output
    assert "sent %d records over %s" % (len(sent), transport) in result.stdout
    assert logged_rows(tmp_path / "data") == expected_rows(sent)
    return fleet, sent, truth, result


def test_fleet_over_tcp_lands_exactly_and_truth_matches(tmp_path):
    fleet, sent, truth, result = simulate_and_compare(tmp_path, "tcp", vms=12, days=1)
    assert "server accepted %d, rejected 0" % len(sent) in result.stdout
    with open(truth, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["vm"], int(r["vcpus"]), int(r["mem_mb"]), r["profile"], r["expected"]) for r in rows] == [
        (vm.vm, vm.vcpus, vm.mem_mb, vm.profile, vm.expected) for vm in fleet]
    now = time.time()
    assert max(r.ts for r in sent) <= now and min(r.ts for r in sent) >= now - 86400 - 120


def test_parallel_preloaded_fleet_lands_exactly_the_same_records(tmp_path):
    _fleet, sent, _truth, result = simulate_and_compare(tmp_path, "tcp", vms=30, days=0.25,
                                                        extra=("--workers", "2", "--preload"))
    assert "generated and encoded %d records" % len(sent) in result.stdout


def test_fleet_over_udp_paced_lands_exactly(tmp_path):
    fleet, sent, _truth, result = simulate_and_compare(tmp_path, "udp", vms=5, days=0.5,
                                                       mix="stopped=1,bursty_web=1,idle=1")
    stopped = [vm for vm in fleet if vm.profile == "stopped"]
    assert stopped and all(r.ts < vm.stop_at for vm in stopped for r in sent if r.vm == vm.vm)
    assert "over udp" in result.stdout


def test_speed_factor_paces_simulated_time(tmp_path):
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        began = time.monotonic()
        result = vmstats("simulate", "--vms", "2", "--days", str(40 / 1440), "--speed", "1200",
                         "--server", "127.0.0.1:%d" % server.tcp_port)
        spent = time.monotonic() - began
        assert result.returncode == 0, result.stdout + result.stderr
    # 40 simulated minutes at 1200x go out in two 20-minute steps, the second 1 s after the first.
    assert spent >= 1.0 and "sent 80 records over tcp" in result.stdout


def _source_rows(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as handle:
        return [line.split(";") for line in handle.read().splitlines()[1:]]


def test_replay_bitbrains_logs_hold_the_source_values_held_five_minutes(tmp_path):
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        result = vmstats("replay", "--format", "bitbrains", str(BITBRAINS), str(QUIRKS_FILE),
                         "--server", "127.0.0.1:%d" % server.tcp_port, "--json", str(tmp_path / "r.json"))
        assert result.returncode == 0, result.stdout + result.stderr
    assert server.returncode == 0, server.output
    logged = logged_rows(tmp_path / "data")
    assert sorted(logged) == ["bitbrains-410", "bitbrains-429", "bitbrains-bitbrains-quirks"]
    # Independently of the reader: every valid source row appears five times, a minute apart.
    for name in ("410", "429"):
        rows = {int(r.split(b",")[0]): r.split(b",") for r in logged["bitbrains-" + name]}
        source = _source_rows(BITBRAINS / ("%s.csv.gz" % name))
        stamps = sorted(int(row[0]) for row in source)
        for row in source:
            stamp = int(row[0])
            following = bisect.bisect_right(stamps, stamp)  # the first later stamp's place
            limit = stamps[following] if following < len(stamps) else stamp + 300
            held = [stamp + 60 * k for k in range(5) if stamp + 60 * k < limit]
            for ts in held:
                cells = rows[ts]
                assert float(cells[1]) == min(float(row[4]), 100.0)  # cpu %
                assert float(cells[3]) == min(float(row[6]) / float(row[5]) * 100.0, 100.0)  # mem %
                assert [float(c) for c in cells[4:8]] == [float(v) * 1024 for v in row[7:11]]
                assert int(cells[8]) == int(row[1])  # vcpus
        assert len(rows) == len(logged["bitbrains-" + name])
    # And exactly what the reader produced, byte for byte.
    produced = [r for path in sorted(BITBRAINS.iterdir()) for r in traces.read_trace(str(path), "bitbrains")]
    produced += list(traces.read_trace(str(QUIRKS_FILE), "bitbrains"))
    assert logged == expected_rows(produced)
    for quirk in ("cpu_clamped", "duplicate_timestamp", "vm_off", "gap", "mem_capacity_change", "bad_row",
                  "out_of_order", "short_hold", "mem_clamped"):
        assert quirk in result.stdout
    summary = (tmp_path / "r.json").read_text()
    assert '"duplicate_timestamp": 1' in summary and '"vm_off": 2' in summary


def test_a_replay_held_back_by_a_full_vm_buffer_says_so_and_loses_nothing(tmp_path):
    """A VM's buffer at --max-per-vm answers batches 'busy' until the next flush: the replay
    sends them again, every record lands once, and the replay names the cause and the remedy."""
    start = (int(time.time()) - 10 * 86400) // 60 * 60
    path = tmp_path / "history.csv"
    path.write_text("vm,timestamp,cpu,mem\n" + "".join(
        "10.46.0.1,%d,%d,%d\n" % (start + 60 * i, i % 100, 50) for i in range(5000)))
    produced = list(traces.read_trace(str(path), "csv"))
    with serve(tmp_path, "--flush-interval", "0.3", "--max-per-vm", "1000") as server:
        result = vmstats("replay", "--format", "csv", str(path),
                         "--server", "127.0.0.1:%d" % server.tcp_port)
        assert result.returncode == 0, result.stdout + result.stderr
    assert server.returncode == 0, server.output
    assert len(produced) == 5000 and logged_rows(tmp_path / "data") == expected_rows(produced)
    assert "the server answered 'busy' to" in result.stdout
    assert "shorter --flush-interval" in result.stdout


def test_replay_planetlab_and_csv_over_udp(tmp_path):
    csv_trace = tmp_path / "fleet.csv"
    csv_trace.write_text("vm,timestamp,cpu,mem,vcpus\nweb1,2024-05-01T00:00:00Z,12.5,40,2\n"
                         "web1,2024-05-01T00:01:00Z,150,41.5,2\n10.9.9.9,1714521600,3,4,1\n")
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        address = "127.0.0.1:%d" % server.udp_port
        result = vmstats("replay", "--format", "planetlab", str(DATA / "planetlab"), "--fill-mem", "35",
                         "--fill-size", "1:2048", "--start", "2024-05-02", "--server", address,
                         "--transport", "udp")
        assert result.returncode == 0, result.stdout + result.stderr
        other = vmstats("replay", "--format", "csv", str(csv_trace), "--server", address,
                        "--transport", "udp")
        assert other.returncode == 0, other.stdout + other.stderr
        server.wait_received(3 * 1440 + 3, timeout=20)
    logged = logged_rows(tmp_path / "data")
    start = 1714608000  # 2024-05-02T00:00Z
    for path in sorted((DATA / "planetlab").iterdir()):
        vm = traces.default_vm_id("planetlab", path.name)
        values = [int(v) for v in path.read_text().split()]
        want = [Record(vm, start + 60 * k, float(values[k // 5]), None, 35.0, vcpus=1, mem_mb=2048)
                for k in range(5 * len(values))]
        assert logged[vm] == [logstore.format_row(r) for r in want]
    assert logged["web1"] == [logstore.format_row(Record("web1", 1714521600, 12.5, None, 40.0, vcpus=2)),
                              logstore.format_row(Record("web1", 1714521660, 100.0, None, 41.5, vcpus=2))]
    assert logged["10.9.9.9"] == [
        logstore.format_row(Record("10.9.9.9", 1714521600, 3.0, None, 4.0, vcpus=1))]
    assert "cpu_clamped" in other.stdout


def test_bad_inputs_fail_with_one_readable_line(tmp_path):
    cases = [
        ("simulate", "--mix", "idle=1,gpu=3", "--server", "127.0.0.1:9"),
        ("simulate", "--server", "nonsense", "--vms", "1", "--days", "0.01"),
        ("simulate", "--vms", "1", "--days", "0.01", "--server", "127.0.0.1:9"),  # nothing listens
        ("replay", "--format", "planetlab", str(DATA / "planetlab"), "--server", "127.0.0.1:9"),
        ("replay", "--format", "bitbrains", str(tmp_path / "missing"), "--server", "127.0.0.1:9"),
        ("simulate", "--vms", "1", "--days", "inf", "--server", "127.0.0.1:9"),  # would never end
        ("simulate", "--vms", "1", "--days", "0.01", "--rate", "nan", "--server", "127.0.0.1:9"),
        ("simulate", "--vms", "1", "--days", "0.01", "--speed", "inf", "--server", "127.0.0.1:9"),
    ]
    for args in cases:
        result = vmstats(*args, timeout=60)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, result.stderr
        assert len([x for x in result.stderr.splitlines() if x.startswith("Error")]) == 1, result.stderr



def test_an_output_that_cannot_be_written_is_refused_before_the_run_and_a_closed_port_is_one_line(
        tmp_path):
    """A --json (or --pack-hosts, --truth) in a missing folder, under a file or naming a folder was
    found only after every record was sent: it is one line before anything is sent or written.
    No server on the UDP port of a pool is one Error line too, not a traceback."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a-file").write_text("")
    missing = out / "no-such-folder" / "out.json"
    cases = [(str(missing), "%s does not exist (no folder is made for it)" % missing.parent),
             (str(out / "a-file" / "out.json"), "%s is a file, not a folder" % (out / "a-file")),
             (str(out), "%s is a folder, not a file" % out)]
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        address = ["--server", "127.0.0.1:%d" % server.tcp_port]
        for path, why in cases:
            for args, option in (
                    (["simulate", "--vms", "1", "--days", "0.01", *address, "--json", path], "--json"),
                    (["simulate", "--vms", "1", "--days", "0.01", *address, "--truth", path], "--truth"),
                    (["simulate-pool", "--duration", "1", *address, "--json", path], "--json"),
                    (["replay", "--format", "bitbrains", str(BITBRAINS), *address, "--pack-hosts", path],
                     "--pack-hosts"),
                    (["score", "--truth", "t.csv", "--report", "r.csv", "--json", path], "--json")):
                done = vmstats(*args)
                assert done.returncode == 2 and done.stderr.splitlines() == [
                    "Error: Invalid value for '%s': %s" % (option, why)], (args, done.stderr)
                assert done.stdout == "", (args, done.stdout)
        assert server.metrics().get("vmstats_records_received_total", 0) == 0
    assert [p.name for p in out.iterdir()] == ["a-file"]  # nothing made early
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    done = vmstats("simulate-pool", "--duration", "2", "--transport", "udp",
                   "--server", "127.0.0.1:%d" % closed)
    assert done.returncode == 1 and done.stderr.splitlines() == [
        "Error: UDP 127.0.0.1:%d: connection refused (no server listening)" % closed], done.stderr


def test_ctrl_c_mid_run_exits_130_with_one_line(tmp_path):
    """Ctrl-C is an interruption, not a failure: status 130 as shells report it, one line, no
    traceback (click's own "Aborted!" exits 1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:  # takes the datagrams, reads none
        sink.bind(("127.0.0.1", 0))
        run = subprocess.Popen(
            [sys.executable, "-m", "vmstats", "simulate", "--vms", "2", "--days", "1", "--speed", "1",
             "--transport", "udp", "--server", "127.0.0.1:%d" % sink.getsockname()[1]],
            cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's job has it
        sink.settimeout(30)
        assert sink.recv(65536)  # the first datagram: the command is mid-run
        run.send_signal(signal.SIGINT)
        _out, err = run.communicate(timeout=30)
    assert run.returncode == 130 and err.splitlines() == ["vmstats simulate: interrupted"], err


@pytest.mark.parametrize("args, message", [
    (["--days", "1e300"], "Error: Invalid value for '--days': 1e+300 is not in the range 0<x<=3660."),
    (["--end", "99999999999999"], "Error: Invalid value for --end: 99999999999999 is after "
                                  "5138-11-16T09:46Z, the last minute a record can be stamped in"),
    (["--end", "9999-12-31"], "Error: Invalid value for --end: 9999-12-31 is after 5138-11-16T09:46Z, "
                              "the last minute a record can be stamped in"),
    # --end 0 is the epoch, not "now": a day up to it has no minute the server takes a stamp
    # of; nor has a week up to 2000-01-03 every minute.
    (["--end", "0", "--days", "1"], "Error: Invalid value for --days: the 1 day up to --end 0 would "
                                    "start before 2000-01-01T00:00:00Z, the first moment the server "
                                    "takes a stamp from"),
    (["--end", "2000-01-03", "--days", "7"], "Error: Invalid value for --days: the 7 days up to --end "
                                             "2000-01-03 would start before 2000-01-01T00:00:00Z, "
                                             "the first moment the server takes a stamp from"),
])
def test_times_out_of_any_records_reach_are_one_line(args, message):
    """Huge --days and --end ended in OverflowError and 'year 3170843 is out of range' tracebacks."""
    done = vmstats("simulate", "--vms", "1", "--dry-run", *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1] == message
