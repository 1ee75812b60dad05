// Type declarations of @switchyard/client (the package is plain ES modules
// in src/; nothing is compiled).

/** JSON-RPC error codes used by the gateway. */
export declare const ErrorCode: Readonly<{
  PARSE_ERROR: -32700;
  INVALID_REQUEST: -32600;
  METHOD_NOT_FOUND: -32601;
  INVALID_PARAMS: -32602;
  INTERNAL_ERROR: -32603;
  UNAUTHORIZED: -32000;
  NOT_FOUND: -32001;
  LIMIT_EXCEEDED: -32002;
  FORBIDDEN: -32003;
  RATE_LIMITED: -32004;
  UNAVAILABLE: -32005;
  TIMEOUT: -32006;
  CONFLICT: -32007;
}>;

/** Base class of every error this package throws. */
export declare class SwitchyardError extends Error {}

/** An error answer from the gateway or an agent; agents throw it to answer with a code. */
export declare class RpcError extends SwitchyardError {
  constructor(code: number, message: string, data?: unknown);
  readonly code: number;
  readonly data: unknown;
  static from(error: unknown): RpcError;
  toJSON(): { code: number; message: string; data?: unknown };
}

/** No reply within the call's timeout (measured by the client). */
export declare class TimeoutError extends SwitchyardError {
  readonly method: string;
  readonly timeoutMs: number;
}

/** The connection was lost before the answer, or could not be established. */
export declare class ConnectionError extends SwitchyardError {
  /** WebSocket close code, when the socket closed. */
  readonly code?: number;
  readonly reason?: string;
}

/** The client was closed (`close()`, or reconnecting gave up). */
export declare class ClientClosedError extends SwitchyardError {}

/** A bounded buffer overflowed (an iterator's unread items, or calls waiting for the connection). */
export declare class OverflowError extends SwitchyardError {
  readonly limit: number;
}

/** A frame larger than the gateway's `maxPayload`. */
export declare class PayloadTooLargeError extends SwitchyardError {
  readonly size: number;
  readonly limit: number;
}

/** A credential, or a function returning one (e.g. fetching a fresh JWT before each connection). */
export type Secret = string | (() => string | Promise<string>);

export interface ReconnectOptions {
  /** First delay (default 250 ms). */
  initialDelayMs?: number;
  /** Largest delay (default 10 000 ms). */
  maxDelayMs?: number;
  /** Growth per attempt (default 2). */
  factor?: number;
  /** Up to this fraction is taken off each delay at random (default 0.2). */
  jitter?: number;
  /** Attempts before the client closes for good (default: unlimited). */
  maxAttempts?: number;
}

export interface ClientInfo {
  name?: string | null;
  version?: string | null;
  platform?: string | null;
  deviceId?: string | null;
}

export interface ClientOptions {
  /** A JWT or a static token. At most one of token, apiKey, password, deviceToken. */
  token?: Secret;
  apiKey?: Secret;
  password?: Secret;
  deviceToken?: Secret;
  /** `operator` or `node` (agents); the identity must hold it. */
  role?: 'operator' | 'node';
  /** Who the client is; shown in presence entries. */
  client?: ClientInfo;
  /** A node's capabilities: registered as an agent under its connection id. */
  caps?: string[];
  /** Default timeout of a call (default 30 000 ms). */
  timeoutMs?: number;
  /** Longest wait for `welcome` and the `connect` reply (default 10 000 ms). */
  connectTimeoutMs?: number;
  /** A `ping` this often checks the connection; 0 turns it off (default 20 000 ms). */
  pingIntervalMs?: number;
  /** No answer to that `ping` within this drops the connection (default 10 000 ms). */
  pingTimeoutMs?: number;
  /** Calls waiting for the connection while reconnecting (default 1024). */
  maxQueuedCalls?: number;
  /** Unread items an iterator keeps before failing with OverflowError (default 1024). */
  bufferSize?: number;
  /** Reconnect policy, or false to close for good when the connection drops. */
  reconnect?: ReconnectOptions | false;
  /** A WebSocket constructor (default: globalThis.WebSocket). */
  WebSocket?: unknown;
}

