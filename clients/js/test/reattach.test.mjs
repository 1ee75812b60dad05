// An agent's gateway instance dies mid-run: the agent reconnects to the
// other instance, takes its run back (`agent.reattach`) and finishes it
// there (`agent.finish`); the caller's `waitRun` follows the run through the
// loss. Two instances of their own on a redis-server of its own: these
// tests kill one. And a run that cannot be taken back (its standalone
// gateway restarted empty) is aborted.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { ErrorCode } from '../src/index.js';
import { Gateway, NODE, NODE_TTL_MS, WRITER, nextOf, twoInstances, until, within } from '../test-support/gateway.mjs';

/** The longest single wait of these tests. */
const W = 10_000;
const FAST = { initialDelayMs: 50, maxDelayMs: 300 };

describe('a run whose agent\'s instance dies', () => {
  const pair = twoInstances('ra-a', 'ra-b');
  const { open } = pair;
  /** @type {Gateway} */
  let a;
  /** @type {Gateway} */
  let b;
  before(() => ({ a, b } = pair));
  const uid = () => Math.random().toString(36).slice(2, 10);

  test('goes on: the agent takes it back on the other instance and finishes it', async () => {
    /** @type {() => void} */
    let goOn = () => {};
    const released = new Promise((resolve) => {
      goOn = () => resolve(undefined);
    });
    /** @type {() => void} */
    let streamed = () => {};
    const twoLogged = new Promise((resolve) => {
      streamed = () => resolve(undefined);
    });
    /** @type {any[]} */
    const seen = [];
    const agentId = `phoenix-${uid()}`;
    const agent = await open([b.url, a.url], { token: NODE, role: 'node' });
    assert.equal(agent.nodeId, 'ra-b');
    /** @type {any[]} */
    const reported = [];
    agent.on('error', (e) => reported.push(e));
    agent.handle('agent.run', async (req) => {
      const offsets = [];
      for (const i of [0, 1]) offsets.push((await req.event('step', { i })).offset);
      streamed();
      await within(released, 3 * W, 'the test to let the run go on');
      // Sent while the run may not be taken back yet: it waits for it.
      const last = await req.event('step', { i: 2 });
      assert.equal(last.error, undefined);
      offsets.push(last.offset);
      seen.push({ aborted: req.signal.aborted, offsets });
      return { done: req.params.task };
    });
    await agent.register({ agentId, capabilities: ['agent.run'] });

    const operator = await open(a.url, { token: WRITER });
    const sessionId = `keep-going-${uid()}`;
    const session = await operator.createSession({ sessionId });
    const events = session[Symbol.asyncIterator]();
    const started = await operator.call('agent.run', { agentId, sessionId, task: 'keep going' });
    const first = [await nextOf(events, W, 'event 0'), await nextOf(events, W, 'event 1')];
    assert.deepEqual(
      first.map((e) => e.data.i),
      [0, 1],
    );
    // The agent has both answers (the members may see an event first).
    await within(twoLogged, W, 'the agent to have its first two events logged');

    await b.kill9();
    try {
      // The agent is back, on the other instance; its run goes on.
      await until(() => agent.state === 'open' && agent.nodeId === 'ra-a', W, 'the agent to reconnect to ra-a');
      goOn();
      // The caller's wait follows the run through the loss.
      const record = await operator.waitRun(sessionId, { timeoutMs: 6 * W });
      assert.equal(record.status, 'completed', JSON.stringify(record));
      assert.deepEqual(record.result, { done: 'keep going' });
      assert.equal(record.attached, 1, JSON.stringify(record));
      assert.equal(record.instanceId, 'ra-a', JSON.stringify(record));
      assert.equal(record.runId, started.runId);

      const last = await nextOf(events, W, 'event 2');
      assert.equal(last.method, 'agent.event');
      assert.deepEqual(last.data, { i: 2 });
      assert.equal(last.runId, started.runId);
      assert.equal(last.offset, first[1].offset + 1);
      assert.deepEqual(seen, [{ aborted: false, offsets: [first[0].offset, first[1].offset, last.offset] }]);
      assert.deepEqual(reported, []);
    } finally {
      await b.restart();
    }
  });

  test('without follow, the wait ends with the loss', async () => {
    /** @type {() => void} */
    let running = () => {};
    const started = new Promise((resolve) => {
      running = () => resolve(undefined);
    });
    /** @type {AbortSignal | undefined} */
    let signal;
    const agentId = `lost-${uid()}`;
    // No other instance to go to: it gives up reconnecting.
    const agent = await open(b.url, { token: NODE, role: 'node', reconnect: { ...FAST, maxAttempts: 1 } });
    agent.on('error', () => {});
    agent.handle('agent.run', async (req) => {
      signal = req.signal;
      running();
      await new Promise((resolve) => req.signal.addEventListener('abort', resolve, { once: true }));
      return 'never';
    });
    await agent.register({ agentId, capabilities: ['agent.run'] });

    const operator = await open(a.url, { token: WRITER });
    const sessionId = `doomed-${uid()}`;
    await operator.createSession({ sessionId });
    await operator.call('agent.run', { agentId, sessionId, task: 'doomed' });
    await within(started, W, 'the agent to start the run');

    const killedAt = Date.now();
    await b.kill9();
    try {
      const record = await operator.waitRun(sessionId, { timeoutMs: 3 * W, follow: false });
      assert.equal(record.status, 'error', JSON.stringify(record));
      const data = record.error.data;
      assert.equal(data.reason, 'instance_lost', JSON.stringify(record));
      assert.equal(data.instanceId, 'ra-b', JSON.stringify(record));
      assert.ok(data.resumableUntil > Date.now(), JSON.stringify(record));
      // Noticed a heartbeat after the node TTL, not at the wait's timeout.
      assert.ok(Date.now() - killedAt < NODE_TTL_MS + W, `${Date.now() - killedAt} ms`);
      // Closed for good, the agent gave its run up.
      await until(() => agent.state === 'closed' && signal?.aborted, W, 'the run to be aborted');
    } finally {
      await b.restart();
    }
  });

  test('one that cannot be taken back is aborted and reported', async () => {
    const solo = await Gateway.start();
    try {
      /** @type {AbortSignal | undefined} */
      let signal;
      /** @type {any[]} */
      const afterwards = [];
      const agent = await open(solo.url, { token: NODE, role: 'node' });
      /** @type {any[]} */
      const reported = [];
      agent.on('error', (e) => reported.push(e));
      agent.handle('agent.run', async (req) => {
        signal = req.signal;
        await new Promise((resolve) => req.signal.addEventListener('abort', resolve, { once: true }));
        afterwards.push(await req.event('step', { late: true }));
        throw req.signal.reason;
      });
      const agentId = `solo-${uid()}`;
      await agent.register({ agentId, capabilities: ['agent.run'] });
      const operator = await open(solo.url, { token: WRITER, reconnect: false });
      const sessionId = `forgotten-${uid()}`;
      await operator.createSession({ sessionId });
      await operator.call('agent.run', { agentId, sessionId, task: 'forgotten' });
      await until(() => signal, W, 'the agent to start the run');

      // Restarted, the gateway knows nothing of the run: -32001.
      await solo.kill9();
      await solo.restart();
      await until(() => signal?.aborted, W, 'the run to be aborted');
      assert.equal(/** @type {any} */ (signal).reason.code, ErrorCode.NOT_FOUND);
      assert.deepEqual(
        reported.map((e) => [e.context, e.error.code]),
        [['agent.reattach', ErrorCode.NOT_FOUND]],
      );
      // Its events go nowhere, without waiting.
      await until(() => afterwards.length === 1, W, 'the aborted handler to send an event');
      assert.equal(afterwards[0].delivered, 0);
      assert.equal(afterwards[0].error.code, ErrorCode.NOT_FOUND);
    } finally {
      await solo.stop();
    }
  });
});
