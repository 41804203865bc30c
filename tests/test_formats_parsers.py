"""Each format's decoder against its own documentation's examples, edge cases included."""

import gzip
import math

import pytest

from vmstats import protocol
from vmstats.server.formats import Sample, Tally
from vmstats.server.formats import collectd as cd
from vmstats.server.formats.graphite import GraphiteDecoder, parse_templates
from vmstats.server.formats.influx import InfluxDecoder
from vmstats.server.formats.lineprotocol import LineError, parse_line, typed
from vmstats.server.formats.minutes import MinuteAssembler
from vmstats.server.formats.rates import CounterRates

NOW = 1732262400.0


def point(line: bytes):
    measurement, tags, fields, ts = parse_line(line)
    return measurement, tags, {k: typed(v) for k, v in fields.items()}, ts


# -- InfluxDB line protocol (the InfluxDB line protocol reference's examples) ------------------
def test_line_protocol_reference_examples():
    assert point(b'myMeasurement,tag1=value1,tag2=value2 fieldKey="fieldValue" 1556813561098000000') \
        == (b"myMeasurement", {b"tag1": b"value1", b"tag2": b"value2"}, {b"fieldKey": "fieldValue"},
            1556813561098000000)
    # Field types: float, integer, unsigned, booleans in every spelling, string.
    _m, _t, fields, ts = point(b"m a=1.0,b=1,c=-1.234456e+78,d=1i,e=12485903u,f=true,g=t,h=F,"
                               b'i=FALSE,j="x y=z, w"')
    assert fields == {b"a": 1.0, b"b": 1.0, b"c": -1.234456e+78, b"d": 1, b"e": 12485903,
                      b"f": True, b"g": True, b"h": False, b"i": False, b"j": "x y=z, w"}
    assert ts is None  # no timestamp: the receiver's time


def test_line_protocol_escapes():
    assert point(rb'my\ Measurement fieldKey="string value"')[0] == b"my Measurement"
    assert point(rb"myMeasurement,tag\ Key1=tag\ Value1,tag\,Key2=tag\,Value2 fieldKey=100")[1] \
        == {b"tag Key1": b"tag Value1", b"tag,Key2": b"tag,Value2"}
    assert point(rb'myMeasurement fieldKey="\"string\" within a string"')[2] \
        == {b"fieldKey": '"string" within a string'}
    assert point(rb'myMeasurement fieldKey="back\\slash",k\=ey=1i 5')[2] \
        == {b"fieldKey": "back\\slash", b"k=ey": 1}
    assert point(rb'"myMeasurement" fieldKey=1')[0] == b'"myMeasurement"'  # quotes are literal


@pytest.mark.parametrize("line, reason", [
    (b"m", "syntax"), (b"m,t=1", "syntax"), (b"m f=", "syntax"), (b"m f=1 x", "syntax"),
    (b"m f=1 1 2", "syntax"), (b"m f=1_0", "syntax"), (b"m f=nan", "syntax"),
    (b'm f="unterminated', "syntax"), (b"m,t f=1", "syntax"), (b" f=1", "syntax"),
    (b"m f=1.5i", "syntax"), (b"m f=-1u", "syntax"),
])
def test_line_protocol_rejects_what_the_reference_does_not_allow(line, reason):
    with pytest.raises(LineError) as caught:
        parse_line(line)
    assert caught.value.reason == reason


@pytest.mark.parametrize("precision, stamp, seconds", [
    ("ns", 1556813561098000000, 1556813561.098), ("us", 1556813561098000, 1556813561.098),
    ("ms", 1556813561098, 1556813561.098), ("s", 1556813561, 1556813561.0),
    ("m", 25946892, 1556813520.0), ("h", 432448, 1556812800.0)])
def test_timestamp_precision(precision, stamp, seconds):
    decoder = InfluxDecoder(precision=precision)
    samples = decoder.decode(b"system,host=vm1 n_cpus=4i %d" % stamp, NOW, Tally())
    assert samples == [Sample("vm1", pytest.approx(seconds), "vcpus", "", 4)]


