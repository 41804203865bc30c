"""Every option that names a place a command writes: a bad name is one line before any work.

The line is ``Error: Invalid value for OPTION: why``, exit status 2 (a usage error's), in the
same words in every command, with nothing on stdout and nothing made: no usage block, and no
run that fails only at its end.  The cases fail for root too (the tests run as root): a file
where a folder goes, a folder under a regular file, a folder where a file goes, an empty name.
"""

import subprocess
import sys
from pathlib import Path

import click
import pytest

from vmstats import cli

ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT / "tests" / "data" / "traces" / "bitbrains"
_PORTS = ("--bind", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0", "--http-port", "0",
          "--duration", "5s")
_CLOSED = ("--server", "127.0.0.1:9")  # nothing is sent: the path is refused first

#: "command option" -> the command line, PATH the path under test.  DATA does not exist: a
#: command that did not check PATH first would fail on it with another line.
WRITERS = {
    "report -o": ("report", "DATA", "-o", "PATH"),
    "report --cache-dir": ("report", "DATA", "-o", "OUT", "--cache-dir", "PATH"),
    "backtest -o": ("backtest", "DATA", "-o", "PATH"),
    "backtest --cache-dir": ("backtest", "DATA", "-o", "OUT", "--cache-dir", "PATH"),
    "headroom -o": ("headroom", "DATA", "--profile", "2x4", "--inventory", "HOSTS", "-o", "PATH"),
    "headroom --cache-dir": ("headroom", "DATA", "--profile", "2x4", "--inventory", "HOSTS",
                             "--cache-dir", "PATH"),
    "serve --data-dir": ("serve", *_PORTS, "--data-dir", "PATH"),
    "serve --journal-dir": ("serve", *_PORTS, "--data-dir", "OUT", "--journal-dir", "PATH"),
    "serve --status-file": ("serve", *_PORTS, "--data-dir", "OUT", "--status-file", "PATH"),
    "simulate --json": ("simulate", "--vms", "1", "--days", "0.01", *_CLOSED, "--json", "PATH"),
    "simulate --truth": ("simulate", "--vms", "1", "--days", "0.01", *_CLOSED, "--truth", "PATH"),
    "simulate --inventory": ("simulate", "--vms", "1", "--days", "0.01", *_CLOSED,
                             "--inventory", "PATH"),
    "replay --json": ("replay", "--format", "bitbrains", TRACES, *_CLOSED, "--json", "PATH"),
    "replay --pack-hosts": ("replay", "--format", "bitbrains", TRACES, *_CLOSED,
                            "--pack-hosts", "PATH"),
    "simulate-pool --json": ("simulate-pool", "--duration", "1", *_CLOSED, "--json", "PATH"),
    "score --json": ("score", "--truth", "DATA", "--report", "DATA", "--json", "PATH"),
    "agent-bundle -o": ("agent-bundle", "-o", "PATH"),
}

#: Names the serve command checks itself, at start (tests/test_server_paths.py): only the
#: empty name is refused with the option's line.
_CHECKED_AT_START = {"serve --data-dir", "serve --journal-dir", "serve --status-file"}


def _refusal(writer: str, tmp_path: Path, path: str) -> str:
    """The one stderr line ``writer`` gives for ``path``; nothing else said, sent or made."""
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[[host]]\nname = "h"\nvcpus = 8\nmem_gb = 32\n')
    places = {"PATH": path, "DATA": tmp_path / "no-such-data", "OUT": tmp_path / "out", "HOSTS": hosts}
    before = sorted(tmp_path.rglob("*"))
    result = subprocess.run([sys.executable, "-m", "vmstats",
                             *(str(places.get(arg, arg)) for arg in WRITERS[writer])],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == "", (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert sorted(tmp_path.rglob("*")) == before, "made something before refusing"
    return lines[0]


def _hint(writer: str) -> str:
    option = writer.split()[-1]
    return "'-o' / '--out'" if writer in ("report -o", "backtest -o", "headroom -o") else \
        "'-o' / '--output'" if option == "-o" else "'%s'" % option


def _is_folder(writer: str) -> bool:
    return writer.endswith(("-o", "-dir")) and writer != "agent-bundle -o"


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_an_empty_name_is_one_line(tmp_path, writer):
    """An unset shell variable: read as no path, it turned an output (or serve's journal) off."""
    why = "an empty folder name (use . for the current folder)" if _is_folder(writer) \
        else "an empty file name"
    assert _refusal(writer, tmp_path, "") == "Error: Invalid value for %s: %s" % (_hint(writer), why)


@pytest.mark.parametrize("writer", sorted(set(WRITERS) - _CHECKED_AT_START))
def test_a_file_in_the_way_is_one_line_before_any_work(tmp_path, writer):
    (tmp_path / "a-file").write_text("x")
    hint = _hint(writer)
    if _is_folder(writer):  # the folder itself a file, then a folder under a file
        assert _refusal(writer, tmp_path, str(tmp_path / "a-file")) == (
            "Error: Invalid value for %s: %s is a file, not a folder" % (hint, tmp_path / "a-file"))
    else:  # a folder where the file goes
        assert _refusal(writer, tmp_path, str(tmp_path)) == (
            "Error: Invalid value for %s: %s is a folder, not a file" % (hint, tmp_path))
    deep = tmp_path / "a-file" / "sub" / ("x" if _is_folder(writer) else "x.json")
    assert _refusal(writer, tmp_path, str(deep)) == (
        "Error: Invalid value for %s: %s is a file, not a folder" % (hint, tmp_path / "a-file"))


def test_the_table_names_every_option_that_takes_a_place_to_write():
    """A new output option typed with options.py's path types gets its row here."""
    from vmstats.options import FileName, FolderName

    typed = set()
    for name in cli.COMMANDS:
        command = cli.main.get_command(click.Context(cli.main), name)
        for param in command.params:
            if isinstance(param.type, (FileName, FolderName)):
                typed.add("%s %s" % (name, min(param.opts, key=len)))
    assert typed == set(WRITERS)


@pytest.mark.parametrize("command, out_name, args", [
    ("headroom", "headroom.csv", ["--profile", "2x4", "--inventory", "HOSTS"]),
    ("backtest", "backtest.html", []),
    ("backtest", "decision/report.csv", []),
])
def test_a_folder_in_place_of_an_output_file_is_refused_before_the_logs_are_read(
        tmp_path, command, out_name, args):
    """It failed only once the run was over, when the file was written."""
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[[host]]\nname = "h"\nvcpus = 8\nmem_gb = 32\n')
    (tmp_path / "out" / out_name).mkdir(parents=True)
    where = tmp_path / "out" / (out_name.rpartition("/")[0])
    result = subprocess.run([sys.executable, "-m", "vmstats", command, str(tmp_path / "no-such-data"),
                             *(str(hosts) if a == "HOSTS" else a for a in args),
                             "-o", str(tmp_path / "out")],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "Error: cannot write to %s: %s is in the way and is not a file"
        % (str(where).rstrip("/"), out_name.rpartition("/")[2])], result.stderr
