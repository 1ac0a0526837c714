"""What every rtbench command line shares: the version flag and the exit-code rule.

Exit codes across the project: 0 success, 1 operational error (something failed
while running), 2 usage error (bad flags, bad configuration, refused preflight).
"""

from __future__ import annotations

import argparse

from rtbench import __version__

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "component_parser"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def component_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A parser with ``--version`` whose subcommands are stored in ``args.command``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s (rtbench) {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser
