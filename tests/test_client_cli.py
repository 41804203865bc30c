"""The agent's command line: --once, and one readable line for every bad setting."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vmstats import protocol

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "proc" / "c"


def agent(*args, env=None, via_click=False):
    base = [sys.executable, "-m"] + (["vmstats", "agent"] if via_click else ["vmstats.client"])
    # Only the settings a test gives: a VMSTATS_* of the caller's would be warned of.
    outside = {k: v for k, v in os.environ.items() if not k.startswith("VMSTATS_")}
    environment = dict(outside, PYTHONPATH=str(ROOT), VMSTATS_CONFIG="")
    environment.update(env or {})
    return subprocess.run(base + list(args), env=environment, capture_output=True, text=True, timeout=60)


def test_once_prints_one_valid_record_from_the_given_proc_root():
    result = agent("--once", "--proc-root", str(FIXTURE), "--vm-id", "10.1.2.3", "--host", "web 1")
    assert result.returncode == 0, result.stderr
    record = protocol.Decoder().decode_line(result.stdout.strip())
    # One snapshot read twice: nothing moved, memory and size from the fixture.
    assert (record.vm, record.host, record.cpu, record.mem, record.vcpus, record.mem_mb) == \
        ("10.1.2.3", "web-1", 0.0, 25.0, 2, 4096)


def test_settings_come_from_the_environment_and_a_config_file(tmp_path):
    conf = tmp_path / "agent.conf"
    conf.write_text("vm-id = 10.9.9.9\nproc_root = %s\n" % FIXTURE)
    result = agent("--once", env={"VMSTATS_CONFIG": str(conf), "VMSTATS_HOST": "from-env"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("vmstats,vm=10.9.9.9,host=from-env ")


def test_a_variable_that_names_no_setting_is_warned_of_not_silently_ignored():
    """A typo in /etc/vmstats/agent.env (VMSTATS_INTERVL=10) left the default interval in
    force with nothing said: each VMSTATS_* name that is no setting is one warning at start,
    with the setting it is closest to; the agent runs (other vmstats commands read variables
    of their own from a shared environment)."""
    result = agent("--once", "--proc-root", str(FIXTURE), "--vm-id", "10.1.2.3",
                   env={"VMSTATS_INTERVL": "10", "VMSTATS_STATUS_TOKEN": "t", "VMSTATS_HOST": "kvm1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("vmstats,vm=10.1.2.3,host=kvm1 ")
    warnings = [line for line in result.stderr.splitlines() if " WARNING: " in line]
    assert warnings == [
        "vmstats-agent WARNING: VMSTATS_INTERVL is no setting of the agent: ignored (VMSTATS_INTERVAL?)",
        "vmstats-agent WARNING: VMSTATS_STATUS_TOKEN is no setting of the agent: ignored"]


# Status 2: a malformed setting (restarting cannot help); 1: the setting may start working later.
@pytest.mark.parametrize("args, status, message", [
    (["--server", "127.0.0.1:99999"], 2, "--server: bad server address"),
    # A URL is no address: "cannot resolve", exit 1, restarted by the unit every 10 s for ever.
    (["--server", "http://127.0.0.1:8899"], 2,
     "--server: bad server address 'http://127.0.0.1:8899': expected HOST:PORT, [IPv6]:PORT or "
     "an IPv6 address, not a URL"),
    (["--server", "stats.internal:8899/write"], 2, "--server: bad server address"),
    (["--server", "ops@stats.internal"], 2, "not a URL or a path"),
    (["--server", "no-such-host.invalid:8899"], 1, "cannot resolve server"),
    (["--server", "127.0.0.1:8899", "--key-file", "/nonexistent/key"], 1, "cannot read key file"),
    (["--server", "127.0.0.1:8899", "--vm-id", "../etc"], 2, "--vm-id: vm id '../etc' is not an IP"),
    (["--server", "127.0.0.1:8899", "--proc-root", "/nonexistent"], 1, "cannot read /nonexistent/stat"),
    (["--server", "127.0.0.1:8899", "--interval", "0"], 2, "--interval: '0' must be > 0"),
    # Beyond select()'s range: a traceback at the first wait, after a clean start line.
    (["--server", "127.0.0.1:8899", "--interval", "1e12", "--jitter", "0", "--count", "1"], 2,
     "--interval: '1e12' must be at most 86400 (a day)"),
    (["--server", "127.0.0.1:8899", "--jitter", "1e300", "--count", "1"], 2,
     "--jitter: '1e300' must be at most 86400 (a day)"),
    # A vanishing sub-sample spun at 100 % CPU for ever without a record.
    (["--server", "127.0.0.1:8899", "--sub-interval", "1e-320", "--jitter", "0", "--count", "1"], 2,
     "--sub-interval: '1e-320' must be >= 0.01"),
    (["--transport", "tcp"], 2, "no server address"),
])
def test_bad_settings_exit_non_zero_with_one_line(args, status, message):
    result = agent(*args)
    assert result.returncode == status
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content, status, message", [
    (b"k1 s\xff\xfecret\n", 2, "keys: not UTF-8 text"),
    (b"k1 sec\x00ret\n", 2, "keys:1: the secret holds control characters"),
    (b"", 2, "keys: no keys"),
    (None, 1, "keys: Is a directory"),
])
def test_damaged_key_file_is_one_line_naming_it(tmp_path, content, status, message):
    """A damaged key file stops the agent at start; loaded, it would sign with a key nobody shares.
    Its content is a bad setting (2: systemd would otherwise restart the agent every 10 s for
    ever); a key file it cannot read may be provisioned later (1)."""
    keys = tmp_path / "keys"
    keys.mkdir() if content is None else keys.write_bytes(content)
    result = agent("--server", "127.0.0.1:8899", "--key-file", str(keys))
    assert result.returncode == status and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_bad_key_file_and_unwritable_spool(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("k1 one\nk2 two\n")
    result = agent("--server", "127.0.0.1:8899", "--key-file", str(keys))
    assert result.returncode == 2 and "exactly one key" in result.stderr
    keys.write_text("just-one-word\n")
    result = agent("--server", "127.0.0.1:8899", "--key-file", str(keys))
    assert result.returncode == 2 and "expected 'key_id secret'" in result.stderr
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = agent("--server", "127.0.0.1:8899", "--transport", "tcp", "--spool-dir", str(blocker / "spool"),
                   via_click=True)
    assert result.returncode == 1
    assert "spool directory" in result.stderr and "not writable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_help_lists_every_setting_through_both_entry_points():
    for via_click in (False, True):
        result = agent("--help", via_click=via_click)
        assert result.returncode == 0
        for flag in ("--server", "--transport", "--interval", "--sub-interval", "--spool-max",
                     "--key-file", "--vm-id", "--once", "VMSTATS_SERVER"):
            assert flag in result.stdout


def test_systemd_unit_runs_the_bundle_unprivileged_and_restarts_on_failure(tmp_path):
    unit = (ROOT / "packaging" / "vmstats-agent.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines()
                    if "=" in line and not line.startswith("#"))
    assert settings["ExecStart"].endswith("vmstats-agent.pyz")
    assert settings["DynamicUser"] == "yes" and "User" not in settings
    assert settings["Restart"] == "on-failure" and settings["RestartPreventExitStatus"] == "2"
    assert settings["StateDirectory"] == "vmstats-agent"
    # Started after the clock is set, where the image waits for it (docs/OPERATIONS.md, Time).
    assert "time-sync.target" in settings["After"].split()
    analyze = shutil.which("systemd-analyze")
    if analyze:
        copy = tmp_path / "vmstats-agent.service"
        copy.write_text(unit)
        result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
        assert "vmstats-agent.service" not in result.stderr, result.stderr


def test_bundle_to_an_unwritable_place_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = subprocess.run([sys.executable, "-m", "vmstats", "agent-bundle", "-o", str(blocker / "a.pyz")],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert not list(tmp_path.glob("**/*.tmp"))


def test_bundle_to_an_empty_name_is_one_usage_line(tmp_path):
    """-o "" read as a path to open ("cannot write :"); it is a usage error that says what is wrong."""
    result = subprocess.run([sys.executable, "-m", "vmstats", "agent-bundle", "-o", ""], cwd=str(tmp_path),
                            env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "Error: Invalid value for '-o' / '--output': an empty file name"], result.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_gives_every_default_the_operations_guide_gives():
    """--help says each setting's default, the same as docs/OPERATIONS.md's table of settings."""
    documented = {}
    for row in (ROOT / "docs" / "OPERATIONS.md").read_text().splitlines():
        cells = [c.strip() for c in row.split(" | ")]
        if row.startswith("| `--") and len(cells) >= 3 and cells[2].startswith("`"):
            documented[cells[0].strip("| `").split()[0]] = cells[2].split("`")[1]
    assert {"--transport", "--interval", "--spool-max", "--proc-root"} <= set(documented)
    shown = " ".join(agent("--help").stdout.split())  # argparse wraps the help text
    for flag, value in documented.items():
        if flag in ("--host-file", "--spool-dir"):  # defaults that are paths the help words itself
            assert value in shown, flag
            continue
        own = r"(?:(?! --).)*?"  # within this flag's help, not the next flag's
        assert re.search(r"%s %s\(default: %s\)" % (re.escape(flag), own, re.escape(value)), shown), flag
