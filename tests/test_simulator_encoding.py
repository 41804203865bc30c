"""protocol.encode_records (the simulator's batch encoder) writes exactly what encode_record writes."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vmstats import protocol
from vmstats.protocol import FIELDS, Decoder, Record, encode_record, encode_records

_floats = st.one_of(
    st.floats(min_value=0, max_value=1e15, allow_nan=False),
    st.sampled_from([0.0, 1.0, 100.0, 5120.0, 3.21, 1e-05, 1e15, 123456789012345.0, 0.1 + 0.2]),
    st.integers(min_value=0, max_value=10**17),  # ints in float fields go through float()
    st.builds(np.float64, st.floats(min_value=0, max_value=100)),
    st.builds(np.float32, st.floats(min_value=0, max_value=100, width=32)),
    st.just(True),
)
_ints = st.one_of(st.integers(min_value=0, max_value=1 << 40), st.builds(np.int64, st.integers(0, 1 << 40)))


@st.composite
def records(draw):
    values = {}
    for name, is_int, _lo, _hi, required, _places in FIELDS:
        if required or draw(st.booleans()):
            values[name] = draw(_ints if is_int else _floats)
    vm = draw(st.sampled_from(["10.0.0.1", "web-1.0", "a.0", "::1"]))
    host = draw(st.sampled_from([None, "", "h1", "rack.0"]))
    return Record(vm=vm, ts=draw(st.integers(0, 10**12)), host=host, **values)


@settings(max_examples=400, deadline=None)
@given(st.lists(records(), max_size=20))
def test_batch_encoder_is_byte_identical_to_encode_record(batch):
    assert encode_records(batch) == [encode_record(r).encode("utf-8") for r in batch]


def test_batch_encoder_on_a_simulated_series_round_trips():
    rng = np.random.default_rng(3)
    cpu = np.round(rng.uniform(0, 100, 500), 2).tolist()
    disk = np.round(rng.uniform(0, 1e6, 500), 0).tolist()
    batch = [Record("10.0.0.9", 1732262400 + 60 * i, c, min(100.0, c + 1), 50.0, d, d, 0.0, 1.0, 2, 4096)
             for i, (c, d) in enumerate(zip(cpu, disk, strict=True))]
    lines = encode_records(batch)
    assert lines == [encode_record(r).encode("utf-8") for r in batch]
    decoder = Decoder(clock=lambda: 1732262400 + 60 * 600)
    assert [decoder.decode_line(line) for line in lines] == batch


@st.composite
def clean_records(draw):
    """Plain float and int values only, the shape the batch template formats."""
    values = {}
    present = draw(st.sets(st.sampled_from([f[0] for f in FIELDS if not f[4]])))
    for name, is_int, _lo, _hi, required, _places in FIELDS:
        if required or name in present:
            values[name] = draw(st.integers(0, 1 << 40) if is_int else st.one_of(
                st.floats(min_value=0, max_value=1e17, allow_nan=False),
                st.sampled_from([0.0, 1.0, 100.0, 12648.0, 0.84, 1e-05, 1e16, 2.5e-7])))
    return Record(vm="v", ts=draw(st.integers(0, 10**12)), **values)


@st.composite
def runs(draw):
    """Runs of one VM and host, most with one shape (the batch path), some mixed (the fallback)."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        vm = draw(st.sampled_from(["10.0.0.1", "a.0", "x%d", "web-1"]))
        host = draw(st.sampled_from([None, "", "h.0", "rack1"]))
        base = draw(clean_records()) if draw(st.integers(0, 3)) else draw(records())
        for i in range(draw(st.integers(1, 12))):
            record = draw(records()) if draw(st.integers(0, 9)) == 0 else base._replace(
                cpu=draw(st.floats(0, 100)), ts=base.ts + 60 * i)
            out.append(record._replace(vm=vm, host=host))
    return out


@settings(max_examples=400, deadline=None)
@given(runs())
def test_batch_encoder_on_runs_of_one_vm_is_byte_identical(batch):
    assert encode_records(batch) == [encode_record(r).encode("utf-8") for r in batch]


#: Sizes as senders hold them: whole ints (``2i``), fractions of up to 3 places as the agent and
#: traces send them, whole floats (written ``2i`` too) and floats of any digits.
_SIZES = st.one_of(st.integers(1, 4096), st.integers(1, 4096000).map(lambda n: n / 1000),
                   st.sampled_from([0.25, 1.5, 0.001, 2.0, 4096.0, 0.1 + 0.2, 1e-05]),
                   st.floats(min_value=0, max_value=1e17, allow_nan=False))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(clean_records(), _SIZES, st.booleans()), max_size=30))
def test_fractional_sizes_are_written_by_the_batch_encoder_as_encode_record_writes_them(drawn):
    # ``last``: the size is the line's last field.
    batch = [record._replace(vcpus=size, **(dict(mem_mb=None, seq=None) if last else {}))
             for record, size, last in drawn]
    assert encode_records(batch) == [encode_record(r).encode("utf-8") for r in batch]


def test_a_fleet_of_fractional_sizes_takes_the_batch_template():
    """A container's 0.25 vCPU shares its shape's one format string (``vcpus=%r``), not a
    per-record encode_record: a simulated fleet of containers encodes as fast as one of VMs."""
    record = Record("ct-1", 1732262400, 3.5, 4.0, 40.0, 1.0, 2.0, 3.0, 4.0, 0.25, 1024)
    template = protocol._batch_template(tuple(map(type, record)))
    assert template is not None and "vcpus=%r" in template[0]
    whole = protocol._batch_template(tuple(map(type, record._replace(vcpus=2))))
    assert "vcpus=%di" in whole[0]
    assert encode_records([record]) == [
        b"vmstats,vm=ct-1 cpu=3.5,cpu_max=4,mem=40,disk_r=1,disk_w=2,net_rx=3,net_tx=4,vcpus=0.25,"
        b"mem_mb=1024i 1732262400"]
