"""containerd's filter syntax as the simulated containerd parses and matches it.

The cases follow containerd's grammar and its quirks (values starting with ``/``
are quoted strings, regexes are unanchored searches, ``!=`` matches absent
fields, one empty filter string matches everything).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from simcluster.containerd_filters import map_field, parse_all
from simcluster.errors import BadRequest

ENVELOPE = {"namespace": "k8s.io", "topic": "/tasks/start"}
LABELS = {"io.cri-containerd.kind": "sandbox", "io.kubernetes.pod.uid": "u-1", "app": "web"}


def adapt(path: Sequence[str]) -> tuple[str, bool]:
    if path and path[0] == "labels":
        return map_field(path[1:], LABELS)
    if len(path) == 1 and path[0] in ENVELOPE:
        return ENVELOPE[path[0]], True
    return "", False


@pytest.mark.parametrize(
    ("filters", "matches"),
    [
        ([], True),
        ([""], True),
        (["namespace==k8s.io"], True),
        (["namespace==moby"], False),
        (['namespace==k8s.io,topic~="^/tasks/"'], True),
        (['namespace==k8s.io,topic~="^/containers/"'], False),
        (['namespace==k8s.io,topic~="^/containers/"', 'topic=="/tasks/start"'], True),
        (["namespace==moby", ""], True),
        (["topic~=/start$/"], True),
        (["topic~=|tasks|"], True),
        (['topic~="^tasks"'], False),
        (["topic~=start"], True),
        (['topic~="("'], False),  # does not compile: never matches, no error
        (["namespace!=moby"], True),
        (["missing!=x"], True),
        (["missing"], False),
        (["namespace"], True),
        (['labels."io.cri-containerd.kind"==sandbox'], True),
        (["labels.io.kubernetes.pod.uid==u-1"], True),
        (["labels.io.kubernetes.pod.uid==u-2"], False),
        (["labels.app"], True),
        (["labels.nope"], False),
        ([' namespace == k8s.io , labels.app == "web" '], True),
        (['labels.app=="w\\x65b"'], True),
        (['labels.app=="\\167eb"'], True),
    ],
)
def test_filters_match_as_containerd_does(filters: list[str], matches: bool) -> None:
    assert parse_all(filters).match(adapt) is matches


@pytest.mark.parametrize(
    "text",
    [
        "topic==/tasks/start",  # a leading / opens a quoted string, allowed after ~= only
        "namespace=k8s.io",
        "namespace===k8s.io",
        "namespace==",
        "namespace==,topic",
        "a,,b",
        ",a",
        "a.",
        "a==b c",
        '"open',
        'labels."a\\qb"',
        "labels./x/",
        'x=="\\400"',
        'x=="\\xZZ"',
        "x~=/unterminated",
    ],
)
def test_syntax_errors_are_refused(text: str) -> None:
    with pytest.raises(BadRequest, match="parse error"):
        parse_all(["namespace==k8s.io", text])
