"""The transition state machine on recorded pod objects (pure: no I/O, nothing mocked).

The pod dicts are shaped like the API server's (and the simulated kubelet's)
pods at each step of a start, a crash loop and a deletion. What is checked:
which events each object implies and with which API timestamps; that repeats,
relists and late events never duplicate a transition and that skipped
intermediate objects lose none that the later objects still show (a property
test over random replays); that what a relist newly shows of a watched pod is
bounded back over the watch gap (``caught_up``) while watch events stay exact;
probe targets from annotations and ports.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.transitions import (
    CAUGHT_UP,
    PROBE_PATH_ANNOTATION,
    PROBE_PORT_ANNOTATION,
    RUN_ID_LABEL,
    SEEN_LATE,
    PodTracker,
    ProbeTarget,
    Stamp,
    parse_time_ns,
    probe_target,
)
from rtbench.v1 import events_pb2

P = events_pb2
NODE = "node-a"
T0 = "2026-11-22T16:00:00Z"
T0_NS = parse_time_ns(T0)
S = 1_000_000_000


def ts(seconds: int) -> str:
    return f"2026-11-22T16:00:{seconds:02d}Z"


def stamp(n: int = 1) -> Stamp:
    return Stamp(1_800_000_000_000_000_000 + n, n)


def condition(ctype: str, status: str, at: str) -> dict[str, Any]:
    return {"type": ctype, "status": status, "lastTransitionTime": at}


def pending(uid: str = "uid-1", **labels: str) -> dict[str, Any]:
    """A pod just bound to NODE: scheduled, nothing started."""
    return {
        "metadata": {
            "name": f"web-{uid}",
            "namespace": "bench",
            "uid": uid,
            "labels": {"app": "c-http-server", RUN_ID_LABEL: "run-7", **labels},
        },
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "web", "ports": [{"containerPort": 9090}]}],
        },
        "status": {"phase": "Pending", "conditions": [condition("PodScheduled", "True", T0)]},
    }


def with_ip(pod: dict[str, Any]) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["status"]["podIP"] = "10.1.0.7"
    pod["status"]["containerStatuses"] = [
        {"name": "web", "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
    ]
    return pod


def running(pod: dict[str, Any], *, ready: bool = False, restarts: int = 0) -> dict[str, Any]:
    pod = copy.deepcopy(with_ip(pod))
    status = pod["status"]
    status["phase"] = "Running"
    status["containerStatuses"] = [
        {
            "name": "web",
            "restartCount": restarts,
            "state": {"running": {"startedAt": ts(2 + restarts)}},
        }
    ]
    status["conditions"] = [
        condition("PodScheduled", "True", T0),
        condition("Ready", "True" if ready else "False", ts(3)),
    ]
    return pod


def deleting(pod: dict[str, Any], grace: int = 30) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["metadata"]["deletionTimestamp"] = ts(10 + grace)
    pod["metadata"]["deletionGracePeriodSeconds"] = grace
    return pod


def terminated(pod: dict[str, Any], reason: str, code: int) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    pod["status"]["containerStatuses"][0]["state"] = {
        "terminated": {
            "exitCode": code,
            "reason": reason,
            "startedAt": ts(2),
            "finishedAt": ts(5),
        }
    }
    return pod


def phases(events: list[events_pb2.Event]) -> list[str]:
    return [P.Phase.Name(e.phase).removeprefix("PHASE_") for e in events]


def test_a_start_step_by_step_with_api_times() -> None:
    tracker = PodTracker(NODE)
    first = tracker.seen(pending(), stamp(1))
    assert phases(first) == ["SCHEDULED"]
    event = first[0]
    assert event.source == P.SOURCE_WATCH and event.api_time_ns == T0_NS
    assert (event.time_ns, event.monotonic_ns, event.uncertainty_ns) == (*stamp(1), 0)
    assert event.pod.uid == "uid-1" and event.pod.node == NODE and event.pod.run_id == "run-7"
    assert dict(event.pod.labels)["app"] == "c-http-server"
    assert event.attributes["via"] == "watch"

    assert tracker.seen(with_ip(pending()), stamp(2)) == []
    assert tracker.get("uid-1") is not None
    assert tracker.get("uid-1").target == ProbeTarget("10.1.0.7", 9090, "/")  # type: ignore[union-attr]

    started = tracker.seen(running(pending()), stamp(3))
    assert phases(started) == ["CONTAINER_STARTED", "RUNNING"]
    assert started[0].container == "web" and started[0].api_time_ns == T0_NS + 2 * S
    assert started[1].api_time_ns == 0

    ready = tracker.seen(running(pending(), ready=True), stamp(4))
    assert phases(ready) == ["READY"] and ready[0].api_time_ns == T0_NS + 3 * S
    assert tracker.seen(running(pending(), ready=True), stamp(5)) == []

    asked = tracker.seen(deleting(running(pending(), ready=True), grace=30), stamp(6))
    assert phases(asked) == ["DELETION_REQUESTED"]
    # deletionTimestamp is the end of the grace period; the request was 30 s earlier.
    assert asked[0].api_time_ns == T0_NS + 10 * S
    assert tracker.get("uid-1").deleting  # type: ignore[union-attr]

    final = terminated(deleting(running(pending())), "Error", 143)
    gone = tracker.deleted(final, stamp(7))
    assert phases(gone) == ["CONTAINER_EXITED", "GONE"]  # an exit while deleting is no failure
    assert gone[0].reason == "Error" and gone[0].attributes["exit_code"] == "143"
    assert len(tracker) == 0
    assert tracker.seen(running(pending()), stamp(8)) == []  # a late event cannot revive it
    assert tracker.deleted(final, stamp(9)) == []


def test_an_object_that_shows_everything_at_once() -> None:
    tracker = PodTracker(NODE)
    events = tracker.seen(deleting(running(pending(), ready=True)), stamp(1), via="list")
    assert phases(events) == [
        "SCHEDULED",
        "CONTAINER_STARTED",
        "RUNNING",
        "READY",
        "DELETION_REQUESTED",
    ]
    assert {e.time_ns for e in events} == {stamp(1).wall_ns}
    assert {e.attributes["via"] for e in events} == {"list"}


def test_crash_loop_restarts_and_failures() -> None:
    tracker = PodTracker(NODE)
    tracker.seen(running(pending()), stamp(1))
    oom = tracker.seen(terminated(running(pending()), "OOMKilled", 137), stamp(2))
    assert phases(oom) == ["CONTAINER_EXITED", "FAILED"]
    assert oom[1].reason == "OOMKilled" and oom[1].container == "web"
    assert oom[1].api_time_ns == T0_NS + 5 * S

    backoff = with_ip(pending())
    backoff["status"]["containerStatuses"] = [
        {
            "name": "web",
            "restartCount": 1,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {
                "terminated": {
                    "exitCode": 137,
                    "reason": "OOMKilled",
                    "startedAt": ts(2),
                    "finishedAt": ts(5),
                }
            },
        }
    ]
    looping = tracker.seen(backoff, stamp(3))
    assert phases(looping) == ["FAILED"] and looping[0].reason == "CrashLoopBackOff"
    restarted = tracker.seen(running(pending(), restarts=1), stamp(4))
    assert phases(restarted) == ["CONTAINER_STARTED"]
    assert restarted[0].attributes["restart_count"] == "1"
    # The second crash is an exit of instance 1 but no new failure reason.
    again = terminated(running(pending(), restarts=1), "OOMKilled", 137)
    assert phases(tracker.seen(again, stamp(5))) == ["CONTAINER_EXITED"]


def test_a_missed_run_is_inferred_from_what_followed() -> None:
    """A crash that came and went between two objects still shows as start and exit."""
    tracker = PodTracker(NODE)
    tracker.seen(with_ip(pending()), stamp(1))
    after = with_ip(pending())
    after["status"]["containerStatuses"] = [
        {
            "name": "web",
            "restartCount": 1,
            "state": {"running": {"startedAt": ts(7)}},
            "lastState": {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "startedAt": ts(2),
                    "finishedAt": ts(4),
                }
            },
        }
    ]
    events = tracker.seen(after, stamp(2))
    assert phases(events) == [
        "CONTAINER_STARTED",
        "CONTAINER_EXITED",
        "FAILED",
        "CONTAINER_STARTED",
    ]
    assert events[0].attributes == {
        "via": "watch",
        "restart_count": "0",
        "inferred_from": "terminated",
    }
    assert [e.api_time_ns for e in events] == [
        T0_NS + 2 * S,
        T0_NS + 4 * S,
        T0_NS + 4 * S,
        T0_NS + 7 * S,
    ]


def test_failed_phase_and_image_pull_errors() -> None:
    tracker = PodTracker(NODE)
    pulling = with_ip(pending())
    pulling["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ErrImagePull"}}
    assert phases(tracker.seen(pulling, stamp(1))) == ["SCHEDULED", "FAILED"]
    pulling["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ImagePullBackOff"}}
    assert [e.reason for e in tracker.seen(pulling, stamp(2))] == ["ImagePullBackOff"]
    assert tracker.seen(pulling, stamp(3)) == []
    evicted = copy.deepcopy(pulling)
    evicted["status"]["phase"] = "Failed"
    evicted["status"]["reason"] = "Evicted"
    assert [e.reason for e in tracker.seen(evicted, stamp(4))] == ["Evicted"]


def test_relists_emit_only_what_is_new_and_declare_the_missing_gone() -> None:
    tracker = PodTracker(NODE)
    tracker.seen(running(pending("a")), stamp(1))
    tracker.seen(pending("b"), stamp(1))
    events = tracker.relisted([running(pending("a"), ready=True), pending("c")], stamp(2))
    assert [(e.pod.uid, p) for e, p in zip(events, phases(events), strict=True)] == [
        ("a", "READY"),
        ("c", "SCHEDULED"),
        ("b", "DELETION_REQUESTED"),
        ("b", "GONE"),
    ]
    inferred, gone = events[2:]
    assert inferred.attributes["inferred_from"] == "gone" and gone.reason == "missing from relist"
    # Both happened after b was last seen (stamp 1) and before the relist (stamp 2).
    assert inferred.uncertainty_ns == gone.uncertainty_ns == stamp(2).wall_ns - stamp(1).wall_ns
    assert gone.attributes["last_seen_ns"] == str(stamp(1).wall_ns)
    assert {e.attributes["via"] for e in events} == {"list"}
    assert tracker.relisted([running(pending("a"), ready=True), pending("c")], stamp(3)) == []
    assert sorted(tracker.pods) == ["a", "c"]


def test_what_a_relist_newly_shows_of_a_watched_pod_is_bounded_by_the_watch_gap() -> None:
    tracker = PodTracker(NODE)
    live = tracker.seen(running(pending("a")), stamp(1))
    assert {e.uncertainty_ns for e in live} == {0}
    assert not any(CAUGHT_UP in e.attributes for e in live)
    # The watch was last in sync at stamp 20; the relist arrives at stamp 50.
    listed = [deleting(running(pending("a"), ready=True)), running(pending("b"))]
    events = tracker.relisted(listed, stamp(50), in_sync_at=stamp(20))
    caught_up = [e for e in events if e.pod.uid == "a"]
    assert phases(caught_up) == ["READY", "DELETION_REQUESTED"]
    for event in caught_up:
        assert event.time_ns == stamp(50).wall_ns  # stamped on arrival, bounded back to 20
        assert event.uncertainty_ns == 30
        assert event.attributes[CAUGHT_UP] == "relist" and event.attributes["gap_ns"] == "30"
        assert SEEN_LATE not in event.attributes
    assert caught_up[0].api_time_ns == parse_time_ns(ts(3))  # the API's own time is kept
    # b was first seen in this list: seen_late (bounded by its creation), not caught up.
    first_seen = [e for e in events if e.pod.uid == "b"]
    assert first_seen and all(
        SEEN_LATE in e.attributes and CAUGHT_UP not in e.attributes for e in first_seen
    )
    # Back on the watch: live again.
    after = tracker.seen(terminated(running(pending("b")), "Error", 1), stamp(60))
    assert after and all(e.uncertainty_ns == 0 and CAUGHT_UP not in e.attributes for e in after)


def test_without_the_watchers_sync_time_the_bound_reaches_back_to_the_pods_last_sight() -> None:
    tracker = PodTracker(NODE)
    tracker.seen(pending("a"), stamp(1))
    tracker.seen(with_ip(pending("a")), stamp(5))
    events = tracker.relisted([running(pending("a"), ready=True)], stamp(9))
    assert phases(events) == ["CONTAINER_STARTED", "RUNNING", "READY"]
    assert {(e.uncertainty_ns, e.attributes["gap_ns"]) for e in events} == {(4, "4")}
    assert tracker.relisted([running(pending("a"), ready=True)], stamp(12)) == []


def test_a_pod_deleted_at_once_still_shows_its_deletion() -> None:
    tracker = PodTracker(NODE)
    tracker.seen(running(pending()), stamp(1))
    events = tracker.deleted(running(pending()), stamp(5))  # grace 0: no deletionTimestamp
    assert phases(events) == ["DELETION_REQUESTED", "GONE"]
    assert events[0].attributes["inferred_from"] == "gone" and events[0].uncertainty_ns == 4
    assert events[1].uncertainty_ns == 0  # the DELETED event itself is a watch arrival


def test_pods_of_other_nodes_and_objects_without_uid_are_ignored() -> None:
    tracker = PodTracker(NODE)
    elsewhere = pending()
    elsewhere["spec"]["nodeName"] = "node-b"
    assert tracker.seen(elsewhere, stamp(1)) == []
    nameless = pending()
    del nameless["metadata"]["uid"]
    assert tracker.seen(nameless, stamp(1)) == []
    assert tracker.relisted([elsewhere, nameless], stamp(2)) == [] and len(tracker) == 0


def test_labels_follow_the_pod() -> None:
    tracker = PodTracker(NODE)
    tracker.seen(pending(), stamp(1))
    relabelled = running(pending(variant="kata-fc"))
    events = tracker.seen(relabelled, stamp(2))
    assert all(e.pod.labels["variant"] == "kata-fc" for e in events)


def test_probe_targets() -> None:
    pod = with_ip(pending())
    assert probe_target(pending(), 8080, "/") is None  # no IP yet
    assert probe_target(pod, 8080, "/") == ProbeTarget("10.1.0.7", 9090, "/")
    pod["metadata"]["annotations"] = {PROBE_PORT_ANNOTATION: "8443", PROBE_PATH_ANNOTATION: "/ok"}
    assert probe_target(pod, 8080, "/") == ProbeTarget("10.1.0.7", 8443, "/ok")
    pod["metadata"]["annotations"] = {PROBE_PORT_ANNOTATION: "99999", PROBE_PATH_ANNOTATION: "x"}
    assert probe_target(pod, 8080, "/h") == ProbeTarget("10.1.0.7", 9090, "/h")
    pod["spec"]["containers"] = [
        {"name": "web", "ports": [{"containerPort": 53, "protocol": "UDP"}]},
        {"name": "side", "ports": [{"containerPort": 7000}]},
    ]
    assert probe_target(pod, 8080, "/") == ProbeTarget("10.1.0.7", 8080, "/")


def test_timestamps() -> None:
    assert parse_time_ns("1970-01-01T00:00:01Z") == S
    assert parse_time_ns("1970-01-01T00:00:01.250000Z") == S + 250_000_000
    assert parse_time_ns("1970-01-01T01:00:00+01:00") == 0
    for bad in ("", None, "yesterday", "2026-11-22T16:00:00"):
        assert parse_time_ns(bad) == 0


# -- replays -------------------------------------------------------------------------------

TIMELINE = [
    pending(),
    with_ip(pending()),
    running(pending()),
    running(pending(), ready=True),
    deleting(running(pending(), ready=True)),
    terminated(deleting(running(pending(), ready=True)), "Completed", 0),
]
MONOTONE = {
    "SCHEDULED",
    "CONTAINER_STARTED",
    "RUNNING",
    "READY",
    "DELETION_REQUESTED",
    "CONTAINER_EXITED",
}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, len(TIMELINE) - 1), min_size=1, max_size=20),
    st.booleans(),
    st.lists(st.booleans(), min_size=20, max_size=20),
)
def test_any_replay_gives_each_transition_once(
    steps: list[int], end_with_delete: bool, as_relist: list[bool]
) -> None:
    """Watch objects in order, with repeats, skips and relists: each phase once, none lost."""
    order = sorted(steps)  # a watch never goes back in time; it may repeat or skip
    tracker = PodTracker(NODE)
    events: list[events_pb2.Event] = []
    for n, (index, relist) in enumerate(zip(order, as_relist, strict=False)):
        obj = TIMELINE[index]
        if relist:
            events += tracker.relisted([obj], stamp(n))
        else:
            events += tracker.seen(obj, stamp(n))
    if end_with_delete:
        events += tracker.deleted(TIMELINE[-1], stamp(99))
    counts = Counter(phases(events))
    assert all(count == 1 for count in counts.values()), counts
    for event in events:  # a list's events are marked (late or caught up), the watch's not
        marks = (CAUGHT_UP in event.attributes) + (SEEN_LATE in event.attributes)
        assert marks == (event.attributes["via"] == "list"), event
    expected = {
        p for p in MONOTONE if p in set(phases(PodTracker(NODE).seen(TIMELINE[order[-1]], stamp())))
    }
    if end_with_delete:
        expected |= MONOTONE | {"GONE"}
    assert expected <= set(counts)
    assert "FAILED" not in counts
