"""Other agents' virtual interfaces through a real server: a VM is billed for what leaves it.

Telegraf's ``net`` input and collectd's ``interface`` plugin report every interface by default,
so a VM running Docker or KVM inside sends its bridges, veths, taps and tunnels beside eth0,
and a byte to or from a container or guest counted on each of them as well as on eth0.  The
server tells them by name (``--virtual-interfaces``) and sums only the others, unless every
interface of the minute is one of them (inside a container, as the vmstats agent does).
"""

import time

import pytest
from serverproc import serve
from test_formats_rejects import collectd_list, outcomes
from test_formats_server import NS
from test_server_udp import logged

from vmstats.server.formats import collectd as cd
from vmstats.server.formats.interfaces import VirtualInterfaces

#: Interface -> (rx, tx) bytes per second over the minute: the VM's own NIC, then the virtual
#: ones of a VM running Docker (docker0, a veth, a user network's bridge) and KVM (virbr0, a
#: guest's vnet0) and a VPN (tun0).  Only eth0's bytes leave the VM.
RATES = {"eth0": (1000, 500), "docker0": (200, 100), "veth1234abc": (200, 100),
         "br-5f3b2c1d9e8a": (40, 20), "virbr0": (30, 15), "vnet0": (30, 15), "tun0": (7, 3)}
VIRTUAL = sorted(set(RATES) - {"eth0"})


def telegraf_lines(host: str, t0: int, rates: dict) -> list[bytes]:
    """What Telegraf's cpu, mem and net inputs send every 10 s for the minute ending at t0 + 60
    (nanoseconds, as the line-protocol port takes them)."""
    vm = host.encode()
    out = []
    for k in range(7):
        ns = (t0 + 10 * k) * NS
        if k:
            out.append(b"cpu,cpu=cpu-total,host=%s usage_idle=80,usage_iowait=0 %d" % (vm, ns))
            out.append(b"mem,host=%s available_percent=75,total=2147483648i %d" % (vm, ns))
        for name, (rx, tx) in rates.items():
            out.append(b"net,host=%s,interface=%s bytes_recv=%di,bytes_sent=%di %d"
                       % (vm, name.encode(), 10 * rx * k, 10 * tx * k, ns))
        out.append(b"net,host=%s,interface=all icmp_inmsgs=3i %d" % (vm, ns))
    return out


def collectd_packets(host: str, t0: int, rates: dict) -> list[bytes]:
    """What collectd's cpu, memory and interface plugins send every 10 s for the same minute."""
    packets = []
    for k in range(7):
        ts = t0 + 10 * k
        packet = b""
        if k:
            packet += collectd_list(host, ts, "cpu", "", "percent", "active", [(cd.GAUGE, 20.0)])
            packet += collectd_list(host, ts, "memory", "", "percent", "used", [(cd.GAUGE, 25.0)])
        for name, (rx, tx) in rates.items():
            packet += collectd_list(host, ts, "interface", name, "if_octets", "",
                                    [(cd.DERIVE, 10 * rx * k), (cd.DERIVE, 10 * tx * k)])
        packets.append(packet)
    return packets


def sent(server, host: str, t0: int, rates: dict) -> tuple[int, int]:
    """One VM's minute as Telegraf sends it (``host``-lp) and as collectd does (``host``-cd);
    returns how many lines and value lists that is."""
    lines = telegraf_lines(host + "-lp", t0, rates)
    server.send_udp_to(server.status["influx_port"], b"\n".join(lines))
    server.send_udp_to(server.status["collectd_port"], *collectd_packets(host + "-cd", t0, rates))
    return len(lines), 12 + 7 * len(rates)


def counted(server, lines: int, lists: int) -> dict:
    """/metrics once the server has counted every line and value list sent."""
    return server.wait_metrics(lambda m: sum(outcomes(m, "influx").values()) >= lines
                               and sum(outcomes(m, "collectd").values()) >= lists)


def net(data, vm: str) -> tuple[float, float]:
    rows = logged(data, vm)
    assert len(rows) == 1, rows
    return float(rows.iloc[0]["net_rx"]), float(rows.iloc[0]["net_tx"])


def left_out(metrics: dict) -> float:
    return metrics.get('vmstats_edge_events_total{event="virtual_interface"}', 0)


