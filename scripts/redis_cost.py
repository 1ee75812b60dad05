"""What each gateway operation costs Redis, measured.

Run by scripts/redis-cost.sh, which starts one redis-server and two
instances (A and B) and passes their addresses. The flow:

1. Background: with no client connected, `CONFIG RESETSTAT`, wait, read
   `INFO commandstats`, `INFO stats` (`total_net_input_bytes`,
   `total_net_output_bytes`) and `INFO cpu`: the idle cluster's rate per
   second (heartbeats, canaries, `INFO replication`, config polls, presence
   ticks, the reaper, the session janitor, cron).
2. Each operation: its fixtures first (subscribers on both instances, a
   session with a member on each, an agent on B), a settle, then
   `CONFIG RESETSTAT`, N operations one after another, a settle for work
   that follows an operation (clean-up after a close), then the same
   readings. The background rate times the window's length is subtracted
   and the rest divided by N. Variants show what changes a cost: a
   notification instead of a call, subscribers on one instance, a channel
   with history, a registry of 101 agents, a new identity or one already
   connected, 64 connections at a time.
3. Idle connections: `used_memory` per connection and per subscription,
   their commands over a minute, and one reaper sweep (`HGETALL` of every
   presence entry) timed. History: `used_memory` per logged publication.
4. The check: predicts the Redis commands (and bytes, and Redis CPU) of two
   `switchyard bench` runs from the per-operation costs and the
   background, runs them, and reports predicted against measured.
5. redis-benchmark against the same Redis: requests/s and Redis CPU per
   request, the per-shard capacity.

Prints one JSON line per result and a Markdown table of the operations.
Operations run one at a time, so nothing coalesces: each figure is the
operation's whole cost, and concurrent load can only share work (the
check shows how much). Redis CPU one at a time is an upper bound: under
load Redis reads and writes many commands per system call.
"""

import argparse
import asyncio
import itertools
import json
import socket
import subprocess
import sys

from redis_cost_meter import CALL_TIMEOUT, Conn, Meter, Redis, close_all, jwt, open_many


# ---------------------------------------------------------------- operations


