"""Running vmstats as an operator does: systemd units, package metadata, progress lines, early
errors and the price book's sanity check."""

import configparser
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from serverproc import serve
from test_report_damaged import _end, write_fleet

from vmstats import cli, logstore
from vmstats.protocol import Record

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
#: Where the units expect vmstats installed (docs/OPERATIONS.md); tests point it at this checkout's.
INSTALLED = "/opt/vmstats/bin/vmstats"
DAY = 86400
VMSTATS = Path(sys.executable).parent / "vmstats"


def run(*args, env=None, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "vmstats", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
    )


def _exec_lines(unit: Path) -> list[str]:
    """A unit's ExecStart command lines, systemd's escapes ($$, %%) undone."""
    return [
        line.partition("=")[2].replace("$$", "$").replace("%%", "%")
        for line in unit.read_text().splitlines()
        if line.startswith("ExecStart=")
    ]


def _exec_starts(unit: Path) -> list[list[str]]:
    """Each ExecStart's words; a ``/bin/sh -c 'exec COMMAND'`` (the report's, which needs
    yesterday's date) gives the words of its COMMAND, ``$(...)`` one word."""
    starts = []
    for line in _exec_lines(unit):
        argv = shlex.split(line)
        if argv[:2] == ["/bin/sh", "-c"]:
            argv = shlex.split(argv[2])
            argv = argv[1:] if argv[0] == "exec" else argv
        starts.append(argv)
    return starts


def test_units_run_commands_and_options_the_cli_has():
    checked = 0
    for unit in sorted(PACKAGING.glob("*.service")):
        for argv in _exec_starts(unit):
            if argv[0] != INSTALLED:
                continue
            command = cli.main.get_command(click.Context(cli.main), argv[1])
            assert command is not None, (unit.name, argv[1])
            options = {opt for param in command.params for opt in param.opts}
            for token in argv[2:]:
                if token.startswith("-"):
                    assert token in options, (unit.name, token)
            checked += 1
    assert checked == 2  # the aggregator and the nightly report
    timer = (PACKAGING / "vmstats-report.timer").read_text()
    assert "OnCalendar=" in timer and (PACKAGING / "vmstats-report.service").exists()


#: What an operator reads and copies commands from, BENCHMARKS.md's "how to reproduce" lines too.
OPERATOR_DOCS = (ROOT / "README.md", ROOT / "RELIABILITY.md", ROOT / "BENCHMARKS.md",
                 *sorted((ROOT / "docs").glob("*.md")))


def _cli_options() -> dict[str, set[str]]:
    """Every command's options ("rules check" for a group's command); the agent's come from its
    own parser, which ``vmstats agent`` and the bundle share."""
    from vmstats.client.config import build_parser

    context = click.Context(cli.main)
    options: dict[str, set[str]] = {}

    def walk(name: str, command: click.Command) -> None:
        options[name] = {o for p in command.params for o in p.opts + p.secondary_opts} | {"-h", "--help"}
        if isinstance(command, click.Group):
            for sub in command.list_commands(context):
                walk(name + " " + sub, command.get_command(context, sub))

    for name in cli.main.list_commands(context):
        walk(name, cli.main.get_command(context, name))
    options["agent"] = {o for action in build_parser()._actions for o in action.option_strings}
    return options


def _doc_command_lines(text: str) -> list[str]:
    """Command lines of a document: each inline code span, and each line of a code block with
    its continuations (a trailing backslash, or a next line of more ``[--options]``) joined."""
    lines = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S):
        joined: list[str] = []
        for line in block.splitlines():
            if joined and (joined[-1].endswith("\\") or re.match(r"\s+[\[-]", line)):
                joined[-1] = joined[-1].rstrip("\\") + " " + line.strip()
            else:
                joined.append(line.split(" #")[0])
        lines += joined
    return lines


