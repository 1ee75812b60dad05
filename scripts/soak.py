#!/usr/bin/env python3
"""Soak: Redis and three instances under steady traffic while instances are
SIGKILLed or SIGTERMed and restarted and Redis is restarted empty, with
the invariants checked as it runs. Run through scripts/soak.sh.

Traffic and invariants:
- sessions: a writer sends `session.send` every 20 ms; an invited reader
  (another identity) follows live and, after every reconnect, re-joins and
  reads `session.history` from the newest offset it has. Every offset the
  writer had acknowledged must reach the reader, unless the server said
  events were lost (`complete: false`, or the session is gone after Redis
  lost its state): no silent gap.
- approvals: a node asks for an approval every second and two approvers on
  different instances resolve it at once: never both win.
- runs: an agent serves `agent.run` (three `agent.event`s, then its
  answer) and, after losing its connection, takes the runs it was working
  on back on any instance (`agent.reattach`, then `agent.finish`); a
  caller starts one run at a time and waits for its end (`agent.wait`),
  from whichever instance it is on, following a run lost with its agent's
  instance until its agent takes it back or the resume window passes. A
  run record gone after Redis lost its state (restarted empty, or the
  run started within the fsync window before a crash) is a stated loss
  (-32001), counted. Every run must end — completed with
  the agent's answer, or with a stated error — within node_ttl, the
  resume window and a margin: nothing waits forever.
- presence: when nothing was disrupted for a while, `system.presence`
  counts exactly the driver's open connections (within node_ttl).
- memory: each instance's RSS after warm-up and at the end.

With SOAK_REDIS=aof (scripts/chaos.sh) Redis keeps an append-only file
(`appendfsync everysec`, as the shipped deployments run it) and the Redis
fault is SIGKILL and a restart from that file instead of an empty restart;
then every decided approval is read back after each crash and must keep
its decision, except one acknowledged within the fsync window (1 s) before
a crash, which everysec may lose (counted, not a violation).
"""
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time

import websockets

SECONDS = min(int(os.environ.get("SOAK_SECONDS", "300")), 600)
# "aof": Redis persists, and crashes instead of restarting empty.
DURABLE = os.environ.get("SOAK_REDIS", "") == "aof"
# What `appendfsync everysec` may lose, with scheduling slack.
FSYNC_WINDOW = 1.5
NODE_TTL_MS = 3000
QUIET_FOR_PRESENCE = NODE_TTL_MS / 1000 * 2 + 3
# What a lost connection (or an instance going away) raises.
LOST = (ConnectionError, OSError, asyncio.TimeoutError, websockets.WebSocketException)
RESUME_WINDOW_MS = 30000
# The longest a run may stay unended: its loss noticed, the window to
# take it back, and a margin.
RUN_DEADLINE = (NODE_TTL_MS + RESUME_WINDOW_MS) / 1000 + 15
RUN_EVENTS = 3


