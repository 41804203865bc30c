"""The rollup files' columns: each VM-day's aggregates as a table and back as numpy arrays.

The report's aggregate of a VM-day is kept one row per VM: 1-d aggregates as
plain columns, 2-d ones as one binary cell per row, and mostly-empty
histograms as their non-empty cells.  Where the files live and how they are
written and read is tiers.py's.
"""

from typing import Dict, Iterable, List, Mapping, NamedTuple, Tuple

from vmstats.logstore.tiers import TierWriter

#: VMs per row group of a rollup file (a fleet of up to this many: one group).  Per-column and
#: per-group costs dominate the reading of a file of many small groups: 90 files of 1,000 VMs
#: in groups of 64 took 3.2 s of CPU to read, in one group 0.7 s (bench/storage.py's data).
ROLLUP_GROUP_VMS = 4096
#: Rollup files without dictionary encoding (each VM's cells are unique: a dictionary only
#: costs decoding) and with statistics on ``vm`` only, the one column filtered on: 0.54 s
#: instead of 0.67 s for the same 90 files, 775 instead of 913 bytes a VM-day.
#: Rollups are LZ4_RAW (pyarrow's "lz4"), not zstd: a year-long report decodes a file a day, and
#: the 90 files of 1,000 VMs took 0.51 s of CPU to decode with zstd, 0.32 s with LZ4, for 1.3 KB
#: instead of 0.8 KB a VM-day, still under 2 KB (bench/storage.py --ninety-only).  Rollups
#: written with zstd before read as they are: Parquet records the codec per column chunk.
_ROLLUP_OPTIONS = {"use_dictionary": False, "write_statistics": ["vm"],
                   "compression": "lz4", "compression_level": None}


def rollup_writer(path: str) -> TierWriter:
    """The writer of a rollup file: add tables of up to ROLLUP_GROUP_VMS VMs each."""
    return TierWriter(path, options=_ROLLUP_OPTIONS)


#: A sparse column of a rollup file (a value histogram, mostly empty bins) is kept as two binary
#: columns, ``<name>.bins`` (each row's non-empty bin indices, little-endian uint16, ascending) and
#: ``<name>.counts`` (their counts, little-endian uint32): about 8 times fewer values to decode
#: than the dense bins, which is what a long window's report spends its time on.  The dense
#: width is in the field's metadata.
SPARSE_BINS = ".bins"
SPARSE_COUNTS = ".counts"
_SPARSE_WIDTH = b"bins"
_BIN_DTYPE = "<u2"
_COUNT_DTYPE = "<u4"
#: The other 2-d aggregates (per hour, per edge minute) are kept one fixed-size binary cell per
#: row, the row's values as bytes, dtype and width in the field's metadata: read as one buffer,
#: a fifth less CPU for a long window's report than the fixed-size lists older files hold (read
#: all the same), whose nested levels Parquet decodes value by value.
_DENSE_DTYPE = b"dtype"


class SparseRows(NamedTuple):
    """The non-empty cells of a 2-d array (``offsets``: ``len(offsets) - 1`` rows of ``width``), row
    by row: row r's are ``values[r, col[k]] = value[k]`` for k in ``offsets[r]:offsets[r + 1]``."""

    offsets: "object"
    col: "object"
    value: "object"
    width: int


def rollup_table(vms: List[str], labels: List[Tuple[int, str, str]], data: Mapping[str, "object"],
                 sparse: Iterable[str] = ()):
    """A rollup file's table: ``vm``, the last record's labels, one column per aggregate.

    ``data`` holds numpy arrays, one row per VM: 1-d ones become plain
    columns, 2-d ones (per hour, per bin) one fixed-size binary cell per row
    (DENSE_ROWS), so each keeps its own dtype and the file needs no schema
    of its own.  Those named in ``sparse`` (counts, mostly zero) are kept as
    their non-empty cells (SPARSE_BINS, SPARSE_COUNTS).
    """
    import numpy as np
    import pyarrow as pa

    sparse = set(sparse)
    columns = {
        "vm": pa.array(vms, pa.string()),
        "label_ts": pa.array([label[0] for label in labels], pa.int64()),
        "host": pa.array([label[1] for label in labels], pa.string()),
        "tags": pa.array([label[2] for label in labels], pa.string()),
    }
    fields = []
    for name, values in data.items():
        values = np.ascontiguousarray(values)
        if name in sparse:
            fields.extend(_sparse_columns(name, values))
        elif values.ndim == 1:
            columns[name] = pa.array(values)
        else:
            fields.append(_dense_rows(name, values))
    table = pa.table(columns)
    for field, column in fields:
        table = table.append_column(field, column)
    return table


def _dense_rows(name: str, values):
    """The fixed-size binary column (with its field) of a 2-d array: one cell of a row's bytes."""
    import pyarrow as pa

    width = values.shape[1] * values.dtype.itemsize
    meta = {_DENSE_DTYPE: values.dtype.str.encode(), _SPARSE_WIDTH: str(values.shape[1]).encode()}
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(values)])
    return pa.field(name, pa.binary(width), metadata=meta), column


