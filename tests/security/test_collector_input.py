"""Bad input on the collector's gRPC port: the agent stream and the control API.

One real ``collector serve`` process (tokens on, a small receive limit, exporting
to the real InfluxDB) gets good input, then the whole corpus, then good input
again. Every bad input must get its own clear status, the process must live on
and serve, and what is stored must be exactly what the good input produced: the
journal's rows, its SQLite integrity, and the points in InfluxDB.

What the collector does with each kind of record (the policy these tests pin):

- a time outside [2001-01-01, now + 1 day] after clock correction, sequence 0,
  an empty pod UID, an unspecified phase, negative uncertainties: the batch is
  refused (INVALID_ARGUMENT naming the record, its sequence in the trailer so
  the agent sets it aside); nothing of it is stored.
- an unknown phase or source number (protobuf enums are open; a newer agent may
  send one): stored as received, because the journal is the raw record and a
  newer collector can read it, but never counted in a summary.
- an event of a run before the run's created time by more than its uncertainty
  (a clock that went wrong within the accepted window): stored, never counted.
- a resent sequence: acknowledged as a duplicate, the first copy kept.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import grpc

from rtbench.clock import wall_ns
from rtbench.influxd import LocalInfluxd
from rtbench.protocol import REJECTED_SEQUENCE_KEY
from rtbench.v1 import agent_pb2, control_pb2, control_pb2_grpc, events_pb2
from tests.collector.agent_client import StreamEnded, TestAgent, make_batch
from tests.collector.conftest import StartCollector
from tests.conftest import wait_until
from tests.security.wire import garbage_corpus, raw_exchange, raw_unary

AGENT_TOKEN = "agent-corpus-token"
CONTROL_TOKEN = "control-corpus-token"
GOOD_RUN = "run-good"
BAD_RUN = "run-bad"
MAX_MESSAGE = 65536
MAX_EVENTS = 500
CONTROL_METHODS = (
    "SyncClock",
    "RegisterRun",
    "RecordCreate",
    "FinishRun",
    "GetRunSummary",
    "ListRuns",
    "ListAgents",
)
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _meta(token: str | None) -> Any:
    return None if token is None else (("authorization", f"Bearer {token}"),)


async def _stream_status(address: str, agent_id: str, batch: agent_pb2.Batch) -> StreamEnded:
    """Connects as ``agent_id``, sends one batch, returns how the collector ended the stream."""
    async with TestAgent(address, agent_id, token=AGENT_TOKEN) as agent:
        try:
            await agent.send(batch)
        except StreamEnded as ended:
            return ended
        return await agent.ended_status()


async def _agent_status(address: str, token: str | None) -> grpc.StatusCode:
    # grpcio's client may report its own INTERNAL when a write races the server's
    # end of the stream (grpc/grpc#36066); that attempt is made again.
    for _ in range(5):
        agent = TestAgent(address, "token-probe", token=token)
        try:
            await agent.connect()
            await agent.send_all([make_batch(1, 1, run_id=BAD_RUN)])
            return grpc.StatusCode.OK
        except StreamEnded as ended:
            if "Internal error from Core" not in ended.details:
                code: grpc.StatusCode = ended.code
                return code
        finally:
            await agent.close()
    raise AssertionError("every attempt ended in the client library's INTERNAL error")


def _bad_batches(now: int) -> list[tuple[str, agent_pb2.Batch, str]]:
    """(name, batch, words the refusal must contain); every one must be refused whole."""
    cases: list[tuple[str, agent_pb2.Batch, str]] = []

    def case(name: str, words: str, **kw: Any) -> agent_pb2.Batch:
        batch = make_batch(kw.pop("sequence", 5), 3, run_id=BAD_RUN, **kw)
        cases.append((name, batch, words))
        return batch

    case("far-future", "outside", time_ns=now + 10 * 86_400 * 10**9)
    case("far-past", "outside", time_ns=631_152_000 * 10**9)  # 1990
    case("zero-time", "outside", time_ns=0)
    case("negative-time", "outside", time_ns=-(2**62))
    case("int64-max-time", "outside", time_ns=2**63 - 10)
    # A sane raw time whose clock offset throws it a century ahead.
    case("offset-overflow", "outside", offset_ns=2**62)
    case("sequence-zero", "sequence", sequence=0)
    b = case("negative-uncertainty", "uncertainty")
    b.events[1].uncertainty_ns = -5
    b = case("negative-clock-uncertainty", "uncertainty")
    b.clock.uncertainty_ns = -1
    b = case("empty-uid", "uid")
    b.events[2].pod.uid = ""
    b = case("unspecified-phase", "unspecified")
    b.events[0].phase = events_pb2.PHASE_UNSPECIFIED
    b = case("probe-empty-uid", "uid", probes=1)
    b.probes[0].pod.uid = ""
    b = case("sample-far-future", "outside", samples=1)
    b.samples[0].time_ns = now + 400 * 86_400 * 10**9
    b = make_batch(6, MAX_EVENTS + 1, run_id=BAD_RUN)
    cases.append(("too-many-records", b, "limit"))
    return cases


async def test_grpc_corpus(
    collector_process: StartCollector, influxd: LocalInfluxd, tmp_path: Path
) -> None:
    db = "security_corpus"
    influxd.create_database(db)
    proc = collector_process(
        "--listen", "127.0.0.1:0", "--journal", str(tmp_path / "journal.sqlite"),
        "--agent-token", AGENT_TOKEN, "--control-token", CONTROL_TOKEN,
        "--max-message-bytes", str(MAX_MESSAGE), "--max-batch-events", str(MAX_EVENTS),
        "--influx-url", influxd.url, "--influx-db", db, "--stats-interval", "0",
    )  # fmt: skip
    address = proc.listen
    channel = grpc.aio.insecure_channel(address)
    control = control_pb2_grpc.ControlServiceStub(channel)
    good = TestAgent(address, "good-agent", token=AGENT_TOKEN)
    try:
        # -- good input ------------------------------------------------------------
        created = wall_ns() - 10**9
        spec = control_pb2.RunSpec(run_id=GOOD_RUN, runtime_class="runc", replicas=10)
        meta = _meta(CONTROL_TOKEN)
        await control.RegisterRun(control_pb2.RegisterRunRequest(spec=spec), metadata=meta)
        await control.RecordCreate(
            control_pb2.RecordCreateRequest(run_id=GOOD_RUN, request_sent_ns=created),
            metadata=meta,
        )
        await good.connect()
        sent = [make_batch(seq, 40, agent="good-agent", run_id=GOOD_RUN) for seq in (1, 2)]
        await good.send_all(sent)
        summary_before = await control.GetRunSummary(
            control_pb2.GetRunSummaryRequest(run_id=GOOD_RUN, include_pods=True), metadata=meta
        )
        assert summary_before.phases

        # -- bytes that are not HTTP/2 or gRPC at all ------------------------------
        for name, data in garbage_corpus():
            raw_exchange(address, data)
            assert proc.process.poll() is None, f"collector died on {name}"

        # -- tokens ----------------------------------------------------------------
        assert await _agent_status(address, None) == grpc.StatusCode.UNAUTHENTICATED
        assert await _agent_status(address, "wrong") == grpc.StatusCode.UNAUTHENTICATED
        assert await _agent_status(address, CONTROL_TOKEN) == grpc.StatusCode.UNAUTHENTICATED
        for token in (None, "wrong", AGENT_TOKEN, ""):
            code, details = await raw_unary(
                channel, "/rtbench.v1.ControlService/ListRuns", b"", token
            )
            assert code == grpc.StatusCode.UNAUTHENTICATED, (token, code, details)
            assert "bearer token" in details
        basic = (("authorization", f"Basic {CONTROL_TOKEN}"),)
        try:
            await control.ListRuns(control_pb2.ListRunsRequest(), metadata=basic)
            raise AssertionError("a Basic scheme was accepted")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAUTHENTICATED

        # -- valid gRPC framing, invalid protobuf ----------------------------------
        not_protobuf = b"\xff\xff\xff\xff\x0f garbage"
        for method in CONTROL_METHODS:
            if method == "WatchProgress":
                continue
            code, details = await raw_unary(
                channel, f"/rtbench.v1.ControlService/{method}", not_protobuf, CONTROL_TOKEN
            )
            assert code == INVALID, (method, code, details)
            assert "malformed" in details, details
        stream = channel.stream_stream(
            "/rtbench.v1.AgentService/Connect",
            request_serializer=None,
            response_deserializer=None,
        )
        call = stream(iter([not_protobuf]), metadata=_meta(AGENT_TOKEN))
        try:
            async for _ in call:
                raise AssertionError("a reply to a malformed hello")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == INVALID and "malformed AgentMessage" in (exc.details() or "")
        # A good hello, then garbage.
        hello = agent_pb2.AgentMessage(hello=agent_pb2.Hello(agent_id="garbler", node="n"))
        call = stream(iter([hello.SerializeToString(), not_protobuf]), metadata=_meta(AGENT_TOKEN))
        try:
            async for _ in call:
                pass
            raise AssertionError("garbage after the hello was accepted")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == INVALID and "malformed AgentMessage" in (exc.details() or "")

        # -- oversized messages ----------------------------------------------------
        big = agent_pb2.AgentMessage(
            hello=agent_pb2.Hello(agent_id="big", node="n", agent_version="x" * 2 * MAX_MESSAGE)
        )
        call = stream(iter([big.SerializeToString()]), metadata=_meta(AGENT_TOKEN))
        try:
            async for _ in call:
                pass
            raise AssertionError("an oversized hello was accepted")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
        huge_spec = control_pb2.RunSpec(run_id="huge", image="i" * 2 * MAX_MESSAGE)
        code, _ = await raw_unary(
            channel,
            "/rtbench.v1.ControlService/RegisterRun",
            control_pb2.RegisterRunRequest(spec=huge_spec).SerializeToString(),
            CONTROL_TOKEN,
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED

        # -- hellos that are not right ---------------------------------------------
        for hello_msg, expected in (
            (agent_pb2.Hello(agent_id="", node="n"), INVALID),
            (agent_pb2.Hello(agent_id="a", node=""), INVALID),
            (agent_pb2.Hello(agent_id="a", node="n", protocol="v9"),
             grpc.StatusCode.FAILED_PRECONDITION),
        ):  # fmt: skip
            data = agent_pb2.AgentMessage(hello=hello_msg).SerializeToString()
            call = stream(iter([data]), metadata=_meta(AGENT_TOKEN))
            try:
                async for _ in call:
                    pass
                raise AssertionError(f"hello {hello_msg} accepted")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == expected, exc
        first_batch = agent_pb2.AgentMessage(batch=make_batch(1, 1, run_id=BAD_RUN))
        call = stream(iter([first_batch.SerializeToString()]), metadata=_meta(AGENT_TOKEN))
        try:
            async for _ in call:
                pass
            raise AssertionError("a batch before the hello was accepted")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == INVALID and "hello" in (exc.details() or "")

        # -- batches the collector refuses whole -----------------------------------
        for i, (name, batch, words) in enumerate(_bad_batches(wall_ns())):
            ended = await _stream_status(address, f"bad-agent-{i}", batch)
            assert ended.code == INVALID, (name, ended)
            assert words in ended.details, (name, ended.details)
            assert ended.trailer.get(REJECTED_SEQUENCE_KEY) == str(batch.sequence), name
            assert proc.process.poll() is None, f"collector died on {name}"

        # -- accepted but never counted: unknown enums, a time before the run -------
        odd = make_batch(3, 4, agent="good-agent", run_id=GOOD_RUN)
        odd.events[0].phase = 999  # type: ignore[assignment]
        odd.events[1].source = 999  # type: ignore[assignment]
        odd.events[1].phase = events_pb2.PHASE_FIRST_RESPONSE
        odd.events[2].time_ns = created - 3600 * 10**9
        odd.events[2].phase = events_pb2.PHASE_SCHEDULED
        odd.events[3].phase = 12345  # type: ignore[assignment]
        await good.send_all([odd])
        # A resend of sequence 1 with other content is a duplicate: the first copy stays.
        resent = make_batch(1, 5, agent="good-agent", run_id=BAD_RUN)
        await good.send(resent)
        await good.wait(lambda: good.acks.get(1) is True)

        # -- control API requests that make no sense --------------------------------
        async def control_code(method: str, request: Any) -> grpc.StatusCode:
            try:
                await getattr(control, method)(request, metadata=meta, timeout=30)
            except grpc.aio.AioRpcError as exc:
                code: grpc.StatusCode = exc.code()
                return code
            return grpc.StatusCode.OK

        reg = control_pb2.RegisterRunRequest
        rec = control_pb2.RecordCreateRequest
        assert await control_code("RegisterRun", reg()) == INVALID
        assert await control_code("RegisterRun", reg(spec=spec)) == grpc.StatusCode.ALREADY_EXISTS
        await control_code("RegisterRun", reg(spec=control_pb2.RunSpec(run_id=BAD_RUN)))
        assert await control_code("RecordCreate", rec(run_id="nope", request_sent_ns=created)) == (
            grpc.StatusCode.NOT_FOUND
        )
        for sent_ns, offset in (
            (wall_ns() + 10 * 86_400 * 10**9, 0),  # far future
            (631_152_000 * 10**9, 0),  # 1990
            (-5, 0),
            (2**63 - 1, 2**63 - 1),  # overflows int64 once corrected
            (created, -(2**63)),
        ):
            request = rec(run_id=BAD_RUN, request_sent_ns=sent_ns)
            request.rtctl_clock.offset_ns = offset
            assert await control_code("RecordCreate", request) == INVALID, (sent_ns, offset)
        fin = control_pb2.FinishRunRequest
        for state in (999, -3, control_pb2.RUN_STATE_RUNNING):
            assert await control_code("FinishRun", fin(run_id=BAD_RUN, state=state)) == INVALID  # type: ignore[arg-type]
        not_found = grpc.StatusCode.NOT_FOUND
        summary_req = control_pb2.GetRunSummaryRequest(run_id="nope")
        assert await control_code("GetRunSummary", summary_req) == not_found
        watch = control.WatchProgress(
            control_pb2.WatchProgressRequest(run_id="nope"), metadata=meta
        )
        try:
            async for _ in watch:
                raise AssertionError("progress of an unknown run")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == not_found

        # -- afterwards: alive, serving, nothing corrupted --------------------------
        assert proc.process.poll() is None
        last = make_batch(4, 40, agent="good-agent", run_id=GOOD_RUN)
        await good.send_all([last])
        summary_after = await control.GetRunSummary(
            control_pb2.GetRunSummaryRequest(run_id=GOOD_RUN, include_pods=True), metadata=meta
        )
        _assert_summaries_agree(summary_before, summary_after, last)
        accepted = [*sent, odd, last]
        _assert_journal_holds(proc.journal, accepted)
        await _assert_influx_holds(influxd, db, accepted)
    finally:
        await good.close()
        await channel.close()
    assert proc.terminate() == 0
    assert "Traceback" not in proc.stderr(), proc.stderr()


def _assert_summaries_agree(
    before: control_pb2.RunSummary, after: control_pb2.RunSummary, last: agent_pb2.Batch
) -> None:
    """The odd batch changed nothing: after = before + the last good batch's events."""
    known = set(events_pb2.Phase.values())
    assert all(s.phase in known for s in after.phases)
    for timeline in after.pods:
        for t in timeline.phases:
            assert t.phase in known and t.source in set(events_pb2.Source.values())
            assert t.latency_ns >= 0, t
    counts_before = {s.phase: s.count for s in before.phases}
    # Every pod already had each of these phases from batches 1-2 (10 pods, 8 phases, 80
    # events); the last batch only adds later duplicates, which never win.
    assert counts_before == {s.phase: s.count for s in after.phases}
    assert [s.min_ns for s in before.phases] == [s.min_ns for s in after.phases]
    assert len(last.events) == 40


