"""The per-VM logs on disk: where they live, what a row holds, writing and reading them.

One package for the storage so the flusher that writes the logs and the report
that reads them can never disagree.  docs/STORAGE.md describes it for people.
Other modules import its names from here (``from vmstats import logstore``);
each is defined in one module of the package, named for what it holds:

- layout.py: where the logs live (``vms/<vm-id>/<YYYY-MM-DD>.csv``), day names and
  numbers, a VM's folder and day files, which folder names are VM ids.
- rows.py: what a row holds (columns, header, types) and its bytes as written.
- append.py: appending rows to day files, each once, never half a batch.
- files.py: what stands at a day file's name, opening one without blocking.
- text.py: parsing the lines of text day files, strictly or around damage.
- read.py: read_columns and read_rows, rows of text files and compacted Parts.
- labels.py: a VM's latest host and tags, from the end of its files.
- tiers.py: the compacted tiers' fleet-day files (Part, TierWriter, read_tier).
- rollups.py: a rollup file's aggregates as columns and back.
"""

from vmstats.logstore.append import KNOWN_ENDS, DayFileEnds, End, append_missing
from vmstats.logstore.files import (
    NotALogFile,
    describe_error,
    not_regular,
    open_day_file,
    remove_quietly,
    sync_dir,
)
from vmstats.logstore.labels import last_labels, last_labels_many, latest_labels, newest_labels
from vmstats.logstore.layout import (
    DAY_SECONDS,
    SUFFIX,
    VMS_DIR,
    LinkRefused,
    day_files,
    day_name,
    day_number,
    day_of,
    day_path,
    is_utf8,
    is_vm_id,
    iter_vms,
    link_problem,
    one_line,
    printable,
    split_days,
    vm_dir,
)
from vmstats.logstore.read import read_columns, read_rows
from vmstats.logstore.rollups import (
    ROLLUP_GROUP_VMS,
    SPARSE_BINS,
    SPARSE_COUNTS,
    SparseRows,
    rollup_arrays,
    rollup_table,
    rollup_writer,
)
from vmstats.logstore.rows import (
    COLUMNS,
    DTYPES,
    HEADER,
    HEADER_V1,
    LOG_VERSION,
    ROW_COMMAS,
    TAGS_SEPARATOR,
    TEXT_COLUMNS,
    format_row,
    format_tail,
)
from vmstats.logstore.tiers import (
    COLUMNAR_DIR,
    COLUMNAR_VERSION,
    PARTIAL_SUFFIX,
    ROLLUPS_DIR,
    TIER_SUFFIX,
    ZSTD_LEVEL,
    DamagedTier,
    Part,
    TierWriter,
    check_tier_file,
    columnar_schema,
    kept_rows,
    naming,
    read_tier,
    read_tier_part,
    source_path,
    table_vms,
    tier_days,
    tier_info,
    tier_path,
)

#: The names other modules use, each defined once in the module that holds it.
__all__ = [
    "COLUMNAR_DIR", "COLUMNAR_VERSION", "COLUMNS", "DAY_SECONDS", "DTYPES", "DamagedTier", "DayFileEnds",
    "End", "HEADER", "HEADER_V1", "KNOWN_ENDS", "LOG_VERSION", "LinkRefused", "NotALogFile",
    "PARTIAL_SUFFIX", "Part", "ROLLUPS_DIR", "ROLLUP_GROUP_VMS", "ROW_COMMAS", "SPARSE_BINS",
    "SPARSE_COUNTS", "SUFFIX", "SparseRows", "TAGS_SEPARATOR", "TEXT_COLUMNS", "TIER_SUFFIX", "TierWriter",
    "VMS_DIR", "ZSTD_LEVEL", "append_missing", "check_tier_file", "columnar_schema", "day_files",
    "day_name", "day_number", "day_of", "day_path", "describe_error", "format_row", "format_tail",
    "is_utf8", "is_vm_id", "iter_vms", "kept_rows", "last_labels", "last_labels_many", "latest_labels",
    "link_problem", "naming", "newest_labels", "not_regular", "one_line", "open_day_file", "printable",
    "read_columns", "read_rows", "read_tier", "read_tier_part", "remove_quietly", "rollup_arrays",
    "rollup_table", "rollup_writer", "source_path", "split_days", "sync_dir", "table_vms", "tier_days",
    "tier_info", "tier_path", "vm_dir",
]
