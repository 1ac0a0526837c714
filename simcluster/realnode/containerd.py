"""A private, real containerd (CRI) with runc, crun and runsc, for a node with real pods.

The simulated kubelet of a real-pod node starts pods through the Kubernetes CRI,
as a real kubelet does, against this containerd. It is the Debian package's
containerd run as a child process with a configuration of its own: root, state,
config and logs under ``base`` (default ``/run/rtbench/<id>``), the gRPC and ttrpc
sockets under ``/run/rtbench/<id>`` (unix socket paths must stay short), so it never
touches a system containerd. Its CRI plugin is set up as REAL-RUNTIMES found
necessary on a development machine:

- ``sandbox_image`` is the locally built pause image (images.py): no registry;
- ``restrict_oom_score_adj``: without CAP_SYS_RESOURCE writing -998 is denied and
  every sandbox fails with "can't get final child's PID from pipe: EOF";
- the cgroupfs driver (PID 1 need not be systemd), pods under a cgroup tree this
  node owns (cgroups.py);
- one runtime per handler, each through the runc v2 shim with its own state root:
  ``runc`` directly, ``crun`` and ``runsc`` through the wrappers shipped beside this
  module (wrappers/: why each is needed is written there);
- CNI with the node's own conflist and bridge (network.py), network namespaces
  under the state directory.

Lifecycle: ``start()`` first recovers nodes whose owner died (registry.py), then
records this one, builds and imports the images and waits for CRI ``Status`` to
say RuntimeReady and NetworkReady. ``stop()`` stops and removes every sandbox
through CRI, stops containerd, and removes what containerd and CNI leave behind
(shims, mounts, bridge, cgroups, CNI caches, directories, ip_forward), so that
afterwards nothing of the node is left.

Errors: ``RealNodeUnavailable`` (simcluster/errors.py) when the machine cannot run
a real node, with what is missing and how to fix it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc

from rtbench.cri import api_pb2 as cri
from rtbench.cri import api_pb2_grpc as cri_grpc
from rtbench.protocol import WORKLOAD_IMAGE

from ..errors import RealNodeUnavailable
from . import network, registry
from .cgroups import PodCgroups
from .images import BuiltImage, build_images

__all__ = ["UNUSABLE_HANDLERS", "RealContainerd", "clean_leftovers"]

log = logging.getLogger(__name__)

WRAPPERS = Path(__file__).resolve().parent / "wrappers"
START_TIMEOUT_S = 10.0
"""containerd answers in well under a second; a loaded CI machine may need more."""
STOP_TIMEOUT_S = 10.0
"""How long containerd gets after SIGTERM before SIGKILL."""
CALL_TIMEOUT_S = 60.0
"""CRI calls during stop: StopPodSandbox of a gVisor sandbox takes a few hundred ms."""
SHIM_SOCKET_DIR = Path("/run/containerd/s")
"""Where containerd 1.6 puts shim sockets whatever its own state directory is."""
NAMESPACE = "k8s.io"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

UNUSABLE_HANDLERS: dict[str, str] = {
    "runsc-kvm": "the KVM platform hangs on this kernel; runsc uses ptrace",
    "kata-qemu": "not installed: no Kata packages in Debian",
    "kata-fc": "not installed: no Kata packages in Debian",
    "kata-clh": "not installed: no Kata packages in Debian",
}
"""Handlers a kubelet may be asked for that no real node here can run, and why."""
RUNTIME_BINARIES = {"runc": "runc", "crun": "crun", "runsc": "runsc"}
DISABLED_PLUGINS = [
    # Nothing here uses them, and "opt" would create /opt/containerd on the host.
    # Disabling them does not speed start-up measurably (median of 5 starts: 160 ms
    # with none disabled, 167 ms with these). io.containerd.runtime.v1.linux must stay:
    # the tasks service, and with it the CRI plugin, fails to load without it.
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
]


def _unavailable(what: str) -> RealNodeUnavailable:
    return RealNodeUnavailable(f"cannot run a real node: {what}")


class RealContainerd:
    """One private containerd with CRI, its pods' network and cgroups.

    ``socket`` is what the kubelet and agents dial (``unix:<socket>``); ``handlers``
    maps each runtime handler name to None (usable) or why it is not; ``images``
    holds the ``pause`` and ``workload`` references (set by ``start()``).
    """

    def __init__(self, base: Path | None = None, *, node_id: str | None = None) -> None:
        self.id = node_id or secrets.token_hex(4)
        self.run_dir = registry.RUN_DIR / self.id
        self.base = Path(base) if base is not None else self.run_dir
        self.socket = self.run_dir / "c.sock"
        self.ttrpc_socket = self.run_dir / "t.sock"
        self.config_path = self.base / "config.toml"
        self.log_path = self.base / "containerd.log"
        self.bridge = f"rtb{self.id}"
        self.subnet = ""
        self.cgroups = PodCgroups(f"rtbench-{self.id}")
        self.images: dict[str, str] = {}
        self.handlers: dict[str, str | None] = {}
        for handler, binary in RUNTIME_BINARIES.items():
            self.handlers[handler] = (
                None
                if shutil.which(binary, path=PATH)
                else f"not installed: {binary} (run scripts/setup)"
            )
        self.handlers.update(UNUSABLE_HANDLERS)
        self._process: subprocess.Popen[bytes] | None = None
        self._containerd_pid = 0
        self._channel: grpc.aio.Channel | None = None
        self._entry: registry.NodeEntry | None = None
        self._stopped = False

    # -- public API --------------------------------------------------------------------

    def cgroup_parent(self, pod_uid: str) -> str:
        """``linux.cgroup_parent`` for the pod's RunPodSandbox."""
        return self.cgroups.parent(pod_uid)

    def create_pod_cgroup(self, pod_uid: str, memory_limit_bytes: int | None = None) -> str:
        """The pod's cgroup, its memory limit set to ``memory_limit_bytes`` (the sum
        of its containers' limits, as a kubelet sets it; None: unlimited). Returns
        the cgroup parent to pass to RunPodSandbox."""
        self.cgroups.create_pod(pod_uid, memory_limit_bytes)
        return self.cgroup_parent(pod_uid)

    def remove_pod_cgroup(self, pod_uid: str) -> None:
        """Removes the pod's cgroups (after RemovePodSandbox)."""
        self.cgroups.remove_pod(pod_uid)

    def pod_memory_bytes(self, pod_uid: str) -> int | None:
        """The pod cgroup's memory use now; None when it has no cgroup."""
        return self.cgroups.memory_bytes(pod_uid)

    @property
    def usable_handlers(self) -> list[str]:
        return [name for name, reason in self.handlers.items() if reason is None]

    def cri_channel(self) -> grpc.aio.Channel:
        """A new gRPC channel to the socket, for the caller to close."""
        return grpc.aio.insecure_channel(
            f"unix:{self.socket}",
            options=[
                ("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 500),
            ],
        )

    @property
    def runtime(self) -> Any:
        """A ``RuntimeServiceStub`` on this node's own channel (after ``start()``)."""
        return cri_grpc.RuntimeServiceStub(self._own_channel())

    @property
    def image_service(self) -> Any:
        """An ``ImageServiceStub`` on this node's own channel (after ``start()``)."""
        return cri_grpc.ImageServiceStub(self._own_channel())

    async def start(self) -> None:
        """Recovers dead nodes, then starts this one; RealNodeUnavailable if it cannot."""
        await asyncio.to_thread(self._preflight)
        await clean_leftovers()
        await asyncio.to_thread(self._register)
        try:
            built = await asyncio.to_thread(build_images)
            self.images = {name: image.reference for name, image in built.items()}
            await asyncio.to_thread(self._prepare)
            await self._launch()
            await self._wait_ready(network=True)
            await self._import_images(built)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Removes every pod and everything of this node; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._containerd_alive():
                await self._remove_sandboxes()
        finally:
            if self._channel is not None:
                await self._channel.close()
                self._channel = None
            await asyncio.to_thread(self._teardown)

    # -- start ---------------------------------------------------------------------------

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise _unavailable(
                "not root: containerd, the OCI runtimes and CNI create namespaces, mounts "
                "and cgroups (run the simulator or tests as root)"
            )
        tools = ["containerd", "ctr", "containerd-shim-runc-v2", "runc", "ip", "unshare"]
        tools += ["gcc", "make"]
        missing = [tool for tool in tools if shutil.which(tool, path=PATH) is None]
        missing += [
            f"{network.CNI_BIN_DIR}/{plugin}"
            for plugin in network.CNI_PLUGINS
            if not os.access(network.CNI_BIN_DIR / plugin, os.X_OK)
        ]
        if missing:
            raise _unavailable(f"not installed: {', '.join(missing)} (run scripts/setup)")
        try:
            registry.RUN_DIR.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unavailable(f"cannot create {registry.RUN_DIR}: {exc.strerror}") from exc
        problem = self.cgroups.check_writable()
        if problem:
            raise _unavailable(
                f"{problem} (cgroups must be writable: run as root, not in a "
                "container without cgroup delegation)"
            )

    def _register(self) -> None:
        start = registry.process_start_time(os.getpid())
        with registry.locked():
            live = registry.entries()
            self.subnet = registry.allocate_subnet([e.subnet for e in live])
            before = next((e.ip_forward_before for e in live), network.read_ip_forward())
            self._entry = registry.NodeEntry(
                id=self.id,
                owner_pid=os.getpid(),
                owner_start=start or 0,
                base=str(self.base),
                run_dir=str(self.run_dir),
                socket=str(self.socket),
                bridge=self.bridge,
                subnet=self.subnet,
                cgroup=self.cgroups.name,
                ip_forward_before=before,
            )
            registry.write_entry(self._entry)
            network.hold_benchmark_range()

    def _prepare(self) -> None:
        for directory in (self.base, self.run_dir / "bin", self.run_dir / "log"):
            directory.mkdir(parents=True, exist_ok=True)
        for name in ("crun", "runsc"):
            target = self.run_dir / "bin" / name
            shutil.copyfile(WRAPPERS / name, target)
            target.chmod(0o755)
        network.write_conflist(
            self.base / "cni", self.id, self.bridge, self.subnet, self.base / "cni-ipam"
        )
        self.cgroups.create_parent()
        self.config_path.write_text(self._config())

    def _config(self) -> str:
        cri_key = '[plugins."io.containerd.grpc.v1.cri"'
        lines = [
            "version = 2",
            f'root = "{self.base}/root"',
            f'state = "{self.base}/state"',
            f"disabled_plugins = {DISABLED_PLUGINS!r}".replace("'", '"'),
            "[grpc]",
            f'  address = "{self.socket}"',
            "[ttrpc]",
            f'  address = "{self.ttrpc_socket}"',
            f"{cri_key}]",
            f'  sandbox_image = "{self.images["pause"]}"',
            "  restrict_oom_score_adj = true",
            "  systemd_cgroup = false",
            "  netns_mounts_under_state_dir = true",
            f"{cri_key}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
        ]
        for handler in RUNTIME_BINARIES:
            if self.handlers[handler] is not None:
                continue
            binary = (
                shutil.which("runc", path=PATH)
                if handler == "runc"
                else self.run_dir / "bin" / handler
            )
            lines += [
                f"{cri_key}.containerd.runtimes.{handler}]",
                '  runtime_type = "io.containerd.runc.v2"',
                f"{cri_key}.containerd.runtimes.{handler}.options]",
                f'  BinaryName = "{binary}"',
                f'  Root = "{self.run_dir / handler}"',
                "  SystemdCgroup = false",
            ]
        lines += [
            f"{cri_key}.cni]",
            f'  bin_dir = "{network.CNI_BIN_DIR}"',
            f'  conf_dir = "{self.base / "cni"}"',
            "  max_conf_num = 1",
        ]
        return "\n".join(lines) + "\n"

    async def _launch(self) -> None:
        await asyncio.to_thread(self._spawn)

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as out:
            self._process = subprocess.Popen(
                ["containerd", "--config", str(self.config_path)],
                stdout=out,
                stderr=out,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "PATH": PATH},
            )
        self._containerd_pid = self._process.pid
        if self._entry is not None:
            self._entry.containerd_pid = self._process.pid
            with registry.locked():
                registry.write_entry(self._entry)

    async def _wait_ready(self, *, network: bool) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            if not self._containerd_alive():
                raise _unavailable(f"containerd exited at start; its log:\n{self._log_tail()}")
            if self.socket.exists():
                try:
                    reply = await self.runtime.Status(cri.StatusRequest(), timeout=2)
                except grpc.aio.AioRpcError as exc:
                    last = f"{exc.code().name}: {exc.details()}"
                else:
                    conditions = {c.type: c for c in reply.status.conditions}
                    wanted = ["RuntimeReady"] + (["NetworkReady"] if network else [])
                    not_ready = [
                        w for w in wanted if not (w in conditions and conditions[w].status)
                    ]
                    if not not_ready:
                        return
                    last = "; ".join(
                        f"{w}: {conditions[w].reason} {conditions[w].message}"
                        if w in conditions
                        else f"{w}: missing"
                        for w in not_ready
                    )
            await asyncio.sleep(0.02)
        raise _unavailable(
            f"containerd not ready within {START_TIMEOUT_S} s ({last}); its log:\n"
            f"{self._log_tail()}"
        )

    async def _import_images(self, built: dict[str, BuiltImage]) -> None:
        for image in built.values():
            request = cri.ImageStatusRequest(image=cri.ImageSpec(image=image.reference))
            status = await self.image_service.ImageStatus(request, timeout=CALL_TIMEOUT_S)
            if status.image.id:
                continue
            proc = await asyncio.create_subprocess_exec(
                "ctr", "-a", str(self.socket), "-n", NAMESPACE, "images", "import",
                str(image.tar),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await proc.communicate()
            if proc.returncode != 0:
                raise _unavailable(
                    f"ctr images import {image.tar} failed: {output.decode(errors='replace')}"
                )
        # The workload under the name rtctl, the chart and the examples use, as if it had
        # been pulled: rtctl's default then runs here without a registry.
        await self._ctr("images", "tag", "--force", self.images["workload"], WORKLOAD_IMAGE)

    async def _ctr(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            "ctr", "-a", str(self.socket), "-n", NAMESPACE, *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            raise _unavailable(f"ctr {' '.join(args)} failed: {output.decode(errors='replace')}")

    # -- stop ----------------------------------------------------------------------------

    def _own_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = self.cri_channel()
        return self._channel

    def _containerd_alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self._containerd_pid > 0 and _cmdline_has(
            self._containerd_pid, str(self.config_path)
        )

    async def _remove_sandboxes(self) -> None:
        """Stop and remove every sandbox (which removes its containers) through CRI."""
        runtime = self.runtime
        try:
            listed = await runtime.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=10)
        except grpc.aio.AioRpcError as exc:
            log.warning("real node %s: ListPodSandbox failed at stop: %s", self.id, exc.details())
            return

        async def remove(sandbox_id: str) -> None:
            try:
                await runtime.StopPodSandbox(
                    cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=CALL_TIMEOUT_S
                )
                await runtime.RemovePodSandbox(
                    cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id),
                    timeout=CALL_TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as exc:
                log.warning(
                    "real node %s: removing sandbox %s: %s", self.id, sandbox_id, exc.details()
                )

        await asyncio.gather(*(remove(item.id) for item in listed.items))

    def _teardown(self) -> None:
        """Everything after CRI: containerd, stray processes, mounts, network, cgroups."""
        self._stop_containerd()
        tasks = self._task_ids()
        needles = [str(self.socket), str(self.run_dir) + "/", str(self.base) + "/"]
        _kill_matching(needles, self.cgroups)
        _unmount_under([self.base, self.run_dir])
        for task_id in tasks:
            _remove_shim_socket(self.socket, task_id)
        network.delete_bridge(self.bridge)
        network.forget_results(self.id, tasks)
        stayed = self.cgroups.remove_all()
        if stayed:
            log.warning("real node %s: cgroups left: %s", self.id, stayed)
        for directory in (self.base, self.run_dir):
            shutil.rmtree(directory, ignore_errors=True)
        with registry.locked():
            others = [e for e in registry.entries() if e.id != self.id]
            before = self._entry.ip_forward_before if self._entry else ""
            if not others and before:
                network.write_ip_forward(before)
            if not others:
                network.release_benchmark_range()
            if self._entry is not None:
                registry.remove_entry(self._entry)

    def _stop_containerd(self) -> None:
        pid = self._containerd_pid
        if not self._containerd_alive():
            if self._process is not None:
                self._process.wait()
            return
        os.kill(pid, signal.SIGTERM)
        if self._process is not None:
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            return
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self._containerd_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._containerd_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _task_ids(self) -> list[str]:
        tasks = self.base / "state" / "io.containerd.runtime.v2.task" / NAMESPACE
        try:
            return [entry.name for entry in tasks.iterdir()]
        except OSError:
            return []

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        # A plugin that failed to load says why in one line; otherwise the end.
        failed = [
            line for line in lines if "failed to load plugin" in line or "level=error" in line
        ]
        return "\n".join((failed or lines)[-20:])

    # -- recovery -------------------------------------------------------------------------

    @classmethod
    def _from_entry(cls, entry: registry.NodeEntry) -> RealContainerd:
        node = cls(Path(entry.base), node_id=entry.id)
        node.subnet = entry.subnet
        node.bridge = entry.bridge
        node._entry = entry
        node._containerd_pid = entry.containerd_pid
        return node

    async def _recover(self) -> None:
        """Removes what a node whose owner died left: restarting its containerd on the
        same root and state brings its pods back, and CRI then removes them."""
        log.warning("real node %s: its owner %s died; cleaning up", self.id, self._entry)
        if not self._containerd_alive() and self.config_path.is_file():
            await self._launch()
            try:
                await self._wait_ready(network=False)
            except RealNodeUnavailable as exc:
                log.warning("real node %s: containerd did not restart: %s", self.id, exc)
        await self.stop()


async def clean_leftovers() -> list[str]:
    """Recovers and removes every node whose owner died; their ids."""

    def dead() -> list[registry.NodeEntry]:
        with registry.locked():
            return [e for e in registry.entries() if not registry.owner_alive(e)]

    cleaned = []
    for entry in await asyncio.to_thread(dead):
        await RealContainerd._from_entry(entry)._recover()
        cleaned.append(entry.id)
    return cleaned


# -- process, mount and socket cleanup ----------------------------------------------------


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _cmdline_has(pid: int, needle: str) -> bool:
    return needle.encode() in _cmdline(pid)


def _kill_matching(needles: list[str], cgroups: PodCgroups) -> None:
    """SIGKILL shims and runtime processes naming our paths, and every task in our
    cgroups (a pod's processes when its shim was killed before it)."""
    wanted = [n.encode() for n in needles]
    me = os.getpid()
    victims: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me:
            cmdline = _cmdline(int(entry.name))
            if any(n in cmdline for n in wanted):
                victims.add(int(entry.name))
    for directory in cgroups.leftovers():
        for procs in Path(directory).rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                victims.update(int(line) for line in procs.read_text().split())
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while victims and time.monotonic() < deadline:
        victims = {pid for pid in victims if Path(f"/proc/{pid}").exists() and not _zombie(pid)}
        time.sleep(0.01)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


MNT_DETACH = 2


def mounts_under(prefixes: list[Path]) -> list[str]:
    """Mount points in /proc/self/mountinfo at or under any of ``prefixes``."""
    found = []
    roots = [str(p) for p in prefixes]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == r or point.startswith(r + "/") for r in roots):
            found.append(point)
    return found


def _unmount_under(prefixes: list[Path]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for point in sorted(mounts_under(prefixes), key=len, reverse=True):
        if libc.umount2(point.encode(), MNT_DETACH) != 0:
            log.warning("umount %s: %s", point, os.strerror(ctypes.get_errno()))


def _remove_shim_socket(address: Path, task_id: str) -> None:
    """A killed shim's socket: containerd 1.6 names it by hash of address/ns/id."""
    digest = hashlib.sha256(f"{address}/{NAMESPACE}/{task_id}".encode()).hexdigest()
    with contextlib.suppress(OSError):
        (SHIM_SOCKET_DIR / digest).unlink()
