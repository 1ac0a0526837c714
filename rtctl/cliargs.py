"""Command-line values every rtctl command reads the same way: durations, counts, consoles.

Before this module each command had its own: ``start-run --timeout 5m`` was
refused while a plan file accepted ``5m``, the demo took bare floats only (so
``nan`` or ``1e7`` failed late, after files were written), and two commands
had their own "positive integer" and "wide console" helpers. One parser per
kind of value keeps the flags, the environment variables and the plan files
agreeing on what a value means.

The parsers raise ``ValueError`` with a short reason; ``argparse`` types wrap
them in ``ArgumentTypeError`` so argparse prints its usual one-line usage
error (exit 2). Nothing here does I/O except ``console``, which only asks
whether stdout is a terminal.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import re

from rich.console import Console

__all__ = [
    "WIDE_COLUMNS",
    "console",
    "duration_arg",
    "format_duration",
    "parse_duration",
]

WIDE_COLUMNS = 180
"""Width of a console that is not a terminal (a log, a pipe): rich would assume 80 and
fold the comparison's dozen columns; 180 fits every rtctl table unwrapped."""

_DURATION = re.compile(r"^(?P<num>[0-9]+(\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_MAX_DURATION_S = 7 * 24 * 3600.0
"""A week: longer than any run or pause can usefully be; anything above is a typo (say,
milliseconds given as seconds), better refused than waited for."""


def parse_duration(text: str) -> float:
    """Seconds from ``300``, ``2.5``, ``90s``, ``250ms``, ``5m`` or ``1h`` (ValueError
    otherwise: negative, not finite, exponent notation, or over a week)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 300, 90s, 250ms, 5m, 1h)")
    value = float(match["num"]) * _UNITS[match["unit"]]
    if not math.isfinite(value) or value > _MAX_DURATION_S:
        raise ValueError(f"{text!r} is longer than a week")
    return value


def format_duration(seconds: float) -> str:
    """The inverse of ``parse_duration`` for writing plan files: ``90s``, ``0.5s``; never in
    exponent notation, which the parser refuses."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def duration_arg(text: str) -> float:
    """argparse type: ``parse_duration``."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Console(Console):
    """rich's Console, except that a closed pipe raises BrokenPipeError like any other
    write: rich's own handling raises SystemExit inside the command's task, which the
    event loop turns into a cancellation and a traceback (rtbench.cli ends it quietly)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def console() -> Console:
    """A console on stdout: a terminal's own width, ``$COLUMNS`` when set (rich reads it),
    else ``WIDE_COLUMNS`` so tables in logs and pipes do not wrap."""
    found = _Console()
    if found.is_terminal or os.environ.get("COLUMNS"):
        return found
    return _Console(width=WIDE_COLUMNS)
