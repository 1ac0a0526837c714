"""A TCP proxy on loopback that can cut the link: the agent <-> collector fault.

The fault matrix needs "the network between the agents and the collector is
gone for 20 s": every open connection dies at once and new ones are refused
for that long, while both ends stay up. Nothing in the product can do that, so
the agents dial this proxy (``agent run --collector PROXY``) and it forwards
bytes to the collector. ``cut(seconds)`` resets every connection it carries and,
until the time is up, resets every new one right after accepting it (the
agent sees a refused/reset connection, as with a firewall that sends RSTs).

It runs its own event loop in a thread, so synchronous scenario code and the
stack's synchronous start (which waits for the agents to connect through it)
can use it without sharing a loop.

Errors: ``ProxyError`` (an ``AssertionError``, a test failure) when it cannot
start or its thread died.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time

__all__ = ["LinkProxy", "ProxyError"]


class ProxyError(AssertionError):
    """The proxy did not start or stopped working."""


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0): the peer sees the link break, not a clean end."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class LinkProxy:
    """Forwards 127.0.0.1:<port> to ``target`` (HOST:PORT); ``cut()`` breaks the link."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="link-proxy")
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._cut_until = 0.0
        self.address = ""
        self.connections = 0
        """Connections accepted and forwarded (for the report)."""
        self.refused = 0
        """Connections reset during a cut."""

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        try:
            self.address = future.result(timeout=30)
        except Exception as exc:
            raise ProxyError(f"link proxy did not start: {exc!r}") from exc

    async def _listen(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    @property
    def cutting(self) -> bool:
        return time.monotonic() < self._cut_until

    def cut(self, seconds: float) -> None:
        """Reset every connection now and refuse new ones for ``seconds``."""
        self._cut_until = time.monotonic() + seconds
        asyncio.run_coroutine_threadsafe(self._reset_all(), self._loop).result(timeout=30)

    async def _reset_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cutting:
            self.refused += 1
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            _reset(writer)
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pump(reader, up_writer), name="proxy-up")
                group.create_task(self._pump(up_reader, writer), name="proxy-down")
        except* OSError:
            pass
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                _reset(w)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        # One side ended: end the pair, so neither end waits on a half-open link.
        raise ConnectionResetError("one side of the proxied link closed")

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            await self._reset_all()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
