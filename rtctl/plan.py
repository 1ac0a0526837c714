"""The plan file of ``rtctl run-plan``: its YAML format and its validation.

A plan is the researcher's whole experiment in one reviewable file: runtime
classes x variants (each variant with its own image and memory limit) x replica
counts x repetitions, plus what every run shares (test id, namespace, timeout,
settle time, extra labels) and the baseline of the final comparison.
``examples/plan.yaml`` documents every key.

Validation reads the YAML as a node tree (PyYAML's ``compose``), not as plain
data, so every problem can name the file, the line and the field::

    plan.yaml:12: runtimes.kata-qemu.variants.default.memory: '16MB' is not a
    Kubernetes quantity (e.g. 16Mi); write 16Mi (mebibytes) or 16M (megabytes)

and it goes on after the first problem: a plan is refused with all of its
problems at once (``PlanInvalid``, a ``UsageError`` of rtctl.errors: exit 2). Unknown keys are
problems too, with a did-you-mean, because a misspelt ``repetition:`` that is
silently ignored costs a night of runs. Names that end up in Kubernetes labels
(runtime class, variant, test id, extra labels) are checked against the label
rules here, before anything is created.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from .errors import UsageError
from .workload import (
    DEFAULT_IMAGE,
    DEFAULT_MEMORY,
    RESERVED_LABELS,
    label_key_problem,
    label_value_problem,
    memory_problem,
    name_problem,
)

__all__ = [
    "Plan",
    "PlanInvalid",
    "Problem",
    "Variant",
    "load_plan",
    "parse_plan",
]

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DURATION = re.compile(r"^(?P<num>[0-9]+(\.[0-9]*)?)\s*(?P<unit>ms|s|m|h)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_UNIT_WORDS = {
    "KB": ("kibibytes", "kilobytes"),
    "MB": ("mebibytes", "megabytes"),
    "GB": ("gibibytes", "gigabytes"),
    "TB": ("tebibytes", "terabytes"),
}

_TOP_KEYS = (
    "plan",
    "test_id",
    "seed",
    "namespace",
    "image",
    "memory",
    "replicas",
    "repetitions",
    "timeout",
    "settle",
    "baseline",
    "labels",
    "runtimes",
)
_DEFAULTED = {
    "namespace": "namespace",
    "repetitions": "repetitions",
    "timeout": "timeout_s",
    "settle": "settle_s",
    "labels": "labels",
}
"""File keys that fill a Plan field of another name; left out, the field's default holds."""
_RUNTIME_KEYS = ("image", "memory", "variants")
_VARIANT_KEYS = ("image", "memory")


class PlanInvalid(UsageError):
    """The plan file cannot be run; ``problems`` lists every reason, each with its line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        source = problems[0].file if problems else "plan"
        count = f"{len(problems)} problems" if len(problems) != 1 else "a problem"
        lines = [f"{source} has {count}, nothing was run:", *map(str, problems)]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a plan, where it is, and what is wrong with it."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


@dataclass(frozen=True)
class Variant:
    """One cell column of the matrix: what a runtime class runs, and with how much memory."""

    runtime_class: str
    name: str
    image: str
    memory: str

    @property
    def label(self) -> str:
        """``runc`` for a runtime's only, same-named variant, else ``urunc/linux-qemu``."""
        if self.name == self.runtime_class:
            return self.runtime_class
        return f"{self.runtime_class}/{self.name}"


