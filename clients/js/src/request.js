// The agent side: server → client requests (`srv-N`) dispatched to the
// handlers an agent registered, answered with what they return, and
// cancelled when the caller cancels or the connection is lost.
//
// A run (`agent.run`) outlives its connection: when the connection drops,
// its handler goes on and the run waits to be taken back. Once the client
// is connected and registered again (on any instance), it calls
// `agent.reattach {sessionId, runId}`; from then on the run's events go out
// on the new connection and its answer ends it with `agent.finish`, since
// the request it came with belonged to the connection that is gone. A run
// that cannot be taken back (refused, the connection lost again, no
// connection within TAKE_BACK_WAIT_MS) is aborted like any other request.

import { ConnectionError, ErrorCode, RpcError } from './errors.js';

/** How long a run whose connection dropped waits to be taken back, and longest `agent.reattach` wait. */
export const TAKE_BACK_WAIT_MS = 120_000;

/**
 * @typedef {(method: string, params: unknown, timeout?: number) => Promise<any>} Call
 * a call on one connection, failing with a ConnectionError once it is gone
 */

/**
 * @typedef {object} RequestLink what an IncomingRequest needs from its client
 * @property {(body: any) => void} answer the response (`{result}` or `{error}`) on the request's connection
 * @property {(method: string, params: unknown) => boolean} notify on the request's connection
 * @property {Call} call on the request's connection
 * @property {(options: any) => Promise<any>} requestApproval
 * @property {(error: unknown, context: string) => void} report a failure nobody awaits (the client's `error` event)
 */

/**
 * A request the gateway sent this client (`invoke`, `agent.run`,
 * `chat.send`, `chat.completions`, a registered method…), handed to the
 * handler registered with `client.handle` or `client.tool`. The handler's
 * return value is the answer; throwing an RpcError answers that error.
 */
export class IncomingRequest {
  #link;
  #controller;
  /** @type {Call} calls of the request: on its connection, or on the one the run was taken back on */
  #call;
  /** @type {Detached | null} set once the run's connection dropped */
  #detached = null;
  #reattaching = false;

  /**
   * @internal
   * @param {RequestLink} link
   * @param {string} id
   * @param {string} method
   * @param {any} params
   * @param {AbortController} controller
   */
  constructor(link, id, method, params, controller) {
    this.#link = link;
    this.#controller = controller;
    this.#call = link.call;
    /** The request's id (`srv-N`). */
    this.id = id;
    /** `invoke`, `agent.run`, `chat.send`, `chat.completions`, … */
    this.method = method;
    /** The request's params as sent. */
    this.params = params ?? {};
    /** Who called: `{connId, identity, role, scopes, via?}`. */
    this.caller = this.params.caller;
  }

  /** For `invoke`: the command (a tool's name, a method's name). */
  get command() {
    return this.params.command;
  }

  /** For `invoke`: the caller's arguments (`params.params`). */
  get args() {
    return this.params.params;
  }

  /** For `agent.run` and `chat.send`: the session of the run. */
  get sessionId() {
    return this.params.sessionId;
  }

  /** For `agent.run`: the run's id (what `agent.reattach` names). */
  get runId() {
    return this.params.runId;
  }

  /**
   * Aborted when the caller cancels (`invoke.cancel`, `agent.cancel`),
   * times out or goes away, or when this connection is lost; the answer
   * would then be ignored. A run is aborted only if, once its connection
   * dropped, it cannot be taken back.
   */
  get signal() {
    return this.#controller.signal;
  }

  /** Whether `signal` has been aborted. */
  get cancelled() {
    return this.#controller.signal.aborted;
  }

  /**
   * Report progress to the caller (`invoke.progress`). Returns false when
   * it could not be sent (the connection is down or the request is over).
   * @param {unknown} data
   * @returns {boolean}
   */
  progress(data) {
    if (this.cancelled) return false;
    return this.#link.notify('invoke.progress', { id: this.id, data });
  }

  /**
   * Stream an event of the run to the session's members (`agent.event`),
   * sent as a call so that it is numbered before the run's answer. Resolves
   * with `{delivered, offset}` (`{delivered: 0, dropped: true}` once the run
   * was cancelled); never rejects: a failure resolves `{delivered: 0, error}`.
   * While a run's connection is down it waits until the run is taken back,
   * then sends on the new connection (the offsets follow the earlier ones);
   * one sent as the connection dropped may or may not have been logged
   * (`error` is a ConnectionError).
   * @param {string} type
   * @param {unknown} data
   * @returns {Promise<{delivered: number, offset?: number, dropped?: boolean, error?: unknown}>}
   */
  async event(type, data) {
    if (!(await this.back())) return { delivered: 0, error: this.signal.reason };
    try {
      return await this.#call('agent.event', { sessionId: this.sessionId, type, data });
    } catch (error) {
      return { delivered: 0, error };
    }
  }

