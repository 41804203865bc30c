"""What the other formats' ports refuse, through a real server: each refused line counted once,
impossible values refused (not clamped into plausible ones), and nothing else of the payload lost.

Line protocol over UDP and TCP, Graphite over UDP and TCP, collectd over UDP.  The counters are
``vmstats_edge_lines_total{format, outcome}``: every line (collectd: every value list) lands in
exactly one outcome, so ``used`` plus the rejects equals what was sent.
"""

import time

from serverproc import serve
from test_formats_server import NS
from test_server_udp import logged

from vmstats.server.formats import collectd as cd


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


def _send_lines(server, port: int, transport: str, lines: list[bytes], sent: int) -> dict:
    """Line protocol over ``transport``, then /metrics once all ``sent`` lines are counted."""
    if transport == "udp":
        server.send_udp_to(port, b"\n".join(lines))
    else:
        with server.tcp_to(port) as sock:
            sock.sendall(b"\n".join(lines) + b"\n")
    return server.wait_metrics(lambda m: sum(outcomes(m, "influx").values()) >= sent)


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
            metrics = _send_lines(server, port, transport, lines, sent)
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


#: A server taking Graphite (cpu, mem and vcpus by template) and collectd beside its own port.
_GRAPHITE_AND_COLLECTD = (
    "--flush-interval", "0.3", "--graphite-port", "0", "--collectd-port", "0",
    "--graphite-template", "servers.{vm}.cpu.percent cpu",
    "--graphite-template", "servers.{vm}.mem.percent mem",
    "--graphite-template", "servers.{vm}.vcpus vcpus")


def test_graphite_and_collectd_samples_the_minutes_refuse_are_counted_once(tmp_path):
    now = int(time.time())
    t0 = (now - 3600) // 60 * 60
    ahead = now + 100_000
    with serve(tmp_path, *_GRAPHITE_AND_COLLECTD) as server:
        graphite = [b"servers.gr.cpu.percent 20 %d" % (t0 + 30),
                    b"servers.gr.mem.percent 40 %d" % (t0 + 30),
                    b"servers.gr.cpu.percent 20 %d" % ahead,
                    b"servers.gr.vcpus 0 %d" % (t0 + 30),
                    # Before 1970 (-1 alone means now): no minute of it was ever written.
                    b"servers.gr.cpu.percent 20 -300"]
        server.send_udp_to(server.status["graphite_port"], b"\n".join(graphite))
        packet = (collectd_list("cd", t0 + 30, "cpu", "", "percent", "active", [(cd.GAUGE, 30.0)])
                  + collectd_list("cd", t0 + 30, "memory", "", "percent", "used",
                                  [(cd.GAUGE, 60.0)])
                  + collectd_list("cd", ahead, "interface", "eth0", "if_octets", "",
                                  [(cd.DERIVE, 10), (cd.DERIVE, 20)]))
        server.send_udp_to(server.status["collectd_port"], packet)
        metrics = server.wait_metrics(lambda m: sum(outcomes(m, "graphite").values()) >= 5
                                      and sum(outcomes(m, "collectd").values()) >= 3)
        assert outcomes(metrics, "graphite") == {"used": 2, "future_timestamp": 1,
                                                 "out_of_range": 2}
        assert outcomes(metrics, "collectd") == {"used": 2, "future_timestamp": 1}
    assert server.returncode == 0, server.output
    assert logged(tmp_path / "data", "gr").iloc[0][["cpu", "mem"]].tolist() == [20.0, 40.0]
    assert logged(tmp_path / "data", "cd").iloc[0][["cpu", "mem"]].tolist() == [30.0, 60.0]


