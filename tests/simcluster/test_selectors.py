"""Label and field selectors: the real grammar, matching and errors."""

from __future__ import annotations

import pytest

from simcluster.errors import BadRequest
from simcluster.resources import DEPLOYMENTS, NODES, PODS
from simcluster.selectors import field_value, parse_field_selector, parse_label_selector

LABELS = {"app": "web", "tier": "front", "n": "5"}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app!=db", True),
        ("missing!=x", True),
        ("app in (web, db)", True),
        ("app notin (web,db)", False),
        ("app notin (db)", True),
        ("tier", True),
        ("!tier", False),
        ("!missing", True),
        ("app=web,tier=back", False),
        ("app=web, tier in (front)", True),
        ("n>4", True),
        ("n<5", False),
        ("example.com/key=", False),
        ("missing=", False),
    ],
)
def test_label_selector_matching(text: str, matches: bool) -> None:
    assert parse_label_selector(text).matches(LABELS) is matches


@pytest.mark.parametrize(
    "text",
    [
        "app in (",
        "app in web",
        "=web",
        "app=web=x",
        "app=web,",
        "!",
        "a b",
        "app notin ()x",
        "n>x",
        "Bad Key=1",
        "app=-web-",
        "app in (a b)x",
        "UPPER_/x=1",
    ],
)
def test_invalid_label_selectors_are_400(text: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_label_selector(text)
    assert caught.value.status()["code"] == 400


def test_field_selectors() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"nodeName": "n1", "hostNetwork": False},
        "status": {"phase": "Running"},
    }
    assert parse_field_selector("spec.nodeName=n1,status.phase!=Pending", PODS).matches(
        lambda f: field_value(pod, f)
    )
    assert not parse_field_selector("metadata.name==q", PODS).matches(lambda f: field_value(pod, f))
    assert parse_field_selector("spec.hostNetwork=false", PODS).matches(
        lambda f: field_value(pod, f)
    )
    unbound = {"metadata": {"name": "u"}, "spec": {}}
    assert parse_field_selector("spec.nodeName=", PODS).matches(lambda f: field_value(unbound, f))
    assert parse_field_selector(r"metadata.name=a\,b", PODS).terms[0].value == "a,b"
    assert (
        parse_field_selector("spec.unschedulable=true", NODES).required("spec.unschedulable")
        == "true"
    )


@pytest.mark.parametrize(
    ("text", "rtype"),
    [("spec.nodeName=x", DEPLOYMENTS), ("spec.foo=1", PODS), ("status.phase", PODS)],
)
def test_unsupported_or_malformed_fields_are_400(text: str, rtype: object) -> None:
    with pytest.raises(BadRequest):
        parse_field_selector(text, rtype)  # type: ignore[arg-type]
