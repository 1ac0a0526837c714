"""The CRI log format a real runtime writes, turned back into the container's output."""

from __future__ import annotations

from simcluster.podlogs import from_cri


def test_whole_lines_partial_entries_and_an_unfinished_line() -> None:
    data = (
        b"2026-12-06T06:00:00.000000001Z stdout F rtbench-workload listening port=8080\n"
        b"2026-12-06T06:00:00.000000002Z stderr P half \n"
        b"2026-12-06T06:00:00.000000003Z stderr F and the rest\n"
        b"2026-12-06T06:00:00.000000004Z stdout F \n"
        b"2026-12-06T06:00:00.000000005Z stdout F still being wri"
    )
    text, used = from_cri(data)
    assert text == b"rtbench-workload listening port=8080\nhalf and the rest\n\n"
    assert used == data.rfind(b"\n") + 1, "the unfinished line is left for the next read"
    rest, more = from_cri(data[used:] + b"tten\n")
    assert rest == b"still being written\n" and more == len(data) - used + 5


def test_nothing_whole_yet() -> None:
    assert from_cri(b"") == (b"", 0)
    assert from_cri(b"2026-12-06T06:00:00Z stdout F no newline yet") == (b"", 0)
