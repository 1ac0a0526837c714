"""Container images for a real node, built from static binaries, with no registry.

A real containerd needs images, and the machines rtbench runs on have no registry
and no network to reach one. Both images a pod needs are tiny and built here:

- ``pause``: the sandbox's process (``native/pause.c``), which holds the pod's
  namespaces; it is the CRI plugin's ``sandbox_image``.
- ``workload``: the benchmark server (``workload/server.c``, ``make static``) as
  the entrypoint, plus ``/hog`` (``native/hog.c``), a memory hog that only runs
  when a container's command asks for it (the out-of-memory tests).

Each image is an OCI image-layout tar (one gzipped layer with the binaries and a
minimal ``/etc/passwd`` and ``/etc/group``, a config, a manifest and an
``index.json`` naming the reference) that ``ctr images import`` reads directly.
The tag is the first 12 hex digits of a hash over the binaries, so a changed
binary is a new reference and an unchanged one is never rebuilt: the tars are
cached under ``$XDG_CACHE_HOME/rtbench/images`` (default ``~/.cache``). Every
byte is deterministic (mtime 0, owner 0), so the same binaries give the same
image digest on every machine.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import RealNodeUnavailable
from ..workload import SOURCE_DIR

__all__ = ["REPOSITORY", "BuiltImage", "build_images", "cache_dir", "native_binary"]

REPOSITORY = "rtbench.local"
"""Registry part of every reference: a name no resolver answers, so nothing is pulled."""
NATIVE = Path(__file__).resolve().parent / "native"
LAYOUT_VERSION = "1"
"""Part of each tag's hash: bump it when the image layout written here changes."""
USER = "65534:65534"
"""Both images run as nobody, as the published workload image does."""
PASSWD = b"root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class BuiltImage:
    """One image tar in the cache and the reference it imports as."""

    name: str
    reference: str
    tar: Path


def cache_dir() -> Path:
    """Where built binaries and image tars are kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rtbench" / "images"


def _arch() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RealNodeUnavailable(
            f"cannot build {what}: {' '.join(argv)} failed: "
            f"{(done.stderr or done.stdout).strip()[-500:]} (run scripts/setup)"
        )


def native_binary(name: str) -> Path:
    """``native/<name>.c`` compiled static, cached by the source's hash."""
    if shutil.which("gcc") is None:
        raise RealNodeUnavailable(f"gcc not installed: cannot build {name} (run scripts/setup)")
    source = NATIVE / f"{name}.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    target = cache_dir() / "bin" / f"{name}-{digest}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        _run(["gcc", "-static", "-O2", "-s", "-Wall", "-o", str(tmp), str(source)], name)
        os.replace(tmp, target)
    return target


def workload_binary() -> Path:
    """The static workload server, built with ``make static`` when missing or stale."""
    if not (SOURCE_DIR / "Makefile").is_file():
        raise RealNodeUnavailable(
            f"no workload source at {SOURCE_DIR}: a source checkout is needed"
        )
    _run(["make", "-s", "-C", str(SOURCE_DIR), "static"], "the workload server")
    return SOURCE_DIR / "build" / "server-static"


def _blob(blobs: dict[str, bytes], data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def _layer(files: dict[str, Path]) -> bytes:
    """An uncompressed tar: the binaries (mode 0755) at /, and /etc/passwd, /etc/group."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, data: bytes, mode: int) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))

        etc = tarfile.TarInfo("etc")
        etc.type, etc.mode, etc.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(etc)
        add("etc/passwd", PASSWD, 0o644)
        add("etc/group", GROUP, 0o644)
        for name, path in sorted(files.items()):
            add(name, path.read_bytes(), 0o755)
    return out.getvalue()


def write_layout(target: Path, reference: str, files: dict[str, Path], entrypoint: str) -> None:
    """The OCI image-layout tar for ``files`` as one layer, tagged ``reference``."""
    blobs: dict[str, bytes] = {}
    layer = _layer(files)
    packed = gzip.compress(layer, mtime=0)
    config = {
        "architecture": _arch(),
        "os": "linux",
        "config": {"Entrypoint": [entrypoint], "User": USER, "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(blobs, json.dumps(config, sort_keys=True).encode()),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(blobs, packed)}
        ],
    }
    tag = reference.rsplit(":", 1)[1]
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **_blob(blobs, json.dumps(manifest, sort_keys=True).encode()),
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    members = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
        **{f"blobs/sha256/{d.split(':', 1)[1]}": data for d, data in sorted(blobs.items())},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, target)


def _image(name: str, files: dict[str, Path], entrypoint: str) -> BuiltImage:
    digest = hashlib.sha256(LAYOUT_VERSION.encode())
    for member, path in sorted(files.items()):
        digest.update(member.encode() + b"\0" + path.read_bytes())
    tag = digest.hexdigest()[:12]
    reference = f"{REPOSITORY}/{name}:{tag}"
    tar = cache_dir() / f"{name}-{tag}.tar"
    if not tar.is_file():
        write_layout(tar, reference, files, entrypoint)
    return BuiltImage(name, reference, tar)


def build_images() -> dict[str, BuiltImage]:
    """``pause`` and ``workload``, built (or found in the cache). Blocking: run in a thread."""
    pause = _image("pause", {"pause": native_binary("pause")}, "/pause")
    workload = _image(
        "workload",
        {"server": workload_binary(), "hog": native_binary("hog")},
        "/server",
    )
    return {"pause": pause, "workload": workload}
