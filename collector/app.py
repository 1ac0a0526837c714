"""The running collector: the gRPC server, the journal writer, the exporter, and shutdown.

``Collector.start()`` reads tokens and certificates, opens the journal and binds
the port (all the I/O that can fail on bad configuration happens here, before
anything is accepted). ``Collector.run()`` keeps the long-running loops as named
tasks under one TaskGroup: ``writer`` (group commits), ``exporter`` (journal to
InfluxDB, when configured), ``agent-status`` (health snapshots to InfluxDB, when
configured; ``collector.agentstatus``), ``backlog`` (push-back input) and ``stats``. A task
that dies or returns on its own is logged by name and stops the collector with
an error, rather than leaving a server that accepts batches nobody commits.

Shutdown has two stages. Stage one (first SIGTERM/SIGINT, or ``stop`` set):
health turns NOT_SERVING, no new RPCs or batches are accepted, every agent
stream waits for its in-flight batches to commit, sends their acks and ends with
UNAVAILABLE (the agent reconnects elsewhere or later), then the writer commits
whatever is still queued and the journal is closed. The server gives open
streams ``shutdown_grace`` seconds; stage two (a second signal, or
``shutdown_grace`` + 1 seconds passing, the extra second for the writer to
commit what the last streams handed over) cancels what is left; anything not
acked is still in the agents' spools, so nothing is lost, only resent.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .agentstatus import CollectorGauges, StatusReporter
from .control import ControlApi
from .errors import CollectorError, ListenError
from .exporting import Exporter, InfluxTarget
from .ingest import AgentIngest, IngestStats, Writer
from .journal import Journal
from .progress import ProgressHub
from .security import AGENT_SERVICE, CONTROL_SERVICE, TokenInterceptor, load_tokens
from .security import server_credentials as load_credentials
from .settings import CollectorSettings

__all__ = ["Collector", "influx_target", "serve"]

log = logging.getLogger("collector")

BACKLOG_POLL_S = 0.5
"""How often the export backlog is sampled for push-back; the exporter caches ~100 ms."""
WRITER_GRACE_S = 1.0
"""Past shutdown_grace, how long the writer may still commit before stage two."""


def influx_target(settings: CollectorSettings) -> InfluxTarget | None:
    """The exporter's target from the settings, None for journal only."""
    return settings.influx_target()


