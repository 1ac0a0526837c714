"""Command line of rtctl: parses flags, runs the command, turns errors into exit codes.

Only this module (and the command modules' ``run`` functions it calls) prints
to the user; library code raises. Every subcommand module exposes
``add_parser(subparsers) -> None``, which adds its parser and sets
``func=`` to an ``async def run(args) -> int``; ``main`` runs that coroutine.

Exit codes: 0 success, 1 run failed, timed out or an operational error
(collector or cluster unreachable, refused), 2 usage or preflight error (a
kubeconfig, context or run id that does not exist too), 130 interrupted
(SIGINT/SIGTERM: the run was cleaned up and marked aborted), 141 standard
output was closed by its reader (``| head``): the command stops quietly.

Signals: the first SIGINT or SIGTERM cancels the command's task; commands clean
up in their cancellation path (delete the Deployment, finish the run ABORTED,
wait for the pods to go) and end with ``Interrupted``. A further signal stops
the waiting for the pods (never the delete itself), so an impatient user is
never stuck and no Deployment is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import rtctl
from rtbench.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, component_parser, guard_closed_pipe

from .errors import Interrupted, RtctlError

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]

COMMAND_MODULES: tuple[str, ...] = (
    # One line per command module; each has add_parser(subparsers) (see the docstring).
    "rtctl.runcli",
    "rtctl.reportcli",
    "rtctl.plancli",
    "rtctl.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = component_parser("rtctl", rtctl.__doc__)
    subparsers: Any = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


async def _run_with_signals(command: Command, args: argparse.Namespace) -> int:
    """Run the command as a task that SIGINT/SIGTERM cancel (each signal cancels once more)."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(command(args), name=f"rtctl-{args.command}")
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, task.cancel)
    try:
        code: int = await task
        return code
    except asyncio.CancelledError:
        raise Interrupted("interrupted") from None
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _fail(message: str) -> None:
    print(f"rtctl: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    return guard_closed_pipe(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    command: Any = getattr(args, "func", None)
    if command is None:
        parser.error(f"{args.command} has no implementation")
    try:
        return asyncio.run(_run_with_signals(command, args))
    except RtctlError as exc:
        _fail(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _fail("interrupted")
        return Interrupted.exit_code
    except BrokenPipeError:
        raise  # guard_closed_pipe: the reader went away, nothing to say
    except OSError as exc:
        _fail(str(exc))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main() or EXIT_OK)
