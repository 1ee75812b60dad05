// Two gateway instances on one redis-server (started here on a free
// port): channels across instances, an agent on B serving a tool called
// from A with progress, an approval asked by that agent and decided by an
// operator, and, after instance A is SIGKILLed and restarted, a session
// resumed and a channel recovered with no gap and no duplicate.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { ErrorCode, RpcError } from '../src/index.js';
import { ADMIN, Gateway, NODE, WRITER, nextOf, sleep, twoInstances, until, within } from '../test-support/gateway.mjs';

describe('a cluster of two instances', () => {
  const pair = twoInstances('a', 'b', 400);
  const { open } = pair;
  /** @type {Gateway} */
  let a;
  /** @type {Gateway} */
  let b;
  before(() => ({ a, b } = pair));

  test('clients land on the instance they dial', async () => {
    const onA = await open(a, { token: WRITER });
    const onB = await open(b, { token: WRITER });
    assert.equal(onA.nodeId, 'a');
    assert.equal(onB.nodeId, 'b');
  });

  test('a publication on B reaches a subscriber on A', async () => {
    const subscriber = await open(a, { token: WRITER });
    const publisher = await open(b, { token: ADMIN });
    const plain = await subscriber.subscribe('public:cross');
    /** @type {any[]} */
    const logged = [];
    await subscriber.subscribe('feed:cross', { recover: true, onMessage: (m) => logged.push(m) });

    const sent = await publisher.publish('public:cross', 'hello', { from: 'b' });
    assert.equal(sent.delivered, 1);
    const got = await nextOf(plain[Symbol.asyncIterator](), 5000, 'public:cross on a');
    assert.deepEqual([got.channel, got.event, got.data], ['public:cross', 'hello', { from: 'b' }]);

    for (const n of [1, 2, 3]) await publisher.publish('feed:cross', 'n', n);
    await until(() => logged.length === 3, 5000, 'three logged publications on a');
    assert.deepEqual(
      logged.map((m) => [m.offset, m.data]),
      [
        [1, 1],
        [2, 2],
        [3, 3],
      ],
    );
  });

  test('an agent on B serves a tool called from A, with progress', async () => {
    const agent = await open(b, { token: NODE, role: 'node', client: { name: 'indexer' } });
    agent.tool('count', async (req) => {
      for (const step of [1, 2, 3]) {
        assert.equal(req.progress({ step }), true);
        await sleep(10);
      }
      return { counted: req.args.items.length, caller: req.caller.identity };
    });
    await agent.register({
      agentId: 'indexer',
      capabilities: ['indexing'],
      tools: [{ name: 'count', description: 'Counts items', parameters: { type: 'object' } }],
    });

    const operator = await open(a, { token: WRITER });
    const tools = await operator.call('tools.list', {});
    assert.ok(JSON.stringify(tools).includes('count'), JSON.stringify(tools));
    /** @type {any[]} */
    const progress = [];
    const reply = await operator.invoke(
      { capability: 'indexing', command: 'count', params: { items: ['x', 'y'] }, timeoutMs: 10_000 },
      { onProgress: (data) => progress.push(data) },
    );
    assert.equal(reply.nodeId, 'indexer');
    assert.deepEqual(reply.result, { counted: 2, caller: 'writer' });
    // Progress reaches the caller before the reply.
    assert.deepEqual(progress, [{ step: 1 }, { step: 2 }, { step: 3 }]);
  });

  test('the agent asks for an approval; an operator on A decides', async () => {
    const agent = await open(b, { token: NODE, role: 'node' });
    agent.tool('delete_file', async (req) => {
      const decided = await req.requestApproval({
        tool: 'delete_file',
        args: req.args,
        summary: `delete ${req.args.path}`,
        timeoutMs: 20_000,
      });
      if (decided.status !== 'approved') {
        throw new RpcError(ErrorCode.FORBIDDEN, `not approved: ${decided.status}`, { approvalId: decided.approvalId });
      }
      return { deleted: req.args.path, approvedBy: decided.decidedBy };
    });
    await agent.register({ agentId: 'files', tools: [{ name: 'delete_file' }] });

    const approver = await open(a, { token: ADMIN });
    const requests = approver.notifications('approval.requested');
    const caller = await open(a, { token: WRITER });

    const approved = caller.invoke({ nodeId: 'files', command: 'delete_file', params: { path: '/tmp/a' }, timeoutMs: 20_000 });
    const asked = await nextOf(requests, 5000, 'approval.requested on a');
    assert.equal(asked.tool, 'delete_file');
    assert.equal(asked.summary, 'delete /tmp/a');
    assert.deepEqual(asked.args, { path: '/tmp/a' });
    assert.equal(asked.requester, 'agent-1');
    assert.equal(asked.status, 'pending');
    const record = await approver.resolveApproval(asked.approvalId, 'approve', 'fine');
    assert.equal(record.status, 'approved');
    const done = await within(approved, 10_000, 'the approved call');
    assert.deepEqual(done.result, { deleted: '/tmp/a', approvedBy: 'admin' });

    const denied = caller
      .invoke({ nodeId: 'files', command: 'delete_file', params: { path: '/etc' }, timeoutMs: 20_000 })
      .catch((e) => e);
    const second = await nextOf(requests, 5000, 'the second approval.requested');
    await approver.resolveApproval(second.approvalId, 'deny', 'no');
    const refused = await within(denied, 10_000, 'the denied call');
    assert.ok(refused instanceof RpcError, String(refused));
    assert.equal(refused.code, ErrorCode.FORBIDDEN);
    assert.equal(refused.message, 'not approved: denied');
    assert.equal(refused.data.approvalId, second.approvalId);

    const late = await approver.resolveApproval(second.approvalId, 'approve').catch((e) => e);
    assert.equal(late.code, ErrorCode.CONFLICT, 'the first decision won');
  });

  test('after instance A is SIGKILLed and restarted, the session resumes and the channel recovers with no gap', async () => {
    const owner = await open(a, { token: WRITER, client: { name: 'owner' } });
    const session = await owner.createSession({ sessionId: 'resume-1', meta: { topic: 'test' } });
    assert.ok(session.resumeToken);
    const feed = await owner.subscribe('feed:resume', { recover: true });
    const member = await open(b, { token: ADMIN });
    const joined = await member.joinSession('resume-1', { onEvent: () => {} });
    assert.equal(joined.record.sessionId, 'resume-1');
    // A member on A too: it joins again and reads what it missed.
    const watcher = await open(a, { token: ADMIN });
    /** @type {any[]} */
    const watched = [];
    await watcher.joinSession('resume-1', { onEvent: (e) => watched.push(e) });

    /** @type {any[]} */
    const resumed = [];
    session.on('resumed', (r) => resumed.push(r));
    /** @type {any[]} */
    const recovered = [];
    feed.on('recovered', (r) => recovered.push(r));
    const events = session[Symbol.asyncIterator]();
    const messages = feed[Symbol.asyncIterator]();
    let n = 0;
    let m = 0;
    const send = async () => (await joined.send('step', { n: ++n })).offset;
    const publish = async () => (await member.publish('feed:resume', 'tick', { m: ++m })).offset;

    for (let i = 0; i < 3; i++) await send();
    for (let i = 0; i < 2; i++) await publish();
    for (const offset of [1, 2, 3]) assert.equal((await nextOf(events, 5000, `event ${offset}`)).offset, offset);
    for (const offset of [1, 2]) assert.equal((await nextOf(messages, 5000, `message ${offset}`)).offset, offset);

    await until(() => watched.length === 3, 5000, 'the watcher to see events 1-3');
    const reconnected = new Promise((resolve) => owner.once('open', resolve));
    const watcherBack = new Promise((resolve) => watcher.once('open', resolve));
    await a.kill9();
    await until(() => owner.state === 'reconnecting', 5000, 'the owner to notice');
    // Meanwhile, on B: the session and the channel go on.
    for (let i = 0; i < 3; i++) await send();
    for (let i = 0; i < 2; i++) await publish();
    await a.restart();
    const opened = /** @type {any} */ (await within(reconnected, 15_000, 'the owner to reconnect to A'));
    assert.equal(opened.reconnected, true);
    assert.equal(owner.nodeId, 'a');
    await within(watcherBack, 15_000, 'the watcher to reconnect to A');
    for (let i = 0; i < 2; i++) await send();
    for (let i = 0; i < 2; i++) await publish();

    // Every event once, in order: 1-3 before, 4-6 replayed, 7-8 live.
    /** @type {any[]} */
    const after = [];
    while (after.length < 5) after.push(await nextOf(events, 5000, `event ${after.length + 4}`));
    assert.deepEqual(
      after.map((e) => [e.method, e.offset, e.data.n]),
      [4, 5, 6, 7, 8].map((o) => ['session.event', o, o]),
    );
    assert.equal(session.lastOffset, 8);
    assert.equal(resumed.length, 1);
    assert.equal(resumed[0].resumed, true);
    assert.equal(resumed[0].replayed, 3);
    assert.equal(resumed[0].complete, true);
    assert.equal(resumed[0].session.owner, owner.connId, 'the new connection owns the session');

    await until(() => watched.length === 8, 5000, 'the watcher to see events 4-8');
    assert.deepEqual(
      watched.map((e) => e.offset),
      [1, 2, 3, 4, 5, 6, 7, 8],
    );

    /** @type {any[]} */
    const later = [];
    while (later.length < 4) later.push(await nextOf(messages, 5000, `message ${later.length + 3}`));
    assert.deepEqual(
      later.map((x) => [x.offset, x.data.m]),
      [3, 4, 5, 6].map((o) => [o, o]),
    );
    assert.equal(recovered.length, 1);
    assert.equal(recovered[0].after, 2);
    assert.equal(recovered[0].replayed, 2);
    assert.equal(recovered[0].complete, true);

    // Nothing else arrives: no duplicate.
    await sleep(300);
    const extra = await Promise.race([events.next(), sleep(50).then(() => 'none')]);
    assert.equal(extra, 'none');
  });
});
