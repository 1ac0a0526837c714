"""The kubeconfig that points kubectl and client libraries at the simulated cluster.

Plain HTTP on loopback, no TLS and no credentials: the cluster, the context and
the user are all named ``rtbench-sim`` and the context's namespace is
``default``, so ``kubectl --kubeconfig PATH get pods`` and kubernetes-asyncio's
``config.load_kube_config(config_file=PATH)`` work unchanged. The file is written
atomically (and private, mode 0600) so a client polling for it never reads half
of it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

NAME = "rtbench-sim"


def kubeconfig(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": NAME, "cluster": {"server": url}}],
        "users": [{"name": NAME, "user": {}}],
        "contexts": [
            {"name": NAME, "context": {"cluster": NAME, "user": NAME, "namespace": "default"}}
        ],
        "current-context": NAME,
    }


def write_kubeconfig(path: Path, url: str) -> Path:
    """Write the kubeconfig for ``url`` to ``path`` (atomically); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(kubeconfig(url), sort_keys=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
