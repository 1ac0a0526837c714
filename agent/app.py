"""``agent run`` as a program: start-up checks, one TaskGroup, two-stage shutdown.

Start-up does the I/O that settings validation left out (Telegraf's
Init/Connect split): the state directory (locked for this process's life,
agent/statedir.py) and agent id, the spool left by an earlier run, the TLS
files and token file, the kubeconfig. Any failure there is a ``StartupError``
(exit 1) before a single task runs; a state directory that holds another
node's identity, or a kubeconfig that is missing or unusable, is configuration
(``ConfigError``, exit 2).

Then four named tasks run under one ``asyncio.TaskGroup``: ``observer`` (the
node observers, agent/observing.py), ``batcher`` (sealing into the spool),
``uplink`` (the stream to the collector) and ``progress`` (the periodic INFO
line). A task that raises or returns on its own is logged by name and ends the
agent (exit 1): a DaemonSet restarts it with its spool intact.

Shutdown, on SIGTERM or SIGINT: stage one stops observing, seals what is
pending, and waits up to ``shutdown_flush_s`` for the collector to acknowledge
everything; whatever is not acknowledged by then stays in the spool for the
next start. A second signal ends stage one at once (stage two: exit now).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from rtbench.v1 import agent_pb2

from .batching import Batcher
from .clocksync import ClockSync
from .errors import AgentError, KubeconfigError, StartupError, TaskDied
from .observing import NodeObserver
from .outbox import Outbox
from .security import ChannelSecurity
from .sending import Uplink
from .settings import AgentSettings
from .spool import Spool, load_or_create_agent_id, other_spools
from .statedir import StateDirLock

__all__ = ["Agent", "Observer", "ObserverFactory", "kubernetes_observer", "run_agent"]

log = logging.getLogger(__name__)

OBSERVER_STOP_S = 2.0
"""How long stage one waits for the observers to wind down before sealing the rest."""


class Observer(Protocol):
    """What the agent needs of the node observers (agent/observing.py's NodeObserver)."""

    async def run(self) -> None: ...

    def node_facts(self) -> agent_pb2.NodeFacts: ...

    @property
    def tracked_pods(self) -> int: ...


ObserverFactory = Callable[[AgentSettings, Outbox], AbstractAsyncContextManager[Observer]]
"""Builds the observers around an outbox; it does its own I/O (kubeconfig) on entry."""


def _kubeconfig_file(settings: AgentSettings) -> Path | None:
    """The kubeconfig to read, None for the in-cluster service account (blocking I/O)."""
    if settings.kubeconfig is not None:
        path = settings.kubeconfig
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    else:
        default = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
        path = Path(default).expanduser()
    if not path.is_file():
        hint = "" if settings.kubeconfig else "; not in a cluster, give --kubeconfig"
        raise KubeconfigError(
            f"cannot load the Kubernetes configuration ({path}): no such file{hint}"
        )
    return path


async def load_kube_configuration(settings: AgentSettings) -> k8s.Configuration:
    """--kubeconfig, else the in-cluster service account, else $KUBECONFIG / ~/.kube/config."""
    configuration = k8s.Configuration()
    path = await asyncio.to_thread(_kubeconfig_file, settings)
    try:
        if path is not None:
            await k8s_config.load_kube_config(
                config_file=str(path), client_configuration=configuration
            )
        else:
            load_incluster: Callable[..., None] = k8s_config.load_incluster_config
            load_incluster(client_configuration=configuration)
    except (OSError, ValueError, TypeError, k8s_config.ConfigException) as exc:
        where = path or "in-cluster service account"
        kind = StartupError if path is None else KubeconfigError
        raise kind(f"cannot load the Kubernetes configuration ({where}): {exc}") from exc
    return configuration


@contextlib.asynccontextmanager
async def kubernetes_observer(settings: AgentSettings, outbox: Outbox) -> AsyncIterator[Observer]:
    """The real observers: watch, probe and sample this node through the Kubernetes API."""
    configuration = await load_kube_configuration(settings)
    async with k8s.ApiClient(configuration) as api:
        yield NodeObserver(api, outbox, settings.observe)


async def _guard(name: str, coro: Coroutine[Any, Any, None]) -> None:
    """Run a long-running task; if it ends by itself, log it by name and fail the agent."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except AgentError as exc:
        log.error("task %s failed: %s", name, exc)
        raise
    except Exception as exc:
        log.exception("task %s died", name)
        raise TaskDied(f"task {name} died: {exc!r}") from exc
    log.error("task %s returned unexpectedly", name)
    raise TaskDied(f"task {name} returned unexpectedly")


class Agent:
    """One agent process: build the parts, run them, shut them down in order."""

    def __init__(
        self, settings: AgentSettings, observer_factory: ObserverFactory = kubernetes_observer
    ) -> None:
        self.settings = settings
        self._observer_factory = observer_factory
        self.uplink: Uplink | None = None
        self.batcher: Batcher | None = None
        self.agent_id: str | None = None

    async def run(self, stop: asyncio.Event, abort: asyncio.Event) -> None:
        """Until ``stop`` is set, then flush (cut short by ``abort``); raises AgentError.

        The state directory is locked first and for the whole run: a second agent on it
        refuses to start (StateDirBusy) instead of sharing the identity and the spool."""
        up = self.settings.uplink
        lock = await asyncio.to_thread(StateDirLock.acquire, up.state_dir, self.settings.node)
        try:
            await self._run_owned(stop, abort)
        finally:
            lock.release()

    async def _run_owned(self, stop: asyncio.Event, abort: asyncio.Event) -> None:
        settings, up = self.settings, self.settings.uplink
        agent_id = up.agent_id
        if agent_id is None:
            agent_id = await asyncio.to_thread(load_or_create_agent_id, up.state_dir, settings.node)
        spool = await asyncio.to_thread(
            Spool.open,
            up.state_dir / "spool" / agent_id,
            max_bytes=up.spool_max_bytes,
            memory_batches=up.memory_buffer,
        )
        for other, count in (
            await asyncio.to_thread(other_spools, up.state_dir / "spool", agent_id)
        ).items():
            log.warning(
                "the spool of agent id %s holds %d unsent batches; they are not sent as %s",
                other,
                count,
                agent_id,
            )
        security = await asyncio.to_thread(ChannelSecurity.load, up)
        clock = ClockSync()
        batcher = Batcher(
            spool, clock, max_records=up.batch_max_events, flush_interval_s=up.flush_interval_s
        )
        async with self._observer_factory(settings, batcher) as observer:
            uplink = Uplink(
                up,
                agent_id=agent_id,
                node=settings.node,
                spool=spool,
                clock=clock,
                security=security,
                node_facts=observer.node_facts,
            )
            self.agent_id, self.batcher, self.uplink = agent_id, batcher, uplink
            log.info(
                "agent started: node=%s collector=%s (%s) agent_id=%s state_dir=%s "
                "spooled_batches=%d",
                settings.node,
                up.collector,
                security.scheme,
                agent_id,
                up.state_dir,
                spool.unacked,
            )
            try:
                async with asyncio.TaskGroup() as group:
                    observing = group.create_task(
                        _guard("observer", observer.run()), name="observer"
                    )
                    tasks = [
                        group.create_task(_guard("batcher", batcher.run()), name="batcher"),
                        group.create_task(_guard("uplink", uplink.run()), name="uplink"),
                        group.create_task(
                            _guard("progress", self._progress(observer, batcher, uplink, clock)),
                            name="progress",
                        ),
                    ]
                    await stop.wait()
                    # Stage one: no new observations (wait until the observers are
                    # really gone, so nothing arrives after the final seal), then flush.
                    observing.cancel()
                    await asyncio.wait([observing], timeout=OBSERVER_STOP_S)
                    await self._flush(batcher, uplink, abort)
                    for task in tasks:
                        task.cancel()
            except BaseExceptionGroup as group_error:
                errors = [e for e in group_error.exceptions if isinstance(e, AgentError)]
                if errors:
                    raise errors[0] from None
                raise
            finally:
                spool.end_overflow_episode()

    async def _flush(self, batcher: Batcher, uplink: Uplink, abort: asyncio.Event) -> None:
        deadline = self.settings.uplink.shutdown_flush_s
        log.info(
            "stopping: observers stopped; flushing to the collector for up to %.1f s", deadline
        )
        await batcher.flush()
        draining = asyncio.create_task(uplink.drain(deadline), name="drain")
        aborting = asyncio.create_task(abort.wait(), name="abort")
        await asyncio.wait([draining, aborting], return_when=asyncio.FIRST_COMPLETED)
        aborting.cancel()
        draining.cancel()
        counters = uplink.counters
        if counters.unacked:
            log.warning(
                "stopped with %d batches unacknowledged; they stay in the spool for the next start",
                counters.unacked,
            )
        else:
            log.info("stopped: every batch acknowledged (%d sent)", counters.sent)

    async def _progress(
        self, observer: Observer, batcher: Batcher, uplink: Uplink, clock: ClockSync
    ) -> None:
        while True:
            await asyncio.sleep(self.settings.progress_interval_s)
            c = uplink.counters
            log.info(
                "progress: pods=%d pending=%d sealed=%d sent=%d acked=%d resent=%d unacked=%d "
                "dropped=%d reconnects=%d connected=%s clock=%s",
                observer.tracked_pods,
                batcher.pending,
                batcher.sealed_batches,
                c.sent,
                c.acked,
                c.resent,
                c.unacked,
                c.dropped_overflow,
                c.reconnects,
                "yes" if c.connected else "no",
                clock.describe(),
            )


async def run_agent(
    settings: AgentSettings, observer_factory: ObserverFactory = kubernetes_observer
) -> None:
    """Run until SIGTERM/SIGINT (first: flush with a deadline; second: exit now)."""
    loop = asyncio.get_running_loop()
    stop, abort = asyncio.Event(), asyncio.Event()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("%s again: exiting without waiting for the collector", name)
            abort.set()
        else:
            log.info("%s: shutting down", name)
            stop.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await Agent(settings, observer_factory).run(stop, abort)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
