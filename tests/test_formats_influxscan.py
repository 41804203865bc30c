"""The C reader of Telegraf's lines (vmstats/server/_influxscan.c) against influx.py's Python.

The Python decoder is the reference: on any payload the decoder with the C reader must give
exactly what it gives without it -- the samples (their numbers' types too: an ``i`` value
stays an int), the tally, the reject details, the lines used and the HTTP writer's errors.
The C answers only for payloads it reads whole, so the tests also hold it to taking what
Telegraf sends; it reads untrusted bytes, so it is held to lines damaged at every place and
to random ones.  bin/test builds it, so these tests fail rather than skip where it is missing.
"""

import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmstats.server.formats import Tally, influx
from vmstats.server.formats.influx import InfluxDecoder
from vmstats.server.formats.lineprotocol import FAULTS, LineError, fault, parse_line

NOW = 1732262400.0
STAMP = b"1732262400000000000"
native = influx._native
#: What Telegraf's cpu, mem, diskio, net and system inputs send (every field of their sets).
TELEGRAF = [
    b"cpu,cpu=cpu-total,host=vm1 usage_guest=0,usage_guest_nice=0,usage_idle=87.5,"
    b"usage_iowait=0.5,usage_irq=0,usage_nice=0,usage_softirq=0.1,usage_steal=0,"
    b"usage_system=1.2,usage_user=10.3 " + STAMP,
    b"cpu,cpu=cpu0,host=vm1 usage_idle=80,usage_iowait=1 " + STAMP,
    b"mem,host=vm1 active=1i,available=2147483648i,available_percent=55.5,buffered=1i,"
    b"cached=1i,free=1i,total=4294967296i,used=1i,used_percent=39.5 " + STAMP,
    b"diskio,host=vm1,name=vda io_time=1i,iops_in_progress=0i,merged_reads=0i,"
    b"merged_writes=0i,read_bytes=40960i,read_time=1i,reads=1i,weighted_io_time=1i,"
    b"write_bytes=8192i,write_time=1i,writes=1i " + STAMP,
    b"net,host=vm1,interface=eth0 bytes_recv=12345i,bytes_sent=2345i,drop_in=0i,drop_out=0i,"
    b"err_in=0i,err_out=0i,packets_recv=1i,packets_sent=1i " + STAMP,
    b"net,host=vm1,interface=all icmp_inmsgs=1i " + STAMP,
    b"net,host=vm1,interface=lo bytes_recv=1i,bytes_sent=1i " + STAMP,
    b"system,host=vm1 load1=0.5,load15=0.25,load5=0.3,n_cpus=2i,n_users=1i " + STAMP,
    b"swap,host=vm1 free=1i,total=2i " + STAMP,
]
#: Lines at the edges of what the C reads and what it leaves: numbers of every type and
#: size, missing and repeated fields and tags, stamps, escapes, strings, bad VMs, bad UTF-8.
EDGES = [
    b"cpu,cpu=cpu-total,host=vm2 usage_idle=50i,usage_iowait=0u",
    b"cpu,cpu=cpu-total,host=vm2 usage_idle=-.5e1 -1",
    b"cpu,cpu=cpu-total,host=vm2 usage_idle=100.0000001,usage_iowait=0.0 -0",
    b"cpu,cpu=cpu-total,host=vm2 usage_idle=-50 " + STAMP,
    b"cpu,cpu=cpu-total,host=vm2 usage_idle=1e999 " + STAMP,
    b"cpu,cpu=cpu-total,host=vm2 usage_idle=t " + STAMP,
    b"cpu,cpu=cpu-total,host=vm2 usage_idle=5.,usage_iowait=TRUE " + STAMP,
    b"cpu,cpu=cpu-total,host=vm2 usage_user=5 " + STAMP,
    b"cpu,cpu=cpu-total,host=vm2 usage_idle=1,usage_idle=2,usage_iowait=3E1 " + STAMP,
    b"cpu,cpu=cpu1,cpu=cpu-total,host=vm2,host=vm3 usage_idle=1 " + STAMP,
    b"mem,host=vm2 used_percent=40i,total=-1048577i " + STAMP,
    b"mem,host=vm2 used_percent=40,total=4294967296 " + STAMP,
    b"mem,host=vm2 available_percent=12345678901234567890i " + STAMP,
    b"mem,host=vm2 total=123456789012345678i " + STAMP,
    b"mem,host=vm2 total=1234567890123456789i " + STAMP,
    b"mem,host=vm2 available_percent=0.00000000000000000000000000000000000000001 " + STAMP,
    b"mem,host=vm2 free=1i " + STAMP,
    b"diskio,host=vm2,name=sda1 read_bytes=1.5,write_bytes=2u " + STAMP,
    b"diskio,host=vm2,name=\xc3\xa9\xff read_bytes=1i " + STAMP,
    b"diskio,host=vm2 read_bytes=1i " + STAMP,
    b"net,host=vm2,interface=eth1 bytes_sent=-1i 9999999999999999999",
    b"net,host=vm2,interface=eth1 bytes_sent=1i -9999999999999999999",
    b"net,host=vm2,interface=eth1 bytes_sent=1i 12345678901234567890",
    b"system,host=vm2 n_cpus=2.5 " + STAMP,
    b"system,host=vm2 n_cpus=F " + STAMP,
    b"system n_cpus=2i " + STAMP,
    b"system,host=bad/vm n_cpus=2i " + STAMP,
    b"system,host=\xff n_cpus=2i " + STAMP,
    b"system,host=vm2 n_cpus=2i\r",
    b"system,host=vm2 n_cpus=2i \r",
    b"swap free=1i,name=\"x\" " + STAMP,
    rb"system,host=vm\ 2 n_cpus=2i " + STAMP,
    b'system,host=vm2 n_cpus=2i,note="a b" ' + STAMP,
    b"cpu=x,host=vm2 usage_idle=1 " + STAMP,
    b"system,host=vm2  n_cpus=2i " + STAMP,
    b"system,host=vm2 n_cpus=2i,n_users " + STAMP,
    b"system,host=vm2\tn_cpus=2i " + STAMP,
    b"#system,host=vm2 n_cpus=2i " + STAMP,
    b"system,host=vm2 n_cpus=2i " + STAMP + b"0",
    b"system,host=vm2 n_cpus=2i " + b"x" * 70000,
]
#: What an edit puts in or over a byte: separators, digits, suffixes, and bytes no line has.
EDIT_BYTES = [b"", b" ", b",", b"=", b"\r", b"\n", b"\t", b"\\", b'"', b"#", b"0", b"9", b".",
              b"i", b"u", b"e", b"-", b"+", b"t", b"\x00", b"\xff", b"host=vm9,"]