def test_docs_give_only_commands_and_options_the_cli_has():
    """A command line an operator copies from the docs names flags its command takes: a renamed
    or removed option fails here, not at the operator's prompt."""
    options = _cli_options()
    invocation = re.compile(r"(?:^|[\s/])(?:vmstats(?:-agent\.pyz)?)\s+(?:([a-z][a-z-]*)(?:\s+([a-z]+))?)?")
    checked, wrong = 0, []
    for doc in OPERATOR_DOCS:
        for line in _doc_command_lines(doc.read_text()):
            match = invocation.search(line)
            if not match:
                continue
            if "vmstats-agent.pyz" in match.group(0):
                command, rest = "agent", line[match.start():]
            elif match.group(1) in options:
                command, rest = match.group(1), line[match.end(1):]
                if match.group(2) and "%s %s" % (command, match.group(2)) in options:
                    command, rest = "%s %s" % (command, match.group(2)), line[match.end(2):]
                elif match.group(2) and any(name.startswith(command + " ") for name in options):
                    wrong.append("%s: vmstats %s has no command %s: %s" % (doc.name, command,
                                                                          match.group(2), line))
            else:
                if match.group(1) not in (None, "import"):  # "from vmstats import logstore"
                    wrong.append("%s: vmstats has no command %s: %s" % (doc.name, match.group(1), line))
                continue
            checked += 1
            for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", rest):
                if flag not in options[command]:
                    wrong.append("%s: vmstats %s has no %s: %s" % (doc.name, command, flag, line.strip()))
    assert not wrong, "\n".join(wrong)
    assert checked > 50, checked  # the docs' command lines were found


#: A table cell naming a server option and its default: `--max-connections` 4096, `--idle-timeout` 300 s.
_INLINE_DEFAULT = re.compile(r"^`(--[a-z-]+)`\s+([\d,]+(?: ?[smhd])?)$")
#: A table cell holding only a default: 2,000,000, `2d`.
_DEFAULT_CELL = re.compile(r"^`?([\d,]+(?: ?[smhd])?)`?$")


def _documented_server_defaults(text: str) -> list[tuple[str, str]]:
    """``(--flag, default)`` from each table row of a guide that states a server option's default,
    inline (``| `--flag` 4096 |``) or in the next cell (``| `--flag` ... | `2d` |``)."""
    found = []
    for row in text.splitlines():
        if not row.startswith("|"):
            continue
        cells = [c.strip() for c in row.strip("|").split("|")]
        for here, after in zip(cells, cells[1:] + [""], strict=True):
            inline = _INLINE_DEFAULT.match(here)
            flag = re.match(r"^`(--[a-z-]+)`", here)
            if inline:
                found.append(inline.groups())
            elif flag and _DEFAULT_CELL.match(after):
                found.append((flag.group(1), _DEFAULT_CELL.match(after).group(1)))
    return found


def test_the_guides_tables_give_the_servers_own_defaults():
    """The limits an operator sizes a server by (docs/OPERATIONS.md's memory and connection
    tables, docs/STORAGE.md's tiers) are the defaults ``vmstats serve`` and ``vmstats compact``
    apply: a default changed in the code and not in the guide fails here."""
    context = click.Context(cli.main)
    params = {o: p for name in ("compact", "serve") for p in cli.main.get_command(context, name).params
              for o in p.opts}
    documented = [pair for doc in ("OPERATIONS.md", "STORAGE.md")
                  for pair in _documented_server_defaults((ROOT / "docs" / doc).read_text())]
    assert {"--max-buffered", "--max-vms", "--max-connections", "--http-idle-timeout",
            "--compact-after", "--retain-rollups"} <= {flag for flag, _ in documented}, documented
    wrong = []
    for flag, value in documented:
        param = params[flag]
        said = param.type.convert(re.sub(r"[ ,]", "", value), param, context)
        if said != param.type.convert(param.default, param, context):
            wrong.append("%s: the guide says %s, the default is %s" % (flag, value, param.default))
    assert not wrong, wrong


