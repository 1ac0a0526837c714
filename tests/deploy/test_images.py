"""The Dockerfiles in deploy/images, checked without a Docker engine.

This machine has a docker client but no engine, so the images cannot be built
here. What can go wrong in a Dockerfile without building it is checked instead,
with a small parser of Docker's syntax (instructions, continuation lines,
comments, exec-form JSON) and of .dockerignore's patterns: every file a COPY
takes from the build context exists and is not excluded; the programs the
images start are the project's console scripts (and answer ``--help``) or the
binary the workload Makefile builds; every image that can be a build target runs
as a non-root user; every base image is pinned to a tag; every RTBENCH_*
variable set is one the component reads. The workload's compile step really runs
here, exactly as the build stage runs it, and the binary it makes is checked to
be static and to serve HTTP on a port the way the Deployment starts it.
"""

from __future__ import annotations

import json
import os
import platform
import re
import select
import shlex
import shutil
import signal
import subprocess
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from rtbench.influxd import free_port
from rtctl.workload import WORKLOAD_PORT

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "deploy" / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
VENV_BIN = REPO / ".venv" / "bin"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str]:
        """ENTRYPOINT/CMD arguments: the JSON array form, else the shell form's words."""
        if self.args.startswith("["):
            value = json.loads(self.args)
            assert isinstance(value, list) and all(isinstance(v, str) for v in value)
            return value
        return ["/bin/sh", "-c", self.args]

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """``--from=build a b`` → ({"from": "build"}, ["a", "b"])."""
        flags: dict[str, str] = {}
        words = shlex.split(self.args) if not self.args.startswith("[") else self.exec_form()
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words


@dataclass
class Stage:
    base: str
    name: str | None
    index: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages and their instructions. Continuations (a trailing backslash) join lines;
    comment lines inside a continuation are dropped, as Docker does."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, "the Dockerfile ends inside a continuation"
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            _, words = ins.flags_and_words()
            name = words[2] if len(words) == 3 and words[1].lower() == "as" else None
            stages.append(Stage(base=words[0], name=name, index=len(stages)))
        elif ins.keyword != "ARG" or stages:
            assert stages, f"line {ins.line}: {ins.keyword} before FROM"
            stages[-1].instructions.append(ins)
    return stages


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """One .dockerignore pattern (Go filepath.Match plus ``**``) as a regex over
    slash-separated paths relative to the context root; matching a directory
    excludes everything under it."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(f"^{out}(?:/.*)?$")


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether ``path`` is left out of the context; the last matching pattern decides."""
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = os.path.normpath(raw[1:] if negate else raw).lstrip("/")
        if _pattern_regex(pattern).match(path):
            excluded = not negate
    return excluded


def read_dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def stages_of(dockerfile: Path) -> list[Stage]:
    return parse_dockerfile(dockerfile.read_text())


def target_stages(stages: list[Stage]) -> list[Stage]:
    """Stages that can be built as an image: not used as the source of another's
    COPY --from or FROM (a build stage's files end up in a target, its user not)."""
    used: set[str] = set()
    for stage in stages:
        if any(earlier.name == stage.base for earlier in stages[: stage.index]):
            used.add(stage.base)
        for copy in stage.all("COPY"):
            used.add(copy.flags_and_words()[0].get("from", ""))
    return [s for s in stages if (s.name or str(s.index)) not in used]


def console_scripts() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    scripts: dict[str, str] = project["scripts"]
    return scripts


