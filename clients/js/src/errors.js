// Error types. Every error the client raises is a SwitchyardError; what the
// gateway (or an agent) answered is an RpcError with the JSON-RPC code.

/** JSON-RPC error codes used by the gateway (docs/protocol.md, "Errors"). */
export const ErrorCode = Object.freeze({
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INTERNAL_ERROR: -32603,
  UNAUTHORIZED: -32000,
  NOT_FOUND: -32001,
  LIMIT_EXCEEDED: -32002,
  FORBIDDEN: -32003,
  RATE_LIMITED: -32004,
  UNAVAILABLE: -32005,
  TIMEOUT: -32006,
  CONFLICT: -32007,
});

/** Base class of every error this package throws. */
export class SwitchyardError extends Error {
  /**
   * @param {string} message
   * @param {{cause?: unknown}} [options]
   */
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * An error answer: `{code, message, data}` as the gateway or an agent sent
 * it. Agents throw it from handlers to answer with a specific code.
 */
export class RpcError extends SwitchyardError {
  /**
   * @param {number} code
   * @param {string} message
   * @param {unknown} [data]
   */
  constructor(code, message, data) {
    super(message);
    /** @type {number} */
    this.code = code;
    /** @type {unknown} */
    this.data = data;
  }

  /**
   * An RpcError from the `error` member of a response.
   * @param {any} error
   * @returns {RpcError}
   */
  static from(error) {
    if (error && typeof error === 'object' && Number.isInteger(error.code)) {
      return new RpcError(error.code, String(error.message ?? ''), error.data);
    }
    return new RpcError(ErrorCode.INTERNAL_ERROR, 'malformed error', error);
  }

  /** The JSON-RPC `error` member for this error. */
  toJSON() {
    /** @type {{code: number, message: string, data?: unknown}} */
    const out = { code: this.code, message: this.message };
    if (this.data !== undefined) out.data = this.data;
    return out;
  }
}

/** No reply within the call's timeout (measured by the client). */
export class TimeoutError extends SwitchyardError {
  /**
   * @param {string} method
   * @param {number} timeoutMs
   */
  constructor(method, timeoutMs) {
    super(`no reply to ${method} within ${timeoutMs} ms`);
    this.method = method;
    this.timeoutMs = timeoutMs;
  }
}

/**
 * The connection was lost before the call was answered, or could not be
 * established. Whether the gateway ran the call is unknown.
 */
export class ConnectionError extends SwitchyardError {
  /**
   * @param {string} message
   * @param {{code?: number, reason?: string, cause?: unknown}} [details]
   */
  constructor(message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    /** WebSocket close code, when the socket closed. */
    this.code = details.code;
    /** WebSocket close reason, when the socket closed. */
    this.reason = details.reason;
  }
}

/** The client was closed (`close()`, or reconnecting gave up). */
export class ClientClosedError extends SwitchyardError {
  constructor(message = 'client closed') {
    super(message);
  }
}

/** A bounded buffer (an async iterator's, or queued calls) overflowed. */
export class OverflowError extends SwitchyardError {
  /**
   * @param {string} what
   * @param {number} limit
   */
  constructor(what, limit) {
    super(`${what}: more than ${limit} items waiting`);
    this.limit = limit;
  }
}

/** A frame larger than the gateway's `maxPayload` (it would close the socket). */
export class PayloadTooLargeError extends SwitchyardError {
  /**
   * @param {number} size
   * @param {number} limit
   */
  constructor(size, limit) {
    super(`frame of ${size} bytes exceeds the gateway's limit of ${limit}`);
    this.size = size;
    this.limit = limit;
  }
}