def _sparse_columns(name: str, values):
    """The two binary columns (with their fields) of a 2-d count array kept sparse."""
    import numpy as np
    import pyarrow as pa

    if values.ndim != 2 or values.shape[1] > np.iinfo(_BIN_DTYPE).max + 1 or values.min(initial=0) < 0:
        raise ValueError("%s cannot be kept sparse" % name)
    row, col = np.nonzero(values)  # row-major: each row's bins ascending
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum(np.bincount(row, minlength=len(values)), out=offsets[1:])
    meta = {_SPARSE_WIDTH: str(values.shape[1]).encode()}
    out = []
    for suffix, cells, dtype in ((SPARSE_BINS, col, _BIN_DTYPE),
                                 (SPARSE_COUNTS, values[row, col], _COUNT_DTYPE)):
        data = np.ascontiguousarray(cells, dtype)
        size = np.dtype(dtype).itemsize
        array = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(values), [
            None, pa.py_buffer(offsets * size), pa.py_buffer(data.view(np.uint8))])
        out.append((pa.field(name + suffix, pa.large_binary(), metadata=meta), array))
    return out


def rollup_arrays(table) -> Tuple[List[str], Dict[str, "object"]]:
    """``(vms, {aggregate: numpy array or SparseRows})`` of a rollup table (rollup_table's
    inverse): sparse columns come back as their cells, for the reader to place or sum."""
    import numpy as np
    import pyarrow as pa

    vms = table.column("vm").to_pylist()
    out = {}
    for name in table.column_names:
        if name in ("vm", "label_ts", "host", "tags") or name.endswith(SPARSE_COUNTS):
            continue
        if name.endswith(SPARSE_BINS):
            base = name[: -len(SPARSE_BINS)]
            width = int((table.schema.field(name).metadata or {}).get(_SPARSE_WIDTH, -1))
            if width < 1:
                raise ValueError("%s: its bin count is not given" % base)
            offsets, col = _binary_cells(table.column(name), _BIN_DTYPE)
            counts_offsets, value = _binary_cells(table.column(base + SPARSE_COUNTS), _COUNT_DTYPE)
            if not np.array_equal(offsets, counts_offsets) or (len(col) and int(col.max()) >= width):
                raise ValueError("%s: its bins and counts do not match" % base)
            out[base] = SparseRows(offsets, col, value, width)
            continue
        column = _one_array(table.column(name))
        meta = table.schema.field(name).metadata or {}
        if pa.types.is_fixed_size_binary(column.type) and _DENSE_DTYPE in meta:
            out[name] = _dense_cells(column, meta[_DENSE_DTYPE].decode(), int(meta[_SPARSE_WIDTH]))
        elif pa.types.is_fixed_size_list(column.type):
            width = column.type.list_size
            out[name] = _numbers(column.flatten()).reshape(len(column), width)
        else:
            out[name] = _numbers(column)
        if out[name].dtype.kind not in "biuf":
            raise ValueError("%s is not a column of numbers (%s)" % (name, column.type))
    return vms, out


def _one_array(column):
    """A ChunkedArray as one Array: its only chunk as it is (``combine_chunks`` would copy it,
    ~270 MB for a 90-day report's rollups), or the chunks joined."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _numbers(array):
    """A numeric Arrow array as numpy (read-only): a view through DLPack when it has no nulls
    (aggregates never do; NaN is a value), which spares the import of pandas (~0.5 s) that
    pyarrow's ``to_numpy`` makes even for a view."""
    import numpy as np

    if array.null_count == 0:
        try:
            return np.from_dlpack(array)
        except (TypeError, ValueError, BufferError):  # a type DLPack does not carry (bool)
            pass
    return np.asarray(array.to_numpy(zero_copy_only=False))


def _dense_cells(column, dtype: str, width: int):
    """The 2-d array of a fixed-size binary column written by _dense_rows (a view of its buffer)."""
    import numpy as np

    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError("a column of unknown values (%s)" % dtype) from None
    if column.null_count or column.type.byte_width != width * dtype.itemsize:
        raise ValueError("a %d-byte column of %d %s values" % (column.type.byte_width, width, dtype))
    data = column.buffers()[1]
    return np.frombuffer(data, dtype, len(column) * width, column.offset * column.type.byte_width).reshape(
        len(column), width)


def _binary_cells(column, dtype: str):
    """``(offsets, cells)`` of a binary column of fixed-size cells: row r holds
    ``cells[offsets[r]:offsets[r + 1]]`` (numpy views of the column's buffers, no per-row work)."""
    import numpy as np
    import pyarrow as pa

    column = _one_array(column) if isinstance(column, pa.ChunkedArray) else column
    if column.type != pa.large_binary():
        column = column.cast(pa.large_binary())
    if column.null_count:
        raise ValueError("a sparse column with empty rows")
    size = np.dtype(dtype).itemsize
    _validity, offsets_buffer, data_buffer = column.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64, len(column) + 1, column.offset * 8)
    first, last = int(offsets[0]), int(offsets[-1])
    if (offsets % size).any():
        raise ValueError("a sparse column of cells not %d bytes long" % size)
    cells = np.frombuffer(data_buffer, np.dtype(dtype), (last - first) // size, first) if last > first \
        else np.zeros(0, dtype)
    return (offsets - first) // size, cells
