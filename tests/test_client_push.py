"""The agent against the real aggregator on loopback: UDP, TCP, the zipapp, reliability, auth.

Every test runs the agent as a separate process with a 1 s interval and a
record count, and asserts on the per-VM logs the server wrote.
"""

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from serverproc import LOOPBACK, WAIT, ServerProcess

from vmstats import logstore, protocol
from vmstats.client import laststamp
from vmstats.client import spool as spool_module

#: What a TCP agent's spool folder holds once every record is acknowledged: its lock, the last
#: stamp given, and the machine it was written on where the machine has an id.
STATE = sorted(["lock", laststamp.NAME] + ([spool_module.MARK] if spool_module.machine_id() else []))

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
FAST = ["--interval", "1", "--sub-interval", "0.25", "--jitter", "0", "--log-level", "debug"]
KEYS = "# rotation: both keys valid\nk1 secret-one\nk2 secret-two\n"


def agent_command(*args, python=sys.executable):
    return [python, "-m", "vmstats.client", *FAST, *args]


def run_agent(*args, timeout=60):
    result = subprocess.run(agent_command(*args), env=ENV, capture_output=True, text=True,
                            timeout=timeout)
    return result


def free_port():
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def raw_rows(data_dir, vm):
    """Every row written for ``vm``, as dicts, in file order (duplicates kept)."""
    folder = Path(data_dir) / logstore.VMS_DIR / vm
    rows = []
    for path in sorted(folder.glob("*" + logstore.SUFFIX)) if folder.exists() else []:
        for line in path.read_text().splitlines():
            if line + "\n" != logstore.HEADER.decode():
                cells = line.split(",")
                if len(cells) == len(logstore.COLUMNS) - 1:  # a row without extra tags
                    cells.append("")
                rows.append(dict(zip(logstore.COLUMNS, cells, strict=True)))
    return rows


def wait_rows(data_dir, vm, count, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        rows = raw_rows(data_dir, vm)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def assert_each_once(rows, count):
    """``count`` consecutive records, each written exactly once."""
    assert [int(r["seq"]) for r in rows] == list(range(count)), rows
    stamps = [int(r["ts"]) for r in rows]
    assert len(set(stamps)) == count and stamps == sorted(stamps)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("server"), "--flush-interval", "0.5") as running:
        yield running


def test_udp_records_land_in_the_log_keyed_by_the_local_address(server, tmp_path):
    result = run_agent("--server", "%s:%d" % (LOOPBACK, server.udp_port), "--count", "3",
                       "--host-file", str(tmp_path / "no-host-file"))
    assert result.returncode == 0, result.stderr
    rows = wait_rows(server.data_dir, "127.0.0.1", 3)
    assert_each_once(rows, 3)
    for row in rows:
        assert 0 <= float(row["cpu"]) <= float(row["cpu_max"]) <= 100
        assert 0 < float(row["mem"]) < 100
        assert int(row["vcpus"]) == os.cpu_count() and int(row["mem_mb"]) > 0
        assert row["host"] == ""                # nobody said which physical host: no tag
    stamps = [int(r["ts"]) for r in rows]
    assert 2 <= stamps[2] - stamps[0] <= 3     # one record per 1 s interval (stamps rounded)
    assert abs(stamps[-1] - time.time()) < 30


def test_tcp_records_are_acknowledged_and_leave_the_spool(server, tmp_path):
    spool_dir = tmp_path / "spool"
    result = run_agent("--server", "%s:%d" % (LOOPBACK, server.tcp_port), "--transport", "tcp",
                       "--count", "3", "--vm-id", "tcp-vm", "--spool-dir", str(spool_dir))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(str(spool_dir))) == STATE
    assert "failed" not in result.stderr
    assert_each_once(wait_rows(server.data_dir, "tcp-vm", 3), 3)


