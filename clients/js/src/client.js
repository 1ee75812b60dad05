// The client: a Connection plus what the protocol offers on it (channels,
// sessions, agents serving requests, approvals) and what a reconnect puts
// back: agent registrations (then the runs they were serving are taken
// back), channel subscriptions (recovering what channels with history
// logged meanwhile) and sessions (resumed without gap or duplicate).
//
// Offsets belong to the epoch of the gateway's backend, which every log
// read names. When Redis restarts empty the logs start over at 1 under a
// new epoch. The client keeps the epoch it last saw and sends it with every
// `recover`, resume and history read after a reconnect, holding replayed
// frames back until the reply says where they belong. On a connection that
// stays up, two things make it ask for the current epoch, holding pushes
// back meanwhile: the gateway's `epoch.changed` push (unless it names the
// epoch the client has), and a push behind the newest offset that was never
// delivered. Once the epoch changed, every channel and session starts over
// from offset 0 and is read again from the new log's start, skipping what
// was delivered.
//
// Browser-safe: no platform module is imported.

import { ClientClosedError, ConnectionError, ErrorCode, PayloadTooLargeError, RpcError, TimeoutError } from './errors.js';
import { Connection } from './connection.js';
import { Dispatcher } from './request.js';
import { Session } from './session.js';
import { ChannelState, Subscription } from './subscription.js';

/**
 * Connect to a gateway and authenticate in-band. Resolves once the
 * handshake succeeded; rejects with an RpcError (bad credentials:
 * code -32000) or a ConnectionError. The first connection is not retried:
 * reconnecting applies to connections that were up.
 *
 * @param {string | string[]} url `ws://` or `wss://` URL(s) of the gateway's
 *   WebSocket; with several, reconnects try them in turn
 * @param {import('../index.js').ClientOptions} [options]
 * @returns {Promise<Client>}
 */
export async function connect(url, options = {}) {
  const client = new Client(url, options);
  await client._start();
  return client;
}

/** Most entries asked per history page. */
const HISTORY_PAGE = 1000;
/** Pages read to catch a channel up after its log started over (more than a channel keeps). */
const LOG_PAGES = 101;
/** After a check found the epoch unchanged, pushes behind the newest offset are dropped this long without asking again. */
const EPOCH_QUIET_MS = 1000;
/** How often `waitRun` asks again: about a run lost with its agent's instance (which its agent may take back), or after its connection dropped. */
const FOLLOW_POLL_MS = 200;

/** A connection to a Switchyard gateway with the protocol's features; see `connect`. */
export class Client extends Connection {
  // What a reconnect restores
  /** @type {Map<string, ChannelState>} */
  #channels = new Map();
  /** @type {Map<string, Session>} */
  #sessions = new Map();
  /** @type {Map<string, any>} agent registrations by agentId ('' for the default id) */
  #registrations = new Map();
  /** @type {Session[]} owned sessions being resumed by the current attempt */
  #owned = [];

  // Epochs
  /** @type {string | undefined} */
  #epoch = undefined;
  /** Reasons every push with an offset is held back (a restore, an epoch check). */
  #holdDepth = 0;
  #restoring = false;
  #quietUntil = 0;
  #learning = false;
  /** @type {unknown} the socket the epoch was last asked for on */
  #learnedOn = null;
  /** How many times the backend's logs were seen to start over. */
  epochChanges = 0;

  // Serving requests (agents)
  #dispatcher = new Dispatcher();

