"""A public trace replayed through a real ``vmstats serve``, kept under bench/out/ for the next run.

Replaying the 250-VM Bitbrains month takes minutes, so benchmarks that judge
on it replay it once: the data dir is reused while the trace's MANIFEST.tsv
(the sha256 of every file; without one, the files themselves) and the replay's
own options are the same.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from labels import trace_files  # noqa: E402
from serverproc import serve  # noqa: E402

OUT = ROOT / "bench" / "out"


def manifest_key(trace: Path, options: Sequence[str] = ()) -> str:
    """The cache key: the trace's MANIFEST.tsv, and the replay options when there are any.

    A folder of trace files without a manifest (another fleet, as published) is keyed by its
    files' names and contents instead: a few seconds of hashing against a replay of minutes.
    """
    manifest = trace / "MANIFEST.tsv"
    if manifest.is_file():
        content = manifest.read_bytes()
    else:
        files = trace_files(trace)
        if not files:
            raise SystemExit("%s holds no trace files (*.csv.gz or *.csv)" % trace)
        content = b"".join(b"%s %s\n" % (hashlib.sha256(path.read_bytes()).hexdigest().encode(),
                                          path.name.encode()) for path in files)
    content += " ".join(options).encode() if options else b""
    return hashlib.sha256(content).hexdigest()[:16]


#: The replay's server flushes every 5 s: each VM's buffer is full after 10,000 records (a week)
#: until the next flush, so a one-minute interval held a month's replay to 16 minutes.
SERVER_OPTIONS = ("--flush-interval", "5")


def replayed(trace: Path, name: str, options: Sequence[str] = (),
             server_options: Sequence[str] = SERVER_OPTIONS, fresh: bool = False) -> Path:
    """The work folder (``data/`` inside) of ``trace`` replayed with ``vmstats replay OPTIONS`` (cached).

    ``options`` may name files in the work folder as ``{work}/...``; they are
    kept with the data.
    """
    key = manifest_key(trace, options)
    work = OUT / ("%s-%s" % (name, key))
    marker = work / "replayed.json"
    if marker.is_file() and not fresh:
        summary = json.loads(marker.read_text())
        print("replay: cached in %s (%d records, replayed in %.0f s)"
              % (work, summary["records"], summary["seconds"]))
        return work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    began = time.monotonic()
    with serve(work, "--duration", "2h", *server_options, stop_timeout=600) as server:
        # The trace files only: the folder also holds MANIFEST.tsv, which is no trace.
        files = [str(path) for path in trace_files(trace)]
        command = [sys.executable, "-m", "vmstats", "replay", "--format", "bitbrains", *files,
                   *(option.replace("{work}", str(work)) for option in options),
                   "--server", "127.0.0.1:%d" % server.tcp_port, "--transport", "tcp",
                   "--timeout", "600", "--json", str(work / "replay.json")]
        done = subprocess.run(command, cwd=str(ROOT), capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit("replay failed (%d):\n%s%s" % (done.returncode, done.stdout, done.stderr))
        print(done.stdout.strip())
    if server.returncode != 0:
        raise SystemExit("server exited with %s:\n%s" % (server.returncode, server.output[-2000:]))
    sent = json.loads((work / "replay.json").read_text())
    summary = {"records": sent["records"], "seconds": round(time.monotonic() - began, 1), "trace_key": key}
    marker.write_text(json.dumps(summary))
    print("replay: %d records through vmstats serve in %.0f s" % (summary["records"], summary["seconds"]))
    return work
