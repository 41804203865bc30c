"""A C part built from an older source than the Python that calls it stops the server at start
with one line; a C part not built at all leaves the work to Python, said at start.

A checkout pulled and served without rebuilding kept the C parts of the old source: the server
started fine, then answered 500 to every HTTP write (the old ``_influxscan.scan`` took other
arguments).  Each test runs ``vmstats serve`` from a copy of the package, built as it is here,
with one C part compiled again from its ``.c`` whose version is one older (what a build of the
older source is, to native.py), or with parts left out (what a machine without a compiler
builds).
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import sanitizers
from serverproc import LOOPBACK, ROOT, serve
from test_formats_server import edge, minute_lines, post
from test_server_udp import logged
from test_storage_compaction import _write_fleet

from vmstats.server import parse, signing
from vmstats.server.formats import influx, minutes

SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")
#: Each C part and the version of its source the Python calls.
CALLED = {"_framecheck": signing.FRAMECHECK_VERSION, "_linescan": parse.LINESCAN_VERSION,
          "_influxscan": influx.INFLUXSCAN_VERSION, "_minutes": minutes.MINUTES_VERSION}
#: A plain build, as quick as gcc makes one: these builds are loaded, never timed.
PLAIN = ["-O0", "-shared", "-fPIC"]


def package_copy(into: Path, left_out: tuple[str, ...] = ()) -> Path:
    """The package copied into ``into`` with its C parts as built here, but those
    ``left_out``, beside the setup.py it was built with: the server module of the copy."""
    shutil.copytree(ROOT / "vmstats", into / "vmstats",
                    ignore=shutil.ignore_patterns(*(name + SUFFIX for name in left_out)))
    shutil.copy2(ROOT / "setup.py", into / "setup.py")
    server = into / "vmstats" / "server"
    built = {path.name for path in server.glob("_*" + SUFFIX)}
    assert built == {name + SUFFIX for name in CALLED if name not in left_out}, built
    return server


def minute_by_python(tree: Path, vm: str) -> str:
    """The output of the copy in ``tree`` served while a minute of ``vm`` is written to its HTTP
    port, once that minute is filed as the C parts would have filed it: the Python did their
    work, whatever else the server said."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    server = serve(tree, "--flush-interval", "0.3")
    server.env["PYTHONPATH"] = str(tree)
    with server:
        lines = minute_lines(vm, t0)
        assert post(server, "/api/v2/write?org=o&bucket=b&precision=s", b"\n".join(lines)) == (204, "")
        server.wait_metrics(lambda metrics: edge(metrics, "influx", "used") == len(lines))
    assert server.returncode == 0, server.output
    rows = logged(tree / "data", vm)
    assert list(rows["ts"]) == [t0 + 60]
    assert rows.iloc[0]["cpu"] == 13.5 and rows.iloc[0]["cpu_max"] == 16.0
    return server.output


def build_older(name: str, into: Path, scratch: Path) -> None:
    """``name`` compiled into ``into`` from its ``.c`` with the version before its own."""
    text = (sanitizers.SOURCES / (name + ".c")).read_text()
    older, found = re.subn(r"^#define MODULE_VERSION %d$" % CALLED[name],
                           "#define MODULE_VERSION %d" % (CALLED[name] - 1), text, flags=re.M)
    assert found == 1, name
    scratch.mkdir()
    source = scratch / (name + ".c")
    source.write_text(older)
    gcc = shutil.which("gcc")
    assert gcc, "gcc is missing: .ci/debian-packages installs it"
    built = sanitizers.compile_module(gcc, source, into, sanitizers.MODULES[name], flags=PLAIN)
    assert built.parent == into


@pytest.mark.parametrize("name", sorted(CALLED))
def test_a_c_part_built_from_an_older_source_stops_serve_with_one_line(tmp_path, name):
    tree = tmp_path / "tree"
    build_older(name, package_copy(tree), tmp_path / "older")
    done = subprocess.run(
        [sys.executable, "-m", "vmstats", "serve", "--bind", LOOPBACK, "--udp-port", "0",
         "--tcp-port", "0", "--http-port", "0", "--data-dir", str(tmp_path / "data"),
         "--duration", "5s"],  # a server that starts ends by itself, with status 0
        cwd=str(tree), env=dict(os.environ, PYTHONPATH=str(tree)),
        capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == (
        "Error: C module vmstats.server.%s is stale: built from version %d of %s.c, its Python "
        "calls version %d; rebuild it: %s -m pip install -e %s\n"
        % (name, CALLED[name] - 1, name, CALLED[name], sys.executable, tree))


def test_compact_runs_on_stale_c_parts(tmp_path):
    """Compaction calls no C part: ``vmstats compact`` was stopped by a stale _linescan or
    _framecheck all the same (its module imported signing, which loads both, for serve's
    keys), and the one command that keeps the disk in bounds waited on a rebuild."""
    tree = tmp_path / "tree"
    server = package_copy(tree)
    for name in ("_framecheck", "_linescan"):
        build_older(name, server, tmp_path / name)
    data = tmp_path / "data"
    _write_fleet(data, vms=1, days=1, step=3600)
    done = subprocess.run([sys.executable, "-m", "vmstats", "compact", "--data-dir", str(data),
                           "--compact-after", "1d"], cwd=str(tree),
                          env=dict(os.environ, PYTHONPATH=str(tree)), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "Error" not in done.stderr, done.stderr  # a warning at most
    assert done.stdout.startswith("compacted 1 day (24 rows, 1 CSV file removed"), done.stdout


def test_c_parts_not_built_leave_the_edge_to_python_and_say_so(tmp_path):
    tree = tmp_path / "tree"
    package_copy(tree, left_out=("_influxscan", "_minutes"))
    output = minute_by_python(tree, "unbuilt-vm")
    warned = [line for line in output.splitlines() if "built without its C parts" in line]
    assert len(warned) == 1 and "Telegraf's lines are read" in warned[0], output


def test_c_parts_built_that_do_not_load_leave_the_edge_to_python_and_say_why(tmp_path):
    """A .so cut short (a copy a full disk ended) killed the server at start with SIGBUS, not a
    word said; one that is no library was taken for a part not built, its work done in Python
    with no word of why."""
    tree = tmp_path / "tree"
    server = package_copy(tree)
    scan, filing = server / ("_influxscan" + SUFFIX), server / ("_minutes" + SUFFIX)
    whole = scan.read_bytes()
    scan.write_bytes(whole[:4096])  # the loader maps the rest: SIGBUS, not an ImportError
    filing.write_bytes(b"not a shared object\n" * 64)
    output = minute_by_python(tree, "unloaded-vm")
    warned = [line for line in output.splitlines() if "WARNING" in line and "C " in line]
    rebuild = "rebuild it: %s -m pip install -e %s" % (sys.executable, tree)
    assert [line.split(": ", 1)[1] for line in warned] == [
        "C module vmstats.server._influxscan is built but does not load (%s: cut short: 4096 bytes, "
        "its ELF header lays out %d): its work is done in Python, slower; %s"
        % (scan, len(whole), rebuild),
        "C module vmstats.server._minutes is built but does not load (%s: invalid ELF header): "
        "its work is done in Python, slower; %s" % (filing, rebuild)], output
