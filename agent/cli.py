"""Command line of the agent: parses flags, runs the command, turns errors into exit codes.

Only this module prints to the user; library code raises. ``agent run`` takes
its settings from defaults < environment (``RTBENCH_AGENT_<FLAG>``, ``NODE_NAME``)
< flags (agent/settings.py). A bad flag or value prints one line and exits 2;
a failure to start or a task that dies prints one line and exits 1; SIGTERM or
SIGINT flushes to the collector and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import NoReturn

import agent
from rtbench.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, component_parser, guard_closed_pipe

from .app import run_agent
from .errors import AgentError, ConfigError
from .settings import OPTIONS, AgentSettings, help_text, settings_from_sources

RUN_DESCRIPTION = (
    "Watch the pods on this node, probe them, sample the node's resources, read sandbox and "
    "container create/start/exit from containerd's events when its socket is there "
    "(--containerd-socket), and stream everything to the collector, keeping every "
    "unacknowledged batch in a spool. Every flag "
    "can also be set in the environment as RTBENCH_AGENT_<FLAG> (e.g. "
    "RTBENCH_AGENT_COLLECTOR=host:7070); the node also comes from NODE_NAME. Flags win."
)


class UsageError(ConfigError):
    """A flag the run parser cannot parse (exit 2)."""


class _RunParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def run_parser() -> argparse.ArgumentParser:
    """The flags of ``agent run``; values stay strings, settings_from_sources checks them."""
    parser = _RunParser(prog="agent run", description=RUN_DESCRIPTION, allow_abbrev=False)
    for option in OPTIONS:
        text = f"{help_text(option)} [env {option.env}]"
        if option.switch:
            parser.add_argument(option.flag, action="store_true", default=None, help=text)
        else:
            parser.add_argument(option.flag, default=None, metavar=option.dest.upper(), help=text)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = component_parser("agent", agent.__doc__)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            # Only names the command for --help; its flags are parsed by run_parser(),
            # which reports a bad flag in one line instead of argparse's usage block.
            action.add_parser("run", help="run the agent on this node", add_help=False)
    return parser


def parse_run(argv: Sequence[str], environ: Mapping[str, str]) -> AgentSettings:
    """Settings for ``agent run ARGV``; raises UsageError or ConfigError."""
    args = run_parser().parse_args(list(argv))
    return settings_from_sources(environ, vars(args))


def _fail(message: str, code: int) -> int:
    print(f"agent: error: {message}", file=sys.stderr)
    return code


def run_command(argv: Sequence[str]) -> int:
    try:
        settings = parse_run(argv, os.environ)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(run_agent(settings))
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except AgentError as exc:
        return _fail(str(exc), EXIT_FAILED)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return guard_closed_pipe(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return run_command(rest)


if __name__ == "__main__":
    sys.exit(main())
