// The client: one WebSocket to a Switchyard gateway at a time, JSON-RPC
// 2.0 calls and pushes over it, credentials in-band (`connect {auth}`),
// and automatic reconnection that restores what the connection held:
// agent registrations, channel subscriptions (recovering what channels
// with history logged meanwhile) and sessions (resumed without gap).
//
// Browser-safe: only the standard WebSocket, timers, AbortController,
// TextEncoder and crypto.randomUUID are used.

import {
  ClientClosedError,
  ConnectionError,
  ErrorCode,
  OverflowError,
  PayloadTooLargeError,
  RpcError,
  TimeoutError,
} from './errors.js';
import { BoundedQueue, Emitter } from './queue.js';
import { Dispatcher } from './request.js';
import { Session } from './session.js';
import { ChannelState, Subscription } from './subscription.js';

/** Names `client.on` reserves for connection state; every other name is a pushed method. */
const STATE_EVENTS = new Set(['open', 'close', 'reconnecting', 'error']);

/** Query parameters that would put a credential into a URL. */
const CREDENTIAL_QUERY = ['token', 'access_token', 'apikey', 'api_key', 'password', 'devicetoken'];

/** In-band credential options; at most one may be given. */
const CREDENTIALS = /** @type {const} */ (['token', 'apiKey', 'password', 'deviceToken']);

/** Close code of a revoked device: reconnecting cannot succeed. */
const CLOSE_REVOKED = 4003;

const DEFAULTS = {
  timeoutMs: 30_000,
  connectTimeoutMs: 10_000,
  pingIntervalMs: 20_000,
  pingTimeoutMs: 10_000,
  maxQueuedCalls: 1024,
  bufferSize: 1024,
};

const RECONNECT_DEFAULTS = {
  initialDelayMs: 250,
  maxDelayMs: 10_000,
  factor: 2,
  jitter: 0.2,
  maxAttempts: Infinity,
};

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

/** A connection to a Switchyard gateway; see `connect`. */
export class Client {
  // Configuration
  /** @type {string[]} */
  #urls;
  #urlIndex = 0;
  #opts;
  #reconnect;
  /** @type {any} */
  #WebSocket;

  // Connection
  /** @type {any} */
  #ws = null;
  /** @type {'connecting' | 'open' | 'reconnecting' | 'closed'} */
  #state = 'connecting';
  #closing = false;
  /** @type {any} */
  #welcome = null;
  /** @type {any} */
  #hello = null;
  /** @type {((welcome: any) => void) | null} */
  #onWelcome = null;
  /** @type {number | undefined} */
  #shutdownDelay = undefined;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #pingTimer;
  /** @type {{timer: ReturnType<typeof setTimeout>, resolve: () => void} | null} */
  #sleeping = null;
  #encoder = new TextEncoder();

  // Calls
  #nextId = 1;
  /** @type {Map<number, {method: string, resolve: (v: any) => void, reject: (e: unknown) => void}>} */
  #pending = new Map();
  /** @type {Set<{frame: any, send: () => void, reject: (e: unknown) => void}>} calls waiting for the connection */
  #queued = new Set();

  // What a reconnect restores
  /** @type {Map<string, ChannelState>} */
  #channels = new Map();
  /** @type {Map<string, Session>} */
  #sessions = new Map();
  /** @type {Map<string, any>} agent registrations by agentId ('' for the default id) */
  #registrations = new Map();

  // Serving requests (agents)
  #dispatcher = new Dispatcher();

  #events = new Emitter();