export interface CallOptions {
  timeout?: number;
  signal?: AbortSignal;
}

export interface Welcome {
  authRequired: boolean;
  authenticated: boolean;
  challenge: string;
  connId: string;
  nodeId: string;
  protocol: number;
}

export interface Hello {
  authenticated: boolean;
  connId: string;
  nodeId: string;
  protocol: number;
  role: 'operator' | 'node' | null;
  scopes: string[] | null;
  features: string[];
  limits: {
    heartbeatMs: number;
    maxBatch: number;
    maxPayload: number;
    maxSessions: number;
    maxSubscriptions: number;
  };
  presence: { connections: number | null; instances: number | null };
  server: { uptimeMs: number; version: string };
  resume?: ResumeReply | { sessionId: string; resumed: false; error: { code: number; message: string; data?: unknown } };
}

export interface OpenEvent {
  url: string;
  connId: string;
  nodeId: string;
  /** false for the first connection, true after a reconnect */
  reconnected: boolean;
  hello: Hello;
}

export interface CloseEvent {
  code: number;
  reason: string;
  /** false when the client is closed for good */
  willReconnect: boolean;
  error?: unknown;
}

export interface ReconnectingEvent {
  attempt: number;
  delayMs: number;
  url: string;
  /** why the previous connection or attempt failed */
  error: unknown;
}

export interface ErrorEvent {
  error: unknown;
  /** what failed: `subscribe`, `agent.register` (while restoring), `agent.reattach` (a run could not be taken back after a reconnect: its handler is aborted), `agent.finish` (ending a run taken back), `ping`, `epoch` (reading a log again after the backend's epoch changed), or a listener's event */
  context: string;
}

/** The params of a `notify` push. */
export interface ChannelMessage<T = unknown> {
  channel: string;
  event: string;
  data: T;
  timestamp: number;
  /** on a channel with history: 1, 2, 3… */
  offset?: number;
}

export interface Recovered {
  channel: string;
  after: number | undefined;
  replayed: number;
  latest: number;
  complete: boolean;
  /** the backend's epoch the offsets belong to */
  epoch: string;
  /** the offset recovered from belonged to an earlier epoch: the log started over and was replayed from its new start */
  epochChanged?: boolean;
}

/**
 * The backend lost its state (Redis restarted empty): the log started over
 * under a new epoch, offsets begin again, and it is read again from its new
 * start (entries already delivered are not delivered twice).
 */
export interface Reset {
  /** on a subscription */
  channel?: string;
  /** on a session */
  sessionId?: string;
  epoch: string;
  previousEpoch: string | undefined;
  epochChanged: true;
  complete: false;
}

/**
 * The `epoch.changed` push: the shared state may have lost writes (Redis
 * came back empty, a failover, a restart from disk). Offsets held from before
 * belong to the old epoch; the client checks and reads its logs again, and
 * each subscription and session whose log started over emits `reset`.
 */
export interface EpochChanged {
  /** the new epoch */
  epoch: string;
}

export interface SubscribeOptions {
  /**
   * Channels with history. Default: after a reconnect, replay what was
   * published after the newest offset received. `true`: the channel keeps
   * history, recover even before a first message. A number: also replay now
   * what was logged after that offset. `false`: no replay.
   */
  recover?: boolean | number;
  /** The epoch a numeric `recover` belongs to: if the log started over since, the replay starts from its new start. */
  epoch?: string;
  /** Deliver here instead of buffering for the iterator. */
  onMessage?: (message: ChannelMessage) => void;
  bufferSize?: number;
}