  /** Sessions this client tracks, by id. */
  get sessions() {
    return new Map(this.#sessions);
  }

  /**
   * The backend's epoch the offsets this client tracks belong to, as a reply
   * last named it (undefined until one did).
   * @returns {string | undefined}
   */
  get epoch() {
    return this.#epoch;
  }

  /**
   * `node.invoke` with its progress: `onProgress(data)` gets each
   * `invoke.progress` of this call, aborting `signal` sends `invoke.cancel`.
   * The client-side timeout follows `timeoutMs` (plus a margin).
   * @param {{nodeId?: string, capability?: string, command: string, params?: unknown, timeoutMs?: number, policy?: string, idempotencyKey?: string, invokeId?: string}} params
   * @param {{onProgress?: (data: any) => void, signal?: AbortSignal, timeout?: number}} [options]
   */
  async invoke(params, options = {}) {
    const invokeId = params.invokeId ?? randomId();
    const off = options.onProgress
      ? this.on('invoke.progress', (p) => {
          if (p?.invokeId === invokeId) options.onProgress?.(p.data);
        })
      : () => {};
    const signal = options.signal;
    const onAbort = () => {
      this.notify('invoke.cancel', { invokeId });
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const timeout = options.timeout ?? (params.timeoutMs ?? this._options.timeoutMs) + 5_000;
      return await this.call('node.invoke', { ...params, invokeId }, { timeout, signal });
    } finally {
      off();
      signal?.removeEventListener('abort', onAbort);
    }
  }

  // -------------------------------------------------------------- channels

  /**
   * Subscribe to a channel. Messages (the `notify` params) go to
   * `onMessage`, or are buffered for `for await (const m of sub)`.
   *
   * `recover` (channels with history, where every publication has an
   * offset): by default a reconnect re-subscribes replaying what was
   * published after the newest offset received; `true` says the channel
   * keeps history, so recovery works even before a first message arrives;
   * a number replays, now, what was logged after that offset (`epoch`: the
   * epoch that offset belongs to; if the log started over since, the replay
   * starts from its new start); `false` re-subscribes without replay.
   * @param {string} channel
   * @param {{recover?: boolean | number, epoch?: string, onMessage?: (message: any) => void, bufferSize?: number}} [options]
   * @returns {Promise<Subscription>}
   */
  async subscribe(channel, options = {}) {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('channel must be a non-empty string');
    const recover = options.recover;
    if (recover !== undefined && typeof recover !== 'boolean' && !(Number.isInteger(recover) && recover >= 0)) {
      throw new TypeError('recover is a boolean or an offset (a non-negative integer)');
    }
    const fresh = !this.#channels.has(channel);
    const state = this.#channels.get(channel) ?? this.#channelState(channel);
    if (fresh) {
      state.recover = recover !== false;
      this.#channels.set(channel, state);
      // What a recover replays comes before the reply, which says where it
      // started from: hold it back until then.
      state.offsets.holds++;
    }
    const handle = new Subscription(
      state,
      { bufferSize: this._options.bufferSize, ...options },
      (sub) => this.#leaveChannel(state, sub),
    );
    state.handles.add(handle);
    try {
      /** @type {number | undefined} */
      let after;
      let epoch = options.epoch;
      if (fresh && typeof recover === 'number') after = recover;
      else if (fresh && recover === true) {
        // The newest offset now; subscribing with `recover` from it replays
        // whatever is published until the subscription is in place.
        const head = await this.call('history', { channel, limit: 1 });
        this.#observeEpoch(head?.epoch);
        after = head.latest;
        epoch = typeof head?.epoch === 'string' ? head.epoch : undefined;
      }
      /** @type {any} */
      const params = { channels: [channel] };
      if (after !== undefined) {
        state.lastOffset = after;
        params.recover = { [channel]: after };
        if (epoch !== undefined) params.recoverEpoch = epoch;
      }
      const reply = await this.call('subscribe', params);
      const recovered = reply?.recovered?.[channel];
      this.#observeEpoch(recovered?.epoch, state);
      state.recovered(recovered, after, epoch);
    } catch (error) {
      handle._end();
      if (state.handles.size === 0 && this.#channels.get(channel) === state) this.#channels.delete(channel);
      throw error;
    } finally {
      if (fresh) {
        state.offsets.holds--;
        state.flush();
      }
    }
    return handle;
  }

  /**
   * Publish on a channel (`publish`).
   * @param {string} channel
   * @param {string} event
   * @param {unknown} [data]
   * @returns {Promise<{delivered: number, offset?: number}>}
   */
  publish(channel, event, data) {
    return this.call('publish', { channel, event, data });
  }

  /**
   * @param {ChannelState} state
   * @param {Subscription} sub
   */
  async #leaveChannel(state, sub) {
    state.handles.delete(sub);
    if (state.handles.size > 0 || this.#channels.get(state.channel) !== state) return;
    this.#channels.delete(state.channel);
    if (this.state === 'open') await this.call('unsubscribe', { channels: [state.channel] });
  }

  // -------------------------------------------------------------- sessions

  /**
   * Create a session owned by this client (`session.create`). After a
   * reconnect it is resumed with what was missed.
   * @param {{sessionId?: string, meta?: object, maxMembers?: number, invite?: string[], open?: boolean}} [params]
   * @param {{onEvent?: (event: any) => void, bufferSize?: number}} [options]
   * @returns {Promise<Session>}
   */
  async createSession(params = {}, options = {}) {
    const reply = await this.call('session.create', params);
    const session = this.#session(
      { sessionId: reply.sessionId, owner: true, resumeToken: reply.resumeToken, lastOffset: 0 },
      options,
    );
    return session;
  }

  /**
   * Join a session as a member (`session.join`). With `since`, the events
   * logged after that offset are delivered first (`epoch`: the epoch `since`
   * belongs to; if the log started over since, from its new start). After a
   * reconnect it is joined again and filled from its history.
   * @param {string} sessionId
   * @param {{since?: number, epoch?: string, onEvent?: (event: any) => void, bufferSize?: number}} [options]
   * @returns {Promise<Session>}
   */
  async joinSession(sessionId, options = {}) {
    const session = this.#session({ sessionId, owner: false, lastOffset: options.since ?? 0 }, options);
    try {
      if (options.since !== undefined) {
        await session._join((method, params) => this.call(method, params), true, options.epoch);
      } else {
        session.record = await this.call('session.join', { sessionId });
      }
    } catch (error) {
      session._end();
      throw error;
    }
    return session;
  }

  /**
   * Take an owned session back with its resume token (`session.resume`),
   * e.g. from a new process; events after `offset` arrive first (`epoch`:
   * the epoch `offset` belongs to; if the log started over since, the
   * events come from its new start and the session emits `reset`).
   * @param {{sessionId: string, resumeToken: string, offset?: number, epoch?: string}} params
   * @param {{onEvent?: (event: any) => void, bufferSize?: number}} [options]
   * @returns {Promise<Session>}
   */
  async resumeSession(params, options = {}) {
    const session = this.#session(
      { sessionId: params.sessionId, owner: true, resumeToken: params.resumeToken, lastOffset: params.offset ?? 0 },
      options,
    );
    /** @type {any} */
    const asked = { sessionId: params.sessionId, resumeToken: params.resumeToken, offset: params.offset ?? 0 };
    if (params.epoch !== undefined) asked.epoch = params.epoch;
    session._hold();
    try {
      const reply = await this.call('session.resume', asked);
      session._resumed(reply, params.epoch);
    } catch (error) {
      session._end();
      throw error;
    } finally {
      session._release();
    }
    return session;
  }

