"""A real containerd for the runtime-event tests: private socket and dirs, runc, CRI-like pods.

``LocalContainerd`` runs the Debian package's containerd as root with its own
config (root, state and socket in a short directory under /tmp, the CRI plugin
disabled) and makes "pods" the way the CRI plugin would: a sandbox container and
an app container, both from a rootfs holding only the static workload server,
labelled ``io.cri-containerd.kind`` sandbox/container and ``io.kubernetes.pod.*``,
created and started with ``ctr run``. ``CtrEvents`` runs ``ctr events`` alongside
and parses what it prints, the independent record the agent is compared with.

Cleanup leaves nothing behind: every task is killed and deleted and every
container removed through ``ctr`` (containerd is started again for that if a
test killed it), then containerd is stopped; shims and container processes that
survive anyway are found by their command line (the shim's ``-address`` names
our socket) or their root directory (our rootfs) and killed by pid.

Container ids are unique per test: runc keeps its state in /run/containerd/runc
whatever containerd's own state directory is, shared by concurrent tests.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtbench.influxd import free_port
from tests.conftest import REPO

__all__ = ["CtrEvents", "LocalContainerd", "Pod", "containerd", "rootfs"]

START_TIMEOUT_S = 30.0
"""containerd loads its plugins in well under a second; a loaded CI machine may need more."""


def _require_root_and_binaries() -> None:
    if os.geteuid() != 0:
        pytest.fail(
            "the containerd tests need root (containerd and runc create namespaces and "
            "mounts); CI runs them as root: run pytest as root"
        )
    missing = [
        b for b in ("containerd", "ctr", "runc", "containerd-shim-runc-v2") if not shutil.which(b)
    ]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run scripts/setup")


@dataclass(frozen=True)
class Pod:
    """A CRI-like pod: a sandbox container and one app container."""

    uid: str
    name: str
    namespace: str
    sandbox: str
    app: str
    container: str


class LocalContainerd:
    """containerd as root on a private socket; ``start()``, ``kill()``, ``close()``."""

    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        # Short: unix socket paths are limited to 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="rtb-ctd-", dir="/tmp"))
        self.socket = self.dir / "containerd.sock"
        self.config = self.dir / "config.toml"
        self.log = self.dir / "containerd.log"
        self.config.write_text(
            "version = 2\n"
            f'root = "{self.dir}/root"\n'
            f'state = "{self.dir}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.socket}"\n'
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.namespaces: set[str] = set()
        self._tag = uuid.uuid4().hex[:8]

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["containerd", "--config", str(self.config)],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"containerd exited at start:\n{self.log.read_text()[-3000:]}")
            done = subprocess.run(
                ["ctr", "-a", str(self.socket), "version"], capture_output=True, check=False
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"containerd did not answer within {START_TIMEOUT_S} s")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL containerd itself; its shims keep the containers running."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ctr(self, *args: str, namespace: str = "k8s.io") -> str:
        done = subprocess.run(
            ["ctr", "-a", str(self.socket), "-n", namespace, *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def new_id(self, what: str) -> str:
        return f"{what}-{self._tag}-{uuid.uuid4().hex[:6]}"

    def run(self, cid: str, labels: dict[str, str], *, namespace: str = "k8s.io") -> None:
        """Creates and starts a container running the workload on a free loopback port."""
        self.namespaces.add(namespace)
        flags = [f"--label={k}={v}" for k, v in labels.items()]
        flags += [f"--env=PORT={free_port()}", "--env=LISTEN_ADDR=127.0.0.1"]
        self.ctr(
            "run",
            "-d",
            "--rootfs",
            "--net-host",
            *flags,
            str(self.rootfs),
            cid,
            "/server",
            namespace=namespace,
        )

    def run_pod(
        self, name: str, *, uid: str = "", namespace: str = "default", container: str = "web"
    ) -> Pod:
        """A sandbox, then an app container, labelled as the CRI plugin labels them."""
        uid = uid or str(uuid.uuid4())
        pod = Pod(uid, name, namespace, self.new_id("sandbox"), self.new_id("app"), container)
        base = {
            "io.kubernetes.pod.uid": uid,
            "io.kubernetes.pod.name": name,
            "io.kubernetes.pod.namespace": namespace,
        }
        self.run(pod.sandbox, {**base, "io.cri-containerd.kind": "sandbox"})
        self.run(
            pod.app,
            {
                **base,
                "io.cri-containerd.kind": "container",
                "io.kubernetes.container.name": container,
            },
        )
        return pod

    def pid(self, cid: str, *, namespace: str = "k8s.io") -> int:
        for line in self.ctr("task", "ls", namespace=namespace).splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == cid:
                return int(fields[1])
        raise AssertionError(f"no task {cid}")

    def stop_task(self, cid: str, *, namespace: str = "k8s.io") -> None:
        self.ctr("task", "kill", "--signal", "SIGTERM", cid, namespace=namespace)

    def events(self, path: Path) -> CtrEvents:
        return CtrEvents(self.socket, path)

    # -- cleanup ---------------------------------------------------------------------------

    def close(self) -> None:
        try:
            if not self.running:
                self.start()
            for namespace in self.namespaces:
                self._remove_all(namespace)
        finally:
            self.kill()
            self._kill_leftovers()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _remove_all(self, namespace: str) -> None:
        for line in self.ctr("task", "ls", namespace=namespace).splitlines()[1:]:
            cid = line.split()[0]
            with contextlib.suppress(AssertionError):
                self.ctr("task", "kill", "--signal", "SIGKILL", cid, namespace=namespace)
            self._wait_stopped(cid, namespace)
            with contextlib.suppress(AssertionError):
                self.ctr("task", "delete", "--force", cid, namespace=namespace)
        for cid in self.ctr("containers", "ls", "--quiet", namespace=namespace).split():
            with contextlib.suppress(AssertionError):
                self.ctr("containers", "delete", cid, namespace=namespace)

    def _wait_stopped(self, cid: str, namespace: str) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = [
                line.split()
                for line in self.ctr("task", "ls", namespace=namespace).splitlines()[1:]
            ]
            if not any(r[0] == cid and r[2] != "STOPPED" for r in rows if len(r) >= 3):
                return
            time.sleep(0.05)

    def _kill_leftovers(self) -> None:
        """Shims that name our socket, and container processes rooted in our rootfs."""
        mine = str(self.socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                root = os.readlink(entry / "root")
            except OSError:
                continue
            if mine in cmdline or root == str(self.rootfs):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), signal.SIGKILL)


def _ns(date: str, clock: str) -> int:
    """``2026-11-22`` and ``18:35:49.577458512`` (UTC, trailing zeros trimmed) in ns."""
    whole, _, fraction = clock.partition(".")
    seconds = calendar.timegm(time.strptime(f"{date} {whole}", "%Y-%m-%d %H:%M:%S"))
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0")[:9] or 0)


def rfc3339_ns(text: str) -> int:
    """``2026-11-22T18:35:51.653717381Z`` in ns."""
    date, _, clock = text.rstrip("Z").partition("T")
    return _ns(date, clock)


@dataclass(frozen=True)
class CtrEvent:
    time_ns: int
    namespace: str
    topic: str
    body: dict[str, object]

    @property
    def container_id(self) -> str:
        return str(self.body.get("container_id") or self.body.get("id") or "")


class CtrEvents:
    """``ctr events`` printing to a file, parsed on demand."""

    def __init__(self, socket: Path, path: Path) -> None:
        self.path = path
        with open(path, "wb") as out:
            self.process = subprocess.Popen(
                ["ctr", "-a", str(socket), "events"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TZ": "UTC"},
            )

    def parsed(self) -> list[CtrEvent]:
        # 2026-11-22 18:35:49.629344906 +0000 UTC k8s.io /tasks/create {"container_id":...}
        out = []
        for line in self.path.read_text().splitlines():
            parts = line.split(" ", 6)
            if len(parts) == 7 and parts[2] == "+0000" and parts[3] == "UTC":
                body = json.loads(parts[6]) if parts[6].startswith("{") else {}
                out.append(CtrEvent(_ns(parts[0], parts[1]), parts[4], parts[5], body))
        return out

    def time_of(self, container_id: str, topic: str) -> int:
        """The envelope time ``ctr events`` printed (for /tasks/exit: the exited_at)."""
        for event in self.parsed():
            if event.container_id == container_id and event.topic == topic:
                if topic == "/tasks/exit":
                    return rfc3339_ns(str(event.body["exited_at"]))
                return event.time_ns
        raise AssertionError(f"ctr events printed no {topic} for {container_id}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait()


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root filesystem holding only the static workload, as /server."""
    subprocess.run(["make", "-s", "-C", str(REPO / "workload"), "static"], check=True)
    root = tmp_path_factory.mktemp("rootfs")
    shutil.copy(REPO / "workload" / "build" / "server-static", root / "server")
    return root


@pytest.fixture
def containerd(rootfs: Path) -> Iterator[LocalContainerd]:
    """A started containerd of this test alone; everything it ran is removed afterwards."""
    _require_root_and_binaries()
    local = LocalContainerd(rootfs)
    try:
        local.start()
        yield local
    finally:
        local.close()