def test_the_protocol_guides_virtual_interfaces_are_the_servers_default():
    """docs/PROTOCOL.md quotes the whole default of ``--virtual-interfaces`` for an operator to
    start from (the setting replaces it): it is the list ``vmstats serve`` applies."""
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    quoted = re.search(r"setting\. The default:\n\n```\n(.+)\n```", text)
    assert quoted, "the guide no longer quotes the default"
    context = click.Context(cli.main)
    (param,) = [p for p in cli.main.get_command(context, "serve").params
                if "--virtual-interfaces" in p.opts]
    assert quoted.group(1) == param.default


def test_the_agent_bundle_is_the_size_the_guide_says(tmp_path):
    """docs/OPERATIONS.md gives the bundle's size for the image budget: it is within 15 % of it."""
    said = re.search(r"single zipapp \(~(\d+) KiB\)", (ROOT / "docs" / "OPERATIONS.md").read_text())
    assert said, "the guide no longer gives the bundle's size"
    result = run("agent-bundle", "-o", tmp_path / "vmstats-agent.pyz")
    assert result.returncode == 0, result.stderr
    size = (tmp_path / "vmstats-agent.pyz").stat().st_size / 1024
    assert abs(size - int(said.group(1))) <= 0.15 * int(said.group(1)), "%.1f KiB" % size


def test_the_rules_guides_example_file_is_accepted(tmp_path):
    """The rules file docs/RULES.md shows, every setting spelled out, is one ``vmstats rules
    check`` accepts, as an operator copying it would start from."""
    (example,) = re.findall(r"^```toml\n(.*?)^```", (ROOT / "docs" / "RULES.md").read_text(), re.M | re.S)
    (tmp_path / "rules.toml").write_text(example)
    result = run("rules", "check", tmp_path / "rules.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].endswith("rules.toml: 2 rules, 4 actions: OK"), result.stdout


def test_option_help_shows_a_percent_sign_as_written():
    """click prints help text as written, without %-formatting: a doubled sign shows as "%%"."""
    context = click.Context(cli.main)
    helps = {(name, p.name): p.help for name in cli.main.list_commands(context)
             for p in cli.main.get_command(context, name).params if getattr(p, "help", None)}
    assert len(helps) > 100 and not [key for key, text in helps.items() if "%%" in text]


def test_units_pass_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:  # Debian's systemd, installed when missing
        subprocess.run([str(ROOT / ".ci" / "debian-packages")], check=True, timeout=900)
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing"
    units = []
    for unit in sorted(PACKAGING.glob("vmstats-*")):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(INSTALLED, str(VMSTATS)))
        units.append(str(copy))
    result = subprocess.run([tool, "verify", *units], capture_output=True, text=True, timeout=120)
    # verify exits 0 on some mistakes (an unparsable value is "ignored"): any output is a finding.
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), (
        result.stdout + result.stderr
    )


def test_the_nightly_report_command_runs_as_the_unit_says(tmp_path):
    """The report unit's own command line, run by a shell with its paths moved under a temporary
    folder: with records of today already logged (the timer runs at 00:30 UTC), the window is
    the 14 whole UTC days that ended yesterday, not 13 days and a stub of today."""
    (line,) = _exec_lines(PACKAGING / "vmstats-report.service")
    state = tmp_path / "var-lib-vmstats"
    line = line.replace(INSTALLED, str(VMSTATS)).replace("/var/lib/vmstats", str(state))
    end = _end()  # noon yesterday
    write_fleet(state / "data", end, days=20)
    today = end // DAY + 1
    record = Record(vm="10.0.0.1", ts=today * DAY + 60, cpu=1.0, mem=30.0)
    logstore.append_missing(str(state / "data"), record.vm, {record.ts: logstore.format_tail(record)})
    result = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, timeout=240,
                            env=dict(os.environ, VMSTATS_REPORT_OPTIONS="--no-cache"))
    assert result.returncode == 0, result.stderr
    meta = json.loads((state / "report" / "report.json").read_text())["meta"]
    assert meta["totals"]["vms"] == 2
    assert (meta["window"]["first_day"], meta["window"]["last_day"]) == (
        logstore.day_name(today - 14), logstore.day_name(today - 1))


