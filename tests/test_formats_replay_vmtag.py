"""A journal replayed after ``--influx-vm-tag`` was changed files samples under the VMs they
were acknowledged for.

Telegraf lines naming their VM by the default tag (``host``) are acknowledged (HTTP 204) once
journaled.  The server is killed while their minute is open and started again with
``--influx-vm-tag vm``: the replay reads the payload by the tag it was taken under, so the
minute is written for that VM (not refused for a missing ``vm`` tag, nor filed under another
tag's value), says so in one line, and new input is read by the new tag.
"""

import os
import time

from serverproc import serve
from test_formats_replay_bounds import write
from test_server_udp import logged

from vmstats.logstore.layout import vm_dir


def lines(t0: int, vm_tag: str, vm: str) -> bytes:
    """Six 10 s steps of one VM's cpu and mem, named by ``vm_tag``; a ``vm`` tag naming another
    VM rides along on the ``host`` lines, as a tag the new setting would misfile them by."""
    extra = ",vm=other" if vm_tag == "host" else ""
    out = []
    for k in range(6):
        ts = t0 + 10 * k + 1
        out.append("cpu,cpu=cpu-total,%s=%s%s usage_idle=90,usage_iowait=0 %d"
                   % (vm_tag, vm, extra, ts))
        out.append("mem,%s=%s%s used_percent=40,total=2147483648i %d" % (vm_tag, vm, extra, ts))
    return "\n".join(out).encode()


def test_samples_journaled_under_another_influx_vm_tag_are_written_for_their_vm(tmp_path):
    t0 = (int(time.time()) - 3600) // 60 * 60
    args = ("--flush-interval", "60", "--minute-grace", "3600s")  # no checkpoint before the kill
    server = serve(tmp_path, *args).start()
    try:
        assert write(server, lines(t0, "host", "tagged")) == 204  # acknowledged: journaled
        server.kill_outright()
        server = serve(tmp_path, *args, "--influx-vm-tag", "vm").start()
        assert write(server, lines(t0, "vm", "fresh")) == 204  # new input: by the new tag
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    row = logged(tmp_path / "data", "tagged").iloc[0]
    assert (row["cpu"], row["mem"]) == (10.0, 40.0)
    assert len(logged(tmp_path / "data", "fresh")) == 1
    assert not os.path.exists(vm_dir(str(tmp_path / "data"), "other"))
    assert ("edge: 1 journaled payload taken under other settings (--influx-vm-tag host "
            "(now vm)) replayed by those, as they were acknowledged; new input is taken by "
            "this run's") in server.output
