"""What Grafana does with the rtbench dashboards before InfluxDB sees a query, done here.

The dashboard test runs every panel query and every variable query against a real
InfluxDB. Grafana would first replace its macros (``$timeFilter``, ``$__interval``...)
and the dashboard's variables (``$run_id``, ``${run_id:regex}``, ``[[run_id]]``) in the
query text; ``substitute`` does the same for the subset of Grafana's syntax that
InfluxQL dashboards use, and refuses anything else (``UnknownMacro``), so a query
with a macro this module does not know fails the test instead of reaching InfluxDB
half-substituted. Multi-value variables are formatted as Grafana's InfluxDB
datasource formats them: regex-escaped, several values as ``(a|b)``.

Also here: reading the dashboards (panels nested in rows included) and one InfluxQL
request over HTTP ``/query`` the way Grafana's datasource sends it (GET, epoch=ms).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Query",
    "TimeRange",
    "UnknownMacro",
    "Variable",
    "influxql",
    "load_dashboards",
    "panel_queries",
    "panels",
    "regex_escape",
    "substitute",
    "tag_values",
    "variables",
]

# $name, ${name}, ${name:format}, [[name]]; names are word characters (Grafana's rule).
_REFERENCE = re.compile(r"\$\{(?P<braced>[^}]*)\}|\$(?P<plain>\w+)|\[\[(?P<old>[^\]]*)\]\]")
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_FORMATS = ("regex", "raw", "csv", "pipe", "doublequote", "singlequote")


class UnknownMacro(ValueError):
    """A ``$…`` reference that is neither a known macro nor a variable of the dashboard."""


@dataclass(frozen=True)
class TimeRange:
    """The dashboard's time range, as epoch milliseconds."""

    from_ms: int
    to_ms: int


@dataclass(frozen=True)
class Variable:
    """A templating variable with the values the test selected for it."""

    name: str
    values: tuple[str, ...]
    multi: bool = False
    """Multi-value or include-all: Grafana regex-escapes its values in InfluxQL."""


@dataclass(frozen=True)
class Query:
    """One panel target: where it is, for messages, and its text."""

    dashboard: str
    panel: str
    ref_id: str
    text: str
    datasource_uids: tuple[str | None, ...]
    """The panel's and the target's datasource uid (None when not given)."""


def regex_escape(value: str) -> str:
    """Grafana's escaping of a variable value inside an InfluxQL regex (``/`` included)."""
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


def _format(variable: Variable, fmt: str | None) -> str:
    values = variable.values
    if not values:
        raise UnknownMacro(f"variable {variable.name} has no value selected")
    if fmt is None:
        # The InfluxDB datasource's default: raw for a single-value variable,
        # regex-escaped (and grouped when several) for multi-value ones.
        fmt = "regex" if variable.multi else "raw"
    if fmt == "regex":
        escaped = [regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt in ("raw", "csv"):
        return ",".join(values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    raise UnknownMacro(f"unknown format {fmt!r} for variable {variable.name}")


def substitute(
    text: str,
    variables: Mapping[str, Variable],
    time_range: TimeRange,
    interval_ms: int = 1000,
) -> str:
    """``text`` with Grafana's macros and the variables replaced; raises UnknownMacro."""
    macros = {
        "timeFilter": f"time >= {time_range.from_ms}ms and time <= {time_range.to_ms}ms",
        "__interval": _interval(interval_ms),
        "interval": _interval(interval_ms),
        "__interval_ms": str(interval_ms),
        "__from": str(time_range.from_ms),
        "__to": str(time_range.to_ms),
    }
    macros["__timeFilter"] = macros["timeFilter"]

    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        spec = match.group("braced")
        if spec is None:
            spec = match.group("plain") if match.group("plain") is not None else match.group("old")
        name, _, fmt = spec.partition(":")
        if not re.fullmatch(r"\w+", name):
            raise UnknownMacro(f"cannot read {whole!r}")
        if name in macros:
            if fmt:
                raise UnknownMacro(f"macro {whole!r} takes no format")
            return macros[name]
        if name.startswith("__"):
            raise UnknownMacro(f"unknown Grafana macro {whole!r}")
        if name not in variables:
            raise UnknownMacro(f"{whole!r} is not a variable of this dashboard")
        if fmt and fmt not in _FORMATS:
            raise UnknownMacro(f"unknown format in {whole!r}")
        return _format(variables[name], fmt or None)

    return _REFERENCE.sub(replace, text)


def _interval(ms: int) -> str:
    """Grafana writes intervals in the largest unit that divides them."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


# -- the dashboards ------------------------------------------------------------------


def load_dashboards(directory: Path) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` dashboard in ``directory`` by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))}


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside (collapsed) rows; rows themselves are left out."""
    pending = list(dashboard.get("panels", []))
    while pending:
        panel = pending.pop(0)
        if panel.get("type") == "row":
            pending[0:0] = panel.get("panels", [])
            continue
        yield panel


def _uid(datasource: Any) -> str | None:
    if isinstance(datasource, Mapping):
        uid = datasource.get("uid")
        return str(uid) if uid is not None else None
    return None if datasource is None else str(datasource)


def panel_queries(name: str, dashboard: Mapping[str, Any]) -> Iterator[Query]:
    """Every target of every panel of one dashboard."""
    for panel in panels(dashboard):
        title = str(panel.get("title", f"panel {panel.get('id')}"))
        for target in panel.get("targets", []):
            yield Query(
                dashboard=name,
                panel=title,
                ref_id=str(target.get("refId", "?")),
                text=str(target.get("query", "")),
                datasource_uids=(_uid(panel.get("datasource")), _uid(target.get("datasource"))),
            )


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The templating variables, in the order Grafana resolves them (declaration order)."""
    return list(dashboard.get("templating", {}).get("list", []))


# -- InfluxDB ------------------------------------------------------------------------


def influxql(url: str, database: str, query: str) -> list[dict[str, Any]]:
    """One InfluxQL request as Grafana sends it (GET /query, epoch=ms); the series.

    Raises AssertionError with InfluxDB's message when the request or a statement fails.
    """
    params = urllib.parse.urlencode({"db": database, "q": query, "epoch": "ms"})
    try:
        with urllib.request.urlopen(f"{url}/query?{params}", timeout=30) as reply:
            body = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{exc.code} {exc.read()[:300]!r} for {query}") from exc
    series: list[dict[str, Any]] = []
    for result in body.get("results", []):
        if "error" in result:
            raise AssertionError(f"InfluxDB: {result['error']} for {query}")
        series.extend(result.get("series", []))
    return series


def tag_values(series: Sequence[Mapping[str, Any]]) -> list[str]:
    """The values a ``SHOW TAG VALUES`` answered (the ``value`` column)."""
    found: list[str] = []
    for one in series:
        column = list(one["columns"]).index("value")
        found.extend(str(row[column]) for row in one.get("values", []))
    return found
