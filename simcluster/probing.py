"""The kubelet's probes: real HTTP GET and TCP connects to the pod's address.

Readiness in the simulated cluster is earned the same way as on a real node: the
kubelet opens a connection to podIP:port every period and the pod is Ready once
the workload answers 2xx/3xx. Raw asyncio streams keep each attempt one short
connection with no client session to manage, as the real kubelet's prober does.
"""

from __future__ import annotations

import asyncio
import contextlib

from .objects import Obj


def probe_port(container: Obj, port: object) -> int | None:
    """A probe's port (a number or the name of a containerPort) as a number."""
    if isinstance(port, int) and not isinstance(port, bool):
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        for declared in container.get("ports") or []:
            if declared.get("name") == port:
                number = declared.get("containerPort")
                return number if isinstance(number, int) else None
    return None


async def http_get(address: str, port: int, path: str, seconds: float) -> bool:
    """True when GET ``path`` answers with a status from 200 to 399 within ``seconds``."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(seconds):
            reader, writer = await asyncio.open_connection(address, port)
            request = (
                f"GET {path or '/'} HTTP/1.1\r\nHost: {address}:{port}\r\n"
                "User-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            )
            writer.write(request.encode())
            await writer.drain()
            status_line = await reader.readline()
        parts = status_line.decode("latin-1").split()
        return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
    except (OSError, TimeoutError, UnicodeError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def tcp_connect(address: str, port: int, seconds: float) -> bool:
    """True when a TCP connection to ``address:port`` opens within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            _, writer = await asyncio.open_connection(address, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def run_probe(probe: Obj, container: Obj, address: str) -> bool:
    """One attempt of ``probe``; exec probes (no container to exec into) pass."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    if isinstance(probe.get("httpGet"), dict):
        spec = probe["httpGet"]
        port = probe_port(container, spec.get("port"))
        if port is None:
            return False
        return await http_get(
            spec.get("host") or address, port, str(spec.get("path") or "/"), timeout
        )
    if isinstance(probe.get("tcpSocket"), dict):
        spec = probe["tcpSocket"]
        port = probe_port(container, spec.get("port"))
        if port is None:
            return False
        return await tcp_connect(spec.get("host") or address, port, timeout)
    return True