# -- Telegraf's inputs (their READMEs' example lines) ------------------------------------------
TELEGRAF = b"""\
cpu,cpu=cpu0,host=loaner usage_idle=86.8,usage_iowait=0,usage_user=8.6 1527612010000000000
cpu,cpu=cpu-total,host=loaner usage_active=13.2,usage_guest=0,usage_guest_nice=0,usage_idle=86.8,\
usage_iowait=1.2,usage_irq=0,usage_nice=0,usage_softirq=0.2,usage_steal=0,usage_system=4.4,\
usage_user=8.6 1527612010000000000
mem,host=loaner active=9299595264i,available=16818249728i,available_percent=80.41654254645131,\
buffered=2383761408i,cached=13316689920i,free=1877688320i,total=20913917952i,used=3335781376i,\
used_percent=15.95004011996231 1527612010000000000
diskio,host=loaner,name=sda1 merged_reads=0i,reads=2353i,writes=10i,write_bytes=2117632i,\
write_time=49i,io_time=1271i,weighted_io_time=1350i,read_bytes=31350272i,read_time=1303i,\
iops_in_progress=0i 1527612010000000000
net,interface=eth0,host=loaner bytes_sent=451838509i,bytes_recv=3284081640i,packets_sent=2663590i,\
packets_recv=3585442i,err_in=0i,err_out=0i,drop_in=4i,drop_out=0i 1527612010000000000
net,interface=lo,host=loaner bytes_sent=1i,bytes_recv=1i 1527612010000000000
net,interface=all,host=loaner icmp_inaddrmaskreps=0i,tcp_activeopens=4i 1527612010000000000
system,host=loaner load1=3.72,load5=2.4,load15=2.1,n_users=3i,n_cpus=4i 1527612010000000000
system,host=loaner uptime=1249632i 1527612010000000000
system,host=loaner uptime_format="14 days, 11:07" 1527612010000000000
swap,host=loaner free=1i,total=2i 1527612010000000000
"""


