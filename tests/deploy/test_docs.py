"""The deployment guides and the README, held to the code they describe.

Commands in docs rot quietly: a flag is renamed, a file moves, and the guide
still reads well. These tests take every shell command in the code blocks and
inline code of README.md and deploy/*.md that runs ``agent run``,
``collector serve``, ``rtctl <command>`` or ``rtbench-sim``, and check each
``--flag`` on it against that command's real ``--help`` (the installed console
scripts are run); every ``RTBENCH_*`` environment variable named must be one a
component reads; every repository path named must exist; and a values file a
guide writes for ``helm install charts/<chart>`` may only set keys that the
chart's values.yaml has.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "deploy").glob("*.md"))]
VENV_BIN = REPO / ".venv" / "bin"

# Repository paths a doc may name; anything under these top-level directories.
PATH_ROOTS = (
    "agent", "bench", "charts", "collector", "deploy", "examples", "proto", "rtbench",
    "rtctl", "scripts", "simcluster", "tests", "workload",
)  # fmt: skip
_PATH = re.compile(rf"(?<![\w/.$~-])(?:{'|'.join(PATH_ROOTS)})/[\w./-]*")
_COMMAND = re.compile(
    r"(?<![\w-])(agent run|collector serve|rtctl [a-z][a-z-]*|rtbench-sim)(?![\w-])(.*)"
)
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_ENV = re.compile(r"\bRTBENCH_(AGENT|COLLECTOR|SIM|RTCTL_DEMO|RTCTL)_([A-Z0-9_]+)\b")
_SHELL_SEPARATORS = re.compile(r"\|\|?|&&|;|(?<![<>0-9])&(?!>)|\$\(|\)")


@dataclass(frozen=True)
class Snippet:
    doc: str
    text: str
    code_block: bool


def snippets(doc: Path) -> list[Snippet]:
    """The fenced code blocks of a markdown file, and its inline code spans (which
    may wrap across lines in prose)."""
    text = doc.read_text()
    found: list[Snippet] = []
    prose: list[str] = []
    block: list[str] | None = None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if block is None:
                block = []
            else:
                found.append(Snippet(doc.name, "\n".join(block), True))
                block = None
            continue
        (block if block is not None else prose).append(line)
    assert block is None, f"{doc.name}: a code block is not closed"
    for span in re.findall(r"`([^`]+)`", " ".join(prose)):
        found.append(Snippet(doc.name, span, False))
    return found


def logical_lines(snippet: Snippet) -> list[str]:
    """Lines with backslash continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", snippet.text)
    return [re.sub(r"(^|\s)#\s.*$", "", line) for line in joined.splitlines()]


def invocations(line: str) -> list[tuple[str, list[str]]]:
    """(command, flags) for each rtbench command in one shell line."""
    found = []
    for segment in _SHELL_SEPARATORS.split(line):
        match = _COMMAND.search(segment)
        if match:
            found.append((match.group(1), _FLAG.findall(match.group(2))))
    return found


