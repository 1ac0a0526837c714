"""Command line of the collector: parses flags, runs the command, turns errors into exit codes.

Only this module prints to the user; library code raises.

``collector serve`` takes its settings from defaults < environment
(``RTBENCH_COLLECTOR_<FLAG>``) < flags (``collector.settings``). Once serving it
prints exactly one line on stdout, which scripts and tests parse::

    collector ready listen=HOST:PORT journal=PATH collector_id=ID

and logs to stderr. SIGTERM or SIGINT drains and exits 0; a second signal skips
the drain. A bad flag or setting prints one line and exits 2 (as does refusing a
non-loopback address without a token); an operational failure (journal, port,
a crashed task) prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn

import collector
from rtbench.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, component_parser, guard_closed_pipe

from .errors import CollectorError, ConfigError
from .settings import ENV_PREFIX, OPTIONS, CollectorSettings, from_sources

if TYPE_CHECKING:
    from .app import Collector

SERVE_HELP = "journal agent batches, serve the control API, export to InfluxDB"


class UsageError(Exception):
    """A bad flag (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """Reports a bad flag as one line instead of usage text plus a line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = component_parser("collector", collector.__doc__)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            action.add_parser("serve", help=SERVE_HELP, add_help=False)
    return parser


def build_serve_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="collector serve",
        description=(
            "Receive agent batches over gRPC, commit them to the SQLite journal before "
            "acknowledging, serve the control API to rtctl and, when --influx-url is given, "
            "export the journal to InfluxDB. Every option can also be set in the environment "
            f"as {ENV_PREFIX}<OPTION>, e.g. {ENV_PREFIX}LISTEN=0.0.0.0:7070; flags win."
        ),
    )
    for option in OPTIONS:
        if option.switch:
            parser.add_argument(
                option.flag, action="store_const", const=True, default=None, help=option.help
            )
        else:
            metavar = option.dest.rpartition("_")[2].upper()
            parser.add_argument(
                option.flag, type=option.parse, default=None, metavar=metavar, help=option.help
            )
    return parser


def parse_serve(argv: Sequence[str], environ: Mapping[str, str]) -> CollectorSettings:
    """Settings for ``collector serve``; raises UsageError or ConfigError (both exit 2)."""
    args = build_serve_parser().parse_args(list(argv))
    return from_sources(vars(args), environ)


def _ready(running: Collector) -> None:
    journal = running.journal
    assert journal is not None
    print(
        f"collector ready listen={running.address} journal={journal.path} "
        f"collector_id={journal.collector_id}",
        flush=True,
    )


def run_serve(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    try:
        settings = parse_serve(argv, environ)
    except (UsageError, ConfigError) as exc:
        print(f"collector serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # gRPC's core would log its own copy of errors reported here in one line; it
    # reads the variable when first imported, hence the import below.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from .app import serve

    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(settings, ready=_ready))
    except ConfigError as exc:
        print(f"collector serve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CollectorError, OSError) as exc:
        print(f"collector serve: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return guard_closed_pipe(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        return run_serve(args[1:], os.environ)
    parser = build_parser()
    namespace = parser.parse_args(args)
    if namespace.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
