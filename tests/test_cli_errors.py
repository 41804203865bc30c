"""Every command, given bad input of each kind, ends the same way (README.md, exit status).

2 when the command line is refused before any work (an option's value, a missing or
conflicting option, a file it names that is missing, a folder, binary, empty or not what it
should be), 1 when the run fails on the way (the logs, the network); either way exactly one
``Error: ...`` line on stderr, nothing on stdout, no traceback, and nothing left behind.
Run in this process through the real ``vmstats`` group (click's CliRunner).
"""

from pathlib import Path

import pytest
from click.testing import CliRunner

from vmstats import cli

REFUSED, FAILED = 2, 1
_CLOSED = ("--server", "127.0.0.1:9")  # a port nothing listens on
_SERVE = ("serve", "--bind", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0", "--http-port", "0",
          "--duration", "1s", "--data-dir", "data")
_HEADROOM = ("headroom", "data", "--inventory", "hosts.toml", "--profile", "2x4")
_ADMIT = ("admit", "manifest.toml", "data", "--inventory", "hosts.toml")

#: (command line, status, what the one line says after "Error: ").  Names in the folder the
#: test runs in: data/ (a data dir with no logs), hosts.toml, manifest.toml (good), nope (not
#: there), bad.toml (not TOML), bin.toml (not UTF-8), empty.toml, afile (a line of text),
#: folder/ (an empty folder), twice.keys (a key file naming one key id twice), deep.json (JSON
#: nested 100,000 deep), twice.json (a manifest giving a key twice), sized.toml (a manifest
#: naming a profile "2x4").
CASES = [
    # an option's value
    (("report", "data", "-o", "out", "--days", "x"), REFUSED,
     "Invalid value for '--days': 'x' is not an integer."),
    (("report", "data", "-o", "out", "--cpu-idle", "nan"), REFUSED, "option --cpu-idle: cpu_idle=nan is not"),
    (("report", "data", "-o", "out", "--set", "days"), REFUSED, "--set expects KEY=VALUE, got 'days'"),
    (("report", "data", "-o", "out", "--set", "dayz=3"), REFUSED, "--set dayz=3: unknown setting 'dayz'"),
    (("report", "data", "-o", "out", "--since", "yesterday"), REFUSED,
     "--since 'yesterday' is not a YYYY-MM-DD"),
    (("report", "data", "-o", "out", "--by", "Bad Tag"), REFUSED, "--by 'Bad Tag' is not a tag"),
    # --since names the window's first day and --days counted back from its last: together one
    # of them was dropped without a word
    (("report", "data", "-o", "out", "--since", "2026-11-01", "--days", "7"), REFUSED,
     "--days 7 and --since 2026-11-01 both choose the window's first day: give --since [--until]"),
    (("report", "data", "-o", "out", "--since", "2026-11-01", "--set", "days=7"), REFUSED,
     "--set days=7 and --since 2026-11-01 both choose the window's first day"),
    (("backtest", "data", "-o", "out", "--decide-days", "0"), REFUSED, "Invalid value for '--decide-days'"),
    (("backtest", "data", "-o", "out", "--decide-until", "soon"), REFUSED, "--decide-until 'soon' is not"),
    ((*_HEADROOM[:-1], "zz"), REFUSED, "profile 'zz': expected VCPUSxGB"),
    ((*_HEADROOM, "--percentile", "p200"), REFUSED, "percentile 'p200': must be above 0"),
    ((*_ADMIT, "--days", "-1"), REFUSED, "Invalid value for '--days'"),
    (("simulate", "--vms", "x", *_CLOSED), REFUSED, "Invalid value for '--vms': 'x' is not an integer."),
    (("simulate", "--vms", "1", "--server", "127.0.0.1:x"), REFUSED, "127.0.0.1:x"),
    # the generators take no negative seed, and an infinite weight made every share NaN:
    # both ended in a ValueError's traceback; a profile weighed twice took the later weight
    (("simulate", "--vms", "1", "--seed", "-1", *_CLOSED), REFUSED,
     "Invalid value for '--seed': -1 is not in the range x>=0."),
    (("replay", "--format", "csv", "afile", "--seed", "-1", *_CLOSED), REFUSED,
     "Invalid value for '--seed': -1 is not in the range x>=0."),
    (("simulate", "--vms", "1", "--mix", "idle=1e400", *_CLOSED), REFUSED,
     "weight of idle in --mix must be a finite number >= 0"),
    (("simulate", "--vms", "1", "--mix", "idle=1,idle=2", *_CLOSED), REFUSED, "idle given twice in --mix"),
    (("replay", "--format", "nope", "afile", *_CLOSED), REFUSED, "Invalid value for '--format'"),
    # a size the server refuses: every record was sent and refused, then exit 1
    (("replay", "--format", "csv", "afile", "--fill-size", "0:4096", *_CLOSED), REFUSED,
     "Invalid value for --fill-size: 0:4096: the server would refuse every record: vcpus=0i outside"),
    (("replay", "--format", "csv", "afile", "--fill-size", "2:-5", *_CLOSED), REFUSED,
     "Invalid value for --fill-size: 2:-5: the server would refuse every record: mem_mb=-5i outside"),
    (("simulate-pool", "--curve", "zz", *_CLOSED), REFUSED, "Invalid value for --curve"),
    # an infinite demand had every member report 100 %, a nan one 0 %, without a word
    (("simulate-pool", "--curve", "0:120,10:inf", *_CLOSED), REFUSED,
     "Invalid value for --curve: '10:inf': second and demand must be finite numbers"),
    (("simulate-pool", "--curve", "0:nan", *_CLOSED), REFUSED,
     "Invalid value for --curve: '0:nan': second and demand must be finite numbers"),
    (("simulate-pool", "--curve", "0:-1", *_CLOSED), REFUSED, "Invalid value for --curve: demand cannot be"),
    # a member the pool never has, or a second the run never reaches, was never stopped
    (("simulate-pool", "--silent", "99:1", *_CLOSED), REFUSED,
     "Invalid value for --silent: member 99: the pool has 3 members (1 to 3) and no --desired-file"),
    (("simulate-pool", "--silent", "101:1", "--desired-file", "nope", *_CLOSED), REFUSED,
     "Invalid value for --silent: member 101: the pool has members 1 to 100 at most"),
    (("simulate-pool", "--silent", "2:nan", *_CLOSED), REFUSED,
     "Invalid value for --silent: second nan: the run lasts 0 to 60 seconds (--duration)"),
    (("simulate-pool", "--silent", "2:61", *_CLOSED), REFUSED,
     "Invalid value for --silent: second 61: the run lasts 0 to 60 seconds"),
    # names the server refuses in every record (or reads as another VM): sent, then exit 1
    (("simulate-pool", "--prefix", "../x", *_CLOSED), REFUSED,
     "Invalid value for --prefix: ../x-1: the server would refuse every record"),
    (("simulate-pool", "--prefix", "a,b=c", *_CLOSED), REFUSED,
     "Invalid value for --prefix: a,b=c-1: the server would read another VM"),
    (("simulate-pool", "--hosts", "kvm1,a/b", *_CLOSED), REFUSED,
     "Invalid value for --hosts: a/b: the server would refuse every record"),
    (("score", "--truth", "afile", "--report", "afile", "--max-wrong", "x"), REFUSED,
     "Invalid value for '--max-wrong'"),
    (("compact", "--data-dir", "data", "--compact-after", "x"), REFUSED,
     "Invalid value for '--compact-after'"),
    (("alerts", "--data-dir", "data", "--recent", "-1"), REFUSED, "Invalid value for '--recent'"),
    (("agent-bundle", "-o", "folder"), REFUSED, "Invalid value for '-o' / '--output': folder is a folder"),
    ((*_SERVE, "--max-vms", "x"), REFUSED, "Invalid value for '--max-vms'"),
    ((*_SERVE, "--edge-max-open", "0"), REFUSED,
     "Invalid value for '--edge-max-open': 0 is not in the range x>=1."),
    ((*_SERVE, "--edge-max-open", "1e5"), REFUSED,
     "Invalid value for '--edge-max-open': '1e5' is not an integer."),
    ((*_SERVE, "--edge-max-counters", "-1"), REFUSED,
     "Invalid value for '--edge-max-counters': -1 is not in the range x>=1."),
    ((*_SERVE, "--edge-max-counters", "many"), REFUSED,
     "Invalid value for '--edge-max-counters': 'many' is not an integer."),
    ((*_SERVE, "--edge-max-written", "0"), REFUSED,
     "Invalid value for '--edge-max-written': 0 is not in the range x>=1."),
    ((*_SERVE, "--edge-max-written", "2e5"), REFUSED,
     "Invalid value for '--edge-max-written': '2e5' is not an integer."),
    ((*_SERVE, "--edge-max-name-bytes", "0"), REFUSED,
     "Invalid value for '--edge-max-name-bytes': 0 is not in the range x>=1."),
    ((*_SERVE, "--edge-max-name-bytes", "256B"), REFUSED,
     "Invalid value for '--edge-max-name-bytes': '256B' is not an integer."),
    ((*_SERVE, "--allow", "10.0.0.0/33"), REFUSED, "--allow: '10.0.0.0/33' is not an address"),
    ((*_SERVE, "--parser-timeout", "0s"), REFUSED, "--parser-timeout must be 1s or more"),
    # SO_RCVBUF is a C int: past it, "TypeError: a bytes-like object is required" and exit 1
    ((*_SERVE, "--rcvbuf", "2147483648"), REFUSED,
     "Invalid value for '--rcvbuf': 2147483648 is not in the range 4096<=x<=2147483647."),
    # a missing, unknown or conflicting option or argument
    (("report", "data"), REFUSED, "Missing option '-o' / '--out'."),
    (("report", "data", "-o", "out", "--bogus"), REFUSED, "No such option '--bogus'."),
    (("report", "data", "-o", "out", "--set", "days=3", "--days", "4"), REFUSED, "give days two values"),
    (("backtest", "-o", "out"), REFUSED, "Missing argument 'DATA_DIR...'."),
    (("headroom", "data", "--profile", "2x4"), REFUSED, "Missing option '--inventory'."),
    (("admit", "manifest.toml", "data"), REFUSED, "Missing option '--inventory'."),
    ((*_ADMIT, "--arrivals", "x"), REFUSED, "--arrivals and --arrival-profile go with --backtest"),
    (("admit", "--backtest", "data", "--inventory", "hosts.toml", "--arrivals", "x",
      "--arrival-profile", "2x4"), REFUSED, "--arrivals and --arrival-profile are two kinds"),
    (("score", "--report", "afile"), REFUSED, "Missing option '--truth'."),
    (("simulate", "--vms", "1", "--workers", "2", "--speed", "60", *_CLOSED), REFUSED,
     "--workers sends each VM group's day"),
    (("replay", "--format", "bitbrains", *_CLOSED), REFUSED, "Missing argument 'PATHS...'."),
    (("rules", "check"), REFUSED, "Missing argument 'PATH'."),
    (("rules", "lint", "x"), REFUSED, "No such command 'lint'."),
    (("nosuchcommand",), REFUSED, "No such command 'nosuchcommand'."),
    ((*_SERVE, "--collectd-security", "sign"), REFUSED,
     "--collectd-security sign needs --collectd-auth-file"),
    ((*_SERVE, "--status-token", "a", "--status-token-file", "afile"), REFUSED, "are one setting"),
    ((*_SERVE, "--write-token", " "), REFUSED, "--write-token is only spaces: give the token"),
    ((*_SERVE, "--status-token", " \t"), REFUSED, "--status-token is only spaces: give the token"),
    ((*_SERVE, "--influx-vm-tag", ""), REFUSED, "--influx-vm-tag is empty: name the"),
    (("alerts", "--token", "a", "--token-file", "afile", "--url", "http://127.0.0.1:9"), REFUSED,
     "--token and --token-file are one setting"),
    # options of the source not read were dropped without a word: the log read, the wait unused
    (("alerts", "--data-dir", "data", "--timeout", "3"), REFUSED,
     "--timeout only with --url: without it the action log in --data-dir is read, which needs no "
     "server"),
    (("alerts", "--token-file", "afile", "--timeout", "3"), REFUSED,
     "--token-file and --timeout only with --url"),
    (("alerts", "--token", "a"), REFUSED, "--token only with --url"),
    (("alerts", "--data-dir", "data", "--url", "http://127.0.0.1:9"), REFUSED,
     "--data-dir and --url are two sources: give one"),
    # a server's address that is none: urllib's reason, exit 1, as if the network had failed
    (("alerts", "--url", "not-a-url"), REFUSED,
     "Invalid value for '--url': 'not-a-url' is not a URL: give http://HOST:PORT, e.g. "),
    (("alerts", "--url", "http://"), REFUSED, "Invalid value for '--url': 'http://' names no host"),
    (("rules", "mutes", "--url", "http://host:notaport"), REFUSED,
     "'http://host:notaport': the port is not a number from 1 to 65535"),
    (("rules", "unmute", "0123456789ab", "--url", "http://[::1"), REFUSED,
     "'http://[::1' is not a URL: Invalid IPv6 URL"),
    (("rules", "mutes", "--url", "http://host:8898 "), REFUSED, "has a space or control character"),
    (("rules", "mutes", "--url", "http://a..b:8898"), REFUSED, "'a..b' is not a host name"),
    # other schemes were asked: ftp:// went out, file:///srv read the local file /srv/alerts
    (("rules", "mutes", "--url", "ftp://127.0.0.1:9/"), REFUSED,
     "'ftp://127.0.0.1:9/' is not an http:// or https:// URL"),
    (("alerts", "--url", "file:///etc/passwd"), REFUSED, "'file:///etc/passwd' is not an http://"),
    # a password or a token in the address was echoed in the line (test_a_secret_... below)
    (("rules", "mute", "--rule", "x", "--duration", "1h", "--comment", "c", "--url",
      "http://ops:s3cret@127.0.0.1:9"), REFUSED,
     "'http://***@127.0.0.1:9': a user or password in the URL is not sent; give the status token"),
    (("alerts", "--url", "http://127.0.0.1:9/?token=s3cret"), REFUSED,
     "'http://127.0.0.1:9/?...': the server's address takes no query (?) or fragment (#)"),
    (("alerts", "--url", "http://127.0.0.1:9", "--token", "s3\ncret"), REFUSED,
     "the status token has a control character, which a header cannot carry"),
    (("alerts", "--url", "http://127.0.0.1:9", "--timeout", "0"), REFUSED,
     "Invalid value for '--timeout': 0.0 is not in the range x>0."),
    (("rules", "mutes", "--timeout", "inf"), REFUSED, "Invalid value for '--timeout': 'inf' is not"),
    # a file the command line names: not there, a folder, not TOML, not UTF-8, empty, wrong
    (("report", "data", "-o", "out", "--prices", "nope"), REFUSED, "price book file nope: does not exist"),
    (("report", "data", "-o", "out", "--prices", "folder"), REFUSED,
     "price book file folder: is a directory"),
    (("report", "data", "-o", "out", "--policy", "bad.toml"), REFUSED,
     "policy file bad.toml: not valid TOML"),
    (("report", "data", "-o", "out", "--exclusions", "bin.toml"), REFUSED,
     "exclusions file bin.toml: not UTF-8"),
    (("report", "data", "-o", "out", "--prices", "empty.toml"), REFUSED, "price book empty.toml: vcpu_hour"),
    (("report", "data", "-o", "out", "--inventory", "empty.toml"), REFUSED,
     "inventory empty.toml: no [[host]]"),
    (("report", "nope", "-o", "out"), REFUSED, "nope does not exist or is not a directory"),
    (("report", "afile", "-o", "out"), REFUSED, "afile does not exist or is not a directory"),
    (("backtest", "data", "-o", "out", "--prices", "bad.toml"), REFUSED,
     "price book file bad.toml: not valid"),
    (("headroom", "data", "--inventory", "bin.toml", "--profile", "2x4"), REFUSED,
     "inventory bin.toml: not UTF-8"),
    (("admit", "nope", "data", "--inventory", "hosts.toml"), REFUSED, "manifest nope: does not exist"),
    (("admit", "empty.toml", "data", "--inventory", "hosts.toml"), REFUSED, "manifest empty.toml: vms:"),
    (("admit", "manifest.toml", "--summary", "afile"), REFUSED, "summary afile is not a capacity summary"),
    # JSON nested past the parser's recursion: a RecursionError's traceback, exit 1
    (("admit", "deep.json", "data", "--inventory", "hosts.toml"), REFUSED,
     "manifest deep.json: not valid JSON: nested too deeply"),
    # an empty --arrivals ("$ARRIVALS" unset) or --arrival-profile ran the default arrivals
    (("admit", "--backtest", "data", "--inventory", "hosts.toml", "--arrivals", " , "), REFUSED,
     "--arrivals ' , ' names no VM: give ids, globs or CIDRs, or leave it out"),
    (("admit", "--backtest", "data", "--inventory", "hosts.toml", "--arrival-profile", ""), REFUSED,
     "profile '': expected VCPUSxGB"),
    ((*_ADMIT, "--arrivals", ""), REFUSED, "--arrivals and --arrival-profile go with --backtest"),
    (("admit", "twice.json", "data", "--inventory", "hosts.toml"), REFUSED,
     "manifest twice.json: not valid JSON: 'count' is given twice in one object"),
    (("admit", "sized.toml", "data", "--inventory", "hosts.toml"), REFUSED,
     "manifest sized.toml: profiles.2x4: a profile's name may not be written as a size"),
    (("admit", "manifest.toml", "--summary", "deep.json"), REFUSED,
     "summary deep.json is not a capacity summary: not valid JSON: nested too deeply"),
    (("score", "--truth", "bin.toml", "--report", "afile"), REFUSED,
     "truth file bin.toml: not UTF-8 at byte 0"),
    (("score", "--truth", "nope", "--report", "afile"), REFUSED, "truth file nope: does not exist"),
    (("score", "--truth", "afile", "--report", "afile"), REFUSED, "truth file afile lacks columns"),
    (("replay", "--format", "bitbrains", "nope", *_CLOSED), REFUSED, "no such trace file or folder: nope"),
    (("simulate", "--vms", "1", "--days", "0.01", "--inventory", "folder", *_CLOSED), REFUSED,
     "Invalid value for '--inventory': folder is a folder"),
    (("replay", "--format", "bitbrains", "afile", "--vm-map", "nope", *_CLOSED), REFUSED,
     "nope: does not exist"),
    (("compact", "--data-dir", "nope"), REFUSED, "data dir nope does not exist or is not a directory"),
    (("alerts", "--token-file", "empty.toml", "--url", "http://127.0.0.1:9"), REFUSED,
     "cannot read --token-file: empty.toml: is empty"),
    ((*_SERVE, "--rules", "bad.toml"), REFUSED, "rules file bad.toml: not valid TOML"),
    ((*_SERVE, "--auth-keys", "nope"), REFUSED, "cannot read --auth-keys: nope: does not exist"),
    # the later line's secret and VMs silently replaced the earlier's
    ((*_SERVE, "--auth-keys", "twice.keys"), REFUSED,
     "twice.keys:3: key 'web' given twice (first on line 1)"),
    ((*_SERVE, "--inventory", "empty.toml"), REFUSED, "inventory empty.toml: no [[host]] tables"),
    # where the output goes (tests/test_output_paths.py walks every such option)
    (("report", "data", "-o", "afile"), REFUSED, "Invalid value for '-o' / '--out': afile is a file"),
    (("backtest", "data", "-o", ""), REFUSED, "Invalid value for '-o' / '--out': an empty folder name"),
    # the run fails on the way: what it met, not what it was given
    (("report", "data", "-o", "out"), FAILED, "holds no VM logs"),
    (("backtest", "data", "-o", "out"), FAILED, "holds no VM logs"),
    ((*_HEADROOM, "-o", "out"), FAILED, "holds no VM logs"),
    (_ADMIT, FAILED, "holds no VM logs"),
    (("simulate", "--vms", "1", "--days", "0.01", *_CLOSED), FAILED, "TCP 127.0.0.1:9: Connection refused"),
    (("alerts", "--data-dir", "data"), FAILED, "no action log folder at data/rules"),
    (("alerts", "--data-dir", "nowhere"), REFUSED, "data dir nowhere does not exist or is not a directory"),
    (("alerts", "--url", "http://127.0.0.1:9"), FAILED,
     "cannot read http://127.0.0.1:9/alerts: Connection refused"),
    (("rules", "unmute", "0123456789ab", "--url", "http://127.0.0.1:9/vmstats/"), FAILED,
     "cannot read http://127.0.0.1:9/vmstats/mutes?id=0123456789ab: Connection refused"),
]


