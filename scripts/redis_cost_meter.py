"""The measuring side of scripts/redis_cost.py: a minimal Redis client,
windows of Redis counters with the background subtracted, and a WebSocket
client of the gateway.

- `Redis`: RESP over one socket; `snapshot()` reads `INFO commandstats`,
  `stats`, `cpu` and `memory` at once.
- `Meter.window(action)`: `CONFIG RESETSTAT`, run the action, settle,
  snapshot; `per_op` subtracts the background rate times the window's
  length and divides by the number of operations.
- `Conn`: one WebSocket; replies complete calls, notifications are
  counted by method, server requests are answered by `on_request` (an
  agent). Every wait has a timeout.
"""

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import socket
import time

from websockets.asyncio.client import connect as ws_connect

CALL_TIMEOUT = 10.0
# Per-operation values smaller than this are left out: the window's
# background is subtracted as a rate, so a command it holds only now and
# then leaves a residue of this order.
NOISE = 0.01


# ---------------------------------------------------------------- Redis


class Redis:
    """A minimal RESP client: one connection, one command at a time."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def cmd(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self):
        line = self.file.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def info(self, *sections):
        fields = {}
        for line in self.cmd("INFO", *sections).splitlines():
            if ":" in line and not line.startswith("#"):
                key, value = line.split(":", 1)
                fields[key] = value
        return fields

    def snapshot(self):
        """Counters since the last RESETSTAT, and the CPU used so far."""
        f = self.info("commandstats", "stats", "cpu", "memory")
        calls, usec = {}, {}
        for key, value in f.items():
            if key.startswith("cmdstat_"):
                stats = dict(kv.split("=") for kv in value.split(","))
                calls[key[len("cmdstat_"):]] = int(stats["calls"])
                usec[key[len("cmdstat_"):]] = int(stats["usec"])
        # The meter's own RESETSTAT.
        calls.pop("config|resetstat", None)
        return {
            "calls": calls,
            "usec": usec,
            "in": int(f["total_net_input_bytes"]),
            "out": int(f["total_net_output_bytes"]),
            "cpu": float(f["used_cpu_user"]) + float(f["used_cpu_sys"]),
            "used_memory": int(f["used_memory"]),
        }

    def used_memory(self):
        return int(self.info("memory")["used_memory"])


class Meter:
    """Windows of Redis counters, with the background subtracted."""

    def __init__(self, redis, settle):
        self.redis = redis
        self.settle = settle
        self.background = []  # (seconds, snapshot-with-cpu-delta) windows

    async def window(self, action):
        self.redis.cmd("CONFIG", "RESETSTAT")
        cpu0 = self.redis.snapshot()["cpu"]
        t0 = time.monotonic()
        result = await action()
        await asyncio.sleep(self.settle)
        snap = self.redis.snapshot()
        seconds = time.monotonic() - t0
        snap["cpu"] -= cpu0
        return seconds, snap, result

    async def measure_background(self, seconds):
        secs, snap, _ = await self.window(lambda: asyncio.sleep(seconds))
        self.background.append((secs, snap))
        return self.rates([(secs, snap)])

    @staticmethod
    def rates(windows):
        total = sum(s for s, _ in windows)
        calls, usec = {}, {}
        for _, snap in windows:
            for cmd, n in snap["calls"].items():
                calls[cmd] = calls.get(cmd, 0) + n
            for cmd, n in snap["usec"].items():
                usec[cmd] = usec.get(cmd, 0) + n
        return {
            "calls": {c: n / total for c, n in calls.items()},
            "usec": {c: n / total for c, n in usec.items()},
            "in": sum(w["in"] for _, w in windows) / total,
            "out": sum(w["out"] for _, w in windows) / total,
            "cpu": sum(w["cpu"] for _, w in windows) / total,
        }

    def per_op(self, seconds, snap, n, windows=None):
        """The window's counters less the background, divided by n."""
        bg = self.rates(windows or self.background)
        names = set(snap["calls"]) | set(bg["calls"])
        commands = {}
        for c in sorted(names):
            v = (snap["calls"].get(c, 0) - bg["calls"].get(c, 0) * seconds) / n
            if abs(v) >= NOISE:
                commands[c] = round(v, 3)
        # Redis's own time in each command (`INFO commandstats`, without
        # reading and writing sockets; a script's time includes its calls').
        usec = {}
        for c in sorted(set(snap["usec"]) | set(bg["usec"])):
            v = (snap["usec"].get(c, 0) - bg["usec"].get(c, 0) * seconds) / n
            if c in commands and v >= 0.05:
                usec[c] = round(v, 2)
        return {
            "commands_per_op": commands,
            "commandstats_usec_per_op": usec,
            "total_commands_per_op": round(sum(commands.values()), 3),
            "bytes_in_per_op": round((snap["in"] - bg["in"] * seconds) / n, 1),
            "bytes_out_per_op": round((snap["out"] - bg["out"] * seconds) / n, 1),
            "redis_cpu_us_per_op": round((snap["cpu"] - bg["cpu"] * seconds) / n * 1e6, 2),
        }


