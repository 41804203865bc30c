"""Hostile input for the sanitized C parts: run by sanitizers.py, never collected by pytest.

``python -m hostile.driver DIR [PART...]`` (from tests/) loads the four modules built with
the sanitizers in DIR in place of the package's own, then feeds each what a hostile sender
could send -- random bytes, every prefix and single-byte damage of valid input, oversized
frames, overlong lines and fields, numbers of every size and spelling, escapes at a
buffer's end, bad UTF-8, NULs, and for the minutes odd sequences of samples -- and, where
the module has a Python reference, holds the two to the same answers with the existing
tests' own helpers.  Any sanitizer report ends the process (the run's output shows it); a
disagreement raises.  The seeds are fixed, so a failure repeats.
"""

import importlib
import importlib.util
import sys
import sysconfig
import time
from pathlib import Path

from sanitizers import MODULES

SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")


def load_sanitized(built_in: Path) -> None:
    """Put the sanitized modules in sys.modules under the package's names, before anything
    imports the normal ones, so every import of them (the tests' helpers' too) gets these."""
    for name in MODULES:
        spec = importlib.util.spec_from_file_location("vmstats.server." + name,
                                                      built_in / (name + SUFFIX))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[spec.name] = module


def check_loaded(built_in: Path) -> None:
    """Each reference module really holds the sanitized build (not the package's own)."""
    from vmstats.server import parse, signing
    from vmstats.server.formats import influx, minutes
    for owner in (signing, parse, influx, minutes):
        found = Path(owner._native.__file__).resolve()
        assert found.parent == built_in.resolve(), (owner.__name__, found)


PARTS = ("framecheck", "linescan", "influxscan", "minutes")


def main(built_in: Path, parts: list[str]) -> None:
    """Every part (or those named, to repeat one), each timed."""
    load_sanitized(built_in)
    check_loaded(built_in)
    for name in parts or PARTS:
        part = importlib.import_module("hostile." + name)
        start = time.perf_counter()
        count = part.run()
        print("%s: %d inputs, %.1f s" % (part.__name__, count, time.perf_counter() - start),
              flush=True)
    print("sanitized run: clean", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