@dataclass(frozen=True)
class Plan:
    """A validated plan: everything ``rtctl run-plan`` needs. The defaults below apply
    to keys the file leaves out."""

    plan_id: str
    """Marks every run of the plan in the collector; a rerun finds its finished runs by
    it. Default: the file's stem, so one file is one plan without naming it twice."""
    source: str
    """The file the plan came from, as the user named it (for messages)."""
    variants: tuple[Variant, ...]
    """Runtime classes x variants, in the file's order (the first is the default baseline)."""
    replicas: tuple[int, ...]
    """Required: how many pods a run starts is the question being asked, not a default."""
    seed: int = 0
    """Seeds the run order. Default: derived from the plan id (crc32), so a rerun of the
    same plan walks the same order without the user writing a seed down."""
    seed_from_file: bool = False
    test_id: str = ""
    """The pods' test_id label. Default: the plan id (dashboards group a plan's runs)."""
    namespace: str = "default"
    """Where the workload goes: the namespace every cluster has."""
    repetitions: int = 3
    """Three is the fewest that give a median and a spread per configuration."""
    timeout_s: float = 300.0
    """Per run, as start-run: minutes are enough for 100 microVMs on a Raspberry Pi."""
    settle_s: float = 5.0
    """After every pod is gone, as start-run: lets the node's memory and caches calm down."""
    baseline: str = ""
    """``runc`` or ``urunc/linux-qemu`` (a Variant.label of the matrix). Default: the first
    runtime of the file."""
    labels: Mapping[str, str] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    """Extra pod labels (board, firmware, kernel...), none by default."""

    @property
    def size(self) -> int:
        return len(self.variants) * len(self.replicas) * self.repetitions


