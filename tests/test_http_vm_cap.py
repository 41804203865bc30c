"""--max-vms on the HTTP write API: a write naming a VM past the cap is refused at its intake
(503, nothing of it taken), never answered 204 and then dropped as ``vm_cap`` when its minutes
complete; writes of VMs the server knows still go in, and what a 204 took is written."""

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request

from serverproc import serve
from test_formats_server import minute_lines
from test_server_max_vms import payload, sync
from test_server_udp import logged

from vmstats.logstore.layout import vm_dir

#: Minutes stay open until the server stops (or a replay completes them), so each test says
#: when they complete.
KEEP_OPEN = ("--flush-interval", "0.2", "--minute-grace", "3600s")


def write(server, body: bytes) -> tuple[int, dict, str]:
    """POST ``body`` to /write (seconds precision): (status, headers, body)."""
    request = urllib.request.Request("http://127.0.0.1:%d/write?db=t&precision=s"
                                     % server.http_port, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def minutes(host: str, t0: int, count: int) -> bytes:
    """Telegraf's lines of ``host`` for ``count`` minutes, the first ending at t0 + 60."""
    return b"\n".join(line for k in range(count) for line in minute_lines(host, t0 + 60 * k))


def native(server, vms: list, ts: int, token: bytes) -> bytes:
    """The native records of ``vms`` at ``ts`` over TCP, and the server's reply to their sync."""
    with socket.create_connection(("127.0.0.1", server.tcp_port), timeout=10) as sock:
        return sync(sock, payload(vms, ts), token)


def counted(metrics: dict) -> tuple:
    """(write API writes refused for the cap, those counted as the format's reject, records
    dropped as vm_cap)."""
    return (metrics.get('vmstats_http_requests_refused_total{reason="vm_cap"}', 0),
            metrics.get('vmstats_edge_lines_total{format="influx",outcome="vm_cap"}', 0),
            metrics.get('vmstats_dropped_total{cause="vm_cap"}', 0))


def test_a_new_vm_past_the_cap_is_refused_before_a_204_and_known_vms_still_write(tmp_path):
    """The reproduction: three native VMs acknowledged at --max-vms 3, then a write for a new
    host.  It was answered 204, its three minutes completed and all three were dropped as
    vm_cap, counted and never written.  It is a 503 now, with Retry-After and the reason, and
    so is a write mixing a known VM and a new one (nothing of it taken, the known VM's minute
    neither); a write of a known VM alone is a 204 and written."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    known = ["10.71.0.1", "10.71.0.2", "10.71.0.3"]
    with serve(tmp_path, *KEEP_OPEN, "--max-vms", "3") as server:
        assert native(server, known, t0 - 60, b"n") == b"#!ack n 3 0\n"
        status, headers, text = write(server, minutes("new-host", t0, 3))
        assert status == 503, (status, text)
        assert headers["Retry-After"] == "60"
        reason = json.loads(text)["error"]
        assert reason == ("this write names 1 VM new to the server, which has room for 0 more "
                          "under --max-vms 3: nothing of it was taken; retry later"), reason
        mixed = minutes(known[0], t0 + 600, 1) + b"\n" + minutes("other-host", t0, 1)
        status, headers, text = write(server, mixed)
        assert (status, headers["Retry-After"]) == (503, "60"), text
        assert "names 1 VM new" in text
        assert write(server, minutes(known[1], t0, 1))[0] == 204
        assert counted(server.metrics()) == (2, 2, 0)
        assert server.stop() == 0, server.output
    data = str(tmp_path / "data")
    for vm in ("new-host", "other-host"):
        assert not os.path.exists(vm_dir(data, vm)), vm
    assert list(logged(tmp_path / "data", known[0])["ts"]) == [t0 - 60]  # not t0 + 660
    rows = logged(tmp_path / "data", known[1])
    assert list(rows["ts"]) == [t0 - 60, t0 + 60]
    assert rows.iloc[1]["cpu"] == 13.5 and rows.iloc[1]["net_rx"] == 100.0


def test_a_vm_a_204_took_is_known_at_once_so_no_native_vm_takes_its_place(tmp_path):
    """Below the cap a write is fed at once (it cannot name more VMs than its 19 lines), and
    its VM is known from its intake: new native VMs that follow get the room left, not the
    written VM's place, so the minute acknowledged is written when it completes."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    first = ["10.72.0.%d" % i for i in range(10)]
    others = ["10.72.1.%d" % i for i in range(20)]
    with serve(tmp_path, *KEEP_OPEN, "--max-vms", "30") as server:
        assert native(server, first, t0 - 60, b"a") == b"#!ack a 10 0\n"
        assert write(server, minutes("written-host", t0, 1))[0] == 204
        assert native(server, others, t0 - 60, b"b") == b"#!nak b busy\n"
        metrics = server.wait_metrics(lambda m: m["vmstats_vms_seen"] == 30)
        assert counted(metrics) == (0, 0, 1)  # one of the 20 found no room
        assert server.stop() == 0, server.output
    rows = logged(tmp_path / "data", "written-host")
    assert list(rows["ts"]) == [t0 + 60] and rows.iloc[0]["cpu"] == 13.5


def test_a_replay_keeps_acknowledged_vms_past_a_cap_lowered_since(tmp_path):
    """Two hosts' minutes acknowledged (204) and still open when the server is SIGKILLed; it
    restarts with --max-vms 1.  The writes were acknowledged, so the replay makes both VMs
    known past the cap and both minutes are written when they complete (an older version's
    journal, which judged VMs only as minutes completed, is replayed alike); before, the second
    was dropped as vm_cap.  New VMs find no room until the cap leaves some."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    acked = ["acked-a", "acked-b"]
    server = serve(tmp_path, *KEEP_OPEN).start()
    try:
        for host in acked:
            assert write(server, minutes(host, t0, 1))[0] == 204
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        server.kill()
        server = serve(tmp_path, *KEEP_OPEN, "--max-vms", "1").start()
        assert server.metrics()["vmstats_vms_seen"] == 2  # replayed before listening
        status, _headers, text = write(server, minutes("late-host", t0, 1))
        assert status == 503 and "names 1 VM new to the server, which has room for 0" in text, text
        assert native(server, ["10.73.0.1"], t0 - 60, b"n") == b"#!nak n busy\n"
        assert counted(server.metrics()) == (1, 1, 1)
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    data = tmp_path / "data"
    for host in acked:
        rows = logged(data, host)
        assert list(rows["ts"]) == [t0 + 60] and rows.iloc[0]["cpu"] == 13.5, host
    for vm in ("late-host", "10.73.0.1"):
        assert not os.path.exists(vm_dir(str(data), vm)), vm