def log(*parts):
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, binary):
        self.bin = binary
        self.dir = tempfile.mkdtemp(prefix="switchyard-soak-")
        self.redis_port = free_port()
        self.ports = [free_port() for _ in range(3)]
        self.secret = "soak-jwt-secret-" + os.urandom(16).hex()
        self.redis = None
        self.procs = [None, None, None]
        self.last_disruption = time.monotonic()
        # When Redis was killed (monotonic), in durable mode.
        self.redis_crashes = []

    def start_redis(self):
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--save", "", "--dir", self.dir]
            + (["--appendonly", "yes", "--appendfsync", "everysec"] if DURABLE
               else ["--appendonly", "no"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(300):
            if subprocess.run(["redis-cli", "-p", str(self.redis_port), "ping"],
                              capture_output=True, text=True).stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise SystemExit("redis did not start")

    def env(self, i):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        env.update({
            "SWITCHYARD_PORT": str(self.ports[i]),
            "SWITCHYARD_BIND": "loopback",
            "SWITCHYARD_INSTANCE_ID": f"soak-{i + 1}",
            "SWITCHYARD_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}",
            "SWITCHYARD_JWT_SECRET": self.secret,
            "SWITCHYARD_LIMITS__NODE_TTL_MS": str(NODE_TTL_MS),
            "SWITCHYARD_LIMITS__DRAIN_DEADLINE_MS": "2000",
            "SWITCHYARD_LIMITS__RESUME_WINDOW_MS": str(RESUME_WINDOW_MS),
            "SWITCHYARD_LOG": "warn",
        })
        return env

    def start(self, i):
        out = open(os.path.join(self.dir, f"soak-{i + 1}.log"), "ab")
        self.procs[i] = subprocess.Popen([self.bin], env=self.env(i), stdout=out, stderr=out)

    def wait_up(self, i, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.ports[i]), 0.2):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    def live(self):
        return [i for i, p in enumerate(self.procs) if p and p.poll() is None]

    def token(self, sub, role="operator", scopes=()):
        args = [self.bin, "token", "--sub", sub, "--role", role, "--ttl", "7200"]
        for s in scopes:
            args += ["--scope", s]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
        env["SWITCHYARD_JWT_SECRET"] = self.secret
        return subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout.strip()

    def rss_kib(self, i):
        p = self.procs[i]
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (OSError, AttributeError):
            return None

    def stop_all(self):
        for p in self.procs + [self.redis]:
            if p and p.poll() is None:
                p.kill()
                p.wait()


class RpcError(Exception):
    def __init__(self, error):
        super().__init__(error.get("message"))
        self.code = error.get("code")
        self.error = error


class Conn:
    """One JSON-RPC WebSocket connection; pushes go to `on_push`, requests
    from the server to `on_request` (the whole message)."""

    def __init__(self, ws, on_push=None, on_request=None):
        self.ws = ws
        self.on_push = on_push or (lambda m, p: None)
        self.on_request = on_request
        self.next_id = 1
        self.waiting = {}
        self.reader = asyncio.create_task(self.read())
        self.closed = asyncio.Event()

    @classmethod
    async def open(cls, cluster, token, on_push=None, avoid=None, on_request=None):
        live = [i for i in cluster.live() if i != avoid] or cluster.live()
        if not live:
            raise ConnectionError("no instance up")
        i = random.choice(live)
        ws = await asyncio.wait_for(
            websockets.connect(f"ws://127.0.0.1:{cluster.ports[i]}/ws?token={token}",
                               max_size=2 ** 22, open_timeout=3), 4)
        conn = cls(ws, on_push, on_request)
        conn.instance = i
        return conn

    async def read(self):
        try:
            async for text in self.ws:
                msg = json.loads(text)
                if "method" in msg and "id" in msg and self.on_request:
                    self.on_request(self, msg)
                elif "method" in msg:
                    self.on_push(msg["method"], msg.get("params") or {})
                elif msg.get("id") in self.waiting:
                    self.waiting.pop(msg["id"]).set_result(msg)
        except Exception:
            pass
        finally:
            self.closed.set()
            for f in self.waiting.values():
                if not f.done():
                    f.set_exception(ConnectionError("closed"))
            self.waiting.clear()

    async def call(self, method, params=None, timeout=5):
        if self.closed.is_set():
            raise ConnectionError("closed")
        rid = self.next_id
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.waiting[rid] = fut
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                                       "params": params or {}}))
        msg = await asyncio.wait_for(fut, timeout)
        if "error" in msg:
            raise RpcError(msg["error"])
        return msg["result"]

    async def answer(self, request_id, result):
        if self.closed.is_set():
            raise ConnectionError("closed")
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}))

    async def close(self):
        await self.ws.close()


async def drop(conn):
    """Close `conn` if it is still open (a connection given up on must not
    linger on the server, where presence counts it)."""
    if conn is not None:
        try:
            await asyncio.wait_for(conn.close(), 2)
        except Exception:
            pass
    return None


class Stats:
    def __init__(self):
        self.violations = []
        self.counts = {}
        # Approval id → (acknowledged decision, when), in durable mode.
        self.decided = {}

    def count(self, key, n=1):
        self.counts[key] = self.counts.get(key, 0) + n

    def violate(self, what):
        log("VIOLATION:", what)
        self.violations.append(what)


