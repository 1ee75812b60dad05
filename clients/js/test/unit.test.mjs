// The parts that need no gateway: the bounded queue, the emitter, and the
// checks `connect` makes before opening anything.

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
