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

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from test_formats_minutes_c import same

from vmstats import protocol
from vmstats.server.formats import CPU_STATE, MEM_PART, TOTAL, USED, Sample, Tally
from vmstats.server.formats.edge import _refused_lines
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