export declare class Subscription implements AsyncIterable<ChannelMessage> {
  readonly channel: string;
  readonly lastOffset: number | undefined;
  readonly active: boolean;
  on(event: 'message', listener: (message: ChannelMessage) => void): () => void;
  on(event: 'recovered', listener: (info: Recovered) => void): () => void;
  on(event: 'reset', listener: (info: Reset) => void): () => void;
  on(event: 'gap', listener: (info: Recovered | Reset) => void): () => void;
  on(event: 'error', listener: (error: unknown) => void): () => void;
  unsubscribe(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<ChannelMessage>;
}

export interface SessionRecord {
  sessionId: string;
  owner: string | null;
  ownerIdentity: string;
  members: string[];
  memberIdentities: string[];
  invited: string[];
  meta: unknown;
  open: boolean;
  maxMembers: number;
  version: number;
  createdAt: number;
  updatedAt: number;
  detachedAt: number | null;
}

/** A `session.event` or an `agent.event` of the session, with `method` naming which. */
export type SessionEvent =
  | {
      method: 'session.event';
      sessionId: string;
      offset: number;
      event: string;
      data: unknown;
      from: { connId: string; identity: string };
      timestamp: number;
    }
  | {
      method: 'agent.event';
      sessionId: string;
      offset: number;
      runId: string;
      agentId: string | null;
      type: string;
      data: unknown;
      timestamp: number;
    };

export interface ResumeReply {
  sessionId: string;
  resumed: true;
  replayed: number;
  latest: number;
  complete: boolean;
  /** the backend's epoch the offsets belong to */
  epoch: string;
  /** the offset resumed from belonged to an earlier epoch: replayed from the new log's start */
  epochChanged?: boolean;
  session: SessionRecord;
}

export interface SessionOptions {
  /** Deliver here instead of buffering for the iterator. */
  onEvent?: (event: SessionEvent) => void;
  bufferSize?: number;
}

export declare class Session implements AsyncIterable<SessionEvent> {
  readonly id: string;
  /** Whether this client owns it (and resumes it after a reconnect). */
  readonly owner: boolean;
  /** Owners only: the secret that takes the session back. */
  readonly resumeToken: string | undefined;
  /** The newest offset delivered (0: none). */
  readonly lastOffset: number;
  /** The latest session record the gateway answered. */
  record: SessionRecord | undefined;
  readonly active: boolean;
  on(event: 'event', listener: (event: SessionEvent) => void): () => void;
  on(event: 'updated', listener: (params: { sessionId: string; meta: unknown; version: number; invited?: string[] }) => void): () => void;
  on(event: 'closed', listener: (params: { sessionId: string; reason: string }) => void): () => void;
  on(event: 'resumed', listener: (reply: ResumeReply) => void): () => void;
  on(event: 'reset', listener: (info: Reset) => void): () => void;
  on(event: 'gap', listener: (info: unknown) => void): () => void;
  on(event: 'lost', listener: (info: { sessionId: string; error: unknown }) => void): () => void;
  send(event: string, data?: unknown): Promise<{ delivered: number; offset: number }>;
  history(options?: { since?: number; limit?: number; epoch?: string }): Promise<{
    sessionId: string;
    events: SessionEvent[];
    latest: number;
    complete: boolean;
    more: boolean;
    epoch: string;
    epochChanged?: boolean;
  }>;
  get(): Promise<SessionRecord>;
  patch(meta: object, options?: { baseVersion?: number }): Promise<SessionRecord>;
  leave(): Promise<{ sessionId: string; left: boolean }>;
  close(): Promise<{ sessionId: string; closed: true }>;
  resumeParams(): { sessionId: string; resumeToken: string | undefined; offset: number; epoch?: string };
  [Symbol.asyncIterator](): AsyncIterator<SessionEvent>;
}

export interface Caller {
  connId: string | null;
  identity: string | null;
  role?: string | null;
  scopes?: string[] | null;
  via?: 'http';
}

/** A server → client request being handled by an agent. */
export declare class IncomingRequest {
  /** `srv-N` */
  readonly id: string;
  /** `invoke`, `agent.run`, `chat.send`, `chat.completions`, … */
  readonly method: string;
  readonly params: any;
  readonly caller: Caller | undefined;
  /** `invoke`: the command (a tool's or a method's name). */
  readonly command: string | undefined;
  /** `invoke`: the caller's arguments. */
  readonly args: any;
  /** `agent.run`, `chat.send`: the run's session. */
  readonly sessionId: string | undefined;
  /** `agent.run`: the run's id. */
  readonly runId: string | undefined;
  /**
   * Aborted when the caller cancels or goes away, or the connection is lost;
   * for a run (`agent.run`), only when it cannot be taken back after the
   * connection was lost.
   */
  readonly signal: AbortSignal;
  readonly cancelled: boolean;
  /** `invoke.progress` to the caller; false when it could not be sent. */
  progress(data: unknown): boolean;
  /**
   * `agent.event` to the run's session, sent as a call (numbered before the
   * answer). While a run's connection is down, waits until the run is taken
   * back. Never rejects: a failure resolves `{delivered: 0, error}`.
   */
  event(
    type: string,
    data: unknown,
  ): Promise<{ delivered: number; offset?: number; dropped?: boolean; error?: unknown }>;
  /**
   * A run whose connection dropped: resolves true once it is taken back on a
   * later connection (`agent.reattach`), false when it cannot be (within
   * 120 s; `signal` is aborted then). True at once otherwise.
   */
  back(): Promise<boolean>;
  requestApproval(options: ApprovalRequest): Promise<ApprovalRecord>;
}

export type Handler = (request: IncomingRequest) => unknown;

export interface ToolSpec {
  name: string;
  description?: string;
  parameters?: unknown;
}

export interface AgentRegistration {
  /** Stable id (default: the connection id, which changes on reconnect). */
  agentId?: string;
  name?: string;
  type?: string;
  capabilities?: string[];
  tools?: ToolSpec[];
  models?: string[];
  methods?: string[];
  maxConcurrency?: number;
  status?: string;
}

/** One `agent.run`: what `agent.wait` (`client.waitRun`) answers. */
export interface RunRecord {
  runId: string;
  sessionId: string;
  agentId: string;
  /** `sub` of the identity whose agent served it, once known */
  agentIdentity?: string;
  /** `sub` of the caller */
  caller: string;
  task: string;
  status: 'running' | 'completed' | 'error' | 'cancelled';
  result: unknown;
  /**
   * When the agent's instance died: code -32005 with data `{reason:
   * 'instance_lost', instanceId, resumableUntil}`; the agent may take the
   * run back until `resumableUntil` (ms since the epoch).
   */
  error: { code: number; message: string; data?: any } | null;
  /** The instance holding the agent's connection. */
  instanceId: string;
  /** How many times its agent took it back after its instance was lost. */
  attached?: number;
  generation: number;
  startedAt: number;
  finishedAt: number | null;
  deadline?: number | null;
}

export interface InvokeParams {
  nodeId?: string;
  capability?: string;
  command: string;
  params?: unknown;
  timeoutMs?: number;
  policy?: 'least_loaded' | 'round_robin' | 'random' | 'first';
  idempotencyKey?: string;
  invokeId?: string;
}

export interface InvokeResult<T = unknown> {
  connId: string;
  invokeId: string;
  nodeId: string;
  result: T;
}

export interface ApprovalRequest {
  tool: string;
  args?: unknown;
  summary?: string;
  sessionId?: string;
  /** How long the approval stays open (default 300 000 ms). */
  timeoutMs?: number;
}

export interface ApprovalRecord {
  approvalId: string;
  tool: string;
  args: unknown;
  summary: string;
  requester: string;
  requesterConn: string;
  sessionId: string | null;
  status: 'pending' | 'approved' | 'denied' | 'expired';
  decidedBy: string | null;
  note: string | null;
  createdAt: number;
  expiresAt: number;
  resolvedAt: number | null;
}

export declare class Client {
  constructor(url: string | string[], options?: ClientOptions);
  readonly state: 'connecting' | 'open' | 'reconnecting' | 'closed';
  readonly url: string;
  readonly connId: string | undefined;
  readonly nodeId: string | undefined;
  readonly welcome: Welcome | null;
  readonly hello: Hello | null;
  readonly sessions: Map<string, Session>;
  /** The backend's epoch the offsets this client tracks belong to, as a reply last named it. */
  readonly epoch: string | undefined;
  /** How many times the backend's logs were seen to start over (Redis restarted empty). */
  readonly epochChanges: number;

