"""Benchmark of the storage tiers: bytes at rest, cold reports per tier, compaction under SIGKILL.

In one run:

* the real trace (shared Bitbrains sample, 40 VMs x one month, 5-minute rows held for five
  minutes as the replay does: per-minute records) written as the server writes it, then
  compacted by ``vmstats compact``: bytes per record in CSV and in the columnar tier, bytes
  per VM-day of the rollups;
* the same synthetic per-minute fleet bench/report.py uses (noisy values, 1,000 VMs x 1
  day): the same figures on data that compresses worse;
* a cold ``vmstats report`` (no cache) over the real trace as CSV, as columnar files and as
  rollups, same run: the ratios the targets are about;
* a 90-day report for 1,000 VMs from rollups: the synthetic fleet-day's rollups (computed
  by compaction) copied to 90 consecutive days with their timestamps moved, then a cold
  ``vmstats report --days 90``, and the same over those rollups with dense histograms (the
  layout before they were kept sparse) as the same run's reference;
* compaction of the real trace killed with SIGKILL at random moments (``--kills``, 10),
  every row checked after each kill (every row readable once across the tiers, no
  duplicate in a columnar file) and after a final pass (no CSV left, the rows as before).

Run: ``.venv/bin/python bench/storage.py`` (data cached in bench/out/); ``--ninety-only`` runs
the synthetic fleet's compaction and the 90-day reports only.
"""

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import report as report_bench  # noqa: E402

from vmstats import logstore  # noqa: E402
from vmstats.report.discover import discover  # noqa: E402

OUT = ROOT / "bench" / "out" / "storage"
TRACE = ROOT.parent / "shared" / "traces" / "bitbrains-rnd-2013-8-sample"
KEEP = ["--retain-raw", "36500d", "--retain-rollups", "36500d"]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


#: CPU seconds (user + system) of the last vmstats() run: on a machine shared with other work
#: the wall time stretches with the load, the CPU time much less.
LAST_CPU = [0.0]


def vmstats(*args: str, timeout: float = 1800) -> tuple[float, str]:
    began = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "vmstats", *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU[0] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if done.returncode != 0:
        raise SystemExit("vmstats %s failed:\n%s" % (" ".join(args), done.stderr[-2000:]))
    return time.monotonic() - began, done.stdout


def real_trace_csv() -> Path:
    """The trace's per-minute records, written by the writer's own append (cached)."""
    from vmstats.simulator.traces import read_traces

    data = OUT / "real-csv"
    marker = data / "written.json"
    if marker.exists():
        return data
    shutil.rmtree(data, ignore_errors=True)
    records = 0
    for trace in read_traces([str(TRACE)], "bitbrains"):
        rows, vm = {}, None
        for record in trace:
            rows[record.ts] = logstore.format_tail(record)
            vm = record.vm
        logstore.append_missing(str(data), vm, rows)
        records += len(rows)
    marker.write_text(json.dumps({"records": records}))
    return data


def size(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern))


def compacted_copy(csv_dir: Path, name: str) -> tuple[Path, float]:
    target = OUT / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(csv_dir, target, ignore=shutil.ignore_patterns("*.json"))
    seconds, _out = vmstats("compact", "--data-dir", str(target), "--compact-after", "0s", *KEEP)
    return target, seconds


def at_rest(label: str, csv_dir: Path, records: int) -> Path:
    compacted, seconds = compacted_copy(csv_dir, label + "-compacted")
    csv_bytes = size(csv_dir / "vms", "*/*.csv")
    columnar = size(compacted / "columnar", "*.parquet")
    rollups = size(compacted / "rollups", "*.parquet")
    vm_days = sum(len(logstore.tier_info(str(p))["vms"]) for p in (compacted / "rollups").glob("*.parquet"))
    print("%s: %d records, %d VM-days; CSV %.1f B/record; columnar %.2f B/record; rollups %.0f B/VM-day; "
          "compaction %.1f s (%.0f records/s)"
          % (label, records, vm_days, csv_bytes / records, columnar / records, rollups / vm_days, seconds,
             records / seconds))
    return compacted


def cold_report(data_dir: Path, days: int, extra=()) -> float:
    out = OUT / "report-out"
    seconds, _ = vmstats("report", str(data_dir), "-o", str(out), "--no-cache", "--days", str(days), *extra)
    return seconds


def without(source: Path, tier: str, name: str) -> Path:
    target = OUT / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    shutil.rmtree(target / tier)
    return target


def dense_histograms(table):
    """A rollup table with its histograms as dense fixed-size lists (the layout rollups had before
    they were kept sparse): the reference the sparse layout is measured against."""
    vms, data = logstore.rollup_arrays(table)
    for name, values in data.items():
        if isinstance(values, logstore.SparseRows):
            dense = np.zeros((len(values.offsets) - 1, values.width), np.uint32)
            rows = np.repeat(np.arange(len(dense)), np.diff(values.offsets))
            dense[rows, values.col] = values.value
            data[name] = dense.astype(np.uint16) if dense.max(initial=0) <= 0xFFFF else dense
    labels = list(zip(*(table.column(c).to_pylist() for c in ("label_ts", "host", "tags")), strict=True))
    return logstore.rollup_table(vms, labels, data)


