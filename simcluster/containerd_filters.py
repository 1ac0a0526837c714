"""containerd's filter expressions, parsed and matched the way containerd does.

An agent written against real containerd sends filter strings to
``Events/Subscribe`` and ``Containers/List`` (``namespace==k8s.io,topic~="^/tasks/"``,
``labels."io.cri-containerd.kind"==sandbox``). The simulated node has to give
them containerd's meaning, and refuse what containerd refuses, or the agent
would pass against the simulator and fail on a real node. The grammar is
containerd's (its ``filters`` package)::

    filters   := one string per filter; an object matches if ANY filter matches
    selectors := selector ("," selector)*           all selectors must match
    selector  := fieldpath [operator value]         no operator: the field is present
    fieldpath := field ("." field)*
    field     := quoted | [A-Za-z0-9_-]+
    operator  := "==" | "!=" | "~="                 ~= is an unanchored regex search
    value     := quoted | any run of characters but "," and white space
    quoted    := "..." with Go escapes; after ~= also /.../ or |...|

Quirks kept on purpose: a value that starts with ``/`` or ``|`` is read as a
quoted one, so ``topic==/tasks/start`` is a syntax error and must be written
``topic=="/tasks/start"``; a regular expression that does not compile never
matches (containerd logs it and moves on) instead of failing the call. Syntax
errors raise ``BadRequest``, which the gRPC layer turns into INVALID_ARGUMENT.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import BadRequest

Adaptor = Callable[[Sequence[str]], tuple[str, bool]]
"""Looks up a field path on one object: (value, present)."""

_QUOTES = '/|"'
_OPERATORS = ("==", "!=", "~=")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}


@dataclass(frozen=True)
class Selector:
    fieldpath: tuple[str, ...]
    operator: str | None
    """``==``, ``!=``, ``~=``, or None for a presence test."""
    value: str = ""
    pattern: re.Pattern[str] | None = field(default=None, compare=False)
    """The compiled ``~=`` value; None when it does not compile (never matches)."""

    def match(self, adaptor: Adaptor) -> bool:
        value, present = adaptor(self.fieldpath)
        if self.operator is None:
            return present
        if self.operator == "==":
            return present and value == self.value
        if self.operator == "!=":
            return value != self.value
        return self.pattern is not None and self.pattern.search(value) is not None


@dataclass(frozen=True)
class Filter:
    """Any of ``alternatives`` matches; each is a conjunction of selectors."""

    alternatives: tuple[tuple[Selector, ...], ...]

    def match(self, adaptor: Adaptor) -> bool:
        if not self.alternatives:
            return True
        return any(all(s.match(adaptor) for s in sels) for sels in self.alternatives)


MATCH_ALL = Filter(())


def parse_all(texts: Sequence[str]) -> Filter:
    """The filter for a request's list of strings (none, or an empty one: match all)."""
    alternatives = []
    everything = False
    for text in texts:
        if text == "":
            everything = True  # containerd: an empty filter string matches everything
        else:
            alternatives.append(_Parser(text).selectors())
    return MATCH_ALL if everything else Filter(tuple(alternatives))


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str) -> BadRequest:
        return BadRequest(f"filters: parse error: [{self.text}] at {self.pos}: {message}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def selectors(self) -> tuple[Selector, ...]:
        found = [self.selector()]
        while True:
            ch = self.peek()
            if ch == "":
                return tuple(found)
            if ch != ",":
                raise self.fail(f"unexpected input: {ch}")
            self.pos += 1
            found.append(self.selector())

    def selector(self) -> Selector:
        path = [self.field()]
        while self.peek() == ".":
            self.pos += 1
            path.append(self.field())
        if self.peek() in ("", ","):
            return Selector(tuple(path), None)
        operator = self.operator()
        value = self.value(alternative_quotes=operator == "~=")
        pattern = None
        if operator == "~=":
            try:
                pattern = re.compile(value)
            except re.error:
                pattern = None
        return Selector(tuple(path), operator, value, pattern)

    def field(self) -> str:
        ch = self.peek()
        if ch in _QUOTES and ch:
            return self.quoted(alternative_quotes=False)
        start = self.pos
        while self.pos < len(self.text) and _is_field_char(self.text[self.pos]):
            self.pos += 1
        if self.pos == start:
            raise self.fail("expected field or quoted")
        return self.text[start : self.pos]

    def operator(self) -> str:
        self.skip_space()
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in "=!~":
            self.pos += 1
        op = self.text[start : self.pos]
        if not op:
            raise self.fail('expected an operator ("=="|"!="|"~=")')
        if op not in _OPERATORS:
            raise self.fail(f"unsupported operator {op!r}")
        return op

    def value(self, *, alternative_quotes: bool) -> str:
        ch = self.peek()
        if ch == "":
            raise self.fail("unexpected end of input, expected a value")
        if ch in _QUOTES:
            return self.quoted(alternative_quotes=alternative_quotes)
        if ch in ",.":
            raise self.fail("expected value or quoted")
        start = self.pos
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "," or ch.isspace():
                break
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self, *, alternative_quotes: bool) -> str:
        quote = self.text[self.pos]
        if quote != '"' and not alternative_quotes:
            raise self.fail("invalid quote encountered")
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(self.text) or self.text[self.pos] == "\n":
                raise self.fail("quoted literal not terminated")
            ch = self.text[self.pos]
            self.pos += 1
            if ch == quote:
                return "".join(out)
            if ch != "\\":
                out.append(ch)
                continue
            out.append(self.escape(quote))

    def escape(self, quote: str) -> str:
        if self.pos >= len(self.text):
            raise self.fail("quoted literal not terminated")
        ch = self.text[self.pos]
        self.pos += 1
        if ch in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[ch]
        if ch == quote:
            return ch
        digits = {"x": (2, 16), "u": (4, 16), "U": (8, 16)}.get(ch)
        if digits is None and ch in "01234567":
            digits, self.pos = (3, 8), self.pos - 1
        if digits is None:
            raise self.fail("illegal escape sequence")
        count, base = digits
        chunk = self.text[self.pos : self.pos + count]
        try:
            if len(chunk) != count:
                raise ValueError(chunk)
            code = int(chunk, base)
            if base == 8 and code > 255:
                raise ValueError(chunk)
            self.pos += count
            return chr(code)
        except ValueError:
            raise self.fail("illegal numeric escape sequence") from None


def _is_field_char(ch: str) -> bool:
    return ch in "-_" or ("a" <= ch <= "z") or ("A" <= ch <= "Z") or ("0" <= ch <= "9")


def map_field(fieldpath: Sequence[str], values: dict[str, str]) -> tuple[str, bool]:
    """A label lookup: ``labels.io.kubernetes.pod.uid`` joins the rest of the path with dots."""
    if not fieldpath:
        return "", False
    key = ".".join(fieldpath)
    if key in values:
        return values[key], True
    return "", False
