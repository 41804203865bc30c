"""collectd packets taken before a restart that changed the passwords are written.

Signed and encrypted packets are verified by ``--collectd-auth-file`` and plain ones are let in
by ``--collectd-security none``; once taken (counted as used: journaled first) their samples
are the server's to write.  The server is killed while their minute is open, the password is
rotated and signing required, and the server started again: the replay takes what the packets
were decoded to (the journal holds their samples, never a password), so the minutes are written.
Before, the journal held the packets and the replay verified them again by the new file: the
signed and encrypted ones were refused as forged, the plain one as unsigned, and lost.
"""

import time

import pytest
from serverproc import serve
from test_formats_rejects import collectd_list, outcomes
from test_server_udp import logged

from vmstats.server.formats import collectd as cd

#: No checkpoint before the kill, and the minutes stay open until the stop completes them.
KEEP_OPEN = ("--flush-interval", "60", "--minute-grace", "3600s", "--collectd-port", "0")


def test_packets_taken_before_the_passwords_changed_are_written(tmp_path):
    pytest.importorskip("cryptography")
    auth = tmp_path / "auth"
    auth.write_text("fleet: s3cret\n")
    t0 = (int(time.time()) - 3600) // 60 * 60
    times = [t0 + 10 * k + 1 for k in range(6)]

    def minute(vm: str) -> list[bytes]:
        return [collectd_list(vm, ts, "cpu", "", "percent", "active", [(cd.GAUGE, 20.0)])
                + collectd_list(vm, ts, "memory", "", "percent", "used", [(cd.GAUGE, 50.0)])
                for ts in times]

    server = serve(tmp_path, *KEEP_OPEN, "--collectd-auth-file", str(auth)).start()
    try:
        server.send_udp_to(server.status["collectd_port"],
                           *(cd.sign(packet, "fleet", "s3cret") for packet in minute("signed")),
                           *(cd.encrypt(packet, "fleet", "s3cret", bytes(range(16)))
                             for packet in minute("sealed")),
                           *minute("plain"))
        server.wait_metrics(lambda m: outcomes(m, "collectd").get("used") == 36)
        server.kill_outright()
        journal = b"".join(path.read_bytes() for path in (tmp_path / "data").rglob("*")
                           if path.is_file())
        assert journal.count(b" in collectd ") == 18 and b"s3cret" not in journal
        auth.write_text("fleet: rotated\n")
        server = serve(tmp_path, *KEEP_OPEN, "--collectd-auth-file", str(auth),
                       "--collectd-security", "sign").start()
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    assert "could not be replayed" not in server.output
    for vm in ("signed", "sealed", "plain"):
        row = logged(tmp_path / "data", vm).iloc[0]
        assert (row["cpu"], row["mem"]) == (20.0, 50.0), vm