def decoded(decoder: InfluxDecoder, data: bytes, errors: bool = False, divisor=None) -> tuple:
    """Everything a decode gives, with the types of each sample's values."""
    tally, lines = Tally(), []
    error_list: list | None = [] if errors else None
    samples = decoder.decode(data, NOW, tally, divisor=divisor, errors=error_list, lines=lines)
    return ([(*sample, type(sample.ts), type(sample.value)) for sample in samples],
            list(tally.counts.items()), tally.details, lines, error_list,
            {type(sample) for sample in samples})


def python_decoder(**options) -> InfluxDecoder:
    decoder = InfluxDecoder(**options)
    decoder._scan_spec = None
    return decoder


def agrees(data: bytes, pair: tuple | None = None, **read) -> bool:
    """The decoder with the C reader gives what the Python gives; returns whether the C took
    the payload whole."""
    with_c, python = pair or (InfluxDecoder(), python_decoder())
    expected = decoded(python, data, **read)
    assert decoded(with_c, data, **read) == expected, data
    vms = dict(with_c._vms)
    return native.scan(data, with_c._scan_spec, vms, lambda raw: None, NOW, 1e9, None) \
        is not None


def test_the_c_reader_is_built():
    assert native is not None, ("vmstats.server._influxscan was not built: bin/test installs a "
                                "C compiler and Python's headers when missing")