  /**
   * For a run whose connection dropped: resolves true once it is taken back
   * on a later connection (`agent.reattach`), false when it cannot be
   * (`signal` is aborted then). At once true for a request whose connection
   * never dropped. Bounded: a run neither taken back nor being taken back
   * TAKE_BACK_WAIT_MS after the drop cannot be.
   * @returns {Promise<boolean>}
   */
  back() {
    return this.#detached ? this.#detached.promise : Promise.resolve(true);
  }

  /**
   * Ask a human and wait for the decision; see `client.requestApproval`.
   * `sessionId` defaults to this request's session.
   * @param {{tool: string, args?: unknown, summary?: string, sessionId?: string, timeoutMs?: number}} options
   */
  requestApproval(options) {
    const sessionId = options.sessionId ?? this.sessionId;
    return this.#link.requestApproval(sessionId ? { ...options, sessionId } : options);
  }

  /**
   * @internal
   * The connection this request's calls went on dropped. A run goes on and
   * waits to be taken back (true); any other request, or a run already
   * cancelled, is over (false).
   * @param {unknown} reason why the connection dropped
   * @returns {boolean}
   */
  _detach(reason) {
    const run = this.method === 'agent.run' && typeof this.runId === 'string' && typeof this.sessionId === 'string';
    if (!run || this.cancelled) {
      // A run taken back earlier and cancelled since: its answer goes nowhere.
      if (this.#detached) this.#detached = Detached.settled(false);
      return false;
    }
    // Still waiting from an earlier drop (a reconnect attempt failed), or
    // dropped again after it was taken back: then it waits once more.
    if (this.#detached && !this.#detached.done) return true;
    this.#detached = new Detached(() => this.#expired(reason));
    return true;
  }

  /**
   * @internal
   * The client is registered again on a new connection: take the run back
   * (`agent.reattach`, which waits while the gateway has not yet noticed
   * that the instance serving it died). Once back, its calls go on `call`;
   * if it cannot be, the handler is aborted.
   * @param {Call} call on the new connection
   */
  async _takeBack(call) {
    const detached = this.#detached;
    if (!detached || detached.done || this.#reattaching) return;
    this.#reattaching = true;
    try {
      await call('agent.reattach', { sessionId: this.sessionId, runId: this.runId }, TAKE_BACK_WAIT_MS);
      this.#call = call;
      detached.settle(true);
    } catch (error) {
      // Given up meanwhile (the client closed, the wait expired): nothing more to say.
      if (detached.done) return;
      this.#link.report(error, 'agent.reattach');
      this.#controller.abort(error);
      detached.settle(false);
    } finally {
      this.#reattaching = false;
    }
  }

  /**
   * @internal
   * The client closed for good: a run waiting to be taken back never will be.
   * @param {unknown} reason
   */
  _abort(reason) {
    this.#controller.abort(reason);
    if (this.#detached && !this.#detached.done) this.#detached.settle(false);
  }

  /**
   * @internal
   * Answer with what the handler returned or threw. A run whose connection
   * dropped is answered on the connection it was taken back on, with
   * `agent.finish`; if that connection drops too before the gateway
   * answered, the finish is sent again once the run is taken back again (a
   * finish that went through makes that take-back fail: the run has ended).
   * @param {{result: unknown} | {error: {code: number, message: string, data?: unknown}}} body
   */
  async _answer(body) {
    if (!this.#detached) {
      this.#link.answer(body);
      return;
    }
    const params = { sessionId: this.sessionId, runId: this.runId, ...body };
    for (;;) {
      if (!(await this.back())) return;
      try {
        await this.#call('agent.finish', params);
        return;
      } catch (error) {
        const detached = /** @type {Detached} */ (this.#detached);
        // Dropped again: sent again once taken back again.
        if (error instanceof ConnectionError && !detached.done) continue;
        // Given up on (the client closed): nothing more to say.
        if (detached.ok === false) return;
        this.#link.report(error, 'agent.finish');
        return;
      }
    }
  }

  /**
   * Nobody took the run back in time: it is over.
   * @param {unknown} reason why its connection dropped
   */
  #expired(reason) {
    if (this.#reattaching || !this.#detached || this.#detached.done) return;
    this.#link.report(reason, 'agent.reattach');
    this.#controller.abort(reason);
    this.#detached.settle(false);
  }
}

/** A run whose connection dropped, until it is taken back or cannot be. */
class Detached {
  /** @type {(ok: boolean) => void} */
  #resolve = () => {};
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  #timer;
  done = false;
  /** @type {boolean | undefined} once done: whether the run was taken back */
  ok = undefined;

  /** @param {() => void} [onExpired] called if not settled within TAKE_BACK_WAIT_MS */
  constructor(onExpired) {
    /** @type {Promise<boolean>} */
    this.promise = new Promise((resolve) => {
      this.#resolve = resolve;
    });
    if (onExpired) this.#timer = setTimeout(onExpired, TAKE_BACK_WAIT_MS);
  }

  /** @param {boolean} ok */
  static settled(ok) {
    const detached = new Detached();
    detached.settle(ok);
    return detached;
  }

  /** @param {boolean} ok whether the run was taken back */
  settle(ok) {
    if (this.done) return;
    this.done = true;
    this.ok = ok;
    clearTimeout(this.#timer);
    this.#resolve(ok);
  }
}

/**
 * @typedef {(request: IncomingRequest) => unknown} Handler
 */

/**
 * A request being handled.
 * @typedef {{request: IncomingRequest, controller: AbortController}} Running
 */

/**
 * The handlers of one client and the requests they are working on.
 * @internal
 */
export class Dispatcher {
  /** @type {Map<string, Handler>} */
  #handlers = new Map();
  /** @type {Map<string, Handler>} */
  #tools = new Map();
  /** @type {Map<string, Running>} requests of the current connection, by id */
  #running = new Map();
  /**
   * Runs whose connection dropped: waiting to be taken back, or taken back
   * (their `srv-N` ids belonged to that connection; a new one reuses them).
   * @type {Set<Running>}
   */
  #runs = new Set();

  /**
   * @param {string} method
   * @param {Handler} handler
   * @returns {() => void}
   */
  handle(method, handler) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    this.#handlers.set(method, handler);
    return () => {
      if (this.#handlers.get(method) === handler) this.#handlers.delete(method);
    };
  }

  /**
   * @param {string} name
   * @param {Handler} handler
   * @returns {() => void}
   */
  tool(name, handler) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    this.#tools.set(name, handler);
    return () => {
      if (this.#tools.get(name) === handler) this.#tools.delete(name);
    };
  }

  /**
   * Run the handler for a request and answer it through `link.answer`
   * (which drops answers for a connection that is gone), or, for a run
   * taken back on a later connection, with `agent.finish`.
   * @param {string} id
   * @param {string} method
   * @param {any} params
   * @param {RequestLink} link
   */
  dispatch(id, method, params, link) {
    const handler = (method === 'invoke' && this.#tools.get(params?.command)) || this.#handlers.get(method);
    if (!handler) {
      const what = method === 'invoke' ? `no tool ${params?.command}` : `no handler for ${method}`;
      link.answer({ error: { code: ErrorCode.METHOD_NOT_FOUND, message: what } });
      return;
    }
    const controller = new AbortController();
    const request = new IncomingRequest(link, id, method, params, controller);
    const running = { request, controller };
    this.#running.set(id, running);
    Promise.resolve()
      .then(() => handler(request))
      .then(
        (result) => request._answer({ result: result === undefined ? null : result }),
        (error) => request._answer({ error: errorBody(error) }),
      )
      .finally(() => {
        if (this.#running.get(id) === running) this.#running.delete(id);
        this.#runs.delete(running);
      });
  }

  /**
   * `invoke.cancel {id}`: the caller cancelled, timed out or went away.
   * @param {string} id
   */
  cancel(id) {
    this.#running.get(id)?.controller.abort(new RpcError(ErrorCode.TIMEOUT, 'cancelled by the caller'));
  }

  /**
   * `agent.cancel {sessionId}`: the run on that session was cancelled (on
   * this connection, or taken back on it).
   * @param {string} sessionId
   */
  cancelSession(sessionId) {
    for (const running of [...this.#running.values(), ...this.#runs]) {
      const own = running.request.sessionId;
      if (typeof own === 'string' && own === sessionId) {
        running.controller.abort(new RpcError(ErrorCode.TIMEOUT, 'run cancelled'));
      }
    }
  }

  /**
   * The connection is gone: every request in progress is aborted (the
   * gateway has given its call up; an answer could not be delivered), but
   * runs, which wait to be taken back on the next connection.
   * @param {unknown} reason
   */
  dropped(reason) {
    // Runs taken back on the connection that dropped wait again.
    for (const running of [...this.#runs]) {
      if (running.request._detach(reason)) continue;
      running.controller.abort(reason);
      this.#runs.delete(running);
    }
    for (const running of this.#running.values()) {
      if (running.request._detach(reason)) this.#runs.add(running);
      else running.controller.abort(reason);
    }
    this.#running.clear();
  }

  /**
   * The client is registered again on a new connection: take back every
   * run waiting for it (`agent.reattach`, once each; they run concurrently
   * and may wait long, see `IncomingRequest#_takeBack`).
   * @param {Call} call on the new connection
   */
  takeBack(call) {
    for (const running of this.#runs) void running.request._takeBack(call);
  }

  /**
   * The client closed for good: every request in progress is aborted, runs
   * waiting to be taken back too.
   * @param {unknown} reason
   */
  abortAll(reason) {
    this.dropped(reason);
    for (const running of this.#runs) running.request._abort(reason);
    this.#runs.clear();
  }
}

/**
 * The JSON-RPC error member for what a handler threw: an RpcError as is,
 * anything else as -32603 with its message.
 * @param {unknown} error
 */
function errorBody(error) {
  if (error instanceof RpcError) return error.toJSON();
  const message = error instanceof Error ? error.message : String(error);
  return { code: ErrorCode.INTERNAL_ERROR, message: message || 'handler failed' };
}
