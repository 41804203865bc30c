"""Numbers valid one by one that break the arithmetic after them, in every format.

Each decoder takes values near the largest double, the smallest subnormal, integers of 64
bits and of hundreds of digits, counters that jump, step back, wrap and restart, samples a
nanosecond apart and timestamps at the edges of the window; then the minutes add, average,
divide and round them.  Whatever comes in: no exception escapes, every line is counted once
(used, ignored or one reason), the assembler in C and in Python agree, and every record is
one the native ingest takes (its ranges, finite) -- a value that cannot be is refused and
counted, a field whose sum cannot be is left empty and counted.
"""

import math
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_formats_minutes_c import same

from vmstats import protocol
from vmstats.server.formats import CPU_STATE, MEM_PART, TOTAL, USED, Sample, Tally
from vmstats.server.formats import collectd as cd
from vmstats.server.formats.edge import _refused_lines
from vmstats.server.formats.graphite import GraphiteDecoder, parse_templates
from vmstats.server.formats.influx import InfluxDecoder
from vmstats.server.formats.minutes import MinuteAssembler

NOW = 1732262400.0
NS = 10**9
BIG = 1.7976931348623157e308
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: Floats at the edges of a double and of the protocol's ranges.
EDGE_FLOATS = [BIG, -BIG, 1.7e308, 1e308, 5e-324, -5e-324, 2.2250738585072014e-308, 0.0, -0.0,
               1e15, 1e15 + 0.125, 1e-300, 100.0, 100.99, 101.0, -0.99, 4096.0, 4097.0,
               float(2**32), float(2**52 + 1), float(2**63), float(2**64)]
#: Integers a ``i`` or ``u`` field may carry: 64-bit edges and far past them.
EDGE_INTS = [0, 1, 2**31, 2**32 - 1, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64,
             10**20, 10**308, 2 * 10**308, 10**400, -(2**63), -(10**400)]
FLOATS = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats(allow_nan=False, allow_infinity=False))
INTS = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-(2**70), 2**70))
#: Offsets from NOW at the window's edges (the default --max-future is 300 s).
OFFSETS = st.one_of(st.sampled_from([-600.0, -60.0, -30.0, -1e-9, 0.0, 1e-9, 299.0, 300.0,
                                     300.000001, 359.0, -1e12, 1e12]),
                    st.floats(-900, 400))


def decoder_ran(decoder, payloads: list[bytes], now: float = NOW) -> tuple[dict, list]:
    """Decode ``payloads`` and file them as the edge does, in C and in Python alike: the tally
    (each line once, refused samples moved from used) and the records, every one checked."""
    assemblers = (MinuteAssembler(), MinuteAssembler())
    assemblers[1].native = None
    results = []
    for assembler in assemblers:
        tally = Tally()
        for data in payloads:
            lines: list = []
            refused: list = []
            samples = decoder.decode(data, now, tally, lines=lines)
            assembler.add(samples, now, tally, refused)
            if refused:
                _refused_lines(tally, refused, lines, decoder.unit, None)
        assembler.tick(now + 10**6)  # the minute clock, long after
        assembler.complete_all()
        records = assembler.take()
        results.append((dict(tally.counts), records, dict(assembler.events)))
    assert results[0] == results[1]
    counts, records, _events = results[0]
    for record in records:
        assert_writable(record)
    return counts, records


def assert_writable(record: protocol.Record) -> None:
    """What the native ingest takes: encoded and parsed back, the same finite values."""
    line = protocol.encode_record(record)
    parsed = protocol.Decoder(max_future=10**12).decode_line(line, now=NOW)
    for name in protocol.FIELD_NAMES:
        value = getattr(record, name)
        if value is not None:
            assert math.isfinite(value), (name, record)
            assert getattr(parsed, name) == value, (name, record)


def text_of(value) -> str:
    return "%di" % value if isinstance(value, int) else repr(value)