# ---------------------------------------------------------------- clients


def jwt(secret, sub, scopes=("operator.write",), ttl=3600):
    """An HS256 token for `sub`, as `switchyard token` mints them."""

    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    claims = {"sub": sub, "role": "operator", "scopes": list(scopes),
              "iat": now, "exp": now + ttl}
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256)
    return f"{header}.{body}.{b64(signature.digest())}"


class Conn:
    """A WebSocket client: calls, notifications counted, server requests
    answered by `on_request` (an agent)."""

    def __init__(self, ws, on_request=None):
        self.ws = ws
        self.on_request = on_request
        self.ids = itertools.count(1)
        self.pending = {}
        self.received = {}  # notification method -> count
        self.welcomed = asyncio.Event()
        self.changed = asyncio.Event()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, url, token=None, on_request=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        ws = await ws_connect(url, additional_headers=headers, compression=None,
                              ping_interval=None, open_timeout=CALL_TIMEOUT,
                              close_timeout=CALL_TIMEOUT, max_size=2**20)
        conn = cls(ws, on_request)
        await asyncio.wait_for(conn.welcomed.wait(), CALL_TIMEOUT)
        return conn

    async def _read(self):
        try:
            async for text in self.ws:
                frame = json.loads(text)
                method = frame.get("method")
                if method is None:
                    fut = self.pending.pop(frame.get("id"), None)
                    if fut and not fut.done():
                        fut.set_result(frame)
                elif "id" in frame and self.on_request:
                    reply = {"jsonrpc": "2.0", "id": frame["id"],
                             "result": self.on_request(frame)}
                    await self.ws.send(json.dumps(reply))
                else:
                    self.received[method] = self.received.get(method, 0) + 1
                    if method == "welcome":
                        self.welcomed.set()
                    self.changed.set()
        except Exception:  # the socket closed: callers time out
            pass

    async def call(self, method, params=None):
        id_ = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[id_] = fut
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": id_, "method": method,
                                       "params": params or {}}))
        frame = await asyncio.wait_for(fut, CALL_TIMEOUT)
        if "error" in frame:
            raise RuntimeError(f"{method}: {frame['error']}")
        return frame["result"]

    async def notify(self, method, params):
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "method": method, "params": params}))

    async def wait_for(self, method, count, timeout=CALL_TIMEOUT):
        deadline = time.monotonic() + timeout
        while self.received.get(method, 0) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{method}: {self.received.get(method, 0)} of {count}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def close(self):
        await asyncio.wait_for(self.ws.close(), CALL_TIMEOUT)
        await asyncio.wait_for(self.reader, CALL_TIMEOUT)


async def close_all(conns):
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def open_many(url, tokens, at_once=32):
    sem = asyncio.Semaphore(at_once)

    async def one(token):
        async with sem:
            return await Conn.open(url, token)

    return await asyncio.gather(*(one(t) for t in tokens))
