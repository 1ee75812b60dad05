// Real processes for the tests: a redis-server and switchyard gateways on
// free ports, every wait bounded, every process killed at the end (and on
// exit, whatever happened).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';
import { connect } from '../src/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const packageDir = path.resolve(here, '..');

/** The gateway binary: `SWITCHYARD_BIN`, else the workspace's debug build. */
export const BIN = process.env.SWITCHYARD_BIN
  ? path.resolve(process.env.SWITCHYARD_BIN)
  : path.resolve(packageDir, '../../target/debug/switchyard');

/** Static credentials of every gateway the tests start. */
export const ADMIN = 'admin-token-0123456789abcdef';
export const WRITER = 'writer-token-0123456789abcdef';
export const NODE = 'node-token-0123456789abcdef01';
const TOKENS = [
  `admin:${ADMIN}:operator.admin`,
  `writer:${WRITER}:operator.read operator.write`,
  `agent-1:${NODE}:node`,
].join(',');

/** `limits.node_ttl_ms` of cluster instances: a killed one is reaped this fast. */
export const NODE_TTL_MS = 3000;

/** @type {Set<import('node:child_process').ChildProcess>} */
const children = new Set();

process.on('exit', () => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone already
    }
  }
});

/** A TCP port nobody listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (server.address());
      server.close(() => resolve(port));
    });
  });
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Poll `check` until it returns a truthy value, at most `ms`.
 * @template T
 * @param {() => Promise<T> | T} check
 * @param {number} ms
 * @param {string} what named in the error
 * @returns {Promise<T>}
 */
export async function until(check, ms, what) {
  const deadline = Date.now() + ms;
  /** @type {unknown} */
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${ms} ms${last ? ` (last error: ${last})` : ''}`);
    }
    await sleep(25);
  }
}

/**
 * Reject after `ms` unless `promise` settles first.
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
export function within(promise, ms, what) {
  /** @type {ReturnType<typeof setTimeout>} */
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The next value of an async iterator, bounded. */
export function nextOf(iterator, ms, what) {
  return within(
    iterator.next().then((r) => {
      if (r.done) throw new Error(`${what}: the iterator ended`);
      return r.value;
    }),
    ms,
    what,
  );
}

/**
 * A child process whose stderr is kept (the last 64 KiB) for diagnostics.
 * @param {string} command
 * @param {string[]} args
 * @param {NodeJS.ProcessEnv} env
 */
function start(command, args, env) {
  const child = spawn(command, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let stderr = '';
  child.stderr?.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-65536);
  });
  /** @type {Promise<void>} */
  const exited = new Promise((resolve) => {
    child.on('exit', () => {
      children.delete(child);
      resolve();
    });
    child.on('error', () => {
      children.delete(child);
      resolve();
    });
  });
  return { child, exited, stderr: () => stderr };
}

/**
 * Kill with `signal` and wait (bounded) until the process is gone.
 * @param {{child: import('node:child_process').ChildProcess, exited: Promise<void>}} proc
 */
async function stop(proc, signal = 'SIGKILL') {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  proc.child.kill(signal);
  await within(proc.exited, 5000, `process ${proc.child.pid} to exit`).catch(async () => {
    proc.child.kill('SIGKILL');
    await within(proc.exited, 5000, `process ${proc.child.pid} to exit after SIGKILL`);
  });
}

/**
 * A redis-server of its own on a free port (never 6379), no persistence:
 * `kill9()` then `restart()` brings it back on the same port, empty.
 */
export class Redis {
  /** @param {number} port */
  constructor(port) {
    this.port = port;
    this.url = `redis://127.0.0.1:${port}`;
    /** @type {ReturnType<typeof start> | null} */
    this.proc = null;
  }

  static async start() {
    const redis = new Redis(await freePort());
    await redis.restart();
    return redis;
  }

  /** Start the process (again, on the same port) and wait until it answers. */
  async restart() {
    if (this.proc && this.proc.child.exitCode === null && this.proc.child.signalCode === null) {
      throw new Error(`redis-server on ${this.port} is still running`);
    }
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
    this.proc = start('redis-server', args, process.env);
    const pid = this.proc.child.pid;
    await until(() => redisIs(this.port, pid), 5000, `redis-server on ${this.port}`);
  }

  /** SIGKILL: everything it held is gone. */
  async kill9() {
    if (this.proc) await stop(this.proc, 'SIGKILL');
  }

  async stop() {
    if (this.proc) await stop(this.proc);
  }
}

/**
 * Whether the server on `port` is the process `pid` (another test's server
 * that took the port meanwhile would answer PING too).
 * @param {number} port
 * @param {number | undefined} pid
 */
