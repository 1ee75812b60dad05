"""An agent in a few lines: it registers capability ``chat.completions``
for model ``echo`` (and ``agent.run``, ``chat``), two tools, and answers:

- ``chat.completions`` (the OpenAI-compatible HTTP façade): echoes the
  last user message, streamed word by word when asked to stream;
- ``agent.run``: streams each word of the task as an ``agent.event``, then
  returns the whole text;
- ``chat.send``: replies ``echo: <message>``;
- ``invoke`` of tool ``echo`` (returns its arguments) and of tool
  ``delete_file``, a "dangerous" tool that first asks a human for an
  approval and only runs when approved.

    python examples/echo_agent.py ws://127.0.0.1:18789 <node token>

(or ``SWITCHYARD_URL`` / ``SWITCHYARD_TOKEN``). The token must be for role
``node``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from typing import Any

import switchyard as sy


def text(message: Any) -> str:
    """The text of a message that is a string or ``{content}``."""
    if isinstance(message, str):
        return message
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


async def completion(request: dict[str, Any], ctx: sy.RequestContext) -> Any:
    users = [m for m in request.get("messages") or [] if isinstance(m, dict) and m.get("role") == "user"]
    reply = f"echo: {text(users[-1]) if users else ''}"
    if request.get("stream") is True:
        for i, word in enumerate(reply.split(" ")):
            await ctx.progress({"delta": word if i == 0 else f" {word}"})
    return {"content": reply}


async def run(task: str, ctx: sy.RequestContext):  # type: ignore[no-untyped-def]
    for word in task.split():
        if ctx.cancelled.is_set():
            raise sy.RpcError(-32000, "cancelled")
        yield sy.RunEvent("token", {"text": word})
    yield sy.RunResult({"output": task})


async def chat(message: Any, ctx: sy.RequestContext) -> Any:
    return {"content": f"echo: {text(message)}"}


async def echo(args: Any, ctx: sy.RequestContext) -> Any:
    return args


async def delete_file(args: Any, ctx: sy.RequestContext) -> Any:
    # Runs only once a human approved (needs_approval below).
    # A real agent would delete the file here.
    assert ctx.approval is not None
    return {"deleted": args.get("path", ""), "approvedBy": ctx.approval.decided_by}


def echo_agent(url: str, token: str | None) -> sy.Agent:
    return sy.Agent(
        url,
        token=token,
        agent_id="echo",
        name="Echo",
        type="agent",
        capabilities=["chat.completions", "agent.run", "chat"],
        models=["echo"],
        max_concurrency=8,
        completions=completion,
        run=run,
        chat=chat,
        tools=[
            sy.Tool("echo", "Returns its arguments", {"type": "object"}, echo),
            sy.Tool(
                "delete_file",
                "Deletes a file (asks a human first)",
                {
                    "type": "object",
                    "properties": {"path": {"type": "string"}},
                    "required": ["path"],
                },
                delete_file,
                needs_approval=True,
                summary=lambda args: f"delete {args.get('path', '') if isinstance(args, dict) else ''}",
            ),
        ],
    )


async def main() -> None:
    args = sys.argv[1:]
    url = args[0] if args else os.environ.get("SWITCHYARD_URL", "ws://127.0.0.1:18789")
    token = args[1] if len(args) > 1 else os.environ.get("SWITCHYARD_TOKEN")
    async with echo_agent(url, token) as agent:
        print(f"registered: {agent.registration}", flush=True)
        agent.client.on("*", lambda note: print(f"notification: {note.method}", flush=True))
        await agent.serve_forever()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
