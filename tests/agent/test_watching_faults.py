"""The pod watcher against an API server that misbehaves in ways the simulated cluster does not.

A real aiohttp server on loopback plays the API server's pod list and watch:
a watch that is accepted but never answered (no headers) or answered and then
silent, a list that fails thousands of times in a row, and a watch line longer
than aiohttp's read buffer. Each must end in a logged reconnect, never in a
hung or dead watcher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client as k8s

from agent.observing import ObserveSettings
from agent.transitions import Obj, Stamp
from agent.watching import PodWatcher
from tests.agent.harness import wait_for

POD_LIST = {"kind": "PodList", "metadata": {"resourceVersion": "5"}, "items": []}


class FakeApi:
    """Answers ``GET /api/v1/pods``: lists as told, watches as told (``watch`` mode)."""

    def __init__(self, watch: str, list_status: int = 200) -> None:
        self.watch = watch
        """``no-headers``, ``headers-then-silence`` or ``long-line``."""
        self.list_status = list_status
        self.lists = 0
        self.watches = 0
        self._release = asyncio.Event()

    async def pods(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch", "").lower() != "true":
            self.lists += 1
            if self.list_status != 200:
                body = {"kind": "Status", "code": self.list_status, "message": "try later"}
                return web.json_response(body, status=self.list_status)
            return web.json_response(POD_LIST)
        self.watches += 1
        if self.watch == "no-headers":
            await self._release.wait()  # accepted, never answered
            return web.Response(status=504)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        if self.watch == "long-line":
            # Beyond the client's line limit: twice kubernetes-asyncio's 2 MiB read buffer.
            await response.write(b'{"type": "ADDED", "object": {"x": "' + b"y" * 2**23 + b'"}}\n')
        await self._release.wait()
        return response

    def release(self) -> None:
        self._release.set()


class Recorder:
    """A WatchHandler that keeps what it is given."""

    def __init__(self) -> None:
        self.lists: list[list[Obj]] = []
        self.events: list[tuple[str, Obj]] = []

    def on_list(self, pods: list[Obj], stamp: Stamp) -> None:
        self.lists.append(pods)

    def on_event(self, kind: str, pod: Obj, stamp: Stamp) -> None:
        self.events.append((kind, pod))


StartApi = Callable[..., Awaitable[tuple[FakeApi, k8s.ApiClient]]]


@pytest.fixture
async def fake_api() -> AsyncIterator[StartApi]:
    """Start a FakeApi on a free loopback port, with an ApiClient for it."""
    started: list[tuple[FakeApi, web.AppRunner, k8s.ApiClient]] = []

    async def start(watch: str, **kwargs: Any) -> tuple[FakeApi, k8s.ApiClient]:
        api = FakeApi(watch, **kwargs)
        app = web.Application()
        app.router.add_get("/api/v1/pods", api.pods)
        # A client that gives up cancels its handler, as a real API server stops serving it.
        runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        client = k8s.ApiClient(k8s.Configuration(host=f"http://{host}:{port}"))
        started.append((api, runner, client))
        return api, client

    yield start
    for api, runner, client in started:
        api.release()
        await client.close()
        await runner.cleanup()


async def run_watcher(
    client: k8s.ApiClient, **settings: Any
) -> tuple[PodWatcher, asyncio.Task[None]]:
    watcher = PodWatcher(client, Recorder(), ObserveSettings(node="n1", **settings))
    return watcher, asyncio.get_running_loop().create_task(watcher.run(), name="watch n1")


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel the watcher; if it had died on its own, that failure is the test's."""
    if task.done():
        task.result()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def interruptions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "agent.watching" and "pod watch interrupted" in r.getMessage()
    ]


@pytest.mark.parametrize("mode", ["no-headers", "headers-then-silence"])
async def test_a_hung_watch_is_reconnected_and_logged(
    fake_api: StartApi, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.watching")
    api, client = await fake_api(mode)
    watcher, task = await run_watcher(client, inactivity_timeout_s=0.3, reconnect_max_s=0.1)
    try:
        await wait_for(
            lambda: api.watches >= 3 or task.done(), within=60, what="three watch requests"
        )
        assert not task.done()
        assert watcher.reconnects >= 2, vars(watcher)
        assert api.lists == 1 and watcher.lists == 1, "resumed from the resourceVersion"
        assert watcher.watches == (0 if mode == "no-headers" else api.watches), vars(watcher)
        logged = interruptions(caplog)
        assert len(logged) >= 2, logged
    finally:
        await stop(task)


async def test_more_than_a_thousand_failures_in_a_row_do_not_kill_the_watcher(
    fake_api: StartApi, caplog: pytest.LogCaptureFixture
) -> None:
    # 2 ** 1024 no longer fits a float: a backoff computed from the raw failure
    # count used to end the watcher with OverflowError after 1025 failures.
    caplog.set_level(logging.WARNING, logger="agent.watching")
    api, client = await fake_api("no-headers", list_status=503)
    watcher, task = await run_watcher(client, reconnect_max_s=0.0001)
    try:
        await wait_for(
            lambda: watcher.reconnects >= 1100 or task.done(), within=240, what="1100 failures"
        )
        assert not task.done()
        assert api.lists >= 1100 and api.watches == 0 and watcher.lists == 0
        assert "503 try later" in interruptions(caplog)[-1]
    finally:
        await stop(task)


async def test_a_watch_line_beyond_the_read_buffer_is_a_reconnect(
    fake_api: StartApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.watching")
    api, client = await fake_api("long-line")
    watcher, task = await run_watcher(client, reconnect_max_s=0.1)
    try:
        await wait_for(lambda: api.watches >= 2 or task.done(), within=60, what="a second watch")
        assert not task.done()
        assert watcher.reconnects >= 1 and watcher.events == 0
        assert any("unreadable watch line" in m for m in interruptions(caplog))
    finally:
        await stop(task)
