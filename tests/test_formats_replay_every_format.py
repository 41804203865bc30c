"""What each format's port and the HTTP write API acknowledged is written as acknowledged,
whatever the decoding settings of the restart.

Line protocol over UDP and over HTTP (``precision=s``), Graphite over TCP and collectd over UDP
are taken while their minutes are open; lines of the line protocol and Graphite past 1,024
bytes among them.  The server is killed and started again with every setting a decoder of a
format journaled raw reads changed (``Decoder.options``: the test says which is missing) and
collectd's port signed-only: the replay files every sample under the VM and field it was
acknowledged for, none refused by the new bounds, and new input is read by the new settings.
"""

import os
import signal
import time

from serverproc import serve
from test_formats_rejects import collectd_list, outcomes
from test_formats_replay_bounds import write
from test_server_udp import logged

from vmstats.logstore.layout import vm_dir
from vmstats.server.config import ServerConfig
from vmstats.server.formats import collectd as cd
from vmstats.server.formats.edge import decoders

#: No checkpoint before the kill, and the minutes stay open until the stop completes them.
KEEP_OPEN = ("--flush-interval", "60", "--minute-grace", "3600s")
PORTS = ("--influx-port", "0", "--graphite-port", "0", "--collectd-port", "0")
BEFORE = ("--graphite-template", "servers.{vm}.cpu.percent cpu",
          "--graphite-template", "servers.{vm}.mem.percent mem")
AFTER = ("--influx-vm-tag", "vm", "--max-line", "1024",
         "--graphite-template", "servers.*.{field}.{vm}",
         "--collectd-security", "sign", "--collectd-auth-file")
#: A tag longer than the restart's --max-line (the line protocol's ignores it, Graphite's 1.1
#: tags are dropped before matching).
PAD = b"x" * 1500


def influx(vm: str, times: list[int], scale: int, idle: int, used: int) -> bytes:
    """Telegraf's cpu and mem lines of ``vm`` by its ``host`` tag, the first mem line past
    1,024 bytes; a ``vm`` tag naming another VM, which the new tag would file them under."""
    return b"\n".join(
        b"cpu,cpu=cpu-total,host=%s,vm=other usage_idle=%d,usage_iowait=0 %d\n"
        b"mem,host=%s,vm=other%s used_percent=%d %d"
        % (vm.encode(), idle, ts * scale, vm.encode(), b",pad=" + PAD if not k else b"", used,
           ts * scale) for k, ts in enumerate(times))


def test_every_formats_acknowledged_samples_are_written_as_acknowledged_after_a_restart(
        tmp_path):
    options = {option for decoder in decoders(ServerConfig()).values()
               if not decoder.journal_samples for option in decoder.options.values()}
    assert options <= set(AFTER), options - set(AFTER)  # every decoding setting changed
    (tmp_path / "collectd.auth").write_text("fleet: s3cret\n")
    t0 = (int(time.time()) - 3600) // 60 * 60
    times = [t0 + 10 * k + 1 for k in range(6)]
    server = serve(tmp_path, *KEEP_OPEN, *PORTS, *BEFORE).start()
    try:
        status = server.status
        server.send_udp_to(status["influx_port"], influx("udp", times, 10 ** 9, 80, 30))
        assert write(server, influx("http", times, 1, 70, 20)) == 204  # acknowledged: journaled
        with server.tcp_to(status["graphite_port"]) as sock:
            sock.sendall(b"".join(b"servers.graphed.cpu.percent 10 %d\n"
                                  b"servers.graphed.mem.percent%s 40 %d\n"
                                  % (ts, b";pad=" + PAD if not k else b"", ts)
                                  for k, ts in enumerate(times)))
        server.send_udp_to(status["collectd_port"], *(
            collectd_list("collected", ts, "cpu", "", "percent", "active", [(cd.GAUGE, 25.0)])
            + collectd_list("collected", ts, "memory", "", "percent", "used", [(cd.GAUGE, 55.0)])
            for ts in times))
        server.wait_metrics(lambda m: all(outcomes(m, fmt).get("used") == want for fmt, want in
                                          (("influx", 24), ("graphite", 12), ("collectd", 12))))
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        server.kill()
        server = serve(tmp_path, *KEEP_OPEN, *PORTS, *AFTER,
                       str(tmp_path / "collectd.auth")).start()
        # New input is read by the new settings: named by the vm tag, a long line refused.
        assert write(server, b"cpu,cpu=cpu-total,host=old,vm=fresh usage_idle=95 %d\n"
                     b"mem,vm=fresh,pad=%s used_percent=45 %d\n"
                     b"mem,host=old,vm=fresh used_percent=45 %d" % (t0 + 1, PAD, t0 + 1, t0 + 1)
                     ) == 400
        assert outcomes(server.metrics(), "influx") == {"used": 2, "too_long": 1}
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    assert "could not be replayed" not in server.output
    assert ("edge: 3 journaled payloads taken under other settings (--max-line 65536 (now 1024), "
            "--influx-vm-tag host (now vm), 1 other set of --graphite-template) replayed by those, "
            "as they were acknowledged; kept past this run's: 3 lines longer than --max-line "
            "(1024); new input is taken by this run's") in server.output, server.output
    data = tmp_path / "data"
    for vm, cpu, mem in (("udp", 20.0, 30.0), ("http", 30.0, 20.0), ("graphed", 10.0, 40.0),
                         ("collected", 25.0, 55.0)):
        rows = logged(data, vm)
        assert len(rows) == 1, vm
        assert (rows.iloc[0]["cpu"], rows.iloc[0]["mem"]) == (cpu, mem), vm
    row = logged(data, "fresh").iloc[0]
    assert (row["cpu"], row["mem"]) == (5.0, 45.0)
    assert not os.path.exists(vm_dir(str(data), "other"))
    assert not os.path.exists(vm_dir(str(data), "percent"))
