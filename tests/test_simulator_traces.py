"""Trace readers: every quirk of the real traces is handled and counted, values kept exact."""

import datetime
import gzip
import os
from collections import Counter
from pathlib import Path

import pytest

from vmstats.simulator import traces
from vmstats.simulator.traces import TraceError, read_trace, read_traces

DATA = Path(__file__).resolve().parent / "data" / "traces"
QUIRKS_FILE = DATA / "quirks" / "bitbrains-quirks.csv"
T0 = 1375308000


def _bitbrains_source(path):
    """The trace's rows, parsed independently of the reader under test."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as handle:
        lines = handle.read().splitlines()[1:]
    return [[float(c) for c in line.split(";\t")] for line in lines]


def test_quirks_file_every_quirk_counted_and_values_exact():
    trace = read_trace(str(QUIRKS_FILE), "bitbrains")
    records = list(trace)
    assert {r.vm for r in records} == {"bitbrains-bitbrains-quirks"}
    assert trace.quirks == Counter(rows=11, cpu_clamped=2, duplicate_timestamp=1, vm_off=2,
                                   mem_capacity_change=1, mem_clamped=1, out_of_order=1, bad_row=1,
                                   short_hold=1, gap=2, gap_minutes=185, short_trace=1)
    stamps = [r.ts for r in records]
    expected = ([T0 + 60 * k for k in range(5)] + [T0 + 300 + 60 * k for k in range(5)]
                + [T0 + 1200 + 60 * k for k in range(3)] + [T0 + 1380 + 60 * k for k in range(5)]
                + [T0 + 1680 + 60 * k for k in range(5)] + [T0 + 1980 + 60 * k for k in range(5)]
                + [T0 + 12780 + 60 * k for k in range(5)])
    assert stamps == expected
    by_ts = {r.ts: r for r in records}
    first = by_ts[T0 + 240]
    assert (first.cpu, first.mem, first.disk_r, first.disk_w, first.net_rx, first.net_tx) == (
        10.0, 50.0, 1.5 * 1024, 2.25 * 1024, 3.0 * 1024, 4.0 * 1024)
    assert (first.vcpus, first.mem_mb, first.cpu_max) == (2, 2048, None)
    dup = by_ts[T0 + 300]  # the duplicate's last row wins, clamped
    assert (dup.cpu, dup.mem, dup.net_tx) == (100.0, 25.0, 11.0 * 1024)
    assert T0 + 600 not in by_ts and T0 + 900 not in by_ts  # off: nothing sent
    assert by_ts[T0 + 1200].mem_mb == 4096
    assert by_ts[T0 + 1380].mem == 100.0


def test_real_bitbrains_values_held_for_five_minutes():
    path = DATA / "bitbrains" / "410.csv.gz"
    trace = read_trace(str(path), "bitbrains")
    records = list(trace)
    source = _bitbrains_source(path)
    assert trace.quirks["rows"] == len(source)
    assert trace.quirks["cpu_clamped"] == sum(1 for row in source if row[4] > 100) > 0
    assert trace.quirks["bad_row"] == trace.quirks["vm_off"] == 0
    by_ts = {r.ts: r for r in records}
    assert len(by_ts) == len(records)
    for row in source:
        stamp = int(row[0])
        for k in range(5):
            record = by_ts.get(stamp + 60 * k)
            if record is None:  # only when the next row came early
                assert k > 0 and trace.quirks["short_hold"] > 0
                continue
            assert record.cpu == min(row[4], 100.0)
            assert record.mem == min(row[6] / row[5] * 100.0, 100.0)
            assert (record.disk_r, record.disk_w, record.net_rx, record.net_tx) == tuple(
                v * 1024 for v in row[7:11])
            assert record.vcpus == int(row[1])


def test_folder_of_traces_totals_quirks_and_maps_ids(tmp_path):
    vm_map = tmp_path / "map.csv"
    vm_map.write_text("source,vm\n410,10.1.4.10\n")
    quirks = Counter()
    mapping = traces.load_vm_map(str(vm_map))
    found = list(read_traces([str(DATA / "bitbrains")], "bitbrains", quirks=quirks, vm_map=mapping))
    assert [Path(t.path).name for t in found] == ["410.csv.gz", "429.csv.gz"]
    vms = set()
    for trace in found:
        vms.update(r.vm for r in trace)
    assert vms == {"10.1.4.10", "bitbrains-429"}
    assert quirks["gap"] >= 1 and quirks["mem_capacity_change"] >= 1 and quirks["cpu_clamped"] > 0


@pytest.mark.parametrize("content, problem", [
    (b"source,vm\nweb-\xe9,10.0.0.1\n", ": not UTF-8 at byte 14 (line 2)"),
    (b"source,vm\n410\n", ":2: expected 'source,vm'"),
    (b"410,\"" + b"x" * 200000 + b"\"\n", ":1: field larger than field limit"),
    (b"source,vm\r\n410,bad id!\r\n", ":2: "),
])
def test_a_vm_map_that_cannot_be_used_is_one_error_naming_it(tmp_path, content, problem):
    vm_map = tmp_path / "map.csv"
    vm_map.write_bytes(content)
    with pytest.raises(TraceError) as caught:
        traces.load_vm_map(str(vm_map))
    assert str(caught.value).startswith("VM map %s%s" % (vm_map, problem))
    assert "\n" not in str(caught.value)


def test_planetlab_starts_at_the_documented_day_and_needs_memory_filled():
    path = next((DATA / "planetlab").iterdir())
    values = [int(line) for line in path.read_text().split()]
    trace = read_trace(str(path), "planetlab")
    records = list(trace)
    start = int(traces.PLANETLAB_START.timestamp())
    assert records[0].ts == start and len(records) == 5 * len(values) == 1440
    assert [r.cpu for r in records[::5]] == values
    assert records[7].mem is None  # the trace has no memory: unknown, never zero
    assert len(records[0].vm) <= 64 and records[0].vm.startswith("planetlab-")
    filled = list(read_trace(str(path), "planetlab", fill={"mem": 40.0}, start=start + 86400))
    assert filled[0].ts == start + 86400 and {r.mem for r in filled} == {40.0}


def test_generic_csv_with_iso_and_epoch_times(tmp_path):
    path = tmp_path / "fleet.csv"
    path.write_text("vm,timestamp,cpu,mem,net_rx,vcpus\n"
                    "web1,2024-05-01T00:00:00Z,12.5,40,100,2\n"
                    "db1,1714521600000,130,55.5,,8\n"
                    "web1,1714521660,1.25,41,,2\n"
                    "web1,not-a-time,1,1,,2\n")
    trace = read_trace(str(path), "csv")
    records = sorted(trace, key=lambda r: (r.vm, r.ts))
    assert [(r.vm, r.ts, r.cpu, r.mem, r.net_rx, r.vcpus) for r in records] == [
        ("db1", 1714521600, 100.0, 55.5, None, 8),
        ("web1", 1714521600, 12.5, 40.0, 100.0, 2),
        ("web1", 1714521660, 1.25, 41.0, None, 2),
    ]
    assert trace.quirks["bad_row"] == 1 and trace.quirks["cpu_clamped"] == 1


@pytest.mark.parametrize("content, message", [
    ("vm,when,cpu\n", "lacks timestamp"),
    ("vm,timestamp,cpu,mem,colour\n", "unknown csv column"),
])
def test_generic_csv_bad_header_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(TraceError, match=message):
        list(read_trace(str(path), "csv"))


def test_unreadable_inputs_raise_trace_errors(tmp_path):
    with pytest.raises(TraceError, match="no such trace"):
        read_trace(str(tmp_path / "missing.csv"), "csv")
    with pytest.raises(TraceError, match="unknown trace format"):
        read_trace(str(QUIRKS_FILE), "parquet")
    notbb = tmp_path / "x.csv"
    notbb.write_text("hello\n1\n")
    with pytest.raises(TraceError, match="not a bitbrains file"):
        list(read_trace(str(notbb), "bitbrains"))


def test_safe_vm_ids_are_stable_distinct_and_valid():
    long_a = "x" * 70 + "a"
    long_b = "x" * 70 + "b"
    quirks = Counter()
    a, b = traces.safe_vm_id(long_a, quirks), traces.safe_vm_id(long_b, quirks)
    assert a != b and len(a) <= 64 and a == traces.safe_vm_id(long_a)
    assert traces.safe_vm_id("web 1/../x") .startswith("web-1")
    assert quirks["renamed_vm"] == 2
    assert traces.safe_vm_id("10.0.0.5") == "10.0.0.5"


def test_a_trace_is_a_one_pass_iterator_that_reads_lazily(tmp_path):
    path = tmp_path / "late.csv"
    path.write_text("vm,timestamp,cpu,mem\nweb1,1714521600,1,2\n")
    trace = read_trace(str(path), "csv")
    path.write_text("vm,timestamp,cpu,mem\nweb2,1714521600,3,4\n")  # nothing read before next()
    assert next(trace).vm == "web2" and list(trace) == [] and trace.quirks["rows"] == 1


def test_broken_files_keep_what_was_readable_or_fail_readably(tmp_path):
    whole = (DATA / "bitbrains" / "429.csv.gz").read_bytes()
    truncated = tmp_path / "429.csv.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    trace = read_trace(str(truncated), "bitbrains")
    records = list(trace)
    assert trace.quirks["unreadable_rest"] == 1 and 1000 < len(records) < 5 * 8617
    notgz = tmp_path / "401.csv.gz"
    notgz.write_bytes(b"this is not gzip\n")
    with pytest.raises(TraceError, match="cannot read"):
        list(read_trace(str(notgz), "bitbrains"))
    odd = tmp_path / "odd.csv"
    odd.write_bytes(b"vm,timestamp,cpu,mem\nweb1,1714521600,1,2\nweb1,17145216\x0060,1,2\n"
                    b"web1,inf,1,2\nweb1,1714521720,1,2\n")
    trace = read_trace(str(odd), "csv")
    assert [r.ts for r in trace] == [1714521600, 1714521720] and trace.quirks["bad_row"] == 2


def test_a_trace_folder_as_published_replays_without_its_papers(tmp_path):
    """A published trace folder carries a README, a MANIFEST and a licence beside the data."""
    folder = tmp_path / "trace"
    folder.mkdir()
    data = (DATA / "bitbrains" / "410.csv.gz").read_bytes()
    (folder / "410.csv.gz").write_bytes(data)
    (folder / "MANIFEST.tsv").write_text("file\tsha256\n410.csv.gz\t0\n")
    (folder / "README.md").write_text("# a trace\n")
    (folder / "LICENSE").write_text("terms\n")
    assert [Path(p).name for p in traces.find_trace_files([str(folder)])] == ["410.csv.gz"]
    # Named on the command line, a file is read whatever its name, and refused readably.
    with pytest.raises(TraceError, match="not a bitbrains file"):
        [record for trace in read_traces([str(folder / "MANIFEST.tsv")], "bitbrains") for record in trace]


#: GWA-T-13 (Materna): the GWA-T-12 columns with two more among them and dates for timestamps.
MATERNA_HEADER = ("Timestamp; CPU cores; CPU capacity provisioned [MHZ]; CPU usage [MHZ]; CPU usage [%]; "
                  "Memory capacity provisioned [KB]; Memory usage [KB]; Memory usage [%]; "
                  "Disk read throughput [KB/s]; Disk write throughput [KB/s]; Disk size [GB]; "
                  "Network received throughput [KB/s]; Network transmitted throughput [KB/s]")


def as_materna(path: Path, out: Path, rows: int = 60, comma: bool = False) -> None:
    """The first ``rows`` rows of a GWA-T-12 file laid out as GWA-T-13 publishes them (``comma``:
    numbers with a decimal comma, as a German-locale export writes them)."""
    lines = []
    number = (lambda v: repr(v).replace(".", ",")) if comma else repr
    for cells in _bitbrains_source(path)[:rows]:
        stamp = datetime.datetime.fromtimestamp(cells[0], datetime.timezone.utc)
        mem_pct = cells[6] / cells[5] * 100 if cells[5] else 0.0
        lines.append("; ".join([stamp.strftime("%d.%m.%Y %H:%M:%S"), *map(number, cells[1:7]),
                                number(mem_pct), *map(number, cells[7:9]), "40", *map(number, cells[9:11])]))
    out.write_text(MATERNA_HEADER + "\n" + "\n".join(lines) + "\n")


def test_materna_files_read_as_the_same_records_by_their_headers(tmp_path):
    """Columns are found by name: the GWA-T-13 layout (13 columns, dates) gives the records its
    GWA-T-12 twin gives, and a header without a needed column is one readable error."""
    source = DATA / "bitbrains" / "410.csv.gz"
    materna = tmp_path / "410.csv"
    as_materna(source, materna)
    stamps = [int(cells[0]) for cells in _bitbrains_source(source)[:60]]
    twelve = [r for r in read_trace(str(source), "bitbrains", vm="vm") if r.ts < stamps[-1]]
    thirteen = [r for r in read_trace(str(materna), "bitbrains", vm="vm") if r.ts < stamps[-1]]
    assert len(thirteen) > 250 and thirteen == twelve
    as_materna(source, tmp_path / "commas.csv", comma=True)
    assert "," in (tmp_path / "commas.csv").read_text().splitlines()[1]
    commas = read_trace(str(tmp_path / "commas.csv"), "bitbrains", vm="vm")
    assert [r for r in commas if r.ts < stamps[-1]] == twelve
    shouted = tmp_path / "shouted.csv"  # headers in another case and spacing
    shouted.write_text(materna.read_text().replace(MATERNA_HEADER,
                                                   MATERNA_HEADER.upper().replace("; ", ";  ")))
    assert [r for r in read_trace(str(shouted), "bitbrains", vm="vm") if r.ts < stamps[-1]] == twelve
    broken = tmp_path / "broken.csv"
    broken.write_text(MATERNA_HEADER.replace("Disk read throughput [KB/s]; ", "") + "\n")
    with pytest.raises(TraceError, match="header without 'Disk read throughput'"):
        list(read_trace(str(broken), "bitbrains"))


def _replay(tmp_path, server, *paths):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "vmstats", "replay", "--format", "csv",
                           "--server", "127.0.0.1:%d" % server.tcp_port, *map(str, paths)],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=120)


def test_a_trace_refused_for_its_header_stops_the_replay_before_anything_is_sent(tmp_path):
    """17 good files (a turn of 60 records each: one acknowledged batch of 1,020) and one whose
    header lacks cpu: refused as bad input (2) with nothing sent, since the headers are read
    before the first send. Before, the good files' batch went to the server and the replay then
    stopped with exit 1, as if the run had failed on the way."""
    from serverproc import serve

    good = []
    for n in range(17):
        path = tmp_path / ("good-%02d.csv" % n)
        path.write_text("vm,timestamp,cpu,mem\n" + "".join(
            "web%d,%d,1,2\n" % (n, 1714521600 + 60 * k) for k in range(60)))
        good.append(path)
    bad = tmp_path / "z-bad.csv"
    bad.write_text("vm,timestamp,cpux,mem\nweb99,1714521600,1,2\n")
    with serve(tmp_path / "server") as server:
        result = _replay(tmp_path, server, *good, bad)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            "Error: %s: csv header lacks cpu (needs vm,timestamp,cpu and usually mem)" % bad]
        assert server.metrics().get("vmstats_records_received_total", 0) == 0
    assert not list((tmp_path / "server" / "data" / "vms").glob("*"))


def test_a_csv_trace_saved_by_a_spreadsheet_with_its_byte_order_mark_replays(tmp_path):
    """Excel's "CSV UTF-8" starts the file with a byte-order mark (and ends lines with CRLF):
    it stuck to the first name, and the replay said the header lacked vm."""
    from serverproc import serve

    path = tmp_path / "sheet.csv"
    path.write_bytes(b"\xef\xbb\xbfvm,timestamp,cpu,mem\r\nweb1,1714521600,1.5,2\r\n"
                     b"web1,1714521660,2.5,3\r\n")
    with serve(tmp_path / "server", "--flush-interval", "0.3") as server:
        result = _replay(tmp_path, server, path)
        assert result.returncode == 0, result.stderr
        server.wait_received(2)
    day = tmp_path / "server" / "data" / "vms" / "web1" / "2024-05-01.csv"
    assert [line.split(",")[:4] for line in day.read_text().splitlines()[1:]] == [
        ["1714521600", "1.5", "", "2"], ["1714521660", "2.5", "", "3"]]


def test_rows_are_held_for_their_own_spacing_unless_an_interval_is_given(tmp_path):
    """A Bitbrains-layout trace of 15-minute rows (every third row of a real file), or a CSV of
    5-minute rows: each row stood for 5 minutes (1 for the CSV) and the rest of its interval was
    sent as a gap, a third (a fifth) of the fleet's minutes.  Each VM's rows are now held for
    their median spacing; ``interval=`` still says it outright."""
    source = DATA / "bitbrains" / "410.csv.gz"
    with gzip.open(source, "rt") as handle:
        lines = handle.read().splitlines()
    coarse = tmp_path / "coarse.csv"
    coarse.write_text("\n".join([lines[0], *lines[1:61:3]]) + "\n")
    stamps = [int(float(line.split(";")[0])) for line in lines[1:61:3]]
    assert {b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)} <= {899, 900, 901}
    trace = read_trace(str(coarse), "bitbrains")
    held = [r.ts for r in trace]
    assert held == [ts + 60 * k for ts in stamps for k in range(15)]
    assert trace.quirks["other_interval"] == 1 and trace.quirks["gap"] == 0
    told = read_trace(str(coarse), "bitbrains", interval=300)
    assert len(list(told)) == 5 * len(stamps) and told.quirks["gap"] == len(stamps) - 1

    fleet = tmp_path / "fleet.csv"
    fleet.write_text("vm,timestamp,cpu,mem\n" + "".join(
        "web1,%d,1,2\n" % (1714521600 + 300 * k) for k in range(4)))
    trace = read_trace(str(fleet), "csv")
    assert [r.ts for r in trace] == [1714521600 + 60 * k for k in range(20)]
    assert trace.quirks["other_interval"] == 1


#: A trace of times from its own start, as a benchmark or a spreadsheet writes one.
RELATIVE = "vm,timestamp,cpu,mem\nrel1,0,10,20\nrel1,60,11,21\nrel1,120,12,22\n"


def test_a_relative_csv_trace_counts_from_start_and_keeps_its_first_row(tmp_path):
    """Stamps 0, 60, 120 were sent as they were: the server refused the first (0) and filed the
    rest in 1970-01-01.csv, and refuses all three now (nothing before 2000 is a set clock's)."""
    path = tmp_path / "rel.csv"
    path.write_text(RELATIVE + "rel1,1714521600,13,23\n")  # an absolute stamp stays as it is
    start = 1_796_083_200
    assert [(r.ts, r.cpu) for r in read_trace(str(path), "csv", start=start)] == [
        (1714521600, 13.0), (start, 10.0), (start + 60, 11.0), (start + 120, 12.0)]
    with pytest.raises(TraceError, match=r"rel\.csv: timestamp 0 is before 2000-01-01T00:00:00Z, "
                                         r"the first moment the server takes a stamp from: .* "
                                         r"pass --start TIME"):
        read_trace(str(path), "csv")  # refused as the file is opened, before any record is read
    late = tmp_path / "late.csv"  # relative past its first row: refused as it is met
    late.write_text("vm,timestamp,cpu,mem\nrel2,1714521600,1,2\nrel2,60,1,2\n")
    with pytest.raises(TraceError, match=r"late\.csv: timestamp 60 is before 2000"):
        list(read_trace(str(late), "csv"))


def test_a_relative_csv_trace_replays_whole_from_start_and_without_it_sends_nothing(tmp_path):
    from serverproc import serve

    path = tmp_path / "rel.csv"
    path.write_text(RELATIVE)
    with serve(tmp_path / "server", "--flush-interval", "0.3") as server:
        result = _replay(tmp_path, server, path)
        assert result.returncode == 2, result.stderr
        assert "pass --start TIME" in result.stderr.splitlines()[-1], result.stderr
        result = _replay(tmp_path, server, "--start", "2026-12-01T00:00Z", path)
        assert result.returncode == 0, result.stderr
        server.wait_received(3)
        assert server.metrics()['vmstats_rejected_total{reason="past_timestamp"}'] == 0
    assert sorted(os.listdir(tmp_path / "server" / "data" / "vms" / "rel1")) == ["2026-12-01.csv"]
    day = tmp_path / "server" / "data" / "vms" / "rel1" / "2026-12-01.csv"
    assert [line.split(",")[:4] for line in day.read_text().splitlines()[1:]] == [
        ["1796083200", "10", "", "20"], ["1796083260", "11", "", "21"], ["1796083320", "12", "", "22"]]
