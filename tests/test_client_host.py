"""The agent's `host` tag names the physical host it is told, never the VM's own name.

The real agent runs as a process against the real server on loopback; the
assertions read the per-VM logs the server wrote.
"""

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from serverproc import LOOPBACK, ServerProcess

from vmstats import logstore
from vmstats.client import agent, config, hostfile

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT), VMSTATS_CONFIG="")
FIXTURE = ROOT / "tests" / "data" / "proc" / "c"
FAST = ["--interval", "1", "--sub-interval", "0.25", "--jitter", "0", "--proc-root", str(FIXTURE)]


def logged_hosts(data_dir, vm):
    """The host cell of every row the server wrote for ``vm``, in order ('' for none)."""
    folder = Path(data_dir) / logstore.VMS_DIR / vm
    position = logstore.COLUMNS.index("host")
    hosts = []
    for path in sorted(folder.glob("*" + logstore.SUFFIX)) if folder.exists() else []:
        for line in path.read_text().splitlines()[1:]:
            hosts.append(line.split(",")[position])
    return hosts


def wait_rows(data_dir, vm, count, timeout=20.0):
    deadline = time.monotonic() + timeout
    while len(logged_hosts(data_dir, vm)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return logged_hosts(data_dir, vm)


def test_host_file_is_followed_when_it_changes_and_the_vm_name_is_never_sent(tmp_path):
    host_file = tmp_path / "host"
    host_file.write_text("# written by cloud-init\nkvm-a.rack1\n")
    missing = tmp_path / "no-such-file"
    with ServerProcess(tmp_path / "server", "--flush-interval", "0.3") as server:
        target = "%s:%d" % (LOOPBACK, server.udp_port)
        moving = subprocess.Popen(
            [sys.executable, "-m", "vmstats.client", *FAST, "--server", target, "--count", "6",
             "--vm-id", "moving-vm", "--host-file", str(host_file)],
            env=ENV, stderr=subprocess.PIPE, text=True)
        # Nothing says where this one runs: no tag, whatever the machine calls itself.
        untold = subprocess.run(
            [sys.executable, "-m", "vmstats.client", *FAST, "--server", target, "--count", "2",
             "--vm-id", "untold-vm", "--host-file", str(missing)],
            env=ENV, capture_output=True, text=True, timeout=60)
        assert untold.returncode == 0, untold.stderr
        assert "no host tag (%s absent)" % missing in untold.stderr
        # A file that is there but empty is said to be, and not called absent the next line.
        empty = tmp_path / "empty-host"
        empty.write_text("")
        blank = subprocess.run(
            [sys.executable, "-m", "vmstats.client", *FAST, "--server", target, "--count", "1",
             "--vm-id", "blank-vm", "--host-file", str(empty)],
            env=ENV, capture_output=True, text=True, timeout=60)
        assert blank.returncode == 0 and "%s is empty" % empty in blank.stderr, blank.stderr
        assert "no host tag (%s unusable)" % empty in blank.stderr, blank.stderr
        assert len(wait_rows(server.data_dir, "moving-vm", 2)) >= 2
        # A live migration hook rewrites the file (a new inode, as an atomic rename makes).
        fresh = tmp_path / "host.new"
        fresh.write_text("kvm-b.rack2\n")
        os.replace(str(fresh), str(host_file))
        _out, err = moving.communicate(timeout=60)
        assert moving.returncode == 0, err
        assert len(wait_rows(server.data_dir, "moving-vm", 6)) == 6
        assert len(wait_rows(server.data_dir, "untold-vm", 2)) == 2
    hosts = logged_hosts(server.data_dir, "moving-vm")
    assert hosts[:2] == ["kvm-a.rack1", "kvm-a.rack1"]
    assert hosts[-1] == "kvm-b.rack2"
    assert hosts == sorted(hosts)                 # one move, never back
    assert "host kvm-a.rack1 (from %s)" % host_file in err
    assert logged_hosts(server.data_dir, "untold-vm") == ["", ""]


def settings(tmp_path, *args, environ=None, conf=None):
    argv = ["--once", "--vm-id", "v1", "--host-file", str(tmp_path / "host")]
    if conf is not None:
        path = tmp_path / "agent.conf"
        path.write_text(conf)
        argv += ["--config", str(path)]
    return config.load(argv + list(args), environ=environ or {})


def test_precedence_is_flag_environment_config_then_file_then_none(tmp_path):
    (tmp_path / "host").write_text("from-file\n")
    env = {"VMSTATS_HOST": "from-env"}
    conf = "host = from-config\n"
    cases = [
        (("--host", "from-flag"), env, conf, "from-flag"),
        ((), env, conf, "from-env"),
        ((), None, conf, "from-config"),
        ((), None, None, "from-file"),
    ]
    for args, environ, text, expected in cases:
        _vm, source = agent.vm_identity(settings(tmp_path, *args, environ=environ, conf=text))
        assert source.current() == expected
    (tmp_path / "host").unlink()
    _vm, source = agent.vm_identity(settings(tmp_path))
    assert source.current() is None


class Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_host_file_that_names_nothing_gives_no_tag_and_one_warning(tmp_path):
    path = tmp_path / "host"
    source = hostfile.HostSource(path=str(path))
    kept = Kept()
    hostfile.LOG.addHandler(kept)
    try:
        for text, expected in (("\n# nothing yet\n", None), ("kvm 7\n", "kvm-7"), ("...\n", None),
                               ("kvm\x0001\n", None), ("kvm8\n", "kvm8")):
            path.write_text(text)
            assert source.current() == expected
            assert source.current() == expected      # unchanged: not read nor warned again
    finally:
        hostfile.LOG.removeHandler(kept)
    warnings = kept.messages
    assert len(warnings) == 3
    assert "is empty" in warnings[0] and "names no usable host" in warnings[1]
    assert "is damaged (control characters)" in warnings[2]
