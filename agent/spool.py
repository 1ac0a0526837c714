"""The on-disk spool: every sealed batch is durable before it is sent.

An agent restart, a crash or a power cut must not lose a batch the collector has
not acknowledged. So the batcher hands each sealed batch to the spool, which
writes it to its own file (temp name, fsync, rename, fsync of the directory) and
only then offers it to the uplink; an ack deletes the file. A batch sealed while
fewer than ``memory_batches`` are held is also kept in memory, so the common
path (seal, send, ack within milliseconds, the memory never full) never reads
the disk. When the collector falls behind, the memory holds the oldest
unacknowledged batches and the ones sealed after it filled are on disk only.
That suits the resend after an outage, which goes oldest first: it starts from
memory at once and reads the disk only for the later batches (and for those of
an earlier run), and every ack frees a slot for a batch sealed from then on.

Acknowledging a batch or setting it aside changes its file and the index
together, shielded from cancellation: an uplink session that is cancelled
mid-ack must not leave a batch indexed whose file is gone. A batch that is
indexed but whose file has vanished anyway counts as acknowledged when it is
next loaded.

Layout under the state directory::

    lock                            held by the live agent (agent/statedir.py)
    agent-id                        the persisted default identity
    agent-node                      the node that identity belongs to
    spool/<agent id>/sequence       the last sequence number ever sealed
    spool/<agent id>/<seq:020>.batch

A file is ``RTB1`` + payload length + CRC-32 + the serialized ``Batch``. Temp
files (``.*.tmp``) are leftovers of a crash mid-write: their batch was never
offered to the uplink, so they are deleted at open. A final file that fails its
length or checksum is renamed ``*.corrupt``, counted and skipped.

Sequence numbers are never reused, also across restarts: the next one is one
past the larger of the ``sequence`` file and the newest batch file, and the
``sequence`` file is rewritten with every seal. Gaps are avoided (the
collector tracks the highest contiguous sequence), except where the overflow
policy drops batches.

Overflow policy, when the spool would exceed ``max_bytes``: drop the oldest
unacknowledged batches. A collector outage long enough to fill the spool has
already outlived the runs those batches describe (rtctl gives up on a run long
before), while the newest batches belong to the run in progress, which is what
the operator is waiting for. Drops are counted (batches and records) and logged
once when an overflow episode starts and once, with the counts, when it ends.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import re
import secrets
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

from google.protobuf.message import DecodeError

from rtbench.v1 import agent_pb2, events_pb2

from .errors import ForeignIdentity, SpoolError, StartupError

__all__ = ["Spool", "SpoolCounters", "decode_batch", "load_or_create_agent_id", "other_spools"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">4sII")
_MAGIC = b"RTB1"
_SUFFIX = ".batch"
_SEQUENCE_FILE = "sequence"
_NODE_FILE = "agent-node"
_LEGACY_ID = re.compile(r"(.+)-[0-9a-f]{8}")
"""The generated ``<node>-<8 hex>`` id: the node of an identity kept before agent-node."""


@dataclass
class SpoolCounters:
    spooled: int = 0
    """Batches written to disk since start."""
    dropped_overflow: int = 0
    """Unacknowledged batches dropped because the spool was full."""
    dropped_records: int = 0
    """Events, samples and probes in those batches."""
    corrupt: int = 0
    """Batch files that failed their checksum and were set aside."""
    rejected: int = 0
    """Batches the collector refused as invalid, set aside as ``.rejected`` files."""
    overflow_episodes: int = 0


def _records(batch: agent_pb2.Batch) -> int:
    return len(batch.events) + len(batch.samples) + len(batch.probes)


def _encode(batch: agent_pb2.Batch) -> bytes:
    payload = batch.SerializeToString()
    return _HEADER.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_batch(data: bytes) -> agent_pb2.Batch | None:
    if len(data) < _HEADER.size:
        return None
    magic, length, crc = _HEADER.unpack_from(data)
    payload = data[_HEADER.size :]
    if magic != _MAGIC or length != len(payload) or zlib.crc32(payload) != crc:
        return None
    batch = agent_pb2.Batch()
    batch.ParseFromString(payload)
    return batch


def _write_durably(directory: Path, name: str, data: bytes) -> None:
    tmp = directory / f".{name}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / name)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_agent_id(state_dir: Path, node: str) -> str:
    """The agent id persisted in ``state_dir`` for ``node``; a new state dir is a new identity.

    The node the identity belongs to is kept beside it (``agent-node``). An id
    recorded for another node is never adopted (ForeignIdentity, exit 2): two nodes
    under one id would share a spool and a batch sequence, and the collector would
    drop one node's batches as duplicates. An ``agent-id`` written before the node
    was kept is judged by its ``<node>-<8 hex>`` form.
    """
    path = state_dir / "agent-id"
    node_path = state_dir / _NODE_FILE
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        agent_id = path.read_text().strip() if path.exists() else ""
        if agent_id:
            recorded = node_path.read_text().strip() if node_path.exists() else None
            if recorded is None:
                legacy = _LEGACY_ID.fullmatch(agent_id)
                recorded = legacy.group(1) if legacy else node
                _write_durably(state_dir, _NODE_FILE, (recorded + "\n").encode())
                _fsync_dir(state_dir)
            if recorded != node:
                raise ForeignIdentity(
                    f"state directory {state_dir} holds the identity of node {recorded} "
                    f"(agent id {agent_id}), not of node {node}: give this agent its own "
                    f"--state-dir (or remove {path} to start a new identity there)"
                )
            return agent_id
        agent_id = f"{node}-{secrets.token_hex(4)}"
        _write_durably(state_dir, _NODE_FILE, (node + "\n").encode())
        _write_durably(state_dir, "agent-id", (agent_id + "\n").encode())
        _fsync_dir(state_dir)
        return agent_id
    except OSError as exc:
        raise StartupError(f"cannot keep the agent id in {state_dir}: {exc}") from exc


def other_spools(spool_root: Path, agent_id: str) -> dict[str, int]:
    """Batches left in the spools of other agent ids (never sent under this one)."""
    found: dict[str, int] = {}
    try:
        for directory in spool_root.iterdir():
            if directory.name != agent_id and directory.is_dir():
                count = sum(1 for p in directory.iterdir() if p.name.endswith(_SUFFIX))
                if count:
                    found[directory.name] = count
    except OSError:
        pass
    return found


class Spool:
    """Unacknowledged batches, durable on disk, the first ``memory_batches`` also in memory."""

    def __init__(self, directory: Path, *, max_bytes: int, memory_batches: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.memory_batches = memory_batches
        self.counters = SpoolCounters()
        self.last_sequence = 0
        self.bytes_used = 0
        self._unacked: list[int] = []
        self._sizes: dict[int, int] = {}
        self._memory: dict[int, agent_pb2.Batch] = {}
        self._counts: dict[int, int] = {}
        self._write_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._episode_batches = 0
        self._episode_records = 0

    @classmethod
    def open(cls, directory: Path, *, max_bytes: int, memory_batches: int) -> Self:
        """Index what an earlier run left behind (blocking I/O: call at start)."""
        spool = cls(directory, max_bytes=max_bytes, memory_batches=memory_batches)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for path in directory.iterdir():
                name = path.name
                if name.startswith(".") and name.endswith(".tmp"):
                    path.unlink(missing_ok=True)
                elif name.endswith(_SUFFIX) and name[: -len(_SUFFIX)].isdigit():
                    seq = int(name[: -len(_SUFFIX)])
                    spool._sizes[seq] = path.stat().st_size
            spool._unacked = sorted(spool._sizes)
            spool.bytes_used = sum(spool._sizes.values())
            recorded = 0
            seq_path = directory / _SEQUENCE_FILE
            if seq_path.exists():
                text = seq_path.read_text().strip()
                if not text.isdigit():
                    raise StartupError(f"{seq_path} is damaged ({text[:40]!r}); move it away")
                recorded = int(text)
            spool.last_sequence = max([recorded, *spool._unacked])
            # Proves the directory is writable now rather than at the first seal.
            _write_durably(directory, _SEQUENCE_FILE, f"{spool.last_sequence}\n".encode())
            _fsync_dir(directory)
        except OSError as exc:
            raise StartupError(f"cannot use the spool directory {directory}: {exc}") from exc
        return spool

    # -- the index -------------------------------------------------------------

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    @property
    def in_memory(self) -> int:
        return len(self._memory)

    def sequences(self) -> list[int]:
        return list(self._unacked)

    def next_after(self, cursor: int) -> int | None:
        """The lowest unacknowledged sequence above ``cursor``."""
        i = bisect.bisect_right(self._unacked, cursor)
        return self._unacked[i] if i < len(self._unacked) else None

    def count_upto(self, cursor: int) -> int:
        """How many unacknowledged sequences are at or below ``cursor`` (in flight)."""
        return bisect.bisect_right(self._unacked, cursor)

    def change(self) -> asyncio.Event:
        """An event set at the next change of the index (take it before checking)."""
        return self._changed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _forget(self, seq: int) -> bool:
        i = bisect.bisect_left(self._unacked, seq)
        if i == len(self._unacked) or self._unacked[i] != seq:
            return False
        del self._unacked[i]
        self.bytes_used -= self._sizes.pop(seq)
        self._memory.pop(seq, None)
        self._counts.pop(seq, None)
        return True

    # -- writing ---------------------------------------------------------------

    async def seal(
        self,
        *,
        events: Sequence[events_pb2.Event],
        samples: Sequence[events_pb2.ResourceSample],
        probes: Sequence[events_pb2.ProbeResult],
        clock: events_pb2.ClockOffset | None,
        sealed_ns: int,
    ) -> agent_pb2.Batch:
        """Number, write durably and index a batch; raises SpoolError."""
        async with self._write_lock:
            batch = agent_pb2.Batch(
                sequence=self.last_sequence + 1,
                events=events,
                samples=samples,
                probes=probes,
                clock=clock,
                sealed_ns=sealed_ns,
            )
            data = _encode(batch)
            await self._make_room(len(data))
            try:
                await asyncio.to_thread(self._write_batch, batch.sequence, data)
            except OSError as exc:
                raise SpoolError(f"cannot write to the spool {self.directory}: {exc}") from exc
            self.last_sequence = batch.sequence
            self._unacked.append(batch.sequence)
            self._sizes[batch.sequence] = len(data)
            self._counts[batch.sequence] = _records(batch)
            self.bytes_used += len(data)
            if len(self._memory) < self.memory_batches:
                self._memory[batch.sequence] = batch
            self.counters.spooled += 1
            self._notify()
            return batch

    def _write_batch(self, seq: int, data: bytes) -> None:
        _write_durably(self.directory, f"{seq:020d}{_SUFFIX}", data)
        _write_durably(self.directory, _SEQUENCE_FILE, f"{seq}\n".encode())
        _fsync_dir(self.directory)

    async def _make_room(self, size: int) -> None:
        dropped: list[int] = []
        while self._unacked and self.bytes_used + size > self.max_bytes:
            seq = self._unacked[0]
            records = self._counts.get(seq)
            if records is None:  # spooled by an earlier run: count what it held
                try:
                    batch, _ = await asyncio.to_thread(self._read, seq)
                except OSError:
                    batch = None
                records = _records(batch) if batch is not None else 0
            self._forget(seq)
            dropped.append(seq)
            if self._episode_batches == 0:
                self.counters.overflow_episodes += 1
                log.warning(
                    "spool over %d bytes: dropping the oldest unacknowledged batches "
                    "until the collector catches up",
                    self.max_bytes,
                )
            self._episode_batches += 1
            self._episode_records += records
            self.counters.dropped_overflow += 1
            self.counters.dropped_records += records
        if dropped:
            await asyncio.to_thread(self._unlink_many, dropped)
            self._notify()
        else:
            self.end_overflow_episode()

    def end_overflow_episode(self) -> None:
        """Log the counts of an overflow episode, if one is open."""
        if self._episode_batches:
            log.warning(
                "spool overflow ended: dropped %d batches (%d records)",
                self._episode_batches,
                self._episode_records,
            )
            self._episode_batches = self._episode_records = 0

    def _unlink_many(self, seqs: list[int]) -> None:
        for seq in seqs:
            (self.directory / f"{seq:020d}{_SUFFIX}").unlink(missing_ok=True)

    # -- reading and acknowledging ---------------------------------------------

    async def load(self, seq: int) -> agent_pb2.Batch | None:
        """The batch, from memory or disk; None if acked, dropped or damaged.

        A batch still indexed whose file is gone leaves the index here, as if it
        had been acknowledged, so that a sender asking for it moves on.
        """
        batch = self._memory.get(seq)
        if batch is not None or seq not in self._sizes:
            return batch
        try:
            batch, damaged = await asyncio.to_thread(self._read, seq)
        except OSError as exc:
            raise SpoolError(f"cannot read spooled batch {seq}: {exc}") from exc
        if batch is None and seq in self._sizes:
            if damaged:
                await asyncio.shield(self._set_aside(seq, "corrupt"))
                log.warning("spooled batch %d is damaged; set aside as .corrupt", seq)
            else:
                log.debug("spooled batch %d vanished from disk; counting it acknowledged", seq)
                self._forget(seq)
                self._notify()
        return batch

    async def _set_aside(self, seq: int, kind: Literal["corrupt", "rejected"]) -> None:
        """Rename a batch's file to ``.<kind>`` (kept for inspection), count it, unindex it.

        Callers shield it as a whole, so a cancelled caller cannot leave the file
        renamed but the batch still indexed and uncounted.
        """
        path = self.directory / f"{seq:020d}{_SUFFIX}"
        try:
            await asyncio.to_thread(os.replace, path, path.with_suffix(f".{kind}"))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise SpoolError(f"cannot set aside {kind} batch {seq}: {exc}") from exc
        if kind == "corrupt":
            self.counters.corrupt += 1
        else:
            self.counters.rejected += 1
        self._forget(seq)
        self._notify()

    def _read(self, seq: int) -> tuple[agent_pb2.Batch | None, bool]:
        """(batch, damaged); (None, False) when the file is gone (acked meanwhile)."""
        path = self.directory / f"{seq:020d}{_SUFFIX}"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, False
        try:
            batch = decode_batch(data)
        except DecodeError:  # passed the checksum, yet not a Batch: written by something else
            batch = None
        return batch, batch is None

    async def reject(self, seq: int) -> bool:
        """Set a batch the collector refused aside (``.rejected``, kept for inspection).

        It leaves the unacknowledged set, so the stream moves on; False if the
        batch was no longer held.
        """
        if seq not in self._sizes:
            return False
        await asyncio.shield(self._set_aside(seq, "rejected"))
        return True

    async def advance_sequence(self, seq: int) -> None:
        """Never seal at or below ``seq`` again (the collector has seen it from this id)."""
        async with self._write_lock:
            if seq <= self.last_sequence:
                return
            try:
                await asyncio.to_thread(self._write_sequence, seq)
            except OSError as exc:
                raise SpoolError(f"cannot write to the spool {self.directory}: {exc}") from exc
            self.last_sequence = seq

    def _write_sequence(self, seq: int) -> None:
        _write_durably(self.directory, _SEQUENCE_FILE, f"{seq}\n".encode())
        _fsync_dir(self.directory)

    async def ack(self, seq: int) -> bool:
        """Delete an acknowledged batch; False if it was not (or no longer) held.

        The file goes first and the index after, so that once the index is empty
        (what a shutdown drain waits for) the files are gone too.
        """
        if seq not in self._sizes:
            return False
        await self._delete(f"cannot delete acknowledged batch {seq}", [seq])
        return True

    async def ack_through(self, seq: int) -> int:
        """Delete every batch up to ``seq`` (the collector holds them); returns how many."""
        done = self._unacked[: bisect.bisect_right(self._unacked, seq)]
        if done:
            await self._delete("cannot delete acknowledged batches", done)
        return len(done)

    async def _delete(self, what: str, seqs: list[int]) -> None:
        # Shielded as a whole, files and index together: a deletion under way
        # completes even when the caller is cancelled, or the index would keep
        # batches whose files are gone.
        await asyncio.shield(self._delete_now(what, seqs))

    async def _delete_now(self, what: str, seqs: list[int]) -> None:
        try:
            await asyncio.to_thread(self._unlink_many, seqs)
        except OSError as exc:
            raise SpoolError(f"{what}: {exc}") from exc
        for seq in seqs:
            self._forget(seq)
        self._notify()
