"""What every rtbench command line shares: the version flag and the exit-code rule.

Exit codes across the project: 0 success, 1 operational error (something failed
while running), 2 usage error (bad flags, bad configuration, refused preflight),
141 the reader of standard output went away (``rtctl agents | head -1``): the
command stops quietly, as a Unix tool killed by SIGPIPE does (128 + 13), without
"[Errno 32] Broken pipe" or a traceback. SIGPIPE itself stays ignored, as Python
sets it: restoring its default would also kill a command mid-run, before it
cleans up, when a socket's peer goes away.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

from rtbench import __version__

__all__ = [
    "EXIT_CLOSED_PIPE",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "BadValue",
    "component_parser",
    "guard_closed_pipe",
    "parse_bool",
    "parse_float",
    "parse_int",
    "parse_positive_int",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CLOSED_PIPE = 141


def guard_closed_pipe(main: Callable[[list[str] | None], int], argv: list[str] | None) -> int:
    """``main(argv)``, with standard output flushed before returning (also on ``--help``'s
    SystemExit); a closed pipe on the way is EXIT_CLOSED_PIPE, silently. The output
    is then pointed at /dev/null, so the interpreter's own flush at exit has nowhere
    to fail."""
    try:
        try:
            return main(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except OSError:
            pass
        return EXIT_CLOSED_PIPE


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
