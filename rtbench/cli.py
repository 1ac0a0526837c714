"""What every rtbench command line shares: the version flag and the exit-code rule.

Exit codes across the project: 0 success, 1 operational error (something failed
while running), 2 usage error (bad flags, bad configuration, refused preflight).
"""

from __future__ import annotations

import argparse
import math

from rtbench import __version__

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "BadValue",
    "component_parser",
    "parse_bool",
    "parse_float",
    "parse_int",
    "parse_positive_int",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def component_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A parser with ``--version`` whose subcommands are stored in ``args.command``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s (rtbench) {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


class BadValue(argparse.ArgumentTypeError, ValueError):
    """A flag's or environment variable's text is not a value of its kind. argparse shows
    the message as is; settings code reading the environment catches it as ValueError."""


def parse_int(text: str) -> int:
    """An integer flag or environment value."""
    try:
        return int(text)
    except ValueError:
        raise BadValue(f"must be an integer, got {text!r}") from None


def parse_positive_int(text: str) -> int:
    """An integer of at least 1 (counts: nodes, replicas, resamples)."""
    value = parse_int(text)
    if value < 1:
        raise BadValue(f"must be at least 1, got {value}")
    return value


def parse_float(text: str) -> float:
    """A finite number (``nan`` and ``inf`` are never a meaningful setting)."""
    try:
        value = float(text)
    except ValueError:
        raise BadValue(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise BadValue(f"must be a finite number, got {text!r}")
    return value


def parse_bool(text: str) -> bool:
    """1/true/yes/on or 0/false/no/off, in any case."""
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise BadValue(f"must be true or false, got {text!r}")