def test_package_metadata_declares_data_dependencies_and_license():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requires = config["options"]["install_requires"]
    assert re.search(r"^numpy\b", requires, re.M), "numpy is imported by the report"
    assert config["metadata"]["license"] == "Apache-2.0"
    assert (ROOT / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]
    # Data files are package data of vmstats.report: none left to setuptools' guesswork (which
    # warned about each one on every install).
    assert config["options"].getboolean("include_package_data") is False
    globs = [g.strip() for g in config["options.package_data"]["vmstats.report"].split(",")]
    report = ROOT / "vmstats" / "report"
    data = [p.relative_to(report).as_posix() for p in report.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc")]
    assert data and all(any(fnmatch.fnmatch(name, g) for g in globs) for name in data), data


@pytest.mark.parametrize(
    "make_out, message",
    [
        (lambda t: t / "a-file" / "sub", "a-file is a file, not a folder"),
        (lambda t: t / "a-file", "a-file is a file, not a folder"),
        (lambda t: t / "html-is-a-folder", "report.html is in the way"),
        (lambda t: "", "'-o' / '--out': an empty folder name (use . for the current folder)"),
    ],
)
def test_unwritable_output_fails_before_any_parsing(tmp_path, make_out, message):
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "html-is-a-folder" / "report.html").mkdir(parents=True)
    # The data dir does not exist: the output is checked first, so its error is the one given.
    result = run("report", tmp_path / "no-such-data", "-o", make_out(tmp_path))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


_PORTS = ("--bind", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0", "--http-port", "0")
#: Every command and option that reads an operator's file; FILE is the file under test. A good
#: inventory and manifest stand in for the others, the data dir is empty: each file is read first.
_READERS = {
    "report --policy": ("report", "DATA", "-o", "OUT", "--policy", "FILE"),
    "report --prices": ("report", "DATA", "-o", "OUT", "--prices", "FILE"),
    "report --exclusions": ("report", "DATA", "-o", "OUT", "--exclusions", "FILE"),
    "report --inventory": ("report", "DATA", "-o", "OUT", "--inventory", "FILE"),
    "backtest --policy": ("backtest", "DATA", "-o", "OUT", "--policy", "FILE"),
    "headroom --inventory": ("headroom", "DATA", "--profile", "2x4", "--inventory", "FILE"),
    "headroom --policy": ("headroom", "DATA", "--profile", "2x4", "--inventory", "HOSTS", "--policy", "FILE"),
    "admit MANIFEST": ("admit", "FILE", "DATA", "--inventory", "HOSTS"),
    "admit --inventory": ("admit", "MANIFEST", "DATA", "--inventory", "FILE"),
    "admit --backtest": ("admit", "--backtest", "DATA", "--inventory", "FILE"),
    "rules check": ("rules", "check", "FILE"),
    "alerts --token-file": ("alerts", "--url", "http://127.0.0.1:9", "--token-file", "FILE"),
    "serve --rules": ("serve", *_PORTS, "--data-dir", "DATA", "--duration", "5s", "--rules", "FILE"),
    "serve --inventory": ("serve", *_PORTS, "--data-dir", "DATA", "--duration", "5s", "--inventory", "FILE"),
    "serve --auth-keys": ("serve", *_PORTS, "--data-dir", "DATA", "--duration", "5s", "--auth-keys", "FILE"),
    "serve --status-token-file": ("serve", *_PORTS, "--data-dir", "DATA", "--duration", "5s",
                                  "--status-token-file", "FILE"),
    "serve --collectd-auth-file": ("serve", *_PORTS, "--data-dir", "DATA", "--duration", "5s",
                                   "--collectd-auth-file", "FILE"),
    "replay --vm-map": ("replay", "--format", "bitbrains", "TRACES", "--vm-map", "FILE"),
    "replay --inventory": ("replay", "--format", "bitbrains", "TRACES", "--inventory", "FILE"),
}


def _run_reader(reader: str, tmp_path: Path, file: Path, read: bool = False) -> str:
    """The one ``Error:`` line ``reader`` gives for ``file`` on stderr (no traceback, nothing
    else), with a refused command line's status 2 (README.md); ``rules check``'s 1 is its
    verdict on a file it ``read``."""
    (tmp_path / "data").mkdir(exist_ok=True)
    hosts, manifest = tmp_path / "hosts.toml", tmp_path / "app.toml"
    hosts.write_text('[[host]]\nname = "h"\nvcpus = 8\nmem_gb = 32\n')
    manifest.write_text('[[vms]]\nprofile = "2x4"\n')
    places = {"FILE": file, "DATA": tmp_path / "data", "OUT": tmp_path / "out", "HOSTS": hosts,
              "MANIFEST": manifest, "TRACES": ROOT / "tests" / "data" / "traces" / "bitbrains"}
    result = run(*(places.get(arg, arg) for arg in _READERS[reader]), timeout=60)
    status = 1 if reader == "rules check" and read else 2
    assert result.returncode == status and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("reader", sorted(_READERS))
def test_an_input_file_that_is_not_utf8_is_named_with_where_it_breaks(tmp_path, reader):
    # A Latin-1 letter at byte 14, on line 2: in a comment of a TOML file, a source name of a VM map.
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b"source,vm\nweb-\xe9,x\n" if reader == "replay --vm-map" else b"days = 3\n# caf\xe9")
    line = _run_reader(reader, tmp_path, latin1, read=True)
    assert "%s: not UTF-8 at byte 14 (line 2)" % latin1 in line