@functools.cache
def help_flags(command: str) -> frozenset[str]:
    """The flags a command's --help lists; an unknown rtctl command fails here."""
    program, *rest = command.split()
    done = subprocess.run(
        [str(VENV_BIN / program), *rest, "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"`{command} --help` failed: {done.stderr.strip()}"
    return frozenset(_FLAG.findall(done.stdout))


def rtctl_commands() -> list[str]:
    text = subprocess.run(
        [str(VENV_BIN / "rtctl"), "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    listed = re.findall(r"^ {4}([a-z][a-z-]*)(?:\s|$)", text, re.M)
    assert "start-run" in listed, f"rtctl --help lists its commands: {listed}"
    return listed


def test_invocations_are_found_in_shell_lines() -> None:
    line = (
        "RTBENCH_X=1 .venv/bin/rtctl start-run --replicas 3 --format json > run.json "
        "&& rtbench-sim --nodes 2 & agent run --node n | tee log; echo --not-this"
    )
    assert invocations(line) == [
        ("rtctl start-run", ["--replicas", "--format"]),
        ("rtbench-sim", ["--nodes"]),
        ("agent run", ["--node"]),
    ]
    block = Snippet("x.md", "collector serve --listen a \\\n    --journal j  # --comment", True)
    assert [invocations(ln) for ln in logical_lines(block)] == [
        [("collector serve", ["--listen", "--journal"])]
    ]
    assert _PATH.findall("see deploy/k3s/x.yaml, /var/lib/agent/etc and `charts/a`.") == [
        "deploy/k3s/x.yaml",
        "charts/a",
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_flag_shown_exists(doc: Path) -> None:
    wrong = []
    for snippet in snippets(doc):
        for line in logical_lines(snippet):
            for command, flags in invocations(line):
                known = help_flags(command)
                wrong += [f"{command} {flag}" for flag in flags if flag not in known]
    assert not wrong, f"{doc.name}: flags that do not exist: {sorted(set(wrong))}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_environment_variable_named_is_read(doc: Path) -> None:
    commands = {
        "AGENT": ["agent run"],
        "COLLECTOR": ["collector serve"],
        "SIM": ["rtbench-sim"],
        "RTCTL_DEMO": ["rtctl demo"],
        "RTCTL": [f"rtctl {name}" for name in rtctl_commands()],
    }
    wrong = []
    for component, name in set(_ENV.findall(doc.read_text())):
        flag = "--" + name.lower().replace("_", "-")
        if not any(flag in help_flags(command) for command in commands[component]):
            wrong.append(f"RTBENCH_{component}_{name}")
    assert not wrong, f"{doc.name}: no component reads {sorted(wrong)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_repository_path_named_exists(doc: Path) -> None:
    text = doc.read_text()
    # Files the guide has the reader create (cp EXAMPLE FILE, cat > FILE) are not in the repo.
    created = set(re.findall(r"(?:\bcp \S+ |\bcat > )(\S+)", text))
    missing = set()
    for raw in _PATH.findall(text):
        path = raw.rstrip(".,:;")
        if path not in created and not (REPO / path).exists():
            missing.add(path)
    assert not missing, f"{doc.name}: paths that do not exist: {sorted(missing)}"


def _key_paths(values: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        return [p for k, v in values.items() for p in _key_paths(v, (*prefix, str(k)))]
    return [prefix]


def _chart_accepts(chart_values: Any, path: tuple[str, ...]) -> bool:
    """A key path is the chart's when values.yaml has it, or reaches a free-form map
    (an empty dict or a non-dict default such as ``resources: {}``) on the way."""
    node = chart_values
    for key in path:
        if not isinstance(node, dict):
            return False
        if not node:
            return True
        if key not in node:
            return False
        node = node[key]
    return True


def helm_values_files(snippet: Snippet) -> list[tuple[str, Any]]:
    """(chart, values) for each ``cat > FILE <<'EOF' ... EOF`` in a code block that a
    ``helm install|upgrade ... charts/<chart> ... -f FILE`` of the same block uses."""
    written = {
        name: yaml.safe_load(body)
        for name, _, body in re.findall(
            r"cat > (\S+) <<'?(\w+)'?\n(.*?)\n\2$", snippet.text, re.S | re.M
        )
    }
    used = []
    for line in logical_lines(snippet):
        helm = re.search(r"\bhelm (?:install|upgrade)\b.*?\b(charts/[\w-]+)(.*)", line)
        if helm:
            for name in re.findall(r"(?:-f|--values)[ =](\S+)", helm.group(2)):
                if name in written:
                    used.append((helm.group(1), written[name]))
    return used


def test_values_files_in_guides_use_the_charts_keys() -> None:
    checked = 0
    for doc in DOCS:
        for snippet in (s for s in snippets(doc) if s.code_block):
            for chart, values in helm_values_files(snippet):
                chart_values = yaml.safe_load((REPO / chart / "values.yaml").read_text())
                unknown = [
                    ".".join(path)
                    for path in _key_paths(values)
                    if not _chart_accepts(chart_values, path)
                ]
                assert not unknown, f"{doc.name}: {chart} has no values {unknown}"
                checked += 1
    assert checked, "the Raspberry Pi guide installs the agent chart with a values file"
