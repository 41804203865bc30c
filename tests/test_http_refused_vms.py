"""A write to the HTTP write API (Telegraf's, InfluxDB client libraries') none of whose samples
was taken makes none of its VMs known: not listed on /status, not counted in ``vms_seen``, not
holding a place under --max-vms for the ten minutes a silent VM is kept.  Its VMs were refused
(a 400 names the lines); only a VM one of whose samples was taken is known, from the intake
on, as before.  Real HTTP writes to the real server on loopback."""

import json
import time

from serverproc import serve
from test_formats_server import minute_lines
from test_http_vm_cap import KEEP_OPEN, native, write


def _lines(host: str, t0: int) -> bytes:
    return b"\n".join(minute_lines(host, t0))


def test_a_write_whose_samples_are_all_refused_makes_no_vm_known(tmp_path):
    """Hosts stamped two hours ahead (past --max-future) and one stamped before the first
    stamp taken: 400, and /status knows none of them; a write mixing such a host with a good
    one makes only the good one known."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    ahead = (int(time.time()) + 7200) // 60 * 60
    with serve(tmp_path, *KEEP_OPEN) as server:
        status, _headers, text = write(server, _lines("ahead-host", ahead))
        assert status == 400 and "future_timestamp" in text, (status, text)
        status, _headers, text = write(server, _lines("unset-clock", 86400))
        assert status == 400 and "past_timestamp" in text, (status, text)
        assert server.status_json()["vms_seen"] == 0
        mixed = _lines("later-ahead", ahead) + b"\n" + _lines("good-host", t0)
        status, _headers, text = write(server, mixed)
        assert status == 400 and json.loads(text)["error"], text
        listed = server.status_json()
        assert sorted(listed["last_seen"]) == ["good-host"] and listed["vms_seen"] == 1
        assert server.stop() == 0, server.output
    assert "VMs seen          1\n" in server.output


def test_refused_writes_hold_no_place_under_max_vms(tmp_path):
    """At --max-vms 2, a refused write of two hosts stamped ahead leaves both places free: two
    native VMs are acknowledged after it, and a write of a known VM near the cap too."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    ahead = (int(time.time()) + 7200) // 60 * 60
    with serve(tmp_path, *KEEP_OPEN, "--max-vms", "2") as server:
        body = _lines("ahead-a", ahead) + b"\n" + _lines("ahead-b", ahead)
        status, _headers, text = write(server, body)
        assert status == 400 and "future_timestamp" in text, (status, text)
        assert native(server, ["10.74.0.1", "10.74.0.2"], t0 - 60, b"n") == b"#!ack n 2 0\n"
        assert server.status_json()["vms_seen"] == 2
        assert server.stop() == 0, server.output



def test_a_replay_makes_no_vm_of_a_refused_write_known(tmp_path):
    """A refused write (400) is journaled with the good lines beside it; SIGKILLed, the server
    replays it at its restart and knows the good host only, not the one stamped ahead."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    ahead = (int(time.time()) + 7200) // 60 * 60
    server = serve(tmp_path, *KEEP_OPEN).start()
    try:
        status, _headers, text = write(server, _lines("ahead-host", ahead) + b"\n"
                                       + _lines("good-host", t0))
        assert status == 400 and "future_timestamp" in text, (status, text)
        server.kill_outright()
        server = serve(tmp_path, *KEEP_OPEN).start()
        listed = server.status_json()  # replayed before listening
        assert sorted(listed["last_seen"]) == ["good-host"] and listed["vms_seen"] == 1
        assert server.stop() == 0, server.output
    finally:
        server.kill()
