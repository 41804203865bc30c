"""Hostile input for the sanitized C parts: run by sanitizers.py, never collected by pytest.

``python -m hostile.driver DIR [PART...]`` (from tests/) loads the four modules built with
the sanitizers in DIR in place of the package's own, then feeds each what a hostile sender
could send -- random bytes, every prefix and single-byte damage of valid input, oversized
frames, overlong lines and fields, numbers of every size and spelling, escapes at a
buffer's end, bad UTF-8, NULs, and for the minutes odd sequences of samples -- and, where
the module has a Python reference, holds the two to the same answers with the existing
tests' own helpers.  Any sanitizer report ends the process (the run's output shows it); a
disagreement raises.  The seeds are fixed, so a failure repeats.

A part whose reference costs far more than its C (RECORDED) is run first by
``python -m hostile.driver --record DIR`` in the ordinary Python, on the package's own
build and held to the reference there; every call it made and its answer are written in
DIR (answers.py), and the sanitized run makes those calls again on the sanitized build,
each to the answer written down, so its time goes to the C and none to the reference.
"""

import importlib
import importlib.util
import sys
import sysconfig
import time
from pathlib import Path

from sanitizers import MODULES

from hostile import answers

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
#: The parts whose reference runs in the ordinary Python, and the C module each records:
#: the regexes behind linescan cost two hundred times its scans, and influx.py's decoder
#: took 5 of the sanitized run's 11 seconds (its replay 1.2).
RECORDED = {"linescan": "_linescan", "influxscan": "_influxscan"}


def answers_file(built_in: Path, name: str) -> Path:
    return built_in / (name + ".answers")


def record(built_in: Path) -> None:
    """Each RECORDED part run on the package's own build, its calls written down."""
    recorders = {name: answers.recording(module) for name, module in RECORDED.items()}
    for name, recorder in recorders.items():
        start = time.perf_counter()
        importlib.import_module("hostile." + name).run()
        calls = answers.write(recorder, answers_file(built_in, name))
        print("hostile.%s: %d calls recorded, %.1f s" % (name, calls, time.perf_counter() - start),
              flush=True)
    print("recorded run: clean", flush=True)


def main(built_in: Path, parts: list[str]) -> None:
    """Every part (or those named, to repeat one), each timed."""
    load_sanitized(built_in)
    check_loaded(built_in)
    for name in parts or PARTS:
        start = time.perf_counter()
        if name in RECORDED:
            count = answers.replay(sys.modules["vmstats.server." + RECORDED[name]],
                                   answers_file(built_in, name))
        else:
            count = importlib.import_module("hostile." + name).run()
        print("hostile.%s: %d inputs, %.1f s" % (name, count, time.perf_counter() - start),
              flush=True)
    print("sanitized run: clean", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--record":
        record(Path(sys.argv[2]))
    else:
        main(Path(sys.argv[1]), sys.argv[2:])
