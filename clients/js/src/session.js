// Shared sessions: a handle per session the client created, joined or
// resumed. The client keeps the newest offset seen so that, after a
// reconnect, an owned session is resumed (`connect {resume}` or
// `session.resume`) and a joined one re-joined and filled from
// `session.history`, with no gap and no duplicate. When the backend lost
// its state (Redis restarted empty), the log starts over under a new epoch:
// the session is read again from the new start and emits `reset`.

import { BoundedQueue, Emitter } from './queue.js';
import { ConnectionError, OverflowError, TimeoutError } from './errors.js';
import { Offsets } from './offsets.js';

/** Most events asked per `session.history` page. */
const HISTORY_PAGE = 1000;

/**
 * @typedef {object} SessionLink what a Session needs from its client
 * @property {(method: string, params?: unknown, options?: {timeout?: number}) => Promise<any>} call
 * @property {(method: string, params: any) => void} emit a notification to client-level listeners
 * @property {(session: Session) => void} forget stop tracking the session
 * @property {() => string | undefined} epoch the backend's epoch the client's offsets belong to
 * @property {(epoch: unknown, session: Session) => void} observe a reply named the backend's epoch
 * @property {() => boolean} holding whether the client holds every push back
 * @property {(session: Session) => boolean} check a push behind the newest offset arrived: ask for the epoch; true when pushes are held meanwhile
 * @property {(session: Session) => void} learn offsets are tracked: make sure the epoch they belong to is known
 * @property {number} limit most pushes held back
 */

/**
 * One shared session. Events (`session.event` and `agent.event` params,
 * with `method` naming which) arrive in offset order, each once: iterate
 * the session (`for await (const e of session)`) or pass `onEvent`.
 * Emits `event`, `updated`, `closed`, `resumed`, `reset`, `gap` and `lost`.
 */
