"""A C module's answers, written down in a plain Python and asked of the sanitized build.

A Python reference can cost a hundred times what the C it checks does, and under the
sanitizers' runtime (libasan preloaded, every object a malloc of its own) more again: the
regexes that judge _linescan.c took 57 of the sanitized run's 65 profiled seconds, its
scans 0.3.  So a part with ``record`` runs its hostile input in the ordinary Python first,
through a ``Recorder`` standing in for the C module: every call goes to the package's own
build, is held to the reference as before, and is written down with its answer.  The
sanitized Python then makes the same calls, in the same order, on the sanitized build
(``replay``): each must give the answer written down, so every input still meets the
sanitized C and every answer is still one the reference accepted.
"""

import importlib
import pickle
import sys
from pathlib import Path


class Spec:
    """What ``spec()`` made, with its place in the log, so a scan's record can name it."""

    def __init__(self, made: object, index: int) -> None:
        self.made = made
        self.index = index


class Recorder:
    """A stand-in for a C module of ``spec()`` and ``scan()``: each call is passed to the
    module and written down, arguments and outcome (a value, or the exception's type and
    text), so ``replay`` can ask the same of another build."""

    def __init__(self, module: object) -> None:
        self.module = module
        self.calls: list[tuple] = []
        self.known: dict = {}

    def _call(self, name: str, arguments: tuple, recorded: tuple) -> object:
        try:
            answer = getattr(self.module, name)(*arguments)
        except Exception as error:  # written down as it is, then raised as it was
            self.calls.append((name, recorded, ("raised", type(error).__name__, str(error))))
            raise
        return answer, recorded

    def spec(self, *arguments) -> Spec:
        made, recorded = self._call("spec", arguments, arguments)
        self.calls.append(("spec", recorded, ("made", len(self.calls))))
        return Spec(made, len(self.calls) - 1)

    def scan(self, data, spec: Spec, known, lo, hi):
        assert isinstance(spec, Spec), "a scan with a spec its recorder did not make"
        if known != self.known:  # one copy while it holds, written down once (pickle's memo)
            self.known = dict(known)
        answer, recorded = self._call("scan", (data, spec.made, known, lo, hi),
                                      (data, spec.index, self.known, lo, hi))
        self.calls.append(("scan", recorded, ("answered", answer)))
        return answer


def recording(name: str) -> Recorder:
    """``vmstats.server.NAME`` (the package's own build) behind a Recorder, in sys.modules
    and on the package before anything imports it, so every user of the module calls
    through it."""
    full = "vmstats.server." + name
    assert full not in sys.modules, full + " was imported before its recorder"
    recorder = Recorder(importlib.import_module(full))
    sys.modules[full] = recorder
    setattr(sys.modules["vmstats.server"], name, recorder)
    return recorder


def write(recorder: Recorder, path: Path) -> int:
    """The recorder's calls into ``path``; how many."""
    with open(path, "wb") as out:
        pickle.dump(recorder.calls, out, protocol=pickle.HIGHEST_PROTOCOL)
    return len(recorder.calls)


def replay(module: object, path: Path) -> int:
    """Every call written in ``path`` made again on ``module``, in order: each must end as
    it ended when it was written down; how many calls."""
    with open(path, "rb") as source:
        calls = pickle.load(source)
    assert calls, "%s holds no calls" % path
    made: dict[int, object] = {}
    for index, (name, arguments, expected) in enumerate(calls):
        if name == "scan":
            data, spec, known, lo, hi = arguments
            arguments = (data, made[spec], known, lo, hi)
        try:
            answer = getattr(module, name)(*arguments)
        except Exception as error:
            got = ("raised", type(error).__name__, str(error))
        else:
            if name == "spec":
                made[index] = answer
                got = ("made", index)
            else:
                got = ("answered", answer)
        assert got == expected, "call %d, %s%s: %r, written down %r" % (
            index, name, repr(arguments)[:300], got, expected)
    return len(calls)