def test_telegraf_inputs_map_onto_vmstats_fields():
    tally = Tally()
    samples = InfluxDecoder().decode(TELEGRAF, NOW, tally)
    ts = 1527612010.0
    assert samples == [
        Sample("loaner", ts, "cpu", "", pytest.approx(100 - 86.8 - 1.2)),
        Sample("loaner", ts, "mem", "", pytest.approx(100 - 80.41654254645131)),
        Sample("loaner", ts, "mem_mb", "", 20913917952 // 2**20),
        Sample("loaner", ts, "disk_r_total", "sda1", 31350272),
        Sample("loaner", ts, "disk_w_total", "sda1", 2117632),
        Sample("loaner", ts, "net_rx_total", "eth0", 3284081640),
        Sample("loaner", ts, "net_tx_total", "eth0", 451838509),
        Sample("loaner", ts, "vcpus", "", 4)]
    # Per-CPU lines, loopback, the 'all' protocol counters, uptime and swap: ignored, counted.
    assert tally.counts == {"used": 5, "ignored": 6}


def test_influx_lines_without_the_vm_tag_or_with_a_bad_one_are_counted():
    tally = Tally()
    errors: list = []
    data = (b"system n_cpus=2i\nsystem,host=../etc n_cpus=2i\nsystem,host=ok n_cpus=2i\n"
            b"system,host=ok n_cpus=\"two\"\ngarbage\n")
    samples = InfluxDecoder().decode(data, NOW, tally, errors=errors)
    assert samples == [Sample("ok", NOW, "vcpus", "", 2)]  # no timestamp: now
    assert tally.counts == {"missing_vm": 1, "bad_vm_id": 1, "used": 1, "field_type": 1,
                            "syntax": 1, "ignored": 0}
    assert [number for number, _message in errors] == [1, 2, 4, 5]


# -- counters to rates -------------------------------------------------------------------------
def counter(rates, ts, value, device="eth0"):
    return rates.rate(Sample("vm", ts, "net_rx_total", device, value))


def test_first_sample_primes_then_rates_per_second():
    rates = CounterRates()
    assert counter(rates, 0, 1000) is None
    assert counter(rates, 10, 2000) == Sample("vm", 10, "net_rx", "eth0", 100.0)
    assert rates.events["primed"] == 1


def test_every_drop_is_a_restart_never_a_wrap():
    # Before: a drop from the upper half of the 32-bit range was read as a wrap, so a 64-bit VM
    # rebooted with 3e9 bytes on its NIC's counter read as 1.29 GB moved in 10 s.
    rates = CounterRates()
    counter(rates, 0, 3_000_000_000)
    assert counter(rates, 10, 50_000) is None  # rebooted: primed again, no rate
    assert counter(rates, 20, 60_000).value == 1000.0
    counter(rates, 0, 2**32 - 1000, "eth1")  # a 32-bit kernel's wrap costs one interval
    assert counter(rates, 10, 1000, "eth1") is None
    assert counter(rates, 20, 3000, "eth1").value == 200.0
    counter(rates, 0, 2**64 - 10, "big")
    assert counter(rates, 10, 90, "big") is None
    assert rates.events["restarted"] == 3 and "wrapped" not in rates.events


def test_out_of_order_stale_and_bounded_state():
    rates = CounterRates(max_counters=2, max_gap=100)
    counter(rates, 10, 100)
    assert counter(rates, 10, 150) is None and counter(rates, 5, 50) is None
    assert counter(rates, 500, 900) is None  # a gap longer than max_gap primes again
    assert counter(rates, 510, 1000).value == 10.0
    counter(rates, 0, 1, "eth1")
    counter(rates, 0, 1, "eth2")  # the third counter forgets the least recently updated one
    assert len(rates) == 2 and rates.events["forgotten"] == 1
    assert rates.events["out_of_order"] == 2 and rates.events["stale"] == 1


# -- minutes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("now", [NOW, NOW + 0.7, NOW + 17.2, NOW + 59.9])
def test_a_sample_is_taken_only_if_its_minutes_record_will_pass_the_future_check(now):
    """A minute ends up to 59 s after its samples and is filed later still: a sample whose
    minute would end past now + --max-future is refused when it comes, never acknowledged and
    then refused by the native check when its minute is filed."""
    edge = (int(now) + 300) // 60 * 60  # the last stamp whose minute ends within the window
    for ts, taken in ((edge, True), (edge + 0.001, False), (now + 299, now + 299 <= edge)):
        assembler = MinuteAssembler(max_future=300)
        tally = Tally()
        assembler.add([Sample("vm", ts, "cpu", "", 5.0), Sample("vm", ts, "mem", "", 6.0)], now, tally)
        assembler.complete_all()
        records = assembler.take()
        assert bool(records) == taken, (ts, tally.counts)
        if taken:  # filed as late as the minute's end: the ingest's own check takes it
            line = protocol.encode_record(records[0])
            assert protocol.Decoder(max_future=300).decode_line(line, now=now).ts == records[0].ts
        else:
            assert tally.counts["future_timestamp"] == 2


def test_a_partial_minute_leaves_unknown_fields_empty_never_zero():
    assembler = MinuteAssembler()
    tally = Tally()
    assembler.add([Sample("vm", NOW + 10, "cpu", "", 20.0), Sample("vm", NOW + 20, "cpu", "", 40.0),
                   Sample("vm", NOW + 20, "mem", "", 50.0),
                   Sample("vm", NOW + 20, "net_rx_total", "eth0", 100)], NOW + 30, tally)
    assembler.complete_all()
    [record] = assembler.take()
    assert (record.ts, record.cpu, record.cpu_max, record.mem) == (NOW + 60, 30.0, 40.0, 50.0)
    assert record.net_rx is None and record.disk_r is None and record.vcpus is None


def test_a_minute_without_mem_is_counted_incomplete_and_late_samples_are_counted():
    assembler = MinuteAssembler(grace=5)
    tally = Tally()
    assembler.add([Sample("vm", NOW + 10, "cpu", "", 20.0)], NOW + 10, tally)
    # A sample well past the minute's end completes it (the sender moved on).
    assembler.add([Sample("vm", NOW + 70, "cpu", "", 1.0), Sample("vm", NOW + 70, "mem", "", 1.0)],
                  NOW + 70, tally)
    assert assembler.take() == [] and assembler.events["incomplete"] == 1
    assembler.add([Sample("vm", NOW + 30, "cpu", "", 20.0)], NOW + 71, tally)
    assert tally.counts["late"] == 1
    assembler.tick(NOW + 200)
    assert [r.ts for r in assembler.take()] == [NOW + 120]


def test_device_rates_are_each_averaged_then_summed_partitions_left_out():
    assembler = MinuteAssembler()
    samples = [Sample("vm", NOW + 5, "cpu", "", 1.0), Sample("vm", NOW + 5, "mem", "", 1.0)]
    for ts, value in ((NOW, 0), (NOW + 10, 1000), (NOW + 20, 3000)):
        for device in ("sda", "sda1", "vdb"):
            samples.append(Sample("vm", ts, "disk_r_total", device, value))
    assembler.add(samples, NOW + 30, Tally())
    assembler.complete_all()
    record = [r for r in assembler.take() if r.disk_r is not None][0]
    assert record.disk_r == 2 * (100 + 200) / 2  # sda and vdb: mean 150 each


@pytest.mark.parametrize("kind, value, kept", [
    ("cpu", 100.4, 100.0), ("cpu", -0.9, 0.0), ("mem", 100.00000001, 100.0),  # rounding: clamped
    ("cpu", 101.5, None), ("cpu", -50.0, None), ("mem", 150.0, None), ("cpu", math.nan, None),
    ("cpu_state", 102.0, None), ("cpu_state", -3.0, None), ("mem_part", -1.0, None),
    ("vcpus", 0, None), ("vcpus", 5000, None), ("mem_mb", -2048, None), ("net_rx", -1.0, None),
    ("net_rx", 2e15, None), ("disk_r_total", -5, None), ("cpu_state_total", -1, None),
])
def test_the_minutes_clamp_rounding_and_refuse_impossible_values(kind, value, kept):
    assembler, refused = MinuteAssembler(), []
    assembler.add([Sample("vm1", NOW, kind, "0:idle", value)], NOW, Tally(), refused)
    if kept is None:
        assert [(index, reason) for index, reason, _detail in refused] == [(0, "out_of_range")]
        assert not assembler.open
    else:
        [minute] = assembler.open["vm1"].values()
        assert refused == []
        assert (getattr(minute, kind + "_sum"), getattr(minute, kind + "_count")) == (kept, 1)


def test_open_minutes_are_bounded():
    assembler = MinuteAssembler(max_open=10)
    assembler.add([Sample("vm%d" % i, NOW, "cpu", "", 1.0) for i in range(50)], NOW, Tally())
    assert assembler.open_count <= 10 and assembler.events["forced"] == 40


def test_a_moments_samples_go_to_its_minute_until_it_is_forced_out():
    """The samples of one VM and time share a minute found once; once the cap forces that
    minute out, the moment's next sample is late, never filed into the minute written."""
    assembler, refused = MinuteAssembler(max_open=1), []
    assembler.add([Sample("a", NOW, "cpu", "", 1.0), Sample("a", NOW, "mem", "", 2.0),
                   Sample("a", NOW, "cpu", "", 3.0), Sample("b", NOW, "cpu", "", 4.0),
                   Sample("a", NOW, "mem", "", 5.0), Sample("b", NOW, "mem", "", 6.0)],
                  NOW, Tally(), refused)
    [forced] = assembler.take()
    assert (forced.vm, forced.cpu, forced.cpu_max, forced.mem) == ("a", 2.0, 3.0, 2.0)
    assert [(index, reason) for index, reason, _detail in refused] == [(4, "late")]
    [minute] = assembler.open["b"].values()
    assert (minute.cpu_sum, minute.mem_sum) == (4.0, 6.0)


def test_a_checkpoint_of_samples_in_lists_loads_into_the_same_records():
    """A server upgraded over a checkpoint that held each minute's cpu and mem samples as
    lists completes those minutes as the one before it would have; its own checkpoints
    load back unchanged."""
    samples = [Sample("vm", NOW + 10, "cpu", "", 20.1), Sample("vm", NOW + 20, "cpu", "", 40.7),
               Sample("vm", NOW + 20, "mem", "", 50.3), Sample("vm", NOW + 20, "vcpus", "", 2),
               Sample("vm", NOW + 10, "net_rx", "eth0", 100.0),
               Sample("vm", NOW + 20, "net_rx", "eth0", 300.0)]
    fed = MinuteAssembler()
    fed.add(samples, NOW + 30, Tally())
    state = fed.state()
    assert MinuteAssembler().load(state) is None and state == fed.state()
    lists = MinuteAssembler()
    lists.load({"open": [["vm", NOW + 60, [NOW + 30, [20.1, 40.7], [50.3], None, 2,
                                          {"net_rx": {"eth0": [400.0, 2]}}, None, None]]],
                "written": [], "newest": [["vm", NOW + 20]], "counters": []})
    again = MinuteAssembler()
    again.load(state)
    for assembler in (fed, lists, again):
        assembler.complete_all()
    [record] = fed.take()
    assert lists.take() == again.take() == [record]
    assert (record.cpu, record.cpu_max, record.mem, record.net_rx) == (30.4, 40.7, 50.3, 200.0)


# -- collectd's binary protocol (collectd's network protocol description) ----------------------
def value_list(host, ts, plugin, instance, type_, type_instance, values):
    return (cd.part_string(cd.HOST, host) + cd.part_number(cd.TIME_HR, int(ts * 2**30))
            + cd.part_number(cd.INTERVAL_HR, 10 * 2**30) + cd.part_string(cd.PLUGIN, plugin)
            + cd.part_string(cd.PLUGIN_INSTANCE, instance) + cd.part_string(cd.TYPE, type_)
            + cd.part_string(cd.TYPE_INSTANCE, type_instance) + cd.part_values(values))


def test_collectd_value_lists_of_the_mapped_plugins():
    packet = (value_list("vm1", NOW, "cpu", "0", "cpu", "idle", [(cd.DERIVE, 5000)])
              + value_list("vm1", NOW, "memory", "", "memory", "used", [(cd.GAUGE, 1.5e9)])
              + value_list("vm1", NOW, "interface", "eth0", "if_octets", "",
                           [(cd.DERIVE, 10), (cd.DERIVE, 20)])
              + value_list("vm1", NOW, "interface", "lo", "if_octets", "",
                           [(cd.DERIVE, 10), (cd.DERIVE, 20)])
              + value_list("vm1", NOW, "disk", "sda", "disk_octets", "",
                           [(cd.COUNTER, 7), (cd.COUNTER, 8)])
              + value_list("vm1", NOW, "load", "", "load", "",
                           [(cd.GAUGE, 1.0), (cd.GAUGE, 1.0), (cd.GAUGE, 1.0)]))
    tally = Tally()
    samples = cd.CollectdDecoder().decode(packet, NOW, tally)
    assert samples == [Sample("vm1", NOW, "cpu_state_total", "0:idle", 5000),
                       Sample("vm1", NOW, "mem_part", "used", 1.5e9),
                       Sample("vm1", NOW, "net_rx_total", "eth0", 10),
                       Sample("vm1", NOW, "net_tx_total", "eth0", 20),
                       Sample("vm1", NOW, "disk_r_total", "sda", 7),
                       Sample("vm1", NOW, "disk_w_total", "sda", 8)]
    assert tally.counts == {"used": 4, "ignored": 2}


def test_collectd_parts_carry_over_and_a_truncated_packet_keeps_what_came_before():
    # collectd sends the identity once and only the parts that change before each values part.
    packet = (value_list("vm1", NOW, "cpu", "0", "cpu", "idle", [(cd.DERIVE, 100)])
              + cd.part_string(cd.TYPE_INSTANCE, "user") + cd.part_values([(cd.DERIVE, 50)])
              + cd.part_string(cd.PLUGIN_INSTANCE, "1") + cd.part_values([(cd.DERIVE, 60)]))
    tally = Tally()
    samples = cd.CollectdDecoder().decode(packet, NOW, tally)
    assert [s.device for s in samples] == ["0:idle", "0:user", "1:user"]
    tally = Tally()
    samples = cd.CollectdDecoder().decode(packet[:-5], NOW, tally)
    assert [s.device for s in samples] == ["0:idle", "0:user"]
    assert tally.counts["truncated"] == 1


def test_collectd_jiffies_become_cpu_percent_and_vcpus():
    decoder, assembler, tally = cd.CollectdDecoder(), MinuteAssembler(), Tally()
    jiffies = {"user": 0, "system": 0, "idle": 0, "wait": 0}
    for step in range(3):
        packet = b""
        for cpu in ("0", "1"):
            for state, per_step in (("user", 20), ("system", 5), ("idle", 70), ("wait", 5)):
                value = jiffies[state] + per_step * step
                packet += value_list("vm1", NOW + 10 * step, "cpu", cpu, "cpu", state,
                                     [(cd.DERIVE, value)])
        packet += value_list("vm1", NOW + 10 * step, "memory", "", "memory", "used",
                             [(cd.GAUGE, 1 << 30)])
        packet += value_list("vm1", NOW + 10 * step, "memory", "", "memory", "free",
                             [(cd.GAUGE, 3 << 30)])
        assembler.add(decoder.decode(packet, NOW + 30, tally), NOW + 30, tally)
    assembler.complete_all()
    [record] = [r for r in assembler.take() if r.ts == NOW + 60]
    assert (record.cpu, record.vcpus, record.mem, record.mem_mb) == (25.0, 2, 25.0, 4096)


def test_collectd_signed_packets_and_a_wrong_password():
    packet = value_list("vm1", NOW, "memory", "", "percent", "used", [(cd.GAUGE, 42.0)])
    decoder = cd.CollectdDecoder({"fleet": "s3cret"}, "sign")
    tally = Tally()
    assert decoder.decode(cd.sign(packet, "fleet", "s3cret"), NOW, tally) \
        == [Sample("vm1", NOW, "mem", "", 42.0)]
    for forged in (cd.sign(packet, "fleet", "wrong"), cd.sign(packet, "nobody", "s3cret"),
                   cd.sign(packet, "fleet", "s3cret")[:-9] + packet[-9:-1] + b"\x01"):
        assert decoder.decode(forged, NOW, tally) == []
    assert decoder.decode(packet, NOW, tally) == []  # unsigned where signing is required
    assert tally.counts == {"used": 1, "signature": 3, "unsigned": 1}


def test_collectd_encrypted_packets():
    packet = value_list("vm1", NOW, "memory", "", "percent", "used", [(cd.GAUGE, 42.0)])
    decoder = cd.CollectdDecoder({"fleet": "s3cret"}, "encrypt")
    tally = Tally()
    sealed = cd.encrypt(packet, "fleet", "s3cret", bytes(range(16)))
    assert decoder.decode(sealed, NOW, tally) == [Sample("vm1", NOW, "mem", "", 42.0)]
    assert decoder.decode(cd.encrypt(packet, "fleet", "guess", bytes(16)), NOW, tally) == []
    assert decoder.decode(cd.sign(packet, "fleet", "s3cret"), NOW, tally) == []  # signed < encrypt
    assert tally.counts == {"used": 1, "decrypt": 1, "unsigned": 1}


def test_collectd_gauge_nan_is_counted():
    tally = Tally()
    packet = value_list("vm1", NOW, "memory", "", "percent", "used", [(cd.GAUGE, math.nan)])
    assert cd.CollectdDecoder().decode(packet, NOW, tally) == []
    assert tally.counts == {"non_finite": 1}



def test_collectd_memory_parts_summing_past_a_double_complete_their_minute():
    """Each part finite, their sum not: the minute completes without that second's memory
    (no record: nothing else told its memory) instead of raising, which stopped the edge's
    clock when its tick completed the minute."""
    packet = b"".join(value_list("vm1", NOW - 30, "memory", "", "memory", part, [(cd.GAUGE, big)])
                      for part, big in (("used", 1.7e308), ("free", 1.7e308)))
    packet += value_list("vm1", NOW - 30, "cpu", "0", "percent", "idle", [(cd.GAUGE, 50.0)])
    tally = Tally()
    samples = cd.CollectdDecoder().decode(packet, NOW, tally)
    assert tally.counts == {"used": 3}
    for native in (True, False):
        assembler = MinuteAssembler()
        if not native:
            assembler.native = None
        assembler.add(samples, NOW, Tally())
        assert assembler.tick(NOW + 120) == [("vm1", int(NOW))]
        assert assembler.take() == [] and assembler.events["incomplete"] == 1


# -- Graphite plaintext (Graphite's feeding-carbon documentation) ------------------------------
TEMPLATES = ["servers.{vm}.cpu.percent cpu", "servers.{vm}.memory.used_percent mem",
             "collectd.{vm}.interface-{device}.if_octets.rx net_rx:counter",
             "vmstats.{vm}.{field}"]


def test_graphite_templates_map_paths_onto_vms_and_fields():
    decoder = GraphiteDecoder(parse_templates(TEMPLATES))
    tally = Tally()
    data = (b"servers.web1.cpu.percent 12.5 1732262400\n"
            b"servers.10_0_0_5.memory.used_percent 40 1732262410\n"
            b"collectd.db1.interface-eth0.if_octets.rx 123456 1732262420\n"
            b"vmstats.db1.net_tx 99.5 -1\n"
            b"vmstats.db1.cpu;dc=east 3 1732262400\n"
            b"servers.web1.load.load1 1.0 1732262400\n"
            b"vmstats.db1.bogus 1 1732262400\n"
            b"servers.web1.cpu.percent abc 1732262400\n"
            b"servers.web1.cpu.percent inf 1732262400\n"
            b"servers.-bad.cpu.percent 1 1732262400\n")
    samples = decoder.decode(data, NOW, tally)
    assert samples == [Sample("web1", 1732262400.0, "cpu", "", 12.5),
                       Sample("10.0.0.5", 1732262410.0, "mem", "", 40.0),
                       Sample("db1", 1732262420.0, "net_rx_total", "eth0", 123456.0),
                       Sample("db1", NOW, "net_tx", "", 99.5),
                       Sample("db1", 1732262400.0, "cpu", "", 3.0)]
    assert tally.counts == {"used": 5, "ignored": 2, "syntax": 1, "non_finite": 1, "bad_vm_id": 1}


@pytest.mark.parametrize("text", ["servers.cpu cpu", "servers.{vm}.x nope", "servers.{vm}.x",
                                  "servers.{vm}.x cpu:counter", "a b c"])
def test_bad_graphite_templates_are_refused(text):
    with pytest.raises(ValueError):
        parse_templates([text])


def test_gzip_is_what_the_http_api_unpacks():
    # The HTTP tests send this very body; here only its framing is checked.
    assert gzip.decompress(gzip.compress(TELEGRAF)) == TELEGRAF
