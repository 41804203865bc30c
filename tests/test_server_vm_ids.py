"""VM ids: what the server acknowledges it writes, for every class of id, on every parse path.

Each id travels over UDP and over TCP (acknowledged with ``#!sync``) in the three shapes that
take the three parse paths: every field (the compact regex), two fields (the per-field regex)
and reordered tags (the decoder).  Acknowledged <=> a row in the canonical id's folder;
refused <=> counted as a reject and nothing written anywhere.
"""

from collections import Counter

from serverproc import serve
from test_reliability_faults import report
from test_reliability_journal import raw_rows
from test_server_tcp import read_reply
from test_server_udp import now

from vmstats import logstore

#: (class, id as sent, canonical id or None when it must be refused)
IDS = [
    ("ipv4", "10.77.0.1", "10.77.0.1"),
    ("ipv4, leading zeros (a name)", "010.77.0.2", "010.77.0.2"),
    ("ipv4 with a zone", "10.77.0.3%eth0", None),
    ("ipv6", "2001:DB8::0001", "2001:db8::1"),
    ("ipv6, ipv4-mapped", "::FFFF:10.77.0.4", "::ffff:a4d:4"),
    ("ipv6 with a zone", "fe80::1%eth0", "fe80::1%eth0"),
    ("ipv6 with a zone, case", "FE80::B89%Eth1", "fe80::b89%Eth1"),
    ("ipv6 with a numeric zone", "fe80::2%7", "fe80::2%7"),
    ("ipv6 with zone ..", "fe80::1%..", None),
    ("ipv6 with zone `id`", "fe80::b89%`id`", None),
    ("ipv6 with zone <x>|y", "fe80::d2d%<x>|y", None),
    ("ipv6 with an empty zone", "fe80::3%", None),
    ("ipv6 with zone a/b", "fe80::4%a/b", None),
    ("ipv6, not an address", "fe80::zz", None),
    ("hostname", "web-1.example.com", "web-1.example.com"),
    ("hostname, case", "Web-1.example.com", "Web-1.example.com"),
    ("hostname, underscore", "db_2", "db_2"),
    ("one character", "a", "a"),
    ("64 characters", "h" * 64, "h" * 64),
    ("65 characters", "h" * 65, None),
    (".", ".", None),
    ("..", "..", None),
    ("a..b", "a..b", None),
    ("leading dot", ".hidden", None),
    ("leading dash", "-x", None),
    ("slash", "a/b", None),
    ("backslash", "a\\b", None),
    ("backquote", "a`b", None),
    ("pipe", "a|b", None),
    ("dollar", "a$b", None),
    ("colon in a name", "a:b", None),
    ("unicode letter", "wéb", None),
    ("unicode digits", "١٢٣", None),
    ("fullwidth", "ｗｅｂ", None),
]


def shapes(vm: str, ts: int) -> list[bytes]:
    """The three shapes of one record, one per parse path, a minute apart."""
    vm_bytes = vm.encode("utf-8")
    return [
        b"vmstats,vm=%s,host=h1 cpu=12.5,cpu_max=50.5,mem=40.25,disk_r=1,disk_w=2,net_rx=3,"
        b"net_tx=4,vcpus=2i,mem_mb=4096i,seq=1i %d" % (vm_bytes, ts),
        b"vmstats,vm=%s cpu=1.5,mem=2.5 %d" % (vm_bytes, ts + 60),
        b"vmstats,host=h1,vm=%s mem=2.5,cpu=1.5 %d" % (vm_bytes, ts + 120),
    ]


def test_every_acknowledged_id_is_written_and_every_refused_one_counted(tmp_path):
    t = now() - 86400
    udp_ts, tcp_ts = t, t + 3600
    with serve(tmp_path, "--flush-interval", "0.2") as server:
        acks = {}
        with server.tcp() as sock:
            for number, (_name, raw, _canonical) in enumerate(IDS):
                sock.sendall(b"\n".join(shapes(raw, tcp_ts)) + b"\n#!sync v%d\n" % number)
                acks[raw] = read_reply(sock)
        for _name, raw, _canonical in IDS:
            server.send_udp(*shapes(raw, udp_ts))
        lines = 6 * len(IDS)
        metrics = server.wait_received(lines)
        metrics = server.wait_metrics(lambda m: m["vmstats_buffered_records"] == 0
                                      and m["vmstats_in_flight_records"] == 0)  # all settled
    assert server.returncode == 0, server.output
    logged = raw_rows(tmp_path / "data")
    folders = set(logstore.iter_vms(str(tmp_path / "data")))
    accepted = [(name, raw, canonical) for name, raw, canonical in IDS if canonical]
    mismatches = []
    for number, (name, raw, canonical) in enumerate(IDS):
        expected_ack = (b"#!ack v%d 3 0\n" if canonical else b"#!ack v%d 0 3\n") % number
        rows = Counter(ts for (vm, ts) in logged.elements() if vm == canonical)
        written = sorted(rows) == [udp_ts, udp_ts + 60, udp_ts + 120,
                                   tcp_ts, tcp_ts + 60, tcp_ts + 120]
        if acks[raw] != expected_ack or written != bool(canonical):
            mismatches.append((name, raw, acks[raw], dict(rows)))
    report("vm_ids", classes=len(IDS), accepted=len(accepted), refused=len(IDS) - len(accepted),
           lines=lines, logged_rows=sum(logged.values()),
           rejected_bad_vm_id=int(metrics['vmstats_rejected_total{reason="bad_vm_id"}']),
           unwritable=int(metrics['vmstats_dropped_total{cause="unwritable"}']),
           ack_written_mismatches=len(mismatches))
    assert mismatches == []
    assert folders == {canonical for _name, _raw, canonical in accepted}
    assert sum(logged.values()) == 6 * len(accepted)  # each once: nothing else, nothing twice
    assert metrics["vmstats_records_received_total"] == 6 * len(accepted)
    assert metrics['vmstats_rejected_total{reason="bad_vm_id"}'] == 6 * (len(IDS) - len(accepted))
    assert metrics['vmstats_dropped_total{cause="unwritable"}'] == 0
