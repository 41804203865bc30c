"""The C parts built with AddressSanitizer and UndefinedBehaviorSanitizer, and run under them.

The four modules in vmstats/server/_*.c read untrusted network input, and a read past a
buffer or a signed overflow there need not show in any answer the tests compare.  Here
each is compiled again, with gcc's sanitizers and every undefined behaviour fatal, into a
directory of its own; hostile/driver.py then loads those copies in place of the normal
ones and throws hostile input at them in a Python that has libasan preloaded (an
interpreter not built with ASan must load the runtime first) and allocates with plain
malloc, so every bytes object has ASan's red zones around it rather than sitting inside
one of pymalloc's arenas.  A part whose Python reference is costly is held to it in the
ordinary Python first, which writes down each call and its answer for the sanitized run to
ask again of the sanitized build (hostile/answers.py), so that run's time goes to the C.

gcc and its libasan come from Debian; ``.ci/debian-packages`` installs them when missing.
Run as a script it builds into a temporary directory and runs the driver:
``.venv/bin/python tests/sanitizers.py``.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "vmstats" / "server"
TESTS = Path(__file__).resolve().parent
#: The modules and the libraries each links with (setup.py's Extensions).
MODULES = {"_framecheck": ["-lcrypto"], "_linescan": [], "_influxscan": [], "_minutes": []}
FLAGS = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
         "-fno-sanitize-recover=undefined", "-g", "-O1", "-shared", "-fPIC"]
#: What a sanitizer prints when it finds something; the driver's output must hold none.
REPORTS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer",
           "UndefinedBehaviorSanitizer")


def _libasan(gcc: str) -> Path | None:
    """gcc's own libasan.so, or None (gcc answers the bare name when it has none)."""
    found = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True,
                           text=True, check=True).stdout.strip()
    return Path(found).resolve() if os.path.isabs(found) and Path(found).exists() else None


def toolchain() -> tuple[str, Path]:
    """(gcc, its libasan.so), installed through the project's own script when missing, so
    the sanitizer test runs on a fresh machine instead of skipping; RuntimeError if even
    that leaves them missing."""
    for attempt in range(2):
        gcc = shutil.which("gcc")
        libasan = _libasan(gcc) if gcc else None
        if gcc and libasan:
            return gcc, libasan
        if attempt == 0:
            subprocess.run([str(ROOT / ".ci" / "debian-packages")], check=True, timeout=900)
    raise RuntimeError("gcc with libasan is missing after .ci/debian-packages")


def compile_module(gcc: str, source: Path, into: Path, libraries: list[str],
                   flags: list[str] = FLAGS) -> Path:
    """One extension module compiled from ``source`` with the sanitizers (or ``flags``), into
    ``into``."""
    paths = sysconfig.get_paths()
    includes = sorted({"-I" + paths["include"], "-I" + paths["platinclude"]})
    into.mkdir(parents=True, exist_ok=True)
    target = into / (source.stem + sysconfig.get_config_var("EXT_SUFFIX"))
    done = subprocess.run([gcc, *flags, *includes, str(source), "-o", str(target), *libraries],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError("%s did not compile:\n%s" % (source.name, done.stderr))
    return target


def build(gcc: str, into: Path) -> dict[str, Path]:
    """The four modules compiled with the sanitizers into ``into``: name -> shared object."""
    return {name: compile_module(gcc, SOURCES / (name + ".c"), into, libraries)
            for name, libraries in MODULES.items()}


def environment(libasan: Path) -> dict[str, str]:
    """The driver's environment: libasan first, leaks ignored (Python leaves its objects at
    exit), every allocation a malloc of its own, a report's stack printed whole."""
    env = dict(os.environ)
    env.update(LD_PRELOAD=str(libasan), PYTHONMALLOC="malloc",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
               PYTHONHASHSEED="0")
    return env


def run_code(libasan: Path, *arguments: str, timeout: float = 600,
             cwd: Path = TESTS) -> subprocess.CompletedProcess:
    """``python ARGUMENTS`` under the sanitizers' runtime, its output captured."""
    return subprocess.run([sys.executable, *arguments], env=environment(libasan),
                          capture_output=True, text=True, timeout=timeout, cwd=str(cwd))


def record(built_in: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """The driver's recorded parts run in the ordinary Python on the package's own build,
    their answers written into ``built_in`` for ``run``."""
    return subprocess.run([sys.executable, "-m", "hostile.driver", "--record", str(built_in)],
                          env=dict(os.environ, PYTHONHASHSEED="0"), capture_output=True,
                          text=True, timeout=timeout, cwd=str(TESTS))


def run(libasan: Path, built_in: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """The driver run on the modules in ``built_in`` (after ``record`` into it)."""
    return run_code(libasan, "-m", "hostile.driver", str(built_in), timeout=timeout)


def reports(output: str) -> list[str]:
    """The sanitizer reports' lines in a run's output."""
    return [line for line in output.splitlines() if any(word in line for word in REPORTS)]


def main() -> int:
    gcc, libasan = toolchain()
    with tempfile.TemporaryDirectory(prefix="vmstats-sanitized-") as tmp:
        build(gcc, Path(tmp))
        done = record(Path(tmp))
        if done.returncode == 0:
            done = run(libasan, Path(tmp))
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode or (1 if reports(done.stderr + done.stdout) else 0)


if __name__ == "__main__":
    sys.exit(main())