  /**
   * @param {{sessionId: string, owner: boolean, resumeToken?: string, lastOffset?: number}} init
   * @param {{onEvent?: (event: any) => void, bufferSize?: number}} options
   */
  #session(init, options) {
    const existing = this.#sessions.get(init.sessionId);
    if (existing) throw new TypeError(`session ${init.sessionId} is already tracked by this client`);
    const session = new Session(
      {
        call: (method, params, opts) => this.call(method, params, opts),
        emit: (method, params) => this._emitPush(method, params),
        forget: (s) => {
          if (this.#sessions.get(s.id) === s) this.#sessions.delete(s.id);
        },
        epoch: () => this.#epoch,
        observe: (epoch, s) => this.#observeEpoch(epoch, s),
        holding: () => this.#holdDepth > 0,
        check: (s) => this.#checkEpoch({ session: s }),
        learn: (s) => this.#learnEpoch({ session: s }),
        limit: this._options.bufferSize,
      },
      init,
      { bufferSize: this._options.bufferSize, ...options },
    );
    this.#sessions.set(init.sessionId, session);
    return session;
  }

  // ---------------------------------------------------------------- agents

  /**
   * Register an agent (`agent.register`); registered again after every
   * reconnect. Give an `agentId` so that the entry keeps its id.
   * @param {any} params
   */
  async register(params = {}) {
    const entry = await this.call('agent.register', params);
    this.#registrations.set(params.agentId ?? '', params);
    return entry;
  }

