"""Live progress of a run on the terminal: counts per phase while pods start, then teardown.

``execute_run`` reports what happens through the ``RunDisplay`` protocol and
never prints itself, so the same run can be shown as a live rich view on a
terminal (a bar per phase), as a plain line every few seconds where output is
a log (CI, a pipe), or not at all (tests, a plan that draws its own display).
``display_for`` picks rich or plain by whether the stream is a terminal.

Phases are shown in the order a pod goes through them (the enum's lifecycle
order: created, scheduled, sandbox_created ... ready), only those reported so
far, so containerd's sandbox and container phases appear when a node has them.
"""

from __future__ import annotations

import time
from typing import IO, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rtbench.v1 import control_pb2, events_pb2

__all__ = [
    "LIFECYCLE",
    "PlainDisplay",
    "QuietDisplay",
    "RichDisplay",
    "RunDisplay",
    "countdown_label",
    "display_for",
    "phase_name",
]

LIFECYCLE: tuple[int, ...] = (
    events_pb2.PHASE_CREATED,
    events_pb2.PHASE_SCHEDULED,
    events_pb2.PHASE_SANDBOX_CREATED,
    events_pb2.PHASE_SANDBOX_STARTED,
    events_pb2.PHASE_CONTAINER_CREATED,
    events_pb2.PHASE_CONTAINER_STARTED,
    events_pb2.PHASE_RUNNING,
    events_pb2.PHASE_FIRST_RESPONSE,
    events_pb2.PHASE_READY,
)
"""The start-up phases in the order a pod goes through them."""
_SHOWN = (*LIFECYCLE, events_pb2.PHASE_FAILED)


def phase_name(phase: int) -> str:
    """``first_response`` for PHASE_FIRST_RESPONSE."""
    return str(events_pb2.Phase.Name(phase)).removeprefix("PHASE_").lower()


def _counts(progress: control_pb2.Progress) -> list[tuple[int, int]]:
    """(phase, count) of the phases worth showing, in lifecycle order."""
    counts: dict[int, int] = {int(c.phase): c.count for c in progress.counts}
    return [(p, counts[p]) for p in _SHOWN if counts.get(p)]


def countdown_label(done: float, total: float) -> str:
    """``12/30`` when counting things (an int total), ``1.5/5.0 s`` for seconds."""
    if isinstance(total, int):
        return f"{int(done)}/{total}"
    return f"{done:.1f}/{total:.1f} s"


class RunDisplay(Protocol):
    """What a run shows while it goes; every method returns at once (no I/O waits)."""

    def stage(self, text: str) -> None:
        """A new step begins (preflight, creating the Deployment, waiting, teardown, settle)."""

    def note(self, text: str) -> None:
        """A fact worth its own line: the create's API latency, a preflight warning."""

    def progress(self, progress: control_pb2.Progress) -> None:
        """The collector's latest counts per phase for the run (also re-sent as a tick)."""

    def countdown(self, what: str, done: float, total: float) -> None:
        """Progress of a teardown or settle step: ``done`` of ``total``; ints count things
        (pods), floats are seconds."""

    def close(self) -> None:
        """The run is over: stop any live rendering (idempotent)."""


class QuietDisplay:
    """Shows nothing; keeps the stages, notes and last progress, for tests and scripts."""

    def __init__(self) -> None:
        self.stages: list[str] = []
        self.notes: list[str] = []
        self.last: control_pb2.Progress | None = None

    def stage(self, text: str) -> None:
        self.stages.append(text)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def progress(self, progress: control_pb2.Progress) -> None:
        self.last = progress

    def countdown(self, what: str, done: float, total: float) -> None:
        pass

    def close(self) -> None:
        pass


class PlainDisplay:
    """One line per stage and note, and a progress line at most every ``interval_s``.

    A changed line that was held back is written before the next stage starts, so the
    log always shows the last counts of each step.
    """

    def __init__(self, stream: IO[str], interval_s: float = 5.0) -> None:
        self._stream = stream
        self._interval_s = interval_s
        self._started = time.monotonic()
        self._printed = float("-inf")
        self._last_line = ""
        self._held: str | None = None

    def _write(self, text: str) -> None:
        self._stream.write(f"[{time.monotonic() - self._started:7.1f}s] {text}\n")
        self._stream.flush()

    def _offer(self, line: str, force: bool) -> None:
        now = time.monotonic()
        if line == self._last_line and now - self._printed < 4 * self._interval_s:
            return  # nothing changed: say it again only now and then
        if force or now - self._printed >= self._interval_s:
            self._write(line)
            self._printed, self._last_line, self._held = now, line, None
        else:
            self._held = line

    def _flush_held(self) -> None:
        if self._held is not None:
            self._write(self._held)
            self._last_line, self._held = self._held, None

    def stage(self, text: str) -> None:
        self._flush_held()
        self._write(text)
        self._printed, self._last_line = float("-inf"), ""

    def note(self, text: str) -> None:
        self._write(text)

    def progress(self, progress: control_pb2.Progress) -> None:
        parts = [f"{phase_name(p)} {n}/{progress.replicas}" for p, n in _counts(progress)]
        self._offer("pods: " + (", ".join(parts) or "none seen yet"), force=False)

    def countdown(self, what: str, done: float, total: float) -> None:
        self._offer(f"{what}: {countdown_label(done, total)}", force=done >= total)

    def close(self) -> None:
        self._flush_held()


class _View:
    """The live renderable: stage line, a bar per phase, the countdown line."""

    def __init__(self) -> None:
        self.stage = ""
        self.stage_started = time.monotonic()
        self.progress: control_pb2.Progress | None = None
        self.countdown: tuple[str, float, float] | None = None

    def __rich__(self) -> RenderableType:
        elapsed = time.monotonic() - self.stage_started
        parts: list[RenderableType] = [Text(f"{self.stage}  ({elapsed:.1f}s)", style="bold")]
        if self.progress is not None:
            table = Table.grid(padding=(0, 2))
            replicas = max(self.progress.replicas, 1)
            for phase, count in _counts(self.progress):
                style = "red" if phase == events_pb2.PHASE_FAILED else "green"
                bar = ProgressBar(total=replicas, completed=count, width=40, complete_style=style)
                table.add_row(phase_name(phase), bar, f"{count}/{self.progress.replicas}")
            parts.append(table)
        if self.countdown is not None:
            what, done, total = self.countdown
            bar = ProgressBar(total=max(total, 1e-9), completed=done, width=40)
            grid = Table.grid(padding=(0, 2))
            grid.add_row(what, bar, countdown_label(done, total))
            parts.append(grid)
        return Group(*parts)


class RichDisplay:
    """A live view on a terminal, redrawn a few times a second; notes scroll above it."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._view = _View()
        self._live: Live | None = None

    def _ensure(self) -> None:
        if self._live is None:
            self._live = Live(self._view, console=self._console, refresh_per_second=4)
            self._live.start()

    def stage(self, text: str) -> None:
        self._ensure()
        self._view.stage = text
        self._view.stage_started = time.monotonic()
        self._view.countdown = None

    def note(self, text: str) -> None:
        self._console.print(text, highlight=False)

    def progress(self, progress: control_pb2.Progress) -> None:
        self._ensure()
        self._view.progress = progress

    def countdown(self, what: str, done: float, total: float) -> None:
        self._ensure()
        self._view.countdown = (what, done, total)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def display_for(stream: IO[str]) -> RunDisplay:
    """Rich on a terminal, plain lines otherwise (CI logs, pipes, files)."""
    console = Console(file=stream)
    if console.is_terminal:
        return RichDisplay(console)
    return PlainDisplay(stream)
