"""Names the agent and the collector must agree on beyond the .proto messages.

They never import each other, so the few strings of the stream protocol that
are not protobuf fields live here, next to the generated code they go with.
"""

from __future__ import annotations

__all__ = ["PROTOCOL", "REJECTED_SEQUENCE_KEY"]

PROTOCOL = "v1"
"""``Hello.protocol``: the wire contract version, the folder name in proto/rtbench/."""

REJECTED_SEQUENCE_KEY = "rtbench-rejected-sequence"
"""Trailing metadata of an INVALID_ARGUMENT that refused one batch: its sequence.

The agent sets that batch aside instead of resending it forever; without the key
the refusal is about the stream as a whole (a bad Hello, say)."""
