// Shared sessions: a handle per session the client created, joined or
// resumed. The client keeps the newest offset seen so that, after a
// reconnect, an owned session is resumed (`connect {resume}` or
// `session.resume`) and a joined one re-joined and filled from
// `session.history`, with no gap and no duplicate.

import { BoundedQueue, Emitter } from './queue.js';
import { ConnectionError, TimeoutError } from './errors.js';

/** Most events asked per `session.history` page. */
const HISTORY_PAGE = 1000;

/**
 * @typedef {object} SessionLink what a Session needs from its client
 * @property {(method: string, params?: unknown, options?: {timeout?: number}) => Promise<any>} call
 * @property {(method: string, params: any) => void} emit a notification to client-level listeners
 * @property {(session: Session) => void} forget stop tracking the session
 */

/**
 * One shared session. Events (`session.event` and `agent.event` params,
 * with `method` naming which) arrive in offset order, each once: iterate
 * the session (`for await (const e of session)`) or pass `onEvent`.
 * Emits `event`, `updated`, `closed`, `resumed`, `gap` and `lost`.
 */
export class Session {
  #link;
  #emitter = new Emitter();
  /** @type {BoundedQueue<any> | undefined} */
  #queue;
  /** @type {any[] | null} live events held back while the log is read */
  #held = null;
  #active = true;

  /**
   * @internal
   * @param {SessionLink} link
   * @param {{sessionId: string, owner: boolean, resumeToken?: string, lastOffset?: number}} init
   * @param {{onEvent?: (event: any) => void, bufferSize?: number}} options
   */
  constructor(link, init, options) {
    this.#link = link;
    /** The session's id. */
    this.id = init.sessionId;
    /** Whether this client owns it (and resumes it after a reconnect). */
    this.owner = init.owner;
    /** The secret `session.create` answered (owners only). */
    this.resumeToken = init.resumeToken;
    /** @type {number} the newest offset delivered (0: none) */
    this.lastOffset = init.lastOffset ?? 0;
    /** @type {any} the latest session record the gateway answered */
    this.record = undefined;
    if (options.onEvent) this.#emitter.on('event', options.onEvent);
    else this.#queue = new BoundedQueue(options.bufferSize ?? 1024, `session ${init.sessionId}`);
  }

  /** Whether events still arrive (false once closed, left or lost). */
  get active() {
    return this.#active;
  }

  /**
   * @param {'event' | 'updated' | 'closed' | 'resumed' | 'gap' | 'lost'} event
   * @param {(value: any) => void} listener
   * @returns {() => void}
   */
  on(event, listener) {
    return this.#emitter.on(event, listener);
  }

  /**
   * Send an event to every member (`session.send`).
   * @param {string} event
   * @param {unknown} [data]
   * @returns {Promise<{delivered: number, offset: number}>}
   */
  send(event, data) {
    return this.#link.call('session.send', { sessionId: this.id, event, data });
  }

  /**
   * The session's logged events after `since` (`session.history`).
   * @param {{since?: number, limit?: number}} [options]
   */
  history(options = {}) {
    return this.#link.call('session.history', { sessionId: this.id, ...options });
  }

  /** The session's record (`session.get`). */
  async get() {
    this.record = await this.#link.call('session.get', { sessionId: this.id });
    return this.record;
  }

  /**
   * Change `meta` with a JSON merge patch (`session.patch`).
   * @param {object} meta
   * @param {{baseVersion?: number}} [options]
   */
  async patch(meta, options = {}) {
    this.record = await this.#link.call('session.patch', { sessionId: this.id, meta, ...options });
    return this.record;
  }

  /**
   * Stop being a member (`session.leave`). An owner that leaves detaches
   * the session: `client.resumeSession` with `resumeToken` takes it back.
   */
  async leave() {
    this._end();
    return this.#link.call('session.leave', { sessionId: this.id });
  }

  /** Close the session for every member (`session.close`, owner or admin). */
  async close() {
    const reply = await this.#link.call('session.close', { sessionId: this.id });
    this._end();
    return reply;
  }

  /** The parameters that take this session back (`session.resume`). */
  resumeParams() {
    return { sessionId: this.id, resumeToken: this.resumeToken, offset: this.lastOffset };
  }

  /** @returns {AsyncIterator<any>} */
  [Symbol.asyncIterator]() {
    if (!this.#queue) throw new TypeError('this session delivers to its onEvent callback');
    return this.#queue;
  }

  /**
   * A push about this session.
   * @internal
   * @param {string} method
   * @param {any} params
   */
  _push(method, params) {
    if (!this.#active) return;
    if (method === 'session.event' || method === 'agent.event') {
      if (this.#held) {
        this.#held.push({ method, ...params });
        return;
      }
      this.#accept({ method, ...params });
    } else if (method === 'session.updated') {
      this.#emitter.emit('updated', params);
      this.#link.emit(method, params);
    } else if (method === 'session.closed') {
      this.#link.emit(method, params);
      this.#emitter.emit('closed', params);
      this._end();
    }
  }

  /** @param {any} event a session.event / agent.event with its method */
  #accept(event) {
    if (Number.isInteger(event.offset)) {
      if (event.offset <= this.lastOffset) return;
      this.lastOffset = event.offset;
    }
    this.#queue?.push(event);
    this.#emitter.emit('event', event);
    const { method, ...params } = event;
    this.#link.emit(method, params);
  }

  /**
   * What `session.resume` (or `connect {resume}`) answered after a reconnect.
   * @internal
   * @param {any} reply
   */
  _resumed(reply) {
    if (!reply || reply.resumed !== true) {
      this._lose(reply?.error ?? reply);
      return;
    }
    this.record = reply.session;
    this.#emitter.emit('resumed', reply);
    if (reply.complete === false) this.#emitter.emit('gap', reply);
  }

  /**
   * Become a member again after a reconnect (or join for the first time
   * from `since`): join, then read what was logged after the newest offset
   * seen, holding live events back until the log has been read.
   * @internal
   * @param {(method: string, params: unknown) => Promise<any>} call
   * @param {boolean} [initial] a first join: every failure is thrown
   */
  async _join(call, initial = false) {
    this.#held = [];
    try {
      this.record = await call('session.join', { sessionId: this.id });
      let more = true;
      while (more && this.#active) {
        const page = await call('session.history', { sessionId: this.id, since: this.lastOffset, limit: HISTORY_PAGE });
        if (page.complete === false) this.#emitter.emit('gap', { sessionId: this.id, after: this.lastOffset, latest: page.latest });
        for (const event of page.events) this.#accept(event);
        more = page.more === true && page.events.length > 0;
      }
    } catch (error) {
      this.#held = null;
      if (initial || error instanceof ConnectionError || error instanceof TimeoutError) throw error;
      this._lose(error);
      return;
    }
    const held = this.#held ?? [];
    this.#held = null;
    held.sort((a, b) => a.offset - b.offset);
    for (const event of held) this.#accept(event);
  }

  /**
   * The session could not be taken back after a reconnect.
   * @internal
   * @param {unknown} error
   */
  _lose(error) {
    if (!this.#active) return;
    this.#emitter.emit('lost', { sessionId: this.id, error });
    this._end(error);
  }

  /** @internal @param {unknown} [error] */
  _end(error) {
    if (!this.#active) return;
    this.#active = false;
    this.#held = null;
    this.#link.forget(this);
    this.#queue?.end(error);
  }
}
