"""Every console script is installed, reports its version and refuses a bare call with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rtbench import __version__

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("script", ["agent", "collector", "rtctl"])
def test_version_and_usage(script: str) -> None:
    version = subprocess.run([BIN / script, "--version"], capture_output=True, text=True)
    assert version.returncode == 0
    assert version.stdout.strip() == f"{script} (rtbench) {__version__}"
    bare = subprocess.run([BIN / script], capture_output=True, text=True)
    assert bare.returncode == 2
    assert f"usage: {script}" in bare.stderr
    unknown = subprocess.run([BIN / script, "--no-such-flag"], capture_output=True, text=True)
    assert unknown.returncode == 2
    assert "unrecognized arguments" in unknown.stderr