async def sessions(cluster, stats, stop, tokens):
    """Writer and invited reader; see the module docs."""
    acked, seen, signaled = {}, {}, set()
    state = {"session": None, "token": None, "hole": False}

    def on_event(method, params):
        if method == "session.event" and params.get("sessionId") == state["session"]:
            offsets = seen.setdefault(params["sessionId"], {})
            if offsets and params["offset"] > max(offsets) + 1:
                state["hole"] = True
            offsets[params["offset"]] = params.get("data")

    async def writer():
        conn, n = None, 0
        while not stop.is_set():
            try:
                if conn is None or conn.closed.is_set():
                    conn = await Conn.open(cluster, tokens["writer"])
                    if state["session"]:
                        try:
                            await conn.call("session.resume", {"sessionId": state["session"],
                                                               "resumeToken": state["token"], "offset": 0})
                            stats.count("writer resumes")
                        except RpcError as e:
                            log(f"session {state['session']} not resumable ({e.code} {e}): a new one")
                            signaled.add(state["session"])
                            state["session"] = None
                    if not state["session"]:
                        sid = f"soak-{int(time.time() * 1000)}"
                        r = await conn.call("session.create", {"sessionId": sid, "invite": ["reader"],
                                                               "maxMembers": 10})
                        state["session"], state["token"] = sid, r["resumeToken"]
                        stats.count("sessions created")
                n += 1
                r = await conn.call("session.send", {"sessionId": state["session"], "event": "tick",
                                                     "data": n}, timeout=3)
                acked.setdefault(state["session"], {})[r["offset"]] = n
                await asyncio.sleep(0.02)
            except LOST:
                conn = await drop(conn)
                await asyncio.sleep(0.2)
            except RpcError as e:
                stats.count(f"send error {e.code}")
                if e.code in (-32001, -32003):
                    signaled.add(state["session"])
                    state["session"] = None
                await asyncio.sleep(0.2)
        if conn:
            await conn.close()

    def first_gap(sid):
        """The offset before the first one missing (after the oldest seen):
        a catch-up reads from there, not from the newest seen."""
        offsets = seen.get(sid)
        if not offsets:
            return 0
        o = min(offsets)
        while o + 1 in offsets:
            o += 1
        return o

    async def catch_up(conn, sid, since=None):
        """Read the history from `since` (default: the first gap)."""
        since = first_gap(sid) if since is None else since
        while True:
            h = await conn.call("session.history", {"sessionId": sid, "since": since, "limit": 1000})
            if not h["complete"]:
                signaled.add(sid)
            for e in h["events"]:
                seen.setdefault(sid, {})[e["offset"]] = e.get("data")
                since = max(since, e["offset"])
            if not h["more"]:
                return {"since": since, "latest": h["latest"], "complete": h["complete"]}

    async def reader():
        conn, joined = None, None
        give_up = None
        while True:
            if stop.is_set():
                give_up = give_up or time.monotonic() + 10
                if joined == state["session"] or time.monotonic() > give_up:
                    break
            try:
                if conn is None or conn.closed.is_set():
                    conn = await Conn.open(cluster, tokens["reader"], on_event)
                    joined = None
                    stats.count("reader connects")
                sid = state["session"]
                if sid and joined != sid:
                    # Nothing read of this session yet: live frames may
                    # arrive between the join and the catch-up, so the
                    # first catch-up reads from the start, not the gap.
                    fresh = not seen.get(sid)
                    await conn.call("session.join", {"sessionId": sid})
                    joined = sid
                    await catch_up(conn, sid, 0 if fresh else None)
                elif sid and state["hole"]:
                    # A live frame skipped offsets: read what was missed.
                    state["hole"] = False
                    stats.count("reader holes caught up")
                    await catch_up(conn, sid)
                await asyncio.sleep(0.1)
            except LOST:
                conn = await drop(conn)
                await asyncio.sleep(0.2)
            except RpcError as e:
                if e.code == -32001:
                    signaled.add(state["session"])
                stats.count(f"reader error {e.code}")
                await asyncio.sleep(0.2)
        return conn

    w = asyncio.create_task(writer())
    r = asyncio.create_task(reader())
    await w
    await asyncio.sleep(2)
    conn = await r
    # Final catch-up of the current session, then the verdict.
    if conn and state["session"] and not conn.closed.is_set():
        try:
            log("final catch-up:", await catch_up(conn, state["session"]))
        except Exception as e:
            log("final catch-up failed:", repr(e))
    else:
        log("no final catch-up: the reader has no open connection")
    for sid, acks in acked.items():
        offsets = set(acks)
        got = seen.get(sid, {})
        missing = offsets - set(got)
        stats.count("events acknowledged", len(offsets))
        stats.count("events seen", len(offsets & set(got)))
        # An offset names one event: the reader's event at an offset must
        # be the one the writer was told got it.
        reused = [o for o in offsets & set(got) if got[o] != acks[o]]
        if reused:
            stats.violate(f"session {sid}: {len(reused)} offsets name two events "
                          f"({min(reused)}..{max(reused)})")
        if missing and sid not in signaled:
            stats.violate(f"session {sid}: {len(missing)} acknowledged events never reached the "
                          f"reader and no loss was signaled ({min(missing)}..{max(missing)}; "
                          f"acknowledged up to {max(offsets)}, seen up to "
                          f"{max(got, default=0)})")
        elif missing:
            stats.count("events lost with a signal", len(missing))