  on(event: 'open', listener: (event: OpenEvent) => void): () => void;
  on(event: 'close', listener: (event: CloseEvent) => void): () => void;
  on(event: 'reconnecting', listener: (event: ReconnectingEvent) => void): () => void;
  on(event: 'error', listener: (event: ErrorEvent) => void): () => void;
  on(event: '*', listener: (push: { method: string; params: any }) => void): () => void;
  on(event: 'notify', listener: (message: ChannelMessage) => void): () => void;
  on(event: 'approval.requested' | 'approval.resolved', listener: (record: ApprovalRecord) => void): () => void;
  on(event: 'invoke.progress', listener: (params: { invokeId: string; data: unknown }) => void): () => void;
  /** The backend may have lost writes (Redis came back empty, a failover, a restart from disk): `epoch` is the new epoch. The client reads its channels and sessions again on its own. */
  on(event: 'epoch.changed', listener: (params: EpochChanged) => void): () => void;
  on(event: string, listener: (params: any) => void): () => void;
  once(event: string, listener: (value: any) => void): () => void;
  off(event: string, listener: (value: any) => void): void;
  notifications(method: 'notify', options?: { bufferSize?: number; signal?: AbortSignal }): AsyncIterableIterator<ChannelMessage>;
  notifications(
    method: 'approval.requested' | 'approval.resolved',
    options?: { bufferSize?: number; signal?: AbortSignal },
  ): AsyncIterableIterator<ApprovalRecord>;
  notifications(method: 'epoch.changed', options?: { bufferSize?: number; signal?: AbortSignal }): AsyncIterableIterator<EpochChanged>;
  notifications(method: string, options?: { bufferSize?: number; signal?: AbortSignal }): AsyncIterableIterator<any>;
  waitOpen(timeoutMs?: number): Promise<void>;