def test_impossible_line_protocol_values_are_refused_and_rounding_is_clamped(tmp_path):
    now = int(time.time())
    t0 = (now - 3600) // 60 * 60
    with serve(tmp_path, "--flush-interval", "0.3", "--influx-port", "0") as server:
        port = server.status["influx_port"]
        sent = 0
        for transport in ("udp", "tcp"):
            vm = ("imp-" + transport).encode()
            at = (t0 + 35) * NS
            good = telegraf_minute(vm.decode(), t0) + [
                b"system,host=%s n_cpus=4i %d" % (vm, at)] + [
                b"diskio,host=%s,name=sda read_bytes=%di,write_bytes=0i %d"
                % (vm, 5000 * k, (t0 + 10 * k) * NS) for k in range(7)]
            impossible = [
                b"cpu,cpu=cpu-total,host=%s usage_idle=-50 %d" % (vm, at),  # once cpu 100 %
                b"cpu,cpu=cpu-total,host=%s usage_idle=50,usage_iowait=-30 %d" % (vm, at),
                b"mem,host=%s available_percent=150 %d" % (vm, at),
                b"mem,host=%s used_percent=-3 %d" % (vm, at),
                b"mem,host=%s available_percent=75,total=-2147483648i %d" % (vm, at),
                b"system,host=%s n_cpus=-2i %d" % (vm, at),
                b"system,host=%s n_cpus=100000i %d" % (vm, at),
                b"diskio,host=%s,name=sdb read_bytes=-5i,write_bytes=-7i %d" % (vm, at),
                b"net,host=%s,interface=eth1 bytes_recv=-1i,bytes_sent=10i %d" % (vm, at)]
            rounding = [  # a hair past 0 or 100 %: Telegraf's rounding, clamped and kept
                b"cpu,cpu=cpu-total,host=%s-round usage_idle=100.00000001 %d" % (vm, at),
                b"cpu,cpu=cpu-total,host=%s-round usage_idle=99.6,usage_iowait=0.9 %d"
                % (vm, at + NS),
                b"mem,host=%s-round available_percent=100.4 %d" % (vm, at),
                b"mem,host=%s-round available_percent=-0.5 %d" % (vm, at + NS)]
            lines = good + impossible + rounding
            sent += len(lines)
            metrics = _send_lines(server, port, transport, lines, sent)
            rounds = 1 if transport == "udp" else 2
            assert outcomes(metrics, "influx") == {
                "used": rounds * (len(good) + len(rounding)),
                "out_of_range": rounds * len(impossible)}, transport
    assert server.returncode == 0, server.output
    for vm in ("imp-udp", "imp-tcp"):
        row = logged(tmp_path / "data", vm).iloc[0]
        assert (row["cpu"], row["cpu_max"], row["mem"], row["mem_mb"], row["vcpus"]) == (
            13.5, 16.0, 25.0, 2048, 4), vm
        assert (row["disk_r"], row["disk_w"], row["net_rx"], row["net_tx"]) == (
            500.0, 0.0, 100.0, 0.0), vm  # eth1's good bytes_sent only primed its counter
        row = logged(tmp_path / "data", vm + "-round").iloc[0]
        assert (row["cpu"], row["cpu_max"], row["mem"]) == (0.0, 0.0, 50.0), vm


