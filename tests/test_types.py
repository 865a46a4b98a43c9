"""The type check runs with the suite, so CI and developers see the same thing."""

import subprocess
import sys

from tests.conftest import ROOT


def test_mypy_is_clean():
    # The packages and options are in pyproject.toml, so a bare `python -m mypy` checks the same.
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