async def approvals(cluster, stats, stop, tokens):
    node = a1 = a2 = None
    while not stop.is_set():
        try:
            if node is None or node.closed.is_set():
                node = await Conn.open(cluster, tokens["node"])
            if a1 is None or a1.closed.is_set():
                a1 = await Conn.open(cluster, tokens["approver1"])
            if a2 is None or a2.closed.is_set():
                a2 = await Conn.open(cluster, tokens["approver2"], avoid=a1.instance)
            r = await node.call("approval.request", {"tool": "soak", "summary": "soak",
                                                     "timeoutMs": 60000})
            aid = r["approvalId"]
            outcomes = await asyncio.gather(
                a1.call("approval.resolve", {"approvalId": aid, "decision": "approve"}),
                a2.call("approval.resolve", {"approvalId": aid, "decision": "deny"}),
                return_exceptions=True)
            wins = sum(1 for o in outcomes if not isinstance(o, BaseException))
            codes = [o.code for o in outcomes if isinstance(o, RpcError)]
            for o in outcomes:
                if not isinstance(o, BaseException):
                    stats.decided[aid] = (o["status"], time.monotonic())
            if wins > 1:
                stats.violate(f"approval {aid} resolved twice")
            elif wins == 1 and codes == [-32007]:
                stats.count("approvals resolved once")
            else:
                stats.count("approvals disrupted")
            await asyncio.sleep(1)
        except LOST:
            node, a1, a2 = await drop(node), await drop(a1), await drop(a2)
            await asyncio.sleep(0.3)
        except RpcError as e:
            stats.count(f"approval error {e.code}")
            await asyncio.sleep(0.3)
    for conn in (node, a1, a2):
        await drop(conn)