def test_a_vm_running_containers_and_guests_is_billed_for_its_nic_alone(tmp_path):
    t0 = (int(time.time()) - 3600) // 60 * 60
    only_virtual = {name: RATES[name] for name in ("veth1234abc", "tun0")}
    with serve(tmp_path, "--flush-interval", "0.3", "--influx-port", "0",
               "--collectd-port", "0", "--minute-grace", "1s") as server:
        host = sent(server, "host", t0, RATES)
        inside = sent(server, "inside", t0, only_virtual)  # a container's: a veth is all it has
        metrics = counted(server, host[0] + inside[0], host[1] + inside[1])
        written = server.wait_metrics(
            lambda m: m.get('vmstats_edge_events_total{event="records"}', 0) == 4)
    assert server.returncode == 0, server.output
    data = tmp_path / "data"
    for vm in ("host-lp", "host-cd"):
        assert net(data, vm) == (1000.0, 500.0), vm
    for vm in ("inside-lp", "inside-cd"):  # every interface virtual: all counted
        assert net(data, vm) == (207.0, 103.0), vm
    # Each of the two minutes left out its six virtual interfaces (rx and tx alike), counted.
    assert left_out(written) == 2 * len(VIRTUAL)
    # No line is refused or ignored for it: the names are judged once the minute is complete.
    assert outcomes(metrics, "influx") == {"used": 2 * 12 + 7 * (7 + 2), "ignored": 2 * 7}
    assert outcomes(metrics, "collectd") == {"used": 2 * 12 + 7 * (7 + 2)}


@pytest.mark.parametrize("setting, expected", [
    # An operator's own names replace the default list: a bridge of theirs (lan0) and veths left
    # out, docker0 and the others counted.
    ("lan*,veth*", (1000 + 200 + 40 + 30 + 30 + 7, 500 + 100 + 20 + 15 + 15 + 3)),
    # None at all: every interface but loopback, as before the rule.
    ("", (1000 + 200 + 200 + 40 + 30 + 30 + 7 + 200, 500 + 100 + 100 + 20 + 15 + 15 + 3 + 100)),
])
def test_the_names_are_the_operators_to_change(tmp_path, setting, expected):
    t0 = (int(time.time()) - 3600) // 60 * 60
    rates = {**RATES, "lan0": (200, 100), "lo": (9, 9)}  # loopback is never counted
    with serve(tmp_path, "--flush-interval", "0.3", "--influx-port", "0", "--collectd-port", "0",
               "--virtual-interfaces", setting) as server:
        counted(server, *sent(server, "vm", t0, rates))
    assert server.returncode == 0, server.output
    for vm in ("vm-lp", "vm-cd"):
        assert net(tmp_path / "data", vm) == expected, vm


def test_the_default_names_take_the_virtual_interfaces_and_leave_the_nics():
    """The names docs/PROTOCOL.md promises are left out, and the NICs' names of common kernels
    and clouds (predictable names, Xen's, Azure's accelerated VF) are not."""
    rule = VirtualInterfaces()
    virtual = ["docker0", "docker_gwbridge", "veth1234abc", "vethwe-bridge", "br-5f3b2c1d9e8a",
               "br0", "br-int", "brq6a1f2b3c-4d", "cni0", "cni-podman0", "podman0", "cbr0",
               "lxcbr0", "lxc8f3a", "lxdbr0", "cali1a2b3c4d5e6", "vxlan.calico", "tunl0",
               "flannel.1", "cilium_host", "weave", "kube-ipvs0", "kube-bridge", "antrea-gw0",
               "genev_sys_6081", "ovs-system", "nodelocaldns", "virbr0", "virbr0-nic", "vnet0",
               "tap0a1b2c3d-4e", "macvtap0", "qbr0a1b2c3d-4e", "qvb0a1b2c3d-4e", "qvo0a1b2c3d-4e",
               "vboxnet0", "vmnet8", "tun0", "wg0", "gre0", "gretap0", "erspan0", "ip6tnl0",
               "ip_vti0", "sit0", "geneve0", "zt5u4y6nqw", "tailscale0", "bond0", "team0",
               "vlan100", "eth0.100", "ifb0", "dummy0", "nlmon0"]
    nics = ["eth0", "eth1", "ens3", "ens5", "ens192", "enp0s3", "enp1s0f1", "eno1", "enX0",
            "enP30832p0s2", "em1", "p1p1", "wlan0", "ib0"]
    assert [name for name in virtual if not rule(name)] == []
    assert [name for name in nics if rule(name)] == []
    assert rule.left_out(["eth0", "docker0"], ["eth0", "docker0", "tun0"]) == {"docker0", "tun0"}
    assert rule.left_out(["veth0"], ["tun0"]) == set()  # all virtual: all counted
    assert VirtualInterfaces(()).left_out(["eth0", "docker0"]) == set()