def load_plan(path: Path) -> Plan:
    """Reads and validates ``path``; raises PlanInvalid with every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the plan: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: the plan is not UTF-8 text ({exc.reason})") from exc
    return parse_plan(text, str(path))


def parse_plan(text: str, source: str) -> Plan:
    """Validates plan ``text``; ``source`` names it in problems and gives the default id."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise PlanInvalid([Problem(source, line, "", f"not valid YAML: {problem}")]) from None
    except ReaderError as exc:
        # Its text spans lines and names PyYAML's internal "<unicode string>".
        line = text.count("\n", 0, exc.position) + 1
        problem = f"character {chr(exc.character)!r} is not allowed in YAML"
        raise PlanInvalid([Problem(source, line, "", f"not valid YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise PlanInvalid([Problem(source, 1, "", f"not valid YAML: {problem}")]) from None
    except RecursionError:
        # PyYAML composes recursively: thousands of nested brackets exhaust the stack.
        raise PlanInvalid([Problem(source, 1, "", "nested too deeply to be a plan")]) from None
    try:
        return _Checker(source).plan(root)
    except RecursionError:
        raise PlanInvalid([Problem(source, 1, "", "nested too deeply to be a plan")]) from None


def default_plan_id(source: str) -> str:
    """The file's stem made into an id: ``My Plan.yaml`` becomes ``my-plan``."""
    stem = Path(source).stem.lower()
    return re.sub(r"[^a-z0-9]+", "-", stem).strip("-")[:40] or "plan"


class _Checker:
    """Walks the node tree once, collecting problems instead of stopping at the first."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self._constructor = SafeConstructor()

    def problem(self, node: Node, field: str, message: str) -> None:
        self.problems.append(Problem(self.source, node.start_mark.line + 1, field, message))

    # -- structure -------------------------------------------------------------

    def mapping(
        self, node: Node, field: str, allowed: tuple[str, ...] | None, what: str = "key"
    ) -> dict[str, tuple[Node, Node]]:
        """Keys of a mapping node (key node, value node); unknown or doubled keys are problems."""
        if not isinstance(node, MappingNode):
            self.problem(node, field, f"expected a mapping, got {_kind(node)}")
            return {}
        entries: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            name = _join(field, str(key_node.value))
            if key_node.tag == _MERGE:
                self.problem(key_node, field, "YAML merge keys (<<) are not supported in a plan")
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag not in (_STR, _INT):
                self.problem(key_node, field, f"keys must be names, got {_kind(key_node)}")
                continue
            key = str(key_node.value)
            if key in entries:
                first = entries[key][0].start_mark.line + 1
                self.problem(key_node, name, f"duplicate {what} (first on line {first})")
                continue
            if allowed is not None and key not in allowed:
                self.problem(key_node, name, f"unknown key{_did_you_mean(key, allowed)}")
                continue
            entries[key] = (key_node, value_node)
        return entries

    def names(self, node: Node, field: str, what: str) -> dict[str, tuple[Node, Node | None]]:
        """A mapping of names to options, or a list of bare names (no options)."""
        if isinstance(node, SequenceNode):
            entries: dict[str, tuple[Node, Node | None]] = {}
            for item in node.value:
                if not isinstance(item, ScalarNode) or item.tag not in (_STR, _INT):
                    self.problem(item, field, f"expected a {what} name, got {_kind(item)}")
                    continue
                key = str(item.value)
                if key in entries:
                    first = entries[key][0].start_mark.line + 1
                    self.problem(
                        item, _join(field, key), f"duplicate {what} (first on line {first})"
                    )
                    continue
                entries[key] = (item, None)
            return entries
        if isinstance(node, MappingNode):
            return dict(self.mapping(node, field, None, what))
        if not _is_null(node):
            self.problem(
                node, field, f"expected {what} names (a mapping or a list), got {_kind(node)}"
            )
        return {}

    def scalar(self, node: Node, field: str, tags: tuple[str, ...], what: str) -> Any:
        if isinstance(node, ScalarNode) and node.tag in tags:
            try:
                return self._constructor.construct_object(node, deep=True)
            except (ConstructorError, ValueError) as exc:
                self.problem(node, field, f"cannot be read: {exc}")
                return None
        self.problem(node, field, f"expected {what}, got {_shown(node)}")
        return None

    # -- values ----------------------------------------------------------------

    def text(self, node: Node, field: str, check: Callable[[str], str | None]) -> str | None:
        value = self.scalar(node, field, (_STR, _INT), "a string")
        if value is None:
            return None
        value = str(value)
        complaint = check(value)
        if complaint:
            self.problem(node, field, complaint)
            return None
        return value

    def integer(self, node: Node, field: str, minimum: int) -> int | None:
        value = self.scalar(node, field, (_INT,), "a whole number")
        if value is None:
            return None
        if value < minimum:
            self.problem(node, field, f"must be at least {minimum}, got {value}")
            return None
        return int(value)

    def seconds(self, node: Node, field: str, minimum: float) -> float | None:
        value = self.scalar(node, field, (_INT, _FLOAT, _STR), "seconds (e.g. 300 or 5m)")
        if value is None:
            return None
        if isinstance(value, str):
            match = _DURATION.match(value.strip())
            if match is None:
                self.problem(node, field, f"{value!r} is not a duration (e.g. 300, 90s, 5m)")
                return None
            value = float(match["num"]) * _DURATION_UNITS[match["unit"]]
        if value != value or value < minimum or value == float("inf"):
            self.problem(node, field, f"must be a finite number of seconds >= {minimum:g}")
            return None
        return float(value)

    def replica_counts(self, node: Node, field: str) -> tuple[int, ...]:
        items = node.value if isinstance(node, SequenceNode) else [node]
        counts: dict[int, Node] = {}
        for index, item in enumerate(items):
            where = f"{field}[{index}]" if isinstance(node, SequenceNode) else field
            count = self.integer(item, where, 1)
            if count is None:
                continue
            if count in counts:
                first = counts[count].start_mark.line + 1
                self.problem(item, where, f"{count} is listed twice (first on line {first})")
                continue
            counts[count] = item
        if isinstance(node, SequenceNode) and not node.value:
            self.problem(node, field, "empty: list at least one replica count, e.g. [10, 50]")
        return tuple(counts)

    def label_map(self, node: Node, field: str) -> dict[str, str]:
        labels: dict[str, str] = {}
        for key, (key_node, value_node) in self.mapping(node, field, None).items():
            name = _join(field, key)
            complaint = _label_key_problem(key)
            if complaint:
                self.problem(key_node, name, complaint)
                continue
            value = self.text(value_node, name, _label_value_problem)
            if value is not None:
                labels[key] = value
        return labels

    # -- the plan --------------------------------------------------------------

    def plan(self, root: Node | None) -> Plan:
        if root is None:
            self.problems.append(
                Problem(
                    self.source, 1, "", "empty plan: expected a mapping with runtimes and replicas"
                )
            )
            raise PlanInvalid(self.problems)
        top = self.mapping(root, "", _TOP_KEYS)
        got: dict[str, Any] = {}

        def read(key: str, reader: Callable[[Node, str], Any]) -> None:
            if key in top:
                got[key] = reader(top[key][1], key)

        read("plan", lambda n, f: self.text(n, f, _plan_id_problem))
        read("test_id", lambda n, f: self.text(n, f, _label_value_problem))
        read("seed", lambda n, f: self.integer(n, f, 0))
        read("namespace", lambda n, f: self.text(n, f, _dns_label_problem))
        read("image", lambda n, f: self.text(n, f, _image_problem))
        read("memory", lambda n, f: self.text(n, f, _memory_problem))
        read("replicas", self.replica_counts)
        read("repetitions", lambda n, f: self.integer(n, f, 1))
        read("timeout", lambda n, f: self.seconds(n, f, 1.0))
        read("settle", lambda n, f: self.seconds(n, f, 0.0))
        read("labels", self.label_map)
        for required in ("runtimes", "replicas"):
            if required not in top and isinstance(root, MappingNode):
                self.problem(root, required, "missing: the matrix needs runtimes and replicas")

        image = got.get("image") or DEFAULT_IMAGE
        memory = got.get("memory") or DEFAULT_MEMORY
        variants = self.variants(top["runtimes"][1], image, memory) if "runtimes" in top else []
        labels = {variant.label: variant for variant in variants}
        baseline = variants[0].label if variants else ""
        if "baseline" in top:
            node = top["baseline"][1]
            wanted = self.text(node, "baseline", lambda _: None)
            if wanted is not None and variants:
                if wanted not in labels:
                    hint = _did_you_mean(wanted, tuple(labels)) or (
                        f" (the plan runs {', '.join(labels)})"
                    )
                    self.problem(node, "baseline", f"{wanted!r} is not in the matrix{hint}")
                else:
                    baseline = wanted
        if self.problems:
            raise PlanInvalid(sorted(self.problems, key=lambda p: p.line))

        plan_id = got.get("plan") or default_plan_id(self.source)
        seed = got.get("seed")
        given = {key: got[key] for key in _DEFAULTED if got.get(key) is not None}
        return Plan(
            plan_id=plan_id,
            source=self.source,
            variants=tuple(variants),
            replicas=tuple(got["replicas"]),
            seed=seed if seed is not None else zlib.crc32(plan_id.encode()),
            seed_from_file=seed is not None,
            test_id=got.get("test_id") or plan_id,
            baseline=baseline,
            **{_DEFAULTED[key]: value for key, value in given.items()},
        )

    def variants(self, node: Node, image: str, memory: str) -> list[Variant]:
        runtimes = self.names(node, "runtimes", "runtime class")
        if _is_empty(node):
            self.problem(node, "runtimes", "empty: list at least one runtime class, e.g. [runc]")
        found: list[Variant] = []
        for runtime, (key_node, options_node) in runtimes.items():
            field = _join("runtimes", runtime)
            complaint = _runtime_class_problem(runtime)
            if complaint:
                self.problem(key_node, field, complaint)
                continue
            found.extend(self.runtime(runtime, options_node, field, image, memory))
        return found

    def runtime(
        self, runtime: str, node: Node | None, field: str, image: str, memory: str
    ) -> Iterator[Variant]:
        options = {} if node is None or _is_null(node) else self.mapping(node, field, _RUNTIME_KEYS)
        image, memory = self.image_memory(options, field, image, memory)
        if "variants" not in options:
            yield Variant(runtime, runtime, image, memory)
            return
        variants_node = options["variants"][1]
        field = _join(field, "variants")
        variants = self.names(variants_node, field, "variant")
        if _is_empty(variants_node):
            self.problem(variants_node, field, "empty: name at least one variant, or leave it out")
        for name, (key_node, variant_node) in variants.items():
            where = _join(field, name)
            complaint = label_value_problem(name)
            if complaint:
                self.problem(key_node, where, complaint)
                continue
            settings: dict[str, tuple[Node, Node]] = {}
            if variant_node is not None and not _is_null(variant_node):
                settings = self.mapping(variant_node, where, _VARIANT_KEYS)
            variant_image, variant_memory = self.image_memory(settings, where, image, memory)
            yield Variant(runtime, name, variant_image, variant_memory)

    def image_memory(
        self, options: dict[str, tuple[Node, Node]], field: str, image: str, memory: str
    ) -> tuple[str, str]:
        if "image" in options:
            image = self.text(options["image"][1], _join(field, "image"), _image_problem) or image
        if "memory" in options:
            memory = (
                self.text(options["memory"][1], _join(field, "memory"), _memory_problem) or memory
            )
        return image, memory


# -- checks of single values: a complaint to append after the quoted value, or None ----------


def _plan_id_problem(value: str) -> str | None:
    if len(value) > 40 or not _DNS_LABEL.match(value):
        return f"{value!r} is not a plan id (lowercase letters, digits and '-', at most 40)"
    return None


def _dns_label_problem(value: str) -> str | None:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        return f"{value!r} is not a namespace name (lowercase letters, digits and '-')"
    return None


def _runtime_class_problem(value: str) -> str | None:
    # Also the runtime_class label's value, hence both rules.
    return name_problem(value) or label_value_problem(value)


def _label_value_problem(value: str) -> str | None:
    return label_value_problem(value) if value else "must not be empty"


def _label_key_problem(key: str) -> str | None:
    if key in RESERVED_LABELS:
        return f"{key!r} is set by rtctl on every pod ({', '.join(RESERVED_LABELS)})"
    return label_key_problem(key)


def _image_problem(value: str) -> str | None:
    if not value or any(ch.isspace() for ch in value):
        return f"{value!r} is not an image reference"
    return None


def _memory_problem(value: str) -> str | None:
    """start-run's rule (rtctl.workload), with a pointed hint for the usual slips."""
    if memory_problem(value) is None:
        if value.isdigit() and int(value) < 2**20:
            return f"{value!r} is {value} bytes, less than a MiB: did you mean {value}Mi?"
        return None
    hint = ""
    slip = re.match(r"^([0-9.]+)\s*([A-Za-z]*)$", value)
    if slip and slip[2].upper() in _UNIT_WORDS:
        number, unit = slip[1], slip[2][0].upper()
        binary, decimal = _UNIT_WORDS[slip[2].upper()]
        hint = f"; write {number}{unit}i ({binary}) or {number}{unit.replace('K', 'k')}"
        hint += f" ({decimal})"
    elif slip and slip[2] in ("KiB", "MiB", "GiB", "TiB", "mi", "Mb"):
        hint = f"; write {slip[1]}{slip[2][0].upper()}i"
    elif slip and slip[2] == "m":
        hint = f"; 'm' is milli (thousandths of a byte): did you mean {slip[1]}Mi?"
    elif slip and re.fullmatch(r"0*\.?0*", slip[1]):
        hint = ": a limit must be above zero"
    return f"{value!r} is not a Kubernetes quantity (e.g. 16Mi){hint}"


# -- small helpers -----------------------------------------------------------------


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _is_empty(node: Node) -> bool:
    return _is_null(node) or (isinstance(node, MappingNode | SequenceNode) and not node.value)


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return _shown(node)


def _shown(node: Node) -> str:
    if isinstance(node, ScalarNode):
        return "nothing" if node.tag == _NULL else repr(node.value)
    return _kind(node)


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
