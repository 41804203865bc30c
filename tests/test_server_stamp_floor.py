"""The least stamp the server takes (protocol.FIRST_STAMP, 2000-01-01), on every way in.

A VM booted without a hardware clock counts from the epoch until NTP sets it, and a sender
writes 0 for a stamp it has not got: under the default ``--max-past 0`` (no limit) each such
record made its VM a ``1970-01-01.csv`` (or ``1970-01-12.csv``).  The real server is sent
them on its own UDP and TCP ports, InfluxDB's write API and line-protocol port, Graphite and
collectd, and must refuse every one as ``past_timestamp``, count it and say why.
"""

import os

from serverproc import serve
from test_formats_rejects import collectd_list
from test_formats_replay_bounds import write
from test_formats_server import NS
from test_server_udp import line, logged, now

from vmstats.protocol import FIRST_STAMP, Record
from vmstats.server.formats import collectd as cd
from vmstats.server.parse import NO_LIMIT, Parser
from vmstats.stamps import moment

#: No reading of a set clock: the epoch, a clock counting from boot (5 minutes, a day, 11.6
#: days), and the last second before the floor.
BEFORE = (0, 300, 86_400, 1_000_000, FIRST_STAMP - 1)
#: A server taking every other format beside its own ports.
_EVERY_PORT = ("--flush-interval", "0.3", "--influx-port", "0", "--graphite-port", "0",
               "--collectd-port", "0", "--graphite-template", "servers.{vm}.cpu.percent cpu",
               "--graphite-template", "servers.{vm}.mem.percent mem")


def _edge(metrics: dict, fmt: str) -> float:
    return metrics.get('vmstats_edge_lines_total{format="%s",outcome="past_timestamp"}' % fmt, 0)


def test_a_stamp_before_2000_is_refused_on_every_way_in_whatever_max_past(tmp_path):
    taken = now() - 120
    with serve(tmp_path, *_EVERY_PORT) as server:
        # Native UDP: the good record of the datagram is kept; TCP: the refusals acknowledged.
        server.send_udp(b"\n".join(line(Record(vm="10.7.2.1", ts=ts, cpu=1.0, mem=2.0))
                                   for ts in BEFORE + (taken,)))
        tcp = b"".join(line(Record(vm="10.7.2.2", ts=ts, cpu=1.0, mem=2.0)) + b"\n"
                       for ts in BEFORE + (FIRST_STAMP,))
        assert server.send_synced(tcp) == ["#!ack", "all", "1", "5"]
        influx = b"\n".join(b"cpu,cpu=cpu-total,host=lp usage_idle=50 %d\nmem,host=lp "
                            b"used_percent=40 %d" % (ts, ts) for ts in BEFORE)
        assert write(server, influx) == 400
        server.send_udp_to(server.status["influx_port"], b"\n".join(
            b"mem,host=lp-udp used_percent=40 %d" % (ts * NS) for ts in BEFORE))
        server.send_udp_to(server.status["graphite_port"], b"\n".join(
            b"servers.gr.cpu.percent 5 %d" % ts for ts in BEFORE))
        server.send_udp_to(server.status["collectd_port"], b"".join(  # its time 0 is none: syntax
            collectd_list("cd", ts, "memory", "", "percent", "used", [(cd.GAUGE, 60.0)])
            for ts in BEFORE[1:]))
        metrics = server.wait_metrics(lambda m: _edge(m, "influx") == 15
                                      and _edge(m, "graphite") == 5 and _edge(m, "collectd") == 4
                                      and m['vmstats_rejected_total{reason="past_timestamp"}'] == 10)
        server.wait_for(lambda s: (tmp_path / "data" / "vms" / "10.7.2.1").exists()
                        and (tmp_path / "data" / "vms" / "10.7.2.2").exists())
    assert server.returncode == 0, server.output
    assert list(logged(tmp_path / "data", "10.7.2.1")["ts"]) == [taken]
    assert list(logged(tmp_path / "data", "10.7.2.2")["ts"]) == [FIRST_STAMP]  # the floor is in
    assert sorted(os.listdir(tmp_path / "data" / "vms")) == ["10.7.2.1", "10.7.2.2"]
    assert os.listdir(tmp_path / "data" / "vms" / "10.7.2.2") == ["2000-01-01.csv"]
    assert ("past_timestamp: vm 10.7.2.1 stamped 86400, before 2000-01-01T00:00:00Z, the first "
            "moment a stamp is taken from: a clock not set since boot (counting from 1970) or a "
            "stamp left unset, not a time measured; refused whatever --max-past") in server.output
    assert metrics['vmstats_rejected_total{reason="future_timestamp"}'] == 0
    # The other formats' refusals in the same words (a rate-limited log: influx's come first).
    assert ("influx: past_timestamp: line 3: stamped 300, before 2000-01-01T00:00:00Z, the first "
            "moment a stamp is taken from") in server.output, server.output


def test_the_floor_is_2000_and_the_live_parser_s_window_never_opens_below_it():
    """--max-past 0 sets no limit, a longer one than the time since 2000 reaches no further;
    a parser of no limit (a journal replay's, the edge's minutes') takes what was acknowledged
    before the floor was raised."""
    assert moment(FIRST_STAMP) == "2000-01-01T00:00:00Z"
    data = b"\n".join(line(Record(vm="10.7.2.3", ts=ts, cpu=1.0, mem=2.0))
                      for ts in BEFORE + (FIRST_STAMP,))
    for max_past in (0, 40 * 365 * 86_400):
        parsed = Parser(300, max_past).parse(data, now())
        assert (parsed[1], parsed[4]) == ([FIRST_STAMP], [("past_timestamp", 5)]), max_past
    assert Parser(NO_LIMIT, 0).parse(data, now())[1] == [*BEFORE, FIRST_STAMP]