# -- the bugs, one by one ---------------------------------------------------------------------
def test_a_counter_past_a_double_is_refused_not_raised():
    """``read_bytes=<400 digits>i`` after a small one: the rate's int / float raised
    OverflowError out of add (C and Python: the C hands such ints to the Python step)."""
    ts = int(NOW - 50) * NS
    lines = [b"diskio,host=v,name=sda read_bytes=0i,write_bytes=0i %d" % ts,
             b"diskio,host=v,name=sda read_bytes=%di,write_bytes=10i %d" % (10**400, ts + 5 * NS),
             b"cpu,host=v,cpu=cpu-total usage_idle=90 %d" % ts,
             b"mem,host=v available_percent=50 %d" % ts]
    counts, records = decoder_ran(InfluxDecoder(), [b"\n".join(lines)])
    assert counts["out_of_range"] == 1 and counts[USED] == 3
    assert [(r.cpu, r.mem, r.disk_w) for r in records] == [(10.0, 50.0, 2.0)]


def test_memory_parts_under_a_mib_are_refused_as_a_telegraf_total_is():
    """used 1 KiB and free 3 KiB: mem_mb was clamped up to 1, where Telegraf's ``total`` of
    4096 bytes (0 MiB) is refused as out of range; the mem share itself is kept."""
    ts = NOW - 30
    assembler = MinuteAssembler()
    assembler.add([Sample("v", ts, "cpu", "", 1.0), Sample("v", ts, MEM_PART, "used", 1024.0),
                   Sample("v", ts, MEM_PART, "free", 3072.0)], NOW, Tally())
    assembler.complete_all()
    (record,) = assembler.take()
    assert (record.mem, record.mem_mb) == (25.0, None)
    assert assembler.events["out_of_range"] == 1


def test_an_infinite_cpu_state_rate_is_refused():
    """BIG jiffies in 1 us: the rate was inf (no bound but inf), and the minute 100 % busy."""
    kind = CPU_STATE + TOTAL
    samples = [Sample("v", NOW - 40, kind, "0:user", 0.0), Sample("v", NOW - 40, kind, "0:idle", 0),
               Sample("v", NOW - 40 + 1e-6, kind, "0:user", BIG),  # inf jiffies a second
               Sample("v", NOW - 30, kind, "0:idle", 10),
               Sample("v", NOW - 30, "mem", "", 5.0)]
    seen = same([(samples, NOW)])
    assert [reason for _i, reason, _d in seen[0]["refused"]] == ["out_of_range"]


def test_memory_parts_whose_share_overflows_give_a_finite_mem():
    """used 1.7e308 of 1.7e308 + 1e300: 100 * used was inf, and mem=inf went to the ingest."""
    for parts, mem in (((("used", 1.7e308), ("free", 1e300)), 100.0),
                       ((("used", 1e300), ("free", 1e300)), 50.0),
                       ((("used", 5e-324), ("free", 5e-324)), 50.0),
                       ((("used", 1.7e308), ("free", 1.7e308)), None)):
        samples = [Sample("v", NOW - 30, "cpu", "", 1.0)]
        samples += [Sample("v", NOW - 30, MEM_PART, name, value) for name, value in parts]
        ended = []
        for native in (True, False):
            assembler = MinuteAssembler()
            if not native:
                assembler.native = None
            assembler.add(samples, NOW, Tally())
            assembler.complete_all()
            ended.append((assembler.take(), dict(assembler.events)))
        assert ended[0] == ended[1]
        records, _events = ended[0]
        assert [record.mem for record in records] == ([mem] if mem is not None else [])
        for record in records:
            assert_writable(record)


def test_fields_each_sample_kept_within_but_the_minute_did_not_are_left_empty():
    """Summed rates past 1e15, 5,000 CPUs counted, memory parts past 2^32 MiB: the native
    ingest refused such a record whole (cpu and mem lost with it); now the field is empty."""
    ts = NOW - 30
    samples = ([Sample("v", ts, CPU_STATE, "%d:idle" % cpu, 50.0) for cpu in range(5000)]
               + [Sample("v", ts, "net_rx", "eth%d" % k, 1e15) for k in range(3)]
               + [Sample("v", ts, "disk_w", "vda", 1e15)]
               + [Sample("v", ts, MEM_PART, "used", 1e300), Sample("v", ts, MEM_PART, "free", 1e300)])
    assembler = MinuteAssembler()
    assembler.add(samples, NOW, Tally())
    assembler.complete_all()
    (record,) = assembler.take()
    assert_writable(record)
    assert (record.cpu, record.mem, record.disk_w) == (0.0, 50.0, 1e15)
    assert record.net_rx is None and record.vcpus is None and record.mem_mb is None
    assert assembler.events["out_of_range"] == 3


