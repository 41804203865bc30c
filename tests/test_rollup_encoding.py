"""Rollup files keep value histograms sparse; what the report reads back is the aggregate as written.

Files are written with the compactor's own writer (logstore.TierWriter,
rollup_table) and read with the report's reader (read_rollups): the
sparse encoding, the dense one older files hold, a VM subset of a file,
counts past 16 bits and empty histograms all give back the same arrays.
"""

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from vmstats import logstore
from vmstats.report import runs
from vmstats.report.aggregate import HISTOGRAMS, ROLLUP_VERSION, empty_table, read_rollups
from vmstats.report.discover import discover
from vmstats.report.settings import ReportError

DAY = "2026-01-05"


def _aggregates(rows: int, seed: int = 5) -> dict[str, np.ndarray]:
    """A table of VM-day aggregates with random values and histograms of a few bins each."""
    rng = np.random.default_rng(seed)
    table = empty_table(rows)
    for name, values in table.items():
        if name in HISTOGRAMS:
            continue
        if values.dtype.kind == "f":
            values[...] = rng.uniform(0, 100, values.shape)
        else:
            values[...] = rng.integers(0, 100, values.shape)
    for name, bins in HISTOGRAMS.items():
        hist = np.zeros((rows, bins), np.uint32)
        for row in range(rows):
            if row % 5 == 2:
                continue  # a VM-day with no known value of this metric: an empty histogram
            cells = rng.choice(bins, size=int(rng.integers(1, 40)), replace=False)
            hist[row, cells] = rng.integers(1, 60, len(cells))
        hist[1, bins - 1] = 70000  # a day of per-second records: more than 16 bits in one bin
        table[name] = hist
    return table


def _as_lists(table):
    """A rollup table with its 2-d aggregates as fixed-size lists, as files written before they
    were kept as one binary cell per row hold them."""
    import pyarrow as pa

    for index, field in enumerate(table.schema):
        if pa.types.is_fixed_size_binary(field.type):
            values = logstore.rollup_arrays(table.select(["vm", field.name]))[1][field.name]
            lists = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
            table = table.set_column(index, field.name, lists)
    return table


def _write(data_dir, vms, table, sparse, lists: bool = False, version: int = ROLLUP_VERSION) -> str:
    path = logstore.tier_path(str(data_dir), logstore.ROLLUPS_DIR, DAY)
    writer = logstore.rollup_writer(path)
    labels = [(1, "host", None)] * len(vms)
    rollups = logstore.rollup_table(vms, labels, table, sparse=sparse)
    writer.add(_as_lists(rollups) if lists else rollups)
    writer.close({"version": version, "day": DAY, "vms": vms})
    writer.commit()
    return path


def _same(read: dict[str, np.ndarray], expected: dict[str, np.ndarray], rows) -> None:
    assert set(read) == set(expected)
    for name, values in expected.items():
        np.testing.assert_array_equal(read[name], values[rows], err_msg=name)


def test_sparse_and_dense_rollups_read_back_the_same(tmp_path):
    vms = ["vm%02d" % i for i in range(12)]
    table = _aggregates(len(vms))
    # Histograms sparse or dense, other 2-d aggregates as binary cells or as older files' lists.
    for sparse, lists in ((HISTOGRAMS, False), ((), False), (HISTOGRAMS, True), ((), True)):
        data_dir = tmp_path / ("%s-%s" % ("sparse" if sparse else "dense", "lists" if lists else "cells"))
        path = _write(data_dir, vms, table, sparse, lists)
        schema = pq.read_schema(path)
        assert ("hist_cpu" + logstore.SPARSE_BINS in schema.names) == bool(sparse)
        assert ("hist_cpu" in schema.names) != bool(sparse)
        kind = str(schema.field("h_cpu_sum").type)
        assert kind.startswith("fixed_size_list" if lists else "fixed_size_binary"), kind
        # The whole file (a fleet's report), then a few VMs out of order (one VM's report).
        whole, issues = read_rollups([logstore.Part(path, vm, logstore.ROLLUPS_DIR) for vm in vms])
        assert issues == {}
        _same(whole, table, np.arange(len(vms)))
        some = [7, 1, 2]
        part, issues = read_rollups([logstore.Part(path, vms[i], logstore.ROLLUPS_DIR) for i in some])
        assert issues == {}
        _same(part, table, some)


