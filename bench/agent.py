"""Agent footprint: CPU time per record and peak memory, against a bare sleeping python3.

    .venv/bin/python bench/agent.py                 # 100 intervals of 1 s (about 2 minutes)
    .venv/bin/python bench/agent.py --intervals 20  # a quicker look

The agent runs as deployed: the single-file bundle under ``python3 -I``,
sending UDP to a socket this script reads on 127.0.0.1.  Beside it, in the
same run and with the same interpreter and flags, a bare
``python3 -I -c 'import time; time.sleep(...)'`` gives the reference: the
interpreter's own start-up CPU and resident memory, which the VM pays for
any Python program and which is subtracted out.

Sub-samples are as dense per record as in production (the default 60 s
interval with 5 s sub-samples is 12 per record), so a 1 s interval uses
1/12 s sub-samples and each record costs what it costs on a VM.

Figures:
* steady CPU per record: the agent's utime+stime from /proc/<pid>/stat
  between the first and the last record received, divided by the records
  in between (start-up excluded);
* total CPU above bare: whole-life CPU (getrusage of the child) minus the
  bare interpreter's, per record (start-up amortised);
* peak RSS (VmHWM) of each, and the agent's excess over the bare one.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vmstats.client import bundle  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
TARGET_CPU_MS = 2.0
TARGET_RSS_MIB = 8.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc/<pid>/stat."""
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def reap(proc: subprocess.Popen):
    """Wait for a child and return its resource usage (CPU s, peak RSS KiB)."""
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--intervals", type=int, default=100, help="records to measure")
    parser.add_argument("--interval", type=float, default=1.0, help="agent interval in seconds")
    parser.add_argument("--sub-samples", type=int, default=12, help="CPU sub-samples per record")
    parser.add_argument("--python", default=sys.executable, help="interpreter for agent and reference")
    args = parser.parse_args()

    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    port = receiver.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        pyz = os.path.join(tmp, "vmstats-agent.pyz")
        bundle.build(pyz)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        runtime = args.interval * (args.intervals + 3) + 10
        bare = subprocess.Popen([args.python, "-I", "-c", "import time; time.sleep(%f)" % runtime],
                                env=env)
        agent = subprocess.Popen([args.python, "-I", pyz, "--server", "127.0.0.1:%d" % port,
                                  "--interval", str(args.interval),
                                  "--sub-interval", str(args.interval / args.sub_samples),
                                  "--jitter", "0", "--vm-id", "bench-vm", "--log-level", "warning"],
                                 env=env)
        receiver.settimeout(args.interval * 5 + 10)
        received = 0
        first_cpu = last_cpu = 0.0
        started = time.monotonic()
        try:
            while received < args.intervals + 1:
                data = receiver.recv(65536)
                received += data.count(b"\n") + 1
                if received == 1:
                    first_cpu = cpu_seconds(agent.pid)
            last_cpu = cpu_seconds(agent.pid)
        finally:
            agent.terminate()
            bare.terminate()
        elapsed = time.monotonic() - started
        agent_cpu, agent_rss = reap(agent)
        bare_cpu, bare_rss = reap(bare)
        receiver.close()

    records = received - 1
    steady_ms = (last_cpu - first_cpu) / records * 1000
    total_ms = (agent_cpu - bare_cpu) / received * 1000
    rss_excess = (agent_rss - bare_rss) / 1024
    print("agent footprint: %d records at %gs interval (%d sub-samples each) in %.0fs, python %s"
          % (records, args.interval, args.sub_samples, elapsed,
             subprocess.run([args.python, "-c", "import platform; print(platform.python_version())"],
                            capture_output=True, text=True).stdout.strip()))
    print("  steady CPU per record      %.3f ms  (target <= %.1f ms: %s)"
          % (steady_ms, TARGET_CPU_MS, "met" if steady_ms <= TARGET_CPU_MS else "MISSED"))
    print("  total CPU above bare       %.3f ms per record (agent %.3fs, bare python3 %.3fs)"
          % (total_ms, agent_cpu, bare_cpu))
    print("  peak RSS (VmHWM)           agent %.1f MiB, bare python3 %.1f MiB, ratio %.2f"
          % (agent_rss / 1024, bare_rss / 1024, agent_rss / bare_rss))
    print("  RSS above bare             %.1f MiB  (target <= %.1f MiB: %s)"
          % (rss_excess, TARGET_RSS_MIB, "met" if rss_excess <= TARGET_RSS_MIB else "MISSED"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