def test_cpu_states_summing_past_a_double_say_nothing():
    """Many CPUs' finite rates can sum to inf: idle / inf made such a second 100 % busy."""
    states = [Sample("v", NOW - 20, CPU_STATE, "0:user", 100.0), Sample("v", NOW - 20, "mem", "", 1)]
    assembler = MinuteAssembler()
    assembler.add(states, NOW, Tally())
    assembler.open["v"][int(NOW)].states[int(NOW - 20)][1] = math.inf  # as many sums would make
    assembler.complete_all()
    assert assembler.take() == [] and assembler.events["out_of_range"] == 1


def test_a_percentage_past_a_double_is_out_of_range_not_syntax():
    counts, records = decoder_ran(InfluxDecoder(), [
        b"mem,host=v available_percent=%di,total=1073741824i %d" % (10**400, (NOW - 5) * NS)])
    assert counts == {"out_of_range": 1, USED: 0, "ignored": 0}
    assert records == []


# -- properties, format by format -------------------------------------------------------------
TELEGRAF = st.sampled_from([
    ("cpu,cpu=cpu-total", "usage_idle"), ("cpu,cpu=cpu-total", "usage_iowait"),
    ("mem", "available_percent"), ("mem", "used_percent"), ("mem", "total"),
    ("diskio,name=sda", "read_bytes"), ("diskio,name=vda", "write_bytes"),
    ("net,interface=eth0", "bytes_recv"), ("net,interface=eth1", "bytes_sent"),
    ("system", "n_cpus")])


@SETTINGS
@given(st.lists(st.tuples(TELEGRAF, st.one_of(FLOATS, INTS), st.booleans(), OFFSETS,
                          st.sampled_from(["v1", "v2"])), min_size=1, max_size=25))
def test_line_protocol_with_extreme_numbers(lines):
    payload = []
    for (measurement, field), value, unsigned, offset, vm in lines:
        text = text_of(value)
        if unsigned and isinstance(value, int) and value >= 0:
            text = "%du" % value
        stamp = int((NOW + offset) * NS) if abs(offset) < 1e9 else int(offset) * NS
        stamp = max(min(stamp, 10**19 - 1), -(10**19) + 1)
        payload.append("%s,host=%s %s=%s %d" % (measurement, vm, field, text, stamp))
    data = "\n".join(payload).encode()
    counts, _records = decoder_ran(InfluxDecoder(), [data])
    assert sum(counts.values()) == len(lines)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["servers.{}.cpu", "servers.{}.mem", "servers.{}.vcpus",
                                           "servers.{}.mem_mb", "servers.{}.net.eth0.rx",
                                           "servers.{}.disk.sda.rate"]),
                          FLOATS, OFFSETS), min_size=1, max_size=25))
def test_graphite_with_extreme_numbers_and_times(lines):
    templates = parse_templates(["servers.{vm}.net.{device}.rx net_rx:counter",
                                 "servers.{vm}.disk.{device}.rate disk_r",
                                 "servers.{vm}.{field}"])
    data = "\n".join("%s %r %r" % (path.format("v"), value, NOW + offset)
                     for path, value, offset in lines).encode()
    counts, _records = decoder_ran(GraphiteDecoder(templates), [data])
    assert sum(counts.values()) == len(lines)


def value_list(plugin: str, instance: str, type_: str, type_instance: str,
               values: list[tuple[int, float]]) -> bytes:
    return (cd.part_string(cd.PLUGIN, plugin) + cd.part_string(cd.PLUGIN_INSTANCE, instance)
            + cd.part_string(cd.TYPE, type_) + cd.part_string(cd.TYPE_INSTANCE, type_instance)
            + cd.part_values(values))


