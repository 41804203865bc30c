"""A journal replayed after ``--minute-grace`` or ``--virtual-interfaces`` was changed.

Telegraf lines are acknowledged (HTTP 204) once journaled; the server is killed (SIGKILL)
while their minute is open and started again under another setting.

``--minute-grace`` decides which minutes a VM's later samples complete, and so which samples
after them are late: the replay repeats the payloads by the grace they were taken under (each
payload's line holds it), so a sample the minute took is not refused as late at the restart.
``--virtual-interfaces`` is applied to a minute as it is written: a minute the run completed
before the crash (not yet flushed) is completed again by the replay by the list journaled after
the last checkpoint, as the run wrote it; a minute open at the crash is written by the restart,
by the restart's list (docs/OPERATIONS.md).
"""

import time

from serverproc import serve
from test_formats_replay_bounds import write
from test_server_udp import logged


def sample(vm: str, ts: int, cpu: int, rx: int = 0) -> str:
    """One 10 s step of one VM: cpu, mem 40, and two interfaces' receive counters."""
    return ("cpu,cpu=cpu-total,host={vm} usage_idle={idle},usage_iowait=0 {ts}\n"
            "mem,host={vm} used_percent=40,total=2147483648i {ts}\n"
            "net,host={vm},interface=eth0 bytes_recv={rx}i,bytes_sent=0i {ts}\n"
            "net,host={vm},interface=veth9 bytes_recv={rx}i,bytes_sent=0i {ts}"
            .format(vm=vm, idle=100 - cpu, ts=ts, rx=rx))


def row_at(data_dir, vm: str, end: int) -> dict:
    frame = logged(data_dir, vm)
    rows = frame[frame["ts"] == end]
    assert len(rows) == 1, frame
    return rows.iloc[0]


def test_a_minute_journaled_under_a_longer_minute_grace_keeps_what_it_took(tmp_path):
    """Under --minute-grace 120 a sample 50 s past a minute's end leaves it open, and a sample
    of it coming after is taken (cpu 10 and 30: the mean 20).  Replayed under the default 30 s
    the first payload completed the minute and the second one's sample was refused as late: the
    minute was written with cpu 10, a sample acknowledged and lost."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    end = t0 + 60
    args = ("--flush-interval", "60")  # no checkpoint before the kill: the payloads replayed
    server = serve(tmp_path, *args, "--minute-grace", "120s").start()
    try:
        assert write(server, (sample("graced", t0 + 10, 10) + "\n"
                              + sample("graced", end + 50, 50)).encode()) == 204
        assert write(server, sample("graced", t0 + 30, 30).encode()) == 204
        server.kill_outright()
        server = serve(tmp_path, *args).start()
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    assert row_at(tmp_path / "data", "graced", end)["cpu"] == 20.0
    assert ("edge: 2 journaled payloads taken under other settings (--minute-grace 120s (now "
            "30s)) replayed by those, as they were acknowledged; new input is taken by this "
            "run's") in server.output, server.output


def test_a_minute_open_at_a_crash_is_written_by_the_restarts_virtual_interfaces(tmp_path):
    """The names are judged when a minute is written (docs/PROTOCOL.md), not when its samples
    come: a minute open at the crash, its samples taken under --virtual-interfaces '' (eth0 and
    veth9 at 100 B/s each, 200 counted), is written by the restart, by the default list (veth9
    left out: 100).  A minute may hold samples of both runs; it is written by one list."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    args = ("--flush-interval", "60", "--minute-grace", "3600s")
    server = serve(tmp_path, *args, "--virtual-interfaces", "").start()
    try:
        assert write(server, "\n".join(sample("bridged", t0 + 10 * k + 1, 10, 1000 * k)
                                       for k in range(6)).encode()) == 204
        server.kill_outright()
        server = serve(tmp_path, *args).start()
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    assert row_at(tmp_path / "data", "bridged", t0 + 60)["net_rx"] == 100.0


def test_a_minute_completed_before_a_crash_is_written_by_the_list_it_was_completed_under(tmp_path):
    """A minute its VM's later sample completed (51 s past its end, past the 30 s grace) under
    --virtual-interfaces '' (eth0 and veth9 at 100 B/s each: 200), handed to the native path
    and not yet flushed when the server is killed, is written as it was completed (200) after a
    restart under the default list, which would leave veth9 out (100); the minute still open
    at the crash is written by the restart's list."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    end = t0 + 60
    args = ("--flush-interval", "60")  # no checkpoint before the kill: the payloads replayed
    server = serve(tmp_path, *args, "--virtual-interfaces", "").start()
    try:
        body = [sample("bridged", t0 + 10 * k + 1, 10, 1000 * k) for k in range(8)]
        body.append(sample("bridged", end + 51, 10, 1000 * 8 + 1000 * 3))
        assert write(server, "\n".join(body).encode()) == 204
        server.kill_outright()
        server = serve(tmp_path, *args).start()
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    assert row_at(tmp_path / "data", "bridged", end)["net_rx"] == 200.0
    assert row_at(tmp_path / "data", "bridged", end + 60)["net_rx"] == 100.0
    assert ("edge: minutes completed before the restart written by the --virtual-interfaces "
            "the run before completed them under, as it wrote them (1 minute, 1 other list); "
            "the minutes still open are written by this run's") in server.output, server.output
