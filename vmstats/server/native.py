"""The C parts (setup.py) loaded for the Python that calls them, each checked to be a build of
the version of its ``.c`` that the Python was written against.

Each ``_*.c`` numbers what passes between it and its caller (its functions, their arguments,
the spec it is given, what it answers) as its ``VERSION``, and the module that imports it names
the number it calls.  A build from another version of the source than the Python beside it --
a checkout pulled and the server run without rebuilding (``bin/_setup`` rebuilds only when it
runs) -- had other functions, arguments or flags than the callers expected, and failed only
when called: a server that started fine answered 500 to every HTTP write, or read lines
otherwise.  ``load`` refuses such a build at import, with the one line that says how to rebuild
it; ``cli.py`` ends the command with that line, exit status 2.  The check costs the import
alone, nothing on the path each payload takes.

A module that was not built at all (no C compiler, or no OpenSSL headers for
``_framecheck``) is None: its caller does the same work in Python, slower, and the server
says so in a warning at start.  So is one built that does not load (a truncated file, a symbol
or a library it links with missing where it runs): there the warning names the module and the
loader's error (``unloadable``), which ``load``, meeting it at import, has no one to tell.
"""

import importlib
import importlib.machinery
import importlib.util
import os
import struct
import sys
from types import ModuleType

#: The package the C parts are built into (setup.py's Extensions).
PACKAGE = "vmstats.server"


class StaleBuild(Exception):
    """A C part built from another version of its source than the Python that calls it."""


def load(name: str, version: int) -> ModuleType | None:
    """``vmstats.server.<name>`` if it was built, else None; StaleBuild if it was built from
    another version of ``<name>.c`` than ``version``.  A build with no ``VERSION`` predates
    the numbering: version 0."""
    full = "%s.%s" % (PACKAGE, name)
    module = sys.modules.get(full)  # imported already (a copy put in its place, in the tests)
    if module is None:
        spec = importlib.util.find_spec(full)
        if spec is None or (spec.origin and cut_short(spec.origin)):  # not built, or cut short
            return None
        try:
            module = importlib.import_module(full)
        except ImportError:  # not a library, or a symbol or a library it links with is missing
            return None
    built = getattr(module, "VERSION", 0)
    if built != version:
        raise StaleBuild("C module %s is stale: built from version %s of %s.c, its Python "
                         "calls version %d; rebuild it: %s"
                         % (full, built, name, version, rebuild(importlib.import_module(PACKAGE))))
    return module


def rebuild(package: ModuleType) -> str:
    """The command that rebuilds the C parts of ``package`` where it is: built in place in a
    source tree (an editable install, as bin/_setup makes), pip installing that tree again with
    the Python running; else vmstats reinstalled from its wheel."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(package.__file__))))
    if os.path.isfile(os.path.join(root, "setup.py")):
        return "%s -m pip install -e %s" % (sys.executable, root)
    return "reinstall vmstats: %s -m pip install --force-reinstall vmstats-*.whl" % sys.executable


def cut_short(path: str) -> str | None:
    """Why the shared object at ``path`` is cut short (a copy or a build a full disk ended), or
    None.  The loader does not check: it maps the file as its header lays it out and the
    process dies of SIGBUS touching what is not there, the command gone without a word.  The
    header's section table ends the file as the linker writes it, so a file ending before
    that end is cut short.  What is not ELF, or shorter than its header, is left to the
    loader, which refuses it with an error."""
    try:
        with open(path, "rb") as built:
            head = built.read(64)
            size = os.fstat(built.fileno()).st_size
    except OSError as exc:
        return str(exc)
    if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] not in (1, 2):
        return None
    order, wide = "<" if head[5] == 1 else ">", head[4] == 2  # byte order; 64-bit
    table, = struct.unpack_from(order + ("Q" if wide else "I"), head, 0x28 if wide else 0x20)
    entry, count = struct.unpack_from(order + "HH", head, 0x3A if wide else 0x2E)
    end = table + entry * count
    if size < end:
        return "%s: cut short: %d bytes, its ELF header lays out %d" % (path, size, end)
    return None


def unloadable() -> dict[str, str]:
    """Each C part built into the package that does not load (its name, ``_linescan``) and the
    line that says so, naming it and the loader's error: ``load`` took such a part for one not
    built, silently, and the server says these at start.  Each is imported again here (a failed
    import is not kept), so the error is asked of the loader where it is said rather than kept
    in this module from the first attempt."""
    package = importlib.import_module(PACKAGE)
    lines = {}
    for folder in package.__path__:
        for entry in sorted(os.listdir(folder)):
            suffix = next((suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES
                           if entry.endswith(suffix)), None)
            name = entry[:-len(suffix or entry)]
            # "." in the name: a build for another Python (_linescan.cpython-310-...so), which
            # this one never looks for.
            if not name or "." in name or not os.path.isfile(os.path.join(folder, entry)):
                continue
            full = "%s.%s" % (PACKAGE, name)
            if full in sys.modules:  # loaded
                continue
            error = cut_short(os.path.join(folder, entry))
            if error is None:
                try:
                    importlib.import_module(full)
                except ImportError as exc:
                    error = str(exc)
            if error is not None:
                lines[name] = ("C module %s is built but does not load (%s): its work is done "
                               "in Python, slower; rebuild it: %s" % (full, error, rebuild(package)))
    return lines