def test_it_takes_what_telegraf_sends_and_gives_the_pythons_samples():
    payload = b"\n".join(TELEGRAF) + b"\n"
    assert agrees(payload)
    samples, counts, details, lines, _errors, types = decoded(InfluxDecoder(), payload)
    assert counts == [("used", 5), ("ignored", 4)] and details == [] and lines == [
        0, 1, 1, 3, 3, 4, 5, 5, 7, 8]
    assert [(kind, device, value, value_type) for _vm, _ts, kind, device, value, _t, value_type
            in samples] == [("cpu", "", 12.0, float), ("mem", "", 44.5, float),
                            ("mem_mb", "", 4096, int), ("disk_r_total", "vda", 40960, int),
                            ("disk_w_total", "vda", 8192, int), ("net_rx_total", "eth0", 12345, int),
                            ("net_tx_total", "eth0", 2345, int), ("vcpus", "", 2, int)]
    assert types == {influx.Sample}
    assert agrees(payload.rstrip(b"\n"))  # a last line without its newline
    assert agrees(payload.replace(b"\n", b"\r\n"))


def test_every_edge_alone_and_among_telegrafs_lines():
    for line in EDGES:
        agrees(line)
        agrees(line, errors=True)
        agrees(b"\n".join(TELEGRAF[:3] + [line] + TELEGRAF[3:]) + b"\n")
    for precision in ("s", "ms", "u", "m"):
        pair = InfluxDecoder(precision=precision), python_decoder(precision=precision)
        assert agrees(b"\n".join(TELEGRAF), pair)
    assert agrees(b"\n".join(TELEGRAF), divisor=1e3)
    agrees(b"\n".join(TELEGRAF), divisor=1000)  # an int divisor is Python's


def test_what_it_leaves_to_python():
    """Rejects, lines to clamp, escapes, strings, blank and comment lines: None, and the lines
    list as it was."""
    decoder = InfluxDecoder()
    good = b"\n".join(TELEGRAF)
    assert agrees(good, (decoder, python_decoder()))
    for other in (EDGES[3], EDGES[4], EDGES[5], EDGES[12], EDGES[14], EDGES[25], EDGES[26],
                  EDGES[31], EDGES[32], b"\n", b"\r", b"# comment"):
        lines = [7]
        assert native.scan(good + b"\n" + other, decoder._scan_spec, decoder._vms,
                           decoder._known, NOW, 1e9, lines) is None, other
        assert lines == [7]
    assert agrees(b"mem,host=vm1 total=123456789012345678i")  # 18 digits: read
    short = InfluxDecoder(max_line=100), python_decoder(max_line=100)
    assert not agrees(good, short) and agrees(TELEGRAF[-1], short)


def test_a_line_damaged_at_any_place_is_read_as_python_reads_it():
    pair, taken = (InfluxDecoder(), python_decoder()), 0
    for line in TELEGRAF[:5:2] + EDGES[:2]:
        for at in range(len(line) + 1):
            for piece in EDIT_BYTES:
                for damaged in (line[:at] + piece + line[at + 1:], line[:at] + piece + line[at:]):
                    taken += agrees(damaged, pair)
    assert taken > 1000  # the damage that leaves a line to read (a digit for a digit) is read


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALPHABET = st.sampled_from(list(b"cpu,host=vm1 usage_idle=12.5i\\\"tT-e.0u#\n\r\x00\xff"))


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.lists(ALPHABET, max_size=300).map(bytes)))
def test_random_bytes_are_read_as_python_reads_them(data):
    agrees(data)
    agrees(data, errors=True)


