"""The accuracy benchmark's ground truth (bench/labels.py) and published rules (bench/advisors.py).

They grade the policy, so they are checked here on small Bitbrains-format
files with the trace's quirks: off rows, duplicate timestamps, gaps, CPU
above 100%.
"""

import datetime
import gzip
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import advisors  # noqa: E402
import labels  # noqa: E402
import tracereplay  # noqa: E402

HEADER = (
    "Timestamp [ms];\tCPU cores;\tCPU capacity provisioned [MHZ];\tCPU usage [MHZ];\tCPU usage [%];\t"
    "Memory capacity provisioned [KB];\tMemory usage [KB];\tDisk read throughput [KB/s];\t"
    "Disk write throughput [KB/s];\tNetwork received throughput [KB/s];\t"
    "Network transmitted throughput [KB/s]"
)
T0 = 1375315200  # 2013-08-01T00:00:00Z
DAY = 86400
WEEK = 7 * DAY


def write(path, rows):
    """rows: (ts, cpu %, net KB/s) or (ts, cpu, net, cores); 2 cores, 4 GB, 1 GB used by default."""
    lines = [HEADER]
    for row in rows:
        ts, cpu, net = row[:3]
        cores = row[3] if len(row) > 3 else 2
        lines.append(";\t".join(str(v) for v in (ts, cores, 5000.0 if cores else 0, cpu * 50, cpu, 4194304.0,
                                                  1048576.0, 0.0, 1.0, net / 2, net / 2)))  # fmt: skip
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return labels.read(path)


def quiet_rows(start, end, cpu=1.0, net=2.0):
    return [(ts, cpu, net) for ts in range(start, end, 300)]


def test_a_thirty_minute_stretch_is_busy_and_twenty_five_minutes_is_not(tmp_path):
    rows = quiet_rows(T0, T0 + WEEK)
    rows = [(ts, 80.0 if T0 + DAY <= ts < T0 + DAY + 1800 else c, n) for ts, c, n in rows]
    trace = write(tmp_path / "1.csv.gz", rows)
    assert labels.label(trace, T0, T0 + WEEK) == "busy"
    assert labels.stretches(trace.ts, labels.work_rows(trace)) == [(T0 + DAY, T0 + DAY + 1800)]
    short = T0 + DAY + 1500
    rows = [(ts, 80.0 if T0 + DAY <= ts < short else c, n) for ts, c, n in quiet_rows(T0, T0 + WEEK)]
    assert labels.label(write(tmp_path / "2.csv.gz", rows), T0, T0 + WEEK) == "quiet"


def test_off_rows_are_absent_duplicates_keep_the_last_and_a_gap_breaks_a_stretch(tmp_path):
    rows = quiet_rows(T0, T0 + WEEK)
    # A VM switched off for most of the week is unknown, not quiet.
    off = [(ts, 0.0, 0.0, 0) if ts >= T0 + DAY else (ts, c, n) for ts, c, n in rows]
    assert labels.label(write(tmp_path / "off.csv.gz", off), T0, T0 + WEEK) == "unknown"
    # Three busy rows, a 20-minute gap, three busy rows: two runs of 15 minutes, no stretch;
    # a duplicate of a quiet row later rewritten busy counts as busy (the last row wins).
    start = T0 + 2 * DAY
    gap = [r for r in rows if not start + 900 <= r[0] < start + 2100]
    busy = [(ts, 150.0 if start <= ts < start + 3000 else c, n) for ts, c, n in gap]
    trace = write(tmp_path / "gap.csv.gz", busy + [(start + 2100, 1.0, 2.0), (start + 2100, 90.0, 2.0)])
    assert len(trace.ts) == len(set(trace.ts.tolist()))
    assert trace.cpu[trace.ts == start + 2100][0] == 90.0
    assert labels.stretches(trace.ts, labels.work_rows(trace)) == []