function redisIs(port, pid) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    socket.setTimeout(500);
    socket.on('connect', () => socket.write('INFO server\r\n'));
    socket.on('data', (data) => {
      reply += data.toString();
      const head = reply.indexOf('\r\n');
      if (head < 0) return;
      const length = Number(reply.slice(1, head));
      if (!reply.startsWith('$') || !Number.isFinite(length)) {
        socket.destroy();
        resolve(false);
      } else if (Buffer.byteLength(reply.slice(head + 2)) >= length) {
        socket.destroy();
        resolve(reply.includes(`process_id:${pid}\r\n`));
      }
    });
    socket.on('error', () => resolve(false));
    socket.on('timeout', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/**
 * One switchyard process. `restart()` starts it again on the same port
 * and instance id (as after a crash).
 */
export class Gateway {
  /**
   * @param {{id?: string, redis?: Redis, port: number, env?: Record<string, string>}} options
   */
  constructor(options) {
    this.id = options.id;
    this.redis = options.redis;
    this.port = options.port;
    this.extraEnv = options.env ?? {};
    this.url = `ws://127.0.0.1:${this.port}/ws`;
    /** @type {ReturnType<typeof start> | null} */
    this.proc = null;
  }

  /**
   * Start a gateway on a free port and wait for `/health`.
   * @param {{id?: string, redis?: Redis, env?: Record<string, string>}} [options]
   */
  static async start(options = {}) {
    const gateway = new Gateway({ ...options, port: await freePort() });
    await gateway.restart();
    return gateway;
  }

  /** The environment: only our SWITCHYARD_* variables. */
  env() {
    /** @type {NodeJS.ProcessEnv} */
    const env = {};
    for (const [key, value] of Object.entries(process.env)) {
      if (!key.startsWith('SWITCHYARD_')) env[key] = value;
    }
    Object.assign(env, {
      SWITCHYARD_PORT: String(this.port),
      SWITCHYARD_LOG: 'warn',
      SWITCHYARD_TOKENS: TOKENS,
      // Channels no rule names (e.g. `feed:…`) keep their newest 100
      // publications: offsets, `history`, `subscribe {recover}`.
      SWITCHYARD_CHANNELS__DEFAULT__SUBSCRIBE: 'authenticated',
      SWITCHYARD_CHANNELS__DEFAULT__PUBLISH: 'write',
      SWITCHYARD_CHANNELS__DEFAULT__HISTORY: '100',
      SWITCHYARD_LIMITS__PRESENCE_TICK_MS: '60000',
    });
    if (this.redis) {
      env.SWITCHYARD_REDIS_URL = this.redis.url;
      env.SWITCHYARD_LIMITS__NODE_TTL_MS = String(NODE_TTL_MS);
    }
    if (this.id) env.SWITCHYARD_INSTANCE_ID = this.id;
    Object.assign(env, this.extraEnv);
    return env;
  }

  /** (Re)start the process and wait (bounded) for `GET /health` → 200. */
  async restart() {
    if (!existsSync(BIN)) {
      throw new Error(`no gateway binary at ${BIN}: build it (cargo build) or set SWITCHYARD_BIN`);
    }
    if (this.proc && this.proc.child.exitCode === null && this.proc.child.signalCode === null) {
      throw new Error(`gateway ${this.id ?? this.port} is still running`);
    }
    const proc = start(BIN, [], this.env());
    this.proc = proc;
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
        throw new Error(`gateway ${this.id ?? this.port} exited early: ${proc.stderr()}`);
      }
      try {
        const res = await fetch(`http://127.0.0.1:${this.port}/health`, { signal: AbortSignal.timeout(1000) });
        if (res.status === 200) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await stop(proc);
        throw new Error(`gateway ${this.id ?? this.port}: no /health within 20 s: ${proc.stderr()}`);
      }
      await sleep(50);
    }
  }

  /** The status of `GET /ready` (0 when nothing answers). */
  async readyStatus() {
    try {
      const res = await fetch(`http://127.0.0.1:${this.port}/ready`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      return res.status;
    } catch {
      return 0;
    }
  }

  /** SIGKILL: the process cleans nothing up. */
  async kill9() {
    if (this.proc) await stop(this.proc, 'SIGKILL');
  }

  async stop() {
    if (this.proc) await stop(this.proc, 'SIGKILL');
  }

  /**
   * Send a signal without waiting (SIGSTOP freezes the process with its
   * sockets open, SIGCONT resumes it).
   * @param {NodeJS.Signals} signal
   */
  signal(signal) {
    this.proc?.child.kill(signal);
  }

  /** The process's stderr so far (for failure messages). */
  stderr() {
    return this.proc?.stderr() ?? '';
  }
}

/**
 * A redis-server and two instances of their own for the enclosing
 * `describe`: started before its tests and stopped after them, with every
 * client opened through `open` (which reconnects fast: from 50 ms up to
 * `maxDelayMs`).
 * @param {string} idA
 * @param {string} idB
 * @param {number} [maxDelayMs]
 */
export function twoInstances(idA, idB, maxDelayMs = 300) {
  /** @type {import('../src/index.js').Client[]} */
  const clients = [];
  const pair = {
    /** @type {Redis} */
    redis: /** @type {any} */ (null),
    /** @type {Gateway} */
    a: /** @type {any} */ (null),
    /** @type {Gateway} */
    b: /** @type {any} */ (null),
    /**
     * @param {Gateway | string | string[]} target
     * @param {any} [options]
     */
    open: async (target, options) => {
      const url = target instanceof Gateway ? target.url : target;
      const client = await connect(url, { reconnect: { initialDelayMs: 50, maxDelayMs }, ...options });
      clients.push(client);
      return client;
    },
  };
  before(async () => {
    pair.redis = await Redis.start();
    [pair.a, pair.b] = await Promise.all([
      Gateway.start({ id: idA, redis: pair.redis }),
      Gateway.start({ id: idB, redis: pair.redis }),
    ]);
  });
  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await Promise.all([pair.a?.stop(), pair.b?.stop()]);
    await pair.redis?.stop();
  });
  return pair;
}
