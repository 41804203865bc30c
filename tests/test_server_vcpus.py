"""Fractional sizes on the real server: a container of 250m of a CPU is logged as 0.25 vCPU.

Sizes are sent over UDP and TCP in every spelling the protocol allows: the
agent's (``vcpus=0.25``, a whole size ``vcpus=2i``), other senders' (fields
reordered, typed tags), and spellings only the decoder reads (an exponent,
trailing zeros, a size of 1000 or more).  Each VM sends twice, so its second
payload is read as a known VM's (the C reader where built, else the regexes'
column path) and its first checked line by line.  Every size the protocol
refuses is counted under its reason and costs no other line.
"""

import time

import pytest
from serverproc import serve

from vmstats import logstore, protocol

#: vm -> (the fields as sent, the size logged)
ACCEPTED = {
    "ct-quarter": ("cpu=40,mem=50,vcpus=0.25", 0.25),
    "ct-milli": ("cpu=40,mem=50,vcpus=0.001", 0.001),
    "ct-one-half": ("vcpus=1.5,mem=50,cpu=40", 1.5),
    "ct-third": ("cpu=40,cpu_max=60,mem=50,disk_r=0,disk_w=0,net_rx=0,net_tx=0,vcpus=0.333,"
                 "mem_mb=512i,seq=3i", 0.333),
    "vm-whole": ("cpu=40,mem=50,vcpus=2i", 2),
    "vm-whole-untyped": ("cpu=40,mem=50,vcpus=2", 2),
    "vm-largest": ("cpu=40,mem=50,vcpus=4096i", 4096),
    # Only the decoder reads these: an exponent, zeros past the third place, a size >= 1000.
    "slow-exponent": ("cpu=40,mem=50,vcpus=2.5e-1", 0.25),
    "slow-zeros": ("cpu=40,mem=50,vcpus=0.2500", 0.25),
    "slow-large": ("cpu=40,mem=50,vcpus=1000.125", 1000.125),
    "slow-point": ("cpu=40,mem=50,vcpus=.5", 0.5),
}
#: vm -> (the fields as sent, the reason the line is refused)
REFUSED = {
    "bad-zero": ("cpu=40,mem=50,vcpus=0", protocol.R_RANGE),
    "bad-zero-point": ("cpu=40,mem=50,vcpus=0.000", protocol.R_RANGE),
    "bad-zero-typed": ("cpu=40,mem=50,vcpus=0i", protocol.R_RANGE),
    "bad-negative": ("cpu=40,mem=50,vcpus=-0.5", protocol.R_RANGE),
    "bad-over": ("cpu=40,mem=50,vcpus=4096.001", protocol.R_RANGE),
    "bad-over-typed": ("cpu=40,mem=50,vcpus=5000i", protocol.R_RANGE),
    "bad-digits": ("cpu=40,mem=50,vcpus=0.0005", protocol.R_NON_NUMERIC),
    "bad-digits-more": ("cpu=40,mem=50,vcpus=1.2345", protocol.R_NON_NUMERIC),
    "bad-typed-fraction": ("cpu=40,mem=50,vcpus=0.25i", protocol.R_NON_NUMERIC),
    "bad-nan": ("cpu=40,mem=50,vcpus=nan", protocol.R_NON_FINITE),
    "bad-inf": ("cpu=40,mem=50,vcpus=inf", protocol.R_NON_FINITE),
}


def payload(table: dict, ts: int) -> bytes:
    return b"\n".join(b"vmstats,vm=%s %s %d" % (vm.encode(), fields.encode(), ts)
                      for vm, (fields, _outcome) in table.items())


def rejected(metrics: dict) -> dict:
    prefix = 'vmstats_rejected_total{reason="'
    return {key[len(prefix):-2]: value for key, value in metrics.items()
            if key.startswith(prefix) and value}


def logged_sizes(data_dir, vm: str) -> list:
    frame, bad = logstore.read_rows(path for _day, path in logstore.day_files(str(data_dir), vm))
    assert bad == 0
    return list(frame["vcpus"])


def raw_rows(data_dir, vm: str) -> list:
    if vm not in set(logstore.iter_vms(str(data_dir))):
        return []
    return [line for _day, path in logstore.day_files(str(data_dir), vm)
            for line in open(path, "rb").read().splitlines()[1:]]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_fractional_sizes_are_logged_exactly_and_bad_ones_counted(tmp_path, transport):
    t0 = (int(time.time()) - 600) // 60 * 60
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        for ts in (t0, t0 + 60):  # new VM ids, then known ones
            good, bad = payload(ACCEPTED, ts), payload(REFUSED, ts)
            mixed = good + b"\n" + bad  # bad lines among good ones cost only themselves
            if transport == "udp":
                server.send_udp(mixed)
            else:
                assert server.send_synced(mixed + b"\n", token="t%d" % ts) == [
                    "#!ack", "t%d" % ts, str(len(ACCEPTED)), str(len(REFUSED))]
        metrics = server.wait_received(2 * (len(ACCEPTED) + len(REFUSED)))
        server.wait_for(lambda s: all(len(raw_rows(s.data_dir, vm)) == 2 for vm in ACCEPTED))
    assert server.returncode == 0
    expected = {}
    for _fields, reason in REFUSED.values():
        expected[reason] = expected.get(reason, 0) + 2
    assert rejected(metrics) == expected
    assert metrics["vmstats_records_received_total"] == 2 * len(ACCEPTED)
    for vm, (_fields, size) in ACCEPTED.items():
        assert logged_sizes(tmp_path / "data", vm) == [size, size], vm
        # A whole size is logged as it was before sizes could be fractional: "2", not "2.0".
        cells = {row.split(b",")[8] for row in raw_rows(tmp_path / "data", vm)}
        assert cells == {protocol.format_float(size).encode()}, (vm, cells)
    assert not set(logstore.iter_vms(str(tmp_path / "data"))) & set(REFUSED)


def test_a_whole_size_keeps_its_wire_form_and_a_fraction_is_a_decimal():
    """What an older server reads from a whole-CPU VM is unchanged (``2i``); a fraction is the
    shortest decimal, which reads back exactly."""
    record = protocol.Record(vm="10.0.0.1", ts=1732262400, cpu=1.0, mem=2.0, vcpus=2, mem_mb=4096)
    assert protocol.encode_record(record) == \
        "vmstats,vm=10.0.0.1 cpu=1,mem=2,vcpus=2i,mem_mb=4096i 1732262400"
    assert protocol.encode_record(record._replace(vcpus=2.0)).endswith("vcpus=2i,mem_mb=4096i 1732262400")
    fractional = record._replace(vcpus=0.25)
    assert protocol.encode_record(fractional).endswith("vcpus=0.25,mem_mb=4096i 1732262400")
    assert protocol.encode_records([record, fractional, record._replace(vcpus=2.0)]) == [
        protocol.encode_record(r).encode() for r in (record, fractional, record)]
    decoded = protocol.Decoder(clock=lambda: 1732262400).decode_line(
        protocol.encode_record(fractional))
    assert decoded == fractional and type(decoded.vcpus) is float
    whole = protocol.Decoder(clock=lambda: 1732262400).decode_line(protocol.encode_record(record))
    assert whole.vcpus == 2 and type(whole.vcpus) is int