def test_a_steady_service_is_neither_quiet_nor_busy(tmp_path):
    trace = write(tmp_path / "svc.csv.gz", quiet_rows(T0, T0 + WEEK, cpu=2.0, net=40.0))
    assert labels.label(trace, T0, T0 + WEEK) == "neither"


def test_overrun_share_counts_rows_above_the_new_size(tmp_path):
    rows = quiet_rows(T0, T0 + DAY, cpu=10.0)  # 0.2 of 2 cores
    rows[:72] = [(ts, 75.0, n) for ts, _c, n in rows[:72]]  # 1.5 cores for a quarter of the day
    trace = write(tmp_path / "o.csv.gz", rows)
    assert labels.overrun_share(trace, T0, T0 + DAY, vcpus=1, mem_gb=2) == pytest.approx(0.25)
    assert labels.overrun_share(trace, T0, T0 + DAY, vcpus=2, mem_gb=0.5) == 1.0  # 1 GB used


def test_published_rules(tmp_path):
    # 20 B/s is 1.7 MB a day, under Trusted Advisor's 5 MB (a steady 2 KB/s is 177 MB: never low).
    quiet = write(tmp_path / "q.csv.gz", quiet_rows(T0, T0 + 2 * WEEK, net=0.02))
    assert advisors.trusted_advisor(quiet, T0, T0 + 2 * WEEK)
    assert advisors.azure_advisor(quiet, T0, T0 + 2 * WEEK)
    # 4% CPU all the time: a low day for Trusted Advisor, not idle for Azure (P95 of max >= 3%).
    low = write(tmp_path / "l.csv.gz", quiet_rows(T0, T0 + 2 * WEEK, cpu=4.0, net=0.02))
    assert advisors.trusted_advisor(low, T0, T0 + 2 * WEEK)
    assert not advisors.azure_advisor(low, T0, T0 + 2 * WEEK)
    # 100 KB/s all the time is 8.6 GB a day: never a low day.
    chatty = write(tmp_path / "c.csv.gz", quiet_rows(T0, T0 + 2 * WEEK, net=100.0))
    assert not advisors.trusted_advisor(chatty, T0, T0 + 2 * WEEK)


def test_a_folder_of_plain_csv_files_reads_as_the_gzipped_ones(tmp_path):
    """Another fleet may come as the archive publishes it, ``N.csv``, and without a manifest."""
    rows = quiet_rows(T0, T0 + WEEK)
    zipped, plain = tmp_path / "gz", tmp_path / "plain"
    zipped.mkdir()
    plain.mkdir()
    expected = write(zipped / "7.csv.gz", rows)
    (plain / "7.csv").write_bytes(gzip.decompress((zipped / "7.csv.gz").read_bytes()))
    assert [p.name for p in labels.trace_files(plain)] == ["7.csv"]
    read = labels.read_all(plain)["7"]
    assert len(read.ts) == len(rows) and (read.ts == expected.ts).all() and (read.cpu == expected.cpu).all()
    # The replay's cache key comes from the files when there is no MANIFEST.tsv, and follows them.
    key = tracereplay.manifest_key(plain)
    assert key == tracereplay.manifest_key(plain) != tracereplay.manifest_key(zipped)
    (plain / "7.csv").write_text((plain / "7.csv").read_text() + "\n")
    assert tracereplay.manifest_key(plain) != key
    with pytest.raises(SystemExit, match="holds no trace files"):
        tracereplay.manifest_key(tmp_path)


