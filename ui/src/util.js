// What the views share: error wording, scopes, the instance's metrics.

import { ClientClosedError, ConnectionError, ErrorCode, RpcError, TimeoutError } from '../../clients/js/src/index.js';

/** Scopes an operator identity may hold; `operator.admin` implies the others. */
export const ADMIN = 'operator.admin';
export const READ = 'operator.read';
export const WRITE = 'operator.write';
export const APPROVALS = 'operator.approvals';
export const PAIRING = 'operator.pairing';

const NAMES = /** @type {Record<number, string>} */ ({
  [ErrorCode.PARSE_ERROR]: 'parse error',
  [ErrorCode.INVALID_REQUEST]: 'invalid request',
  [ErrorCode.METHOD_NOT_FOUND]: 'method not found',
  [ErrorCode.INVALID_PARAMS]: 'invalid params',
  [ErrorCode.INTERNAL_ERROR]: 'internal error',
  [ErrorCode.UNAUTHORIZED]: 'unauthorized',
  [ErrorCode.NOT_FOUND]: 'not found',
  [ErrorCode.LIMIT_EXCEEDED]: 'limit exceeded',
  [ErrorCode.FORBIDDEN]: 'forbidden',
  [ErrorCode.RATE_LIMITED]: 'rate limited',
  [ErrorCode.UNAVAILABLE]: 'unavailable',
  [ErrorCode.TIMEOUT]: 'timeout',
  [ErrorCode.CONFLICT]: 'conflict',
});

/**
 * One line saying what went wrong, for people.
 * @param {unknown} error
 */
export function describe(error) {
  if (error instanceof RpcError) {
    const data = /** @type {any} */ (error.data);
    const name = NAMES[error.code] ?? 'error';
    const parts = [`${error.message || name} (${error.code})`];
    if (data && typeof data === 'object') {
      if (typeof data.field === 'string' && data.field) parts.push(`field ${data.field}`);
      if (typeof data.reason === 'string') parts.push(data.reason);
      if (Number.isInteger(data.retryAfterMs)) parts.push(`retry in ${Math.ceil(data.retryAfterMs / 1000)} s`);
      if (Number.isInteger(data.currentVersion)) parts.push(`current version ${data.currentVersion}`);
      if (typeof data.correlationId === 'string') parts.push(`correlation id ${data.correlationId}`);
    }
    return parts.join(': ');
  }
  if (error instanceof TimeoutError) return `No answer in time (${error.message})`;
  if (error instanceof ConnectionError) return `Connection lost: ${error.message}`;
  if (error instanceof ClientClosedError) return 'Disconnected';
  if (error instanceof Error) return error.message;
  return String(error);
}

/**
 * Whether `error` is the gateway refusing for lack of a scope.
 * @param {unknown} error
 */
export const isForbidden = (error) => error instanceof RpcError && error.code === ErrorCode.FORBIDDEN;

/**
 * Parse the Prometheus text of `/metrics`: unlabelled series only.
 * @param {string} text
 * @returns {Map<string, number>}
 */
export function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\s+(\S+)/.exec(line);
    if (match) out.set(match[1], Number(match[2]));
  }
  return out;
}

/**
 * The instance's own metrics (`/metrics` on the port that served the
 * page), or null when they are served elsewhere (`metrics_port`).
 * @returns {Promise<Map<string, number> | null>}
 */
export async function localMetrics() {
  try {
    const res = await fetch('/metrics', { signal: AbortSignal.timeout(4000), cache: 'no-store' });
    if (!res.ok) return null;
    return parseMetrics(await res.text());
  } catch {
    return null;
  }
}

/**
 * Parse JSON typed by a person; a clear error names where it failed.
 * @param {string} text
 * @param {string} what
 */
export function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${what} is not valid JSON: ${/** @type {Error} */ (error).message}`);
  }
}

/**
 * A string with `needle` in it, case-insensitively (an empty needle matches).
 * @param {unknown} hay
 * @param {string} needle
 */
export function matches(hay, needle) {
  if (!needle) return true;
  return String(hay ?? '').toLowerCase().includes(needle.toLowerCase());
}
