// The parts that need no gateway: the bounded queue, the emitter, the
// checks `connect` makes before opening anything, and what the client does
// on `epoch.changed`, against a scripted socket that decides when each
// answer and push arrives.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BoundedQueue, Client, OverflowError, RpcError, connect } from '../src/index.js';
import { Emitter } from '../src/queue.js';

test('a bounded queue yields in order, then fails on overflow instead of dropping silently', async () => {
  let closed = 0;
  const queue = new BoundedQueue(2, 'test queue', () => closed++);
  queue.push('a');
  queue.push('b');
  assert.deepEqual(await queue.next(), { value: 'a', done: false });
  queue.push('c');
  queue.push('d'); // b, c, d: one more than the limit
  await assert.rejects(queue.next(), (e) => e instanceof OverflowError && e.limit === 2);
  assert.deepEqual(await queue.next(), { value: undefined, done: true });
  assert.equal(closed, 1);
});

test('a bounded queue hands items to a waiting reader and ends on return()', async () => {
  let closed = 0;
  const queue = new BoundedQueue(1, 'test queue', () => closed++);
  const waiting = queue.next();
  queue.push(1);
  assert.deepEqual(await waiting, { value: 1, done: false });
  const seen = [];
  queue.push(2);
  for await (const item of queue) {
    seen.push(item);
    break; // return(): the queue closes
  }
  assert.deepEqual(seen, [2]);
  assert.equal(closed, 1);
  queue.push(3);
  assert.deepEqual(await queue.next(), { value: undefined, done: true });
});

test('an emitter keeps delivering when a listener throws', () => {
  const emitter = new Emitter();
  const errors = [];
  emitter.onListenerError = (error) => errors.push(error);
  const got = [];
  emitter.on('x', () => {
    throw new Error('bad listener');
  });
  const off = emitter.on('x', (v) => got.push(v));
  assert.equal(emitter.emit('x', 1), true);
  off();
  emitter.emit('x', 2);
  assert.deepEqual(got, [1]);
  assert.equal(errors.length, 2);
  assert.equal(emitter.emit('nobody', 0), false);
});

test('connect refuses credentials in the URL and more than one credential', async () => {
  const WebSocket = class {
    constructor() {
      throw new Error('must not be opened');
    }
  };
  for (const url of [
    'ws://127.0.0.1:1/ws?token=secret',
    'ws://127.0.0.1:1/ws?api_key=secret',
    'ws://user:secret@127.0.0.1:1/ws',
    'http://127.0.0.1:1/ws',
    'not a url',
  ]) {
    await assert.rejects(connect(url, { WebSocket }), TypeError, url);
  }
  assert.throws(() => new Client('ws://127.0.0.1:1/ws', { token: 'a', password: 'b', WebSocket }), /one credential/);
  assert.throws(() => new Client([], { WebSocket }), TypeError);
});

test('RpcError round-trips the JSON-RPC error member', () => {
  const error = RpcError.from({ code: -32003, message: 'forbidden', data: { field: 'x' } });
  assert.equal(error.code, -32003);
  assert.deepEqual(error.toJSON(), { code: -32003, message: 'forbidden', data: { field: 'x' } });
  assert.equal(RpcError.from('garbage').code, -32603);
  assert.equal(error.name, 'RpcError');
});

/**
 * A socket whose far end is the test: `answer(method, params)` gives each
 * call's result (a promise delays it), `push(method, params)` sends a push.
 */
class ScriptedGateway {
  /** @type {any[]} every call frame the client sent */
  calls = [];
  /** @type {any} the client's socket */
  socket = null;
  /** @type {(method: string, params: any) => unknown} */
  answer = () => ({});

  get WebSocket() {
    const gateway = this;
    return class {
      readyState = 1;
      /** @type {Map<string, ((event: any) => void)[]>} */
      listeners = new Map();
      constructor() {
        gateway.socket = this;
        setTimeout(() => gateway.push('welcome', { connId: 'c-1', nodeId: 'n-1' }), 0);
      }
      /** @param {string} type @param {(event: any) => void} listener */
      addEventListener(type, listener) {
        this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
      }
      /** @param {string} text */
      send(text) {
        const frame = JSON.parse(text);
        gateway.calls.push(frame);
        void Promise.resolve(gateway.answer(frame.method, frame.params)).then((result) =>
          this.emit('message', { data: JSON.stringify({ jsonrpc: '2.0', id: frame.id, result }) }),
        );
      }
      close() {
        if (this.readyState === 3) return;
        this.readyState = 3;
        this.emit('close', { code: 1000, reason: '' });
      }
      /** @param {string} type @param {any} event */
      emit(type, event) {
        for (const listener of this.listeners.get(type) ?? []) listener(event);
      }
    };
  }

