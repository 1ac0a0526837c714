"""More property-based tests (hypothesis): line protocol escaping and the agent's settings.

Fixed seed, no deadline and modest example counts, so CI runs the same examples
every time:

- whatever text ends up as a measurement name, tag key, tag value, field key or
  string field, ``render_line`` either refuses it (ValueError) or writes a line
  that the real InfluxDB 1.x (the session's ``influxd``, a database of this
  module) parses into exactly that point: the name, the keys and the string come
  back identical, the tag value as ``normalize_tag_value`` documents. Each
  example is one batch of a few hundred points, written in one /write and read
  back with one /query, so the real parser is the judge at little cost;
- any values in the agent's environment variables and flags make
  ``settings_from_sources`` return settings or raise ConfigError, nothing else.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.settings import NODE_ENV, OPTIONS, settings_from_sources
from collector.lineprotocol import normalize_tag_value, render_line
from rtbench.influxd import LocalInfluxd

CI = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_batches = itertools.count(1_700_000_000_000_000_000, 1_000_000)

# -- line protocol through the real parser -------------------------------------------------

texts = st.text(max_size=12) | st.sampled_from(
    ["#", "#x", "a\\", "\\", "x\ny", "\r", " ", ",", "=", '"', "time", "a b,c=d", "é\t\x00"]
)
points = st.tuples(texts, texts, texts, texts, st.text(max_size=20))
"""(measurement, tag key, tag value, field key, string field)."""


_databases = itertools.count(1)


@contextlib.contextmanager
def fresh_database(server: LocalInfluxd) -> Iterator[str]:
    """A database of one example: SELECT * across measurements merges their keys, so a
    key that is a field in an earlier example would hide a tag of the same name."""
    name = f"properties_{os.getpid()}_{next(_databases)}"
    server.create_database(name)
    try:
        yield name
    finally:
        server.query(f'DROP DATABASE "{name}"')


def read_all(server: LocalInfluxd, database: str, first: int, last: int) -> dict[int, Any]:
    """Every point between two times, in every measurement: time → (measurement, columns)."""
    results = server.query(
        f"SELECT * FROM /(?s).*/ WHERE time >= {first} AND time <= {last}", db=database
    )
    found: dict[int, Any] = {}
    for series in results[0].get("series", []):
        for values in series["values"]:
            row = dict(zip(series["columns"], values, strict=True))
            found[row.pop("time")] = (series["name"], row)
    return found


@seed(8)
@CI
@given(st.lists(points, min_size=100, max_size=250))
@example([("m", "t", "v", "f", "s")] * 100)
def test_lines_round_trip_through_influxdb(
    influxd: LocalInfluxd, batch: list[tuple[str, str, str, str, str]]
) -> None:
    with fresh_database(influxd) as database:
        check_round_trip(influxd, database, batch)


def check_round_trip(
    server: LocalInfluxd, database: str, batch: list[tuple[str, str, str, str, str]]
) -> None:
    base = next(_batches)
    tag_keys = {tag_key for _, tag_key, *_ in batch}
    written: dict[int, tuple[str, str, str, str, str]] = {}
    lines = []
    for index, (measurement, tag_key, tag_value, field_key, text) in enumerate(batch):
        if field_key in tag_keys:
            continue  # InfluxQL's SELECT * cannot tell a tag from a field of the same name
        at = base + index
        try:
            lines.append(render_line(measurement, {tag_key: tag_value}, {field_key: text}, at))
        except ValueError:
            continue  # refused: the caller hears of it instead of InfluxDB dropping it
        written[at] = (measurement, tag_key, tag_value, field_key, text)
    if lines:
        server.write(database, "\n".join(lines))
    found = read_all(server, database, base, base + len(batch))
    assert sorted(found) == sorted(written), "points lost or invented"
    for at, (measurement, tag_key, tag_value, field_key, text) in written.items():
        name, row = found[at]
        assert name == measurement
        assert row[field_key] == text
        assert row.get(tag_key) == (normalize_tag_value(tag_value) or None)


# -- the agent's settings -------------------------------------------------------------------

_SAMPLES = [
    "", " ", "0", "-1", "1", "1.5", "1e309", "nan", "inf", "-inf", "true", "false", "yes",
    "127.0.0.1:7070", "[::1]:1", "host:0", "host:99999", "/tmp/x", "off", "auto", "16Mi",
    "1Gi", "abc", "debug", "\x00", "é", "x" * 300, "a b", "-", ":", "[", "1_000",
]  # fmt: skip
values = st.sampled_from(_SAMPLES) | st.text(max_size=16)
option_indexes = st.integers(0, len(OPTIONS) - 1)


@seed(8)
@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    env=st.lists(st.tuples(option_indexes, values), max_size=8),
    flags=st.lists(st.tuples(option_indexes, values | st.booleans() | st.none()), max_size=8),
    node_name=st.none() | values,
    required=st.booleans(),
)
def test_agent_settings_raise_config_error_only(
    env: list[tuple[int, str]],
    flags: list[tuple[int, str | bool | None]],
    node_name: str | None,
    required: bool,
) -> None:
    environ = {OPTIONS[i].env: value for i, value in env}
    if node_name is not None:
        environ[NODE_ENV] = node_name
    if required:
        # With node and collector present, parsing goes on to the dataclasses' checks.
        environ.setdefault("RTBENCH_AGENT_NODE", "node-1")
        environ.setdefault("RTBENCH_AGENT_COLLECTOR", "127.0.0.1:7070")
    given_flags: dict[str, object] = {}
    for i, value in flags:
        option = OPTIONS[i]
        # argparse gives a switch True or None, and any other option a string or None.
        if option.switch:
            given_flags[option.dest] = bool(value) or None
        else:
            given_flags[option.dest] = None if isinstance(value, bool) else value
    try:
        settings_from_sources(environ, given_flags)
    except ConfigError:
        pass
