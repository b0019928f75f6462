"""The engine and ingest packages stay mypy-clean (configuration in pyproject.toml)."""

import subprocess
import sys

from conftest import ROOT


def test_mypy_clean():
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=str(ROOT), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
