"""A private InfluxDB 1.x server on a free loopback port.

The tests, the benchmarks and the demo need a real InfluxDB, and must not touch one
the machine may already run. This starts Debian's ``influxd`` with its own
configuration and data directory, waits until ``/ping`` answers, and stops it
again. Stopping and starting the same instance (same directory, same port) is
supported, so fault tests can take the database away and bring it back.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["InfluxdError", "LocalInfluxd", "free_port"]


class InfluxdError(RuntimeError):
    """influxd is missing, did not start, or a query failed."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now, below the kernel's ephemeral range.

    Ports the kernel hands out for port 0 come from the same range as the local
    ports of outgoing connections, so a server restarted on "its" port can find it
    taken by some client. Picking below that range avoids the collision.
    """
    low, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_CONFIG = """\
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
"""


class LocalInfluxd:
    """One influxd process with its own directory.

    ``start()`` and ``stop()`` may be called repeatedly; the port and the data stay
    the same across restarts.
    """

    def __init__(self, root: Path | None = None, binary: str | None = None) -> None:
        found = binary or shutil.which("influxd")
        if found is None:
            raise InfluxdError(
                "influxd not found: install Debian's influxdb (apt-get install influxdb)"
            )
        self.binary = found
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="rtbench-influxd-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.rpc_port = free_port()
        self.config_path = self.root / "influxdb.conf"
        self.config_path.write_text(
            _CONFIG.format(root=self.root, rpc_port=self.rpc_port, http_port=self.http_port)
        )
        self.log_path = self.root / "influxd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self.binary, "-config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise InfluxdError(
                    f"influxd exited with {self._proc.returncode} while starting; "
                    f"log: {self.log_path}\n{self._tail_log()}"
                )
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise InfluxdError(
            f"influxd did not answer /ping within {timeout:.0f} s; log: {self.log_path}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """Stops the server and removes a directory this object created."""
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def ping(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=1.0) as resp:
                return bool(resp.status == 204)
        except (OSError, urllib.error.URLError):
            return False

    def query(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """Runs InfluxQL through /query and returns the result list; raises on error."""
        params = {"q": q, "epoch": "ns"}
        if db is not None:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        try:
            with urllib.request.urlopen(self.url + "/query", data=data, timeout=10.0) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise InfluxdError(f"query {q!r} failed: {exc.code} {exc.read()[:200]!r}") from exc
        results: list[dict[str, Any]] = body.get("results", [])
        for result in results:
            if "error" in result:
                raise InfluxdError(f"query {q!r} failed: {result['error']}")
        return results

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"')

    def write(self, db: str, lines: str, precision: str = "ns") -> None:
        """Writes line protocol through the v1 /write endpoint."""
        url = f"{self.url}/write?" + urllib.parse.urlencode({"db": db, "precision": precision})
        req = urllib.request.Request(url, data=lines.encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10.0) as resp:
                if resp.status != 204:
                    raise InfluxdError(f"write answered {resp.status}")
        except urllib.error.HTTPError as exc:
            raise InfluxdError(f"write failed: {exc.code} {exc.read()[:200]!r}") from exc

    def _tail_log(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def __enter__(self) -> LocalInfluxd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
