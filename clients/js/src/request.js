// The agent side: a server → client request (`srv-N`) being handled.

/**
 * @typedef {object} RequestLink what an IncomingRequest needs from its client
 * @property {(method: string, params: unknown) => boolean} notify
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
   * Stream an event of the run to the session's members (`agent.event`).
   * @param {string} type
   * @param {unknown} data
   * @returns {boolean}
   */
  event(type, data) {
    if (this.cancelled) return false;
    return this.#link.notify('agent.event', { sessionId: this.sessionId, type, data });
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
