"""What the operator's documents show can be typed as shown: every flag they name belongs to a
command that has it (vmstats', a benchmark's, bin/demo's, or the named other tool's), every
``vmstats_*`` series they name is on a running server's /metrics with the labels they give it,
and the commands that reproduce a figure (a benchmark, a RELIABILITY.md scenario) name scripts,
tests and selections that exist.  test_operations.py holds the per-command check of
``vmstats ...`` lines and the defaults the guides' tables give; this file keeps the rest true.
"""

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from serverproc import serve
from test_operations import OPERATOR_DOCS, _cli_options, _doc_command_lines

ROOT = Path(__file__).resolve().parent.parent
#: A flag: one or two dashes, then a letter, not inside a word (``re-run``, ``x--y``).
FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")
#: Flags the docs give to other programs, each with the program (so a vmstats flag renamed to
#: one of these words would still be caught on a vmstats command line by test_operations.py).
FOREIGN = {
    "--cgroupns": "docker run", "--pid": "docker run", "--now": "systemctl enable",
    "--nthreads": "dask worker", "--nworkers": "dask worker", "--tls-": "dask scheduler",
    "--data": "curl", "--native": "py-spy", "--co": "pytest", "--pool": "a resize script's argv",
}


def _spans(doc: Path) -> list[str]:
    return _doc_command_lines(doc.read_text())


def _bench_lines() -> list[tuple[str, str, str]]:
    """``(doc, script, rest)`` for each mention of a benchmark script with what follows it up
    to the end of that command (``;``, ``|``, ``&&``)."""
    found = []
    for doc in OPERATOR_DOCS:
        for line in _spans(doc):
            for match in re.finditer(r"\bbench/(\w+)\.py\b([^;|&]*)", line):
                found.append((doc.name, match.group(1), match.group(2)))
    return found


