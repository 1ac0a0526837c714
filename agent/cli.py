"""Command line of the agent: parses flags, runs the command, turns errors into exit codes.

Only this module prints to the user; library code raises.
"""

from __future__ import annotations

import argparse
import sys

import agent
from rtbench.cli import EXIT_OK, EXIT_USAGE, component_parser


def build_parser() -> argparse.ArgumentParser:
    return component_parser("agent", agent.__doc__)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
