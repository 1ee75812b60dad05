"""Agents: a node that registers what it offers and answers the gateway's
requests.

An :class:`Agent` owns a :class:`Client` with role ``node``. On every
(re)connect it registers (``agent.register``: id, tools, models, method
patterns, capabilities), so a restarted gateway instance or a dropped
socket only pauses it. Each ``srv-N`` request runs its handler in its own
task with a :class:`RequestContext`:

* ``invoke`` (``node.invoke``, ``POST /tools/invoke``, a method the agent
  serves): the :class:`Tool` of that name (after a human's approval when
  ``needs_approval``), else the method handler;
* ``agent.run``: the run handler, whose yielded events stream to the
  session's members (``agent.event``);
* ``chat.send``: the chat handler; ``chat.completions``: the completion
  handler (streaming with ``ctx.progress({"delta": …})``).

What a handler returns is the answer; an :class:`RpcError` it raises is
the caller's error as is; any other exception becomes -32603.
``invoke.cancel`` / ``agent.cancel`` set ``ctx.cancelled``; so does a
dropped connection (the gateway has given the call up by then), except
for a run: its handler goes on, and once the agent is back (on any
instance, within the gateway's resume window) it takes the run back
(``agent.reattach``: when the instance it was served on died), its events
continue in the same session, and its answer ends the run
(``agent.finish``). A run that cannot be taken back is cancelled.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .client import Client, ServerRequest
from .errors import (
    ConnectionLostError,
    Forbidden,
    InternalError,
    MethodNotFound,
    RpcError,
    RpcTimeout,
)
from .types import Approval, Notification

log = logging.getLogger("switchyard.agent")

TAKE_BACK_WAIT = 120.0
"""How long a run whose connection dropped waits to be taken back."""

ToolHandler = Callable[[Any, "RequestContext"], Awaitable[Any]]
"""``async def handler(args, ctx) -> result``"""
MethodHandler = Callable[[Any, "RequestContext"], Awaitable[Any]]
"""``async def handler(params, ctx) -> result``"""
ChatHandler = Callable[[Any, "RequestContext"], Awaitable[Any]]
"""``async def handler(message, ctx) -> str | {"content": …}``"""
CompletionHandler = Callable[[dict[str, Any], "RequestContext"], Awaitable[Any]]
"""``async def handler(request, ctx) -> str | {"content": …} | chat.completion``"""
RunHandler = Callable[[str, "RequestContext"], AsyncIterator[Any] | Awaitable[Any]]
"""An async generator ``(task, ctx)`` yielding events (``RunEvent`` or
``(type, data)``) and optionally a final ``RunResult``; or a coroutine
function returning the result (events through ``await ctx.event(...)``)."""


@dataclass
class Tool:
    """A tool the agent offers: listed by ``tools.list``, called by
    ``node.invoke {command: name}`` or ``POST /tools/invoke``."""

    name: str
    description: str
    input_schema: dict[str, Any]
    """JSON Schema of the arguments (sent as ``parameters``)."""
    handler: ToolHandler
    needs_approval: bool = False
    """Ask a human (``approval.request``) before each call; refuse with
    -32003 unless approved."""
    approval_timeout: float = 25.0
    summary: Callable[[Any], str] | None = None
    """What approvers read; default ``"<name> <args as JSON>"``."""

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.input_schema}


@dataclass(frozen=True)
class RunEvent:
    """An event of a run: reaches the session's members as ``agent.event``."""

    type: str
    data: Any = None


@dataclass(frozen=True)
class RunResult:
    """Yielded last by a run handler: the run's result."""

    value: Any