  /**
   * Use `connect()`; the constructor does not open the connection.
   * @param {string | string[]} url
   * @param {import('../index.js').ClientOptions} [options]
   */
  constructor(url, options = {}) {
    const urls = Array.isArray(url) ? url : [url];
    if (urls.length === 0) throw new TypeError('at least one gateway URL is needed');
    this.#urls = urls.map(checkUrl);
    const given = CREDENTIALS.filter((k) => options[k] !== undefined);
    if (given.length > 1) throw new TypeError(`give one credential, not ${given.join(' and ')}`);
    this.#opts = { ...DEFAULTS, ...options };
    this.#reconnect = options.reconnect === false ? null : { ...RECONNECT_DEFAULTS, ...(options.reconnect ?? {}) };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError(
        'no WebSocket implementation: pass options.WebSocket, or on Node 20 run with --experimental-websocket',
      );
    }
    this.#events.onListenerError = (error, event) => {
      if (event !== 'error' && this.#events.listens('error')) this.#events.emit('error', { error, context: event });
      else queueMicrotask(() => {
        throw error;
      });
    };
  }

  /** `connecting`, `open`, `reconnecting` or `closed`. */
  get state() {
    return this.#state;
  }

  /** The URL of the current (or last) connection. */
  get url() {
    return this.#urls[this.#urlIndex % this.#urls.length];
  }

  /** This connection's id on the gateway. */
  get connId() {
    return this.#hello?.connId ?? this.#welcome?.connId;
  }

  /** The gateway instance holding this connection. */
  get nodeId() {
    return this.#hello?.nodeId ?? this.#welcome?.nodeId;
  }

  /** The `welcome` push of the current connection. */
  get welcome() {
    return this.#welcome;
  }

  /** The `connect` reply of the current connection (role, scopes, limits…). */
  get hello() {
    return this.#hello;
  }

  /** Sessions this client tracks, by id. */
  get sessions() {
    return new Map(this.#sessions);
  }

  // ---------------------------------------------------------------- events

  /**
   * Listen to connection state (`open`, `close`, `reconnecting`, `error`)
   * or to pushes by method (`notify`, `approval.requested`, …; `*` for
   * every push, as `{method, params}`). Returns a function that stops.
   * @param {string} event
   * @param {(value: any) => void} listener
   * @returns {() => void}
   */
  on(event, listener) {
    return this.#events.on(event, listener);
  }

  /**
   * @param {string} event
   * @param {(value: any) => void} listener
   * @returns {() => void}
   */
  once(event, listener) {
    return this.#events.once(event, listener);
  }

  /**
   * @param {string} event
   * @param {(value: any) => void} listener
   */
  off(event, listener) {
    this.#events.off(event, listener);
  }

  /**
   * The pushes with `method` from now on, as an async iterator (bounded:
   * `bufferSize` unread pushes, then it fails with an OverflowError).
   * Leaving the loop (or `signal`) stops it.
   * @param {string} method
   * @param {{bufferSize?: number, signal?: AbortSignal}} [options]
   * @returns {AsyncIterableIterator<any>}
   */
  notifications(method, options = {}) {
    if (STATE_EVENTS.has(method)) throw new TypeError(`${method} is a connection state event, not a push`);
    /** @type {(() => void)[]} */
    const offs = [];
    const queue = new BoundedQueue(options.bufferSize ?? this.#opts.bufferSize, `notifications ${method}`, () => {
      for (const off of offs) off();
    });
    offs.push(this.#events.on(method, (params) => queue.push(params)));
    offs.push(this.#events.on('_final', () => queue.end()));
    if (this.#state === 'closed') queue.end();
    const signal = options.signal;
    if (signal) {
      if (signal.aborted) queue.end();
      else signal.addEventListener('abort', () => queue.end(), { once: true });
    }
    return queue;
  }

  /**
   * Resolves when the client is (again) open; rejects once it is closed for
   * good, or after `timeoutMs`.
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  waitOpen(timeoutMs = this.#opts.timeoutMs) {
    if (this.#state === 'open') return Promise.resolve();
    if (this.#state === 'closed') return Promise.reject(new ClientClosedError());
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        offOpen();
        offFinal();
      };
      const timer = setTimeout(() => {
        done();
        reject(new TimeoutError('(connection)', timeoutMs));
      }, timeoutMs);
      const offOpen = this.#events.on('open', () => {
        done();
        resolve();
      });
      const offFinal = this.#events.on('_final', (error) => {
        done();
        reject(error ?? new ClientClosedError());
      });
    });
  }

  // ----------------------------------------------------------------- calls

  /**
   * Call a method; resolves with its result, rejects with an RpcError (the
   * gateway's or an agent's answer), a TimeoutError, a ConnectionError (the
   * connection dropped before the answer) or a ClientClosedError. Made while
   * reconnecting, the call waits for the connection within its timeout.
   * @param {string} method
   * @param {unknown} [params]
   * @param {{timeout?: number, signal?: AbortSignal}} [options]
   * @returns {Promise<any>}
   */
  call(method, params, options = {}) {
    if (typeof method !== 'string' || method === '') throw new TypeError('method must be a non-empty string');
    const timeout = options.timeout ?? this.#opts.timeoutMs;
    if (this.#state === 'closed') return Promise.reject(new ClientClosedError());
    return new Promise((resolve, reject) => {
      const id = this.#nextId++;
      /** @type {any} */
      const frame = { jsonrpc: '2.0', id, method };
      if (params !== undefined) frame.params = params;
      let settled = false;
      const finish = () => {
        settled = true;
        clearTimeout(timer);
        this.#pending.delete(id);
        this.#queued.delete(waiting);
        options.signal?.removeEventListener('abort', onAbort);
      };
      const entry = {
        method,
        resolve: (/** @type {any} */ value) => {
          finish();
          resolve(value);
        },
        reject: (/** @type {unknown} */ error) => {
          finish();
          reject(error);
        },
      };
      const waiting = {
        frame,
        reject: entry.reject,
        send: () => {
          if (settled) return;
          this.#queued.delete(waiting);
          this.#pending.set(id, entry);
          const failure = this.#send(frame);
          if (failure) entry.reject(failure);
        },
      };
      const onAbort = () => entry.reject(options.signal?.reason ?? new ClientClosedError('aborted'));
      const timer = setTimeout(() => entry.reject(new TimeoutError(method, timeout)), timeout);
      if (options.signal) {
        if (options.signal.aborted) return onAbort();
        options.signal.addEventListener('abort', onAbort, { once: true });
      }
      if (this.#state === 'open') waiting.send();
      else if (this.#queued.size >= this.#opts.maxQueuedCalls) {
        entry.reject(new OverflowError('calls waiting for the connection', this.#opts.maxQueuedCalls));
      } else this.#queued.add(waiting);
    });
  }

  /**
   * Send a notification (a call without id: no answer). Returns false when
   * the connection is not open (nothing was sent).
   * @param {string} method
   * @param {unknown} [params]
   * @returns {boolean}
   */
  notify(method, params) {
    if (this.#state !== 'open') return false;
    /** @type {any} */
    const frame = { jsonrpc: '2.0', method };
    if (params !== undefined) frame.params = params;
    const failure = this.#send(frame);
    if (failure instanceof PayloadTooLargeError) throw failure;
    return failure === null;
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
      const timeout = options.timeout ?? (params.timeoutMs ?? this.#opts.timeoutMs) + 5_000;
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
   * a number replays, now, what was logged after that offset; `false`
   * re-subscribes without replay.
   * @param {string} channel
   * @param {{recover?: boolean | number, onMessage?: (message: any) => void, bufferSize?: number}} [options]
   * @returns {Promise<Subscription>}
   */
  async subscribe(channel, options = {}) {
    if (typeof channel !== 'string' || channel === '') throw new TypeError('channel must be a non-empty string');
    const recover = options.recover;
    if (recover !== undefined && typeof recover !== 'boolean' && !(Number.isInteger(recover) && recover >= 0)) {
      throw new TypeError('recover is a boolean or an offset (a non-negative integer)');
    }
    const fresh = !this.#channels.has(channel);
    const state = this.#channels.get(channel) ?? new ChannelState(channel);
    if (fresh) {
      state.recover = recover !== false;
      this.#channels.set(channel, state);
    }
    const handle = new Subscription(
      state,
      { bufferSize: this.#opts.bufferSize, ...options },
      (sub) => this.#leaveChannel(state, sub),
    );
    state.handles.add(handle);
    try {
      /** @type {number | undefined} */
      let after;
      if (fresh && typeof recover === 'number') after = recover;
      else if (fresh && recover === true) {
        // The newest offset now; subscribing with `recover` from it replays
        // whatever is published until the subscription is in place.
        const head = await this.call('history', { channel, limit: 1 });
        after = head.latest;
      }
      /** @type {any} */
      const params = { channels: [channel] };
      if (after !== undefined) {
        state.lastOffset = after;
        params.recover = { [channel]: after };
      }
      const reply = await this.call('subscribe', params);
      state.recovered(reply?.recovered?.[channel], after);
    } catch (error) {
      handle._end();
      if (state.handles.size === 0 && this.#channels.get(channel) === state) this.#channels.delete(channel);
      throw error;
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
    if (this.#state === 'open') await this.call('unsubscribe', { channels: [state.channel] });
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
   * logged after that offset are delivered first. After a reconnect it is
   * joined again and filled from its history.
   * @param {string} sessionId
   * @param {{since?: number, onEvent?: (event: any) => void, bufferSize?: number}} [options]
   * @returns {Promise<Session>}
   */
  async joinSession(sessionId, options = {}) {
    const session = this.#session({ sessionId, owner: false, lastOffset: options.since ?? 0 }, options);
    try {
      if (options.since !== undefined) {
        await session._join((method, params) => this.call(method, params), true);
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
   * e.g. from a new process; events after `offset` arrive first.
   * @param {{sessionId: string, resumeToken: string, offset?: number}} params
   * @param {{onEvent?: (event: any) => void, bufferSize?: number}} [options]
   * @returns {Promise<Session>}
   */
  async resumeSession(params, options = {}) {
    const session = this.#session(
      { sessionId: params.sessionId, owner: true, resumeToken: params.resumeToken, lastOffset: params.offset ?? 0 },
      options,
    );
    try {
      const reply = await this.call('session.resume', session.resumeParams());
      session.record = reply.session;
    } catch (error) {
      session._end();
      throw error;
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
        emit: (method, params) => this.#emitPush(method, params),
        forget: (s) => {
          if (this.#sessions.get(s.id) === s) this.#sessions.delete(s.id);
        },
      },
      init,
      { bufferSize: this.#opts.bufferSize, ...options },
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
   * Handle server requests with `method` (`invoke`, `agent.run`,
   * `chat.send`, `chat.completions`, a registered method name). The
   * handler's return value (or promise) is the answer; an RpcError it throws
   * is answered as is, any other error as -32603 with its message.
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

  // --------------------------------------------------------------- closing

  /**
   * Close the connection for good: pending calls fail with a
   * ClientClosedError, iterators end, nothing reconnects.
   * @returns {Promise<void>}
   */
  async close() {
    if (this.#state === 'closed') return;
    const ws = this.#ws;
    this.#finish(new ClientClosedError(), 1000, 'client closed');
    if (ws && ws.readyState !== 3) {
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, 1_000);
        ws.addEventListener('close', () => {
          clearTimeout(timer);
          resolve(undefined);
        });
        try {
          ws.close(1000, 'client closed');
        } catch {
          clearTimeout(timer);
          resolve(undefined);
        }
      });
    }
  }

  /**
   * Final state: everything pending fails with `error`, iterators end.
   * @param {unknown} error
   * @param {number} code
   * @param {string} reason
   */
  #finish(error, code, reason) {
    if (this.#state === 'closed') return;
    const wasOpen = this.#ws !== null || this.#state === 'reconnecting';
    this.#closing = true;
    this.#state = 'closed';
    clearTimeout(this.#pingTimer);
    if (this.#sleeping) {
      clearTimeout(this.#sleeping.timer);
      this.#sleeping.resolve();
      this.#sleeping = null;
    }
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      try {
        ws.close(1000, 'client closed');
      } catch {
        // already closing
      }
    }
    this.#failPending(error);
    for (const waiting of [...this.#queued]) waiting.reject(error);
    this.#queued.clear();
    for (const state of this.#channels.values()) state.fail(undefined);
    this.#channels.clear();
    for (const session of [...this.#sessions.values()]) session._end();
    this.#sessions.clear();
    if (wasOpen) this.#events.emit('close', { code, reason, willReconnect: false, error });
    this.#events.emit('_final', error);
  }

  // -------------------------------------------------------- the connection

  /** @internal First connection; used by `connect()`. */
  async _start() {
    try {
      await this.#establish(false);
    } catch (error) {
      this.#finish(error, 1006, 'connect failed');
      throw error;
    }
  }

  /**
   * Open a socket, wait for `welcome`, send `connect` (credentials, role,
   * caps, the first owned session to resume), restore the rest, then go
   * `open` and send the calls that waited.
   * @param {boolean} reconnected
   */
  async #establish(reconnected) {
    const url = this.url;
    /** @type {any} */
    let ws;
    try {
      ws = new this.#WebSocket(url);
    } catch (error) {
      throw new ConnectionError(`cannot open ${url}`, { cause: error });
    }
    this.#ws = ws;
    this.#welcome = null;
    this.#hello = null;
    try {
      const welcome = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.#onWelcome = null;
          reject(new ConnectionError(`no welcome from ${url} within ${this.#opts.connectTimeoutMs} ms`));
        }, this.#opts.connectTimeoutMs);
        this.#onWelcome = (w) => {
          clearTimeout(timer);
          this.#onWelcome = null;
          resolve(w);
        };
        ws.addEventListener('message', (/** @type {any} */ ev) => {
          if (ws === this.#ws) this.#onFrame(ev.data);
        });
        const closed = (/** @type {number} */ code, /** @type {string} */ reason) => {
          if (this.#onWelcome) {
            clearTimeout(timer);
            this.#onWelcome = null;
            reject(new ConnectionError(`connection to ${url} closed (${code}${reason ? `: ${reason}` : ''})`, { code, reason }));
          }
          this.#onSocketClosed(ws, code, reason);
        };
        ws.addEventListener('close', (/** @type {any} */ ev) => closed(ev.code, ev.reason));
        // Some implementations (Node 20's) report a failed connection with
        // `error` alone, never `close`: an error ends the socket either way.
        ws.addEventListener('error', () => {
          if (ws !== this.#ws) return;
          closed(1006, 'connection failed');
          try {
            ws.close();
          } catch {
            // never opened
          }
        });
      });
      this.#welcome = welcome;

      /** @type {any} */
      const params = {};
      if (this.#opts.client) params.client = this.#opts.client;
      if (this.#opts.role) params.role = this.#opts.role;
      if (this.#opts.caps) params.caps = this.#opts.caps;
      const auth = await this.#credentials();
      if (auth) params.auth = auth;
      const owned = [...this.#sessions.values()].filter((s) => s.owner && s.resumeToken && s.active);
      if (reconnected && owned.length > 0) params.resume = owned[0].resumeParams();
      const hello = await this.#rawCall('connect', params, this.#opts.connectTimeoutMs);
      this.#hello = hello;
      if (reconnected) await this.#restore(hello, owned);
    } catch (error) {
      this.#drop(ws);
      throw error;
    }
    if (this.#closing || ws !== this.#ws) throw new ConnectionError(`connection to ${url} lost while restoring`);
    this.#state = 'open';
    this.#schedulePing();
    this.#events.emit('open', { url, connId: this.connId, nodeId: this.nodeId, reconnected, hello: this.#hello });
    for (const waiting of [...this.#queued]) {
      if (this.#state !== 'open') break;
      waiting.send();
    }
  }

  /** The in-band credentials, resolving functions (e.g. to fetch a fresh JWT). */
  async #credentials() {
    for (const key of CREDENTIALS) {
      const value = this.#opts[key];
      if (value === undefined) continue;
      const secret = typeof value === 'function' ? await value() : value;
      if (typeof secret !== 'string' || secret === '') throw new TypeError(`${key} must be a non-empty string`);
      return { [key]: secret };
    }
    return undefined;
  }

  /**
   * After a reconnect: resume owned sessions (the first came back with
   * `connect`), join the others again, register agents, subscribe channels
   * again with `recover`. Calls are pipelined; the gateway runs them in order.
   * A connection failure fails the whole restore (the next attempt redoes
   * it); any other failure is reported and drops only what failed.
   * @param {any} hello
   * @param {Session[]} owned
   */
  async #restore(hello, owned) {
    /** @type {Promise<void>[]} */
    const tasks = [];
    const call = (/** @type {string} */ method, /** @type {unknown} */ params) => this.#rawCall(method, params);
    const settle = (/** @type {Promise<any>} */ p, /** @type {(v: any) => void} */ ok, /** @type {(e: unknown) => void} */ failed) =>
      tasks.push(
        p.then(ok, (error) => {
          if (error instanceof ConnectionError || error instanceof TimeoutError) throw error;
          failed(error);
        }),
      );
    if (owned.length > 0) owned[0]._resumed(hello.resume);
    for (const session of owned.slice(1)) {
      settle(call('session.resume', session.resumeParams()), (r) => session._resumed(r), (e) => session._lose(e));
    }
    for (const session of this.#sessions.values()) {
      if (!session.owner && session.active) tasks.push(session._join(call));
    }
    for (const params of this.#registrations.values()) {
      settle(call('agent.register', params), () => {}, (e) => this.#report(e, 'agent.register'));
    }
    for (const state of this.#channels.values()) {
      /** @type {any} */
      const params = { channels: [state.channel] };
      const after = state.recover ? state.lastOffset : undefined;
      if (after !== undefined) params.recover = { [state.channel]: after };
      settle(
        call('subscribe', params),
        (r) => state.recovered(r?.recovered?.[state.channel], after),
        (e) => {
          this.#channels.delete(state.channel);
          state.fail(e);
          this.#report(e, 'subscribe');
        },
      );
    }
    await Promise.all(tasks);
  }

  /**
   * @param {unknown} error
   * @param {string} context
   */
  #report(error, context) {
    this.#events.emit('error', { error, context });
  }

  /**
   * A call on the current socket whatever the state (handshake, restore).
   * @param {string} method
   * @param {unknown} [params]
   * @param {number} [timeout]
   * @returns {Promise<any>}
   */
  #rawCall(method, params, timeout = this.#opts.timeoutMs) {
    return new Promise((resolve, reject) => {
      const id = this.#nextId++;
      /** @type {any} */
      const frame = { jsonrpc: '2.0', id, method };
      if (params !== undefined) frame.params = params;
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new TimeoutError(method, timeout));
      }, timeout);
      this.#pending.set(id, {
        method,
        resolve: (v) => {
          clearTimeout(timer);
          this.#pending.delete(id);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          this.#pending.delete(id);
          reject(e);
        },
      });
      const failure = this.#send(frame);
      if (failure) this.#pending.get(id)?.reject(failure);
    });
  }

  /**
   * Send a frame on the current socket; returns the error when it could
   * not be sent, else null.
   * @param {any} frame
   * @returns {Error | null}
   */
  #send(frame) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== 1) return new ConnectionError('not connected');
    const text = JSON.stringify(frame);
    const limit = this.#hello?.limits?.maxPayload;
    if (Number.isInteger(limit) && text.length * 3 > limit) {
      const size = this.#encoder.encode(text).length;
      if (size > limit) return new PayloadTooLargeError(size, limit);
    }
    try {
      ws.send(text);
    } catch (error) {
      return new ConnectionError('send failed', { cause: error });
    }
    return null;
  }

  /** @param {unknown} data */
  #onFrame(data) {
    if (typeof data !== 'string') return;
    /** @type {any} */
    let value;
    try {
      value = JSON.parse(data);
    } catch {
      return;
    }
    for (const frame of Array.isArray(value) ? value : [value]) {
      if (!frame || typeof frame !== 'object') continue;
      if (typeof frame.method === 'string') {
        if (frame.id !== undefined && frame.id !== null) this.#onServerRequest(String(frame.id), frame.method, frame.params);
        else this.#onPush(frame.method, frame.params);
      } else if (typeof frame.id === 'number') {
        const entry = this.#pending.get(frame.id);
        if (!entry) continue;
        if (frame.error !== undefined) entry.reject(RpcError.from(frame.error));
        else entry.resolve(frame.result);
      }
    }
  }

  /**
   * @param {string} method
   * @param {any} params
   */
  #onPush(method, params) {
    switch (method) {
      case 'welcome':
        this.#onWelcome?.(params);
        break;
      case 'notify': {
        const state = this.#channels.get(params?.channel);
        if (state && !state.accept(params)) return;
        break;
      }
      case 'session.event':
      case 'agent.event':
      case 'session.updated':
      case 'session.closed': {
        const session = this.#sessions.get(params?.sessionId);
        if (session) {
          session._push(method, params);
          return;
        }
        break;
      }
      case 'invoke.cancel':
        this.#dispatcher.cancel(params?.id);
        break;
      case 'agent.cancel':
        this.#dispatcher.cancelSession(params?.sessionId);
        break;
      case 'agent.deregistered':
        this.#registrations.delete(params?.agentId);
        break;
      case 'shutdown':
        if (Number.isInteger(params?.reconnectAfterMs)) this.#shutdownDelay = params.reconnectAfterMs;
        break;
    }
    this.#emitPush(method, params);
  }

  /**
   * @param {string} method
   * @param {unknown} params
   */
  #emitPush(method, params) {
    if (STATE_EVENTS.has(method)) return;
    this.#events.emit(method, params);
    this.#events.emit('*', { method, params });
  }

  /**
   * @param {string} id
   * @param {string} method
   * @param {any} params
   */
  #onServerRequest(id, method, params) {
    const ws = this.#ws;
    this.#dispatcher.dispatch(id, method, params, {
      // Answers and notifications belong to the connection that got the request.
      answer: (body) => {
        if (ws !== this.#ws) return;
        const failure = this.#send({ jsonrpc: '2.0', id, ...body });
        if (failure instanceof PayloadTooLargeError) {
          this.#send({ jsonrpc: '2.0', id, error: { code: ErrorCode.INTERNAL_ERROR, message: failure.message } });
        }
      },
      notify: (m, p) => ws === this.#ws && this.#send({ jsonrpc: '2.0', method: m, params: p }) === null,
      requestApproval: (options) => this.requestApproval(options),
    });
  }

  /** @param {unknown} error */
  #failPending(error) {
    for (const entry of [...this.#pending.values()]) entry.reject(error);
    this.#pending.clear();
    this.#dispatcher.abortAll(error);
  }

  /**
   * Forget a socket now (a failed attempt, a dead connection): its close
   * event, whenever it comes, is ignored.
   * @param {any} ws
   */
  #drop(ws) {
    if (ws === this.#ws) this.#onSocketClosed(ws, 4000, 'dropped by the client');
    try {
      ws.close(1000);
    } catch {
      // not open yet, or already closing
    }
  }

  /**
   * @param {any} ws
   * @param {number} code
   * @param {string} reason
   */
  #onSocketClosed(ws, code, reason) {
    if (ws !== this.#ws) return;
    this.#ws = null;
    clearTimeout(this.#pingTimer);
    const error = new ConnectionError(`connection closed (${code}${reason ? `: ${reason}` : ''})`, { code, reason });
    this.#failPending(error);
    if (this.#state !== 'open') return; // a failed attempt: #establish reports it
    const willReconnect = this.#reconnect !== null && code !== CLOSE_REVOKED && !this.#closing;
    this.#state = willReconnect ? 'reconnecting' : this.#state;
    this.#events.emit('close', { code, reason, willReconnect });
    if (willReconnect) void this.#reconnectLoop(error);
    else this.#finish(error, code, reason);
  }

  /** @param {unknown} lastError */
  async #reconnectLoop(lastError) {
    const policy = /** @type {typeof RECONNECT_DEFAULTS} */ (this.#reconnect);
    const start = this.#urlIndex;
    for (let attempt = 1; ; attempt++) {
      if (this.#closing) return;
      if (attempt > policy.maxAttempts) {
        this.#finish(new ClientClosedError(`gave up reconnecting after ${policy.maxAttempts} attempts`), 1006, 'gave up');
        return;
      }
      let delay = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.factor ** (attempt - 1));
      delay = Math.round(delay * (1 - policy.jitter * Math.random()));
      if (attempt === 1 && this.#shutdownDelay !== undefined) delay = Math.max(delay, this.#shutdownDelay);
      this.#shutdownDelay = undefined;
      const retryAfter = lastError instanceof RpcError ? /** @type {any} */ (lastError.data)?.retryAfterMs : undefined;
      if (Number.isInteger(retryAfter)) delay = Math.max(delay, retryAfter);
      this.#urlIndex = start + attempt - 1;
      this.#events.emit('reconnecting', { attempt, delayMs: delay, url: this.url, error: lastError });
      await this.#sleep(delay);
      if (this.#closing) return;
      try {
        await this.#establish(true);
        return;
      } catch (error) {
        if (this.#closing) return;
        if (isFatal(error)) {
          this.#finish(error, 1008, 'authentication failed');
          return;
        }
        lastError = error;
      }
    }
  }

  /** @param {number} ms */
  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#sleeping = null;
        resolve(undefined);
      }, ms);
      this.#sleeping = { timer, resolve: () => resolve(undefined) };
    });
  }

  /** Keep-alive: a `ping` every pingIntervalMs; no answer drops the socket. */
  #schedulePing() {
    clearTimeout(this.#pingTimer);
    const interval = this.#opts.pingIntervalMs;
    if (!interval) return;
    const ws = this.#ws;
    this.#pingTimer = setTimeout(async () => {
      if (ws !== this.#ws || this.#state !== 'open') return;
      try {
        await this.#rawCall('ping', undefined, this.#opts.pingTimeoutMs);
      } catch (error) {
        if (error instanceof TimeoutError && ws === this.#ws) {
          this.#report(error, 'ping');
          this.#drop(ws);
        }
        return;
      }
      if (ws === this.#ws) this.#schedulePing();
    }, interval);
  }
}

/**
 * Bad credentials or a forbidden role cannot succeed on a retry.
 * @param {unknown} error
 */
function isFatal(error) {
  return error instanceof RpcError && (error.code === ErrorCode.UNAUTHORIZED || error.code === ErrorCode.FORBIDDEN);
}

/**
 * Check a gateway URL: ws/wss, and no credentials in it (they go in-band).
 * @param {string} url
 */
function checkUrl(url) {
  /** @type {URL} */
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new TypeError(`not a URL: ${url}`);
  }
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw new TypeError(`a gateway URL is ws:// or wss://, not ${parsed.protocol}`);
  }
  if (parsed.username || parsed.password) throw new TypeError('credentials do not belong in the URL; pass them as options');
  for (const key of parsed.searchParams.keys()) {
    if (CREDENTIAL_QUERY.includes(key.toLowerCase())) {
      throw new TypeError(`credentials do not belong in the URL (${key}); pass them as options`);
    }
  }
  return parsed.href;
}

/** A random id for `invokeId`. */
function randomId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}