U64 = st.one_of(st.sampled_from([0, 1, 2**32 - 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
S64 = st.one_of(st.sampled_from([-(2**63), -1, 2**63 - 1]), st.integers(-(2**63), 2**63 - 1))
COLLECTD = st.one_of(
    st.tuples(st.just("memory"), st.just(""), st.just("memory"),
              st.sampled_from(["used", "free", "cached", "buffered"]),
              FLOATS.map(lambda v: [(cd.GAUGE, v)])),
    st.tuples(st.just("memory"), st.just(""), st.just("percent"), st.just("used"),
              FLOATS.map(lambda v: [(cd.GAUGE, v)])),
    st.tuples(st.just("cpu"), st.integers(0, 6000).map(str), st.just("cpu"),
              st.sampled_from(["user", "idle", "wait"]),
              st.one_of(U64.map(lambda v: [(cd.COUNTER, v)]), S64.map(lambda v: [(cd.DERIVE, v)]))),
    st.tuples(st.just("cpu"), st.integers(0, 6000).map(str), st.just("percent"),
              st.sampled_from(["user", "idle", "active"]), FLOATS.map(lambda v: [(cd.GAUGE, v)])),
    st.tuples(st.just("interface"), st.sampled_from(["eth0", "eth1"]), st.just("if_octets"),
              st.just(""), st.tuples(U64, U64).map(lambda p: [(cd.COUNTER, p[0]), (cd.COUNTER, p[1])])),
    st.tuples(st.just("disk"), st.sampled_from(["vda", "sda"]), st.just("disk_octets"), st.just(""),
              st.tuples(S64, S64).map(lambda p: [(cd.DERIVE, p[0]), (cd.DERIVE, p[1])])))
#: Times in collectd's high-resolution unit (2^-30 s): 1 unit apart, at the window's edges.
HR_TIMES = st.one_of(st.sampled_from([0, 1, 2**64 - 1]),
                     OFFSETS.map(lambda o: int((NOW + o) * 2**30) if abs(o) < 1e9 else 1),
                     st.integers(int((NOW - 60) * 2**30), int((NOW + 1) * 2**30)))


@SETTINGS
@given(st.lists(st.tuples(HR_TIMES, st.lists(COLLECTD, min_size=1, max_size=6)), min_size=1,
                max_size=6))
def test_collectd_with_extreme_values_times_and_many_cpus(packets):
    payloads = []
    value_lists = 0
    for hr_time, lists in packets:
        packet = cd.part_string(cd.HOST, "v") + struct.pack("!HHQ", cd.TIME_HR, 12, hr_time)
        packet += b"".join(value_list(*one) for one in lists)
        payloads.append(packet)
        value_lists += len(lists)
    counts, _records = decoder_ran(cd.CollectdDecoder(), payloads)
    assert sum(counts.values()) == value_lists


def test_collectd_many_cpus_and_memory_summing_past_a_double():
    ts = int((NOW - 30) * 2**30)
    packets = []
    for second in range(2):
        packet = cd.part_string(cd.HOST, "v") + struct.pack("!HHQ", cd.TIME_HR, 12,
                                                           ts + second * 2**30)
        packet += b"".join(value_list("cpu", str(cpu), "cpu", state, [(cd.COUNTER, 2**64 - 1 - second)])
                           for cpu in range(600) for state in ("user", "idle"))
        packet += b"".join(value_list("memory", "", "memory", kind, [(cd.GAUGE, 1.7e308)])
                           for kind in ("used", "free"))
        packets.append(packet)
    counts, records = decoder_ran(cd.CollectdDecoder(), packets)
    assert sum(counts.values()) == 2 * (1200 + 2)
    assert records == []  # no memory second is usable: no mem, no record


# -- the assembler fed directly ---------------------------------------------------------------
KINDS = ["cpu", "mem", "mem_mb", "vcpus", "disk_r", "net_tx", "disk_r" + TOTAL, "net_rx" + TOTAL,
         CPU_STATE, CPU_STATE + TOTAL, MEM_PART]
SAMPLES = st.lists(st.builds(
    Sample, st.sampled_from(["a", "b"]), OFFSETS.map(lambda o: NOW + o), st.sampled_from(KINDS),
    st.sampled_from(["", "sda", "vda", "eth0", "eth1", "0:idle", "1:user", "2:wait", "used",
                     "free"]),
    st.one_of(FLOATS, INTS)), max_size=40)


@SETTINGS
@given(st.lists(st.tuples(SAMPLES, st.sampled_from([NOW - 100, NOW, NOW + 1e-9, NOW + 120])),
                min_size=1, max_size=3), st.sampled_from([0, 60]))
def test_the_minutes_with_extreme_samples_agree_and_write_what_the_ingest_takes(batches, max_past):
    for one in same(batches, max_past=max_past):
        assert not one["error"], one["error"]
        for record in one["records"]:
            assert_writable(record)
    assembler = MinuteAssembler(max_past=max_past)
    for samples, now in batches:
        tally, refused = Tally(), []
        assembler.add(samples, now, tally, refused)
        assert len({index for index, _r, _d in refused}) == len(refused)
    assembler.complete_all()
    for record in assembler.take():
        assert_writable(record)


def test_memory_parts_past_a_double_count_the_second_out_of_range_in_both_assemblers():
    """Integer parts float() cannot take (and their sums with floats) once raised OverflowError
    out of the minute's record: the second is out of range, the minute without memory."""
    for used, free in [(10**400, 1), (1, 10**400), (2 * 10**308, 1.0), (10**400, 5 - 10**400)]:
        batch = [Sample("a", NOW, "cpu", "", 5.0), Sample("a", NOW, MEM_PART, USED, used),
                 Sample("a", NOW, MEM_PART, "free", free)]
        assembler = MinuteAssembler(max_past=60)
        assembler.add(batch, NOW, Tally(), [])
        assembler.complete_all()
        assert assembler.take() == [] and assembler.events["out_of_range"] == 1, (used, free)
        same([(batch, NOW)], max_past=60)


# -- through a real server ----------------------------------------------------------------------
def nasty_influx(vm: str, t0: int) -> list[bytes]:
    """Telegraf-shaped lines (seconds precision) with the numbers above that broke things."""
    return [b"diskio,host=%s,name=sda read_bytes=0i,write_bytes=0i %d" % (vm, t0 + 1),
            b"diskio,host=%s,name=sda read_bytes=%di,write_bytes=7i %d" % (vm, 10**400, t0 + 2),
            b"net,host=%s,interface=eth0 bytes_recv=0u %d" % (vm, t0 + 1),
            b"net,host=%s,interface=eth0 bytes_recv=18446744073709551615u %d" % (vm, t0 + 3),
            b"mem,host=%s available_percent=%di %d" % (vm, 10**400, t0 + 2),
            b"mem,host=%s available_percent=5e-324,total=1.7976931348623157e308 %d" % (vm, t0 + 2),
            b"cpu,host=%s,cpu=cpu-total usage_idle=5e-324,usage_iowait=100 %d" % (vm, t0 + 2),
            b"system,host=%s n_cpus=18446744073709551616u %d" % (vm, t0 + 2),
            b"cpu,host=%s,cpu=cpu-total usage_idle=1 -9223372036" % vm,
            b"cpu,host=%s,cpu=cpu-total usage_idle=1 9999999999" % vm]


def in_ns(lines: list[bytes]) -> list[bytes]:
    """``lines`` stamped in nanoseconds, as the line-protocol port reads them."""
    out = []
    for line in lines:
        head, stamp = line.rsplit(b" ", 1)
        out.append(b"%s %d" % (head, int(stamp) * NS))
    return out


def nasty_collectd(vm: str, t0: int) -> list[bytes]:
    """The sanitizer run's memory (two parts of 1.7e308), a counter that jumps by 2^64 - 1 in a
    second, and a second of memory parts past 2^32 MiB."""
    packets = []
    for step, (used, free) in enumerate(((1.7e308, 1.7e308), (1e300, 1e300))):
        hr = (t0 + 10 + step) * 2**30
        packets.append(
            cd.part_string(cd.HOST, vm) + struct.pack("!HHQ", cd.TIME_HR, 12, hr)
            + value_list("memory", "", "memory", "used", [(cd.GAUGE, used)])
            + value_list("memory", "", "memory", "free", [(cd.GAUGE, free)])
            + value_list("interface", "eth0", "if_octets", "",
                         [(cd.COUNTER, (2**64 - 1) * step), (cd.COUNTER, 0)])
            + value_list("cpu", "0", "percent", "active", [(cd.GAUGE, 5e-324)]))
    return packets


def nasty_graphite(vm: str, t0: int) -> list[bytes]:
    return [b"servers.%s.net.eth0.rx 0 %d" % (vm, t0 + 1),
            b"servers.%s.net.eth0.rx 1.7976931348623157e308 %r" % (vm, t0 + 1.000001),
            b"servers.%s.cpu 5e-324 %d" % (vm, t0 + 2), b"servers.%s.mem 1e308 %d" % (vm, t0 + 2),
            b"servers.%s.mem 100 1e308" % vm, b"servers.%s.mem 100 -1e308" % vm,
            b"servers.%s.mem_mb 1.7976931348623157e308 %d" % (vm, t0 + 2)]


def test_the_nastiest_numbers_on_every_port_stop_nothing(tmp_path):
    """Sent over each port, they are all counted, the server logs no traceback, a calm VM's
    minute sent after them is still completed by the clock, and what is written is finite."""
    import time

    from serverproc import serve
    from test_formats_server import edge, minute_lines, post
    from test_server_udp import logged

    t0 = (int(time.time()) - 3600) // 60 * 60
    with serve(tmp_path, "--flush-interval", "0.3", "--minute-grace", "1s",
               "--influx-port", "0", "--collectd-port", "0", "--graphite-port", "0",
               "--graphite-template", "servers.{vm}.net.{device}.rx net_rx:counter",
               "--graphite-template", "servers.{vm}.{field}") as server:
        influx, graphite = server.status["influx_port"], server.status["graphite_port"]
        server.send_udp_to(influx, *in_ns(nasty_influx(b"lp-udp", t0)[:-2]))
        with server.tcp_to(influx) as sock:
            sock.sendall(b"\n".join(in_ns(nasty_influx(b"lp-tcp", t0))) + b"\n")
        status, _text = post(server, "/write?precision=s", b"\n".join(nasty_influx(b"lp-http", t0)))
        assert status == 400
        server.send_udp_to(server.status["collectd_port"], *nasty_collectd("cd-udp", t0))
        server.send_udp_to(graphite, *nasty_graphite(b"gr-udp", t0))
        with server.tcp_to(graphite) as sock:
            sock.sendall(b"\n".join(nasty_graphite(b"gr-tcp", t0)) + b"\n")
        sent = {"influx": 8 + 10 + 10, "collectd": 2 * 4, "graphite": 2 * 7}
        server.wait_metrics(lambda m: all(
            sum(v for k, v in m.items() if k.startswith('vmstats_edge_lines_total{format="%s"'
                                                         % name)) == count
            for name, count in sent.items()))
        # Then a calm VM: its minute is completed by the clock, so the clock still runs.
        server.send_udp_to(influx, b"\n".join(minute_lines("calm", t0 * NS, 10 * NS)))
        metrics = server.wait_metrics(
            lambda m: m.get("vmstats_records_received_total", 0) >= 1
            and edge(m, "influx", "used") >= 19 + 1 and not m.get("vmstats_edge_open_minutes"),
            timeout=20)
        assert not any(k.startswith("vmstats_rejected_total") and v
                       for k, v in metrics.items()), metrics  # the ingest took every record
        assert edge(metrics, "influx", "out_of_range") > 0 and edge(metrics, "graphite", "out_of_range") > 0
        assert edge(metrics, "collectd", "out_of_range") > 0
        assert metrics['vmstats_edge_events_total{event="out_of_range"}'] >= 2  # the memory
    assert server.returncode == 0, server.output
    assert "Traceback" not in server.output and "Unhandled" not in server.output, server.output
    assert list(logged(tmp_path / "data", "calm")["ts"]) == [t0 + 60]
    for vm in ("lp-udp", "lp-tcp", "lp-http", "cd-udp", "gr-udp", "gr-tcp", "calm"):
        if (tmp_path / "data" / "vms" / vm).exists():
            rows = logged(tmp_path / "data", vm)
            numbers = rows.select_dtypes("number").astype("float64")
            assert not numbers.isin([math.inf, -math.inf]).any().any(), (vm, rows)