class Collector:
    """One collector service; ``start``, then ``run`` until stopped, then ``close``."""

    def __init__(self, settings: CollectorSettings) -> None:
        settings.check()
        self.settings = settings
        self.target = influx_target(settings)
        self.progress = ProgressHub()
        self.stats = IngestStats()
        self.port = 0
        self.journal: Journal | None = None
        self.exporter: Exporter | None = None
        self.status_reporter: StatusReporter | None = None
        self.failure: str | None = None
        self._writer: Writer | None = None
        self._ingest: AgentIngest | None = None
        self._server: Any = None
        self._health = health.aio.HealthServicer()
        self._stopping = False
        self._failed = asyncio.Event()
        self._interceptor: TokenInterceptor | None = None

    @property
    def address(self) -> str:
        host = self.settings.listen_host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    @property
    def writer(self) -> Writer:
        assert self._writer is not None, "collector not started"
        return self._writer

    async def start(self) -> None:
        """Reads secrets, opens the journal, binds and starts serving; raises CollectorError."""
        settings = self.settings
        tokens = load_tokens(settings)
        credentials = load_credentials(settings)
        self.journal = await asyncio.to_thread(Journal.open, settings.journal)
        self._writer = Writer(
            self.journal,
            max_pending=settings.max_pending_batches,
            progress=self.progress,
            stats=self.stats,
        )
        self._writer.max_export_backlog = settings.max_export_backlog
        if self.target is not None:
            self.exporter = Exporter(self.journal.path, self.target)
            self.status_reporter = StatusReporter(self.journal.path, self.target, self.gauges)
        self._ingest = AgentIngest(self._writer, max_batch_events=settings.max_batch_events)
        self._interceptor = TokenInterceptor(tokens)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                # Without this a second collector binds the same port silently.
                ("grpc.so_reuseport", 0),
            ],
            interceptors=[self._interceptor],
        )
        server.add_generic_rpc_handlers((self._ingest.handler(),))
        server.add_generic_rpc_handlers(
            (ControlApi(self._writer, self.progress, self.stats).handler(),)
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        try:
            if credentials is None:
                self.port = server.add_insecure_port(settings.listen)
            else:
                self.port = server.add_secure_port(settings.listen, credentials)
        except RuntimeError as exc:
            await asyncio.to_thread(self._writer.close)
            raise ListenError(
                f"cannot listen on {settings.listen}: {_bind_problem(settings)}"
            ) from exc
        self._server = server
        await server.start()
        for service in (AGENT_SERVICE, CONTROL_SERVICE):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "collector %s listening on %s (%s; agents %s, control %s), journal %s, %s",
            self.journal.collector_id,
            self.address,
            "plaintext" if credentials is None else "TLS",
            "token" if tokens.agent else "open",
            "token" if tokens.control else "open",
            self.journal.path,
            f"InfluxDB {self.target.describe()}" if self.target else "journal only",
        )

    async def run(self, stop: asyncio.Event, hard_stop: asyncio.Event | None = None) -> None:
        """Serves until ``stop`` is set (or a task fails), then shuts down in two stages.

        Raises CollectorError when it stopped because a task failed.
        """
        writer = self.writer
        hard = hard_stop or asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            writer_task = tg.create_task(self._guard("writer", writer.run()), name="writer")
            helpers = [tg.create_task(self._guard("stats", self._stats_loop()), name="stats")]
            if self.exporter is not None:
                helpers.append(
                    tg.create_task(self._guard("exporter", self.exporter.run()), name="exporter")
                )
                if self.settings.max_export_backlog > 0:
                    helpers.append(
                        tg.create_task(self._guard("backlog", self._backlog_loop()), name="backlog")
                    )
            if self.status_reporter is not None:
                reporter = self._guard("agent-status", self.status_reporter.run())
                helpers.append(tg.create_task(reporter, name="agent-status"))
            waiting = [asyncio.ensure_future(e.wait()) for e in (stop, self._failed)]
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiting:
                    w.cancel()
            self._stopping = True
            await self._shut_down(writer_task, hard)
            for task in helpers:
                task.cancel()
        if self.failure is not None:
            raise CollectorError(self.failure)

    async def _shut_down(self, writer_task: asyncio.Task[None], hard: asyncio.Event) -> None:
        grace = self.settings.shutdown_grace
        log.info("stopping: no new work, finishing what was received (up to %.0f s)", grace)
        await self._health.enter_graceful_shutdown()
        assert self._ingest is not None
        self._ingest.stop()
        self.progress.close()
        drain = asyncio.create_task(self._drain(writer_task, grace), name="drain")
        hard_wait = asyncio.ensure_future(hard.wait())
        done, _ = await asyncio.wait(
            {drain, hard_wait}, timeout=grace + WRITER_GRACE_S, return_when=asyncio.FIRST_COMPLETED
        )
        hard_wait.cancel()
        if drain not in done:
            log.warning("stage two: cancelling what is left (unacked batches stay with agents)")
            drain.cancel()
            await self._server.stop(0)
            writer_task.cancel()
        else:
            drain.result()
            log.info(
                "stopped cleanly: %d batches committed, %d pending",
                self.stats.batches,
                self.writer.pending,
            )

    async def _drain(self, writer_task: asyncio.Task[None], grace: float) -> None:
        await self._server.stop(grace)
        self.writer.stop_accepting()
        await asyncio.shield(writer_task)

    async def _guard(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        """Runs one named loop; its death or unexpected return stops the collector."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("task %s died", name)
            self._fail(f"task {name} died: {exc}")
        else:
            if not self._stopping:
                log.error("task %s returned unexpectedly", name)
                self._fail(f"task {name} returned unexpectedly")

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self._failed.set()

    async def _backlog_loop(self) -> None:
        exporter, writer = self.exporter, self.writer
        assert exporter is not None
        while True:
            writer.export_backlog = await asyncio.to_thread(exporter.backlog)
            await asyncio.sleep(BACKLOG_POLL_S)

    async def _stats_loop(self) -> None:
        interval = self.settings.stats_interval
        if interval <= 0:
            await asyncio.Event().wait()
        while True:
            await asyncio.sleep(interval)
            log.info("stats: %s", self.stats_line())

    def gauges(self) -> CollectorGauges:
        """The in-memory part of a health snapshot (``collector.agentstatus``)."""
        return CollectorGauges(
            connected=frozenset(self.stats.connected),
            export_backlog=self.writer.export_backlog,
            pending_batches=self.writer.pending,
        )

    def stats_line(self) -> str:
        s = self.stats
        line = (
            f"agents={len(s.connected)} batches={s.batches} records={s.records} "
            f"duplicates={s.duplicates} commits={s.commits} rejected={s.rejected} "
            f"pushed_back={s.pushed_back} commit_failures={s.commit_failures} "
            f"pending={self.writer.pending}"
        )
        if self._interceptor is not None and self._interceptor.refused:
            line += f" unauthenticated={self._interceptor.refused}"
        if self.exporter is not None:
            e = self.exporter.stats
            line += (
                f" export_backlog={self.writer.export_backlog} exported={e.points_written}"
                f" export_retries={e.retries} dead_lettered={e.dead_lettered}"
            )
        return line

    async def close(self) -> None:
        """Stops the server if still serving and closes the journal; safe to call twice."""
        if self._server is not None:
            await self._server.stop(0)
            self._server = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.to_thread(writer.close)


def _bind_problem(settings: CollectorSettings) -> str:
    """Why the address cannot be bound: gRPC only says that it failed, a plain bind says why."""
    host = settings.listen_host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, settings.listen_port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return "gRPC could not bind it"


async def serve(
    settings: CollectorSettings, ready: Callable[[Collector], None] | None = None
) -> None:
    """``collector serve``: runs until SIGTERM/SIGINT (a second one skips the drain)."""
    collector = Collector(settings)
    stop, hard = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            hard.set()
        else:
            log.info("signal received, stopping (again to skip the drain)")
            stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await collector.start()
        if ready is not None:
            ready(collector)
        await collector.run(stop, hard)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await collector.close()
