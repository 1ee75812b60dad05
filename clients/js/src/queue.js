// A bounded queue read as an async iterator, and a tiny event emitter.
// Both are plain JavaScript with no platform dependencies.

import { OverflowError } from './errors.js';

/**
 * A bounded FIFO consumed with `for await`. When more than `limit` items
 * wait unread, the items are dropped and the iteration fails with an
 * OverflowError: a consumer never silently misses messages.
 *
 * @template T
 * @implements {AsyncIterableIterator<T>}
 */
export class BoundedQueue {
  /** @type {T[]} */
  #items = [];
  /** @type {{resolve: (r: IteratorResult<T>) => void, reject: (e: unknown) => void}[]} */
  #waiters = [];
  #done = false;
  /** @type {unknown} */
  #error = undefined;
  #limit;
  #what;
  /** @type {(() => void) | undefined} */
  #onClose;

  /**
   * @param {number} limit items kept unread before the queue fails
   * @param {string} what named in the OverflowError
   * @param {() => void} [onClose] called once when the consumer stops
   */
  constructor(limit, what, onClose) {
    if (!Number.isInteger(limit) || limit < 1) throw new TypeError('queue limit must be a positive integer');
    this.#limit = limit;
    this.#what = what;
    this.#onClose = onClose;
  }

  /** Items waiting to be read. */
  get size() {
    return this.#items.length;
  }

  /** Whether the queue takes no more items. */
  get closed() {
    return this.#done;
  }

  /** @param {T} item */
  push(item) {
    if (this.#done) return;
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter.resolve({ value: item, done: false });
      return;
    }
    if (this.#items.length >= this.#limit) {
      this.#items = [];
      this.end(new OverflowError(this.#what, this.#limit));
      return;
    }
    this.#items.push(item);
  }

  /**
   * Stop the queue: readers get what is buffered, then the end (or `error`).
   * @param {unknown} [error]
   */
  end(error) {
    if (this.#done) return;
    this.#done = true;
    this.#error = error;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) {
      if (error !== undefined) w.reject(error);
      else w.resolve({ value: undefined, done: true });
    }
    this.#close();
  }

  #close() {
    const onClose = this.#onClose;
    this.#onClose = undefined;
    onClose?.();
  }

  /** @returns {Promise<IteratorResult<T>>} */
  next() {
    if (this.#items.length > 0) {
      return Promise.resolve({ value: /** @type {T} */ (this.#items.shift()), done: false });
    }
    if (this.#done) {
      if (this.#error !== undefined) {
        const error = this.#error;
        this.#error = undefined;
        return Promise.reject(error);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  /** @returns {Promise<IteratorResult<T>>} */
  return() {
    this.#items = [];
    this.#error = undefined;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}

/**
 * Minimal event emitter: `on` returns a function that removes the listener.
 * A listener that throws does not stop the others; its error goes to
 * `onListenerError`.
 */
export class Emitter {
  /** @type {Map<string, Set<(value: any) => void>>} */
  #listeners = new Map();

  /**
   * @param {string} event
   * @param {(value: any) => void} listener
   * @returns {() => void}
   */
  on(event, listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /**
   * @param {string} event
   * @param {(value: any) => void} listener
   * @returns {() => void}
   */
  once(event, listener) {
    const off = this.on(event, (value) => {
      off();
      listener(value);
    });
    return off;
  }

  /**
   * @param {string} event
   * @param {(value: any) => void} listener
   */
  off(event, listener) {
    const set = this.#listeners.get(event);
    if (!set) return;
    set.delete(listener);
    if (set.size === 0) this.#listeners.delete(event);
  }

  /**
   * @param {string} event
   * @returns {boolean} whether anyone listened
   */
  listens(event) {
    return this.#listeners.has(event);
  }

  /**
   * @param {string} event
   * @param {unknown} value
   * @returns {boolean} whether anyone listened
   */
  emit(event, value) {
    const set = this.#listeners.get(event);
    if (!set) return false;
    for (const listener of [...set]) {
      try {
        listener(value);
      } catch (error) {
        this.onListenerError(error, event);
      }
    }
    return true;
  }

  /**
   * Where a throwing listener's error goes (by default: reported
   * asynchronously so that it is not lost, without breaking delivery).
   * @param {unknown} error
   * @param {string} _event
   */
  onListenerError(error, _event) {
    queueMicrotask(() => {
      throw error;
    });
  }
}
