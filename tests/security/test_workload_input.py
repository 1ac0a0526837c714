"""Bad input on the workload server (workload/server.c), run as the real binary.

The agent probes it and so might anything else on the node: garbage, request
lines far beyond any buffer, a client that sends half a request and stalls, and
many connections at once must neither kill it nor stop it answering ``GET /``.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from rtbench.influxd import free_port
from tests.security.wire import garbage_corpus, raw_exchange


def _get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return sock.recv(4096)


def test_workload_survives_garbage_long_lines_slow_and_many_clients(workload_binary: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [str(workload_binary), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert b"listening" in proc.stdout.readline()
        assert _get(port).startswith(b"HTTP/1.")
        address = f"127.0.0.1:{port}"
        for name, data in garbage_corpus():
            raw_exchange(address, data, quiet=0.3)
            assert proc.poll() is None, f"workload died on {name}"
        raw_exchange(address, b"GET /" + b"a" * 1_000_000 + b" HTTP/1.1\r\n\r\n", quiet=0.3)
        raw_exchange(address, b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100_000 + b"\r\n", quiet=0.3)
        raw_exchange(address, b"\r\n" * 10_000, quiet=0.3)
        # Slowloris: the server answers one connection at a time, so each stalled
        # half request holds it for its whole-head deadline (2 s), however slowly it
        # drips, and is then dropped; the good client is answered after them.
        stalled = []
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\nHost:")
            stalled.append(s)
        dripping = stalled[0]
        for _ in range(4):
            time.sleep(0.5)
            with contextlib.suppress(OSError):
                dripping.sendall(b"x")
        with socket.create_connection(("127.0.0.1", port), timeout=60) as good:
            good.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert good.recv(4096).startswith(b"HTTP/1.1 200")
        # Many connections at once (within the listen backlog of 128), closed without a
        # word: each is dropped at EOF.
        crowd = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(120)]
        for s in crowd:
            s.close()
        for s in stalled:
            s.close()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as good:
            good.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert good.recv(4096).startswith(b"HTTP/1.1 200")
        assert proc.poll() is None
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
