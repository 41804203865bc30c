"""Loaded by a test's capacity summary through PYTHONPATH: holds the summary before it reads.

With ``VMSTATS_TEST_STALL_SUMMARY`` set (a file name), a summary writes its process id to that
file as it loads the inventory and sleeps a minute: long enough for a test to kill the server
under it.  The server, which loads the inventory too, is not held.  Without the variable nothing
is changed.
"""

import os

if os.environ.get("VMSTATS_TEST_STALL_SUMMARY"):
    import time

    from vmstats.capacity import inventory

    _marker = os.environ["VMSTATS_TEST_STALL_SUMMARY"]
    _load = inventory.load_inventory

    def _stalled(path):
        with open("/proc/self/cmdline", "rb") as command:
            if b"vmstats.capacity.summary" not in command.read():
                return _load(path)
        with open(_marker, "w") as out:
            out.write(str(os.getpid()))
        time.sleep(60.0)
        return _load(path)

    inventory.load_inventory = _stalled
