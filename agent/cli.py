"""Command line of the agent: parses flags, runs the command, turns errors into exit codes.

Only this module prints to the user; library code raises.
"""

from __future__ import annotations

import argparse
import sys

import agent
from rtbench import __version__

PROG = "agent"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=agent.__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s (rtbench) {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
