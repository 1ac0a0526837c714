"""``collector serve`` SIGKILLed mid-stream and restarted: nothing acked lost, nothing doubled."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import grpc

from rtbench.influxd import free_port
from rtbench.v1 import agent_pb2
from tests.collector.agent_client import StreamEnded, TestAgent, make_batch
from tests.collector.conftest import StartCollector, until

AGENTS = 3
BATCHES = 150
SIZE = 100


def stored(journal: Path) -> dict[str, dict[int, int]]:
    """agent -> sequence -> events stored for it (read after the collector is gone or alive)."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        result: dict[str, dict[int, int]] = {}
        for agent_id, seq, n in conn.execute(
            "SELECT agent_id, sequence, count(*) FROM events GROUP BY agent_id, sequence"
        ):
            result.setdefault(agent_id, {})[seq] = n
        return result
    finally:
        conn.close()


async def test_sigkill_mid_stream_then_restart_and_resend(
    collector_process: StartCollector, tmp_path: Path
) -> None:
    port = free_port()
    journal = tmp_path / "journal.sqlite"
    args = ("--listen", f"127.0.0.1:{port}", "--journal", str(journal))
    first = collector_process(*args)
    made = {
        f"agent-{n}": [make_batch(s, SIZE, agent=f"agent-{n}") for s in range(1, BATCHES + 1)]
        for n in range(AGENTS)
    }
    agents = [TestAgent(first.listen, agent_id, f"node-{n}") for n, agent_id in enumerate(made)]

    async def stream(agent: TestAgent, batches: list[agent_pb2.Batch]) -> None:
        await agent.connect()
        try:
            await agent.send_all(batches, window=16)
        except (StreamEnded, grpc.aio.AioRpcError):
            pass  # the collector died under it

    senders = [asyncio.create_task(stream(a, made[a.agent_id])) for a in agents]
    await until(
        lambda: sum(len(a.acks) for a in agents) >= AGENTS * BATCHES // 4, what="acks before kill"
    )
    first.kill()
    await asyncio.wait_for(asyncio.gather(*senders), 120)
    # Taken after the streams ended: acks still in flight when the process died count too.
    acked = {a.agent_id: dict(a.acks) for a in agents}
    for a in agents:
        await a.close()
    total_acked = sum(len(v) for v in acked.values())
    assert 0 < total_acked < AGENTS * BATCHES, "the kill must land mid-stream"

    # Every acknowledged batch survived, whole.
    after_kill = stored(journal)
    for agent_id, acks in acked.items():
        for seq in acks:
            assert after_kill[agent_id].get(seq) == SIZE, (agent_id, seq)

    second = collector_process(*args)
    assert second.collector_id == first.collector_id
    for n, (agent_id, batches) in enumerate(made.items()):
        again = TestAgent(second.listen, agent_id, f"node-{n}")
        try:
            welcome = await again.connect()
            # The contiguous prefix of what was acked is known to be committed.
            prefix = 0
            while prefix + 1 in acked[agent_id]:
                prefix += 1
            assert welcome.committed_sequence >= prefix
            await again.send_all(batches, window=16)
            # Resent batches that the journal already had are acknowledged as duplicates.
            for seq in acked[agent_id]:
                assert again.acks[seq] is True
        finally:
            await again.close()
    final = stored(journal)
    assert final == {agent_id: dict.fromkeys(range(1, BATCHES + 1), SIZE) for agent_id in made}
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        keys = conn.execute("SELECT count(DISTINCT attributes), count(*) FROM events").fetchone()
    finally:
        conn.close()
    assert keys == (AGENTS * BATCHES * SIZE, AGENTS * BATCHES * SIZE)
    assert second.terminate() == 0