def _assert_journal_holds(path: Path, accepted: list[agent_pb2.Batch]) -> None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        keys = sorted(
            row[0]
            for row in conn.execute(
                "SELECT json_extract(attributes, '$.key') FROM events ORDER BY id"
            )
        )
        expected = sorted(ev.attributes["key"] for b in accepted for ev in b.events)
        assert keys == expected
        batches = conn.execute(
            "SELECT agent_id, sequence FROM batches ORDER BY sequence"
        ).fetchall()
        assert batches == [("good-agent", b.sequence) for b in accepted]
        assert conn.execute(
            "SELECT count(*) FROM events WHERE run_id = ?", (BAD_RUN,)
        ).fetchone() == (0,)
        for table in ("samples", "probes"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    finally:
        conn.close()


async def _assert_influx_holds(
    influxd: LocalInfluxd, db: str, accepted: list[agent_pb2.Batch]
) -> None:
    expected = sum(len(b.events) for b in accepted)

    def exported() -> int:
        rows = influxd.query("SELECT count(uid) FROM pod_phase", db=db)
        series = rows[0].get("series") or [{"values": [[0, 0]]}]
        return int(series[0]["values"][0][1])

    await wait_until(lambda: exported() >= expected, within=120, every=0.2, what="export")
    assert exported() == expected
    bad = influxd.query(f"SELECT count(uid) FROM pod_phase WHERE run_id = '{BAD_RUN}'", db=db)
    assert not bad[0].get("series")