def test_materna_layout_reads_as_the_same_trace(tmp_path):
    """GWA-T-13 (Materna) files: the same columns found by name among two more, dates for
    timestamps (read as UTC); the labels see the same rows."""
    rows = quiet_rows(T0, T0 + DAY) + [(T0 + DAY + 300 * k, 80.0, 2.0) for k in range(8)]
    expected = write(tmp_path / "5.csv.gz", rows)
    header = ("Timestamp; CPU cores; CPU capacity provisioned [MHZ]; CPU usage [MHZ]; CPU usage [%]; "
              "Memory capacity provisioned [KB]; Memory usage [KB]; Memory usage [%]; "
              "Disk read throughput [KB/s]; Disk write throughput [KB/s]; Disk size [GB]; "
              "Network received throughput [KB/s]; Network transmitted throughput [KB/s]")
    lines = [header]
    for ts, cpu, net in rows:
        stamp = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%d.%m.%Y %H:%M:%S")
        lines.append("; ".join(str(v) for v in (stamp, 2, 5000.0, cpu * 50, cpu, 4194304.0, 1048576.0, 25.0,
                                                0.0, 1.0, 40, net / 2, net / 2)))  # fmt: skip
    (tmp_path / "5.csv").write_text("\n".join(lines) + "\n")
    # The same file as a German-locale spreadsheet exports it: decimal commas.
    (tmp_path / "comma" / "5.csv").parent.mkdir()
    commas = [lines[0]] + ["; ".join([cells[0]] + [cell.replace(".", ",") for cell in cells[1:]])
                           for cells in (line.split("; ") for line in lines[1:])]  # fmt: skip
    assert any(",0" in line for line in commas)
    (tmp_path / "comma" / "5.csv").write_text("\n".join(commas) + "\n")
    # Headers in another case and spacing, and stamps in real milliseconds: the same rows.
    (tmp_path / "ms" / "5.csv").parent.mkdir()
    millis = [lines[0].upper().replace("; ", ";  ")] + [
        "; ".join([str(int(ts) * 1000)] + line.split("; ")[1:])
        for (ts, _c, _n), line in zip(rows, lines[1:], strict=True)]
    (tmp_path / "ms" / "5.csv").write_text("\n".join(millis) + "\n")
    for read in (labels.read(tmp_path / "5.csv"), labels.read(tmp_path / "comma" / "5.csv"),
                 labels.read(tmp_path / "ms" / "5.csv")):
        for field in ("ts", "cpu", "cores", "mem_kb", "mem_cap_kb", "disk", "net", "net_tx"):
            assert (getattr(read, field) == getattr(expected, field)).all(), field
    (tmp_path / "6.csv").write_text(header.replace("CPU usage [%]; ", "") + "\n")
    with pytest.raises(ValueError, match="no 'CPU usage \\[%\\]' column"):
        labels.read(tmp_path / "6.csv")


def test_a_trace_of_fifteen_minute_rows_is_labelled_by_its_own_step(tmp_path):
    """Rows 15 minutes apart: two work rows in a row are 30 minutes of work (busy), and a day
    of such rows is a whole day of data.  Taken as 5-minute rows, that was 20 minutes of work
    and a third of the day present: the VM was neither busy nor judged at all (unknown)."""
    step = 900
    rows = [(T0 + step * k, 1.0, 2.0) for k in range(DAY // step)]
    rows += [(T0 + DAY + step * k, 80.0 if k < 2 else 1.0, 2.0) for k in range(DAY // step)]
    trace = write(tmp_path / "15.csv.gz", rows)
    assert trace.step == step
    assert labels.label(trace, T0, T0 + DAY) == "quiet"
    assert labels.label(trace, T0 + DAY, T0 + 2 * DAY) == "busy"
    assert labels.stretches(trace.ts, labels.work_rows(trace), trace.step) == [(T0 + DAY, T0 + DAY + 1800)]


def test_a_trace_is_named_as_the_replay_names_its_vm(tmp_path):
    """``web.01.csv`` and ``web.02.csv`` were both ``web`` to the labels, one trace hiding the
    other, and neither matched the replayed VMs ``bitbrains-web.01`` and ``bitbrains-web.02``."""
    folder = tmp_path / "fleet"
    folder.mkdir()
    for name in ("web.01.csv.gz", "web.02.csv.gz"):
        write(folder / name, quiet_rows(T0, T0 + DAY))
    assert sorted(labels.read_all(folder)) == ["web.01", "web.02"]
