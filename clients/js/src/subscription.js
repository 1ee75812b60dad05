// Channel subscriptions: what the client keeps per channel (the newest
// offset seen, for `recover` after a reconnect) and the handles given to
// callers (`client.subscribe`).

import { BoundedQueue, Emitter } from './queue.js';

/**
 * Per-channel state shared by every handle on the channel.
 * @internal
 */
export class ChannelState {
  /**
   * @param {string} channel
   */
  constructor(channel) {
    this.channel = channel;
    /** @type {number | undefined} newest offset delivered (channels with history) */
    this.lastOffset = undefined;
    /** Re-subscribe with `recover` after a reconnect. */
    this.recover = true;
    /** @type {Set<Subscription>} */
    this.handles = new Set();
  }

  /**
   * A `notify` for this channel: false when it is a duplicate (an offset
   * already delivered, e.g. replayed by `recover` and also seen live).
   * @param {any} params
   * @returns {boolean}
   */
  accept(params) {
    const offset = params?.offset;
    if (Number.isInteger(offset)) {
      if (this.lastOffset !== undefined && offset <= this.lastOffset) return false;
      this.lastOffset = offset;
    }
    for (const handle of this.handles) handle._deliver(params);
    return true;
  }

  /**
   * What a `subscribe {recover}` reply said about this channel.
   * @param {{replayed: number, latest: number, complete: boolean} | undefined} recovered
   * @param {number | undefined} after the offset asked to recover after
   */
  recovered(recovered, after) {
    if (!recovered) return;
    if (after !== undefined && recovered.latest < after) {
      // The log restarted (its store was emptied): offsets begin again.
      this.lastOffset = recovered.latest;
    } else if (this.lastOffset === undefined || recovered.latest > this.lastOffset) {
      // Replayed frames came before the reply (and live ones, newer than
      // `latest`, may have too): the newest offset is at least `latest`.
      this.lastOffset = recovered.latest;
    }
    const info = { channel: this.channel, after, ...recovered };
    for (const handle of this.handles) {
      handle._emit('recovered', info);
      if (!recovered.complete) handle._emit('gap', info);
    }
  }

  /**
   * The channel cannot be subscribed again (e.g. no longer allowed).
   * @param {unknown} error
   */
  fail(error) {
    for (const handle of [...this.handles]) handle._end(error);
    this.handles.clear();
  }
}

/**
 * A subscription to one channel: an async iterator of its `notify`
 * messages, and an emitter (`message`, `recovered`, `gap`, `error`).
 */
export class Subscription {
  #state;
  /** @type {BoundedQueue<any> | undefined} */
  #queue;
  #emitter = new Emitter();
  #unsubscribe;
  #active = true;

  /**
   * @internal
   * @param {ChannelState} state
   * @param {{onMessage?: (message: any) => void, bufferSize?: number}} options
   * @param {(sub: Subscription) => Promise<void>} unsubscribe
   */
  constructor(state, options, unsubscribe) {
    this.#state = state;
    this.#unsubscribe = unsubscribe;
    if (options.onMessage) this.#emitter.on('message', options.onMessage);
    else this.#queue = new BoundedQueue(options.bufferSize ?? 1024, `subscription ${state.channel}`);
  }

  /** The channel's name. */
  get channel() {
    return this.#state.channel;
  }

  /** The newest offset delivered on a channel with history (else undefined). */
  get lastOffset() {
    return this.#state.lastOffset;
  }

  /** Whether messages still arrive on this handle. */
  get active() {
    return this.#active;
  }

  /**
   * `message` (the notify params), `recovered` ({channel, after, replayed,
   * latest, complete} after a re-subscription with recover), `gap` (the
   * same, when publications were missed for good), `error` (the channel
   * could not be subscribed again; the subscription ends).
   * @param {'message' | 'recovered' | 'gap' | 'error'} event
   * @param {(value: any) => void} listener
   * @returns {() => void}
   */
  on(event, listener) {
    return this.#emitter.on(event, listener);
  }

  /** Stop receiving; the channel is left when no other handle uses it. */
  async unsubscribe() {
    if (!this.#active) return;
    this._end();
    await this.#unsubscribe(this);
  }

  /** @returns {AsyncIterator<any>} */
  [Symbol.asyncIterator]() {
    if (!this.#queue) throw new TypeError('this subscription delivers to its onMessage callback');
    return this.#queue;
  }

  /** @internal @param {any} params */
  _deliver(params) {
    if (!this.#active) return;
    this.#queue?.push(params);
    this.#emitter.emit('message', params);
  }

  /** @internal @param {string} event @param {unknown} value */
  _emit(event, value) {
    this.#emitter.emit(event, value);
  }

  /** @internal @param {unknown} [error] */
  _end(error) {
    if (!this.#active) return;
    this.#active = false;
    this.#state.handles.delete(this);
    if (error !== undefined) this.#emitter.emit('error', error);
    this.#queue?.end(error);
  }
}
