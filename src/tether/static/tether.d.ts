// Type declarations for tether.js, the browser client of the tether hub (wire protocol
// `tether.v1`, see docs/wire-protocol.md; the API is documented in docs/browser-client.md).
//
// Written by hand beside tether.js and kept honest by tests/js/test_js_typescript.py: every
// value exported here must be exported by tether.js and the other way round, and a small
// TypeScript project type-checks against the `npm pack`ed package.
//
// The types need no DOM library: the WebSocket the client uses is described structurally
// (`WebSocketLike`), so they also work in a Node project that passes `ws` as `WebSocket`.

/** The WebSocket subprotocol the client offers. */
export declare const PROTOCOL: "tether.v1";
/** The version of the wire protocol. */
export declare const VERSION: "1";

/** Local error codes (strings, so they never clash with the hub's numeric codes). */
export declare const ErrorCode: Readonly<{
  /** No reply within `timeout` milliseconds. */
  TIMEOUT: "timeout";
  /** The transport closed before the reply came: the outcome is unknown. */
  CONNECTION_CLOSED: "connection_closed";
  /** The client is (or went) disconnected for good. */
  DISCONNECTED: "disconnected";
  /** The subscription was removed. */
  UNSUBSCRIBED: "unsubscribed";
}>;
export type LocalErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Close codes the client itself reports (in `connecting` / `disconnected` events). */
export declare const LocalCode: Readonly<{
  /** `connecting` right after connect(). */
  CONNECT_CALLED: 0;
  /** `disconnected` after disconnect(). */
  DISCONNECT_CALLED: 1000;
  /** A connect/subscribe/publish/ping reply did not come in time. */
  NO_REPLY: 4012;
  /** getToken() returned no token, or the hub refused the credentials. */
  UNAUTHORIZED: 4003;
  /** The hub refused the connect command for good. */
  BAD_REQUEST: 4001;
}>;

/** An error answered by the hub (`code` is a number) or raised locally (`code` is a string). */
export declare class TetherError extends Error {
  constructor(code: number | LocalErrorCode, message: string, temporary?: boolean);
  readonly name: "TetherError";
  /** The hub's numeric error code, or one of {@link ErrorCode} for local failures. */
  code: number | LocalErrorCode;
  /** Whether the same call may succeed later (as the hub said, or a lost connection). */
  temporary: boolean;
}

/** Whether a WebSocket close code tells the client to reconnect. */
export declare function shouldReconnect(code: number): boolean;

/** Exponential backoff with full jitter: random(0, min(max, base * 2^attempt)) ms. */
export declare function backoffDelay(
  attempt: number,
  base: number,
  max: number,
  random?: () => number,
): number;

/** The WebSocket URL for `url`: relative paths resolve against `base`, http(s) becomes ws(s). */
export declare function resolveUrl(url?: string | null, base?: string): string;

/** An idempotency key: 24 random hex digits and a counter. */
export declare function makeIdempotencyKey(): string;

// ------------------------------------------------------------------ values

/** A WebSocket as the client uses it: the browser's, or e.g. the `ws` package's in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  readonly extensions: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
}

/** A WebSocket class: `new WebSocket(url, ["tether.v1"])`. */
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocketLike;

