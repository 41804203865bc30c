"""Telegraf's lines for _influxscan.c: numbers of every size, escapes at the end, bad UTF-8.

influx.py's decoder is the reference, through test_formats_influxscan's ``agrees``: it
costs far more than the scans, so this runs in the ordinary Python and the sanitized build
makes its calls again (driver.RECORDED), the decoder's answers to the scans' callbacks
written down with them (answers.CallingRecorder).
"""

import math
import random

import test_formats_influxscan as reference
from test_formats_influxscan import NOW, STAMP, TELEGRAF

from vmstats.server.formats import influx
from vmstats.server.formats.influx import InfluxDecoder

native = influx._native


def numbers() -> list[bytes]:
    """Values of every spelling and size: integers past 64 bits, floats past a double,
    texts past the reader's buffer, and what is no number at all."""
    out = [b"nan", b"NaN", b"inf", b"-inf", b"Infinity", b"1e308", b"1e309", b"-1e309",
           b"4.9e-324", b"2.4e-324", b"1e-400", b"1e99999999999999999999", b"-0", b"-0.0",
           b"0x10", b"1_000", b"+1", b"--1", b"-", b".", b"-.", b"e", b"1e", b"1e+", b"1.e5",
           b"9223372036854775807i", b"9223372036854775808i", b"-9223372036854775808i",
           b"-9223372036854775809i", b"18446744073709551615u", b"18446744073709551616u",
           b"-1u", b"1iu", b"i", b"u", b"-i"]
    for digits in range(1, 25):
        for text in (b"9" * digits, b"1" + b"0" * (digits - 1)):
            out += [text + b"i", b"-" + text + b"i", text + b"u", text, b"-" + text, text + b".5"]
    for length in range(58, 70):  # around MAX_NUMBER, the longest text the C converts
        out += [b"1." + b"0" * (length - 2), b"0." + b"0" * (length - 3) + b"1",
                b"1" * (length - 4) + b"e-10"]
    return out


