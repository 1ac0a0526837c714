"""``GET .../pods/{name}/log``: the workload's real output, tailed and followed.

Each container instance writes stdout and stderr to its own file (one per
restart, like /var/log/pods), so ``previous=true`` shows the crashed instance and
``kubectl logs -f`` follows the running one until the process exits or the
client goes away. Errors use the real API server's messages (a container name is
needed for multi-container pods, a waiting container has no logs yet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web

from .errors import BadRequest
from .objects import Obj

FOLLOW_POLL = 0.1
"""Seconds between looks at a followed log file for new output."""


@dataclass(frozen=True)
class LogFile:
    path: Path
    running: Callable[[], bool]
    """True while the process writing this file is alive."""
    cri: bool = False
    """The file is in the CRI log format a real runtime writes (``<time> <stream> <F|P>
    <text>`` per line), which the kubelet turns back into the container's own output."""


def from_cri(data: bytes) -> tuple[bytes, int]:
    """The container's output in CRI-format ``data``, and how many bytes were whole lines.

    A line still being written is left for the next read; a partial (``P``) entry is
    joined to the next without a newline, as the kubelet does.
    """
    out: list[bytes] = []
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        parts = line.split(b" ", 3)
        if len(parts) < 3:
            continue
        text = parts[3] if len(parts) == 4 else b""
        out.append(text if parts[2] == b"P" else text + b"\n")
    return b"".join(out), end


class LogSource(Protocol):
    def log_file(self, pod: Obj, container: str, previous: bool) -> LogFile | None:
        """The file of the current (or previous) instance, or None if there is none."""


@dataclass(frozen=True)
class LogOptions:
    container: str | None
    follow: bool
    previous: bool
    tail_lines: int | None
    limit_bytes: int | None


def choose_container(pod: Obj, wanted: str | None) -> str:
    name = pod["metadata"]["name"]
    names = [c.get("name") for c in pod["spec"].get("containers") or []]
    if wanted is None:
        if len(names) == 1:
            return str(names[0])
        raise BadRequest(
            f"a container name must be specified for pod {name}, "
            f"choose one of: [{' '.join(map(str, names))}]"
        )
    if wanted not in names:
        raise BadRequest(f"container {wanted} is not valid for pod {name}")
    return wanted


def _tail(data: bytes, lines: int) -> bytes:
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


async def serve_log(
    request: web.Request, pod: Obj, source: LogSource, options: LogOptions
) -> web.StreamResponse:
    container = choose_container(pod, options.container)
    found = source.log_file(pod, container, options.previous)
    name = pod["metadata"]["name"]
    if found is None:
        if options.previous:
            raise BadRequest(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        reason = "ContainerCreating"
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == container:
                reason = (status.get("state") or {}).get("waiting", {}).get("reason", reason)
        raise BadRequest(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
    data = await asyncio.to_thread(_read, found.path)
    offset = len(data)
    if found.cri:
        data, offset = from_cri(data)
    if options.tail_lines is not None:
        data = _tail(data, options.tail_lines)
    if not options.follow or options.previous:
        if options.limit_bytes is not None:
            data = data[: options.limit_bytes]
        return web.Response(body=data, content_type="text/plain", charset="utf-8")
    response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain; charset=utf-8"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    sent = 0
    budget = options.limit_bytes

    async def send(chunk: bytes) -> bool:
        nonlocal sent, budget
        if budget is not None:
            chunk = chunk[:budget]
            budget -= len(chunk)
        if chunk:
            await response.write(chunk)
            sent += len(chunk)
        return budget is None or budget > 0

    if await send(data):
        while True:
            alive = found.running()
            more = await asyncio.to_thread(_read, found.path, offset)
            if found.cri:
                more, used = from_cri(more)
                offset += used
            else:
                offset += len(more)
            if more and not await send(more):
                break
            if not alive and not more:
                break
            await asyncio.sleep(FOLLOW_POLL)
    await response.write_eof()
    return response


def _read(path: Path, offset: int = 0) -> bytes:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read()
    except FileNotFoundError:
        return b""