async def runs(cluster, stats, stop, tokens):
    """Agent runs across dead instances; see the module docs."""
    working = {}  # run id -> session id: runs the agent has not answered
    tasks = set()
    caller_done = asyncio.Event()

    def answer_of(run_id):
        return {"events": RUN_EVENTS, "runId": run_id}

    async def work(conn, sid, rid, request_id):
        """Three events, then the answer: the reply to the `agent.run`
        request, or `agent.finish` for a run taken back."""
        try:
            for i in range(RUN_EVENTS):
                await asyncio.sleep(0.1)
                try:
                    await conn.call("agent.event", {"sessionId": sid, "type": "delta",
                                                    "data": {"i": i}}, timeout=3)
                except RpcError as e:
                    stats.count(f"run event error {e.code}")
            if request_id is not None:
                await conn.answer(request_id, answer_of(rid))
            else:
                await conn.call("agent.finish", {"sessionId": sid, "runId": rid,
                                                 "result": answer_of(rid)}, timeout=5)
            working.pop(rid, None)
        except LOST:
            pass  # still in `working`: taken back after the reconnect
        except RpcError as e:
            stats.count(f"run finish error {e.code}")
            working.pop(rid, None)

    def start(conn, sid, rid, request_id):
        task = asyncio.create_task(work(conn, sid, rid, request_id))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_request(conn, msg):
        if msg.get("method") == "agent.run":
            p = msg.get("params") or {}
            working[p["runId"]] = p["sessionId"]
            start(conn, p["sessionId"], p["runId"], msg["id"])

    async def agent():
        conn = None
        while not caller_done.is_set():
            try:
                if conn is None or conn.closed.is_set():
                    conn = await Conn.open(cluster, tokens["node"], on_request=on_request)
                    await conn.call("agent.register", {"agentId": "soak-agent",
                                                       "capabilities": ["agent.run"]})
                    for rid, sid in list(working.items()):
                        try:
                            await conn.call("agent.reattach", {"sessionId": sid, "runId": rid},
                                            timeout=NODE_TTL_MS * 3 / 1000)
                            stats.count("runs taken back")
                            start(conn, sid, rid, None)
                        except RpcError as e:
                            stats.count(f"take-back refused {e.code}")
                            working.pop(rid, None)
                await asyncio.sleep(0.2)
            except LOST:
                conn = await drop(conn)
                await asyncio.sleep(0.3)
            except RpcError as e:
                stats.count(f"agent error {e.code}")
                conn = await drop(conn)
                await asyncio.sleep(0.3)
        await drop(conn)

    def ended(record, run_id):
        status = record.get("status")
        if status == "completed":
            if record.get("result") != answer_of(record.get("runId")):
                stats.violate(f"run {run_id} completed with {record.get('result')!r}, "
                              "not its agent's answer")
            else:
                stats.count("runs completed")
                if record.get("attached"):
                    stats.count("runs completed after a take-back")
        else:
            reason = ((record.get("error") or {}).get("data") or {}).get("reason", "")
            stats.count(f"runs ended {status} {reason}".rstrip())

    async def caller():
        conn, session, current = None, None, None  # current: (run id or None, started)
        while not stop.is_set() or current:
            if current and time.monotonic() - current[1] > RUN_DEADLINE:
                stats.violate(f"run {current[0]} on {session[0]} not ended "
                              f"{RUN_DEADLINE:.0f} s after it started")
                current = None
                session = None
            try:
                if conn is None or conn.closed.is_set():
                    conn = await Conn.open(cluster, tokens["writer"])
                    if session:
                        try:
                            await conn.call("session.resume", {"sessionId": session[0],
                                                               "resumeToken": session[1], "offset": 0})
                        except RpcError as e:
                            log(f"run session {session[0]} not resumable ({e.code} {e})")
                            stats.count(f"run sessions lost {e.code}")
                            session, current = None, None
                if session is None:
                    if stop.is_set():
                        break
                    sid = f"runs-{int(time.time() * 1000)}"
                    r = await conn.call("session.create", {"sessionId": sid})
                    session = (sid, r["resumeToken"])
                if current is None:
                    if stop.is_set():
                        break
                    try:
                        r = await conn.call("agent.run", {"sessionId": session[0], "task": "soak",
                                                          "agentId": "soak-agent",
                                                          "timeoutMs": 600000}, timeout=10)
                        current = (r["runId"], time.monotonic())
                        stats.count("runs started")
                    except RpcError as e:
                        if e.code != -32007:
                            raise
                        # A run whose start was answered to a lost
                        # connection holds the session: wait for it.
                        current = (None, time.monotonic())
                        stats.count("runs adopted")
                try:
                    record = await conn.call("agent.wait", {"sessionId": session[0],
                                                            "timeoutMs": 2000}, timeout=5)
                except RpcError as e:
                    if e.code == -32006:
                        continue
                    if e.code == -32001 and any(c >= current[1] - FSYNC_WINDOW
                                                for c in cluster.redis_crashes):
                        # Redis lost it (restarted empty, or its start
                        # within the fsync window): a stated loss.
                        stats.count("runs lost with Redis's state")
                        session, current = None, None
                        continue
                    raise
                if current[0] is not None and record.get("runId") != current[0]:
                    stats.violate(f"agent.wait on {session[0]} answered run {record.get('runId')}, "
                                  f"not {current[0]}")
                lost = ((record.get("error") or {}).get("data") or {})
                if lost.get("reason") == "instance_lost" and \
                        time.time() * 1000 < lost.get("resumableUntil", 0):
                    # Its agent may take it back meanwhile: follow it.
                    await asyncio.sleep(0.5)
                    continue
                ended(record, current[0])
                current = None
            except LOST:
                conn = await drop(conn)
                await asyncio.sleep(0.3)
            except RpcError as e:
                stats.count(f"run error {e.code}")
                if e.code == -32001 and current is None:
                    session = None  # lost with Redis's state: a new one
                await asyncio.sleep(0.3)
        await drop(conn)
        caller_done.set()

    await asyncio.gather(agent(), caller())
    for task in list(tasks):
        task.cancel()


