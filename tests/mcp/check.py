"""The official `mcp` Python client (2.x) against two Switchyard instances.

An agent written with the Switchyard Python SDK (clients/python) serves
three tools from instance B. The MCP client, connected to instance A:

- in the stateless 2026-07-28 revision (the client's auto mode): lists the
  tools, calls one, gets progress, cancels a call by leaving (the agent
  sees the cancellation), and calls an approval-gated tool that an
  operator approves;
- in the 2025-11-25 revision (a session): every request goes to the other
  instance than the one before, a cancellation included; then instance A
  is SIGKILLed and the same session goes on through B alone.

It also times `tools/call` round trips (median of 50) with the agent on
the other instance and on the same one.

Usage: check.py <http A> <http B> <pid of A> <writer token> <node token> <admin token>
Prints PASS lines and ALL PASS; exits non-zero on the first failure.
"""

import asyncio
import os
import signal
import statistics
import sys
import time

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python", "src"))
import switchyard as sy  # noqa: E402

URL_A, URL_B, PID_A, WRITER, NODE, ADMIN = sys.argv[1:7]
cancelled = asyncio.Event()


def check(ok, what):
    if not ok:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    print(f"PASS {what}", flush=True)


async def echo(args, ctx):
    return args


async def slow(args, ctx):
    steps = int(args.get("steps", 3))
    for i in range(steps):
        if ctx.cancelled.is_set():
            cancelled.set()
            raise sy.RpcError(-32000, "cancelled")
        await ctx.progress({"progress": i + 1, "total": steps, "message": f"step {i + 1}"})
        try:
            await asyncio.wait_for(ctx.cancelled.wait(), timeout=0.1)
        except asyncio.TimeoutError:
            pass
    if ctx.cancelled.is_set():
        cancelled.set()
    return f"done {steps}"


async def guarded(args, ctx):
    return {"ok": True, "approvedBy": ctx.approval.decided_by}


def agent():
    obj = {"type": "object"}
    return sy.Agent(
        URL_B.replace("http", "ws") + "/ws",
        token=NODE,
        agent_id="pytools",
        tools=[
            sy.Tool("echo", "Returns its arguments", obj, echo),
            sy.Tool("slow", "Counts steps", {"type": "object", "properties": {"steps": {"type": "integer"}}}, slow),
            sy.Tool("guarded", "Asks a human first", obj, guarded, needs_approval=True),
        ],
    )


async def approver(client):
    """Approve every approval request, with a note."""
    async for note in client.notifications("approval.requested"):
        params = note.params if hasattr(note, "params") else note
        approval_id = params.get("approvalId") or params.get("approval", {}).get("approvalId")
        await client.resolve_approval(approval_id, True, note="fine by me")


class Alternating(httpx2.AsyncBaseTransport):
    """Sends each request to the next of `ports` in turn (no affinity);
    `only` pins them to one."""

    def __init__(self, ports):
        self.ports = ports
        self.turn = 0
        self.only = None
        self.inner = httpx2.AsyncHTTPTransport()
        self.seen = []

    async def handle_async_request(self, request):
        port = self.only or self.ports[self.turn % len(self.ports)]
        self.turn += 1
        self.seen.append(port)
        request.url = request.url.copy_with(port=port)
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        await self.inner.aclose()


def http_client(transport=None):
    return httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {WRITER}"},
        transport=transport,
        timeout=httpx2.Timeout(30.0, read=300.0),
    )


async def round_trips(url, n=50):
    async with http_client() as http:
        async with Client(streamable_http_client(url + "/mcp", http_client=http)) as client:
            await client.list_tools()
            times = []
            for i in range(n):
                start = time.perf_counter()
                result = await client.call_tool("echo", {"i": i})
                times.append((time.perf_counter() - start) * 1000)
                assert result.structured_content == {"i": i}, result
            return statistics.median(times), sorted(times)[int(n * 0.95) - 1]


async def modern():
    async with http_client() as http:
        async with Client(streamable_http_client(URL_A + "/mcp", http_client=http)) as client:
            check(client.protocol_version == "2026-07-28", f"auto mode speaks {client.protocol_version}")
            names = sorted(t.name for t in (await client.list_tools()).tools)
            check(names == ["echo", "guarded", "slow"], f"tools of the agent on B listed through A: {names}")
            result = await client.call_tool("echo", {"text": "hi"})
            check(result.structured_content == {"text": "hi"} and not result.is_error, "echo through A to B")
            seen = []

            async def on_progress(progress, total, message):
                seen.append((progress, total, message))

            result = await client.call_tool("slow", {"steps": 3}, progress_callback=on_progress)
            check(result.content[0].text == "done 3", f"slow answered: {result.content}")
            check([p for p, _, _ in seen] == [1, 2, 3] and seen[0][1] == 3, f"progress {seen}")
            cancelled.clear()
            with anyio.move_on_after(1.0):
                await client.call_tool("slow", {"steps": 100}, progress_callback=on_progress)
            with anyio.fail_after(5):
                await cancelled.wait()
            check(True, "leaving a call cancels it at the agent")
            result = await client.call_tool("guarded", {})
            check(
                not result.is_error and result.structured_content == {"ok": True, "approvedBy": "admin"},
                f"approval-gated tool approved by an operator: {result.structured_content or result.content}",
            )


async def legacy():
    a_port = int(URL_A.rsplit(":", 1)[1])
    b_port = int(URL_B.rsplit(":", 1)[1])
    transport = Alternating([a_port, b_port])
    async with http_client(transport) as http:
        async with Client(streamable_http_client(URL_A + "/mcp", http_client=http), mode="legacy") as client:
            check(client.protocol_version == "2025-11-25", f"legacy mode speaks {client.protocol_version}")
            for i in range(4):
                result = await client.call_tool("echo", {"n": i})
                check(result.structured_content == {"n": i}, f"session call {i} answered")
            check({a_port, b_port} <= set(transport.seen), f"requests went to both instances: {transport.seen}")
            cancelled.clear()
            with anyio.move_on_after(1.0):
                await client.call_tool("slow", {"steps": 100})
            with anyio.fail_after(5):
                await cancelled.wait()
            check(True, "notifications/cancelled on the other instance cancels the call")
            os.kill(int(PID_A), signal.SIGKILL)
            transport.only = b_port
            result = await client.call_tool("echo", {"after": "kill"})
            check(result.structured_content == {"after": "kill"}, "the session goes on after A is SIGKILLed")
            names = sorted(t.name for t in (await client.list_tools()).tools)
            check("echo" in names, "tools still listed in the same session")


async def main():
    async with agent() as served:
        check(served.registration is not None, "Python SDK agent registered on B")
        serve = asyncio.create_task(served.serve_forever())
        async with sy.Client(URL_A.replace("http", "ws") + "/ws", token=ADMIN) as operator:
            approving = asyncio.create_task(approver(operator))
            await modern()
            across = await round_trips(URL_A)
            same = await round_trips(URL_B)
            print(f"TIMING tools/call across instances: median {across[0]:.2f} ms, p95 {across[1]:.2f} ms", flush=True)
            print(f"TIMING tools/call same instance: median {same[0]:.2f} ms, p95 {same[1]:.2f} ms", flush=True)
            await legacy()
            approving.cancel()
        serve.cancel()
    print("ALL PASS", flush=True)


asyncio.run(main())
