"""Live progress of runs: how many distinct pods reached each phase, as it happens.

rtctl follows a run while it starts (pods scheduled, started, responding, ready,
failed) through ``WatchProgress``. The ingest tells this hub what each commit
stored; a watcher sends a ``Progress`` message on every change, coalesced to at
most one every ``min_interval`` seconds, until the run is finished.

Only runs somebody watches are tracked, so a collector with no watcher pays
nothing per event. A watch subscribes first and then loads what the journal
already holds; counts are sets of pod UIDs, so an event seen both in the
snapshot and in a notification counts once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field

from rtbench.clock import wall_ns
from rtbench.v1 import control_pb2

from .journal import TERMINAL_STATES

__all__ = ["ProgressHub", "RunProgress", "Watch"]


@dataclass
class RunProgress:
    """What is known about one watched run."""

    run_id: str
    replicas: int = 0
    state: int = control_pb2.RUN_STATE_UNSPECIFIED
    pods: dict[int, set[str]] = field(default_factory=dict)
    watches: set[Watch] = field(default_factory=set)

    def message(self) -> control_pb2.Progress:
        counts = [
            control_pb2.PhaseCount(phase=phase, count=len(uids))  # type: ignore[arg-type]
            for phase, uids in sorted(self.pods.items())
            if uids
        ]
        return control_pb2.Progress(
            run_id=self.run_id,
            replicas=self.replicas,
            counts=counts,
            state=self.state,  # type: ignore[arg-type]
            time_ns=wall_ns(),
        )

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_STATES


class Watch:
    """One subscriber: an event set on every change of its run."""

    def __init__(self, run: RunProgress) -> None:
        self.run = run
        self.changed = asyncio.Event()


class ProgressHub:
    """Per-run phase counts for the runs being watched; fed by the ingest and the control API."""

    def __init__(self, min_interval: float = 0.1) -> None:
        self.min_interval = min_interval
        self._runs: dict[str, RunProgress] = {}
        self._closed = asyncio.Event()

    @property
    def idle(self) -> bool:
        """True when nobody watches any run: the ingest can skip collecting records."""
        return not self._runs

    def is_watched(self, run_id: str) -> bool:
        return run_id in self._runs

    @contextlib.contextmanager
    def watch(self, run_id: str) -> Iterator[Watch]:
        run = self._runs.get(run_id)
        if run is None:
            run = self._runs[run_id] = RunProgress(run_id)
        watch = Watch(run)
        run.watches.add(watch)
        try:
            yield watch
        finally:
            run.watches.discard(watch)
            if not run.watches:
                self._runs.pop(run_id, None)

    def load(self, run_id: str, replicas: int, state: int, pods: Iterable[tuple[int, str]]) -> None:
        """Merges a journal snapshot (phase, pod uid) and the run's spec and state."""
        run = self._runs.get(run_id)
        if run is None:
            return
        run.replicas = replicas
        if not run.finished:
            run.state = state
        for phase, uid in pods:
            run.pods.setdefault(phase, set()).add(uid)
        self._notify(run)

    def observe(self, records: Iterable[tuple[str, int, str]]) -> None:
        """Newly committed (run id, phase, pod uid) records, from the ingest."""
        touched: set[str] = set()
        for run_id, phase, uid in records:
            run = self._runs.get(run_id)
            if run is None:
                continue
            uids = run.pods.setdefault(phase, set())
            if uid not in uids:
                uids.add(uid)
                touched.add(run_id)
        for run_id in touched:
            self._notify(self._runs[run_id])

    def set_state(self, run_id: str, state: int) -> None:
        """A run changed state (running, or finished: its watchers send a last message).

        Finished is final: a late non-terminal state (a RecordCreate arriving
        after FinishRun) is ignored, as the journal ignores it, so no watcher
        sees a finished run running again.
        """
        run = self._runs.get(run_id)
        if run is None or (run.finished and state not in TERMINAL_STATES):
            return
        run.state = state
        self._notify(run)

    def close(self) -> None:
        """The collector is stopping: every watcher ends its stream."""
        self._closed.set()
        for run in self._runs.values():
            self._notify(run)

    async def messages(self, watch: Watch) -> AsyncIterator[control_pb2.Progress]:
        """Progress messages until the run finishes (last message carries the final state)."""
        loop = asyncio.get_running_loop()
        run = watch.run
        while True:
            watch.changed.clear()
            yield run.message()
            if run.finished or self._closed.is_set():
                return
            sent = loop.time()
            await watch.changed.wait()
            # Coalesce: a burst of commits becomes one message per interval.
            delay = self.min_interval - (loop.time() - sent)
            if delay > 0 and not run.finished and not self._closed.is_set():
                await asyncio.sleep(delay)

    @staticmethod
    def _notify(run: RunProgress) -> None:
        for watch in run.watches:
            watch.changed.set()
