// Against one real gateway on the in-memory backend: calls and typed
// errors, credentials, pushes, subscriptions, an agent, and reconnecting
// after the gateway is SIGKILLed and restarted.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  ClientClosedError,
  ConnectionError,
  ErrorCode,
  RpcError,
  TimeoutError,
  connect,
} from '../src/index.js';
import { ADMIN, Gateway, NODE, WRITER, nextOf, sleep, until, within } from '../test-support/gateway.mjs';

const FAST_RECONNECT = { initialDelayMs: 50, maxDelayMs: 400 };

describe('one gateway', () => {
  /** @type {Gateway} */
  let gateway;
  /** @type {import('../src/index.js').Client[]} */
  const clients = [];
  /** @param {any} options */
  const open = async (options) => {
    const client = await connect(gateway.url, { reconnect: FAST_RECONNECT, ...options });
    clients.push(client);
    return client;
  };

  before(async () => {
    gateway = await Gateway.start();
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await gateway?.stop();
  });

  test('authenticates in-band and answers calls', async () => {
    const client = await open({ token: ADMIN, client: { name: 'js-test', version: '1' } });
    assert.equal(client.state, 'open');
    // Nothing came with the upgrade: the credentials went in `connect`.
    assert.equal(client.welcome.authenticated, false);
    assert.equal(client.hello.authenticated, true);
    assert.equal(client.hello.role, 'operator');
    assert.deepEqual(client.hello.scopes, ['operator.admin']);
    assert.equal(client.connId, client.welcome.connId);

    const pong = await client.call('ping');
    assert.equal(pong.pong, true);
    assert.ok(Number.isInteger(pong.ts));
    const presence = await client.call('system.presence', {});
    const me = presence.clients.find((/** @type {any} */ c) => c.connId === client.connId);
    assert.ok(me, `this connection is listed: ${JSON.stringify(presence)}`);
    assert.equal(me.identity, 'admin');
  });

  test('error answers are RpcErrors with the gateway code and data', async () => {
    const admin = await open({ token: ADMIN });
    const writer = await open({ token: WRITER });

    const missing = await admin.call('no.such.method').catch((e) => e);
    assert.ok(missing instanceof RpcError, String(missing));
    assert.equal(missing.code, ErrorCode.METHOD_NOT_FOUND);
    assert.deepEqual(missing.data, { method: 'no.such.method' });

    const invalid = await admin.call('history', { channel: 'public:no-log' }).catch((e) => e);
    assert.ok(invalid instanceof RpcError);
    assert.equal(invalid.code, ErrorCode.INVALID_PARAMS);
    assert.equal(invalid.data.field, 'channel');
    assert.match(invalid.data.reason, /no history/);

    const forbidden = await writer.call('clients.list', {}).catch((e) => e);
    assert.ok(forbidden instanceof RpcError);
    assert.equal(forbidden.code, ErrorCode.FORBIDDEN);

    const notFound = await writer.call('session.get', { sessionId: 'no-such-session' }).catch((e) => e);
    assert.equal(notFound.code, ErrorCode.NOT_FOUND);

    await writer.createSession({ sessionId: 'twice' });
    const conflict = await writer.createSession({ sessionId: 'twice' }).catch((e) => e);
    assert.ok(conflict instanceof RpcError);
    assert.equal(conflict.code, ErrorCode.CONFLICT);

    // The connection is still fine after errors.
    assert.equal((await writer.call('ping')).pong, true);
  });

  test('a bad credential rejects connect with -32000 and leaves nothing running', async () => {
    const error = await connect(gateway.url, { token: 'wrong-token-0123456789abcdefgh' }).catch((e) => e);
    assert.ok(error instanceof RpcError, String(error));
    assert.equal(error.code, ErrorCode.UNAUTHORIZED);

    const password = await connect(gateway.url, { password: 'not configured at all' }).catch((e) => e);
    assert.ok(password instanceof RpcError, String(password));
    assert.equal(password.code, ErrorCode.UNAUTHORIZED);

    await assert.rejects(connect(gateway.url, { token: ADMIN, apiKey: 'x' }), TypeError);
    // Credentials never travel in the URL.
    await assert.rejects(connect(`${gateway.url}?token=${ADMIN}`, { token: ADMIN }), /URL/);
    await assert.rejects(connect(gateway.url.replace('ws://', 'ws://user:pw@'), {}), /URL/);
  });

  test('pushes reach on() listeners and notifications() iterators', async () => {
    const admin = await open({ token: ADMIN });
    const writer = await open({ token: WRITER });
    /** @type {any[]} */
    const seen = [];
    const off = writer.on('notify', (params) => seen.push(params));
    const iterator = writer.notifications('notify');

    // `user:writer` is one of the writer's implicit channels.
    const reply = await admin.publish('user:writer', 'hello', { n: 1 });
    assert.ok(reply.delivered >= 1);
    const pushed = await nextOf(iterator, 5000, 'notify through the iterator');
    assert.deepEqual([pushed.channel, pushed.event, pushed.data], ['user:writer', 'hello', { n: 1 }]);
    await until(() => seen.length === 1, 5000, 'notify through on()');
    assert.deepEqual(seen[0], pushed);

    off();
    await iterator.return?.();
    await admin.publish('user:writer', 'again', {});
    await sleep(200);
    assert.equal(seen.length, 1, 'no delivery after off()');

    // presence.join of another connection on a channel with presence.
    const joins = admin.notifications('presence.join');
    await admin.subscribe('public:lobby');
    await writer.subscribe('public:lobby');
    const join = await until(async () => {
      const p = await nextOf(joins, 5000, 'presence.join');
      return p.connId === writer.connId ? p : null;
    }, 5000, 'the writer joining public:lobby');
    assert.equal(join.identity, 'writer');
  });

  test('subscriptions: iterator, callback, unsubscribe', async () => {
    const admin = await open({ token: ADMIN });
    const reader = await open({ token: WRITER });
    const iterated = await reader.subscribe('public:news');
    /** @type {any[]} */
    const called = [];
    const callback = await reader.subscribe('public:weather', { onMessage: (m) => called.push(m) });

    await admin.publish('public:news', 'headline', { title: 'a' });
    await admin.publish('public:weather', 'forecast', 'sun');
    const first = await nextOf(iterated[Symbol.asyncIterator](), 5000, 'news');
    assert.deepEqual([first.channel, first.event, first.data], ['public:news', 'headline', { title: 'a' }]);
    await until(() => called.length === 1, 5000, 'weather callback');
    assert.equal(called[0].data, 'sun');

    await callback.unsubscribe();
    assert.equal(callback.active, false);
    const after = await admin.publish('public:weather', 'forecast', 'rain');
    assert.equal(after.delivered, 0, 'nobody is subscribed any more');

    // A channel with history: offsets, and `recover` replays from an offset.
    for (const n of [1, 2, 3]) await admin.publish('feed:log', 'line', n);
    const replay = await reader.subscribe('feed:log', { recover: 1 });
    const it = replay[Symbol.asyncIterator]();
    const replayed = [await nextOf(it, 5000, 'replay 2'), await nextOf(it, 5000, 'replay 3')];
    assert.deepEqual(
      replayed.map((m) => [m.offset, m.data]),
      [
        [2, 2],
        [3, 3],
      ],
    );
    assert.equal(replay.lastOffset, 3);
  });

  test('an agent answers tools, errors and cancellations', async () => {
    const agent = await open({ token: NODE, role: 'node', client: { name: 'calc' } });
    const operator = await open({ token: WRITER });
    /** @type {AbortSignal | undefined} */
    let slowSignal;
    agent.tool('add', (req) => req.args.a + req.args.b);
    agent.tool('refuse', () => {
      throw new RpcError(ErrorCode.FORBIDDEN, 'not today', { why: 'test' });
    });
    agent.tool('crash', () => {
      throw new Error('boom');
    });
    agent.tool('slow', (req) => {
      slowSignal = req.signal;
      return new Promise(() => {}); // never answers
    });
    const entry = await agent.register({ agentId: 'calc', tools: [{ name: 'add' }, { name: 'refuse' }] });
    assert.equal(entry.agentId, 'calc');

    const sum = await operator.invoke({ nodeId: 'calc', command: 'add', params: { a: 2, b: 3 } });
    assert.equal(sum.result, 5);
    assert.equal(sum.nodeId, 'calc');

    const refused = await operator.invoke({ nodeId: 'calc', command: 'refuse' }).catch((e) => e);
    assert.ok(refused instanceof RpcError);
    assert.equal(refused.code, ErrorCode.FORBIDDEN);
    assert.equal(refused.message, 'not today');
    assert.deepEqual(refused.data, { why: 'test' });

    const crashed = await operator.invoke({ nodeId: 'calc', command: 'crash' }).catch((e) => e);
    assert.equal(crashed.code, ErrorCode.INTERNAL_ERROR);
    assert.equal(crashed.message, 'boom');

    const unknown = await operator.invoke({ nodeId: 'calc', command: 'divide' }).catch((e) => e);
    assert.equal(unknown.code, ErrorCode.METHOD_NOT_FOUND);

    // The gateway's own timeout.
    const expired = await operator.invoke({ nodeId: 'calc', command: 'slow', timeoutMs: 300 }).catch((e) => e);
    assert.ok(expired instanceof RpcError, String(expired));
    assert.equal(expired.code, ErrorCode.TIMEOUT);

    // The client's timeout, shorter than the gateway's.
    const started = Date.now();
    const timedOut = await operator
      .invoke({ nodeId: 'calc', command: 'slow', timeoutMs: 5000 }, { timeout: 200 })
      .catch((e) => e);
    assert.ok(timedOut instanceof TimeoutError, String(timedOut));
    assert.ok(Date.now() - started < 2000);

    // Aborting the call cancels it at the agent (invoke.cancel both ways).
    slowSignal = undefined;
    const controller = new AbortController();
    const aborted = operator.invoke({ nodeId: 'calc', command: 'slow', timeoutMs: 10_000 }, { signal: controller.signal });
    await until(() => slowSignal, 5000, 'the agent to get the call');
    controller.abort();
    await assert.rejects(aborted, { name: 'AbortError' });
    await until(() => slowSignal?.aborted, 5000, 'the agent to see the cancellation');
    assert.equal(/** @type {any} */ (slowSignal).reason.code, ErrorCode.TIMEOUT);
  });

  test('an agent streams a run into the caller\'s session; cancelling it aborts the handler', async () => {
    const agent = await open({ token: NODE, role: 'node' });
    /** @type {AbortSignal | undefined} */
    let foreverSignal;
    agent.handle('agent.run', async (req) => {
      if (req.params.task === 'forever') {
        foreverSignal = req.signal;
        await new Promise((resolve) => req.signal.addEventListener('abort', resolve));
        throw req.signal.reason;
      }
      // Events go out at once: the run is active before the request
      // reaches the agent.
      const offsets = [];
      for (const word of req.params.task.split(' ')) {
        const sent = await req.event('token', { text: word });
        assert.equal(sent.error, undefined);
        offsets.push(sent.offset);
      }
      return { output: req.params.task.toUpperCase(), offsets };
    });
    await agent.register({ agentId: 'writer-bot', capabilities: ['agent.run'] });

    const operator = await open({ token: WRITER });
    const session = await operator.createSession({ sessionId: 'run-1' });
    const started = await operator.call('agent.run', { agentId: 'writer-bot', sessionId: 'run-1', task: 'one two three' });
    assert.equal(started.sessionId, 'run-1');
    const events = session[Symbol.asyncIterator]();
    const streamed = [];
    for (let i = 0; i < 3; i++) streamed.push(await nextOf(events, 5000, `agent.event ${i + 1}`));
    assert.deepEqual(
      streamed.map((e) => [e.method, e.offset, e.type, e.data.text, e.runId]),
      ['one', 'two', 'three'].map((w, i) => ['agent.event', i + 1, 'token', w, started.runId]),
    );
    const run = await operator.call('agent.wait', { sessionId: 'run-1', timeoutMs: 5000 }, { timeout: 10_000 });
    assert.equal(run.status, 'completed');
    assert.deepEqual(run.result, { output: 'ONE TWO THREE', offsets: [1, 2, 3] });

    await operator.createSession({ sessionId: 'run-2' });
    await operator.call('agent.run', { agentId: 'writer-bot', sessionId: 'run-2', task: 'forever' });
    await until(() => foreverSignal, 5000, 'the agent to start the run');
    await operator.call('agent.cancel', { sessionId: 'run-2' });
    await until(() => foreverSignal?.aborted, 5000, 'agent.cancel to abort the handler');
  });

  test('reconnects after a SIGKILL: re-authenticates, re-subscribes, re-registers', async () => {
    const agent = await open({ token: NODE, role: 'node' });
    agent.tool('echo', (req) => req.args);
    agent.tool('hang', () => new Promise(() => {}));
    await agent.register({ agentId: 'phoenix', tools: [{ name: 'echo' }, { name: 'hang' }] });
    const reader = await open({ token: WRITER });
    const news = await reader.subscribe('public:phoenix');
    const operator = await open({ token: ADMIN });
    // Backs off exponentially up to its cap, and gives up after 4 attempts
    // while the gateway is down.
    const quitter = await open({
      token: WRITER,
      reconnect: { initialDelayMs: 20, factor: 2, maxDelayMs: 60, jitter: 0, maxAttempts: 4 },
    });
    /** @type {number[]} */
    const delays = [];
    quitter.on('reconnecting', (e) => delays.push(e.delayMs));

    /** @type {Record<string, any[]>} */
    const states = { close: [], reconnecting: [], open: [] };
    for (const event of Object.keys(states)) reader.on(event, (e) => states[event].push(e));
    const agentOpen = new Promise((resolve) => agent.once('open', resolve));
    const readerOpen = new Promise((resolve) => reader.once('open', resolve));
    const quitterClosed = new Promise((resolve) => quitter.on('close', (e) => !e.willReconnect && resolve(e)));

    const inFlight = operator.invoke({ nodeId: 'phoenix', command: 'hang', timeoutMs: 20_000 }).catch((e) => e);
    await sleep(100);
    const oldConnId = reader.connId;
    await gateway.kill9();

    // A call in flight when the connection drops fails: its fate is unknown.
    const lost = await within(inFlight, 5000, 'the in-flight call to fail');
    assert.ok(lost instanceof ConnectionError, String(lost));
    await until(() => states.close.length === 1 && states.reconnecting.length >= 1, 5000, 'close, then reconnecting');
    assert.equal(states.close[0].willReconnect, true);
    assert.equal(reader.state, 'reconnecting');

    const gaveUp = await within(quitterClosed, 5000, 'the client with maxAttempts to give up');
    assert.deepEqual(delays, [20, 40, 60, 60]);
    assert.equal(quitter.state, 'closed');
    assert.ok(gaveUp.error instanceof ClientClosedError);
    await assert.rejects(quitter.call('ping'), ClientClosedError);

    // A call made while down waits for the connection.
    const queued = reader.call('ping', undefined, { timeout: 20_000 });
    await sleep(300);
    await gateway.restart();

    const reopened = /** @type {any} */ (await within(readerOpen, 10_000, 'the reader to reconnect'));
    await within(agentOpen, 10_000, 'the agent to reconnect');
    assert.equal(reopened.reconnected, true);
    assert.notEqual(reader.connId, oldConnId);
    assert.equal((await within(queued, 5000, 'the queued call')).pong, true);
    assert.equal(reader.state, 'open');

    // The gateway lost everything; the clients restored what they held.
    const admin = await open({ token: ADMIN });
    const sent = await admin.publish('public:phoenix', 'back', { ok: true });
    assert.equal(sent.delivered, 1, 're-subscribed');
    const message = await nextOf(news[Symbol.asyncIterator](), 5000, 'the message after the restart');
    assert.deepEqual([message.event, message.data], ['back', { ok: true }]);
    const echoed = await admin.invoke({ nodeId: 'phoenix', command: 'echo', params: { again: 1 } });
    assert.deepEqual(echoed.result, { again: 1 }, 're-registered');
  });

  test('a connection that stops answering is dropped by the keep-alive ping and made again', async () => {
    const client = await open({ token: WRITER, pingIntervalMs: 200, pingTimeoutMs: 300, connectTimeoutMs: 1000 });
    /** @type {any[]} */
    const closes = [];
    client.on('close', (e) => closes.push(e));
    const reopened = new Promise((resolve) => client.once('open', resolve));
    const first = client.connId;
    gateway.signal('SIGSTOP');
    try {
      // Frozen: the TCP connection stays up, nothing answers.
      await until(() => closes.length === 1, 5000, 'the ping to time out');
      assert.equal(closes[0].code, 4000);
      assert.equal(closes[0].willReconnect, true);
    } finally {
      gateway.signal('SIGCONT');
    }
    const back = /** @type {any} */ (await within(reopened, 10_000, 'the client to reconnect'));
    assert.equal(back.reconnected, true);
    assert.notEqual(client.connId, first);
    assert.equal((await client.call('ping')).pong, true);
  });

  test('close() ends everything', async () => {
    const agent = await open({ token: NODE, role: 'node' });
    agent.tool('hang', () => new Promise(() => {}));
    await agent.register({ agentId: 'sloth', tools: [{ name: 'hang' }] });
    const client = await open({ token: WRITER });
    const sub = await client.subscribe('public:closing');
    const iterator = sub[Symbol.asyncIterator]();
    const pending = client.invoke({ nodeId: 'sloth', command: 'hang', timeoutMs: 20_000 }).catch((e) => e);
    await sleep(100);
    await client.close();
    assert.equal(client.state, 'closed');
    const end = await within(iterator.next(), 2000, 'the iterator to end');
    assert.equal(end.done, true);
    const failed = await within(pending, 2000, 'the pending call to fail');
    assert.ok(failed instanceof ClientClosedError, String(failed));
    await assert.rejects(client.call('ping'), ClientClosedError);
  });
});