@pytest.mark.parametrize("reader", ["report --policy", "headroom --inventory", "admit MANIFEST",
                                    "rules check", "replay --vm-map", "serve --auth-keys",
                                    "serve --status-token-file", "serve --collectd-auth-file",
                                    "alerts --token-file"])
@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda t: t / "data", "is a directory, not a file"),
        (lambda t: t / "hosts.toml" / "x", "cannot be read: Not a directory"),
        (lambda t: t / "nowhere.toml", "does not exist"),
    ],
)
def test_an_input_file_that_cannot_be_read_is_named_with_why(tmp_path, reader, make, problem):
    path = make(tmp_path)
    assert "%s: %s" % (path, problem) in _run_reader(reader, tmp_path, path)


def test_an_input_files_problems_name_the_first_bad_byte():
    from vmstats import inputfile

    with pytest.raises(inputfile.FileProblem, match=r"^f: not UTF-8 at byte 4 \(line 3\)$"):
        inputfile.parse_toml(b"a\nb\n\xff\n", "f")
    with pytest.raises(inputfile.FileProblem, match=r"^f: not UTF-8 at byte 0 \(line 1\)$"):
        inputfile.parse_toml(b"\xc3(", "f")  # a sequence cut short names its first byte
    with pytest.raises(inputfile.FileProblem, match=r"^f: not valid TOML: "):
        inputfile.parse_toml("a = é =\n".encode(), "f")
    assert inputfile.parse_toml("name = 'café'\n".encode(), "f") == {"name": "café"}
    # A disk's stray block of '[' (tomllib recurses once per level): the file, not a RecursionError.
    with pytest.raises(inputfile.FileProblem, match=r"^f: not valid TOML: nested too deeply$"):
        inputfile.parse_toml(b"a = " + b"[" * 100_000 + b"]" * 100_000, "f")


