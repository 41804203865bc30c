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
* peak RSS (VmHWM from /proc/<pid>/status, read just before stopping) of
  each, and the agent's excess over the bare one.
"""

import argparse
import os
import select
import signal
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
#: Agent variants run side by side: (name, CPU sub-samples per record, signed).
VARIANTS = (("production density (12 sub-samples per record)", 12, False),
            ("no sub-samples", 1, False),
            ("12 sub-samples, signed (--key-file: HMAC loads OpenSSL)", 12, True))


def cpu_seconds(pid: int) -> float:
    """CPU time of a live process: schedstat's run time (ns), else utime+stime ticks."""
    try:
        with open("/proc/%d/schedstat" % pid) as handle:
            return int(handle.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_kib(pid: int) -> int:
    """VmHWM of a live process.

    Not ru_maxrss after wait4: the kernel folds the pre-exec high-water mark
    (the forked copy of this script) into it, which would put a floor of this
    script's size under every child and understate the agent's excess.
    """
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM for pid %d" % pid)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM without Popen.terminate(), whose poll() would reap the child before wait4 can."""
    os.kill(proc.pid, signal.SIGTERM)


def reap(proc: subprocess.Popen) -> float:
    """Wait for a child and return its whole-life CPU seconds."""
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_utime + usage.ru_stime


class Variant:
    """One agent process and the socket it sends to."""

    def __init__(self, name, sub_samples, key_file, python, pyz, interval, env):
        self.name = name
        self.sub_samples = sub_samples
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.received = 0
        self.first_cpu = self.last_cpu = 0.0
        self.rss = 0
        self.proc = subprocess.Popen(
            [python, "-I", pyz, "--server", "127.0.0.1:%d" % self.sock.getsockname()[1],
             "--interval", str(interval), "--sub-interval", str(interval / sub_samples),
             "--jitter", "0", "--vm-id", "bench-%d" % sub_samples, "--log-level", "warning"]
            + (["--key-file", key_file] if key_file else []), env=env)

    def on_datagram(self, wanted):
        data = self.sock.recv(65536)
        before = self.received
        self.received += sum(1 for line in data.split(b"\n") if line and line[:1] != b"#")
        if before == 0:
            self.first_cpu = cpu_seconds(self.proc.pid)
        elif before < wanted <= self.received:
            self.last_cpu = cpu_seconds(self.proc.pid)
            self.rss = peak_rss_kib(self.proc.pid)
            stop(self.proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--intervals", type=int, default=100, help="records to measure")
    parser.add_argument("--interval", type=float, default=1.0, help="agent interval in seconds")
    parser.add_argument("--python", default=sys.executable, help="interpreter for agents and reference")
    args = parser.parse_args()
    wanted = args.intervals + 1

    with tempfile.TemporaryDirectory() as tmp:
        pyz = os.path.join(tmp, "vmstats-agent.pyz")
        bundle.build(pyz)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        runtime = args.interval * (wanted + 3) + 10
        bare = subprocess.Popen([args.python, "-I", "-c", "import time; time.sleep(%f)" % runtime],
                                env=env)
        key_file = os.path.join(tmp, "agent.key")
        with open(key_file, "w") as handle:
            handle.write("bench %s\n" % os.urandom(32).hex())
        variants = [Variant(name, n, key_file if signed else None, args.python, pyz, args.interval, env)
                    for name, n, signed in VARIANTS]
        started = time.monotonic()
        deadline = started + runtime
        bare_rss = 0
        try:
            while any(v.received < wanted for v in variants):
                if time.monotonic() > deadline:
                    raise SystemExit("bench: agents did not send %d records in %.0fs" % (wanted, runtime))
                ready, _w, _x = select.select([v.sock for v in variants], [], [], 1.0)
                for variant in variants:
                    if variant.sock in ready:
                        variant.on_datagram(wanted)
            bare_rss = peak_rss_kib(bare.pid)
        finally:
            for variant in variants:
                stop(variant.proc)
            stop(bare)
        elapsed = time.monotonic() - started
        usage = [(reap(v.proc), v.rss) for v in variants]
        bare_cpu = reap(bare)

    version = subprocess.run([args.python, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True).stdout.strip()
    print("agent footprint: %d records per agent at a %gs interval in %.0fs; python %s; "
          "reference: bare python3 -I sleeping (CPU %.3fs, peak RSS %.1f MiB)"
          % (args.intervals, args.interval, elapsed, version, bare_cpu, bare_rss / 1024))
    for variant, (cpu, rss) in zip(variants, usage, strict=True):
        steady_ms = (variant.last_cpu - variant.first_cpu) / args.intervals * 1000
        total_ms = (cpu - bare_cpu) / wanted * 1000
        excess = (rss - bare_rss) / 1024
        print("  %s" % variant.name)
        print("    steady CPU per record    %.3f ms  (target <= %.1f ms: %s); per /proc sample %.3f ms"
              % (steady_ms, TARGET_CPU_MS, "met" if steady_ms <= TARGET_CPU_MS else "MISSED",
                 steady_ms / variant.sub_samples))
        print("    whole-life CPU above bare %.3f ms per record (start-up amortised; agent %.3fs)"
              % (total_ms, cpu))
        print("    peak RSS (VmHWM)         %.1f MiB = bare + %.1f MiB (target <= %.1f MiB: %s), ratio %.2f"
              % (rss / 1024, excess, TARGET_RSS_MIB, "met" if excess <= TARGET_RSS_MIB else "MISSED",
                 rss / bare_rss))
    return 0


if __name__ == "__main__":
    sys.exit(main())