async def decisions(cluster, stats, stop, tokens):
    """Durable mode: after each Redis crash, every decision acknowledged so
    far reads back unchanged (approval.wait answers a decided record at
    once), unless it was acknowledged within the fsync window before a
    crash."""
    checked_crashes = 0
    reader = None
    while not stop.is_set():
        try:
            # Held for the whole run: presence counts it (one of the
            # driver's connections).
            if reader is None or reader.closed.is_set():
                reader = await Conn.open(cluster, tokens["approver1"])
        except LOST:
            reader = await drop(reader)
            await asyncio.sleep(0.3)
            continue
        await asyncio.sleep(2)
        if len(cluster.redis_crashes) == checked_crashes:
            continue
        try:
            crashes = list(cluster.redis_crashes)
            for aid, (status, acked) in list(stats.decided.items()):
                try:
                    record = await reader.call("approval.wait",
                                               {"approvalId": aid, "timeoutMs": 1000})
                    now_status = record["status"]
                except RpcError as e:
                    if e.code == -32005:
                        raise ConnectionError("backend not back yet")
                    now_status = f"error {e.code}"
                if now_status == status:
                    stats.count("decisions read back unchanged")
                    continue
                if any(acked <= c <= acked + FSYNC_WINDOW for c in crashes):
                    stats.count("decisions in the fsync window lost")
                    stats.decided.pop(aid, None)
                else:
                    stats.violate(f"approval {aid}: decided {status}, now {now_status}")
                    stats.decided.pop(aid, None)
            checked_crashes = len(crashes)
            stats.count("decision audits")
        except LOST:
            reader = await drop(reader)
    await drop(reader)


async def presence(cluster, stats, stop, tokens):
    """Watchers hold a known set of connections; the cluster's count must
    converge to it once nothing was disrupted for a while."""
    watchers, admin = [], None
    mismatch_since = None
    while not stop.is_set():
        try:
            if admin is None or admin.closed.is_set():
                admin = await Conn.open(cluster, tokens["admin"])
            watchers = [w for w in watchers if not w.closed.is_set()]
            while len(watchers) < 5:
                watchers.append(await Conn.open(cluster, tokens["reader"]))
            await asyncio.sleep(1)
            if time.monotonic() - cluster.last_disruption < QUIET_FOR_PRESENCE:
                mismatch_since = None
                continue
            ids = set()
            cursor = None
            while True:
                page = await admin.call("system.presence", {"limit": 1000, "cursor": cursor})
                ids.update(c["connId"] for c in page["clients"])
                cursor = page.get("nextCursor")
                if not cursor:
                    break
            total = page["total"]
            if total != len(ids):
                stats.count("presence pages disagree with total")
            # The driver's connections are all of the cluster's: sessions,
            # approvals, watchers and this admin; compare counts only.
            expected = stats.counts.get("open connections", None)
            stats.count("presence checks")
            if expected is not None and total != expected:
                mismatch_since = mismatch_since or time.monotonic()
                if time.monotonic() - mismatch_since > QUIET_FOR_PRESENCE:
                    stats.violate(f"presence says {total} connections, the driver holds {expected}")
                    mismatch_since = None
            else:
                mismatch_since = None
        except LOST:
            admin = await drop(admin)
            await asyncio.sleep(0.3)
        except RpcError as e:
            stats.count(f"presence error {e.code}")
            await asyncio.sleep(0.3)


