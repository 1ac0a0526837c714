"""The store's resourceVersion and history rules, which later components rely on."""

from __future__ import annotations

import pytest

from simcluster.errors import AlreadyExists, Conflict, Expired, NotFound
from simcluster.store import EventType, Store, WatchClosed


def obj(name: str, namespace: str = "default", **extra: object) -> dict[str, object]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": namespace},
        **extra,
    }


def test_one_counter_across_kinds_one_event_per_write() -> None:
    store = Store()
    store.create("Pod", obj("a"))
    store.create("Namespace", {"metadata": {"name": "n"}})
    updated = store.update("Pod", obj("a", spec={"x": 1}))
    deleted = store.delete("Pod", "default", "a")
    assert store.resource_version == 4
    assert [(e.type, e.kind, e.rv) for e in store.history()] == [
        (EventType.ADDED, "Pod", 1),
        (EventType.ADDED, "Namespace", 2),
        (EventType.MODIFIED, "Pod", 3),
        (EventType.DELETED, "Pod", 4),
    ]
    assert updated["metadata"]["resourceVersion"] == "3"
    assert deleted["metadata"]["resourceVersion"] == "4"  # the deletion's rv
    previous = store.history()[2].previous
    assert previous is not None and previous["metadata"]["resourceVersion"] == "1"


def test_write_errors() -> None:
    store = Store()
    store.create("Pod", obj("a"))
    with pytest.raises(AlreadyExists):
        store.create("Pod", obj("a"))
    with pytest.raises(NotFound):
        store.update("Pod", obj("b"))
    with pytest.raises(Conflict):
        store.update("Pod", obj("a"), expect_rv="7")
    with pytest.raises(NotFound):
        store.delete("Pod", "default", "a", uid="someone-else")


def test_reads_are_copies() -> None:
    store = Store()
    store.create("Pod", obj("a", spec={"n": 1}))
    copy = store.get("Pod", "default", "a")
    assert copy is not None
    copy["spec"]["n"] = 2
    assert store.peek("Pod", "default", "a")["spec"]["n"] == 1  # type: ignore[index]


async def test_watch_replays_after_rv_then_follows_live() -> None:
    store = Store()
    for name in "abc":
        store.create("Pod", obj(name))
    backlog, watcher = store.watch(["Pod"], 1, limit=100)
    assert [e.rv for e in backlog] == [2, 3]
    store.create("Namespace", {"metadata": {"name": "other-kind"}})
    store.create("Pod", obj("d"))
    assert [e.rv for e in await watcher.next_batch(1)] == [5]


async def test_watch_without_rv_starts_with_synthetic_added() -> None:
    store = Store()
    store.create("Pod", obj("b"))
    store.create("Pod", obj("a"))
    store.update("Pod", obj("a", spec={}))
    backlog, watcher = store.watch(["Pod"], None, limit=100)
    assert [(e.type, e.object["metadata"]["name"], e.rv) for e in backlog] == [
        (EventType.ADDED, "a", 3),
        (EventType.ADDED, "b", 1),
    ]
    assert await watcher.next_batch(0.01) == []


def test_history_bound_and_compaction_give_expired() -> None:
    store = Store(history_size=3)
    for name in "abcde":
        store.create("Pod", obj(name))
    assert store.compacted == 2 and [e.rv for e in store.history()] == [3, 4, 5]
    store.watch(["Pod"], 2, limit=10)  # everything after 2 is retained
    with pytest.raises(Expired) as caught:
        store.watch(["Pod"], 1, limit=10)
    assert caught.value.status()["message"] == "too old resource version: 1 (2)"
    assert caught.value.status()["code"] == 410
    assert store.compact() == 5
    with pytest.raises(Expired):
        store.watch(["Pod"], 4, limit=10)
    backlog, _ = store.watch(["Pod"], 5, limit=10)
    assert backlog == []


async def test_slow_client_watchers_are_closed_not_unbounded() -> None:
    store = Store()
    _, watcher = store.watch(["Pod"], 0, limit=2)
    internal = store.subscribe(["Pod"])
    for name in "abc":
        store.create("Pod", obj(name))
    assert watcher.closed is WatchClosed.OVERFLOW
    assert len(await internal.next_batch(0)) == 3  # in-process subscriptions are unbounded
    _, dropped = store.watch(["Pod"], None, limit=10)
    assert store.close_watchers(WatchClosed.DROPPED) == 1
    assert dropped.closed is WatchClosed.DROPPED and internal.closed is None
