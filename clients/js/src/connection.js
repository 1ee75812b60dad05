// One WebSocket to a Switchyard gateway at a time: JSON-RPC 2.0 calls and
// pushes over it, credentials in-band (`connect {auth}`, never in the URL),
// a keep-alive ping, and reconnection with bounded exponential backoff.
// What a connection held is put back by the subclass (`Client`) through
// the hooks at the end of the class.
//
// Browser-safe: only the standard WebSocket, timers, AbortController and
// TextEncoder are used.

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

/** Names `on` reserves for connection state; every other name is a pushed method. */
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

/** A connection to a Switchyard gateway; `Client` adds the protocol's features. */
export class Connection {
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

  #events = new Emitter();

  /**
   * The constructor does not open the connection: `connect()` does.
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

  /**
   * The options in force (defaults applied).
   * @protected
   */
  get _options() {
    return this.#opts;
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
   * Close the connection for good: pending calls fail with a
   * ClientClosedError, iterators end, nothing reconnects.
   * @returns {Promise<void>}
   */
  async close() {
    if (this.#state === 'closed') return;
    const ws = this.#ws;
    // Resolves once the socket has closed (the close handshake, at most 1 s).
    const closed =
      ws && ws.readyState !== 3
        ? new Promise((resolve) => {
            const timer = setTimeout(resolve, 1_000);
            ws.addEventListener('close', () => {
              clearTimeout(timer);
              resolve(undefined);
            });
          })
        : undefined;
    this.#finish(new ClientClosedError(), 1000, 'client closed');
    await closed;
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
    this._onFinal(error);
    if (wasOpen) this.#events.emit('close', { code, reason, willReconnect: false, error });
    this.#events.emit('_final', error);
  }

  // -------------------------------------------------------- the connection

  /** @internal The first connection; used by `connect()`. */
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
   * caps, what `_connectParams` adds), let `_restore` put back what the
   * previous connection held, then go `open` and send the calls that waited.
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
      Object.assign(params, this._connectParams(reconnected));
      try {
        const hello = await this._rawCall('connect', params, this.#opts.connectTimeoutMs);
        this.#hello = hello;
        if (reconnected) await this._restore(hello);
      } finally {
        this._restoreEnded(reconnected);
      }
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
   * Report a failure nobody awaits (an `error` event).
   * @protected
   * @param {unknown} error
   * @param {string} context
   */
  _report(error, context) {
    this.#events.emit('error', { error, context });
  }

  /**
   * A call on the current socket whatever the state (handshake, restore).
   * @protected
   * @param {string} method
   * @param {unknown} [params]
   * @param {number} [timeout]
   * @returns {Promise<any>}
   */
  _rawCall(method, params, timeout = this.#opts.timeoutMs) {
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
        if (frame.id !== undefined && frame.id !== null) this._onRequest(String(frame.id), frame.method, frame.params, this.#ws);
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
    if (method === 'welcome') this.#onWelcome?.(params);
    else if (method === 'shutdown' && Number.isInteger(params?.reconnectAfterMs)) {
      this.#shutdownDelay = params.reconnectAfterMs;
    }
    if (this._onPush(method, params)) this._emitPush(method, params);
  }

  /**
   * Deliver a push to `on(method)` and `*` listeners.
   * @protected
   * @param {string} method
   * @param {unknown} params
   */
  _emitPush(method, params) {
    if (STATE_EVENTS.has(method)) return;
    this.#events.emit(method, params);
    this.#events.emit('*', { method, params });
  }

  /**
   * The current socket (an opaque token for `_sendOn`), or null.
   * @protected
   */
  get _socket() {
    return this.#ws;
  }

  /**
   * Send a frame on `socket` only if it is still the current one (answers
   * belong to the connection that got the request).
   * @protected
   * @param {unknown} socket
   * @param {any} frame
   * @returns {Error | null}
   */
  _sendOn(socket, frame) {
    if (socket !== this.#ws) return new ConnectionError('connection gone');
    return this.#send(frame);
  }

  // ----------------------------------------------------------------- hooks

  /**
   * Extra `connect` params (e.g. a session to resume).
   * @protected
   * @param {boolean} _reconnected
   * @returns {object}
   */
  _connectParams(_reconnected) {
    return {};
  }

  /**
   * After a reconnect, before `open`: put back what the connection held.
   * A ConnectionError or TimeoutError it throws fails the attempt.
   * @protected
   * @param {any} _hello
   * @returns {Promise<void>}
   */
  async _restore(_hello) {}

  /**
   * The handshake begun after `_connectParams` is over (restored, or failed).
   * @protected
   * @param {boolean} _reconnected
   */
  _restoreEnded(_reconnected) {}

  /**
   * A push arrived; returns whether to deliver it to listeners.
   * @protected
   * @param {string} _method
   * @param {any} _params
   * @returns {boolean}
   */
  _onPush(_method, _params) {
    return true;
  }

  /**
   * A server → client request arrived on `socket`.
   * @protected
   * @param {string} id
   * @param {string} method
   * @param {any} _params
   * @param {unknown} socket
   */
  _onRequest(id, method, _params, socket) {
    const error = { code: ErrorCode.METHOD_NOT_FOUND, message: `no handler for ${method}` };
    this._sendOn(socket, { jsonrpc: '2.0', id, error });
  }

  /**
   * The connection dropped (calls in flight have failed with `error`).
   * @protected
   * @param {unknown} _error
   */
  _onDrop(_error) {}

  /**
   * The connection is closed for good.
   * @protected
   * @param {unknown} _error
   */
  _onFinal(_error) {}

  /** @param {unknown} error */
  #failPending(error) {
    for (const entry of [...this.#pending.values()]) entry.reject(error);
    this.#pending.clear();
    this._onDrop(error);
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
        await this._rawCall('ping', undefined, this.#opts.pingTimeoutMs);
      } catch (error) {
        if (error instanceof TimeoutError && ws === this.#ws) {
          this._report(error, 'ping');
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

