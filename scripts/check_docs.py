"""Run what README.md and docs/agents.md tell a new user to run, as
written, and check what they say comes back.

- README "Run": the run command, in the background; the development token
  file must appear, and go when the gateway stops.
- README "A first session": each `>` line is sent over a WebSocket and each
  `<` line must match the next frame received (`presence.tick` aside).
  In a `<` line a string with `…` stands for any string, any number for any
  number, an object may hold more keys than shown, and `"…"` as the last
  element of an array stands for more elements.
- README "From the command line": each line, run by bash with `switchyard`
  on PATH and $TOKEN set, must exit 0 and print JSON.
- docs/agents.md "Run the example": the block runs in the background; the
  echo agent must register, and the call "from another shell" must print
  what the docs say.

Run by scripts/check-docs.sh (which builds the release binaries first).
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import websockets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 18789


def fail(message):
    print(f"check-docs: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def block_after(path, marker):
    """The first ```sh block after the line containing `marker`."""
    text = open(os.path.join(REPO, path)).read()
    at = text.find(marker)
    if at < 0:
        fail(f"{path}: no {marker!r}")
    match = re.search(r"```sh\n(.*?)```", text[at:], re.S)
    if not match:
        fail(f"{path}: no sh block after {marker!r}")
    return match.group(1)


def matches(expected, actual):
    if isinstance(expected, str) and "…" in expected:
        return isinstance(actual, str)
    if isinstance(expected, bool) or expected is None:
        return expected == actual
    if isinstance(expected, (int, float)):
        return isinstance(actual, (int, float)) and not isinstance(actual, bool)
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return False
        if expected and expected[-1] == "…":
            head = expected[:-1]
            return len(actual) >= len(head) and all(map(matches, head, actual))
        return len(expected) == len(actual) and all(map(matches, expected, actual))
    return expected == actual


class Gateway:
    """A shell block run in the background, in its own process group."""

    def __init__(self, script, env):
        self.proc = subprocess.Popen(
            ["bash", "-c", script], env=env, cwd=REPO, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(env["TMPDIR"], "gateway.log"), "w"),
        )

    def stop(self, within=20):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.time() + within
        while time.time() < deadline:
            if self.proc.poll() is not None:
                # The group's other members (cargo's child) too.
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.05)
        os.killpg(self.proc.pid, signal.SIGKILL)


def wait_for(what, check, within):
    deadline = time.time() + within
    while time.time() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    fail(f"{what} within {within} s")


def port_free():
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", PORT)) != 0


async def first_session(url, token):
    transcript = block_after("README.md", "## A first session")
    async with websockets.connect(url, open_timeout=10) as ws:
        async def next_frame():
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame.get("method") != "presence.tick":
                    return frame
        checked = 0
        for line in transcript.splitlines():
            if line.startswith("> "):
                await ws.send(line[2:].replace("<contents of the token file>", token))
            elif line.startswith("< "):
                expected = json.loads(line[2:])
                actual = await next_frame()
                if not matches(expected, actual):
                    fail(f"README first session: expected\n  {line[2:]}\ngot\n  {json.dumps(actual)}")
                checked += 1
        if checked < 5:
            fail(f"README first session: only {checked} frames checked")
        print(f"check-docs: README first session: {checked} frames as shown")


def run_lines(block, env, what):
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        if not command:
            continue
        out = subprocess.run(["bash", "-c", command], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            fail(f"{what}: `{command}` exited {out.returncode}: {out.stderr}")
        try:
            json.loads(out.stdout)
        except ValueError:
            fail(f"{what}: `{command}` printed no JSON: {out.stdout!r}")
        print(f"check-docs: {what}: `{command}` ok")


def call(env, *args):
    out = subprocess.run(["switchyard", "call", *args], env=env, capture_output=True,
                         text=True, timeout=30)
    return json.loads(out.stdout) if out.returncode == 0 else None


def main():
    if not port_free():
        fail(f"port {PORT} is in use; the documented commands need it")
    tmp = tempfile.mkdtemp(prefix="switchyard-docs-")
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    env = dict(os.environ, TMPDIR=tmp,
               PATH=os.path.join(target, "release") + os.pathsep + os.environ["PATH"])
    env = {k: v for k, v in env.items() if not k.startswith("SWITCHYARD_")}
    token_file = os.path.join(tmp, f"switchyard-{PORT}.token")

    run = block_after("README.md", "## Run").strip()
    gateway = Gateway(run, env)
    try:
        token = wait_for("the development token file", lambda: os.path.exists(token_file)
                         and open(token_file).read().strip(), 900)
        print(f"check-docs: README run command `{run}`: token file {token_file}")
        url = re.search(r"wscat -c (\S+)", block_after("README.md", "## A first session")).group(1)
        asyncio.run(first_session(url, token))
        run_lines(block_after("README.md", "From the command line"), dict(env, TOKEN=token),
                  "README command line")
    finally:
        gateway.stop()
    if os.path.exists(token_file):
        fail("the development token file outlived its gateway")

    example = block_after("docs/agents.md", "Run the example against a local gateway")
    agent = Gateway(example, env)
    try:
        wait_for("the echo agent registered",
                 lambda: (call(env, "agents.list") or {}).get("agents")
                 and any(a.get("agentId") == "echo" for a in call(env, "agents.list")["agents"]),
                 600)
        command = block_after("docs/agents.md", "from another shell").strip()
        out = subprocess.run(["bash", "-c", command], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        printed = json.loads(out.stdout or "null") if out.returncode == 0 else None
        if not isinstance(printed, dict) or printed.get("result") != {"x": 1} \
                or printed.get("nodeId") != "echo":
            fail(f"docs/agents.md: `{command}` printed {out.stdout!r} {out.stderr!r}")
        print(f"check-docs: docs/agents.md: the echo agent registered; `{command}` answered {printed['result']}")
    finally:
        agent.stop()


if __name__ == "__main__":
    main()
