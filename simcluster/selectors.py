"""Label and field selectors with the grammar and errors of the real API server.

rtbench's agent watches ``fieldSelector=spec.nodeName=<node>`` and kubectl
watches ``fieldSelector=metadata.name=<pod>`` and ``labelSelector=app=x``; both
must filter exactly as a real cluster does, including the 400s for bad input,
because a later component is tested against this server alone.

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``,
``k``, ``!k``, ``k>1``, ``k<1``; comma means AND. Field selectors: ``f=v``,
``f==v``, ``f!=v``; comma means AND; ``\\,``, ``\\=`` and ``\\\\`` escape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .errors import BadRequest
from .objects import Obj
from .resources import ResourceType

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str
    """One of =, !=, in, notin, exists, !, gt, lt."""
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        # gt / lt compare integers; a label that is no integer never matches.
        try:
            number = int(value) if value is not None else None
        except ValueError:
            return False
        if number is None:
            return False
        bound = int(self.values[0])
        return number > bound if self.op == "gt" else number < bound


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|>|<|[^\s!=(),<>]+)")


def _lex(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:  # pragma: no cover - the pattern accepts every character
            raise BadRequest(f"unable to parse requirement: unexpected text at {pos}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


def _check_key(key: str) -> None:
    if key in ("in", "notin") or key in "!=(),<>":
        raise BadRequest(f"unable to parse requirement: found '{key}', expected: identifier")
    prefix, _, name = key.rpartition("/")
    problems = []
    if prefix and (len(prefix) > 253 or not _PREFIX.match(prefix)):
        problems.append("prefix part must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not _NAME_PART.match(name):
        problems.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )
    if problems:
        raise BadRequest(f'unable to parse requirement: invalid label key "{key}": {problems[0]}')


def _check_value(value: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise BadRequest(
            f'unable to parse requirement: invalid label value: "{value}": a valid label must be '
            "an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character"
        )


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ``text``; raises BadRequest (400) when it is not a valid selector."""
    if text is None or not text.strip():
        return LabelSelector()
    tokens = _lex(text)
    reqs: list[Requirement] = []
    i = 0

    def peek() -> str | None:
        return tokens[i] if i < len(tokens) else None

    while True:
        tok = peek()
        if tok is None:
            raise BadRequest("unable to parse requirement: found '', expected: identifier")
        if tok == "!":
            i += 1
            key = peek()
            if key is None:
                raise BadRequest("unable to parse requirement: found '', expected: identifier")
            _check_key(key)
            i += 1
            reqs.append(Requirement(key, "!"))
        else:
            _check_key(tok)
            key = tok
            i += 1
            op = peek()
            if op is None or op == ",":
                reqs.append(Requirement(key, "exists"))
            elif op in ("=", "==", "!="):
                i += 1
                value = peek()
                if value is None or value == ",":
                    value = ""
                else:
                    if value in "!=(),<>":
                        raise BadRequest(
                            f"unable to parse requirement: found '{value}', expected: identifier"
                        )
                    i += 1
                _check_value(value)
                reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
            elif op in ("in", "notin"):
                i += 1
                if peek() != "(":
                    raise BadRequest(
                        f"unable to parse requirement: found '{peek() or ''}', expected: '('"
                    )
                i += 1
                values: list[str] = []
                while True:
                    tok2 = peek()
                    if tok2 is None:
                        raise BadRequest("unable to parse requirement: found '', expected: ')'")
                    if tok2 == ")":
                        i += 1
                        break
                    if tok2 == ",":
                        i += 1
                        continue
                    if tok2 in "!=(<>":
                        raise BadRequest(
                            f"unable to parse requirement: found '{tok2}', expected: identifier"
                        )
                    _check_value(tok2)
                    values.append(tok2)
                    i += 1
                if not values and op == "in":
                    raise BadRequest(
                        "unable to parse requirement: for 'in', 'notin' operators, values set "
                        "can't be empty"
                    )
                reqs.append(Requirement(key, op, tuple(values)))
            elif op in (">", "<"):
                i += 1
                value = peek()
                if value is None or not re.fullmatch(r"-?[0-9]+", value):
                    raise BadRequest(
                        f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must "
                        f"be an integer: {value or ''}"
                    )
                i += 1
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
            else:
                raise BadRequest(
                    f"unable to parse requirement: found '{op}', expected: "
                    "'=', '!=', '==', 'in', notin'"
                )
        tok = peek()
        if tok is None:
            break
        if tok != ",":
            raise BadRequest(f"unable to parse requirement: found '{tok}', expected: ','")
        i += 1
    return LabelSelector(tuple(reqs))


def selector_from_match_labels(selector: Obj) -> LabelSelector:
    """A LabelSelector from an API ``LabelSelector`` object (matchLabels/matchExpressions)."""
    reqs: list[Requirement] = []
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        reqs.append(Requirement(str(key), "=", (str(value),)))
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or []:
        op = ops.get(str(expr.get("operator")))
        if op is None:
            raise ValueError(f"not a valid selector operator: {expr.get('operator')!r}")
        reqs.append(Requirement(str(expr.get("key")), op, tuple(expr.get("values") or ())))
    return LabelSelector(tuple(reqs))


def format_label_selector(selector: Obj) -> str:
    """The string form of an API LabelSelector, as in a Scale's status.selector."""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key = expr.get("operator"), expr.get("key")
        values = ",".join(sorted(expr.get("values") or []))
        if op == "In":
            parts.append(f"{key} in ({values})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({values})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


@dataclass(frozen=True)
class FieldTerm:
    field: str
    negate: bool
    value: str


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[FieldTerm, ...] = ()

    def matches(self, fields: Callable[[str], str]) -> bool:
        return all((fields(t.field) == t.value) != t.negate for t in self.terms)

    def required(self, field: str) -> str | None:
        """The value ``field`` must equal for a match, if the selector pins it."""
        for term in self.terms:
            if term.field == field and not term.negate:
                return term.value
        return None


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out, escaped = [], False
    for ch in value:
        if escaped:
            if ch not in ",=\\":
                raise BadRequest(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(ch)
    if escaped:
        raise BadRequest("invalid field selector: unterminated escape sequence")
    return "".join(out)


def parse_field_selector(text: str | None, rtype: ResourceType) -> FieldSelector:
    """Parse ``text`` for ``rtype``; raises BadRequest for syntax or unsupported fields."""
    if text is None or not text.strip():
        return FieldSelector()
    terms: list[FieldTerm] = []
    for part in _split_unescaped(text, ","):
        if not part.strip():
            continue
        match = re.match(r"^(.*?)(!=|==|=)(.*)$", part)
        if match is None:
            raise BadRequest(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, raw = match.group(1).strip(), match.group(2), match.group(3)
        if not rtype.supports_field(field):
            raise BadRequest(f"field label not supported: {field}")
        terms.append(FieldTerm(field, op == "!=", _unescape(raw)))
    return FieldSelector(tuple(terms))


def field_value(obj: Obj, field: str) -> str:
    """The value of a selectable field of ``obj`` as the API server compares it."""
    metadata = obj.get("metadata") or {}
    if field == "metadata.name":
        return str(metadata.get("name", ""))
    if field == "metadata.namespace":
        return str(metadata.get("namespace", ""))
    section, _, key = field.partition(".")
    part = obj.get(section) or {}
    value = part.get(key) if isinstance(part, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