  call<T = any>(method: string, params?: unknown, options?: CallOptions): Promise<T>;
  notify(method: string, params?: unknown): boolean;
  invoke<T = unknown>(
    params: InvokeParams,
    options?: { onProgress?: (data: any) => void; signal?: AbortSignal; timeout?: number },
  ): Promise<InvokeResult<T>>;

  subscribe(channel: string, options?: SubscribeOptions): Promise<Subscription>;
  publish(channel: string, event: string, data?: unknown): Promise<{ delivered: number; offset?: number }>;

  createSession(
    params?: { sessionId?: string; meta?: object; maxMembers?: number; invite?: string[]; open?: boolean },
    options?: SessionOptions,
  ): Promise<Session>;
  joinSession(sessionId: string, options?: SessionOptions & { since?: number; epoch?: string }): Promise<Session>;
  resumeSession(
    params: { sessionId: string; resumeToken: string; offset?: number; epoch?: string },
    options?: SessionOptions,
  ): Promise<Session>;

  register(params?: AgentRegistration): Promise<any>;
  unregister(agentId?: string): Promise<{ agentId: string; unregistered: true }>;
  handle(method: string, handler: Handler): () => void;
  tool(name: string, handler: Handler): () => void;
  /**
   * Wait for the run on a session to end (`agent.wait`). With `follow` (the
   * default), a run lost with its agent's instance (`instance_lost`) is
   * waited for until its `resumableUntil`, in case its agent takes it back;
   * without, the loss is the answer. `timeoutMs` default 600 000.
   */
  waitRun(sessionId: string, options?: { timeoutMs?: number; follow?: boolean }): Promise<RunRecord>;

  requestApproval(options: ApprovalRequest): Promise<ApprovalRecord>;
  resolveApproval(approvalId: string, decision: 'approve' | 'deny', note?: string): Promise<ApprovalRecord>;

  close(): Promise<void>;
}

/** Connect and authenticate in-band; resolves once the handshake succeeded. */
export declare function connect(url: string | string[], options?: ClientOptions): Promise<Client>;

/** A bounded FIFO read with `for await`; fails with OverflowError rather than dropping. */
export declare class BoundedQueue<T> implements AsyncIterableIterator<T> {
  constructor(limit: number, what: string, onClose?: () => void);
  readonly size: number;
  readonly closed: boolean;
  push(item: T): void;
  end(error?: unknown): void;
  next(): Promise<IteratorResult<T>>;
  return(): Promise<IteratorResult<T>>;
  [Symbol.asyncIterator](): AsyncIterableIterator<T>;
}
