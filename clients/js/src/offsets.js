// Which numbered pushes (channel messages, session events) are new.
//
// Offsets number a log 1, 2, 3… within one epoch of the gateway's backend.
// When Redis restarts empty the logs start over at 1 under a new epoch, so
// an offset alone no longer tells a new push from one already delivered.
// `Offsets` therefore keeps, besides the newest offset, the (offset,
// timestamp) of the latest deliveries: a push seen before has the same pair
// in any log, a push of a log that started over has not. It also holds
// pushes back while the client finds out where they belong (a replay in
// progress, an epoch being checked) and gives them back in offset order.

/** Deliveries remembered per channel or session: as many as one history page. */
export const REMEMBERED = 1000;

/**
 * `new`: after the newest offset. `seen`: delivered already (same offset
 * and timestamp). `behind`: at or before the newest offset yet never
 * delivered — a very old duplicate, or the first pushes of a log that
 * started over.
 * @typedef {'new' | 'seen' | 'behind'} Verdict
 */

/** @template T */
export class Offsets {
  /** @param {number | undefined} [offset] */
  constructor(offset) {
    /** @type {number | undefined} the newest offset delivered */
    this.offset = offset;
    /** Reasons to hold pushes back (a replay or a check in progress). */
    this.holds = 0;
    /** @type {Set<string>} insertion-ordered (offset, timestamp) keys */
    this.recent = new Set();
    /** @type {Map<string, {offset: number, item: T}>} */
    this.held = new Map();
  }

  /**
   * @param {number} offset
   * @param {unknown} timestamp
   * @returns {Verdict}
   */
  judge(offset, timestamp) {
    if (this.recent.has(key(offset, timestamp))) return 'seen';
    if (this.offset !== undefined && offset <= this.offset) return 'behind';
    return 'new';
  }

  /**
   * Record a delivery.
   * @param {number} offset
   * @param {unknown} timestamp
   */
  take(offset, timestamp) {
    this.offset = offset;
    const k = key(offset, timestamp);
    this.recent.delete(k);
    this.recent.add(k);
    if (this.recent.size > REMEMBERED) this.recent.delete(this.recent.values().next().value);
  }

  /**
   * The log started over: every offset of the new epoch is ahead. What was
   * delivered stays remembered, so that the part of the new log already
   * delivered live is not delivered twice.
   */
  startOver() {
    this.offset = 0;
  }

  /**
   * Keep `item` until `release()`; false when `limit` items are held already.
   * @param {number} offset
   * @param {unknown} timestamp
   * @param {T} item
   * @param {number} limit
   */
  hold(offset, timestamp, item, limit) {
    const k = key(offset, timestamp);
    if (this.held.has(k)) return true;
    if (this.held.size >= limit) return false;
    this.held.set(k, { offset, item });
    return true;
  }

  /** The held items, oldest offset first. @returns {T[]} */
  release() {
    const held = [...this.held.values()];
    this.held.clear();
    held.sort((a, b) => a.offset - b.offset);
    return held.map((h) => h.item);
  }
}

/**
 * @param {number} offset
 * @param {unknown} timestamp
 */
function key(offset, timestamp) {
  return `${offset}:${timestamp}`;
}