def _help(argv: list[str]) -> str:
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (argv, done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def bench_options() -> dict[tuple[str, str], set[str]]:
    """``{(script, subcommand or ""): flags its --help lists}`` for every script the docs give
    options or a subcommand to, from the real ``--help`` of each (run side by side)."""
    wanted = set()
    for _doc, script, rest in _bench_lines():
        assert (ROOT / "bench" / (script + ".py")).is_file(), script
        words = rest.split()
        if words and re.fullmatch(r"[a-z]+", words[0]):
            wanted.add((script, words[0]))
        if FLAG.search(rest) or not words:
            wanted.add((script, ""))
    keys = sorted(wanted)
    argvs = [[sys.executable, "bench/%s.py" % script, *([sub] if sub else []), "--help"]
             for script, sub in keys]
    with ThreadPoolExecutor(4) as pool:
        helps = list(pool.map(_help, argvs))
    return {key: set(FLAG.findall(text)) | {"-h", "--help"} for key, text in zip(keys, helps, strict=True)}


def _demo_options() -> set[str]:
    """bin/demo's flags, from its own --help (printed before it sets anything up)."""
    return set(FLAG.findall(_help([str(ROOT / "bin" / "demo"), "--help"])))


def test_benchmark_commands_give_options_their_scripts_have(bench_options):
    """Each ``bench/X.py [sub] --flag`` in the docs runs: the script exists, the subcommand is
    one of its own and each flag is in that subcommand's --help."""
    options = bench_options
    wrong, checked = [], 0
    for doc, script, rest in _bench_lines():
        words = rest.split()
        sub = words[0] if words and (script, words[0]) in options else ""
        if sub == "" and words and re.fullmatch(r"[a-z]+", words[0]):
            wrong.append("%s: bench/%s.py has no subcommand %s" % (doc, script, words[0]))
        for flag in FLAG.findall(rest):
            checked += 1
            if flag not in options[(script, sub)]:
                wrong.append("%s: bench/%s.py %s has no %s" % (doc, script, sub, flag))
    assert not wrong, "\n".join(wrong)
    assert checked > 15, checked  # the benchmarks' command lines were found


def test_every_flag_the_docs_name_is_one_a_command_has(bench_options):
    """A flag named alone in the prose (``--max-line``, ``--pack-fill``) is one some command
    takes: a renamed or removed option shows here, not when an operator types it."""
    known = set().union(*_cli_options().values(), *bench_options.values(), _demo_options())
    wrong = []
    for doc in OPERATOR_DOCS:
        for flag in set(FLAG.findall(" ".join(_spans(doc)))):
            if flag.startswith("--") and flag not in known and flag not in FOREIGN:
                wrong.append("%s: %s" % (doc.name, flag))
    assert not wrong, sorted(wrong)


def test_the_demo_synopsis_gives_options_bin_demo_has():
    (synopsis,) = [line for line in _spans(ROOT / "docs" / "SIMULATOR.md") if line.startswith("bin/demo ")]
    flags = FLAG.findall(synopsis)
    assert len(flags) >= 7 and set(flags) <= _demo_options(), synopsis


def test_the_readme_quick_start_is_the_two_scripts():
    text = (ROOT / "README.md").read_text()
    (block,) = re.findall(r"^## Quick start\n\n```\n(.*?)^```", text, re.M | re.S)
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    assert commands == ["./bin/demo", "./bin/test"], commands
    assert all((ROOT / c).is_file() and (ROOT / c).stat().st_mode & 0o111 for c in commands)


def _test_names(files: list[str]) -> str:
    """The test functions of ``files``, one a line."""
    return "\n".join(name for f in files
                     for name in re.findall(r"^def (test_\w+)", (ROOT / f).read_text(), re.M))


def test_reliability_commands_select_tests_that_exist():
    """RELIABILITY.md's commands name test files that exist, and each ``-k`` (in a command or
    the summary's last column) selects a test of those files."""
    text = (ROOT / "RELIABILITY.md").read_text()
    every = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    checked = 0
    for line in _spans(ROOT / "RELIABILITY.md"):
        if "pytest" not in line:
            continue
        files = re.findall(r"\btests/\w+\.py\b", line)
        assert files and all((ROOT / f).is_file() for f in files), line
        selection = re.search(r"-k (\"[^\"]+\"|\S+)", line)
        for word in re.findall(r"\w+", selection.group(1)) if selection else []:
            if word not in ("or", "and", "not"):
                assert word in _test_names(files), (word, line)
                checked += 1
    rows = [row for row in text.split("## Summary", 1)[1].split("\n## ", 1)[0].splitlines()
            if row.startswith("| ") and not row.startswith("| Scenario")]
    names = _test_names(every)
    for row in rows:
        for word in re.findall(r"`(\w+)`", row.rstrip(" |").rsplit("|", 1)[1]):
            assert word in names, (word, row[:60])
            checked += 1
    assert checked > 25, checked


#: ``vmstats_name{label="value"|"other",label2}`` as the docs write a series.
SERIES = re.compile(r"\bvmstats_([a-z0-9_]*[a-z0-9])(?:\{([^}]*)\})?")


def _documented_series() -> dict[str, dict[str, set[str]]]:
    """``{name: {label: {values}}}`` of every series the docs name (a value ``...`` is none)."""
    series: dict[str, dict[str, set[str]]] = {}
    for doc in OPERATOR_DOCS:
        for name, labels in SERIES.findall(doc.read_text()):
            named = series.setdefault(name, {})
            for part in re.findall(r"(\w+)((?:=(?:\"[^\"]*\"\|?)+)?)", labels or ""):
                named.setdefault(part[0], set()).update(v for v in re.findall(r"\"([^\"]*)\"", part[1])
                                                        if v != "...")
    return series


def test_every_series_the_docs_name_is_on_a_running_servers_metrics(tmp_path):
    """A real server with every part that adds series (rules, an inventory, the other formats'
    ports) lists each documented name on /metrics; each documented label is on its samples (or,
    for a series with none yet, written by the code), with each documented value."""
    (rules,) = re.findall(r"^```toml\n(.*?)^```", (ROOT / "docs" / "RULES.md").read_text(), re.M | re.S)
    (tmp_path / "rules.toml").write_text(rules)
    (tmp_path / "hosts.toml").write_text(re.findall(r"^```toml\n(.*?)^```", (ROOT / "docs" / "CAPACITY.md")
                                                    .read_text(), re.M | re.S)[0])
    with serve(tmp_path, "--rules", str(tmp_path / "rules.toml"), "--inventory", str(tmp_path / "hosts.toml"),
               "--influx-port", "0", "--graphite-port", "0", "--collectd-port", "0") as server:
        exposition = server.http("/metrics")
    kinds = dict(re.findall(r"^# TYPE vmstats_(\w+) (\w+)$", exposition, re.M))
    samples: dict[str, dict[str, set[str]]] = {}
    for name, labels in re.findall(r"^vmstats_(\w+)\{([^}]*)\} ", exposition, re.M):
        for label, value in re.findall(r"(\w+)=\"([^\"]*)\"", labels):
            samples.setdefault(name, {}).setdefault(label, set()).add(value)
    sources = "\n".join(p.read_text() for p in (ROOT / "vmstats").rglob("*.py"))
    documented = _documented_series()
    assert len(documented) > 50, sorted(documented)
    wrong = ["vmstats_%s is not on /metrics" % name for name in documented if name not in kinds]
    for name, labels in documented.items():
        for label, values in labels.items():
            if name in samples:  # its labels are on the page: they are the truth
                have = samples[name].get(label)
                missing = values - (have or set()) if have is not None else {"(the label)"}
            else:  # no sample yet: the label and its values are written by the code
                missing = {v for v in {label, *values}
                           if not re.search(r"[\"']%s[\"']" % re.escape(v), sources)}
            wrong += ["vmstats_%s{%s}: %s" % (name, label, v) for v in sorted(missing)]
    assert not wrong, wrong


def test_the_capacity_settings_table_gives_headrooms_own_defaults():
    """docs/CAPACITY.md's settings table (option, default) is what ``vmstats headroom`` applies:
    a default changed in vmstats/capacity/defaults.py and not in the guide fails here."""
    import click

    from vmstats import cli

    text = (ROOT / "docs" / "CAPACITY.md").read_text()
    table = text.split("## Settings", 1)[1].strip().split("\n\n", 1)[0]
    context = click.Context(cli.main)
    params = {o: p for p in cli.main.get_command(context, "headroom").params for o in p.opts}
    checked = 0
    for row in table.splitlines()[2:]:
        _name, option, default, _meaning = [c.strip() for c in row.strip("|").split("|")]
        flag = re.match(r"`(--[a-z-]+)`", option)
        if not flag or not re.fullmatch(r"p?[\d.]+", default):
            continue
        param = params[flag.group(1)]
        assert param.type.convert(default, param, context) == param.type.convert(
            param.default, param, context), (flag.group(1), default, param.default)
        checked += 1
    assert checked >= 5, table


def test_every_file_a_shipped_unit_reads_is_in_the_operations_guide():
    """A unit's ``EnvironmentFile=`` is a place an operator sets things: one the guide does not
    name (``/etc/vmstats/agent.env`` was read by the agent's unit, named nowhere) is a setting
    nobody knows to look for, or a stray file nobody knows is read."""
    guide = (ROOT / "docs" / "OPERATIONS.md").read_text()
    read = {(unit.name, path) for unit in sorted((ROOT / "packaging").glob("*.service"))
            for path in re.findall(r"^EnvironmentFile=-?(\S+)", unit.read_text(), re.M)}
    assert {name for name, _path in read} >= {"vmstats-agent.service", "vmstats-server.service"}
    assert [(name, path) for name, path in sorted(read) if "`%s`" % path not in guide] == []