def component_help(program: str, *args: str) -> str:
    done = subprocess.run(
        [str(VENV_BIN / program), *args, "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{program} {' '.join(args)} --help: {done.stderr}"
    return done.stdout


def test_parser_joins_continuations_and_drops_comments() -> None:
    text = (
        "# syntax=docker/dockerfile:1\nARG X=1\nFROM --platform=$BUILDPLATFORM a:1 AS b\n"
        "RUN one \\\n  # a comment inside\n  two \\\n  three\n\nFROM scratch\n"
        'COPY --from=b /x /y\nENTRYPOINT ["/y", "-p"]\n'
    )
    stages = parse_dockerfile(text)
    assert [(s.base, s.name) for s in stages] == [("a:1", "b"), ("scratch", None)]
    assert stages[0].instructions[0].args == "one two three"
    assert stages[0].instructions[0].line == 4
    assert stages[1].all("ENTRYPOINT")[0].exec_form() == ["/y", "-p"]
    assert stages[1].all("COPY")[0].flags_and_words() == ({"from": "b"}, ["/x", "/y"])
    assert [s.name for s in target_stages(stages)] == [None]


def test_dockerignore_matching_follows_docker_rules() -> None:
    patterns = ["**/__pycache__", "*.egg-info", "bench/results", "docs/*.md", "!docs/keep.md"]
    assert dockerignore_excludes(patterns, "agent/__pycache__/x.pyc")
    assert dockerignore_excludes(patterns, "__pycache__")
    assert dockerignore_excludes(patterns, "rtbench.egg-info/PKG-INFO")
    assert not dockerignore_excludes(patterns, "sub/rtbench.egg-info")  # anchored at the root
    assert dockerignore_excludes(patterns, "bench/results/a.json")
    assert not dockerignore_excludes(patterns, "bench/agent_probe.py")
    assert dockerignore_excludes(patterns, "docs/a.md")
    assert not dockerignore_excludes(patterns, "docs/keep.md")


def test_the_dockerfiles_are_there() -> None:
    names = {p.name for p in DOCKERFILES}
    assert names == {"agent.Dockerfile", "collector.Dockerfile", "workload.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_sources_exist_and_are_in_the_context(dockerfile: Path) -> None:
    ignore = read_dockerignore()
    for stage in stages_of(dockerfile):
        for ins in stage.all("COPY") + stage.all("ADD"):
            flags, words = ins.flags_and_words()
            if "from" in flags:
                continue
            for source in words[:-1]:
                matches = sorted(REPO.glob(source.rstrip("/")))
                assert matches, f"{dockerfile.name}:{ins.line}: {source} is not in the repo"
                for match in matches:
                    rel = match.relative_to(REPO).as_posix()
                    assert not dockerignore_excludes(ignore, rel), f"{rel} is .dockerignored"
                    files = [match] if match.is_file() else list(match.rglob("*.py"))
                    kept = [
                        f
                        for f in files
                        if not dockerignore_excludes(ignore, f.relative_to(REPO).as_posix())
                    ]
                    assert kept, f"{dockerfile.name}:{ins.line}: nothing of {rel} is sent"


def test_dockerignore_keeps_local_state_out() -> None:
    ignore = read_dockerignore()
    for path in [
        ".venv/bin/python",
        ".tools/bin/helm",
        "workload/build/server",
        ".git/HEAD",
        "rtbench-demo/report.html",
        "bench/results/x.json",
        "agent/__pycache__/a.pyc",
    ]:
        assert dockerignore_excludes(ignore, path), path


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned_to_a_tag(dockerfile: Path) -> None:
    stages = stages_of(dockerfile)
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base == "scratch" or stage.base in names:
            continue
        assert "$" not in stage.base, f"{stage.base}: resolve the base image without ARGs"
        image, _, tag = stage.base.partition("@")[0].rpartition(":")
        assert image and tag and "/" not in tag, f"{stage.base} has no tag"
        assert tag != "latest", f"{stage.base}: pin a version, not latest"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_image_runs_as_a_non_root_user(dockerfile: Path) -> None:
    for stage in target_stages(stages_of(dockerfile)):
        users = stage.all("USER")
        assert users, f"{dockerfile.name}: stage {stage.name or stage.index} has no USER"
        user = users[-1].args.partition(":")[0]
        assert user not in {"0", "root"}, f"{dockerfile.name}: runs as {user}"


@pytest.mark.parametrize("name", ["agent", "collector"])
def test_python_images_start_a_console_script(name: str) -> None:
    stages = stages_of(IMAGES / f"{name}.Dockerfile")
    (final,) = target_stages(stages)
    entry = final.all("ENTRYPOINT")[-1].exec_form()
    assert entry[0] in console_scripts(), f"{entry[0]} is not in [project.scripts]"
    component_help(*entry)  # the subcommand exists and starts
    # The build stage runs the same --help check, so a broken install fails the build.
    runs = " ".join(i.args for i in stages[0].all("RUN"))
    assert f"/opt/rtbench/bin/{' '.join(entry)} --help" in runs


@pytest.mark.parametrize("name", ["agent", "collector"])
def test_environment_names_are_ones_the_component_reads(name: str) -> None:
    (final,) = target_stages(stages_of(IMAGES / f"{name}.Dockerfile"))
    entry = final.all("ENTRYPOINT")[-1].exec_form()
    flags = set(re.findall(r"^\s+(--[a-z][a-z0-9-]*)", component_help(*entry), re.M))
    prefix = f"RTBENCH_{name.upper()}_"
    envs = re.findall(rf"\b{prefix}([A-Z0-9_]+)=", " ".join(i.args for i in final.all("ENV")))
    for env in envs:
        assert "--" + env.lower().replace("_", "-") in flags, f"{prefix}{env} is read by nobody"
    if name == "collector":
        assert envs, "the collector image sets its container defaults in the environment"


def test_agent_state_dir_is_the_agents_default_and_owned_by_its_user() -> None:
    (final,) = target_stages(stages_of(IMAGES / "agent.Dockerfile"))
    text = component_help("agent", "run")
    default = re.search(r"--state-dir STATE_DIR\s+[^(]*\(default:\s*(\S+?)\)", text)
    assert default is not None
    user = final.all("USER")[-1].args.partition(":")[0]
    runs = " ".join(i.args for i in final.all("RUN"))
    assert f"install -d -o {user} -g {user} -m 0750 {default.group(1)}" in runs


def test_collector_listens_on_the_port_it_exposes() -> None:
    (final,) = target_stages(stages_of(IMAGES / "collector.Dockerfile"))
    env = " ".join(i.args for i in final.all("ENV"))
    listen = re.search(r"RTBENCH_COLLECTOR_LISTEN=\S+:(\d+)", env)
    assert listen is not None
    assert [i.args for i in final.all("EXPOSE")] == [listen.group(1)]


def test_workload_variants_listen_on_the_port_rtctl_probes() -> None:
    stages = stages_of(IMAGES / "workload.Dockerfile")
    targets = {s.name: s for s in target_stages(stages)}
    assert set(targets) == {"scratch", "distro"}
    assert stages[-1].name == "scratch", "a plain build gives the scratch image"
    for stage in targets.values():
        assert [i.args for i in stage.all("EXPOSE")] == [str(WORKLOAD_PORT)]
        (copy,) = stage.all("COPY")
        flags, (source, dest) = copy.flags_and_words()
        assert flags["from"] == "build"
        assert stage.all("ENTRYPOINT")[-1].exec_form()[0] == dest
        assert source.endswith("/workload/build/server-static"), "the Makefile's static binary"


def _host_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}[platform.machine()]


def _is_static_elf(path: Path) -> bool:
    """No PT_INTERP program header: the kernel runs it without a dynamic loader."""
    data = path.read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2, "a 64-bit ELF"
    order: Literal["little", "big"] = "little" if data[5] == 1 else "big"
    phoff = int.from_bytes(data[0x20:0x28], order)
    size, count = int.from_bytes(data[0x36:0x38], order), int.from_bytes(data[0x38:0x3A], order)
    types = [
        int.from_bytes(data[phoff + i * size : phoff + i * size + 4], order) for i in range(count)
    ]
    return 3 not in types  # PT_INTERP


def _build_workload_like_the_dockerfile(root: Path) -> Path:
    """Replays the build stage: its COPYs from the context into ``root`` (standing in
    for WORKDIR), then the RUN that compiles, verbatim, for this machine's arch."""
    build = next(s for s in stages_of(IMAGES / "workload.Dockerfile") if s.name == "build")
    (workdir,) = [i.args for i in build.all("WORKDIR")]
    for copy in build.all("COPY"):
        _, words = copy.flags_and_words()
        dest = root / words[-1]
        dest.mkdir(parents=True, exist_ok=True)
        for source in words[:-1]:
            shutil.copy(REPO / source, dest)
    (compile_step,) = [i.args for i in build.all("RUN") if "make -C" in i.args]
    env = {**os.environ, "TARGETARCH": _host_arch(), "BUILDARCH": _host_arch()}
    done = subprocess.run(
        ["sh", "-c", compile_step], cwd=root, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr
    scratch = next(s for s in stages_of(IMAGES / "workload.Dockerfile") if s.name == "scratch")
    source = scratch.all("COPY")[0].flags_and_words()[1][0]
    return root / Path(source).relative_to(workdir)


def test_workload_builds_static_and_serves_http(tmp_path: Path) -> None:
    binary = _build_workload_like_the_dockerfile(tmp_path)
    assert binary.exists(), "the COPY --from=build source is what the compile step makes"
    assert _is_static_elf(binary), "a FROM scratch image needs a static binary"
    port = free_port()
    # As the Deployment starts it (rtctl/workload.py): the port in PORT, no flags.
    env = {"PATH": "/usr/bin:/bin", "PORT": str(port), "LISTEN_ADDR": "127.0.0.1"}
    server = subprocess.Popen([str(binary)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 60)
        assert ready, "no listening line within 60 s"
        line = server.stdout.readline()
        assert line.startswith("rtbench-workload listening") and f"port={port}" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as response:
            assert response.status == 200
            assert response.read().strip() == b"ok"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, "exits 0 on SIGTERM, as a pod must"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()


def test_build_script_builds_every_dockerfile_and_target() -> None:
    script = IMAGES / "build.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "REGISTRY TAG" in done.stdout
    text = script.read_text()
    assert "set -euo pipefail" in text and "linux/amd64,linux/arm64" in text
    for dockerfile in DOCKERFILES:
        assert dockerfile.name in text, f"build.sh does not build {dockerfile.name}"
    workload_targets = {s.name for s in target_stages(stages_of(IMAGES / "workload.Dockerfile"))}
    assert set(re.findall(r"--target (\w+)", text)) == workload_targets
    bad = subprocess.run([str(script), "registry"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "REGISTRY and TAG" in bad.stderr
