"""Run Debian's real collectd against a test server: config, start, stop.

collectd comes from Debian's collectd-core; ``.ci/debian-packages`` installs
it when missing, and is run from here too, so the tests need no step of
their own on a fresh machine.
"""

import shutil
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLLECTD = "/usr/sbin/collectd"


def collectd_binary() -> str:
    """The collectd daemon, installed through the project's own script when it is missing."""
    found = shutil.which("collectd") or (COLLECTD if Path(COLLECTD).exists() else None)
    if found is None:
        subprocess.run([str(ROOT / ".ci" / "debian-packages")], check=True)
        found = shutil.which("collectd") or COLLECTD
    return found


def config(workdir: Path, host: str, port: int, security: str = "None", user: str = "",
           password: str = "") -> Path:
    """A collectd.conf reading cpu, memory, interface and disk every second, sending to port."""
    auth = ""
    if security != "None":
        auth = '    SecurityLevel "%s"\n    Username "%s"\n    Password "%s"\n' % (
            security, user, password)
    text = """\
Hostname "%(host)s"
FQDNLookup false
Interval 1
BaseDir "%(dir)s"
PIDFile "%(dir)s/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
LoadPlugin cpu
LoadPlugin memory
LoadPlugin interface
LoadPlugin disk
LoadPlugin network
<Plugin network>
  <Server "127.0.0.1" "%(port)d">
%(auth)s  </Server>
</Plugin>
""" % {"host": host, "dir": workdir, "port": port, "auth": auth}
    path = workdir / "collectd.conf"
    path.write_text(text)
    return path


def run_collectd(workdir: Path, conf: Path, seconds: float) -> str:
    """Run collectd in the foreground for ``seconds``, then stop it (it sends what it holds)."""
    log = workdir / "collectd-output.txt"
    with open(log, "wb") as out:
        proc = subprocess.Popen([collectd_binary(), "-f", "-C", str(conf)], stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            time.sleep(seconds)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
    return log.read_text(errors="replace")