def test_a_fifo_with_a_records_name_in_the_spool_is_discarded_not_waited_on(server, tmp_path):
    # Before: the agent opened it to send it and waited for ever (no record delivered).
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    os.mkfifo(str(spool_dir / "0000000000000000.rec"))
    (spool_dir / "0000000000000001.rec").mkdir()
    result = run_agent("--server", "%s:%d" % (LOOPBACK, server.tcp_port), "--transport", "tcp",
                       "--count", "2", "--vm-id", "fifo-vm", "--spool-dir", str(spool_dir),
                       timeout=30)
    assert result.returncode == 0, result.stderr
    assert "discarded 2 unreadable record files (gone, empty, not a regular file" in result.stderr
    assert_each_once(wait_rows(server.data_dir, "fifo-vm", 2), 2)
    assert sorted(os.listdir(str(spool_dir))) == sorted(STATE + ["0000000000000001.rec"])  # a folder stays


@pytest.mark.parametrize("what", ["a file", "a link to nothing", "a folder at its lock"])
def test_something_else_at_the_spool_is_named_in_one_line(tmp_path, what):
    # Before: 'spool directory X is not writable: File exists' for a file or a dangling link,
    # and the spool itself was named for a folder at its lock file.
    spool_dir = tmp_path / "spool"
    if what == "a file":
        spool_dir.write_text("x")
        expected = "spool directory %s is not a directory" % spool_dir
    elif what == "a link to nothing":
        os.symlink(str(tmp_path / "unmounted"), str(spool_dir))
        expected = "spool directory %s is a symbolic link to %s, which does not exist" % (
            spool_dir, tmp_path / "unmounted")
    else:
        (spool_dir / "lock").mkdir(parents=True)
        expected = "cannot open the spool's lock file %s: Is a directory" % (spool_dir / "lock")
    result = run_agent("--server", "%s:%d" % (LOOPBACK, free_port()), "--transport", "tcp",
                       "--count", "1", "--spool-dir", str(spool_dir), timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["vmstats-agent ERROR: " + expected]


def test_the_click_command_runs_the_same_agent(server):
    result = subprocess.run([sys.executable, "-m", "vmstats", "agent", *FAST, "--count", "1",
                             "--server", "%s:%d" % (LOOPBACK, server.udp_port), "--vm-id", "click-vm"],
                            env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert_each_once(wait_rows(server.data_dir, "click-vm", 1), 1)


def plain_python():
    """A python3 outside the project's virtualenv."""
    if os.path.exists("/usr/bin/python3"):
        return "/usr/bin/python3"
    venv = str(ROOT / ".venv")
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(folder, "python3")
        if os.access(candidate, os.X_OK) and not candidate.startswith(venv):
            return candidate
    pytest.skip("no python3 outside the virtualenv")


def test_zipapp_runs_with_a_plain_python(server, tmp_path):
    bundle = tmp_path / "vmstats-agent.pyz"
    built = subprocess.run([sys.executable, "-m", "vmstats", "agent-bundle", "-o", str(bundle)],
                           env=ENV, capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    with zipfile.ZipFile(str(bundle)) as archive:
        names = sorted(archive.namelist())
    assert names[:3] == ["__main__.py", "vmstats/__init__.py", "vmstats/client/__init__.py"]
    assert "vmstats/protocol.py" in names and "vmstats/client/agent.py" in names
    assert all(n in ("__main__.py", "vmstats/__init__.py", "vmstats/protocol.py", "vmstats/words.py")
               or n.startswith("vmstats/client/") for n in names)
    assert "vmstats/client/command.py" not in names            # needs click
    # Run from an empty folder, isolated (-I), with no PYTHONPATH: only the bundle.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}
    workdir = tmp_path / "vm"
    workdir.mkdir()
    python = plain_python()
    once = subprocess.run([python, "-I", str(bundle), "--once", "--vm-id", "zip-vm"], cwd=str(workdir),
                          env=env, capture_output=True, text=True, timeout=60)
    assert once.returncode == 0, once.stderr
    record = protocol.Decoder().decode_line(once.stdout.strip())
    assert record.vm == "zip-vm" and record.vcpus == os.cpu_count()
    pushed = subprocess.run([python, "-I", str(bundle), *FAST, "--count", "2", "--vm-id", "zip-vm",
                             "--server", "%s:%d" % (LOOPBACK, server.udp_port)],
                            cwd=str(workdir), env=env, capture_output=True, text=True, timeout=60)
    assert pushed.returncode == 0, pushed.stderr
    assert_each_once(wait_rows(server.data_dir, "zip-vm", 2), 2)
    # The same sources give the same bytes.
    again = tmp_path / "again.pyz"
    subprocess.run([sys.executable, "-m", "vmstats", "agent-bundle", "-o", str(again)], env=ENV,
                   check=True, capture_output=True, timeout=60)
    assert again.read_bytes() == bundle.read_bytes()


def oldest_python():
    """The oldest Python 3.6/3.7 that runs here (on PATH or installed by pyenv), else None."""
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for version in ("3.6", "3.7"):
        candidates = [shutil.which("python" + version)]
        candidates += sorted(glob.glob(os.path.join(pyenv, "versions", version + ".*", "bin",
                                                    "python" + version)))
        for candidate in filter(None, candidates):
            probe = subprocess.run([candidate, "-I", "-c", "import sys; print(sys.version_info[1])"],
                                   capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
            if probe.returncode == 0 and probe.stdout.strip() == version[2:]:
                return candidate
    return None


def test_zipapp_runs_on_the_oldest_supported_python(server, tmp_path):
    python = oldest_python()
    if python is None:
        pytest.skip("no Python 3.6 or 3.7 interpreter here (vermin still checks the syntax)")
    bundle = tmp_path / "vmstats-agent.pyz"
    subprocess.run([sys.executable, "-m", "vmstats", "agent-bundle", "-o", str(bundle)], env=ENV,
                   check=True, capture_output=True, timeout=60)
    result = subprocess.run([python, "-I", str(bundle), *FAST, "--count", "2", "--vm-id", "old-python",
                             "--transport", "tcp", "--spool-dir", str(tmp_path / "spool"),
                             "--key-file", key_file(tmp_path, "key", "k1 secret-one\n"),
                             "--server", "%s:%d" % (LOOPBACK, server.tcp_port)],
                            env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(str(tmp_path / "spool"))) == STATE
    assert_each_once(wait_rows(server.data_dir, "old-python", 2), 2)


def test_its_files_are_read_as_utf8_whatever_the_locale_and_python(tmp_path):
    """Python 3.6 with no LANG (a unit on a minimal image) read agent.conf and the host file
    as ASCII: a comment naming "Müller" stopped the agent at start, and the host file was
    "not text", while 3.7+ read both; and an editor's byte order mark made the first line
    no setting on every Python.  Both are read as UTF-8, the mark skipped."""
    python = oldest_python() or sys.executable
    bundle = tmp_path / "vmstats-agent.pyz"
    subprocess.run([sys.executable, "-m", "vmstats", "agent-bundle", "-o", str(bundle)], env=ENV,
                   check=True, capture_output=True, timeout=60)
    conf, host = tmp_path / "agent.conf", tmp_path / "host"
    conf.write_text("\ufeff# owner: Müller\nvm-id = 10.7.7.7\n", encoding="utf-8")
    host.write_text("# hôte de calcul\nkvm7\n", encoding="utf-8")
    result = subprocess.run([python, "-I", str(bundle), "--once", "--config", str(conf),
                             "--host-file", str(host), "--proc-root", str(ROOT / "tests/data/proc/c")],
                            env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("vmstats,vm=10.7.7.7,host=kvm7 "), result.stdout


def spooled(spool_dir) -> list[str]:
    """The records' files in the agent's spool (none before the agent makes it)."""
    if not os.path.isdir(str(spool_dir)):
        return []
    return [n for n in os.listdir(str(spool_dir)) if n.endswith(spool_module.SUFFIX)]


def delivered_then_stopped(agent: subprocess.Popen, spool_dir, said: str = "") -> tuple[str, int]:
    """Wait for the spool to be delivered, then stop the agent (SIGTERM); its log and the count
    of records it says it made, each acknowledged (asserted)."""
    deadline = time.monotonic() + WAIT
    while spooled(spool_dir):
        assert time.monotonic() < deadline, "the spool was not delivered"
        time.sleep(0.1)
    agent.send_signal(signal.SIGTERM)
    _out, err = agent.communicate(timeout=WAIT)
    err = said + err
    assert agent.returncode == 0, err
    made = re.search(r"INFO: (\d+) records made, \1 acknowledged, 0 left in the spool", err)
    assert made, err
    return err, int(made.group(1))


def test_server_down_at_start_then_every_spooled_record_arrives_once(tmp_path):
    """Records made while no server listens are spooled, then each lands once when one starts.

    It waits on the spool, not the clock: a sleep of 3.2 s needed the agent to start within
    1.2 s, and ``--count 8`` the server to be up within 8 s, neither sure on a loaded host."""
    port = free_port()
    spool_dir = tmp_path / "spool"
    # --count: its last line counts what was made; a bound the test stops it well before.
    agent = subprocess.Popen(agent_command("--server", "%s:%d" % (LOOPBACK, port), "--transport", "tcp",
                                           "--count", "600", "--vm-id", "late-vm", "--backoff-max", "0.5",
                                           "--timeout", "5", "--spool-dir", str(spool_dir)),
                             env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + WAIT
        while len(spooled(spool_dir)) < 2:   # records spooled with nobody listening
            assert time.monotonic() < deadline and agent.poll() is None, "nothing spooled"
            time.sleep(0.1)
        with ServerProcess(tmp_path / "server", "--tcp-port", str(port),
                           "--flush-interval", "0.5") as server:
            err, made = delivered_then_stopped(agent, spool_dir)
        assert server.returncode == 0, server.output
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert "failed" in err                    # it did notice the server was away
    assert sorted(os.listdir(str(spool_dir))) == STATE
    assert made >= 2
    assert_each_once(raw_rows(server.data_dir, "late-vm"), made)


def test_count_with_the_server_down_throughout_exits_3_and_keeps_the_records(tmp_path):
    spool_dir = tmp_path / "spool"
    result = run_agent("--server", "%s:%d" % (LOOPBACK, free_port()), "--transport", "tcp",
                       "--count", "2", "--vm-id", "down-vm", "--backoff-max", "0.5", "--timeout", "1",
                       "--spool-dir", str(spool_dir))
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "vmstats-agent WARNING: 2 records made, 0 acknowledged, 2 left in the spool at %s" % spool_dir)
    assert result.stderr.count("left in the spool") == 1  # said once, in the last line
    assert len([n for n in os.listdir(str(spool_dir)) if n.endswith(".rec")]) == 2


def test_server_restart_mid_stream_loses_and_duplicates_nothing(tmp_path):
    """Records made before a restart of the server and while it is down each land once.

    Each step waits on what it needs, not on the clock: a record spooled while the server is
    down (the agent says the delivery failed), the spool delivered to the restarted server
    (the spool empty), then the stop.  With ``--count 10`` and a sleep, a server that took
    seven seconds to stop and start again on a loaded host (load 12 on two cores) was not back
    for the agent's last record, which stayed spooled, and the agent exited 3 as it should.
    """
    port = free_port()
    data = tmp_path / "data"
    spool_dir = tmp_path / "spool"
    first = ServerProcess(tmp_path / "first", "--tcp-port", str(port), "--flush-interval", "0.5",
                          data_dir=data).start()
    # --count: its last line counts what was made; a bound the test stops it well before.
    agent = subprocess.Popen(agent_command("--server", "%s:%d" % (LOOPBACK, port), "--transport", "tcp",
                                           "--count", "600", "--vm-id", "restart-vm", "--backoff-max",
                                           "0.5", "--timeout", "5", "--spool-dir", str(spool_dir)),
                             env=ENV, stderr=subprocess.PIPE, text=True)
    said = ""
    try:
        assert len(wait_rows(data, "restart-vm", 3, timeout=WAIT)) >= 3
        assert first.stop() == 0, first.output
        while "failed" not in said:           # it noticed: a record spooled while it is down
            line = agent.stderr.readline()
            assert line, said
            said += line
        with ServerProcess(tmp_path / "second", "--tcp-port", str(port), "--flush-interval", "0.5",
                           data_dir=data) as second:
            err, made = delivered_then_stopped(agent, spool_dir, said)
        assert second.returncode == 0, second.output
    finally:
        first.kill()
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert sorted(os.listdir(str(spool_dir))) == STATE
    assert made >= 4                          # three before the stop, one while it was down
    assert_each_once(raw_rows(data, "restart-vm"), made)


def test_agent_stops_promptly_on_sigterm(server, tmp_path):
    """Signalled once its loop has begun (its first log line), the agent leaves its 600 s wait at
    once; the bound is a tenth of the interval, as a loaded host can take seconds to run it."""
    agent = subprocess.Popen([sys.executable, "-m", "vmstats.client", "--interval", "600", "--jitter", "0",
                              "--server", "%s:%d" % (LOOPBACK, server.udp_port)],
                             env=ENV, stderr=subprocess.PIPE, text=True)
    began = ""
    while "one record every 600s" not in began:
        line = agent.stderr.readline()
        assert line, began
        began += line
    started = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    _out, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err
    assert time.monotonic() - started < 60
    assert "stopping on signal" in err


# -- signed records ---------------------------------------------------------------------------

@pytest.fixture()
def auth_server(tmp_path):
    keys = tmp_path / "server-keys"
    keys.write_text(KEYS)
    with ServerProcess(tmp_path / "auth", "--flush-interval", "0.5", "--auth-keys", str(keys)) as running:
        yield running


def key_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def rejected(server, reason):
    return server.metrics().get('vmstats_rejected_total{reason="%s"}' % reason, 0)


def test_signed_udp_accepted_and_forgeries_rejected_by_cause(auth_server, tmp_path):
    target = "%s:%d" % (LOOPBACK, auth_server.udp_port)
    good = subprocess.Popen(agent_command("--server", target, "--count", "3", "--vm-id", "signed-vm",
                                          "--key-file", key_file(tmp_path, "k2", "k2 secret-two\n")),
                            env=ENV, stderr=subprocess.PIPE, text=True)
    now = time.time()

    def line(vm):
        return ("vmstats,vm=%s cpu=5,mem=10 %d" % (vm, now)).encode()

    valid = protocol.sign_payload("k1", "secret-one", line("replayed-vm"))
    tampered = protocol.sign_payload("k1", "secret-one", line("tampered-vm")).replace(b"cpu=5", b"cpu=9")
    auth_server.send_udp(
        line("unsigned-vm"),                                                    # sig_missing
        protocol.sign_payload("k1", "wrong-secret", line("wrongkey-vm")),       # sig_bad
        tampered,                                                               # sig_bad
        protocol.sign_payload("k9", "secret-one", line("unknown-vm")),          # sig_unknown_key
        protocol.sign_payload("k1", "secret-one", line("stale-vm"), now=now - 3600),  # sig_stale
        valid, valid)                                                           # sig_replay
    unsigned_agent = run_agent("--server", target, "--count", "1", "--vm-id", "nokey-vm")
    assert unsigned_agent.returncode == 0, unsigned_agent.stderr
    _out, err = good.communicate(timeout=30)
    assert good.returncode == 0, err
    assert_each_once(wait_rows(auth_server.data_dir, "signed-vm", 3), 3)
    assert len(wait_rows(auth_server.data_dir, "replayed-vm", 1)) == 1
    auth_server.wait_for(lambda s: rejected(s, "sig_replay") >= 1)
    assert rejected(auth_server, "sig_missing") == 2
    assert rejected(auth_server, "sig_bad") == 2
    assert rejected(auth_server, "sig_unknown_key") == 1
    assert rejected(auth_server, "sig_stale") == 1
    assert rejected(auth_server, "sig_replay") == 1
    # Every record taken is written: one of the refused, had it been taken, would be in the logs.
    auth_server.wait_metrics(lambda m: m["vmstats_buffered_records"] == 0
                             and m["vmstats_in_flight_records"] == 0)
    for vm in ("unsigned-vm", "wrongkey-vm", "tampered-vm", "unknown-vm", "stale-vm", "nokey-vm"):
        assert raw_rows(auth_server.data_dir, vm) == []


def test_a_key_file_an_editor_wrote_with_a_byte_order_mark_and_crlf_signs(auth_server, tmp_path):
    """The mark made the agent refuse its key at start ("expected 'key_id secret'", exit 2)."""
    spool_dir = tmp_path / "spool"
    key = tmp_path / "agent.key"
    key.write_bytes(b"\xef\xbb\xbfk2 secret-two\r\n")
    result = run_agent("--server", "%s:%d" % (LOOPBACK, auth_server.tcp_port), "--transport", "tcp",
                       "--count", "1", "--vm-id", "bom-key", "--key-file", str(key),
                       "--spool-dir", str(spool_dir))
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(str(spool_dir))) == STATE
    assert len(wait_rows(auth_server.data_dir, "bom-key", 1)) == 1


def test_tcp_batch_with_a_wrong_key_stays_spooled_until_the_key_is_fixed(auth_server, tmp_path):
    """Refused batches stay spooled for the next start; --count says so and exits 3, as a smoke
    check must not pass when the server took nothing."""
    target = "%s:%d" % (LOOPBACK, auth_server.tcp_port)
    spool_dir = tmp_path / "spool"
    common = ["--server", target, "--transport", "tcp", "--vm-id", "tcp-signed", "--backoff-max", "0.5",
              "--timeout", "5", "--spool-dir", str(spool_dir)]
    wrong = run_agent(*common, "--count", "2", "--key-file", key_file(tmp_path, "bad", "k1 not-it\n"))
    assert wrong.returncode == 3, wrong.stderr
    assert "refused the batch: auth" in wrong.stderr
    assert wrong.stderr.splitlines()[-1] == (
        "vmstats-agent WARNING: 2 records made, 0 acknowledged, 2 left in the spool at %s" % spool_dir)
    assert len([n for n in os.listdir(str(spool_dir)) if n.endswith(".rec")]) == 2
    assert rejected(auth_server, "sig_bad") >= 1
    right = run_agent(*common, "--count", "1", "--key-file", key_file(tmp_path, "good", "k1 secret-one\n"))
    assert right.returncode == 0, right.stderr
    assert right.stderr.splitlines()[-1] == (  # the backlog went with this run's record
        "vmstats-agent INFO: 1 record made, 1 acknowledged, and 2 records spooled before this run "
        "acknowledged now, 0 left in the spool at %s" % spool_dir)
    assert sorted(os.listdir(str(spool_dir))) == STATE
    rows = wait_rows(auth_server.data_dir, "tcp-signed", 3)
    # Two records from the first run (seq 0, 1), one from the second (seq restarts).
    assert sorted(int(r["seq"]) for r in rows) == [0, 0, 1]
    assert len(set(r["ts"] for r in rows)) == 3

