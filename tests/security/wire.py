"""Raw bytes on a port: what a scanner, a broken client or an attacker sends.

The corpus tests need inputs no well-behaved client library produces: random
bytes, an HTTP/2 preface followed by a frame cut short, gRPC framing around bytes
that are not protobuf. These helpers write them on a plain socket (TCP or unix)
and read whatever comes back until the peer closes or goes quiet, so a test can
say the server answered (or hung up) rather than hung or died.
"""

from __future__ import annotations

import random
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc

__all__ = [
    "H2_PREFACE",
    "garbage_corpus",
    "h2_frame",
    "raw_exchange",
    "raw_unary",
]

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(
    kind: int, flags: int, stream: int, payload: bytes, *, length: int | None = None
) -> bytes:
    """One HTTP/2 frame; ``length`` may lie about the payload (a cut frame)."""
    size = len(payload) if length is None else length
    return struct.pack(">I", size)[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def garbage_corpus(seed: int = 8) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) inputs that are not a valid request on any of our ports."""
    rng = random.Random(seed)
    for size in (1, 17, 256, 4096, 65536):
        yield f"random-{size}", rng.randbytes(size)
    yield "zeros", bytes(1024)
    yield "preface-only", H2_PREFACE
    yield "preface-cut", H2_PREFACE[:10]
    settings = h2_frame(0x4, 0, 0, b"")
    # A HEADERS frame announcing 200 bytes of which 9 arrive, then the peer hangs up.
    yield "h2-cut-frame", H2_PREFACE + settings + h2_frame(0x1, 0x4, 1, b"\x82" * 9, length=200)
    # A DATA frame on a stream that was never opened.
    yield "h2-data-no-stream", H2_PREFACE + settings + h2_frame(0x0, 0x1, 3, b"\x00" * 8)
    # A frame length above the default SETTINGS_MAX_FRAME_SIZE (16 KiB).
    yield "h2-huge-frame", H2_PREFACE + settings + h2_frame(0x0, 0, 1, b"", length=(1 << 24) - 1)
    yield "http1-get", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    yield "http1-garbage", b"\xff\xfe NOT HTTP \x00\r\n\r\n"
    yield "tls-hello-ish", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(64)


def raw_exchange(address: str | Path, data: bytes, *, quiet: float = 1.0) -> bytes:
    """Sends ``data`` on a fresh connection, half-closes, returns what came back.

    ``address`` is ``host:port`` or a unix socket path. Stops reading when the
    peer closes, resets, or says nothing for ``quiet`` seconds.
    """
    if isinstance(address, Path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[str, int] = str(address)
    else:
        host, _, port = address.rpartition(":")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host.strip("[]"), int(port))
    received = bytearray()
    with sock:
        sock.settimeout(10)
        sock.connect(target)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return bytes(received)  # the server hung up first: also an answer
        sock.settimeout(quiet)
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if len(received) > 1 << 20:
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return bytes(received)


async def raw_unary(
    channel: grpc.aio.Channel, method: str, payload: bytes, token: str | None
) -> tuple[grpc.StatusCode, str]:
    """Calls a unary method with ``payload`` as the serialized request; (code, details)."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    metadata = None if token is None else (("authorization", f"Bearer {token}"),)
    try:
        await call(payload, metadata=metadata, timeout=30)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""