@SETTINGS
@given(st.lists(st.tuples(
    st.sampled_from([b"cpu,cpu=cpu-total", b"cpu,cpu=cpu3", b"mem", b"net,interface=e0",
                     b"net,interface=lo", b"diskio,name=sda", b"system", b"processes"]),
    st.sampled_from([b"vm1", b"vm2", b"VM.3", b"a/b", b""]),
    st.lists(st.tuples(st.sampled_from([b"usage_idle", b"usage_iowait", b"available_percent",
                                        b"used_percent", b"total", b"n_cpus", b"bytes_recv",
                                        b"bytes_sent", b"read_bytes", b"write_bytes", b"other"]),
                       st.one_of(st.floats().map(lambda v: repr(v).encode()),
                                 st.integers(-2**66, 2**66).map(lambda v: b"%di" % v),
                                 st.integers(0, 2**66).map(lambda v: b"%du" % v),
                                 st.sampled_from([b"t", b"false", b"1e", b"-.5", b"7.", b"1E-2", b"1_0",
                                                  b"1_0i", b"+4i", b"-0", b"inf",
                                                  "\u0661\u0662".encode()]))),
             min_size=1, max_size=4),
    st.one_of(st.none(), st.integers(-2**64, 2**64))), max_size=20))
def test_telegraf_shaped_lines_with_any_values_are_read_as_python_reads_them(lines):
    pair = InfluxDecoder(), python_decoder()
    data = b"\n".join(
        b"%s%s %s%s" % (measurement, b",host=" + vm if vm else b"",
                        b",".join(key + b"=" + value for key, value in fields),
                        b"" if stamp is None else b" %d" % stamp)
        for measurement, vm, fields, stamp in lines)
    agrees(data, pair)
    agrees(data, pair, errors=True)


def test_the_decoding_processes_get_the_c_reader_too():
    """The pool pickles its decoders for its processes: each makes the C reader's tables."""
    copy = pickle.loads(pickle.dumps(InfluxDecoder(vm_tag="vm", max_line=4096)))
    assert copy._scan_spec is not None and (copy.vm_tag, copy.max_line) == (b"vm", 4096)
    payload = b"\n".join(TELEGRAF).replace(b"host=", b"vm=")
    assert decoded(copy, payload) == decoded(python_decoder(vm_tag="vm"), payload)
    assert native.scan(payload, copy._scan_spec, copy._vms, copy._known, NOW, 1e9, None)



#: A line for each of parse_line's faults on lines without escapes (lineprotocol.FAULTS, in
#: order), then one whose VM tag value alone is refused.
FAULTY = [b"cpu,host=vm1 usage_idle=1 " + STAMP + b" 1", b"cpu,host=vm1 usage_idle=1 ",
          b"cpu,host=vm1 usage_idle=1 -12a", b",host=vm1 usage_idle=1", b"cpu,hostvm1 usage_idle=1",
          b"cpu,host=vm1 usage_idle=1,usage_iowait=x " + STAMP, b"system,host=-vm1 n_cpus=2i"]


def test_the_c_reader_leaves_a_refused_line_with_why_and_reads_the_rest():
    """A payload of malformed lines is not read again line by line in Python (several times
    a line taken): the C names parse_line's fault, or the words of the VM's refusal, and
    reads the good lines; the decoder words each as its Python reader would (``agrees``)."""
    decoder = InfluxDecoder()
    payload = b"\n".join(TELEGRAF + FAULTY) + b"\n"
    assert agrees(payload, (decoder, python_decoder())) is False  # not whole: None, as before
    left: list = []
    samples, used, ignored, plain = native.scan(payload, decoder._scan_spec, decoder._vms,
                                                decoder._known, NOW, 1e9, None,
                                                decoder._bad_vms, left)
    assert (len(samples), used, ignored, plain) == (8, 5, 4, 0)
    assert [entry[0] for entry in left] == list(range(len(TELEGRAF) + 1,
                                                      len(TELEGRAF) + len(FAULTY) + 1))
    for (number, start, end, why, at, to), line in zip(left, FAULTY, strict=True):
        assert payload[start:end] == line, number
        if line is FAULTY[-1]:
            assert why == decoder._bad_vms[b"-vm1"] and "-vm1" in str(why)
            continue
        with pytest.raises(LineError) as raised:
            parse_line(line)
        assert fault(why, payload[at:to]) == raised.value.detail, line
    assert [entry[3] for entry in left[:-1]] == list(range(1, len(FAULTS) + 1))


