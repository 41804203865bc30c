"""Loaded by a test's compaction pass through PYTHONPATH: holds the pass in the middle of its work.

With ``VMSTATS_TEST_STALL_COMPACT`` set (a file name), a pass stops right after its first
columnar file is renamed into place (its rollups and the removal of its CSV files still to
come), writes its process id to that file and sleeps a minute: long enough for a test to kill
the server under it.  Without the variable nothing is changed.
"""

import os

if os.environ.get("VMSTATS_TEST_STALL_COMPACT"):
    import time

    from vmstats.server import compact

    _marker = os.environ["VMSTATS_TEST_STALL_COMPACT"]
    _compact = compact.compact

    def _stall(what: str) -> None:
        if what.startswith("columnar "):
            with open(_marker, "w") as out:
                out.write(str(os.getpid()))
            time.sleep(60.0)

    def _stalled(data_dir, policy, now=None, step=None, trust_clock=False):
        return _compact(data_dir, policy, now=now, step=_stall, trust_clock=trust_clock)

    compact.compact = _stalled