def ninety_days(compacted: Path, days: int = 90, dense: bool = False) -> Path:
    """One real-computed fleet-day of rollups copied to ``days`` consecutive days (``dense``:
    with dense histograms)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (_name, path), = logstore.tier_days(str(compacted), logstore.ROLLUPS_DIR)
    table = pq.read_table(path)
    if dense:
        table = dense_histograms(table)
    info = logstore.tier_info(path)
    first = logstore.day_number(_name)
    target = OUT / ("rollups-90-dense" if dense else "rollups-90")
    shutil.rmtree(target, ignore_errors=True)
    for k in range(days):
        moved = table
        for column in ("first_ts", "last_ts", "label_ts"):
            index = moved.column_names.index(column)
            shifted = pa.array(moved.column(column).to_numpy() + k * 86400)
            moved = moved.set_column(index, column, shifted)
        name = logstore.day_name(first + k)
        writer = logstore.rollup_writer(logstore.tier_path(str(target), logstore.ROLLUPS_DIR, name))
        writer.add(moved)
        writer.close(dict(info, day=name))
        writer.commit()
    return target


def ninety(compacted: Path, vms: int) -> None:
    """The 90-day report from rollups, and from the same rollups with dense histograms (reference)."""
    sparse, dense = ninety_days(compacted), ninety_days(compacted, dense=True)
    seconds = cold_report(sparse, 90)
    cpu_sparse = LAST_CPU[0]
    seconds_dense = cold_report(dense, 90)
    print("90-day report for %d VMs from rollups (cold, --no-cache): %.2f s wall, %.2f s CPU; "
          "the same rollups with dense histograms, same run: %.2f s wall, %.2f s CPU (%.2fx CPU)"
          % (vms, seconds, cpu_sparse, seconds_dense, LAST_CPU[0], cpu_sparse / LAST_CPU[0]))


def all_rows(data_dir: Path) -> dict:
    """(vm, ts) -> the row's values, over every raw tier, merged as the readers merge them."""
    units = discover([str(data_dir)], raw_only=True)
    keys = sorted(units)
    sources = [s for key in keys for s in units[key]]
    owner = np.repeat(np.arange(len(keys)), [len(units[key]) for key in keys])
    frame, _bad = logstore.read_columns(sources, as_float=True)
    frame["vm"] = np.asarray([k[0] for k in keys], dtype=object)[owner[frame["file"].to_numpy()]]
    frame = frame.drop(columns=["file", "host", "tags"]).drop_duplicates(["vm", "ts"], keep="last")
    return frame.sort_values(["vm", "ts"]).reset_index(drop=True)


def columnar_duplicates(data_dir: Path) -> int:
    import pyarrow.parquet as pq

    found = 0
    for path in (data_dir / "columnar").glob("*.parquet"):
        table = pq.read_table(path, columns=["vm", "ts"])
        pairs = list(zip(table.column("vm").to_pylist(), table.column("ts").to_pylist(), strict=True))
        found += len(pairs) - len(set(pairs))
    return found


def kills(csv_dir: Path, count: int, seed: int) -> None:
    target = OUT / "killed"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(csv_dir, target, ignore=shutil.ignore_patterns("*.json"))
    expected = all_rows(target)
    rng = random.Random(seed)
    killed = 0
    for _ in range(count):
        proc = subprocess.Popen([sys.executable, "-m", "vmstats", "compact", "--data-dir", str(target),
                                 "--compact-after", "0s", *KEEP], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        moment = rng.uniform(0.5, 12.0)
        try:
            proc.wait(moment)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed += 1
        rows = all_rows(target)
        same = rows.equals(expected)
        left = len(list(target.glob("vms/*/*.csv")))
        print("  kill at %.1f s: %s; %d rows readable (expected %d), columnar duplicates %d, "
              "CSV files left %d"
              % (moment, "killed" if proc.returncode == -signal.SIGKILL else "finished first",
                 len(rows), len(expected), columnar_duplicates(target), left))
        if not same:
            raise SystemExit("rows differ after a kill")
    vmstats("compact", "--data-dir", str(target), "--compact-after", "0s", *KEEP)
    final = all_rows(target)
    print("SIGKILL x%d (%d landed mid-pass), then a whole pass: %d rows, identical: %s; CSV files left %d, "
          "columnar duplicates %d"
          % (count, killed, len(final), final.equals(expected), len(list(target.glob("vms/*/*.csv"))),
             columnar_duplicates(target)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--ninety-only", action="store_true",
                        help="only the synthetic fleet's compaction and the 90-day report from rollups")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.ninety_only:
        synthetic = OUT / "synthetic-csv"
        records = report_bench.generate(synthetic, args.vms, 1)
        ninety(at_rest("synthetic", synthetic, records), args.vms)
        return

    real = real_trace_csv()
    records = json.loads((real / "written.json").read_text())["records"]
    real_compacted = at_rest("real trace", real, records)
    synthetic = OUT / "synthetic-csv"
    synthetic_records = report_bench.generate(synthetic, args.vms, 1)
    synthetic_compacted = at_rest("synthetic", synthetic, synthetic_records)

    columnar_only = without(real_compacted, "rollups", "real-columnar")
    rollups_only = without(real_compacted, "columnar", "real-rollups")
    times, cpu = {}, {}
    for name, path in (("csv", real), ("columnar", columnar_only), ("rollups", rollups_only)):
        times[name] = cold_report(path, 31)
        cpu[name] = LAST_CPU[0]
    print("cold report, real trace (31 days, --no-cache), wall (CPU): CSV %.2f s (%.2f s), "
          "columnar %.2f s (%.2f s) = %.2fx (%.2fx), rollups %.2f s (%.2f s) = %.2fx (%.2fx)"
          % (times["csv"], cpu["csv"], times["columnar"], cpu["columnar"], times["columnar"] / times["csv"],
             cpu["columnar"] / cpu["csv"], times["rollups"], cpu["rollups"], times["rollups"] / times["csv"],
             cpu["rollups"] / cpu["csv"]))

    ninety(synthetic_compacted, args.vms)

    if args.kills:
        kills(real, args.kills, args.seed)


if __name__ == "__main__":
    main()