export class Session {
  #link;
  #emitter = new Emitter();
  /** @type {BoundedQueue<any> | undefined} */
  #queue;
  /** @type {Offsets<any>} the newest offset delivered, and live events held back */
  #offsets;
  #active = true;
  /** @type {string | undefined} the epoch the latest `reset` was reported for */
  #resetFor = undefined;

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
    this.#offsets = new Offsets(init.lastOffset ?? 0);
    /** @type {any} the latest session record the gateway answered */
    this.record = undefined;
    if (options.onEvent) this.#emitter.on('event', options.onEvent);
    else this.#queue = new BoundedQueue(options.bufferSize ?? 1024, `session ${init.sessionId}`);
  }

  /** The newest offset delivered (0: none), in the backend's current epoch. */
  get lastOffset() {
    return this.#offsets.offset ?? 0;
  }

  /** Whether events still arrive (false once closed, left or lost). */
  get active() {
    return this.#active;
  }

  /**
   * `reset` ({sessionId, epoch, previousEpoch, epochChanged: true,
   * complete: false}): the backend lost its state and the session's log
   * started over; it is read again from its new start. `gap`: events were
   * missed for good (trimmed from the log, or a reset).
   * @param {'event' | 'updated' | 'closed' | 'resumed' | 'reset' | 'gap' | 'lost'} event
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
   * The session's logged events after `since` (`session.history`);
   * `epoch`: the epoch `since` belongs to (when the log started over since,
   * it is read from its new start, `epochChanged: true`).
   * @param {{since?: number, limit?: number, epoch?: string}} [options]
   */
  async history(options = {}) {
    const page = await this.#link.call('session.history', { sessionId: this.id, ...options });
    this.#link.observe(page?.epoch, this);
    return page;
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

  /**
   * The parameters that take this session back (`session.resume`), with
   * the epoch the offset belongs to once the client knows it.
   */
  resumeParams() {
    /** @type {{sessionId: string, resumeToken: string | undefined, offset: number, epoch?: string}} */
    const params = { sessionId: this.id, resumeToken: this.resumeToken, offset: this.lastOffset };
    const epoch = this.#link.epoch();
    if (epoch !== undefined) params.epoch = epoch;
    return params;
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

  /**
   * Deliver an event unless delivered already (`replay`: read from the log,
   * delivered at once; else a push, held back while something holds it).
   * @param {any} event a session.event / agent.event with its method
   * @param {boolean} [replay]
   */
  #accept(event, replay = false) {
    if (!this.#active) return;
    if (Number.isInteger(event.offset)) {
      const offsets = this.#offsets;
      const verdict = offsets.judge(event.offset, event.timestamp);
      if (verdict === 'seen') return;
      if (replay) {
        if (verdict === 'behind') return;
      } else {
        // An offset already passed yet never delivered: the log may have
        // started over. The client asks, holding pushes back meanwhile.
        if (verdict === 'behind' && !(offsets.holds > 0 || this.#link.check(this))) return;
        if (offsets.holds > 0 || this.#link.holding()) {
          if (!offsets.hold(event.offset, event.timestamp, event, this.#link.limit)) {
            this._end(new OverflowError(`session ${this.id} (catching up)`, this.#link.limit));
          }
          return;
        }
      }
      offsets.take(event.offset, event.timestamp);
    }
    this.#queue?.push(event);
    this.#emitter.emit('event', event);
    const { method, ...params } = event;
    this.#link.emit(method, params);
    if (Number.isInteger(event.offset)) this.#link.learn(this);
  }

  /** @internal Hold live events back (a replay in progress). */
  _hold() {
    this.#offsets.holds++;
  }

  /** @internal Stop holding; deliver what was held once nothing holds it. */
  _release() {
    this.#offsets.holds = Math.max(this.#offsets.holds - 1, 0);
    this._flush();
  }

  /** @internal Deliver what was held back, once nothing holds it any more. */
  _flush() {
    if (this.#offsets.holds > 0 || this.#link.holding()) return;
    for (const event of this.#offsets.release()) this.#accept(event, true);
  }

  /**
   * The session's log started over under a new epoch: offsets begin again.
   * Reported once per epoch (`reset`, `gap`).
   * @internal
   * @param {string} epoch
   * @param {string | undefined} previous
   */
  _startOver(epoch, previous) {
    this.#offsets.startOver();
    if (this.#resetFor === epoch) return;
    this.#resetFor = epoch;
    const info = { sessionId: this.id, epoch, previousEpoch: previous, epochChanged: true, complete: false };
    this.#emitter.emit('reset', info);
    this.#emitter.emit('gap', info);
  }

  /**
   * What `session.resume` (or `connect {resume}`) answered; the events it
   * replayed are still held back.
   * @internal
   * @param {any} reply
   * @param {string | undefined} [previous] the epoch the offset asked for belonged to
   */
  _resumed(reply, previous = this.#link.epoch()) {
    if (!reply || reply.resumed !== true) {
      this._lose(reply?.error ?? reply);
      return;
    }
    this.#link.observe(reply.epoch, this);
    if (reply.epochChanged && typeof reply.epoch === 'string') this._startOver(reply.epoch, previous);
    this.record = reply.session;
    this.#emitter.emit('resumed', reply);
    if (reply.complete === false && !reply.epochChanged) this.#emitter.emit('gap', reply);
  }

  /**
   * Become a member again after a reconnect (or join for the first time
   * from `since`): join, then read what was logged after the newest offset
   * seen, holding live events back until the log has been read.
   * @internal
   * @param {(method: string, params: unknown) => Promise<any>} call
   * @param {boolean} [initial] a first join: every failure is thrown
   * @param {string} [epoch] the epoch the newest offset belongs to
   */
  async _join(call, initial = false, epoch = this.#link.epoch()) {
    this._hold();
    try {
      this.record = await call('session.join', { sessionId: this.id });
      await this._readLog(call, epoch);
    } catch (error) {
      if (initial || error instanceof ConnectionError || error instanceof TimeoutError) throw error;
      this._lose(error);
      return;
    } finally {
      this._release();
    }
  }

  /**
   * Deliver what the log holds after the newest offset delivered.
   * @internal
   * @param {(method: string, params: unknown) => Promise<any>} call
   * @param {string | undefined} epoch the epoch the newest offset belongs to
   */
  async _readLog(call, epoch) {
    let since = this.lastOffset;
    while (this.#active) {
      /** @type {any} */
      const params = { sessionId: this.id, since, limit: HISTORY_PAGE };
      if (epoch !== undefined) params.epoch = epoch;
      const page = await call('session.history', params);
      this.#link.observe(page?.epoch, this);
      if (page.epochChanged && typeof page.epoch === 'string') this._startOver(page.epoch, epoch);
      else if (page.complete === false) this.#emitter.emit('gap', { sessionId: this.id, after: since, latest: page.latest });
      if (typeof page.epoch === 'string') epoch = page.epoch;
      const events = page.events ?? [];
      for (const event of events) this.#accept(event, true);
      // Entries skipped as delivered already move the read on too.
      const last = events.length > 0 ? events[events.length - 1].offset : undefined;
      if (page.more !== true || !Number.isInteger(last) || last <= since) break;
      since = last;
    }
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
    this.#offsets.release();
    this.#link.forget(this);
    this.#queue?.end(error);
  }
}
