"""The client against one standalone gateway: authentication, calls and
their typed errors, pushes as callbacks and iterators, sessions."""

from __future__ import annotations

import asyncio

import pytest
from gateway import ADMIN, API_KEY, NODE, PASSWORD, WRITER, Gateway

import switchyard as sy

W = 10.0  # upper bound of every wait


async def test_connect_with_each_in_band_credential(standalone: Gateway) -> None:
    cases = [
        ({"token": WRITER}, "operator", ["operator.read", "operator.write"]),
        ({"api_key": API_KEY}, "operator", ["operator.read"]),
        ({"password": PASSWORD}, "operator", ["operator.read", "operator.write"]),
        ({"token": NODE, "role": "node"}, "node", []),
    ]
    for creds, role, scopes in cases:
        async with sy.Client(standalone.url, **creds) as client:  # type: ignore[arg-type]
            assert client.connected
            assert client.info is not None
            assert client.info.authenticated is True
            assert client.info.role == role
            assert sorted(client.info.scopes) == scopes
            assert client.info.node_id == "sy-solo"
            assert client.welcome["connId"] == client.info.conn_id
            pong = await client.call("ping")
            assert pong["pong"] is True
        assert client.closed and not client.connected


async def test_bad_credentials_are_refused_with_unauthorized(standalone: Gateway) -> None:
    client = sy.Client(standalone.url, token="not-a-valid-token-0123456789")
    with pytest.raises(sy.Unauthorized) as refused:
        await client.connect()
    assert refused.value.code == sy.ErrorCode.UNAUTHORIZED == -32000
    assert not client.connected
    with pytest.raises(sy.Unauthorized):
        await sy.Client(standalone.url, password="wrong horse").connect()
    # A client that never authenticated may only ping.
    async with sy.Client(standalone.url) as anonymous:
        assert anonymous.info is not None and anonymous.info.authenticated is False
        assert (await anonymous.call("ping"))["pong"] is True
        with pytest.raises(sy.Unauthorized):
            await anonymous.call("status")


async def test_credentials_never_go_in_the_url(standalone: Gateway) -> None:
    for url in (
        f"ws://127.0.0.1:{standalone.port}/ws?token={ADMIN}",
        f"ws://user:{ADMIN}@127.0.0.1:{standalone.port}/ws",
        f"http://127.0.0.1:{standalone.port}/ws",
    ):
        with pytest.raises(ValueError):
            sy.Client(url)
    with pytest.raises(ValueError):
        sy.Client(standalone.url, token=ADMIN, password=PASSWORD)
    assert ADMIN not in repr(sy.Client(standalone.url, token=ADMIN))


async def test_connect_error_when_nothing_listens() -> None:
    from gateway import free_port

    client = sy.Client(f"ws://127.0.0.1:{free_port()}/ws", token=ADMIN, connect_timeout=2)
    with pytest.raises(sy.ConnectError):
        await client.connect()


async def test_calls_raise_typed_errors(standalone: Gateway, uid: str) -> None:
    async with sy.Client(standalone.url, token=WRITER) as writer:
        status = await writer.call("status")
        assert status["nodeId"] == "sy-solo"

        with pytest.raises(sy.MethodNotFound) as e:
            await writer.call("no.such.method", {})
        assert e.value.code == -32601

        with pytest.raises(sy.InvalidParams) as e:
            await writer.call("system.presence", {"limit": 0})
        assert e.value.code == -32602 and e.value.field == "limit", e.value

        with pytest.raises(sy.NotFound) as e:
            await writer.call("session.get", {"sessionId": f"none-{uid}"})
        assert e.value.code == -32001

        with pytest.raises(sy.Forbidden) as e:
            await writer.call("clients.list")
        assert e.value.code == -32003

        with pytest.raises(sy.Unavailable) as e:
            await writer.invoke("anything", {}, capability=f"nobody-{uid}", timeout=2)
        assert e.value.code == -32005

        # Still usable after errors; the RpcError family is one hierarchy.
        with pytest.raises(sy.RpcError):
            await writer.call("no.such.method")
        assert (await writer.call("ping"))["pong"] is True


