"""Building the agent as one self-contained file for VM images.

A zipapp (PEP 441) runs with the VM's own ``python3`` and needs nothing
installed: it holds the package marker, the wire format, the wording of counts and the agent, and
nothing that imports a third-party library (the click wrapper stays out).
Entries get a fixed date and order, so the same sources give the same bytes
and an image build can check the bundle by hash.

Standard library only, Python 3.6+.
"""

import os
import stat
import zipfile

SHEBANG = b"#!/usr/bin/env python3\n"
ENTRY = (b'"""vmstats-agent bundle: python3 vmstats-agent.pyz --help"""\n'
         b"import sys\n\nfrom vmstats.client.__main__ import main\n\nsys.exit(main())\n")
#: Modules left out: they need the full install (click).
EXCLUDED = ("command.py",)
_DATE = (2020, 1, 1, 0, 0, 0)


def bundle_sources():
    """``[(archive name, path)]`` of the files that go into the bundle."""
    client = os.path.dirname(os.path.abspath(__file__))
    package = os.path.dirname(client)
    files = [("vmstats/__init__.py", os.path.join(package, "__init__.py")),
             ("vmstats/protocol.py", os.path.join(package, "protocol.py")),
             ("vmstats/words.py", os.path.join(package, "words.py"))]
    for name in sorted(os.listdir(client)):
        if name.endswith(".py") and name not in EXCLUDED:
            files.append(("vmstats/client/" + name, os.path.join(client, name)))
    return files


def _add(archive, name, data):
    info = zipfile.ZipInfo(name, date_time=_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def build(output):
    """Write the executable zipapp to ``output``; returns the archive names.

    Written to a temporary name and renamed, so a failed build never leaves
    a truncated bundle where an image build expects a good one.
    """
    temporary = output + ".tmp"
    names = []
    handle = open(temporary, "wb")
    try:
        with handle:
            handle.write(SHEBANG)
            with zipfile.ZipFile(handle, "w") as archive:
                _add(archive, "__main__.py", ENTRY)
                names.append("__main__.py")
                for name, path in bundle_sources():
                    with open(path, "rb") as source:
                        _add(archive, name, source.read())
                    names.append(name)
        mode = os.stat(temporary).st_mode
        os.chmod(temporary, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        os.replace(temporary, output)
    except BaseException:
        os.unlink(temporary)
        raise
    return names
