"""Every console script is installed, reports its version and refuses a bare call with exit 2."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from rtbench import __version__
from rtbench.cli import parse_bool, parse_float, parse_int

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


def test_shared_value_parsers_explain_themselves_to_argparse_and_to_settings() -> None:
    """A bad value's message reaches argparse users as is, and settings code reading the
    environment can catch it as ValueError."""
    parser = argparse.ArgumentParser(prog="x", exit_on_error=False)
    parser.add_argument("--n", type=parse_int)
    parser.add_argument("--f", type=parse_float)
    parser.add_argument("--b", type=parse_bool)
    args = parser.parse_args(["--n", "3", "--f", "0.5", "--b", "Yes"])
    assert (args.n, args.f, args.b) == (3, 0.5, True)
    for flag, text, message in (
        ("--n", "3.5", "must be an integer, got '3.5'"),
        ("--f", "nan", "must be a finite number, got 'nan'"),
        ("--f", "fast", "must be a number, got 'fast'"),
        ("--b", "maybe", "must be true or false, got 'maybe'"),
    ):
        with pytest.raises(argparse.ArgumentError, match=message):
            parser.parse_args([flag, text])
    with pytest.raises(ValueError, match="finite"):
        parse_float("inf")
    assert parse_bool(" off ") is False