async def test_pushes_reach_callbacks_iterators_and_subscriptions(standalone: Gateway, uid: str) -> None:
    channel = f"public:news-{uid}"
    async with sy.Client(standalone.url, token=WRITER) as client:
        seen: list[sy.Notification] = []
        remove = client.on("notify", seen.append)
        async_seen: list[str] = []

        async def on_any(note: sy.Notification) -> None:
            async_seen.append(note.method)

        client.on("*", on_any)
        stream = client.notifications("notify")
        sub = await client.subscribe(channel)
        reply = await client.publish(channel, {"text": "hi"}, event="hello")
        assert reply["delivered"] == 1

        message = await sub.next(W)
        assert (message.channel, message.event, message.data) == (channel, "hello", {"text": "hi"})
        assert message.offset is None and message.timestamp > 0
        note = await stream.next(W)
        assert note.method == "notify" and note.params["data"] == {"text": "hi"}
        assert [n.params["channel"] for n in seen] == [channel]
        await asyncio.sleep(0.05)
        assert "notify" in async_seen and "presence.join" in async_seen

        remove()
        await sub.unsubscribe()
        await client.publish(channel, {"text": "again"})
        with pytest.raises(asyncio.TimeoutError):
            await stream.next(0.3)
        assert len(seen) == 1
        stream.close()


async def test_history_channel_offsets_and_recover(standalone: Gateway, uid: str) -> None:
    channel = f"feed:{uid}"
    async with sy.Client(standalone.url, token=WRITER) as client:
        for n in range(1, 4):
            assert (await client.publish(channel, n))["offset"] == n
        # Replay what came after offset 1, then live ones, no duplicate.
        sub = await client.subscribe(channel, recover=1)
        assert sub.recovered is not None
        assert {k: sub.recovered[k] for k in ("replayed", "latest", "complete")} == {
            "replayed": 2,
            "latest": 3,
            "complete": True,
        }
        assert isinstance(sub.recovered["epoch"], str)
        await client.publish(channel, 4)
        got = [await sub.next(W) for _ in range(3)]
        assert [(m.offset, m.data) for m in got] == [(2, 2), (3, 3), (4, 4)]
        assert sub.offset == 4
        latest = await client.subscribe(f"{channel}-b", recover="latest")
        assert latest.recovered is not None and latest.recovered["replayed"] == 0


async def test_sessions_create_join_send_history(standalone: Gateway, uid: str) -> None:
    async with sy.Client(standalone.url, token=WRITER) as owner, sy.Client(standalone.url, token=ADMIN) as admin:
        session = await owner.create_session(f"s-{uid}", meta={"topic": "t"})
        assert session.is_owner and session.resume_token
        joined = await admin.join_session(session.session_id)
        assert joined.record is not None and joined.record["ownerIdentity"] == "writer"

        assert await session.send("step", {"n": 1}) == 1
        assert await joined.send("step", {"n": 2}) == 2
        for s in (session, joined):
            events = [await s.next(W) for _ in range(2)]
            assert [(e.offset, e.event, e.data) for e in events] == [(1, "step", {"n": 1}), (2, "step", {"n": 2})]
            assert events[0].sender is not None and events[0].sender["identity"] == "writer"
        page = await joined.history()
        assert [e["offset"] for e in page["events"]] == [1, 2] and page["complete"] is True

        await session.close()
        with pytest.raises(StopAsyncIteration):
            await joined.__anext__()
        assert joined.closed_reason == "closed"


async def test_call_timeout_and_close(standalone: Gateway) -> None:
    client = await sy.Client(standalone.url, token=WRITER).connect()
    # approval.wait on an unknown id answers at once; a too short client
    # timeout on a call the server holds is a CallTimeoutError.
    with pytest.raises(sy.NotFound):
        await client.call("approval.wait", {"approvalId": "nope"})
    with pytest.raises(sy.CallTimeoutError):
        await client.call("agent.wait", {"sessionId": "nope", "timeoutMs": 5000}, timeout=0.0)
    await client.close()
    with pytest.raises(sy.ClientClosedError):
        await client.call("ping")


async def test_a_consumer_that_falls_behind_gets_queue_overflow(standalone: Gateway, uid: str) -> None:
    channel = f"public:flood-{uid}"
    async with sy.Client(standalone.url, token=WRITER) as client:
        sub = await client.subscribe(channel, queue_size=2)
        for n in range(4):
            await client.publish(channel, n)
        assert [(await sub.next(W)).data for _ in range(2)] == [0, 1]
        with pytest.raises(sy.QueueOverflowError):
            await sub.next(W)
        # The connection itself is unaffected.
        assert (await client.call("ping"))["pong"] is True


async def test_a_frame_over_the_gateway_limit_is_refused_before_sending(standalone: Gateway, uid: str) -> None:
    async with sy.Client(standalone.url, token=WRITER) as client:
        assert client.info is not None
        limit = client.info.raw["limits"]["maxPayload"]
        with pytest.raises(sy.FrameTooLargeError):
            await client.publish(f"public:{uid}", "x" * (limit + 1))
        # Nothing was sent: the connection is the same one, still up.
        conn_id = client.info.conn_id
        assert (await client.call("ping"))["pong"] is True
        assert client.reconnects == 0 and client.info.conn_id == conn_id