@dataclass
class RequestContext:
    """What a handler knows about the request it serves, and what it can do."""

    id: str
    """The request's ``srv-N`` id."""
    method: str
    """``invoke``, ``agent.run``, ``chat.send`` or ``chat.completions``."""
    params: dict[str, Any]
    agent: Agent
    generation: int
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the caller cancels (``invoke.cancel``, ``agent.cancel``),
    times out, goes away, or this connection drops."""
    approval: Approval | None = None
    """The decision that let a ``needs_approval`` tool run."""
    taken_back: asyncio.Future[bool] | None = field(default=None, repr=False)
    """A run whose connection dropped: resolves True once it is taken
    back on the next connection (``agent.reattach``), False if it cannot
    be."""
    _reattaching: bool = field(default=False, repr=False)

    @property
    def client(self) -> Client:
        """The agent's connection, to call the gateway while serving."""
        return self.agent.client

    @property
    def caller(self) -> dict[str, Any]:
        """``{connId, identity, role, scopes, via?}`` of whoever called."""
        caller = self.params.get("caller")
        return caller if isinstance(caller, dict) else {}

    @property
    def session_id(self) -> str | None:
        sid = self.params.get("sessionId")
        return sid if isinstance(sid, str) else None

    @property
    def run_id(self) -> str | None:
        rid = self.params.get("runId")
        return rid if isinstance(rid, str) else None

    async def progress(self, data: Any) -> bool:
        """Report progress to the caller (``invoke.progress``); False when
        the request's connection is gone."""
        if not self.client.is_current(self.generation):
            return False
        try:
            await self.client.notify("invoke.progress", {"id": self.id, "data": data})
        except ConnectionLostError:
            return False
        return True

    async def event(self, type: str, data: Any = None) -> int | None:
        """Send an event of this run to the session's members
        (``agent.event``); its offset in the session's log, None when it
        was dropped (a cancelled run) or the connection dropped before the
        gateway answered (a run goes on once taken back). Waits until the
        gateway logged it."""
        if self.session_id is None:
            raise ValueError("event() is for agent.run and chat.send requests")
        if not await self.back():
            return None
        params = {"sessionId": self.session_id, "type": type, "data": data}
        try:
            reply = await self.client.call("agent.event", params)
        except ConnectionLostError:
            if self.method != "agent.run":
                raise
            # Sent as the connection dropped: logged or not, the run goes
            # on once taken back.
            log.info("switchyard: run %s: an event's fate is unknown (connection lost)", self.run_id)
            return None
        offset = reply.get("offset") if isinstance(reply, dict) else None
        return int(offset) if isinstance(offset, int) else None

    async def back(self) -> bool:
        """Wait (bounded) until a run whose connection dropped is taken
        back; True at once for one that never dropped."""
        if self.taken_back is None:
            return True
        try:
            return await asyncio.wait_for(asyncio.shield(self.taken_back), TAKE_BACK_WAIT)
        except asyncio.TimeoutError:
            return False

    async def request_approval(
        self,
        tool: str,
        args: Any = None,
        *,
        summary: str = "",
        timeout: float = 25.0,
    ) -> Approval:
        """Ask a human and wait for the decision (``approval.request`` then
        ``approval.wait``). Returns the decided record (check
        ``.approved``); raises :class:`RpcTimeout` when nobody decided in
        time or the request was cancelled meanwhile."""
        params: dict[str, Any] = {"tool": tool, "args": args, "summary": summary, "timeoutMs": int(timeout * 1000)}
        if self.session_id is not None:
            params["sessionId"] = self.session_id
        asked = await self.client.call("approval.request", params)
        approval_id = asked["approvalId"]
        waiting = asyncio.ensure_future(
            self.client.call(
                "approval.wait", {"approvalId": approval_id, "timeoutMs": int(timeout * 1000)}, timeout=timeout + 5.0
            )
        )
        cancelled = asyncio.ensure_future(self.cancelled.wait())
        try:
            await asyncio.wait({waiting, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
        if not waiting.done():
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            raise RpcTimeout(message="cancelled while waiting for approval", data={"approvalId": approval_id})
        return Approval.from_record(waiting.result())


class Agent:
    """An agent: registers under ``agent_id`` and serves requests until closed.

    ``async with Agent(url, token=..., agent_id="echo", tools=[...]) as agent:
    await agent.serve_forever()``. Capabilities follow from the handlers
    (``agent.run`` with ``run``, ``chat`` with ``chat``,
    ``chat.completions`` with ``completions``) plus ``capabilities``.
    Other keyword arguments go to :class:`Client`.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        token: str | None = None,
        api_key: str | None = None,
        password: str | None = None,
        agent_id: str,
        name: str | None = None,
        type: str = "agent",
        tools: Sequence[Tool] = (),
        models: Sequence[str] = (),
        methods: Mapping[str, MethodHandler] | None = None,
        run: RunHandler | None = None,
        chat: ChatHandler | None = None,
        completions: CompletionHandler | None = None,
        capabilities: Sequence[str] = (),
        max_concurrency: int | None = None,
        status: str | None = None,
        **client_options: Any,
    ) -> None:
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        if models and completions is None:
            raise ValueError("models need a completions handler")
        self.agent_id = agent_id
        self.name = name or agent_id
        self.type = type
        self.tools = {t.name: t for t in tools}
        self.models = list(models)
        self.methods = dict(methods or {})
        self._run = run
        self._chat = chat
        self._completions = completions
        caps = list(capabilities)
        for cap, handler in (("agent.run", run), ("chat", chat), ("chat.completions", completions)):
            if handler is not None and cap not in caps:
                caps.append(cap)
        self.capabilities = caps
        self.max_concurrency = max_concurrency
        self.status = status
        self.registration: dict[str, Any] | None = None
        """The registry entry the gateway answered last."""
        client_options.setdefault("client_name", self.name)
        self.client = Client(url, token=token, api_key=api_key, password=password, role="node", **client_options)
        self.client.add_restore_hook(self._register)
        self.client.add_disconnect_hook(self._connection_dropped)
        self.client.set_request_handler(self._serve)
        self.client.on("invoke.cancel", self._on_invoke_cancel)
        self.client.on("agent.cancel", self._on_agent_cancel)
        self.client.on("agent.deregistered", self._on_deregistered)
        self._running: dict[str, RequestContext] = {}

    def __repr__(self) -> str:
        return f"<switchyard.Agent {self.agent_id} {self.client!r}>"

    # -- lifecycle

    async def start(self) -> Agent:
        """Connect and register (raises as :meth:`Client.connect` does)."""
        await self.client.connect()
        return self

    async def serve_forever(self) -> None:
        """Serve until the client closes; raises the reason if it closed
        for good on its own (revoked, gave up reconnecting)."""
        reason = await self.client.wait_closed()
        if reason is not None:
            raise reason

    async def close(self) -> None:
        for ctx in self._running.values():
            ctx.cancelled.set()
        await self.client.close()

    async def __aenter__(self) -> Agent:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def in_flight(self) -> int:
        """Requests being served right now."""
        return len(self._running)

    # -- registration

    def registration_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "agentId": self.agent_id,
            "name": self.name,
            "type": self.type,
            "capabilities": self.capabilities,
            "models": self.models,
            "tools": [t.spec() for t in self.tools.values()],
            "methods": list(self.methods),
        }
        if self.max_concurrency is not None:
            params["maxConcurrency"] = self.max_concurrency
        if self.status is not None:
            params["status"] = self.status
        return params

    async def _register(self) -> None:
        self.registration = await self.client.call("agent.register", self.registration_params())
        for ctx in self._running.values():
            if ctx.taken_back is not None and not ctx.taken_back.done() and not ctx._reattaching:
                ctx._reattaching = True
                asyncio.ensure_future(self._take_back(ctx))

    async def _take_back(self, ctx: RequestContext) -> None:
        """``agent.reattach`` for a run whose connection dropped (the call
        waits while the gateway has not yet noticed a lost instance)."""
        assert ctx.taken_back is not None
        ok = False
        try:
            await self.client.call(
                "agent.reattach",
                {"sessionId": ctx.session_id, "runId": ctx.run_id},
                timeout=TAKE_BACK_WAIT,
            )
            ok = True
        except RpcError as e:
            log.warning("switchyard: run %s could not be taken back: %s", ctx.run_id, e.message)
        except Exception as e:  # connection lost again, closed, timed out
            log.warning("switchyard: run %s could not be taken back: %s", ctx.run_id, e)
        finally:
            ctx._reattaching = False
            if not ok:
                ctx.cancelled.set()
            if not ctx.taken_back.done():
                ctx.taken_back.set_result(ok)

    # -- serving

    async def _serve(self, request: ServerRequest) -> None:
        ctx = RequestContext(request.id, request.method, request.params, self, request.generation)
        self._running[request.id] = ctx
        try:
            result = await self._dispatch(ctx)
        except RpcError as e:
            await self._answer(request, ctx, error=e)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("switchyard: %s %s failed", request.method, _what(request))
            await self._answer(request, ctx, error=InternalError(data={"error": type(e).__name__}))
        else:
            try:
                json.dumps(result)
            except (TypeError, ValueError) as e:
                log.error("switchyard: %s answered something that is not JSON: %s", _what(request), e)
                await self._answer(request, ctx, error=InternalError(message="the answer is not JSON"))
            else:
                await self._answer(request, ctx, result=result)
        finally:
            self._running.pop(request.id, None)

    async def _answer(
        self, request: ServerRequest, ctx: RequestContext, result: Any = None, error: RpcError | None = None
    ) -> None:
        """Reply to the request; a run taken back on a later connection
        is ended with ``agent.finish`` instead."""
        if ctx.taken_back is None:
            await self.client.respond(request, result=result, error=error)
            return
        if not await ctx.back():
            return
        params: dict[str, Any] = {"sessionId": ctx.session_id, "runId": ctx.run_id}
        if error is not None:
            params["error"] = error.to_wire()
        else:
            params["result"] = result
        try:
            await self.client.call("agent.finish", params)
        except Exception as e:
            log.warning("switchyard: run %s could not be finished: %s", ctx.run_id, e)

    async def _dispatch(self, ctx: RequestContext) -> Any:
        p = ctx.params
        if ctx.method == "invoke":
            return await self._invoke(str(p.get("command", "")), p.get("params"), ctx)
        if ctx.method == "agent.run" and self._run is not None:
            return await self._run_task(str(p.get("task", "")), ctx)
        if ctx.method == "chat.send" and self._chat is not None:
            return await self._chat(p.get("message"), ctx)
        if ctx.method == "chat.completions" and self._completions is not None:
            return await self._completions(p, ctx)
        raise MethodNotFound(message=f"method not found: {ctx.method}")

    async def _invoke(self, command: str, args: Any, ctx: RequestContext) -> Any:
        handler = self.methods.get(command)
        if handler is not None:
            return await handler(args, ctx)
        tool = self.tools.get(command)
        if tool is not None:
            if tool.needs_approval:
                await self._approve(tool, args, ctx)
            return await tool.handler(args, ctx)
        for pattern, handler in self.methods.items():
            if pattern.endswith("*") and command.startswith(pattern[:-1]):
                return await handler(args, ctx)
        raise MethodNotFound(message=f"no tool or method {command!r}", data={"command": command})

    async def _approve(self, tool: Tool, args: Any, ctx: RequestContext) -> None:
        summary = tool.summary(args) if tool.summary else f"{tool.name} {json.dumps(args, sort_keys=True)}"
        decided = await ctx.request_approval(tool.name, args, summary=summary, timeout=tool.approval_timeout)
        ctx.approval = decided
        if not decided.approved:
            raise Forbidden(
                message=f"not approved: {decided.status}",
                data={"approvalId": decided.approval_id, "status": decided.status},
            )

    async def _run_task(self, task: str, ctx: RequestContext) -> Any:
        assert self._run is not None
        produced = self._run(task, ctx)
        if not inspect.isasyncgen(produced):
            return await produced  # type: ignore[misc]
        result: Any = None
        async for item in produced:
            if isinstance(item, RunResult):
                result = item.value
            elif isinstance(item, RunEvent):
                await ctx.event(item.type, item.data)
            elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                await ctx.event(item[0], item[1])
            else:
                raise TypeError(f"a run handler yields RunEvent, (type, data) or RunResult, not {type(item).__name__}")
        return result

    # -- cancellation

    def _on_invoke_cancel(self, note: Notification) -> None:
        params = note.params if isinstance(note.params, dict) else {}
        ctx = self._running.get(str(params.get("id")))
        if ctx is not None:
            ctx.cancelled.set()

    def _on_agent_cancel(self, note: Notification) -> None:
        params = note.params if isinstance(note.params, dict) else {}
        for ctx in self._running.values():
            if ctx.session_id == params.get("sessionId") and ctx.run_id in (None, params.get("runId")):
                ctx.cancelled.set()

    def _on_deregistered(self, note: Notification) -> None:
        log.warning("switchyard: agent deregistered by the gateway: %s", note.params)

    def _connection_dropped(self) -> None:
        # The gateway answers these calls' callers itself now; a run may be
        # taken back on the next connection.
        for ctx in self._running.values():
            if ctx.method == "agent.run" and ctx.run_id is not None and ctx.session_id is not None:
                if ctx.taken_back is None or ctx.taken_back.done():
                    ctx.taken_back = asyncio.get_running_loop().create_future()
            else:
                ctx.cancelled.set()


def _what(request: ServerRequest) -> str:
    if request.method == "invoke":
        return f"command {request.params.get('command')!r}"
    return request.id