/** What the `sse` transport needs of an EventSource class. */
export type EventSourceConstructor = new (
  url: string,
  init?: { withCredentials?: boolean },
) => {
  onmessage: ((event: { data: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  close(): void;
};

/** What the HTTP transports need of `fetch` (the browser's, or Node's 18+). */
export type FetchLike = (url: string, init?: Record<string, unknown>) => Promise<{
  ok: boolean;
  status: number;
  body: unknown;
  text(): Promise<string>;
  json(): Promise<unknown>;
}>;

/** A position in a channel's stream. */
export interface StreamPosition {
  offset: number;
  epoch: string;
}

/** Who a client is: its connection id, its user id and its presence info. */
export interface ClientInfo {
  client: string;
  user: string;
  /** Presence info: the token's `info` claim, else what the client sent (`info` or `{name}`). */
  info?: unknown;
}

/** A publication as history returns it. */
export interface HistoryPublication<T = unknown> {
  data: T;
  offset?: number;
  /** The publisher; absent for publications made through the HTTP API. */
  info?: ClientInfo;
}

/** The hub's answer to a publish: the position, when the channel keeps history. */
export interface PublishResult {
  offset?: number;
  epoch?: string;
}

export interface HistoryOptions {
  /** How many publications (0, the default, returns only the stream position). */
  limit?: number;
  /** Only publications after this position. */
  since?: StreamPosition;
  /** Newest first. */
  reverse?: boolean;
}

export interface HistoryResult<T = unknown> {
  publications: HistoryPublication<T>[];
  offset: number;
  epoch: string;
}

export interface PresenceResult {
  clients: Record<string, ClientInfo>;
}

export interface PresenceStatsResult {
  num_clients: number;
  num_users: number;
}

// ----------------------------------------------------------------- options

/** A token, or nothing (which stops the client with LocalCode.UNAUTHORIZED). */
export type TokenResult = string | null | undefined;

export interface ClientOptions {
  /** JWT sent in the `connect` command (never in the URL). */
  token?: string | null;
  /** Called for the first token (without `token`), before the token expires and after 3000/109. */
  getToken?: (() => TokenResult | Promise<TokenResult>) | null;
  /** Display name: presence shows `{name}` when neither `info` nor the token gives info. */
  name?: string;
  /** Presence info; a token's `info` claim takes precedence on the hub. */
  info?: unknown;
  /** Log the protocol to `console.debug`. */
  debug?: boolean;
  /** Backoff base, milliseconds (default 500). */
  minReconnectDelay?: number;
  /** Backoff cap, milliseconds (default 20000). */
  maxReconnectDelay?: number;
  /** Milliseconds to wait for a command's reply (default 10000). */
  timeout?: number;
  /** A WebSocket class (default `globalThis.WebSocket`). */
  WebSocket?: WebSocketConstructor;
  /**
   * The transports to try, in order (default all four: websocket, http_stream, sse,
   * long_poll). The first that connects is kept for reconnects; one that fails before the
   * hub's connect reply (or within `transportTimeout`) makes way for the next.
   */
  transports?: TransportName[];
  /** Milliseconds a transport has to connect before the next is tried (default 5000). */
  transportTimeout?: number;
  /** The `fetch` of the HTTP transports (default `globalThis.fetch`). */
  fetch?: FetchLike | null;
  /** The EventSource class of the `sse` transport (default `globalThis.EventSource`). */
  EventSource?: EventSourceConstructor;
  /** Sent as the connect param `data`, for the app's connect hook (docs/hooks.md). */
  data?: unknown;
}

/** The options in effect: the defaults and what the constructor was given. */
export interface ResolvedClientOptions extends ClientOptions {
  token: string | null;
  getToken: (() => TokenResult | Promise<TokenResult>) | null;
  debug: boolean;
  minReconnectDelay: number;
  maxReconnectDelay: number;
  timeout: number;
  WebSocket: WebSocketConstructor;
  transports: TransportName[];
  transportTimeout: number;
}

// ------------------------------------------------------------------ events

export type ClientState = "disconnected" | "connecting" | "connected";

/** How the client's frames travel (docs/wire-protocol.md, "HTTP fallbacks"). */
export type TransportName = "websocket" | "http_stream" | "sse" | "long_poll";

/** The transports in the order the client tries them by default. */
export declare const TRANSPORTS: readonly TransportName[];

/** The URL of an HTTP fallback endpoint beside the WebSocket one (`/connection/<name>`). */
export declare function endpointUrl(wsUrl: string, name: string): string;

/** Why the client is (re)connecting or stopped: a close code and its reason. */
export interface CloseContext {
  code: number;
  reason: string;
  /** The transport that was lost (absent or null when there was none). */
  transport?: TransportName | null;
}

export interface ConnectedContext {
  client: string | null;
  user: string | null;
  /** Seconds until the token expires (the client refreshes it with `getToken`). */
  ttl?: number;
  /** The transport that connected. */
  transport: TransportName;
}

/** A transport failed before connecting: `transport` is tried next. */
export interface TransportContext {
  transport: TransportName;
  previous: TransportName | null;
  code: number;
  reason: string;
}

/** The transport in use: its name; a WebSocket's also has `protocol` and `extensions`. */
export interface Transport {
  readonly name: TransportName;
  readonly ready: boolean;
  readonly protocol?: string;
  readonly extensions?: string;
}

export interface ClientErrorContext {
  type: "transport" | "connect" | "token" | "refresh" | "publish" | "message";
  error: unknown;
  /** The channel of a failed publish. */
  channel?: string;
}

export interface StateContext {
  state: ClientState;
  previous: ClientState;
  /** The transport in use or being tried (null when none). */
  transport: TransportName | null;
}

export interface ClientEvents {
  connecting: CloseContext;
  connected: ConnectedContext;
  disconnected: CloseContext;
  error: ClientErrorContext;
  state: StateContext;
  /** Falling back: a transport failed before connecting and the next is tried. */
  transport: TransportContext;
  /** The hub subscribed this client (the app's connect hook or `node.users.subscribe`). */
  subscription: { channel: string; subscription: Subscription };
}

export type SubscriptionState = "subscribing" | "subscribed" | "unsubscribed";

export interface PublicationContext<T = unknown> {
  channel: string;
  data: T;
  offset?: number;
  epoch?: string;
  /** The publisher; absent for publications made through the HTTP API. */
  info?: ClientInfo;
}

export interface PresenceEventContext extends ClientInfo {
  channel: string;
}

export interface SubscribingContext {
  channel: string;
}

export interface SubscribedContext {
  channel: string;
  /** Whether everything missed since the last position was recovered. */
  recovered: boolean;
  /** Whether this subscribe tried to recover (a resubscribe with a known position). */
  wasRecovering: boolean;
  recoverable: boolean;
  positioned: boolean;
  offset?: number;
  epoch?: string;
}

export interface UnsubscribedContext {
  channel: string;
  /** 0 after unsubscribe(), else the hub's error code or `unsubscribe` push code. */
  code: number | string;
  reason: string;
}

export interface SubscriptionErrorContext {
  channel: string;
  type: "subscribe";
  error: TetherError;
}

export interface SubscriptionEvents<T = unknown> {
  publication: PublicationContext<T>;
  join: PresenceEventContext;
  leave: PresenceEventContext;
  subscribing: SubscribingContext;
  subscribed: SubscribedContext;
  unsubscribed: UnsubscribedContext;
  error: SubscriptionErrorContext;
}

export interface SubscriptionHandlers<T = unknown> {
  onPublication?: (ctx: PublicationContext<T>) => void;
  onJoin?: (ctx: PresenceEventContext) => void;
  onLeave?: (ctx: PresenceEventContext) => void;
  onSubscribing?: (ctx: SubscribingContext) => void;
  onSubscribed?: (ctx: SubscribedContext) => void;
  onUnsubscribed?: (ctx: UnsubscribedContext) => void;
  onError?: (ctx: SubscriptionErrorContext) => void;
  /** Recover from a position saved earlier (e.g. across a page reload). */
  since?: StreamPosition;
}

/** on/off/once, typed by an event map. */
declare class Emitter<Events> {
  /** Add a listener; returns `this`. */
  on<K extends keyof Events>(event: K, fn: (ctx: Events[K]) => void): this;
  /** Remove a listener added with on() (or all listeners of `event` without `fn`). */
  off<K extends keyof Events>(event: K, fn?: (ctx: Events[K]) => void): this;
  /** Add a listener that runs at most once. */
  once<K extends keyof Events>(event: K, fn: (ctx: Events[K]) => void): this;
}

// ------------------------------------------------------------- the classes

/** One channel subscription, made by `client.subscribe(channel, handlers)`. */
export declare class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> {
  constructor(client: Client, channel: string, handlers?: SubscriptionHandlers<T>);
  readonly client: Client;
  readonly channel: string;
  readonly state: SubscriptionState;
  /** Offset of the last publication processed (undefined before any position is known). */
  readonly offset: number | undefined;
  readonly epoch: string | undefined;
  /** Made by the hub (connect hook or node.users.subscribe): the hub re-creates it after a reconnect. */
  readonly serverSide: boolean;
  /** What the app's subscribe hook returned for this subscription. */
  readonly data: unknown;
  /** Publish to this channel; resolves once the hub acknowledged it. */
  publish(data: unknown): Promise<PublishResult>;
  presence(): Promise<PresenceResult>;
  presenceStats(): Promise<PresenceStatsResult>;
  history(options?: HistoryOptions): Promise<HistoryResult<T>>;
  /** Leave the channel for good (call client.subscribe() again to come back). */
  unsubscribe(): void;
}

/** A connection to a tether hub; reconnects and recovers by itself. */
export declare class Client extends Emitter<ClientEvents> {
  constructor(url?: string | null, options?: ClientOptions);
  readonly url: string;
  options: ResolvedClientOptions;
  readonly state: ClientState;
  /** This connection's id on the hub (null while not connected). */
  readonly clientId: string | null;
  /** The user id the hub verified (null before the first connect). */
  readonly user: string | null;
  /** The current transport (null while there is none). */
  readonly transport: Transport | null;
  /** The name of the transport in use or being tried, or null. */
  readonly transportName: TransportName | null;
  /** Number of publishes not yet acknowledged. */
  readonly pendingPublishes: number;

  /** Open the connection (reconnects by itself until disconnect() or a "stop" close code). */
  connect(): void;
  /** Close the connection for good; unacknowledged publishes are rejected. */
  disconnect(): void;
  /** Resolves once connected (rejects after `timeout` ms or when disconnected for good). */
  ready(timeout?: number): Promise<this>;

  /** Subscribe to `channel`; throws if `channel` already has a subscription. */
  subscribe<T = unknown>(channel: string, handlers?: SubscriptionHandlers<T>): Subscription<T>;
  getSubscription(channel: string): Subscription | null;
  subscriptions(): Subscription[];

  /** Publish `data` (any JSON); resolves once the hub acknowledged it, never lost nor doubled. */
  publish(channel: string, data: unknown): Promise<PublishResult>;
  presence(channel: string): Promise<PresenceResult>;
  presenceStats(channel: string): Promise<PresenceStatsResult>;
  history<T = unknown>(channel: string, options?: HistoryOptions): Promise<HistoryResult<T>>;
  /** Round trip to the hub. */
  ping(): Promise<Record<string, never>>;

  /** What the app's connect hook returned as `data` (undefined without one). */
  readonly connectData: unknown;
  /**
   * Call the app's RPC handler: resolves with its reply's data, rejects with a TetherError
   * carrying the app's code (108 without a handler, 113 timeout, 114 failure).
   */
  rpc<T = unknown>(method: string, data?: unknown): Promise<T>;

  // Further commands are declared here, beside their implementation in tether.js.
}
