// The agent side: server → client requests (`srv-N`) dispatched to the
// handlers an agent registered, answered with what they return, and
// cancelled when the caller cancels or the connection is lost.

import { ErrorCode, RpcError } from './errors.js';

/**
 * @typedef {object} RequestLink what an IncomingRequest needs from its client
 * @property {(method: string, params: unknown) => boolean} notify on the request's connection
 * @property {(method: string, params: unknown) => Promise<any>} call on the request's connection
 * @property {(options: any) => Promise<any>} requestApproval
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

  /**
   * Aborted when the caller cancels (`invoke.cancel`, `agent.cancel`),
   * times out or goes away, or when this connection is lost; the answer
   * would then be ignored.
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
   * @param {string} type
   * @param {unknown} data
   * @returns {Promise<{delivered: number, offset?: number, dropped?: boolean, error?: unknown}>}
   */
  event(type, data) {
    return this.#link
      .call('agent.event', { sessionId: this.sessionId, type, data })
      .catch((error) => ({ delivered: 0, error }));
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
}

/**
 * @typedef {(request: IncomingRequest) => unknown} Handler
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
  /** @type {Map<string, {controller: AbortController, sessionId?: string}>} */
  #running = new Map();

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
   * (which drops answers for a connection that is gone).
   * @param {string} id
   * @param {string} method
   * @param {any} params
   * @param {RequestLink & {answer: (body: any) => void}} link
   */
  dispatch(id, method, params, link) {
    const handler = (method === 'invoke' && this.#tools.get(params?.command)) || this.#handlers.get(method);
    if (!handler) {
      const what = method === 'invoke' ? `no tool ${params?.command}` : `no handler for ${method}`;
      link.answer({ error: { code: ErrorCode.METHOD_NOT_FOUND, message: what } });
      return;
    }
    const controller = new AbortController();
    const sessionId = typeof params?.sessionId === 'string' ? params.sessionId : undefined;
    this.#running.set(id, { controller, sessionId });
    const request = new IncomingRequest(link, id, method, params, controller);
    Promise.resolve()
      .then(() => handler(request))
      .then(
        (result) => link.answer({ result: result === undefined ? null : result }),
        (error) => link.answer({ error: errorBody(error) }),
      )
      .finally(() => {
        if (this.#running.get(id)?.controller === controller) this.#running.delete(id);
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
   * `agent.cancel {sessionId}`: the run on that session was cancelled.
   * @param {string} sessionId
   */
  cancelSession(sessionId) {
    for (const running of this.#running.values()) {
      if (running.sessionId !== undefined && running.sessionId === sessionId) {
        running.controller.abort(new RpcError(ErrorCode.TIMEOUT, 'run cancelled'));
      }
    }
  }

  /**
   * The connection is gone: every request in progress is aborted (its
   * answer could not be delivered).
   * @param {unknown} reason
   */
  abortAll(reason) {
    for (const running of this.#running.values()) running.controller.abort(reason);
    this.#running.clear();
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