def test_impossible_graphite_and_collectd_values_are_refused_like_line_protocol(tmp_path):
    now = int(time.time())
    t0 = (now - 3600) // 60 * 60
    at = t0 + 30
    with serve(tmp_path, *_GRAPHITE_AND_COLLECTD,
               "--graphite-template", "servers.{vm}.net.{device}.rx net_rx",
               "--graphite-template", "servers.{vm}.net.{device}.tx net_tx:counter") as server:
        graphite = [b"servers.gr.cpu.percent 20 %d" % at, b"servers.gr.mem.percent 40 %d" % at,
                    b"servers.gr.vcpus 2 %d" % at,
                    b"servers.gr-round.cpu.percent 100.5 %d" % at,
                    b"servers.gr-round.mem.percent -0.5 %d" % at]
        impossible = [b"servers.gr.cpu.percent 150 %d" % at, b"servers.gr.mem.percent -5 %d" % at,
                      b"servers.gr.vcpus 0 %d" % at, b"servers.gr.net.eth0.rx -100 %d" % at,
                      b"servers.gr.net.eth0.tx -5 %d" % at]
        port = server.status["graphite_port"]
        server.send_udp_to(port, b"\n".join(graphite[:3] + impossible[:3]))
        with server.tcp_to(port) as sock:
            sock.sendall(b"\n".join(graphite[3:] + impossible[3:]) + b"\n")
        packet = (collectd_list("cd", at, "cpu", "", "percent", "active", [(cd.GAUGE, 30.0)])
                  + collectd_list("cd", at, "memory", "", "percent", "used", [(cd.GAUGE, 60.0)])
                  + collectd_list("cd", at, "cpu", "", "percent", "active", [(cd.GAUGE, -20.0)])
                  + collectd_list("cd", at, "cpu", "0", "percent", "idle", [(cd.GAUGE, -5.0)])
                  + collectd_list("cd", at, "memory", "", "percent", "used", [(cd.GAUGE, 150.0)])
                  + collectd_list("cd", at, "memory", "", "memory", "free", [(cd.GAUGE, -1e9)])
                  + collectd_list("cd", at, "interface", "eth0", "if_octets", "",
                                  [(cd.DERIVE, -10), (cd.DERIVE, -20)]))
        server.send_udp_to(server.status["collectd_port"], packet)
        metrics = server.wait_metrics(lambda m: sum(outcomes(m, "graphite").values()) >= 10
                                      and sum(outcomes(m, "collectd").values()) >= 7)
        assert outcomes(metrics, "graphite") == {"used": 5, "out_of_range": 5}
        assert outcomes(metrics, "collectd") == {"used": 2, "out_of_range": 5}
    assert server.returncode == 0, server.output
    row = logged(tmp_path / "data", "gr").iloc[0]
    assert (row["cpu"], row["mem"], row["vcpus"]) == (20.0, 40.0, 2)
    assert str(row["net_rx"]) in ("nan", "<NA>")
    row = logged(tmp_path / "data", "gr-round").iloc[0]
    assert (row["cpu"], row["mem"]) == (100.0, 0.0)
    row = logged(tmp_path / "data", "cd").iloc[0]
    assert (row["cpu"], row["mem"], str(row["mem_mb"])) == (30.0, 60.0, "<NA>")


def test_collectd_packets_signed_or_encrypted_inside_themselves_are_refused_and_the_port_goes_on(
        tmp_path):
    """A signature part inside a signed packet, a thousand deep, cost an HMAC of the rest per
    layer and then the interpreter's recursion: the decoding process failed, the reactor failed
    again decoding it in its place, and the payload held every collectd packet after it, and
    the server's stop, for good.  Now each such packet is one ``syntax``, and the next is used."""
    (tmp_path / "auth").write_text("fleet: s3cret\n")
    t0 = (int(time.time()) - 3600) // 60 * 60
    good = (collectd_list("cd-ok", t0 + 30, "cpu", "", "percent", "active", [(cd.GAUGE, 30.0)])
            + collectd_list("cd-ok", t0 + 30, "memory", "", "percent", "used", [(cd.GAUGE, 60.0)]))
    nested = collectd_list("cd-deep", t0 + 30, "memory", "", "percent", "used", [(cd.GAUGE, 1.0)])
    for _ in range(1200):
        nested = cd.sign(nested, "fleet", "s3cret")
    assert len(nested) < 65507  # one UDP datagram
    twice_sealed = cd.encrypt(cd.encrypt(good, "fleet", "s3cret", b"\1" * 16), "fleet", "s3cret",
                              b"\2" * 16)
    with serve(tmp_path / "srv", "--flush-interval", "0.3", "--collectd-port", "0",
               "--collectd-auth-file", str(tmp_path / "auth")) as server:
        port = server.status["collectd_port"]
        server.send_udp_to(port, nested)
        server.send_udp_to(port, twice_sealed)
        server.send_udp_to(port, cd.sign(good, "fleet", "s3cret"))
        metrics = server.wait_metrics(lambda m: sum(outcomes(m, "collectd").values()) >= 4,
                                      timeout=30)
        assert outcomes(metrics, "collectd") == {"used": 2, "syntax": 2}
    assert server.returncode == 0, server.output
    assert logged(tmp_path / "srv" / "data", "cd-ok").iloc[0][["cpu", "mem"]].tolist() == [30.0, 60.0]
    assert not (tmp_path / "srv" / "data" / "vms" / "cd-deep").exists()