def _book(path: Path, small_hourly: float) -> Path:
    path.write_text(
        'currency = "EUR"\nvcpu_hour = 0.02\ngb_ram_hour = 0.005\n'
        '[[sizes]]\nname = "small"\nvcpus = 1\nmemory_gb = 2\nhourly = %s\n'
        '[[sizes]]\nname = "medium"\nvcpus = 2\nmemory_gb = 4\nhourly = 0.06\n' % small_hourly
    )
    return path


def test_a_price_book_pricing_a_bigger_shape_below_a_smaller_one_is_warned_about(tmp_path):
    data = tmp_path / "data"
    write_fleet(data, _end())
    bad = run("report", data, "-o", tmp_path / "o1", "--prices", _book(tmp_path / "bad.toml", 0.02))
    assert bad.returncode == 0, bad.stderr
    warnings = [line for line in bad.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, bad.stderr
    assert "1 vCPU / 1 GB costs EUR 0.0250 an hour, more than the bigger 1 vCPU / 2 GB (small)" in warnings[0]
    fine = run("report", data, "-o", tmp_path / "o2", "--prices", _book(tmp_path / "ok.toml", 0.03))
    shipped = run("report", data, "-o", tmp_path / "o3")
    assert fine.returncode == 0 and shipped.returncode == 0
    assert "warning" not in fine.stderr + shipped.stderr


def test_the_shipped_example_prices_grow_with_the_shape():
    from vmstats.report.prices import PriceBook

    book = PriceBook.load(None)
    assert book.bigger_but_cheaper() is None
    assert book.monthly(1, 1) < book.monthly(1, 2) < book.monthly(2, 4)


PROGRESS = re.compile(r"^(simulate|replay|report): \d+(/\d+)? (records sent|VM-days parsed) after \d+ s")


def test_long_commands_write_progress_lines_off_a_terminal(tmp_path):
    often = {"VMSTATS_PROGRESS_SECONDS": "0.000001"}
    # Flushed often: the replay sends each VM's history in bulk, and waits on 'busy' for the
    # flush that empties a full VM's buffer: with flushes a second apart, half of this test's time.
    with serve(tmp_path, "--flush-interval", "0.2") as server:
        address = "127.0.0.1:%d" % server.tcp_port
        sim = run("simulate", "--vms", 20, "--days", 1, "--server", address, env=often)
        assert sim.returncode == 0, sim.stderr
        quiet = run("simulate", "--vms", 5, "--days", 0.2, "--seed", 2, "--server", address)
        assert quiet.returncode == 0, quiet.stderr
        traces = ROOT / "tests" / "data" / "traces" / "bitbrains"
        rep = run("replay", "--format", "bitbrains", traces, "--server", address, env=often)
        assert rep.returncode == 0, rep.stderr
    assert server.returncode == 0, server.output
    lines = [line for line in sim.stderr.splitlines() if PROGRESS.match(line)]
    assert len(lines) >= 10
    counts = [int(line.split()[1]) for line in lines]
    sent = int(re.search(r"^sent (\d+) records", sim.stdout, re.M).group(1))
    assert counts == sorted(counts) and counts[-1] == sent > 20 * 1000
    assert any(line.startswith("replay: ") for line in rep.stderr.splitlines() if PROGRESS.match(line))
    assert quiet.stderr == ""  # the default interval is 30 s: a short run writes no progress
    data = tmp_path / "long"
    write_fleet(data, _end(), days=60)  # 122 VM-days (61 UTC days, 2 VMs): enough to be worth a line
    report = run("report", data, "-o", tmp_path / "out", "--days", 70, env=often)
    assert report.returncode == 0, report.stderr
    assert any(PROGRESS.match(line) and "/122 VM-days" in line for line in report.stderr.splitlines())
    again = run("report", data, "-o", tmp_path / "out2", "--days", 70)  # the default: 30 s
    assert again.returncode == 0, again.stderr
    assert [line for line in again.stderr.splitlines() if line] == [again.stderr.splitlines()[0]]
    assert again.stderr.startswith("parsed 122 VM-days in ")