class Run:
    def __init__(self, args):
        self.args = args
        self.a, self.b = args.url_a, args.url_b
        self.redis = Redis(args.redis_port)
        self.meter = Meter(self.redis, args.settle)
        self.results = {}
        self.fresh = itertools.count()

    def token_for(self, prefix):
        return jwt(self.args.jwt_secret, f"{prefix}-{next(self.fresh)}")

    def emit(self, line):
        print(json.dumps(line), flush=True)

    async def op(self, name, n, run, note=""):
        """One measured window of `n` operations; `run(n)` performs them.
        With --trace, first a few more under MONITOR, printed to stderr."""
        # The fixtures' own writes (and the previous operation's clean-up)
        # stay out of the window.
        await asyncio.sleep(self.args.settle)
        if self.args.trace:
            await self.trace(name, run)
        seconds, snap, _ = await self.meter.window(lambda: run(n))
        line = {"op": name, "n": n, "seconds": round(seconds, 2)}
        line.update(self.meter.per_op(seconds, snap, n))
        if note:
            line["note"] = note
        self.results[name] = line
        self.emit(line)
        return line

    async def trace(self, name, run):
        monitor = socket.create_connection(("127.0.0.1", self.args.redis_port), timeout=10)
        monitor.sendall(b"MONITOR\r\n")
        lines = []

        def read():
            buf = b""
            try:
                while chunk := monitor.recv(65536):
                    buf += chunk
            except OSError:
                pass
            lines.extend(buf.decode(errors="replace").splitlines())

        reader = asyncio.get_running_loop().run_in_executor(None, read)
        await run(self.args.trace)
        await asyncio.sleep(self.args.settle)
        monitor.shutdown(socket.SHUT_RDWR)
        await asyncio.wait_for(reader, CALL_TIMEOUT)
        monitor.close()
        print(f"== {name}: {self.args.trace} operations under MONITOR", file=sys.stderr)
        for line in lines[1:]:
            print("  " + line, file=sys.stderr)

    async def subscribers(self, channel, per_instance, urls=None):
        subs = []
        for url in urls or (self.a, self.b):
            for _ in range(per_instance):
                c = await Conn.open(url, self.args.token)
                await c.call("subscribe", {"channel": channel})
                subs.append(c)
        return subs

    async def publications(self, name, channel, urls, as_call=True, note=""):
        subs = await self.subscribers(channel, 2, urls)
        pub = await Conn.open(self.a, self.args.token)

        async def run(n):
            for i in range(n):
                params = {"channel": channel, "event": "cost", "data": {"i": i}}
                if as_call:
                    await pub.call("publish", params)
                else:
                    await pub.notify("publish", params)
            for s in subs:
                await s.wait_for("notify", n)

        await self.op(name, self.args.n, run, note)
        await close_all(subs + [pub])

    async def session_send(self):
        owner = await Conn.open(self.a, self.args.token)
        member = await Conn.open(self.b, self.args.token)
        session = await owner.call("session.create", {"open": True})
        sid = session["sessionId"]
        await member.call("session.join", {"sessionId": sid})

        async def run(n):
            for i in range(n):
                await owner.call("session.send", {"sessionId": sid, "event": "cost",
                                                  "data": {"i": i}})
            await member.wait_for("session.event", n)

        await self.op("session.send, members on A and B", self.args.n, run,
                      "owner on A sends; a member on each instance")
        await owner.call("session.close", {"sessionId": sid})
        await close_all([owner, member])

    async def invoke(self):
        agent = await Conn.open(self.b, self.args.token,
                                on_request=lambda f: f["params"].get("params"))
        await agent.call("agent.register", {"agentId": "cost-agent", "maxConcurrency": 64})
        caller = await Conn.open(self.a, self.args.token)

        async def run(n):
            for i in range(n):
                await caller.call("node.invoke", {"nodeId": "cost-agent", "command": "echo",
                                                  "params": {"i": i}, "timeoutMs": 5000})

        await self.op("node.invoke, caller on A, agent on B", self.args.n, run,
                      "the only agent in the registry")
        # The registry is read whole on every call: the same call with more
        # agents registered (16 per connection at most).
        k = self.args.registry_agents
        holders = []
        for start in range(0, k, 16):
            holder = await Conn.open(self.b, self.args.token)
            for i in range(start, min(start + 16, k)):
                await holder.call("agent.register", {
                    "agentId": f"cost-idle-{i}", "name": f"idle agent {i}",
                    "capabilities": ["summarize", "translate"],
                    "tools": [{"name": "lookup", "description": "Look a thing up"}]})
            holders.append(holder)
        await self.op(f"node.invoke, caller on A, agent on B, {k + 1} agents registered",
                      self.args.n, run, f"{k} more agents in the registry, on B")
        await close_all([caller, agent])
        # The reaper reads the registry on its passes too.
        await asyncio.sleep(self.args.settle)
        secs = self.args.background_seconds
        seconds, snap, _ = await self.meter.window(lambda: asyncio.sleep(secs))
        extra = self.meter.per_op(seconds, snap, seconds)
        self.emit({"background": f"per second, extra with {k + 1} agents registered",
                   "commands": extra["commands_per_op"],
                   "in": extra["bytes_in_per_op"], "out": extra["bytes_out_per_op"]})
        for h, holder in enumerate(holders):
            for i in range(h * 16, min(h * 16 + 16, k)):
                await holder.call("agent.unregister", {"agentId": f"cost-idle-{i}"})
        await close_all(holders)

    async def connections(self):
        n = self.args.connect_n
        # Another identity stays connected on A, as on any instance in
        # service: `global` is already subscribed there.
        other = await Conn.open(self.a, self.token_for("resident"))

        async def fresh(n):
            for _ in range(n):
                c = await Conn.open(self.a, self.token_for("fresh"))
                await c.close()

        await self.op("connect + disconnect, new identity", n, fresh,
                      "bearer JWT at the upgrade, a new sub each time; welcome, then close")

        resident = await Conn.open(self.a, self.args.token)

        async def shared(n):
            for _ in range(n):
                c = await Conn.open(self.a, self.args.token)
                await c.close()

        await self.op("connect + disconnect, identity already on the instance", n, shared,
                      "static token whose identity holds another socket on the instance")
        await resident.close()

        async def inband(n):
            for _ in range(n):
                c = await Conn.open(self.a)
                await c.call("connect", {"auth": {"token": self.token_for("inband")},
                                         "client": {"name": "cost"}})
                await c.close()

        await self.op("connect {auth} in-band + disconnect, new identity", n, inband,
                      "no credential at the upgrade; the connect call authenticates")

        async def storm(n):
            for start in range(0, n, 64):
                tokens = [self.token_for("storm") for _ in range(min(64, n - start))]
                await close_all(await open_many(self.a, tokens, 64))

        await self.op("connect + disconnect, new identity, 64 at a time", n, storm,
                      "64 open at once, then all 64 close at once")
        await other.close()

    async def subscriptions(self):
        channel = "public:cost-sub"
        resident = await self.subscribers(channel, 1)
        c = await Conn.open(self.a, self.args.token)

        async def existing(n):
            for _ in range(n):
                await c.call("subscribe", {"channel": channel})
                await c.call("unsubscribe", {"channel": channel})

        await self.op("subscribe + unsubscribe, channel already on both instances",
                      self.args.n, existing, "public: channel, presence on")

        async def first(n):
            for i in range(n):
                name = f"public:cost-new-{i}"
                await c.call("subscribe", {"channel": name})
                await c.call("unsubscribe", {"channel": name})

        await self.op("subscribe + unsubscribe, first subscriber in the cluster",
                      self.args.n, first, "a new public: channel each time, presence on")
        await close_all(resident + [c])

    # ------------------------------------------------------------ memory

    async def idle(self):
        """Redis memory per idle connection, and what idle connections cost
        per second (none of it should grow with their number)."""
        m = self.args.idle_connections
        out = {"connections": m}
        for label, tokens in (
            ("new_identity", [self.token_for("idle") for _ in range(m)]),
            ("shared_identity", [self.args.token] * m),
        ):
            await asyncio.sleep(1)
            before = self.redis.used_memory()
            half = m // 2
            conns = await open_many(self.a, tokens[:half])
            conns += await open_many(self.b, tokens[half:])
            await asyncio.sleep(2)
            after = self.redis.used_memory()
            out[f"used_memory_per_connection_{label}"] = round((after - before) / m, 1)
            if label == "new_identity":
                self.sweep(m)
                secs = self.args.idle_seconds
                seconds, snap, _ = await self.meter.window(lambda: asyncio.sleep(secs))
                line = self.meter.per_op(seconds, snap, m * seconds)
                line = {"op": f"idle connection, per second ({m} open)", "n": m,
                        "seconds": round(seconds, 2), **line,
                        "note": "the window's commands less the background, per "
                                "connection per second"}
                self.results[line["op"]] = line
                self.emit(line)
                out["used_memory_per_subscription"] = await self.subscription_memory(conns)
            await close_all(conns)
        self.emit({"memory": "idle connections", **out})
        self.memory = out

    async def subscription_memory(self, conns):
        """Each connection joins one of m/20 channels (presence on)."""
        rooms = max(1, len(conns) // 20)
        sem = asyncio.Semaphore(32)

        async def join(i, c):
            async with sem:
                await c.call("subscribe", {"channel": f"public:room-{i % rooms}"})

        before = self.redis.used_memory()
        await asyncio.gather(*(join(i, c) for i, c in enumerate(conns)))
        await asyncio.sleep(2)
        return round((self.redis.used_memory() - before) / len(conns), 1)

    def sweep(self, m):
        """What one reaper sweep costs: `HGETALL` of every presence entry,
        as each instance sends it about once a minute."""
        self.redis.cmd("CONFIG", "RESETSTAT")
        entries = self.redis.cmd("HGETALL", "sy:{sy}:conns")
        snap = self.redis.snapshot()
        line = {"reaper_sweep": "HGETALL sy:{sy}:conns", "entries": len(entries) // 2,
                "connections": m, "bytes_out": snap["out"],
                "bytes_per_entry": round(snap["out"] / max(len(entries) // 2, 1), 1),
                "usec": snap["usec"].get("hgetall", 0),
                "usec_per_entry": round(snap["usec"].get("hgetall", 0)
                                        / max(len(entries) // 2, 1), 3)}
        self.emit(line)

    async def history_memory(self):
        h = self.args.history_entries
        channel = "mem:cost"
        pub = await Conn.open(self.a, self.args.token)
        await asyncio.sleep(1)
        before = self.redis.used_memory()
        text = "x" * 100
        for i in range(h):
            await pub.call("publish", {"channel": channel, "event": "cost",
                                       "data": {"i": i, "text": text}})
        await asyncio.sleep(1)
        after = self.redis.used_memory()
        key = "sy:log:{%s}" % channel
        length = self.redis.cmd("LLEN", key)
        sample = self.redis.cmd("LRANGE", key, 0, 99) or []
        usage = self.redis.cmd("MEMORY", "USAGE", key, "SAMPLES", "0")
        line = {
            "memory": "channel history entries",
            "entries": h,
            "logged": length,
            "entry_bytes": round(sum(len(s) for s in sample) / max(len(sample), 1), 1),
            "used_memory_per_entry": round((after - before) / h, 1),
            "memory_usage_per_entry": round(usage / max(length, 1), 1),
        }
        self.emit(line)
        self.history = line
        await pub.close()

    # ------------------------------------------------------------ check

    async def bench(self, name, urls, scenario, predict):
        """Run `switchyard bench`, measure it, and compare with `predict`."""
        cmd = [self.args.bin, "bench", "--token", self.args.token, "--urls", ",".join(urls),
               *scenario]

        async def run():
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 120)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                raise
            if proc.returncode != 0:
                raise RuntimeError(f"bench {scenario[0]}: {err.decode().strip()}")
            return json.loads(out.decode().strip().splitlines()[-1])

        seconds, snap, result = await self.meter.window(run)
        parts = predict(result)
        bg = Meter.rates(self.meter.background)
        predicted = {}
        for op, count in parts:
            for c, v in self.results[op]["commands_per_op"].items():
                predicted[c] = predicted.get(c, 0) + v * count
        for c, v in bg["calls"].items():
            predicted[c] = predicted.get(c, 0) + v * seconds
        measured = snap["calls"]
        total_p, total_m = sum(predicted.values()), sum(measured.values())
        bytes_p = {k: sum(self.results[op][f"bytes_{k}_per_op"] * count for op, count in parts)
                   + bg[k] * seconds for k in ("in", "out")}
        cpu_p = (sum(self.results[op]["redis_cpu_us_per_op"] * count for op, count in parts)
                 / 1e6 + bg["cpu"] * seconds)
        names = sorted(set(predicted) | set(measured),
                       key=lambda c: -max(predicted.get(c, 0), measured.get(c, 0)))
        line = {
            "check": name,
            "bench": {k: result.get(k) for k in ("scenario", "calls", "calls_per_second",
                                                "subscribers", "messages", "deliveries",
                                                "lost", "connections") if k in result},
            "window_seconds": round(seconds, 2),
            "counted": {op: count for op, count in parts},
            "predicted_commands": round(total_p),
            "measured_commands": total_m,
            "predicted_commands_per_second": round(total_p / seconds),
            "measured_commands_per_second": round(total_m / seconds),
            "error_percent": round((total_p - total_m) / total_m * 100, 1),
            "redis_cpu_seconds": [round(cpu_p, 3), round(snap["cpu"], 3)],
            "bytes_in": [round(bytes_p["in"]), snap["in"]],
            "bytes_out": [round(bytes_p["out"]), snap["out"]],
            "by_command": {c: [round(predicted.get(c, 0)), measured.get(c, 0)]
                           for c in names[:12]},
        }
        self.emit(line)
        return line

    async def checks(self):
        invoke_op = "node.invoke, caller on A, agent on B"
        shared = "connect + disconnect, identity already on the instance"
        sub = "subscribe + unsubscribe, channel already on both instances"
        notify = "publish (notification), subscribers on A and B"
        conns = self.args.check_invoke_connections
        await self.bench(
            "bench invoke", [self.a, self.b],
            ["invoke", "--connections", str(conns), "--seconds", str(self.args.check_seconds)],
            lambda r: [(invoke_op, r["calls"]), (shared, conns + 1)])
        subs, messages = self.args.check_subscribers, self.args.check_messages
        await self.bench(
            "bench fanout", [self.a, self.b],
            ["fanout", "--subscribers", str(subs), "--messages", str(messages),
             "--rate", str(self.args.check_rate)],
            lambda r: [(shared, subs + 1), (sub, subs), (notify, messages)])

    # ------------------------------------------------------------ shard

    def shard_capacity(self):
        """redis-benchmark against this Redis (50 clients, no pipelining):
        requests/s, and Redis's own CPU per request while it ran."""
        n = str(self.args.shard_requests)
        tests = [("SET", ["-t", "set"]), ("GET", ["-t", "get"]), ("HSET", ["-t", "hset"]),
                 ("PUBLISH (200 B, no subscriber)", ["PUBLISH", "bench", "x" * 200])]
        out = {}
        for name, extra in tests:
            cmd = ["redis-benchmark", "-p", str(self.args.redis_port), "-q", "-n", n,
                   "-P", "1", *extra]
            cpu0 = self.redis.snapshot()["cpu"]
            text = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
            cpu = self.redis.snapshot()["cpu"] - cpu0
            rate = None
            for chunk in text.replace("\r", "\n").splitlines():
                if "requests per second" in chunk:
                    rate = float(chunk.split(":", 1)[1].split()[0])
            out[name] = {"requests_per_second": rate,
                         "redis_cpu_us_per_request": round(cpu / int(n) * 1e6, 2)}
        line = {"shard_capacity": f"redis-benchmark -q -n {n} -P 1 (50 clients)", **out}
        self.emit(line)

# ---------------------------------------------------------------- output


def num(v):
    return f"{0.0 if v == 0 else v:g}"  # no "-0"


def table(results):
    rows = ["| operation | n | Redis commands per operation | total | bytes in | "
            "bytes out | Redis CPU µs (one at a time) |", "|---|---|---|---|---|---|---|"]
    for r in results.values():
        cmds = sorted(r["commands_per_op"].items(), key=lambda kv: -abs(kv[1]))
        listed = ", ".join(f"`{c}` {num(v)}" for c, v in cmds) or "—"
        rows.append(f"| {r['op']} | {r['n']} | {listed} | {num(r['total_commands_per_op'])} | "
                    f"{num(r['bytes_in_per_op'])} | {num(r['bytes_out_per_op'])} | "
                    f"{num(r['redis_cpu_us_per_op'])} |")
    return "\n".join(rows)


async def main(args):
    run = Run(args)
    bg = await run.meter.measure_background(args.background_seconds)
    run.emit({"background": "per second, before", **{k: bg[k] for k in ("in", "out", "cpu")},
              "commands": round(sum(bg["calls"].values()), 1)})
    both = (run.a, run.b)
    await run.publications("publish (call), subscribers on A and B", "public:cost-pub", both,
                           note="publisher on A; 2 subscribers on each instance")
    await run.publications("publish (notification), subscribers on A and B",
                           "public:cost-pub", both, as_call=False,
                           note="publish sent without an id: no reply, no subscriber count")
    await run.publications("publish (call), subscribers on A only", "public:cost-one",
                           (run.a,), note="publisher and 2 subscribers on A")
    await run.publications("publish (call), channel with history", "audit:cost", both,
                           note="rule audit: history = 100; 2 subscribers on each instance")
    await run.session_send()
    await run.invoke()
    await run.connections()
    await run.subscriptions()
    await run.idle()
    await run.history_memory()
    bg = await run.meter.measure_background(args.background_seconds)
    run.emit({"background": "per second, after", **{k: bg[k] for k in ("in", "out", "cpu")},
              "commands": round(sum(bg["calls"].values()), 1)})
    if args.check:
        await run.checks()
    if args.shard_requests:
        run.shard_capacity()
    print()
    print(table(run.results))


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis-port", type=int, required=True)
    p.add_argument("--url-a", required=True)
    p.add_argument("--url-b", required=True)
    p.add_argument("--token", required=True, help="static admin token")
    p.add_argument("--jwt-secret", required=True)
    p.add_argument("--bin", required=True, help="switchyard binary (for bench)")
    p.add_argument("--n", type=int, default=2000, help="operations per measurement")
    p.add_argument("--connect-n", type=int, default=500)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--background-seconds", type=float, default=5.0)
    p.add_argument("--idle-connections", type=int, default=2000)
    # Each instance's reaper reads every presence entry about once a
    # minute: a minute's window holds each instance's sweep once.
    p.add_argument("--idle-seconds", type=float, default=60.0)
    p.add_argument("--history-entries", type=int, default=5000)
    p.add_argument("--registry-agents", type=int, default=100)
    p.add_argument("--check", type=int, default=1)
    p.add_argument("--check-seconds", type=int, default=3)
    p.add_argument("--check-invoke-connections", type=int, default=8)
    p.add_argument("--check-subscribers", type=int, default=200)
    p.add_argument("--check-messages", type=int, default=300)
    p.add_argument("--check-rate", type=int, default=100)
    p.add_argument("--trace", type=int, default=0,
                   help="run this many more of each operation under MONITOR (stderr)")
    p.add_argument("--shard-requests", type=int, default=200000, help="0: skip")
    return p.parse_args()


if __name__ == "__main__":
    try:
        asyncio.run(main(parse()))
    except KeyboardInterrupt:
        sys.exit(130)