def lines() -> list[bytes]:
    """Telegraf's lines with each hostile value, cut, stretched and with odd bytes in them."""
    out = []
    for value in numbers():
        out += [b"cpu,cpu=cpu-total,host=vm1 usage_idle=%s,usage_iowait=1 %s" % (value, STAMP),
                b"mem,host=vm1 available_percent=%s,total=%s " % (value, value) + STAMP,
                b"net,host=vm1,interface=eth0 bytes_recv=%s " % value + STAMP,
                b"system,host=vm1 n_cpus=%s %s" % (value, value.rstrip(b"iu"))]
    for digits in range(1, 23):  # stamps of every length and sign
        for stamp in (b"9" * digits, b"-" + b"9" * digits, b"1" + b"0" * (digits - 1)):
            out.append(b"system,host=vm1 n_cpus=2i " + stamp)
    for end in (b"\\", b"\\\\", b"\\\n", b'"', b"\r", b"\r\r", b"\0", b"\xff", b"\xc3", b"="):
        for line in (TELEGRAF[0], TELEGRAF[3], TELEGRAF[4]):
            out += [line + end, line.replace(b" ", end + b" ", 1), line.replace(b",", end + b",", 1),
                    line.replace(b"=", b"=" + end, 2)]
    for device in (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\0", b"a\0b"):
        out += [b"diskio,host=vm1,name=%s read_bytes=1i %s" % (device, STAMP),
                b"net,host=vm1,interface=%s bytes_recv=1i %s" % (device, STAMP),
                b"system,host=%s n_cpus=2i %s" % (device, STAMP)]
    out += [b"cpu,cpu=cpu-total,host=%s usage_idle=1 %s" % (b"v" * 100_000, STAMP),
            b"mem,host=vm1 %s=1 %s" % (b"k" * 100_000, STAMP),
            b"mem,host=vm1 available_percent=%s %s" % (b"1" * 100_000, STAMP),
            b"mem,%s=x available_percent=1 %s" % (b",".join([b"t=1"] * 10_000), STAMP),
            b"mem,host=vm1 " + b",".join([b"available_percent=1"] * 10_000),
            b"\n".join(TELEGRAF * 500), b"\n" * 1000, b"\r\n" * 1000]
    return out


def direct(rng: random.Random) -> int:
    """scan() called as no decoder would: odd divisors, a `known` that raises or answers
    anything, a lines argument of the wrong type; it must return or raise, never more."""
    decoder = InfluxDecoder()
    payload = b"\n".join(TELEGRAF)
    count = 0
    for divisor in (0.0, -1.0, math.nan, math.inf, 1e-300, 1e300):
        native.scan(payload, decoder._scan_spec, {}, lambda raw: "vm", NOW, divisor, [])
        count += 1

    def raising(raw: bytes) -> str:
        raise RuntimeError(raw)

    for known in (raising, lambda raw: 7, lambda raw: raw, lambda raw: None, None):
        kept = [1, 2]
        try:
            native.scan(payload, decoder._scan_spec, {}, known, NOW, 1e9, kept)
        except (RuntimeError, TypeError):
            pass
        assert kept[:2] == [1, 2]
        count += 1
    for lines_arg in ((), "x", {}, 7):
        try:
            native.scan(payload, decoder._scan_spec, {}, lambda raw: "vm", NOW, 1e9, lines_arg)
        except TypeError:
            count += 1
        else:
            raise AssertionError(lines_arg)
    for bad_vms, deferred in (({}, ()), ({}, {}), ([], []), (None, [])):
        try:
            native.scan(payload, decoder._scan_spec, {}, lambda raw: "vm", NOW, 1e9, [],
                        bad_vms, deferred)
        except TypeError:
            count += 1
        else:
            raise AssertionError((bad_vms, deferred))
    for _ in range(300):
        data = rng.randbytes(rng.randrange(400))
        native.scan(data, decoder._scan_spec, {b"vm1": "vm1"}, lambda raw: "vm", NOW, 1e9, [])
        native.scan(data, decoder._scan_spec, {b"vm1": "vm1"}, lambda raw: None, NOW, 1e9, [],
                    {}, [])
        count += 2
    return count


def run() -> int:
    rng = random.Random(3)
    reference.test_it_takes_what_telegraf_sends_and_gives_the_pythons_samples()
    reference.test_every_edge_alone_and_among_telegrafs_lines()
    reference.test_what_it_leaves_to_python()
    reference.test_a_line_damaged_at_any_place_is_read_as_python_reads_it()
    pair = InfluxDecoder(), reference.python_decoder()
    short = InfluxDecoder(max_line=200), reference.python_decoder(max_line=200)
    count = 0
    payload = b"\n".join(TELEGRAF) + b"\n"
    for cut in range(len(payload) + 1):  # every prefix of valid input
        reference.agrees(payload[:cut], pair)
        count += 1
    for line in lines():
        reference.agrees(line, pair)
        reference.agrees(line, pair, errors=True)
        reference.agrees(line, short)
        count += 3
    for line in (TELEGRAF[0], b"x" * 190 + b" a=1"):  # lines right at max_line and past it
        for pad in range(-3, 4):
            padded = line.replace(b" ", b" " + b"z" * (200 - len(line) + pad) + b"=1,", 1)
            reference.agrees(padded, short)
            reference.agrees(padded + b"\r", short)
            count += 2
    alphabet = list(b"cpu,host=vm1 usage_idle=12.5i\\\"tT-e.0u#\n\r\x00\xff")
    for _ in range(1500):  # random bytes, bytes of the grammar, random splices
        reference.agrees(rng.randbytes(rng.randrange(300)), pair)
        reference.agrees(bytes(rng.choices(alphabet, k=rng.randrange(300))), pair)
        line = rng.choice(TELEGRAF)
        at = rng.randrange(len(line) + 1)
        reference.agrees(line[:at] + rng.randbytes(rng.randrange(1, 5)) + line[at + 1:], pair)
        count += 3
    for precision in ("s", "ms", "u", "ns"):
        decoders = InfluxDecoder(precision=precision), reference.python_decoder(precision=precision)
        for line in lines()[::7]:
            reference.agrees(line, decoders)
            count += 1
    return count + direct(rng)