  /** @param {string} method @param {unknown} params */
  push(method, params) {
    this.socket.emit('message', { data: JSON.stringify({ jsonrpc: '2.0', method, params }) });
  }

  /** @param {string} method */
  count(method) {
    return this.calls.filter((c) => c.method === method).length;
  }
}

test('epoch.changed: the same epoch reads nothing, a new one reads the log again and reports it', async () => {
  const gateway = new ScriptedGateway();
  const channel = 'feed:x';
  let epoch = 'e1';
  /** @type {any[]} the channel's log in the current epoch */
  let log = [];
  /** @type {Promise<void> | null} history answers wait for it */
  let gate = null;
  const message = (/** @type {number} */ offset, /** @type {string} */ data, /** @type {number} */ timestamp) => ({
    channel,
    event: 'm',
    data,
    offset,
    timestamp,
  });
  gateway.answer = async (method, params) => {
    const latest = log.length > 0 ? log[log.length - 1].offset : 0;
    switch (method) {
      case 'connect':
        return { connId: 'c-1', nodeId: 'n-1', role: 'operator', scopes: ['operator.read'] };
      case 'history': {
        if (gate) await gate;
        const changed = params.epoch !== undefined && params.epoch !== epoch;
        const events = log.filter((e) => e.offset > (changed ? 0 : (params.since ?? 0)));
        return { events, latest, complete: !changed, more: false, epoch, ...(changed ? { epochChanged: true } : {}) };
      }
      case 'subscribe':
        return { channels: params.channels, recovered: { [channel]: { replayed: 0, latest, complete: true, epoch } } };
      default:
        return {};
    }
  };
  const client = await connect('ws://scripted.invalid/ws', {
    WebSocket: gateway.WebSocket,
    token: 't',
    pingIntervalMs: 0,
  });
  try {
    /** @type {any[]} */
    const pushes = [];
    client.on('epoch.changed', (p) => pushes.push(p));
    /** @type {any[]} */
    const got = [];
    /** @type {any[]} */
    const resets = [];
    log = [message(1, 'old-1', 100), message(2, 'old-2', 101)];
    const sub = await client.subscribe(channel, { recover: true, onMessage: (m) => got.push(m) });
    sub.on('reset', (r) => resets.push(r));
    assert.equal(client.epoch, 'e1');
    log.push(message(3, 'old-3', 102));
    gateway.push('notify', log[2]);
    assert.deepEqual(got.map((m) => m.data), ['old-3']);

    // The epoch the client has: nothing is read, nothing held.
    const reads = gateway.count('history');
    gateway.push('epoch.changed', { epoch: 'e1' });
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(gateway.count('history'), reads);
    assert.equal(client.epochChanges, 0);
    assert.deepEqual(pushes, [{ epoch: 'e1' }]);

    // A new epoch whose log started over: the push alone makes the client
    // ask; offset 2 arrives live meanwhile and is held back until the log
    // has been read again.
    epoch = 'e2';
    log = [message(1, 'new-1', 200)];
    /** @type {() => void} */
    let open = () => {};
    gate = new Promise((resolve) => {
      open = () => resolve(undefined);
    });
    gateway.push('epoch.changed', { epoch: 'e2' });
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(gateway.count('history'), reads + 1, 'one read asks for the epoch');
    log.push(message(2, 'new-2', 201));
    gateway.push('notify', log[1]);
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(got.map((m) => m.data), ['old-3'], 'held back while checking');
    gate = null;
    open();
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(got.map((m) => [m.offset, m.data]), [
      [3, 'old-3'],
      [1, 'new-1'],
      [2, 'new-2'],
    ]);
    assert.equal(client.epoch, 'e2');
    assert.equal(client.epochChanges, 1);
    assert.deepEqual(resets, [
      { channel, epoch: 'e2', previousEpoch: 'e1', epochChanged: true, complete: false },
    ]);
    assert.deepEqual(pushes, [{ epoch: 'e1' }, { epoch: 'e2' }]);
    assert.equal(sub.lastOffset, 2);
  } finally {
    await client.close();
  }
});
