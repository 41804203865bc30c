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

_influxscan.c's ``scan`` also calls back into Python (``known``: a tag value's VM id, which
the decoder also puts in the ``vms`` it passed, or None, its refusal's words then in the
``bad_vms`` it may pass) and extends a ``lines`` list, and the ``deferred`` one it may pass;
its recorder (``CallingRecorder``) writes down each callback's answer and what it did to
``vms`` and ``bad_vms``, and the replay answers the sanitized build's callbacks from that, in
order, so the build meets the same dictionaries and the same answers the reference decoder
gave.
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
        #: The build's version, which its importer checks (vmstats/server/native.py).
        self.VERSION = module.VERSION
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


def _as_written(value):
    """A list or dict as it is now (the C extends and the callbacks fill them), else itself."""
    return list(value) if isinstance(value, list) else dict(value) if isinstance(
        value, dict) else value


class CallingRecorder(Recorder):
    """A Recorder for ``scan(data, spec, vms, known, now, divisor, lines[, bad_vms,
    deferred])``: besides the call and its answer, each ``known(raw)`` the scan made, its
    answer (or the exception it raised), whether it left ``raw`` in ``vms`` and how many
    entries ``vms`` then held (and ``bad_vms``, with what it left there for ``raw``), and
    ``lines`` (and ``deferred``) before and after."""

    def __init__(self, module: object) -> None:
        super().__init__(module)
        self.refused: dict = {}

    def scan(self, data, spec: Spec, vms, known, now, divisor, lines, *more):
        assert isinstance(spec, Spec), "a scan with a spec its recorder did not make"
        if vms != self.known:  # one copy while it holds, written down once (pickle's memo)
            self.known = _as_written(vms)
        bad = more[0] if more else None
        if more and bad != self.refused:
            self.refused = _as_written(bad)
        asked: list[tuple] = []

        def answering(raw):
            size = len(vms)
            bad_size = len(bad) if isinstance(bad, dict) else None

            def written(outcome):
                left = None if bad_size is None else (bad_size, len(bad), bad.get(raw))
                asked.append((raw, outcome, size, len(vms), raw in vms, left))

            try:
                answer = known(raw)
            except Exception as error:  # the C must pass it on; replayed as it was
                written(("raised", error))
                raise
            written(("answered", answer))
            return answer

        before = (_as_written(lines),) + ((self.refused, _as_written(more[1])) if more else ())
        try:
            answer, recorded = self._call(
                "scan", (data, spec.made, vms, answering if callable(known) else known, now,
                         divisor, lines, *more),
                (data, spec.index, self.known, asked if callable(known) else (known,), now,
                 divisor, *before))
        except Exception:
            self.calls[-1] += (_as_written(lines),) + ((_as_written(more[1]),) if more else ())
            raise
        self.calls.append(("scan", recorded, ("answered", answer), _as_written(lines))
                          + ((_as_written(more[1]),) if more else ()))
        return answer


#: The modules whose ``scan`` calls back into Python (CallingRecorder).
CALLING = ("_influxscan",)


def recording(name: str) -> Recorder:
    """``vmstats.server.NAME`` (the package's own build) behind a Recorder, in sys.modules
    and on the package before anything imports it, so every user of the module calls
    through it."""
    full = "vmstats.server." + name
    assert full not in sys.modules, full + " was imported before its recorder"
    kind = CallingRecorder if name in CALLING else Recorder
    recorder = kind(importlib.import_module(full))
    sys.modules[full] = recorder
    setattr(sys.modules["vmstats.server"], name, recorder)
    return recorder


def write(recorder: Recorder, path: Path) -> int:
    """The recorder's calls into ``path``; how many."""
    with open(path, "wb") as out:
        pickle.dump(recorder.calls, out, protocol=pickle.HIGHEST_PROTOCOL)
    return len(recorder.calls)


def _answering(asked: list[tuple], vms: dict, bad_vms: dict | None = None):
    """``known`` for a replayed scan: each call the one written down next, for the same
    tag value, answered (or raised) as it was and leaving ``vms`` (and ``bad_vms``) as that
    one did."""
    pending = iter(asked)

    def known(raw):
        written = next(pending, None)
        assert written is not None, "known(%r) called more often than written down" % raw[:80]
        expected, outcome, size, after, kept, left = written
        assert raw == expected and len(vms) == size, (raw[:80], expected[:80], len(vms), size)
        if after < size:
            vms.clear()
        if kept and outcome[0] == "answered":
            vms[raw] = outcome[1]
        assert len(vms) == after, (raw[:80], len(vms), after)
        if left is not None:
            bad_size, bad_after, words = left
            assert len(bad_vms) == bad_size, (raw[:80], len(bad_vms), bad_size)
            if bad_after < bad_size:
                bad_vms.clear()
            if words is not None:
                bad_vms[raw] = words
            assert len(bad_vms) == bad_after, (raw[:80], len(bad_vms), bad_after)
        if outcome[0] == "raised":
            raise outcome[1]
        return outcome[1]

    return known, pending


def _same(got: tuple, expected: tuple) -> bool:
    """Equal, or equal as written (a NaN in a sample is not equal to itself)."""
    return got == expected or repr(got) == repr(expected)


def replay(module: object, path: Path) -> int:
    """Every call written in ``path`` made again on ``module``, in order: each must end as
    it ended when it was written down; how many calls."""
    with open(path, "rb") as source:
        calls = pickle.load(source)
    assert calls, "%s holds no calls" % path
    made: dict[int, object] = {}
    for index, (name, arguments, expected, *lists_after) in enumerate(calls):
        pending = None
        calling = name == "scan" and len(arguments) in (7, 9)
        if name == "scan" and not calling:
            data, spec, known, lo, hi = arguments
            arguments = (data, made[spec], known, lo, hi)
        elif calling:
            data, spec, vms, asked, now, divisor, *lists = arguments
            vms = _as_written(vms)
            lists = [_as_written(value) for value in lists]  # lines[, bad_vms, deferred]
            if isinstance(asked, tuple):  # not a callable: passed as it was
                known = asked[0]
            else:
                bad_vms = lists[1] if len(lists) > 1 and isinstance(lists[1], dict) else None
                known, pending = _answering(asked, vms, bad_vms)
            arguments = (data, made[spec], vms, known, now, divisor, *lists)
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
        assert _same(got, expected), "call %d, %s%s: %r, written down %r" % (
            index, name, repr(arguments)[:300], got, expected)
        if pending is not None:
            assert next(pending, None) is None, "call %d: fewer known() calls" % index
        if calling:
            extended = [lists[0]] + lists[2:]  # lines[, deferred]
            assert _same(tuple(extended), tuple(lists_after)), \
                "call %d: lines %r, written down %r" % (index, extended, lists_after)
    return len(calls)
