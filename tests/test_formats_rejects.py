"""What the other formats' ports refuse, through a real server: each refused line counted once,
impossible values refused (not clamped into plausible ones), and nothing else of the payload lost.

Line protocol over UDP and TCP, Graphite over UDP and TCP, collectd over UDP.  The counters are
``vmstats_edge_lines_total{format, outcome}``: every line (collectd: every value list) lands in
exactly one outcome, so ``used`` plus the rejects equals what was sent.
"""

import time

from serverproc import serve
from test_server_udp import logged

from vmstats.server.formats import collectd as cd

NS = 1_000_000_000


def edge(metrics: dict, fmt: str, outcome: str) -> float:
    return metrics.get('vmstats_edge_lines_total{format="%s",outcome="%s"}' % (fmt, outcome), 0)


def outcomes(metrics: dict, fmt: str) -> dict[str, float]:
    prefix = 'vmstats_edge_lines_total{format="%s",outcome="' % fmt
    return {key[len(prefix):-2]: value for key, value in metrics.items()
            if key.startswith(prefix) and value}


def telegraf_minute(host: str, t0: int) -> list[bytes]:
    """19 good lines of one VM for the minute ending at t0 + 60 (nanoseconds, as the port takes):
    cpu 13.5 (mean of 11..16) with cpu_max 16, mem 25, mem_mb 2048, net_rx 100 B/s."""
    vm = host.encode()
    out = []
    for k in range(7):
        ts = (t0 + 10 * k) * NS
        if k:
            out.append(b"cpu,cpu=cpu-total,host=%s usage_idle=%d,usage_iowait=0 %d"
                       % (vm, 90 - k, ts))
            out.append(b"mem,host=%s available_percent=75,total=2147483648i %d" % (vm, ts))
        out.append(b"net,host=%s,interface=eth0 bytes_recv=%di,bytes_sent=0i %d"
                   % (vm, 1000 * k, ts))
    return out


def test_line_protocol_lines_the_minutes_refuse_are_counted_once_over_udp_and_tcp(tmp_path):
    now = int(time.time())
    t0 = (now - 3600) // 60 * 60
    ahead = (now + 100_000) * NS
    with serve(tmp_path, "--flush-interval", "0.3", "--influx-port", "0") as server:
        port = server.status["influx_port"]
        sent = 0
        for transport in ("udp", "tcp"):
            vm = "lp-" + transport
            lines = telegraf_minute(vm, t0) + [
                # Refused by the minutes: too far ahead (one sample, then two from one line) ...
                b"cpu,cpu=cpu-total,host=%s-ahead usage_idle=5 %d" % (vm.encode(), ahead),
                b"diskio,host=%s-ahead,name=sda read_bytes=1i,write_bytes=2i %d"
                % (vm.encode(), ahead),
                # ... and values outside the record's bounds (mem_mb, vcpus).
                b"mem,host=%s-big available_percent=50,total=%si %d"
                % (vm.encode(), b"9" * 30, (t0 + 30) * NS),
                b"system,host=%s n_cpus=0i %d" % (vm.encode(), (t0 + 30) * NS)]
            sent += len(lines)
            if transport == "udp":
                server.send_udp_to(port, b"\n".join(lines))
            else:
                with server.tcp_to(port) as sock:
                    sock.sendall(b"\n".join(lines) + b"\n")
            metrics = server.wait_metrics(lambda m, sent=sent: sum(outcomes(m, "influx").values())
                                          >= sent)
            # Exactly one outcome per line: 19 good lines, 2 ahead, 2 out of range, per transport.
            assert outcomes(metrics, "influx") == {
                "used": 19 * sent // 23, "future_timestamp": 2 * sent // 23,
                "out_of_range": 2 * sent // 23}, transport
    assert server.returncode == 0, server.output
    for vm in ("lp-udp", "lp-tcp"):
        rows = logged(tmp_path / "data", vm)  # the good lines beside the refused ones are kept
        assert list(rows["ts"]) == [t0 + 60], vm
        row = rows.iloc[0]
        assert (row["cpu"], row["cpu_max"], row["mem"], row["mem_mb"], row["net_rx"]) == (
            13.5, 16.0, 25.0, 2048, 100.0), vm
        assert str(row["vcpus"]) in ("nan", "<NA>"), vm  # n_cpus=0 was refused, not written
        assert not (tmp_path / "data" / "vms" / (vm + "-ahead")).exists()


def collectd_list(host: str, ts: float, plugin: str, instance: str, type_: str,
                  type_instance: str, values: list) -> bytes:
    return (cd.part_string(cd.HOST, host) + cd.part_number(cd.TIME_HR, int(ts * 2**30))
            + cd.part_string(cd.PLUGIN, plugin) + cd.part_string(cd.PLUGIN_INSTANCE, instance)
            + cd.part_string(cd.TYPE, type_) + cd.part_string(cd.TYPE_INSTANCE, type_instance)
            + cd.part_values(values))


def test_graphite_and_collectd_samples_the_minutes_refuse_are_counted_once(tmp_path):
    now = int(time.time())
    t0 = (now - 3600) // 60 * 60
    ahead = now + 100_000
    with serve(tmp_path, "--flush-interval", "0.3", "--graphite-port", "0",
               "--collectd-port", "0",
               "--graphite-template", "servers.{vm}.cpu.percent cpu",
               "--graphite-template", "servers.{vm}.mem.percent mem",
               "--graphite-template", "servers.{vm}.vcpus vcpus") as server:
        graphite = [b"servers.gr.cpu.percent 20 %d" % (t0 + 30),
                    b"servers.gr.mem.percent 40 %d" % (t0 + 30),
                    b"servers.gr.cpu.percent 20 %d" % ahead,
                    b"servers.gr.vcpus 0 %d" % (t0 + 30)]
        server.send_udp_to(server.status["graphite_port"], b"\n".join(graphite))
        packet = (collectd_list("cd", t0 + 30, "cpu", "", "percent", "active", [(cd.GAUGE, 30.0)])
                  + collectd_list("cd", t0 + 30, "memory", "", "percent", "used",
                                  [(cd.GAUGE, 60.0)])
                  + collectd_list("cd", ahead, "interface", "eth0", "if_octets", "",
                                  [(cd.DERIVE, 10), (cd.DERIVE, 20)]))
        server.send_udp_to(server.status["collectd_port"], packet)
        metrics = server.wait_metrics(lambda m: sum(outcomes(m, "graphite").values()) >= 4
                                      and sum(outcomes(m, "collectd").values()) >= 3)
        assert outcomes(metrics, "graphite") == {"used": 2, "future_timestamp": 1,
                                                 "out_of_range": 1}
        assert outcomes(metrics, "collectd") == {"used": 2, "future_timestamp": 1}
    assert server.returncode == 0, server.output
    assert logged(tmp_path / "data", "gr").iloc[0][["cpu", "mem"]].tolist() == [20.0, 40.0]
    assert logged(tmp_path / "data", "cd").iloc[0][["cpu", "mem"]].tolist() == [30.0, 60.0]

