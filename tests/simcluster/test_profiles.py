"""Runtime profiles: defaults that follow the studies, YAML overrides, clear errors."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from simcluster import workload
from simcluster.errors import ConfigError, WorkloadError
from simcluster.objects import parse_bytes
from simcluster.profiles import DEFAULT_PROFILES, STAGES, Delay, load_profiles, parse_profiles

MiB = 2**20


def median_total(name: str) -> float:
    return sum(DEFAULT_PROFILES[name].stage(s).median_ms for s in STAGES)


def test_defaults_follow_the_studies() -> None:
    assert set(DEFAULT_PROFILES) == {
        "runc",
        "crun",
        "runsc",
        "kata-qemu",
        "kata-fc",
        "kata-clh",
        "urunc",
        "youki",
        "wasmtime",
    }
    runc = median_total("runc")
    assert median_total("crun") < runc
    assert DEFAULT_PROFILES["crun"].container_create.median_ms == pytest.approx(
        0.8 * DEFAULT_PROFILES["runc"].container_create.median_ms
    )
    assert 1.6 < median_total("runsc") / runc < 2.0
    assert runc < median_total("kata-qemu") < median_total("kata-fc")
    assert max(median_total(n) for n in DEFAULT_PROFILES) == median_total("kata-fc")
    assert DEFAULT_PROFILES["runc"].memory_overhead == 10 * MiB
    assert DEFAULT_PROFILES["kata-qemu"].memory_overhead == 152 * MiB
    assert DEFAULT_PROFILES["kata-fc"].memory_overhead == 135 * MiB
    assert all(
        p.min_memory <= 16 * MiB for p in DEFAULT_PROFILES.values()
    )  # 16Mi is the usual limit


def test_delays_are_seeded_spread_clipped_and_contended() -> None:
    delay = Delay(100.0, 0.5, 50.0, 200.0)
    draws = [delay.draw(random.Random(i)) for i in range(200)]
    assert all(0.05 <= d <= 0.2 for d in draws) and len(set(draws)) > 100
    assert delay.draw(random.Random(1)) == delay.draw(random.Random(1))
    runc = DEFAULT_PROFILES["runc"]
    alone = runc.draw("sandbox_start", random.Random(3), 1)
    crowded = runc.draw("sandbox_start", random.Random(3), 11)
    assert crowded == pytest.approx(alone * (1 + 10 * runc.contention))


def test_yaml_overrides_and_additions(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "profiles:\n"
        "  runc:\n"
        "    sandbox_start: {median_ms: 500, spread: 0}\n"
        "    min_memory: 20Mi\n"
        "  fast:\n"
        "    base: crun\n"
        "    container_start: 5\n"
        "    contention: 0\n"
    )
    profiles = load_profiles(path)
    assert (
        profiles["runc"].sandbox_start.median_ms == 500 and profiles["runc"].min_memory == 20 * MiB
    )
    assert profiles["runc"].sandbox_create == DEFAULT_PROFILES["runc"].sandbox_create
    assert profiles["fast"].container_start == Delay(5.0, 0.0, 5.0, 5.0)
    assert profiles["fast"].sandbox_create == DEFAULT_PROFILES["crun"].sandbox_create
    assert "kata-fc" in profiles


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"runc": {}}, "exactly one key, 'profiles'"),
        ({"profiles": []}, "profiles: must be a mapping"),
        (
            {"profiles": {"runc": {"sandbox_start": {"median_ms": "x"}}}},
            "profiles.runc.sandbox_start.median_ms",
        ),
        (
            {"profiles": {"runc": {"sandbox_start": {"mean": 1}}}},
            "profiles.runc.sandbox_start.mean: unknown field",
        ),
        ({"profiles": {"runc": {"speed": 1}}}, "profiles.runc.speed: unknown field"),
        ({"profiles": {"runc": {"min_memory": "lots"}}}, "profiles.runc.min_memory"),
        (
            {"profiles": {"runc": {"contention": -1}}},
            "profiles.runc.contention: must be at least 0",
        ),
        ({"profiles": {"x": {"base": "nope"}}}, "profiles.x.base: no profile named 'nope'"),
        ({"profiles": {"Bad_Name": {}}}, "profiles.Bad_Name: not a valid RuntimeClass name"),
        (
            {"profiles": {"runc": {"sandbox_start": {"min_ms": 9, "max_ms": 1}}}},
            "max_ms: must not be below",
        ),
    ],
)
def test_invalid_profiles_name_the_field(doc: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_profiles(doc)
    assert message in str(caught.value)


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read profiles file"):
        load_profiles(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("profiles: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profiles(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16Mi", 16 * MiB),
        ("1Gi", 2**30),
        ("500M", 500_000_000),
        ("1e3", 1000),
        ("1.5Ki", 1536),
        (128, 128),
    ],
)
def test_memory_quantities(text: object, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["", "16MB", "Mi", "-1Mi", True])
def test_bad_quantities(text: object) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)


async def test_the_workload_is_built_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "workload"
    source.mkdir()
    for name in ("server.c", "Makefile"):
        shutil.copy(workload.SOURCE_DIR / name, source / name)
    monkeypatch.setattr(workload, "SOURCE_DIR", source)
    monkeypatch.setattr(workload, "DEFAULT_BINARY", source / "build" / "server")
    built = await workload.ensure_workload(None)
    assert built == source / "build" / "server" and built.is_file()
    assert await workload.ensure_workload(tmp_path / "given") == tmp_path / "given"

    (source / "build" / "server").unlink()
    monkeypatch.setattr("shutil.which", lambda tool: None)
    with pytest.raises(WorkloadError, match="make and gcc not installed"):
        await workload.ensure_workload(None)