@pytest.fixture
def place(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "folder").mkdir()
    (tmp_path / "hosts.toml").write_text('[[host]]\nname = "h"\nvcpus = 8\nmem_gb = 32\n')
    (tmp_path / "manifest.toml").write_text('[[vms]]\nprofile = "2x4"\n')
    (tmp_path / "bad.toml").write_text("x = [\n")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00\x01binary")
    (tmp_path / "empty.toml").write_text("")
    (tmp_path / "afile").write_text("a line\n")
    (tmp_path / "twice.keys").write_text("web s3cret web-*\nops 0ther\nweb n3w\n")
    (tmp_path / "deep.json").write_text("[" * 100000)
    (tmp_path / "twice.json").write_text('{"vms": [{"profile": "2x4", "count": 1, "count": 500}]}')
    (tmp_path / "sized.toml").write_text('[profiles]\n"2x4" = "64x512"\n[[vms]]\nprofile = "2x4"\n')
    return tmp_path


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("args, status, says", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_one_line_and_its_status(place, args, status, says):
    before = _tree(place)
    result = CliRunner().invoke(cli.main, list(args))
    assert isinstance(result.exception, SystemExit), result.exc_info  # no traceback
    assert result.exit_code == status, result.output
    assert result.stdout == "" or status == FAILED, result.stdout  # a run may have begun
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert says in lines[0], lines[0]
    assert _tree(place) == before, "left something behind"


def test_every_command_is_walked():
    """A new command gets its rows above: a bad value, a missing piece, its files."""
    walked = {args[0] for args, _status, _says in CASES}
    assert set(cli.COMMANDS) - {"agent"} <= walked  # agent: argparse, tests/test_client_cli.py


def test_the_agents_usage_errors_are_one_line_too():
    result = CliRunner().invoke(cli.main, ["agent", "--bogus"])
    assert result.exit_code == 2
    assert result.stderr == "vmstats agent: error: unrecognized arguments: --bogus (see --help)\n"


@pytest.mark.parametrize("args", [
    ("alerts", "--url", "http://ops:s3cret@127.0.0.1:9"),
    ("alerts", "--url", "http://s3cret@127.0.0.1:9/alerts"),
    ("rules", "mutes", "--url", "https://127.0.0.1:9/?token=s3cret"),
    ("rules", "unmute", "0123456789ab", "--url", "http://127.0.0.1:9/#s3cret"),
    ("rules", "mutes", "--url", "ftp://ops:s3cret@127.0.0.1:9/"),
    ("rules", "mutes", "--url", "http://ops:s3cret@127.0.0.1:x"),
    ("rules", "mutes", "--url", "http://127.0.0.1:9", "--token", "s3cret\r\n"),
])
def test_a_secret_in_the_url_or_token_is_never_echoed(args):
    """Error lines go to terminals, CI logs and tickets: the password, token or query the
    address carried (or a token a header cannot carry) is not in them."""
    result = CliRunner().invoke(cli.main, list(args))
    assert result.exit_code == REFUSED, result.output
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("Error: "), result.stderr
    assert "s3cret" not in result.output, result.output


def test_a_token_from_the_environment_is_no_mistake_without_url(place):
    """VMSTATS_STATUS_TOKEN is set for every command a shell runs: reading the log with it set
    goes on (here to the log's own failure), where ``--token`` on the line is refused."""
    result = CliRunner().invoke(cli.main, ["alerts", "--data-dir", "data"],
                                env={"VMSTATS_STATUS_TOKEN": "a"})
    assert result.exit_code == FAILED, result.output
    assert result.stderr.startswith("Error: no action log folder at data/rules ("), result.stderr
