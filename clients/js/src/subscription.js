// Channel subscriptions: what the client keeps per channel (the newest
// offset seen, for `recover` after a reconnect) and the handles given to
// callers (`client.subscribe`).

import { OverflowError } from './errors.js';
import { Offsets } from './offsets.js';
import { BoundedQueue, Emitter } from './queue.js';

/**
 * What a ChannelState needs from its client.
 * @typedef {object} ChannelLink
 * @property {() => boolean} holding whether the client holds every push back (restoring, checking the epoch)
 * @property {(state: ChannelState) => boolean} check a push behind the newest offset arrived: ask for the epoch; true when pushes are held meanwhile
 * @property {(state: ChannelState) => void} learn offsets are tracked: make sure the epoch they belong to is known
 * @property {(params: any) => void} emit hand a push to client-level listeners
 * @property {number} limit most pushes held back
 */

/**
 * Per-channel state shared by every handle on the channel.
 * @internal
 */
export class ChannelState {
  #link;

  /**
   * @param {string} channel
   * @param {ChannelLink} link
   */
  constructor(channel, link) {
    this.channel = channel;
    this.#link = link;
    /** @type {Offsets<any>} newest offset delivered (channels with history) and what was held back */
    this.offsets = new Offsets();
    /** Re-subscribe with `recover` after a reconnect. */
    this.recover = true;
    /** @type {Set<Subscription>} */
    this.handles = new Set();
    /** @type {string | undefined} the epoch the latest `reset` was reported for */
    this.resetFor = undefined;
  }

  /** @type {number | undefined} newest offset delivered (channels with history) */
  get lastOffset() {
    return this.offsets.offset;
  }

  set lastOffset(offset) {
    this.offsets.offset = offset;
  }

  /**
   * A `notify` for this channel (`replay`: read from the log, delivered at
   * once). False when it is not delivered now: a duplicate (an offset
   * already delivered, e.g. replayed by `recover` and also seen live), or
   * held back until the client knows where it belongs.
   * @param {any} params
   * @param {boolean} [replay]
   * @returns {boolean}
   */
  accept(params, replay = false) {
    const offset = params?.offset;
    if (!Number.isInteger(offset)) {
      for (const handle of this.handles) handle._deliver(params);
      return true;
    }
    const offsets = this.offsets;
    const verdict = offsets.judge(offset, params.timestamp);
    if (verdict === 'seen') return false;
    if (replay) {
      if (verdict === 'behind') return false;
    } else {
      // An offset already passed yet never delivered: the log may have
      // started over. The client asks, holding pushes back meanwhile.
      if (verdict === 'behind' && !(offsets.holds > 0 || this.#link.check(this))) return false;
      if (offsets.holds > 0 || this.#link.holding()) {
        if (!offsets.hold(offset, params.timestamp, params, this.#link.limit)) {
          this.fail(new OverflowError(`subscription ${this.channel} (catching up)`, this.#link.limit));
        }
        return false;
      }
    }
    offsets.take(offset, params.timestamp);
    for (const handle of this.handles) handle._deliver(params);
    this.#link.learn(this);
    return true;
  }

  /** Deliver what was held back, once nothing holds it any more. */
  flush() {
    if (this.offsets.holds > 0 || this.#link.holding()) return;
    for (const params of this.offsets.release()) {
      if (this.accept(params, true)) this.#link.emit(params);
    }
  }

  /**
   * The channel's log started over under a new epoch (Redis restarted
   * empty): offsets begin again. Reported once per epoch (`reset`, `gap`).
   * @param {string} epoch
   * @param {string | undefined} previous
   */
  startOver(epoch, previous) {
    this.offsets.startOver();
    if (this.resetFor === epoch) return;
    this.resetFor = epoch;
    const info = { channel: this.channel, epoch, previousEpoch: previous, epochChanged: true, complete: false };
    for (const handle of this.handles) {
      handle._emit('reset', info);
      handle._emit('gap', info);
    }
  }

  /**
   * What a `subscribe {recover}` reply said about this channel; the frames
   * it replayed are still held back.
   * @param {{replayed: number, latest: number, complete: boolean, epoch?: string, epochChanged?: boolean} | undefined} recovered
   * @param {number | undefined} after the offset asked to recover after
   * @param {string | undefined} [previous] the epoch `after` belonged to
   */
  recovered(recovered, after, previous) {
    if (!recovered) return;
    if (recovered.epochChanged && typeof recovered.epoch === 'string') {
      this.startOver(recovered.epoch, previous);
    } else if (after !== undefined && recovered.latest < after) {
      // The log restarted and no epoch said so: offsets begin again.
      this.lastOffset = recovered.latest;
    }
    const info = { channel: this.channel, after, ...recovered };
    for (const handle of this.handles) {
      handle._emit('recovered', info);
      if (!recovered.complete && !recovered.epochChanged) handle._emit('gap', info);
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
   * latest, complete, epoch, epochChanged?} after a re-subscription with
   * recover), `reset` ({channel, epoch, previousEpoch, epochChanged: true,
   * complete: false}: the backend lost its state and the channel's log
   * started over; it is read again from its new start), `gap` (publications
   * were missed for good: an incomplete recover, or a reset), `error` (the
   * channel could not be subscribed again; the subscription ends).
   * @param {'message' | 'recovered' | 'reset' | 'gap' | 'error'} event
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
