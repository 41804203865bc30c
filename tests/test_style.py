"""The code base stays ruff clean, and the agent stays runnable on Python 3.6."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    result = subprocess.run([ruff, "check", "--no-cache", "vmstats", "tests", "bench"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_agent_and_protocol_need_at_most_python_3_6():
    vermin = Path(sys.executable).parent / "vermin"
    if not vermin.exists():
        pytest.skip("vermin is not installed")
    client = sorted((ROOT / "vmstats/client").glob("*.py"))
    targets = ["vmstats/protocol.py", "vmstats/words.py"] + [str(p.relative_to(ROOT)) for p in client]
    result = subprocess.run([str(vermin), "-t=3.6-", "--no-tips", "--violations", *targets],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
