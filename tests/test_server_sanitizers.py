"""The C parts under AddressSanitizer and UndefinedBehaviorSanitizer, on hostile input.

The other tests hold each C part to its Python reference, but a read past a buffer, a use
after free or a signed overflow can leave every answer right.  This builds the four modules
again with the sanitizers (sanitizers.py) and runs hostile/driver.py on them in a Python
of its own: any sanitizer report, any crash and any disagreement with a reference fails it.
The costly references are asked in the ordinary Python first, and the sanitized build held
to the answers they accepted.
gcc and libasan are installed through .ci/debian-packages when missing, so it fails rather
than skips on a machine without them.
"""

import re
from pathlib import Path

import pytest
import sanitizers


def test_every_c_part_setup_py_builds_is_sanitized():
    """A new C module in setup.py without its place here would go unchecked."""
    built = re.findall(r"vmstats/server/(_\w+)\.c", (sanitizers.ROOT / "setup.py").read_text())
    assert sorted(built) == sorted(sanitizers.MODULES)


@pytest.mark.timeout(900)  # four builds and a hostile run: minutes of work on a loaded host, not a hang
def test_the_c_parts_are_memory_safe_on_hostile_input(tmp_path: Path):
    gcc, libasan = sanitizers.toolchain()
    sanitizers.build(gcc, tmp_path)
    done = sanitizers.record(tmp_path)
    assert done.returncode == 0 and "recorded run: clean" in done.stdout, \
        (done.stdout + done.stderr)[-20000:]
    done = sanitizers.run(libasan, tmp_path)
    output = done.stdout + done.stderr
    assert not sanitizers.reports(output), output[-20000:]
    assert done.returncode == 0, output[-20000:]
    assert "sanitized run: clean" in done.stdout, output[-20000:]


def test_a_sanitizer_report_is_seen(tmp_path: Path):
    """The run above can fail: a read one byte past a bytes object's end, under the same
    build flags and environment, is reported and ends the process."""
    gcc, libasan = sanitizers.toolchain()
    source = tmp_path / "_overread.c"
    source.write_text(OVERREAD)
    module = sanitizers.compile_module(gcc, source, tmp_path / "out", [])
    done = sanitizers.run_code(libasan, "-c", "import _overread; _overread.last(b'abc')",
                               cwd=module.parent)
    assert done.returncode != 0 and sanitizers.reports(done.stderr), done.stderr[-5000:]


OVERREAD = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *
last(PyObject *self, PyObject *data)
{
    return PyLong_FromLong(PyBytes_AS_STRING(data)[PyBytes_GET_SIZE(data) + 1]);
}

static PyMethodDef methods[] = {{"last", last, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_overread", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__overread(void)
{
    return PyModule_Create(&module);
}
"""
