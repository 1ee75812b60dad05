// Redis restarts empty under two gateway instances: channel and session
// logs start over at offset 1 under a new epoch. A client that had received
// offsets 1..N must not take the new log's first N entries for duplicates,
// whether its socket stayed up through the restart or it was away and
// recovers on reconnect; and it is told that the logs started over.
//
// These tests have their own redis-server and instances: they kill it.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { ErrorCode, RpcError } from '../src/index.js';
import { ADMIN, Gateway, Redis, WRITER, nextOf, sleep, twoInstances, until, within } from '../test-support/gateway.mjs';

const W = 10_000;

describe('an empty Redis restart', () => {
  const pair = twoInstances('ep-a', 'ep-b');
  const { open } = pair;
  /** @type {Redis} */
  let redis;
  /** @type {Gateway} */
  let a;
  /** @type {Gateway} */
  let b;
  before(() => ({ redis, a, b } = pair));

  /**
   * SIGKILL Redis, wait until the instances say they are not ready, start it
   * again empty on the same port and wait until they are.
   * @param {Gateway[]} gateways
   */
  const restartRedisEmpty = async (gateways) => {
    await redis.kill9();
    for (const gw of gateways) await until(async () => (await gw.readyStatus()) === 503, W, `${gw.id}: /ready 503`);
    await redis.restart();
    for (const gw of gateways) await until(async () => (await gw.readyStatus()) === 200, W, `${gw.id}: /ready 200`);
  };

  /**
   * Send once the session is back in Redis (its owner's instance writes it
   * back within a heartbeat of Redis returning).
   * @param {import('../src/index.js').Session} session
   * @param {unknown} data
   */
  const sendWhenBack = (session, data) =>
    until(
      async () => {
        try {
          return await session.send('step', data);
        } catch (error) {
          const retry = [ErrorCode.NOT_FOUND, ErrorCode.FORBIDDEN, ErrorCode.UNAVAILABLE];
          if (error instanceof RpcError && retry.includes(error.code)) return undefined;
          throw error;
        }
      },
      W,
      'the session back in Redis',
    );

  /**
   * @param {import('../src/index.js').Client} client
   * @param {string} channel
   * @param {unknown[]} data
   */
  const publishAll = async (client, channel, data) => {
    const offsets = [];
    for (const d of data) offsets.push((await client.publish(channel, 'm', d)).offset);
    return offsets;
  };

  /** Nothing else arrives on `iterator` (no duplicate). @param {AsyncIterator<any>} iterator */
  const nothingMore = async (iterator) => {
    await sleep(300);
    const extra = await Promise.race([iterator.next(), sleep(50).then(() => 'none')]);
    assert.equal(extra, 'none', `nothing more expected, got ${JSON.stringify(extra)}`);
  };

  test('a subscriber and an owner connected throughout get the new log once', async () => {
    const reader = await open(a, { token: WRITER });
    const writer = await open(b, { token: ADMIN });
    const sub = await reader.subscribe('feed:live');
    const owned = await reader.createSession({ sessionId: 'live-1' });
    const member = await writer.joinSession('live-1', { onEvent: () => {} });
    /** @type {any[]} */
    const resets = [];
    sub.on('reset', (r) => resets.push(r));
    owned.on('reset', (r) => resets.push(r));
    const messages = sub[Symbol.asyncIterator]();
    const events = owned[Symbol.asyncIterator]();

    assert.deepEqual(await publishAll(writer, 'feed:live', [1, 2, 3, 4, 5].map((n) => `old-${n}`)), [1, 2, 3, 4, 5]);
    for (const n of [1, 2, 3, 4, 5]) assert.equal((await nextOf(messages, W, `old ${n}`)).data, `old-${n}`);
    for (const n of [1, 2]) await member.send('step', `old-${n}`);
    for (const n of [1, 2]) assert.equal((await nextOf(events, W, `old event ${n}`)).data, `old-${n}`);
    // The client learnt the epoch its offsets belong to.
    await until(() => reader.epoch !== undefined, W, 'the reader learns the epoch');
    const epoch = reader.epoch;

    await restartRedisEmpty([a, b]);
    assert.equal(reader.state, 'open', 'the socket stayed up through the restart');

    // The new log numbers from 1 again: offsets the reader has passed.
    assert.deepEqual(await publishAll(writer, 'feed:live', ['new-1', 'new-2', 'new-3']), [1, 2, 3]);
    await sendWhenBack(member, 'new-1');
    for (const n of [2, 3]) await member.send('step', `new-${n}`);

    /** @type {any[]} */
    const got = [];
    while (got.length < 3) got.push(await nextOf(messages, W, `new message ${got.length + 1}`));
    assert.deepEqual(
      got.map((m) => [m.offset, m.data]),
      [
        [1, 'new-1'],
        [2, 'new-2'],
        [3, 'new-3'],
      ],
    );
    /** @type {any[]} */
    const gotEvents = [];
    while (gotEvents.length < 3) gotEvents.push(await nextOf(events, W, `new event ${gotEvents.length + 1}`));
    assert.deepEqual(
      gotEvents.map((e) => e.data),
      ['new-1', 'new-2', 'new-3'],
    );
    assert.equal(sub.lastOffset, 3);

    // Told that the logs started over, once each.
    assert.notEqual(reader.epoch, epoch);
    assert.equal(reader.epochChanges, 1);
    assert.deepEqual(
      resets.map((r) => [r.channel ?? r.sessionId, r.epochChanged, r.complete, r.epoch, r.previousEpoch]),
      [
        ['feed:live', true, false, reader.epoch, epoch],
        ['live-1', true, false, reader.epoch, epoch],
      ],
    );

    // Live delivery carries on, once.
    assert.deepEqual(await publishAll(writer, 'feed:live', ['new-4']), [4]);
    assert.equal((await nextOf(messages, W, 'new message 4')).offset, 4);
    await member.send('step', 'new-4');
    assert.equal((await nextOf(events, W, 'new event 4')).data, 'new-4');
    await nothingMore(messages);
    await nothingMore(events);
    assert.equal(reader.epochChanges, 1);
  });

  test('epoch.changed resets a connected subscriber and member before anything is published', async () => {
    // The instance pushes `epoch.changed` once it sees the new epoch: the
    // client reads its logs again at once, without waiting for a publication
    // behind its offsets, reports the reset, and hands the push to the
    // application; the channel's new log, numbered from 1 again, then
    // arrives once.
    const reader = await open(a, { token: WRITER });
    const writer = await open(b, { token: ADMIN });
    /** @type {any[]} */
    const pushes = [];
    reader.on('epoch.changed', (p) => pushes.push(p));
    const sub = await reader.subscribe('feed:pushed', { recover: true });
    const owned = await writer.createSession({ sessionId: 'pushed-1', invite: ['writer'] });
    const member = await reader.joinSession('pushed-1');
    /** @type {any[]} */
    const resets = [];
    sub.on('reset', (r) => resets.push(r));
    member.on('reset', (r) => resets.push(r));
    const messages = sub[Symbol.asyncIterator]();
    const events = member[Symbol.asyncIterator]();
    const epoch = reader.epoch;
    assert.ok(epoch, 'the history read named the epoch');

    assert.deepEqual(await publishAll(writer, 'feed:pushed', [1, 2, 3, 4, 5].map((n) => `old-${n}`)), [1, 2, 3, 4, 5]);
    for (const n of [1, 2, 3, 4, 5]) assert.equal((await nextOf(messages, W, `old ${n}`)).offset, n);
    for (const n of [1, 2, 3]) await owned.send('step', `old-${n}`);
    for (const n of [1, 2, 3]) assert.equal((await nextOf(events, W, `old event ${n}`)).data, `old-${n}`);
    assert.equal(member.lastOffset, 3);

    await restartRedisEmpty([a, b]);
    assert.equal(reader.state, 'open', 'the socket stayed up through the restart');

    // The push reached the application, naming the new epoch.
    await until(() => pushes.length > 0, W, 'epoch.changed reaches the application');
    assert.equal(typeof pushes[0].epoch, 'string');
    assert.notEqual(pushes[0].epoch, epoch);
    // The reset is reported with nothing published yet.
    await until(() => resets.length === 2, W, 'the subscription and the session report the reset');
    assert.equal(reader.epoch, pushes[0].epoch);
    assert.deepEqual(
      resets.map((r) => [r.channel ?? r.sessionId, r.epochChanged, r.complete, r.epoch, r.previousEpoch]),
      [
        ['feed:pushed', true, false, reader.epoch, epoch],
        ['pushed-1', true, false, reader.epoch, epoch],
      ],
    );
    assert.equal(sub.lastOffset, 0);
    assert.equal(member.lastOffset, 0);
    assert.equal(reader.epochChanges, 1);

    // Offsets 1-3 again, all at or below what the reader had: delivered.
    assert.deepEqual(await publishAll(writer, 'feed:pushed', ['new-1', 'new-2', 'new-3']), [1, 2, 3]);
    await sendWhenBack(owned, 'new-1');
    for (const n of [2, 3]) await owned.send('step', `new-${n}`);
    /** @type {any[]} */
    const got = [];
    while (got.length < 3) got.push(await nextOf(messages, W, `new message ${got.length + 1}`));
    assert.deepEqual(
      got.map((m) => [m.offset, m.data]),
      [
        [1, 'new-1'],
        [2, 'new-2'],
        [3, 'new-3'],
      ],
    );
    // The owner's instance wrote the session back numbering past the lost
    // events: they arrive in order, once.
    /** @type {any[]} */
    const gotEvents = [];
    while (gotEvents.length < 3) gotEvents.push(await nextOf(events, W, `new event ${gotEvents.length + 1}`));
    assert.deepEqual(
      gotEvents.map((e) => e.data),
      ['new-1', 'new-2', 'new-3'],
    );
    assert.ok(gotEvents[0].offset < gotEvents[1].offset && gotEvents[1].offset < gotEvents[2].offset);
    await nothingMore(messages);
    await nothingMore(events);
    assert.equal(reader.epochChanges, 1);
    assert.equal(pushes.length, 1);
    assert.equal(resets.length, 2);
  });

  test('a subscriber away during the restart recovers the new log from its start', async () => {
    const writer = await open(b, { token: ADMIN });
    const reader = await open(a, { token: WRITER });
    const sub = await reader.subscribe('feed:away', { recover: true });
    const epoch = reader.epoch;
    assert.ok(epoch, 'the history read named the epoch');
    /** @type {any[]} */
    const recovered = [];
    sub.on('recovered', (r) => recovered.push(r));
    /** @type {any[]} */
    const resets = [];
    sub.on('reset', (r) => resets.push(r));
    const messages = sub[Symbol.asyncIterator]();
    await publishAll(writer, 'feed:away', [1, 2, 3, 4].map((n) => `old-${n}`));
    for (const n of [1, 2, 3, 4]) assert.equal((await nextOf(messages, W, `old ${n}`)).offset, n);

    const back = new Promise((resolve) => reader.once('open', resolve));
    await a.kill9();
    try {
      await until(() => reader.state === 'reconnecting', W, 'the reader sees the drop');
      await restartRedisEmpty([b]);
      // Published while the reader has no connection: offsets 1-3 of the
      // new log, all at or below the 4 it has.
      assert.deepEqual(await publishAll(writer, 'feed:away', ['new-1', 'new-2', 'new-3']), [1, 2, 3]);
    } finally {
      await a.restart();
    }
    await within(back, W, 'the reader to reconnect');

    // Recovered with the old epoch: the reply said the log started over,
    // and the replay from its start was not dropped.
    /** @type {any[]} */
    const got = [];
    while (got.length < 3) got.push(await nextOf(messages, W, `new message ${got.length + 1}`));
    assert.deepEqual(
      got.map((m) => [m.offset, m.data]),
      [
        [1, 'new-1'],
        [2, 'new-2'],
        [3, 'new-3'],
      ],
    );
    assert.equal(recovered.length, 1);
    assert.equal(recovered[0].epochChanged, true);
    assert.equal(recovered[0].complete, false);
    assert.equal(recovered[0].replayed, 3);
    assert.equal(recovered[0].after, 4);
    assert.notEqual(reader.epoch, epoch);
    assert.equal(reader.epochChanges, 1);
    assert.deepEqual(
      resets.map((r) => [r.epochChanged, r.epoch, r.previousEpoch]),
      [[true, reader.epoch, epoch]],
    );

    // Offset 4 of the new log is new too.
    assert.deepEqual(await publishAll(writer, 'feed:away', ['new-4']), [4]);
    assert.equal((await nextOf(messages, W, 'new message 4')).data, 'new-4');
    await nothingMore(messages);

    // A position kept from before (offset 4 of the old epoch), given back by
    // another client: the new log from its start.
    const other = await open(b, { token: WRITER });
    const again = await other.subscribe('feed:away', { recover: 4, epoch });
    const replayed = again[Symbol.asyncIterator]();
    /** @type {any[]} */
    const all = [];
    while (all.length < 4) all.push(await nextOf(replayed, W, `replayed ${all.length + 1}`));
    assert.deepEqual(
      all.map((m) => m.data),
      ['new-1', 'new-2', 'new-3', 'new-4'],
    );
    await nothingMore(replayed);
  });

  test('an owner away after the restart resumes the session once', async () => {
    const memberClient = await open(b, { token: ADMIN });
    const owner = await open(a, { token: WRITER });
    const session = await owner.createSession({ sessionId: 'away-1' });
    const member = await memberClient.joinSession('away-1', { onEvent: () => {} });
    /** @type {any[]} */
    const resets = [];
    session.on('reset', (r) => resets.push(r));
    const events = session[Symbol.asyncIterator]();
    for (const n of [1, 2, 3]) await member.send('step', `old-${n}`);
    for (const n of [1, 2, 3]) assert.equal((await nextOf(events, W, `old event ${n}`)).offset, n);
    await until(() => owner.epoch !== undefined, W, 'the owner learns the epoch');
    const epoch = owner.epoch;

    await restartRedisEmpty([a, b]);
    // Written back by the owner's instance; sent on the new log.
    await sendWhenBack(member, 'new-1');
    assert.equal((await nextOf(events, W, 'new event 1')).data, 'new-1');

    const back = new Promise((resolve) => owner.once('open', resolve));
    await a.kill9();
    try {
      await until(() => owner.state === 'reconnecting', W, 'the owner sees the drop');
      for (const n of [2, 3]) await member.send('step', `new-${n}`);
    } finally {
      await a.restart();
    }
    await within(back, W, 'the owner to reconnect');

    /** @type {any[]} */
    const got = [];
    while (got.length < 2) got.push(await nextOf(events, W, `new event ${got.length + 2}`));
    assert.deepEqual(
      got.map((e) => e.data),
      ['new-2', 'new-3'],
    );
    assert.notEqual(owner.epoch, epoch);
    assert.equal(resets.length, 1);
    assert.equal(resets[0].epochChanged, true);
    await member.send('step', 'new-4');
    assert.equal((await nextOf(events, W, 'new event 4')).data, 'new-4');
    await nothingMore(events);
  });
});