  /**
   * Remove a registration (`agent.unregister`).
   * @param {string} [agentId]
   */
  async unregister(agentId) {
    this.#registrations.delete(agentId ?? '');
    return this.call('agent.unregister', agentId === undefined ? {} : { agentId });
  }

  /**
   * Wait for the run on a session to end (`agent.wait`, members only): its
   * record (`status`, `result`, `error`, `attached`, `instanceId`…).
   *
   * A run whose agent's instance died ends with `error.data.reason ===
   * 'instance_lost'` and a `resumableUntil`; its agent may take it back
   * meanwhile (`agent.reattach`), after which it ends with its own outcome.
   * With `follow` (the default) that is waited for too, until
   * `resumableUntil`; without, the loss is the answer. A wait cut by this
   * client's connection dropping is made again once it is back. Rejects
   * with an RpcError -32006 when the run is still going after `timeoutMs`.
   * @param {string} sessionId
   * @param {{timeoutMs?: number, follow?: boolean}} [options] `timeoutMs` default 600 000
   */
  async waitRun(sessionId, options = {}) {
    const timeoutMs = options.timeoutMs ?? 600_000;
    const follow = options.follow ?? true;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = Math.max(deadline - Date.now(), 100);
      /** @type {any} */
      let record;
      try {
        record = await this.call('agent.wait', { sessionId, timeoutMs: left }, { timeout: left + 5_000 });
      } catch (error) {
        if (!(error instanceof ConnectionError) || Date.now() >= deadline) throw error;
        // Asked again once the connection is back (the call waits for it).
        await delay(FOLLOW_POLL_MS);
        continue;
      }
      const until = follow ? resumableUntil(record) : undefined;
      if (until === undefined || Date.now() >= until || Date.now() >= deadline) return record;
      await delay(Math.min(FOLLOW_POLL_MS, until - Date.now()));
    }
  }

  /**
   * Handle server requests with `method` (`invoke`, `agent.run`,
   * `chat.send`, `chat.completions`, a registered method name). The
   * handler's return value (or promise) is the answer; an RpcError it throws
   * is answered as is, any other error as -32603 with its message. A run
   * (`agent.run`) goes on when the connection drops and is taken back after
   * the reconnect (see `IncomingRequest#back`).
   * @param {string} method
   * @param {(request: import('./request.js').IncomingRequest) => unknown} handler
   * @returns {() => void} removes the handler
   */
  handle(method, handler) {
    return this.#dispatcher.handle(method, handler);
  }

  /**
   * Handle `invoke` requests whose `command` is `name` (a tool, e.g. from
   * `node.invoke {command}` or `POST /tools/invoke`); `request.args` holds
   * the caller's arguments. Takes precedence over `handle('invoke')`.
   * @param {string} name
   * @param {(request: import('./request.js').IncomingRequest) => unknown} handler
   * @returns {() => void}
   */
  tool(name, handler) {
    return this.#dispatcher.tool(name, handler);
  }

  // ------------------------------------------------------------- approvals

  /**
   * Ask a human (`approval.request`, role node) and wait for the decision
   * (`approval.wait`), across reconnects. Resolves with the approval record:
   * check `status` (`approved`, `denied`, `expired`).
   * @param {{tool: string, args?: unknown, summary?: string, sessionId?: string, timeoutMs?: number}} options
   */
  async requestApproval(options) {
    const timeoutMs = options.timeoutMs ?? 300_000;
    const asked = await this.call('approval.request', { ...options, timeoutMs });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const left = Math.max(deadline - Date.now(), 0);
      // Past the expiry the gateway answers the record as `expired`.
      const waitMs = left + 2_000;
      try {
        return await this.call(
          'approval.wait',
          { approvalId: asked.approvalId, timeoutMs: waitMs },
          { timeout: waitMs + 5_000 },
        );
      } catch (error) {
        if (!(error instanceof ConnectionError) || Date.now() > deadline + 2_000) throw error;
      }
    }
  }

  /**
   * Decide an approval (`approval.resolve`, operator.approvals).
   * @param {string} approvalId
   * @param {'approve' | 'deny'} decision
   * @param {string} [note]
   */
  resolveApproval(approvalId, decision, note) {
    return this.call('approval.resolve', { approvalId, decision, ...(note === undefined ? {} : { note }) });
  }

  // ----------------------------------------------------------- reconnecting

  /**
   * After a reconnect: resume owned sessions (the first came back with
   * `connect`), join the others again, register agents, subscribe channels
   * again with `recover`. Calls are pipelined; the gateway runs them in order.
   * Once they are answered, runs whose connection dropped are taken back
   * (not waited for).
   * A connection failure fails the whole restore (the next attempt redoes
   * it); any other failure is reported and drops only what failed.
   * @protected
   * @param {any} hello
   */
  async _restore(hello) {
    const owned = this.#owned;
    /** @type {Promise<void>[]} */
    const tasks = [];
    const call = (/** @type {string} */ method, /** @type {unknown} */ params) => this._rawCall(method, params);
    const settle = (/** @type {Promise<any>} */ p, /** @type {(v: any) => void} */ ok, /** @type {(e: unknown) => void} */ failed) =>
      tasks.push(
        p.then(ok, (error) => {
          if (error instanceof ConnectionError || error instanceof TimeoutError) throw error;
          failed(error);
        }),
      );
    if (owned.length > 0) owned[0]._resumed(hello.resume);
    for (const session of owned.slice(1)) {
      const previous = this.#epoch;
      settle(call('session.resume', session.resumeParams()), (r) => session._resumed(r, previous), (e) => session._lose(e));
    }
    for (const session of this.#sessions.values()) {
      if (!session.owner && session.active) tasks.push(session._join(call));
    }
    for (const params of this.#registrations.values()) {
      settle(call('agent.register', params), () => {}, (e) => this._report(e, 'agent.register'));
    }
    for (const state of this.#channels.values()) {
      /** @type {any} */
      const params = { channels: [state.channel] };
      const after = state.recover ? state.lastOffset : undefined;
      const previous = this.#epoch;
      if (after !== undefined) {
        params.recover = { [state.channel]: after };
        if (previous !== undefined) params.recoverEpoch = previous;
      }
      settle(
        call('subscribe', params),
        (r) => {
          const recovered = r?.recovered?.[state.channel];
          this.#observeEpoch(recovered?.epoch, state);
          state.recovered(recovered, after, previous);
        },
        (e) => {
          this.#channels.delete(state.channel);
          state.fail(e);
          this._report(e, 'subscribe');
        },
      );
    }
    await Promise.all(tasks);
    // The agents are registered again: runs whose connection dropped are
    // taken back on this one. Those calls may wait long (until the gateway
    // notices a lost instance); the connection opens meanwhile.
    this.#dispatcher.takeBack(this.#callOn(this._socket));
  }

  /**
   * @protected
   * @param {string} method
   * @param {any} params
   * @returns {boolean} whether `on(method)` listeners get it (not for
   *   duplicates, nor for the pushes of a session, delivered by the session)
   */
  _onPush(method, params) {
    switch (method) {
      case 'notify': {
        const state = this.#channels.get(params?.channel);
        return !state || state.accept(params);
      }
      case 'session.event':
      case 'agent.event':
      case 'session.updated':
      case 'session.closed': {
        const session = this.#sessions.get(params?.sessionId);
        if (!session) return true;
        session._push(method, params);
        return false;
      }
      case 'invoke.cancel':
        this.#dispatcher.cancel(params?.id);
        return true;
      case 'agent.cancel':
        this.#dispatcher.cancelSession(params?.sessionId);
        return true;
      case 'agent.deregistered':
        this.#registrations.delete(params?.agentId);
        return true;
      case 'epoch.changed':
        this.#epochPushed(params?.epoch);
        return true;
      default:
        return true;
    }
  }

  /**
   * @protected
   * @param {string} id
   * @param {string} method
   * @param {any} params
   * @param {unknown} socket
   */
  _onRequest(id, method, params, socket) {
    this.#dispatcher.dispatch(id, method, params, {
      answer: (body) => {
        const failure = this._sendOn(socket, { jsonrpc: '2.0', id, ...body });
        if (failure instanceof PayloadTooLargeError) {
          const error = { code: ErrorCode.INTERNAL_ERROR, message: failure.message };
          this._sendOn(socket, { jsonrpc: '2.0', id, error });
        }
      },
      notify: (m, p) => this._sendOn(socket, { jsonrpc: '2.0', method: m, params: p }) === null,
      call: this.#callOn(socket),
      requestApproval: (options) => this.requestApproval(options),
      report: (error, context) => this._report(error, context),
    });
  }

  /**
   * Calls on `socket` only (a request's, a run's): they fail with a
   * ConnectionError once it is no longer the current connection, rather
   * than wait for the next one.
   * @param {unknown} socket
   * @returns {import('./request.js').Call}
   */
  #callOn(socket) {
    return (method, params, timeout) =>
      socket !== null && socket === this._socket
        ? this._rawCall(method, params, timeout)
        : Promise.reject(new ConnectionError('connection gone'));
  }

  /**
   * The first owned session is resumed by the `connect` handshake itself.
   * @protected
   * @param {boolean} reconnected
   */
  _connectParams(reconnected) {
    if (reconnected) {
      // Everything replayed while restoring (from `connect {resume}` on) is
      // held back until the replies have said which epoch it belongs to.
      this.#restoring = true;
      this.#holdDepth++;
    }
    this.#owned = reconnected ? [...this.#sessions.values()].filter((s) => s.owner && s.resumeToken && s.active) : [];
    return this.#owned.length > 0 ? { resume: this.#owned[0].resumeParams() } : {};
  }

  /**
   * @protected
   * @param {boolean} reconnected
   */
  _restoreEnded(reconnected) {
    if (!reconnected) return;
    this.#restoring = false;
    this.#unhold();
  }

  // ---------------------------------------------------------------- epochs

  /** @param {string} channel */
  #channelState(channel) {
    return new ChannelState(channel, {
      holding: () => this.#holdDepth > 0,
      check: (state) => this.#checkEpoch({ channel: state.channel }),
      learn: (state) => this.#learnEpoch({ channel: state.channel }),
      emit: (params) => this._emitPush('notify', params),
      limit: this._options.bufferSize,
    });
  }

  #unhold() {
    this.#holdDepth = Math.max(this.#holdDepth - 1, 0);
    if (this.#holdDepth > 0) return;
    for (const state of [...this.#channels.values()]) state.flush();
    for (const session of [...this.#sessions.values()]) session._flush();
  }

  /**
   * A reply named the backend's epoch. A new one means every log started
   * over: every offset goes back to 0 (but `skip`'s, which the reply itself
   * placed in the new epoch), and, outside a restore (which reads every log
   * again anyway), every log is read again from its new start.
   * @param {unknown} epoch
   * @param {ChannelState | Session} [skip]
   */
  #observeEpoch(epoch, skip) {
    if (typeof epoch !== 'string' || epoch === this.#epoch) return;
    if (this.#epoch === undefined) {
      this.#epoch = epoch;
      return;
    }
    const { channels, sessions } = this.#startOver(epoch, skip);
    if (this.#restoring) return;
    this.#holdDepth++;
    this.#catchUp(channels, sessions, epoch)
      .catch((error) => this.#epochFailed(error))
      .finally(() => this.#unhold());
  }

  /**
   * Reading the epoch or a log failed. A dropped connection is no news (the
   * reconnect reads every log again); anything else is reported.
   * @param {unknown} error
   */
  #epochFailed(error) {
    if (error instanceof ConnectionError || error instanceof ClientClosedError || error instanceof TimeoutError) return;
    this._report(error, 'epoch');
  }

  /**
   * @param {string} epoch
   * @param {ChannelState | Session} [skip]
   */
  #startOver(epoch, skip) {
    const previous = this.#epoch;
    this.#epoch = epoch;
    this.epochChanges++;
    const channels = [...this.#channels.values()].filter((s) => s !== skip && s.lastOffset !== undefined);
    for (const state of channels) state.startOver(epoch, previous);
    const sessions = [...this.#sessions.values()].filter((s) => s !== skip);
    for (const session of sessions) session._startOver(epoch, previous);
    return { channels, sessions };
  }

  /**
   * Deliver what the new epoch logged, from its start, minus what was
   * delivered already (channels subscribed with `recover: false` are not
   * read again).
   * @param {ChannelState[]} channels
   * @param {Session[]} sessions
   * @param {string} epoch
   */
  async #catchUp(channels, sessions, epoch) {
    // A log that cannot be read (refused, or a session not written back
    // yet) is reported; the others are read all the same.
    const reading = async (/** @type {() => Promise<void>} */ read) => {
      try {
        await read();
      } catch (error) {
        if (!(error instanceof RpcError)) throw error;
        this._report(error, 'epoch');
      }
    };
    for (const state of channels) {
      if (this.#channels.get(state.channel) !== state || !state.recover) continue;
      await reading(async () => {
        let since = state.lastOffset ?? 0;
        for (let page = 0; page < LOG_PAGES; page++) {
          const read = await this.call('history', { channel: state.channel, since, limit: HISTORY_PAGE, epoch });
          const events = read?.events ?? [];
          for (const event of events) state.accept(event, true);
          // Entries skipped as delivered already move the read on too.
          const last = events.length > 0 ? events[events.length - 1].offset : undefined;
          if (read?.more !== true || !Number.isInteger(last) || last <= since) break;
          since = last;
        }
      });
    }
    for (const session of sessions) {
      if (this.#sessions.get(session.id) !== session || !session.active) continue;
      await reading(() => session._readLog((method, params) => this.call(method, params), epoch));
    }
  }

  /**
   * A push arrived behind the newest offset without having been delivered:
   * ask for the current epoch, holding pushes back until the answer. True
   * when pushes are held (the push is judged again then).
   * @param {{channel?: string, session?: Session}} hint
   */
  #checkEpoch(hint) {
    if (this.#holdDepth > 0) return true;
    if (this.state !== 'open' || this.#epoch === undefined || Date.now() < this.#quietUntil) return false;
    this.#recheck(hint);
    return true;
  }

  /**
   * The gateway pushed `epoch.changed`: the shared state may have lost
   * writes, so the offsets held may belong to the old epoch. Unless the push
   * names the epoch the client has, check as a push behind the newest offset
   * would (pushes held back until the answer).
   * @param {unknown} epoch
   */
  #epochPushed(epoch) {
    if (typeof epoch !== 'string' || epoch === this.#epoch || this.state === 'closed') return;
    const tracked = this.#sessions.size > 0 || [...this.#channels.values()].some((s) => s.lastOffset !== undefined);
    if (this.#epoch === undefined && !tracked) {
      this.#epoch = epoch;
      return;
    }
    this.#recheck({}, epoch);
  }

  /**
   * Ask for the current epoch, holding pushes back until the answer; when it
   * changed, every log starts over and is read again.
   * @param {{channel?: string, session?: Session}} hint
   * @param {string} [pushed] the epoch an `epoch.changed` named, taken when no read names one
   */
  #recheck(hint, pushed) {
    this.#holdDepth++;
    this.#currentEpoch(hint)
      .then(async (read) => {
        const current = read ?? pushed;
        if (current === undefined || current === this.#epoch) {
          if (pushed === undefined) this.#quietUntil = Date.now() + EPOCH_QUIET_MS;
          return;
        }
        const { channels, sessions } = this.#startOver(current);
        await this.#catchUp(channels, sessions, current);
      })
      .catch((error) => this.#epochFailed(error))
      .finally(() => this.#unhold());
  }

  /**
   * Offsets are being tracked but no reply named their epoch yet: ask once
   * per connection.
   * @param {{channel?: string, session?: Session}} hint
   */
  #learnEpoch(hint) {
    if (this.#epoch !== undefined || this.#learning || this.state !== 'open' || this.#learnedOn === this._socket) return;
    this.#learning = true;
    this.#learnedOn = this._socket;
    this.#currentEpoch(hint)
      .then((current) => {
        if (current !== undefined && this.#epoch === undefined) this.#epoch = current;
      })
      .catch(() => {})
      .finally(() => {
        this.#learning = false;
      });
  }

  /**
   * The backend's epoch now, from the cheapest read that names it: a
   * one-entry page of a channel's or a session's log.
   * @param {{channel?: string, session?: Session}} hint
   * @returns {Promise<string | undefined>}
   */
  async #currentEpoch(hint) {
    /** @type {[string, any][]} */
    const reads = [];
    const channels = new Set(hint.channel ? [hint.channel] : []);
    for (const state of this.#channels.values()) if (state.lastOffset !== undefined) channels.add(state.channel);
    for (const channel of channels) reads.push(['history', { channel, limit: 1 }]);
    const sessions = new Set(hint.session ? [hint.session.id] : []);
    for (const id of this.#sessions.keys()) sessions.add(id);
    for (const sessionId of sessions) reads.push(['session.history', { sessionId, limit: 1 }]);
    for (const [method, params] of reads.slice(0, 3)) {
      try {
        const reply = await this.call(method, params);
        if (typeof reply?.epoch === 'string') return reply.epoch;
      } catch (error) {
        if (!(error instanceof RpcError)) throw error;
      }
    }
    return undefined;
  }

  /**
   * @protected
   * @param {unknown} error
   */
  _onDrop(error) {
    this.#dispatcher.dropped(error);
  }

  /**
   * @protected
   * @param {unknown} error
   */
  _onFinal(error) {
    this.#dispatcher.abortAll(error);
    for (const state of this.#channels.values()) state.fail(undefined);
    this.#channels.clear();
    for (const session of [...this.#sessions.values()]) session._end();
    this.#sessions.clear();
  }
}

/**
 * `resumableUntil` (ms since the epoch) of a run record that ended because
 * its agent's instance was lost, else undefined.
 * @param {any} record
 * @returns {number | undefined}
 */
function resumableUntil(record) {
  const data = record?.error?.data;
  if (record?.status !== 'error' || data?.reason !== 'instance_lost') return undefined;
  return typeof data.resumableUntil === 'number' ? data.resumableUntil : undefined;
}

/** @param {number} ms */
function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A random id for `invokeId`. */
function randomId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}
