"""Benchmark of ``vmstats report`` against DuckDB over the same per-VM logs.

Generates (once, then reused from bench/out/) 1,000 VMs x 14 days of
per-minute logs in the logstore layout, then in one run measures:

* DuckDB computing avg/p95/max of CPU, memory, disk and network per VM from
  the same CSV files (the reference: a fast columnar engine doing the least
  a report must do);
* a cold ``vmstats report`` (empty cache): wall time and peak memory of the
  whole process tree;
* a re-run over unchanged data (warm cache).

Run: ``.venv/bin/python bench/report.py``, once ``VMSTATS_EXTRAS=test,bench ./bin/test --co -q``
has installed the benchmark's extra (DuckDB, psutil) into .venv.
Everything runs locally; nothing listens on the network.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vmstats import logstore  # noqa: E402

OUT = ROOT / "bench" / "out"
START = 1767225600  # 2026-01-01T00:00:00Z, a Thursday
DAY = 86400


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Fixed-width zero-padded ASCII digits of non-negative integers, one row each."""
    out = np.empty((len(values), width), np.uint8)
    rest = values.astype(np.int64)
    for i in range(width - 1, -1, -1):
        out[:, i] = 48 + rest % 10
        rest //= 10
    return out


def _decimal(values: np.ndarray) -> np.ndarray:
    """``ddd.d`` for percentages, written without a Python loop per value."""
    tenths = _digits(np.rint(np.clip(values, 0, 100) * 10), 4)
    dot = np.full((len(values), 1), ord("."), np.uint8)
    return np.hstack([tenths[:, :3], dot, tenths[:, 3:]])


