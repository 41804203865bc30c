"""bin/_setup rebuilds a C part whose build was replaced since it last ran.

Its stamp held only the sources' hash: ``pip install -e`` run from another branch's sources
replaced the .so files, the branch's sources were checked out again, and the stamp matched
them; bin/test then ran the other sources' builds, which the server refuses as stale
(server/native.py) -- the rebuild bin/test is there to do was skipped.  Here a copy of the tree,
with its own .venv and the stamp of this one's (the same sources and builds), has one C part
replaced by a build of an older source and runs bin/_setup as bin/test does.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from serverproc import ROOT
from test_server_stale_build import build_older, package_copy

#: What bin/_setup says when it installs.
INSTALLING = "vmstats: installing into .venv"


def setup(tree: Path) -> str:
    """bin/_setup sourced in ``tree`` as bin/test sources it: what it said."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("VMSTATS_EXTRAS", "PYTHONPATH")}
    done = subprocess.run(["bash", "-c", 'source "$1"', "_setup", str(tree / "bin" / "_setup")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_c_part_replaced_by_another_build_is_rebuilt(tmp_path):
    tree = tmp_path / "tree"
    server = package_copy(tree)
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "bin/_setup"):
        (tree / name).parent.mkdir(exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    # The copy's own .venv, seeing this one's packages (pip, the dependencies) but not its
    # vmstats (a path in a .pth file is no site directory: its editable install is not run).
    venv = tree / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "vmstats-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    shutil.copy2(ROOT / ".venv" / ".vmstats-installed", venv / ".vmstats-installed")
    setup(tree)  # installs only if this tree's .venv was not set up by bin/_setup as it is

    build_older("_linescan", server, tmp_path / "older")  # another checkout's build
    assert INSTALLING in setup(tree)
    loaded = subprocess.run([str(venv / "bin" / "python"), "-c",
                             "from vmstats.server import parse; print(parse.native_reader())"],
                            cwd=str(tree), capture_output=True, text=True)
    assert (loaded.returncode, loaded.stdout) == (0, "True\n"), loaded.stderr
    assert setup(tree) == ""  # and, rebuilt, it is fresh
