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
says so in a warning at start.
"""

import importlib
import os
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
    try:
        module = importlib.import_module(full)
    except ImportError:  # not built (no C compiler), or a library it links with is missing
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