#: Lines giving a tag or field they are read for twice (which value was meant, no one knows),
#: with the key: the VM's tag, a mapped tag, a field.
TWICE = [(b"cpu,cpu=cpu-total,host=vm1,host=vm2 usage_idle=50,usage_iowait=0", "tag 'host'"),
         (b"cpu,cpu=cpu0,cpu=cpu-total,host=vm1 usage_idle=50", "tag 'cpu'"),
         (b"mem,host=vm1 available_percent=10,available_percent=75", "field 'available_percent'"),
         (b"net,host=vm1,interface=eth0,interface=eth1 bytes_recv=1i", "tag 'interface'"),
         (b"system,host=vm1 n_cpus=2i,n_cpus=4i", "field 'n_cpus'")]


def test_a_tag_or_field_read_twice_is_a_syntax_reject_on_every_path():
    """As the native protocol refuses ``vm=a,vm=b`` or a field twice: the C leaves the payload
    to the Python, whose plain reader, line-by-line reader and scanner of escapes each refuse
    the line (only it) as ``syntax``, naming the key.  Before, the C and the plain reader took
    the first value and the line-by-line reader the last.  Keys not read may repeat."""
    good = b"\n".join(TELEGRAF)
    for line, key in TWICE:
        for reader, payload in (("plain", good + b"\n" + line + b" " + STAMP),
                                ("line by line", good + b"\n# a comment\n" + line + b" " + STAMP),
                                ("escapes", good + b"\n" + line + b',note="a b" ' + STAMP)):
            for errors in (False, True):
                assert not agrees(payload, errors=errors), (line, reader)
                _samples, counts, details, lines, _errors, _types = decoded(
                    python_decoder(), payload, errors=errors)
                assert dict(counts)["syntax"] == 1 and dict(counts)["used"] == 5, (line, reader)
                assert any(key + " given twice" in str(detail) for detail in details), (reader, details)
    # Keys no mapping reads, given twice: data with no use, as before.
    assert agrees(good + b"\ncpu,cpu=cpu-total,host=vm1,dc=a,dc=b usage_idle=50,usage_user=1,"
                  b"usage_user=2 " + STAMP)
    assert agrees(b"disk,host=vm1,host=vm2 free=1i " + STAMP)  # ignored: nothing of it is read


def test_bad_lines_amid_good_ones_are_refused_as_line_by_line_parsing_refuses_them():
    # A name refused once is refused again from the decoder's memory: every path, payload
    # after payload, gives what a fresh decoder's line-by-line parsing gives.
    bad = [b"system,host=-vm1 n_cpus=2i " + STAMP, b"cpu,cpu=cpu-total,hostvm1 usage_idle=1",
           b"mem,host=bad/vm used_percent=40 " + STAMP]
    data = b"\n".join(TELEGRAF[:4] + bad + TELEGRAF[4:] + bad[::2] + TELEGRAF[:2]) + b"\n"
    for decoder in (InfluxDecoder(), python_decoder()):
        for _round in range(2):
            for errors in (None, []):
                tally, lines = Tally(), []
                samples = decoder.decode(data, NOW, tally, errors=errors, lines=lines)
                fresh, fresh_tally, fresh_lines = python_decoder(), Tally(), []
                fresh_errors = None if errors is None else []
                expected = fresh._line_by_line(data, NOW, fresh_tally, 1e9, fresh_errors,
                                               fresh_lines)
                assert samples == expected and lines == fresh_lines
                assert tally.counts == fresh_tally.counts and tally.counts["bad_vm_id"] == 4
                assert list(map(str, tally.details)) == list(map(str, fresh_tally.details))
                assert errors == fresh_errors
        assert set(decoder._bad_vms) == {b"-vm1", b"bad/vm"}
