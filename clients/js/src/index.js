// @switchyard/client: a typed, dependency-free client for the Switchyard
// gateway, for browsers and Node >= 20. See README.md.

export { connect, Client } from './client.js';
export { Subscription } from './subscription.js';
export { Session } from './session.js';
export { IncomingRequest } from './request.js';
export {
  ErrorCode,
  SwitchyardError,
  RpcError,
  TimeoutError,
  ConnectionError,
  ClientClosedError,
  OverflowError,
  PayloadTooLargeError,
} from './errors.js';
export { BoundedQueue } from './queue.js';