def test_rollups_of_the_version_before_mixed_stretches_are_read_with_their_lower_bound(tmp_path):
    """Version 6 kept no mixed work stretches.  Its rows are gone, so refusing it would lose
    those days: its mixed levels are each metric's own over its scale, the most it proves."""
    vms = ["vm0", "vm1", "vm2"]
    table = _aggregates(len(vms))
    older = {name: values for name, values in table.items()
             if not name.endswith("_mix") and name != "shared_id"}
    for version, data_dir in ((6, tmp_path / "v6"), (5, tmp_path / "v5")):
        _write(data_dir, vms, older, HISTOGRAMS, version=version)
    issues = []
    units = discover([str(tmp_path / "v6")], issues)
    assert issues == [] and len(units) == len(vms)
    read, problems = read_rollups([sources[0] for sources in units.values()])
    assert problems == {}
    _same({k: v for k, v in read.items() if not k.endswith("_mix") and k != "shared_id"}, older,
          np.arange(len(vms)))
    assert read["shared_id"].tolist() == [0, 0, 0]
    for field in ("run_", "head_", "tail_"):
        bound = np.max([table[field + m] / runs.MIX_SCALES[m] for m in runs.RUN_METRICS], axis=0)
        np.testing.assert_allclose(read[field + "mix"], bound, rtol=1e-6, err_msg=field)
    # A version the reader does not know is named, not guessed at.
    with pytest.raises(ReportError, match="holds no readable VM logs: 1 file"):
        discover([str(tmp_path / "v5")], issues)
    assert "rollups of another aggregate version (5)" in issues[0]["problem"]


def test_rollups_of_the_version_before_shared_ids_are_read_as_not_shared(tmp_path):
    """Version 7 kept no ``shared_id``: its VM-days were not checked, and read as not shared."""
    vms = ["vm0", "vm1", "vm2"]
    older = {name: values for name, values in _aggregates(len(vms)).items() if name != "shared_id"}
    _write(tmp_path, vms, older, HISTOGRAMS, version=7)
    issues = []
    units = discover([str(tmp_path)], issues)
    assert issues == [] and len(units) == len(vms)
    read, problems = read_rollups([sources[0] for sources in units.values()])
    assert problems == {}
    _same({k: v for k, v in read.items() if k != "shared_id"}, older, np.arange(len(vms)))
    assert read["shared_id"].tolist() == [0, 0, 0]


def test_the_sparse_columns_hold_only_the_non_empty_bins(tmp_path):
    vms = ["vm%02d" % i for i in range(10)]
    table = _aggregates(len(vms))
    path = _write(tmp_path, vms, table, HISTOGRAMS)
    columns = ["hist_mem" + logstore.SPARSE_BINS, "hist_mem" + logstore.SPARSE_COUNTS]
    stored = pq.read_table(path, columns=columns)
    bins = [np.frombuffer(cell, "<u2") for cell in stored.column(0).to_pylist()]
    counts = [np.frombuffer(cell, "<u4") for cell in stored.column(1).to_pylist()]
    for row, (where, count) in enumerate(zip(bins, counts, strict=True)):
        np.testing.assert_array_equal(where, np.flatnonzero(table["hist_mem"][row]))
        np.testing.assert_array_equal(count, table["hist_mem"][row][where])


def test_a_rollup_file_whose_bins_do_not_fit_is_named_not_read(tmp_path):
    vms = ["vm0", "vm1"]
    table = _aggregates(len(vms))
    narrow = dict(table, hist_disk=table["hist_disk"][:, :100])  # fewer bins than the report's
    path = _write(tmp_path, vms, narrow, HISTOGRAMS)
    read, issues = read_rollups([logstore.Part(path, vm, logstore.ROLLUPS_DIR) for vm in vms])
    assert sorted(issues) == [0, 1]
    assert "hist_disk has 100 bins, not %d" % HISTOGRAMS["hist_disk"] in issues[0][0]["problem"]
    assert read["n"].tolist() == [0, 0]


