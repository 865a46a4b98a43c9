"""The code style gate runs with the suite, so CI and developers see the same thing."""

import shutil
import subprocess

import pytest

from tests.conftest import ROOT


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is installed with the dev extra")
def test_ruff_is_clean():
    done = subprocess.run(["ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