def _workload(index: int, ts: np.ndarray, rng: np.random.Generator):
    """CPU, memory, disk and network series of one VM; the kind depends on its index."""
    n = len(ts)
    hour = (ts // 3600) % 24
    weekday = ((ts // DAY) + 3) % 7  # 0 = Monday
    kind = index % 10
    noise = rng.random(n)
    if kind < 3:  # idle
        cpu = 0.5 + noise * 1.5
        mem = 20 + rng.random() * 10 + noise
        disk = noise * 2000
        net = noise * 400
    elif kind < 5:  # business hours
        busy = (weekday < 5) & (hour >= 8) & (hour < 18)
        cpu = np.where(busy, 30 + noise * 40, 0.5 + noise)
        mem = np.where(busy, 60 + noise * 10, 30 + noise)
        disk = np.where(busy, 1e6 * noise, 1000 * noise)
        net = np.where(busy, 5e5 * noise, 300 * noise)
    elif kind < 6:  # nightly batch
        busy = hour == 2
        cpu = np.where(busy, 85 + noise * 10, 1 + noise)
        mem = np.where(busy, 70 + noise * 5, 25 + noise)
        disk = np.where(busy, 5e6 * noise, 1000 * noise)
        net = np.where(busy, 1e5 * noise, 200 * noise)
    elif kind < 8:  # oversized steady service
        cpu = 8 + noise * 6
        mem = 25 + noise * 5
        disk = 5e4 + noise * 5e4
        net = 2e4 + noise * 3e4
    else:  # busy
        cpu = 40 + 40 * np.sin(ts / 5000.0) ** 2 + noise * 10
        mem = 70 + noise * 20
        disk = 2e6 * noise
        net = 1e6 * noise
    return cpu, mem, disk, net


def _write_vm(args):
    data_dir, index, days = args
    rng = np.random.default_rng(index)
    vm = "10.%d.%d.%d" % (index // 65536, (index // 256) % 256, index % 256)
    ts = START + 60 * np.arange(days * 1440, dtype=np.int64)
    cpu, mem, disk, net = _workload(index, ts, rng)
    vcpus = [1, 2, 4, 8][index % 4]
    mem_mb = [2048, 4096, 8192, 16384][(index // 4) % 4]
    n = len(ts)
    comma = np.full((n, 1), ord(","), np.uint8)
    newline = np.full((n, 1), ord("\n"), np.uint8)
    cpu_max = np.clip(cpu * (1.2 + 0.3 * rng.random(n)), 0, 100)
    parts = [
        _digits(ts, 10),
        comma,
        _decimal(cpu),
        comma,
        _decimal(cpu_max),
        comma,
        _decimal(mem),
        comma,
        _digits(disk * 0.3, 7),
        comma,
        _digits(disk * 0.7, 7),
        comma,
        _digits(net * 0.6, 7),
        comma,
        _digits(net * 0.4, 7),
        comma,
        _digits(np.full(n, vcpus), 1),
        comma,
        _digits(np.full(n, mem_mb), 5),
        comma,
        # The agent's counter, as real logs carry it: the report reads it (one VM id, two
        # machines), and empty cells cost the parse less than real ones.
        _digits(np.arange(n), 6),
        comma,
        newline,
    ]
    block = np.hstack(parts)
    for day in range(days):
        chunk = block[day * 1440 : (day + 1) * 1440].tobytes()
        path = logstore.day_path(data_dir, vm, logstore.day_of(START + day * DAY))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            # Rows without extra tags, under the header of files written before tags existed:
            # what the report reads most, and a header whose columns DuckDB's reference declares.
            handle.write(logstore.HEADER_V1 + chunk)
    return n


def generate(data_dir: Path, vms: int, days: int) -> int:
    """Write the fleet's logs unless the same fleet is already there."""
    marker = data_dir / "generated.json"
    spec = {"vms": vms, "days": days, "start": START, "version": 2}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return vms * days * 1440
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    with ProcessPoolExecutor(2) as pool:
        total = sum(pool.map(_write_vm, [(str(data_dir), i, days) for i in range(vms)], chunksize=20))
    marker.write_text(json.dumps(spec))
    return total


def _tree_rss(pid: int) -> dict[int, int]:
    """Resident bytes of a process and of each of its descendants (from /proc), by pid."""
    found = {}
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            with open("/proc/%d/status" % current) as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        found[current] = int(line.split()[1]) * 1024
            # Each thread's children: a process started from another thread than the main one
            # (Dask's workers, started by its event loop's thread) is listed only under that thread.
            for thread in os.listdir("/proc/%d/task" % current):
                with open("/proc/%d/task/%s/children" % (current, thread)) as handle:
                    stack.extend(int(p) for p in handle.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (0 once it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_measured(command, timeout: float = 300, per_process: dict | None = None, cpu: dict | None = None):
    """Run a command; return (seconds, peak tree RSS bytes, completed process).

    ``per_process``, when given, receives each process's own peak RSS: the
    command's under ``"command"``, its descendants' (workers) by pid; ``cpu``
    the CPU seconds each had used at its last sample (every 50 ms).
    """
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            found = _tree_rss(process.pid)
            peak[0] = max(peak[0], sum(found.values()))
            if per_process is not None:
                for pid, rss in found.items():
                    key = "command" if pid == process.pid else pid
                    per_process[key] = max(rss, per_process.get(key, 0))
                    if cpu is not None:
                        cpu[key] = max(_cpu_seconds(pid), cpu.get(key, 0.0))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        done.set()
        sampler.join()
    elapsed = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit("command failed (%d): %s\n%s" % (process.returncode, " ".join(command), err))
    return elapsed, peak[0], out


DUCKDB_QUERY = """
SELECT regexp_extract(filename, '([^/]+)/[^/]+$', 1) AS vm,
       avg(cpu), quantile_cont(cpu, 0.95), max(cpu),
       avg(mem), quantile_cont(mem, 0.95), max(mem),
       avg(disk_r + disk_w), quantile_cont(disk_r + disk_w, 0.95), max(disk_r + disk_w),
       avg(net_rx + net_tx), quantile_cont(net_rx + net_tx, 0.95), max(net_rx + net_tx)
FROM read_csv('{glob}', header = true, filename = true, columns = {columns})
GROUP BY 1
"""

DUCKDB_SCRIPT = """
import sys, duckdb
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
rows = con.sql(sys.argv[1]).fetchall()
print(len(rows))
"""


def compare_dask(data_dir: Path, workers: int, rounds: int) -> None:
    """A cold report on one machine against the same report on a local Dask cluster.

    Both parse with ``workers`` processes (forked pool; Dask worker processes
    on loopback), both without a cache; they alternate ``rounds`` times and
    each keeps its best run.  Peak memory is per process: the report's own
    (it gathers the aggregates) and the largest worker's.
    """
    base = [sys.executable, "-m", "vmstats", "report", str(data_dir), "--no-cache", "--workers", str(workers)]
    runs = {"single": [], "dask": []}
    for _ in range(rounds):
        for name, extra in (("single", []), ("dask", ["--dask", "local"])):
            out = OUT / ("report-output-" + name)
            shutil.rmtree(out, ignore_errors=True)
            peaks: dict = {}
            shares: dict = {}
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            seconds, tree, _out = run_measured(base + ["-o", str(out)] + extra, 3600, peaks, shares)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            # CPU of the report and every process it started and reaped (its workers): what the
            # work costs, whatever the neighbours on a shared machine take of the cores meanwhile.
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            own = peaks.pop("command", 0)
            runs[name].append((seconds, tree, own, max(peaks.values(), default=0), cpu))
            # Where the CPU went (sampled): the report process (with Dask: also its scheduler and
            # nannies) and its workers.
            print(
                "%s: %.1f s, %.1f CPU s (report process %.1f, workers %.1f); peak: report process %.0f MiB, "
                "largest worker %.0f MiB, all %.0f MiB"
                % (
                    name,
                    seconds,
                    cpu,
                    shares.pop("command", 0.0),
                    sum(shares.values()),
                    own / 2**20,
                    runs[name][-1][3] / 2**20,
                    tree / 2**20,
                ),
                flush=True,
            )
    same = (OUT / "report-output-single" / "report.csv").read_bytes() == (
        OUT / "report-output-dask" / "report.csv"
    ).read_bytes()
    single, dask = (min(r[0] for r in runs[name]) for name in ("single", "dask"))
    single_cpu, dask_cpu = (min(r[4] for r in runs[name]) for name in ("single", "dask"))
    worker_peak = max(r[3] for r in runs["dask"])
    print(
        "single machine: %.1f s (%.1f CPU s); Dask local cluster (%d workers): %.1f s = %.2fx (%.1f CPU s "
        "= %.2fx); largest worker %.0f MiB; report.csv identical: %s"
        % (
            single,
            single_cpu,
            workers,
            dask,
            dask / single,
            dask_cpu,
            dask_cpu / single_cpu,
            worker_peak / 2**20,
            same,
        )
    )
    verdict = (dask <= 1.2 * single, worker_peak <= 2 * 2**30, same)
    print(
        "targets: dask <= 1.2x single %s; worker peak <= 2 GiB %s; same report %s"
        % tuple("met" if ok else "MISSED" for ok in verdict)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument(
        "--dask",
        action="store_true",
        help="compare the report on a local Dask cluster with the single-machine report (no DuckDB)",
    )
    parser.add_argument("--workers", type=int, default=2, help="with --dask: processes of both")
    parser.add_argument("--rounds", type=int, default=2, help="with --dask: alternations")
    args = parser.parse_args()
    # The report is timed as an installed vmstats runs: with its modules' bytecode cached
    # (a shell that forbids writing it makes every run compile them again, ~0.1 s).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

    data_dir = OUT / ("report-data-%dx%d" % (args.vms, args.days))
    started = time.perf_counter()
    records = generate(data_dir, args.vms, args.days)
    size = sum(f.stat().st_size for f in (data_dir / logstore.VMS_DIR).glob("*/*.csv"))
    print(
        "data: %d VMs x %d days, %d records, %.2f GB (ready in %.1f s)"
        % (args.vms, args.days, records, size / 1e9, time.perf_counter() - started)
    )
    if args.dask:
        compare_dask(data_dir, args.workers, args.rounds)
        return

    types = {
        name: (
            "BIGINT"
            if name in ("ts", "vcpus", "mem_mb", "seq")
            else "VARCHAR"
            if name == "host"
            else "DOUBLE"
        )
        for name in logstore.COLUMNS
        if name != "tags"
    }
    query = DUCKDB_QUERY.format(
        glob=data_dir / logstore.VMS_DIR / "*" / "*.csv",
        columns="{%s}" % ", ".join("'%s': '%s'" % kv for kv in types.items()),
    )
    # Shared machines are noisy: DuckDB and the cold report alternate twice (a load burst then
    # hits both alike) and each keeps its best run; the re-run is the best of five.
    report_out = OUT / "report-output"
    command = [sys.executable, "-m", "vmstats", "report", str(data_dir), "-o", str(report_out)]
    duck, cold = [], []
    for _ in range(2):
        duck.append(run_measured([sys.executable, "-c", DUCKDB_SCRIPT, query]))
        shutil.rmtree(report_out, ignore_errors=True)  # no cache: a cold run
        cold.append(run_measured(command))
    duck_s, duck_rss, out = min(duck)
    print(
        "duckdb: %.2f s (runs: %s), peak %.0f MiB, %s VMs"
        % (duck_s, ", ".join("%.2f" % d[0] for d in duck), duck_rss / 2**20, out.strip())
    )
    cold_s = min(c[0] for c in cold)
    cold_rss = max(c[1] for c in cold)
    print(
        "vmstats report cold: %.2f s (%.2fx duckdb; runs: %s), peak %.0f MiB"
        % (cold_s, cold_s / duck_s, ", ".join("%.2f" % c[0] for c in cold), cold_rss / 2**20)
    )
    warm = [run_measured(command) for _ in range(5)]
    warm_s, warm_rss, _ = min(warm)
    print(
        "vmstats report re-run: %.2f s (%.3fx duckdb; runs: %s), peak %.0f MiB"
        % (warm_s, warm_s / duck_s, ", ".join("%.2f" % w[0] for w in warm), warm_rss / 2**20)
    )
    verdict = (cold_s <= 1.5 * duck_s, warm_s <= 0.1 * duck_s, cold_rss <= 2 * 2**30)
    print(
        "targets: cold <= 1.5x %s; re-run <= 0.1x %s; peak <= 2 GiB %s"
        % tuple("met" if ok else "MISSED" for ok in verdict)
    )


if __name__ == "__main__":
    main()