async def chaos(cluster, stats, stop):
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), random.uniform(12, 25))
            return
        except asyncio.TimeoutError:
            pass
        action = random.choice(["kill", "kill", "term", "redis"])
        cluster.last_disruption = time.monotonic()
        if action == "redis":
            log("chaos: Redis killed, restarted from its append-only file" if DURABLE
                else "chaos: Redis restarted empty")
            cluster.redis.kill()
            cluster.redis.wait()
            cluster.redis_crashes.append(time.monotonic())
            await asyncio.sleep(1)
            await asyncio.get_running_loop().run_in_executor(None, cluster.start_redis)
        else:
            i = random.choice(cluster.live())
            sig = signal.SIGKILL if action == "kill" else signal.SIGTERM
            log(f"chaos: {sig.name} soak-{i + 1}")
            cluster.procs[i].send_signal(sig)
            await asyncio.get_running_loop().run_in_executor(None, cluster.procs[i].wait)
            await asyncio.sleep(1)
            cluster.start(i)
            await asyncio.get_running_loop().run_in_executor(None, cluster.wait_up, i)
        stats.count(f"chaos {action}")
        cluster.last_disruption = time.monotonic()


async def main():
    binary = os.environ.get("SWITCHYARD_BIN")
    if not binary:
        raise SystemExit("SWITCHYARD_BIN is not set (scripts/soak.sh sets it)")
    cluster = Cluster(binary)
    stats = Stats()
    cluster.start_redis()
    for i in range(3):
        cluster.start(i)
    for i in range(3):
        if not cluster.wait_up(i):
            raise SystemExit(f"soak-{i + 1} did not start; see {cluster.dir}")
    tokens = {
        "writer": cluster.token("writer", scopes=["operator.read", "operator.write"]),
        "reader": cluster.token("reader", scopes=["operator.read", "operator.write"]),
        "approver1": cluster.token("approver1", scopes=["operator.approvals"]),
        "approver2": cluster.token("approver2", scopes=["operator.approvals"]),
        "node": cluster.token("node-1", role="node", scopes=[]),
        "admin": cluster.token("admin", scopes=["operator.admin"]),
    }
    log(f"soak for {SECONDS} s: redis :{cluster.redis_port}, instances {cluster.ports}, logs {cluster.dir}")
    stop = asyncio.Event()
    # The driver's connections: writer, reader, node, 2 approvers, admin,
    # 5 watchers, the runs' agent and caller (and the decisions' reader in
    # durable mode). Counted as
    # expected only while all are up.
    stats.counts["open connections"] = 14 if DURABLE else 13
    tasks = [
        asyncio.create_task(sessions(cluster, stats, stop, tokens)),
        asyncio.create_task(runs(cluster, stats, stop, tokens)),
        asyncio.create_task(approvals(cluster, stats, stop, tokens)),
        asyncio.create_task(presence(cluster, stats, stop, tokens)),
        asyncio.create_task(chaos(cluster, stats, stop)),
    ]
    if DURABLE:
        tasks.append(asyncio.create_task(decisions(cluster, stats, stop, tokens)))
    await asyncio.sleep(10)
    rss_start = [cluster.rss_kib(i) for i in range(3)]
    rss_max = list(rss_start)
    end = time.monotonic() + max(0, SECONDS - 10)
    while time.monotonic() < end:
        await asyncio.sleep(min(5, max(0, end - time.monotonic())))
        for i in range(3):
            rss = cluster.rss_kib(i)
            if rss is not None:
                rss_max[i] = max(rss_max[i] or 0, rss)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
    rss_end = [cluster.rss_kib(i) for i in range(3)]
    cluster.stop_all()
    stats.counts.pop("open connections", None)
    summary = {
        "seconds": SECONDS,
        "redis": "append-only file, SIGKILLed" if DURABLE else "in memory, restarted empty",
        "violations": len(stats.violations),
        "rss_kib_after_warmup": rss_start,
        "rss_kib_at_end": rss_end,
        "rss_kib_max": rss_max,
        **dict(sorted(stats.counts.items())),
    }
    print(json.dumps(summary, indent=1))
    sys.exit(1 if stats.violations else 0)


if __name__ == "__main__":
    asyncio.run(main())