def _days_of_rollups(tmp_path, vms, days, sparse):
    """``days`` rollup files of ``vms`` (each day's histograms different), and the dense table
    of every (vm, day) in the report's order (by VM, then day)."""
    tables = []
    for day in range(days):
        table = _aggregates(len(vms), seed=day)
        name = "2026-01-%02d" % (day + 1)
        path = logstore.tier_path(str(tmp_path), logstore.ROLLUPS_DIR, name)
        writer = logstore.rollup_writer(path)
        writer.add(logstore.rollup_table(vms, [(1, "host", None)] * len(vms), table, sparse=sparse))
        writer.close({"version": ROLLUP_VERSION, "day": name, "vms": vms})
        writer.commit()
        tables.append((path, table))
    parts = [logstore.Part(tables[d][0], vm, logstore.ROLLUPS_DIR) for vm in vms for d in range(days)]
    dense = {name: np.stack([tables[d][1][name][v] for v in range(len(vms)) for d in range(days)])
             for name in HISTOGRAMS}
    return parts, dense


def test_histograms_kept_sparse_sum_per_vm_as_the_dense_rows_do(tmp_path):
    """A long window's report sums each VM's histograms straight from the files' cells: the
    same sums, whatever rows are selected, reordered or joined with dense rows (days read from
    raw data), as from the dense table; and the cells placed give the dense table back."""
    from vmstats.report.histogram import SparseHistograms
    from vmstats.report.stats import _hist_sum

    vms, days = ["vm%02d" % i for i in range(9)], 6
    for sparse in (HISTOGRAMS, ()):  # files with sparse and with dense histograms
        folder = tmp_path / ("sparse" if sparse else "dense")
        parts, dense = _days_of_rollups(folder, vms, days, sparse)
        read, issues = read_rollups(parts, sparse=True)
        assert issues == {}
        group = np.repeat(np.arange(len(vms)), days)
        offset = np.tile(np.arange(days), len(vms))
        rng = np.random.default_rng(1)
        keep = rng.random(len(group)) < 0.6  # days outside the window or before a resize
        for name in HISTOGRAMS:
            hist = read[name]
            assert isinstance(hist, SparseHistograms) and hist.shape == dense[name].shape
            np.testing.assert_array_equal(hist.dense(), dense[name])
            expected = _hist_sum(dense[name], group, offset, len(vms))
            np.testing.assert_array_equal(_hist_sum(hist, group, offset, len(vms)), expected)
            np.testing.assert_array_equal(
                _hist_sum(hist[keep], group[keep], offset[keep], len(vms)),
                _hist_sum(dense[name][keep], group[keep], offset[keep], len(vms)))
            # Reordered rows, then rows of a dense table after them (raw days beside rollups).
            order = rng.permutation(len(group))
            extra = dense[name][:days]  # vm00's days again, as dense rows
            joined = SparseHistograms.concat([hist[order], extra])
            groups = np.r_[group[order], np.zeros(days, np.int64)]
            expected = np.zeros((len(vms), dense[name].shape[1]), np.int64)
            np.add.at(expected, groups, np.vstack([dense[name][order], extra]).astype(np.int64))
            np.testing.assert_array_equal(joined.group_sum(groups, len(vms)), expected)
            # Two rows of one chunk in one group (not a report's case, but a sum all the same).
            np.testing.assert_array_equal(hist.group_sum(np.zeros(len(group), np.int64), 1),
                                          dense[name].sum(axis=0, dtype=np.int64)[None, :])


def test_rollups_no_report_reads_are_not_named_while_the_days_rows_answer(tmp_path):
    """A newer vmstats's rollups beside the day's rows (a downgrade before compaction rolled
    them again): every report named the file as skipped, though not a record was missing.
    Only a VM-day the file alone held (its rows gone) is named, with how many."""
    from vmstats.protocol import Record

    vms = ["vm0", "vm1", "vm2"]
    path = _write(tmp_path, vms, _aggregates(len(vms)), HISTOGRAMS, version=ROLLUP_VERSION + 1)
    start = logstore.day_number(DAY) * 86400
    for vm in vms:
        record = Record(vm=vm, ts=start + 600, cpu=1.0, mem=2.0)
        logstore.append_missing(str(tmp_path), vm, {record.ts: logstore.format_row(record)})
    issues = []
    units = discover([str(tmp_path)], issues)
    assert issues == [] and sorted(units) == [(vm, logstore.day_number(DAY)) for vm in vms]
    os.unlink(logstore.day_path(str(tmp_path), "vm1", DAY))
    units = discover([str(tmp_path)], issues)
    assert sorted(units) == [(vm, logstore.day_number(DAY)) for vm in ("vm0", "vm2")]
    assert [entry["path"] for entry in issues] == [path]
    assert "another aggregate version (%d), and the rows of 1 of its 3 VMs are gone" % (ROLLUP_VERSION + 1) \
        in issues[0]["problem"]
