// tether.js: the browser client of the tether hub (wire protocol `tether.v1`,
// see docs/wire-protocol.md). A plain ES module without dependencies:
//
//   import { Client } from "/tether.js";
//   const client = new Client("/connection/websocket", { name: "alice" });
//   const sub = client.subscribe("chat:lobby", { onPublication: (p) => show(p.data) });
//   client.connect();
//   await sub.publish({ text: "hi" });
//
// docs/browser-client.md documents the API.

export const PROTOCOL = "tether.v1";
export const VERSION = "1";

/** Local error codes (strings, so they never clash with the hub's numeric codes). */
export const ErrorCode = Object.freeze({
  TIMEOUT: "timeout", // no reply within `timeout` milliseconds
  CONNECTION_CLOSED: "connection_closed", // the transport closed before the reply came
  DISCONNECTED: "disconnected", // the client is (or went) disconnected for good
  UNSUBSCRIBED: "unsubscribed", // the subscription was removed
});

/** Close codes the client itself reports (in `connecting` / `disconnected` events). */
export const LocalCode = Object.freeze({
  CONNECT_CALLED: 0, // `connecting` right after connect()
  DISCONNECT_CALLED: 1000, // `disconnected` after disconnect()
  NO_REPLY: 4012, // a connect/subscribe/publish/ping reply did not come in time
  UNAUTHORIZED: 4003, // getToken() returned no token, or the hub refused the credentials
  BAD_REQUEST: 4001, // the hub refused the connect command for good
});

/** An error answered by the hub (`code` is a number) or raised locally (`code` is a string). */
export class TetherError extends Error {
  constructor(code, message, temporary = false) {
    super(message);
    this.name = "TetherError";
    this.code = code;
    this.temporary = temporary;
  }
}

// 1000 (normal) and the codes that say a repeat would fail the same way mean stop;
// so do 4000-4009 and 4500-4999 (wire protocol, "Close codes"). Everything else
// (1001, 1005, 1006, 1011-1015, 3000-3999, 4010-4499, ...) means reconnect.
const STOP_CODES = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010]);

/** Whether a WebSocket close code tells the client to reconnect. */
export function shouldReconnect(code) {
  if (STOP_CODES.has(code)) return false;
  if (code >= 4000 && code <= 4009) return false;
  if (code >= 4500 && code <= 4999) return false;
  return true;
}

/** Exponential backoff with full jitter: random(0, min(max, base * 2^attempt)) ms. */
export function backoffDelay(attempt, base, max, random = Math.random) {
  const cap = Math.min(max, base * 2 ** Math.min(Math.max(attempt, 0), 30));
  return Math.floor(random() * cap);
}

/** The WebSocket URL for `url`: relative paths resolve against the page, http(s) becomes ws(s). */
export function resolveUrl(url, base = globalThis.location?.href) {
  let target = url || "/connection/websocket";
  if (base && !/^[a-z][a-z0-9+.-]*:/i.test(target)) target = new URL(target, base).href;
  return target.replace(/^http(s?):/i, "ws$1:");
}

/** An idempotency key: 24 random hex digits and a counter (well under 64 characters). */
let keyCounter = 0;
export function makeIdempotencyKey() {
  const bytes = new Uint8Array(12);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  keyCounter += 1;
  return `${hex}-${keyCounter}`;
}

// ------------------------------------------------------------------- transports
//
// How the client's frames travel. Each transport is one small object with the same
// interface, so the client never asks which one it holds (docs/wire-protocol.md,
// "HTTP fallbacks", specifies the HTTP ones):
//
//   name          "websocket" | "http_stream" | "sse" | "long_poll"
//   ready         whether send() may be called now
//   open(events)  start; events: {open(), message(textOrObject), activity(), close(code, reason)}
//   send(text)    one command (a JSON text). The HTTP transports start their session with the
//                 first command (always `connect`) and post the later ones upstream.
//   close()       stop for good; no event follows
//
// A transport calls `close` at most once, whatever went wrong; the client decides whether
// to reconnect, and on which transport.

/** The transports in the order the client tries them by default. */
export const TRANSPORTS = Object.freeze(["websocket", "http_stream", "sse", "long_poll"]);

/** The URL of an HTTP fallback endpoint beside the WebSocket one (`/connection/<name>`). */
export function endpointUrl(wsUrl, name) {
  const url = new URL(name, wsUrl.replace(/^ws(s?):/i, "http$1:"));
  return url.href;
}

function webSocketTransport(client) {
  let ws = null;
  return {
    name: "websocket",
    get ready() {
      return ws !== null && ws.readyState === 1;
    },
    get protocol() {
      return ws?.protocol ?? "";
    },
    get extensions() {
      return ws?.extensions ?? "";
    },
    open(events) {
      ws = new client.options.WebSocket(client.url, [PROTOCOL]);
      ws.onopen = () => {
        if (ws.protocol && ws.protocol !== PROTOCOL) client._log("unexpected subprotocol", ws.protocol);
        events.open();
      };
      ws.onmessage = (event) => events.message(event.data);
      ws.onerror = () => events.error(new Error("WebSocket error"));
      ws.onclose = (event) => events.close(event.code, event.reason);
    },
    send(text) {
      ws.send(text);
    },
    close() {
      if (!ws) return;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        if (ws.readyState === 0 || ws.readyState === 1) ws.close(1000);
      } catch {
        // closing is best effort
      }
    },
  };
}

// Posts the commands of an HTTP session upstream, one request at a time so the hub sees
// them in order, batching those that wait meanwhile (`POST /connection/send`).
function upstream(client, fail) {
  let session = null;
  let busy = false;
  let stopped = false;
  const queue = [];
  const flush = async () => {
    if (busy || stopped || session === null || queue.length === 0) return;
    busy = true;
    const commands = queue.splice(0);
    try {
      const response = await client.options.fetch(endpointUrl(client.url, "send"), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: `{"session":${JSON.stringify(session)},"commands":[${commands.join(",")}]}`,
        credentials: "same-origin",
        cache: "no-store",
      });
      if (!response.ok) {
        await refusal(response, fail);
        return;
      }
      await response.body?.cancel?.();
    } catch (error) {
      if (!stopped) fail(1006, `upstream failed: ${error.message}`);
      return;
    } finally {
      busy = false;
    }
    flush();
  };
  return {
    setSession(id) {
      session = id;
      flush();
    },
    send(text) {
      queue.push(text);
      flush();
    },
    stop() {
      stopped = true;
    },
  };
}

// An HTTP refusal from the hub (`{"error": {code, message}}`) as a close code: a refused
// or expired token stops (or fetches a new token) as the same refusal on a WebSocket
// would; anything else (404 code 125 "session not found", 429, 503, a hub without
// fallbacks) reconnects, with backoff, and recovers.
async function refusal(response, fail) {
  let reason = `HTTP ${response.status}`;
  let code = null;
  try {
    const text = (await response.text()).trim();
    const body = text.startsWith("{") ? JSON.parse(text) : null;
    code = body?.error?.code ?? null;
    const detail = body?.error?.message ?? text.split("\n")[0];
    if (detail) reason += `: ${String(detail).slice(0, 200)}`;
  } catch {
    // the reason stays the status
  }
  if (code === 109) fail(3000, reason);
  else if (response.status === 401 || response.status === 403) fail(LocalCode.UNAUTHORIZED, reason);
  else fail(1006, reason);
}

// The shared part of the three HTTP transports: the session key from the session frame
// (frame 0), the upstream poster, and one close. Streams count frames (their `seq` is
// implicit); long polling numbers them explicitly and drops repeats.
function httpSession(client, name, start) {
  let events = null;
  let closed = false;
  let session = null;
  let started = false;
  let lastSeq = 0;
  const abort = new AbortController();
  const fail = (code, reason) => {
    if (closed) return;
    closed = true;
    up.stop();
    abort.abort();
    events.close(code, reason);
  };
  const up = upstream(client, fail);
  const ctx = {
    signal: abort.signal,
    fail,
    get closed() {
      return closed;
    },
    get lastSeq() {
      return lastSeq;
    },
    get session() {
      return session;
    },
    activity: () => events.activity(),
    // The session frame: `{"session": key, "seq": 0, "transport", "ping"}`.
    hello(frame) {
      if (frame === null || typeof frame !== "object" || typeof frame.session !== "string") {
        fail(1006, "the first frame is not a session frame");
        return false;
      }
      session = frame.session;
      up.setSession(session);
      return true;
    },
    // Frame number `seq` (replies and pushes are numbered 1, 2, 3 ...): a repeat (a poll
    // answered again) is dropped; a gap means frames were lost, so the session is given up
    // and the client reconnects and recovers, as after any drop.
    frame(frame, seq = lastSeq + 1) {
      if (closed) return;
      events.activity();
      if (seq <= lastSeq) return;
      if (seq !== lastSeq + 1) {
        fail(1006, `frames lost (seq ${lastSeq} -> ${seq})`);
        return;
      }
      lastSeq = seq;
      events.message(frame);
    },
    // One frame of a stream (parsed JSON): the session frame first, then the others.
    item(item) {
      if (closed) return;
      events.activity();
      if (session === null) ctx.hello(item);
      else ctx.frame(item);
    },
    // Every line of an NDJSON body (a trailing partial line stays in the buffer).
    lines(buffer, done) {
      let at;
      while ((at = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, at).trim();
        buffer = buffer.slice(at + 1);
        if (!line) {
          events.activity(); // a heartbeat
          continue;
        }
        let item;
        try {
          item = JSON.parse(line);
        } catch (error) {
          ctx.fail(1006, `bad JSON from the hub: ${error.message}`);
          return "";
        }
        ctx.item(item);
        if (closed) return "";
      }
      if (done && buffer.trim()) ctx.fail(1006, "stream ended inside a line");
      return buffer;
    },
  };
  return {
    name,
    get ready() {
      return !closed;
    },
    open(e) {
      events = e;
      queueMicrotask(() => {
        if (!closed) events.open();
      });
    },
    send(text) {
      if (closed) return;
      if (!started) {
        started = true;
        start(text, ctx).catch((error) => {
          if (!ctx.closed && error?.name !== "AbortError") fail(1006, error.message);
        });
        return;
      }
      up.send(text);
    },
    close() {
      closed = true;
      up.stop();
      abort.abort();
    },
  };
}

// HTTP streaming: `POST /connection/stream` with the connect command as its body; the
// answer is a chunked NDJSON stream that lasts as long as the session.
function httpStreamTransport(client) {
  return httpSession(client, "http_stream", async (connect, ctx) => {
    const response = await client.options.fetch(endpointUrl(client.url, "stream"), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/x-ndjson" },
      body: connect,
      signal: ctx.signal,
      credentials: "same-origin",
      cache: "no-store",
    });
    if (!response.ok || !response.body) {
      await refusal(response, ctx.fail);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    while (!ctx.closed) {
      const { done, value } = await reader.read();
      buffer = ctx.lines(buffer + (value ? decoder.decode(value, { stream: !done }) : ""), done);
      if (done) break;
    }
    ctx.fail(1006, "stream ended");
  });
}

// Server-Sent Events downstream: `GET /connection/eventsource?connect=<command>`. The
// browser's own reconnect would open a second session, so the first error ends this one.
function sseTransport(client) {
  return httpSession(client, "sse", async (connect, ctx) => {
    const url = new URL(endpointUrl(client.url, "eventsource"));
    url.searchParams.set("connect", connect);
    const source = new client.options.EventSource(url.href, { withCredentials: false });
    ctx.signal.addEventListener("abort", () => source.close());
    source.onmessage = (event) => {
      let item;
      try {
        item = JSON.parse(event.data);
      } catch (error) {
        ctx.fail(1006, `bad JSON from the hub: ${error.message}`);
        return;
      }
      ctx.item(item);
    };
    source.onerror = () => {
      source.close();
      ctx.fail(1006, "event stream failed");
    };
  });
}

// Long polling: `POST /connection/poll`, first `{"connect": command}`, then
// `{"session", "ack"}` with the last frame processed. Each answer is
// `{"session", "seq", "messages"}` (`seq`: the first message's number); the next poll goes
// out at once. The last resort, behind proxies that buffer whole responses.
function longPollTransport(client) {
  return httpSession(client, "long_poll", async (connect, ctx) => {
    let body = `{"connect":${connect}}`;
    while (!ctx.closed) {
      const response = await client.options.fetch(endpointUrl(client.url, "poll"), {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body,
        signal: ctx.signal,
        credentials: "same-origin",
        cache: "no-store",
      });
      if (!response.ok) {
        await refusal(response, ctx.fail);
        return;
      }
      const answer = await response.json();
      if (ctx.closed) return;
      if (ctx.session === null && !ctx.hello(answer)) return;
      const first = answer?.seq;
      const messages = answer?.messages;
      if (!Number.isInteger(first) || !Array.isArray(messages)) {
        ctx.fail(1006, "bad poll answer");
        return;
      }
      ctx.activity();
      for (let i = 0; i < messages.length && !ctx.closed; i++) ctx.frame(messages[i], first + i);
      body = JSON.stringify({ session: ctx.session, ack: ctx.lastSeq });
    }
  });
}

const TRANSPORT_FACTORIES = {
  websocket: webSocketTransport,
  http_stream: httpStreamTransport,
  sse: sseTransport,
  long_poll: longPollTransport,
};

/** Whether this environment can run `name` (the constructors it needs exist). */
function transportAvailable(name, options) {
  switch (name) {
    case "websocket":
      return typeof options.WebSocket === "function";
    case "http_stream":
      return typeof options.fetch === "function" && typeof TextDecoder === "function";
    case "sse":
      return typeof options.fetch === "function" && typeof options.EventSource === "function";
    case "long_poll":
      return typeof options.fetch === "function";
    default:
      return false;
  }
}

class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  /** Add a listener; returns `this`. */
  on(event, fn) {
    if (typeof fn !== "function") throw new TypeError("listener must be a function");
    if (!this._listeners.has(event)) this._listeners.set(event, []);
    this._listeners.get(event).push(fn);
    return this;
  }

  /** Remove a listener added with on() (or all listeners of `event` without `fn`). */
  off(event, fn) {
    if (fn === undefined) {
      this._listeners.delete(event);
      return this;
    }
    const list = this._listeners.get(event);
    if (list) {
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    }
    return this;
  }

  /** Add a listener that runs at most once. */
  once(event, fn) {
    const wrapper = (ctx) => {
      this.off(event, wrapper);
      fn(ctx);
    };
    return this.on(event, wrapper);
  }

  _emit(event, ctx) {
    const list = this._listeners.get(event);
    if (!list) return;
    for (const fn of [...list]) {
      try {
        fn(ctx);
      } catch (err) {
        // A failing listener must not break the client's state machine.
        console.error(`tether: ${event} listener failed`, err);
      }
    }
  }
}

const HANDLERS = {
  onPublication: "publication",
  onJoin: "join",
  onLeave: "leave",
  onSubscribing: "subscribing",
  onSubscribed: "subscribed",
  onUnsubscribed: "unsubscribed",
  onError: "error",
};

/**
 * One channel subscription, made by `client.subscribe(channel, handlers)`.
 *
 * States: `subscribing` (waiting for a connection or the hub's reply), `subscribed`,
 * `unsubscribed` (final). Events: `publication`, `join`, `leave`, `subscribing`,
 * `subscribed` ({recovered, epoch, offset, wasRecovering, recoverable, positioned}),
 * `unsubscribed` ({code, reason}), `error`.
 */
export class Subscription extends Emitter {
  constructor(client, channel, handlers = {}) {
    super();
    this.client = client;
    this.channel = channel;
    this._state = "subscribing";
    // Position of the last publication processed: recovery starts after it.
    this._offset = handlers.since?.offset;
    this._epoch = handlers.since?.epoch;
    this._buffer = []; // pubs that arrive while the subscribe reply is pending
    this._retryTimer = null;
    this._attempt = 0;
    // Made by the hub (the app's connect hook or node.users.subscribe): the hub, not
    // this client, subscribes it again after a reconnect.
    this.serverSide = Boolean(handlers.serverSide);
    // What the app's subscribe hook returned for this subscription (reply `data`).
    this.data = undefined;
    for (const [key, event] of Object.entries(HANDLERS)) {
      if (typeof handlers[key] === "function") this.on(event, handlers[key]);
    }
  }

  get state() {
    return this._state;
  }

  /** Offset of the last publication processed (undefined before any position is known). */
  get offset() {
    return this._offset;
  }

  get epoch() {
    return this._epoch;
  }

  /** Publish to this channel; resolves with {offset, epoch} once the hub acknowledged it. */
  publish(data) {
    return this.client.publish(this.channel, data);
  }

  /** `{clients: {client_id: {client, user, info?}}}` */
  presence() {
    return this.client.presence(this.channel);
  }

  /** `{num_clients, num_users}` */
  presenceStats() {
    return this.client.presenceStats(this.channel);
  }

  /** `{publications, offset, epoch}`; options: {limit, since: {offset, epoch}, reverse}. */
  history(options = {}) {
    return this.client.history(this.channel, options);
  }

  /** Leave the channel for good (call client.subscribe() again to come back). */
  unsubscribe() {
    if (this._state === "unsubscribed") return;
    const client = this.client;
    const wasActive = client._subs.get(this.channel) === this;
    if (wasActive) client._subs.delete(this.channel);
    this._finish(0, "unsubscribe called");
    if (wasActive && client.state === "connected") {
      client._send("unsubscribe", { channel: this.channel }, () => {}, false);
    }
  }

  _finish(code, reason) {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._buffer = [];
    this._state = "unsubscribed";
    this._emit("unsubscribed", { channel: this.channel, code, reason });
  }

  _isActive() {
    return this._state !== "unsubscribed" && this.client._subs.get(this.channel) === this;
  }

  // The transport went away: wait for the next connection, then resubscribe and recover.
  // Returns whether the subscription was subscribed (its `subscribing` event is due).
  _transportLost() {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._buffer = [];
    if (this._state !== "subscribed") return false;
    this._state = "subscribing";
    return true;
  }

  _subscribeParams() {
    const params = { channel: this.channel };
    if (typeof this._offset === "number" && this._epoch !== undefined && this._epoch !== null) {
      params.recover = true;
      params.offset = this._offset;
      params.epoch = this._epoch;
    }
    return params;
  }

  _onSubscribeReply(err, result, wasRecovering) {
    if (!this._isActive()) return;
    if (err) {
      if (err.code === ErrorCode.CONNECTION_CLOSED) return; // resubscribed after reconnect
      this._emit("error", { channel: this.channel, type: "subscribe", error: err });
      if (err.temporary) {
        const opts = this.client.options;
        const delay = backoffDelay(this._attempt++, opts.minReconnectDelay, opts.maxReconnectDelay);
        this._retryTimer = setTimeout(() => {
          this._retryTimer = null;
          if (this._isActive() && this.client.state === "connected") this.client._sendSubscribe(this);
        }, delay);
        return;
      }
      this.client._subs.delete(this.channel);
      this._finish(err.code, err.message);
      return;
    }
    this._attempt = 0;
    const buffered = this._buffer;
    this._buffer = [];
    this._state = "subscribed";
    this.data = result.data;
    const recovered = Boolean(result.recovered) && wasRecovering;
    if (!recovered) {
      // A fresh start (or recovery failed): the stream position is the hub's current one.
      this._offset = typeof result.offset === "number" ? result.offset : undefined;
      this._epoch = result.epoch ?? undefined;
    } else if (result.epoch !== undefined && result.epoch !== null) {
      this._epoch = result.epoch;
    }
    this._emit("subscribed", {
      channel: this.channel,
      recovered,
      wasRecovering,
      recoverable: Boolean(result.recoverable),
      positioned: Boolean(result.positioned),
      offset: result.offset,
      epoch: result.epoch,
    });
    if (!this._isActive()) return; // a listener unsubscribed
    const pubs = recovered && Array.isArray(result.publications) ? result.publications : [];
    for (const pub of [...pubs, ...buffered]) {
      if (!this._deliver(pub) || !this._isActive()) return;
    }
  }

  _onPub(pub) {
    if (this._state === "subscribing") this._buffer.push(pub);
    else if (this._state === "subscribed") this._deliver(pub);
  }

  // Deliver one publication unless it was already processed; returns false when a gap
  // was found (the channel then resubscribes to recover what is missing).
  _deliver(pub) {
    const offset = pub.offset;
    const epoch = pub.epoch ?? this._epoch;
    if (typeof offset === "number" && typeof this._offset === "number" && epoch === this._epoch) {
      if (offset <= this._offset) {
        this.client._log("skip duplicate", this.channel, offset);
        return true;
      }
      if (offset > this._offset + 1) {
        this.client._log("gap", this.channel, this._offset, "->", offset);
        this.client._resync(this);
        return false;
      }
    }
    if (typeof offset === "number") {
      this._offset = offset;
      this._epoch = epoch;
    }
    const ctx = { channel: this.channel, data: pub.data, offset, epoch: pub.epoch, info: pub.info };
    this._emit("publication", ctx);
    return true;
  }
}

/**
 * A connection to a tether hub.
 *
 * Events (client.on(event, fn)):
 *   connecting    {code, reason, transport}  (re)connecting: why (LocalCode.CONNECT_CALLED at
 *                                  first); `transport` is the one that was lost, if any
 *   connected     {client, user, ttl, transport}
 *   disconnected  {code, reason, transport}  for good: no reconnect follows
 *   error         {type, error}     transport, connect, token, refresh, publish, message
 *   state         {state, previous, transport}
 *   transport     {transport, previous, reason}  falling back: `transport` is tried next
 *   subscription  {channel, subscription}  the hub subscribed this client on its own (a
 *                                  server-side subscription): add its listeners here
 */
export class Client extends Emitter {
  constructor(url, options = {}) {
    super();
    this.url = resolveUrl(url);
    this.options = {
      token: null,
      getToken: null,
      name: undefined,
      info: undefined,
      data: undefined, // for the app's connect hook (connect param `data`)
      debug: false,
      minReconnectDelay: 500,
      maxReconnectDelay: 20000,
      timeout: 10000,
      transports: TRANSPORTS, // tried in this order; the first that connects is kept
      transportTimeout: 5000, // ms for a transport to connect before the next is tried
      WebSocket: globalThis.WebSocket,
      fetch: typeof globalThis.fetch === "function" ? globalThis.fetch.bind(globalThis) : null,
      EventSource: globalThis.EventSource,
      ...options,
    };
    const wanted = this.options.transports;
    if (!Array.isArray(wanted) || wanted.length === 0) {
      throw new TypeError(`transports must be a non-empty list of ${TRANSPORTS.join(", ")}`);
    }
    for (const name of wanted) {
      if (!TRANSPORTS.includes(name)) throw new TypeError(`unknown transport ${JSON.stringify(name)}`);
    }
    this.state = "disconnected";
    this.clientId = null;
    this.user = null;
    this.connectData = undefined; // what the app's connect hook returned as `data`
    this._token = this.options.token || null;
    this._needToken = false;
    this._transport = null;
    this._round = []; // transports still to try before backing off
    this._working = null; // the transport that connected last: reconnects try it first
    this._workingFailures = 0;
    this._openTimer = null;
    this._gen = 0; // bumped whenever a transport is opened or dropped; stale callbacks compare
    this._nextId = 1;
    this._inflight = new Map(); // command id -> {cb, critical, timer}
    this._queued = []; // calls made while connecting: {run, fail, timer}
    this._pending = new Map(); // idempotency key -> unacknowledged publish
    this._subs = new Map(); // channel -> Subscription
    this._attempt = 0;
    this._reconnectTimer = null;
    this._refreshTimer = null;
    this._pingTimer = null;
    this._pingInFlight = false;
    this._lastReceived = 0;
    this._disconnectPush = null;
  }

  /** The current transport (null while there is none): `.name`; `.protocol`, `.extensions` on a WebSocket. */
  get transport() {
    return this._transport;
  }

  /** The name of the transport in use or being tried ("websocket", "http_stream", ...), or null. */
  get transportName() {
    return this._transport?.name ?? null;
  }

  /** Open the connection (reconnects by itself until disconnect() or a "stop" close code). */
  connect() {
    if (this.state !== "disconnected") return;
    this._attempt = 0;
    this._setState("connecting", {
      code: LocalCode.CONNECT_CALLED,
      reason: "connect called",
    });
    this._open();
  }

  /** Close the connection for good; unacknowledged publishes are rejected. */
  disconnect() {
    if (this.state === "disconnected") return;
    this._terminal(LocalCode.DISCONNECT_CALLED, "disconnect called");
  }

  /** Resolves once connected (rejects after `timeout` ms or when disconnected for good). */
  ready(timeout = this.options.timeout) {
    if (this.state === "connected") return Promise.resolve(this);
    if (this.state === "disconnected") {
      return Promise.reject(new TetherError(ErrorCode.DISCONNECTED, "client is disconnected"));
    }
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.off("connected", onConnected);
        this.off("disconnected", onDisconnected);
      };
      const onConnected = () => {
        done();
        resolve(this);
      };
      const onDisconnected = (ctx) => {
        done();
        reject(new TetherError(ErrorCode.DISCONNECTED, ctx.reason));
      };
      const timer = setTimeout(() => {
        done();
        reject(new TetherError(ErrorCode.TIMEOUT, "not connected in time"));
      }, timeout);
      this.on("connected", onConnected);
      this.on("disconnected", onDisconnected);
    });
  }

  /** Subscribe to `channel`; handlers: onPublication, onJoin, onLeave, onSubscribed, ... */
  subscribe(channel, handlers = {}) {
    if (typeof channel !== "string" || !channel) throw new TypeError("channel must be a string");
    if (this._subs.has(channel)) throw new Error(`already subscribed to ${channel}`);
    const sub = new Subscription(this, channel, handlers);
    this._subs.set(channel, sub);
    if (this.state === "connected") this._sendSubscribe(sub);
    return sub;
  }

  getSubscription(channel) {
    return this._subs.get(channel) ?? null;
  }

  subscriptions() {
    return [...this._subs.values()];
  }

  /**
   * Publish `data` (any JSON) to `channel`; resolves with {offset, epoch} once the hub
   * acknowledged it. Until then the publish is kept and, after a reconnect, sent again
   * with the same idempotency key, so it is neither lost nor doubled.
   */
  publish(channel, data) {
    if (this.state === "disconnected") {
      return Promise.reject(new TetherError(ErrorCode.DISCONNECTED, "client is disconnected"));
    }
    return new Promise((resolve, reject) => {
      const key = makeIdempotencyKey();
      const entry = { channel, data, key, resolve, reject, sent: false, attempt: 0, timer: null };
      this._pending.set(key, entry);
      if (this.state === "connected") this._sendPublish(entry);
    });
  }

  /** Number of publishes not yet acknowledged. */
  get pendingPublishes() {
    return this._pending.size;
  }

  presence(channel) {
    return this._call("presence", { channel });
  }

  presenceStats(channel) {
    return this._call("presence_stats", { channel });
  }

  history(channel, { limit, since, reverse } = {}) {
    const params = { channel };
    if (limit !== undefined) params.limit = limit;
    if (since) params.since = { offset: since.offset, epoch: since.epoch };
    if (reverse !== undefined) params.reverse = Boolean(reverse);
    return this._call("history", params);
  }

  /**
   * Call the app's RPC handler (its hook or backend): resolves with the reply's data,
   * rejects with a TetherError carrying the app's code (or 108 without a handler, 113
   * when it did not answer in time, 114 when it failed). Not resent after a reconnect.
   */
  rpc(method, data = null) {
    return this._call("rpc", { method, data }).then((result) => result.data);
  }

  /** Round trip to the hub. */
  ping() {
    return this._call("ping", {});
  }

  // ---------------------------------------------------------------- internals

  _log(...args) {
    if (this.options.debug) console.debug("[tether]", ...args);
  }

  _setState(state, ctx) {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    this._announceState(previous, ctx);
  }

  _announceState(previous, ctx) {
    const state = this.state;
    this._log("state", previous, "->", state, ctx);
    this._emit("state", { state, previous, transport: this._transport?.name ?? null });
    this._emit(state, ctx);
  }

  async _open() {
    const gen = ++this._gen;
    const getToken = this.options.getToken;
    if (getToken && (this._needToken || !this._token)) {
      let token;
      try {
        token = await getToken();
      } catch (error) {
        if (gen !== this._gen || this.state !== "connecting") return;
        this._emit("error", { type: "token", error });
        this._scheduleReconnect();
        return;
      }
      if (gen !== this._gen || this.state !== "connecting") return;
      if (!token) {
        this._terminal(LocalCode.UNAUTHORIZED, "unauthorized: getToken() gave no token");
        return;
      }
      this._token = token;
      this._needToken = false;
    }
    if (this._round.length === 0) this._round = this._transportRound();
    if (this._round.length === 0) {
      this._terminal(LocalCode.BAD_REQUEST, "none of the transports can run here");
      return;
    }
    this._startTransport();
  }

  // The transports to try, in order: the one that worked last (while it keeps working
  // within a few attempts), else every transport the options allow and this environment has.
  _transportRound() {
    if (this._working && this._workingFailures < 3) return [this._working];
    this._working = null;
    return this.options.transports.filter((name) => transportAvailable(name, this.options));
  }

  _startTransport() {
    const name = this._round.shift();
    const gen = this._gen;
    const live = () => gen === this._gen;
    const transport = TRANSPORT_FACTORIES[name](this);
    this._transport = transport;
    this._log("open", name, this.url);
    clearTimeout(this._openTimer);
    this._openTimer = setTimeout(() => {
      this._openTimer = null;
      if (live() && this.state === "connecting") {
        this._transportFailed(LocalCode.NO_REPLY, `${name} did not connect in time`);
      }
    }, this.options.transportTimeout);
    try {
      transport.open({
        open: () => live() && this._onOpen(),
        message: (message) => live() && this._onMessage(message),
        activity: () => {
          if (live()) this._lastReceived = Date.now();
        },
        error: (error) => live() && this._emit("error", { type: "transport", error }),
        close: (code, reason) => live() && this._onClose(code, reason),
      });
    } catch (error) {
      this._emit("error", { type: "transport", error });
      if (this._round.length > 0) this._transportFailed(1006, `cannot open ${name}: ${error.message}`);
      else this._terminal(LocalCode.BAD_REQUEST, `cannot open ${name}: ${error.message}`);
    }
  }

  // A transport failed before the hub's connect reply: try the next one of this round at
  // once; after the last, back off and start a new round (as after any drop).
  _transportFailed(code, reason) {
    const failed = this._transport?.name ?? null;
    if (this._round.length === 0) {
      if (failed !== null && failed === this._working) this._workingFailures += 1;
      this._dropTransport(code, reason, true);
      return;
    }
    this._log("transport", failed, "failed:", code, reason, "- next:", this._round[0]);
    this._cleanupTransport();
    this._emit("transport", { transport: this._round[0], previous: failed, code, reason });
    this._startTransport();
  }

  _onOpen() {
    this._lastReceived = Date.now();
    // Many joins and leaves in one push (docs/wire-protocol.md).
    const params = { presence_batches: true };
    if (this._token) params.token = this._token;
    if (this.options.name) params.name = this.options.name;
    if (this.options.info !== undefined) params.info = this.options.info;
    if (this.options.data !== undefined) params.data = this.options.data;
    this._send("connect", params, (err, result) => this._onConnectReply(err, result), true);
  }

  _onConnectReply(err, result) {
    if (err) {
      if (err.code === ErrorCode.CONNECTION_CLOSED) return;
      this._emit("error", { type: "connect", error: err });
      if (err.code === 109 && this.options.getToken) {
        this._needToken = true;
        this._dropTransport(3000, err.message, true);
      } else if (err.temporary) {
        this._dropTransport(1011, err.message, true);
      } else {
        const codes = { 101: LocalCode.UNAUTHORIZED, 103: LocalCode.UNAUTHORIZED, 109: 3000 };
        const code = codes[err.code] ?? LocalCode.BAD_REQUEST;
        this._terminal(code, err.message);
      }
      return;
    }
    clearTimeout(this._openTimer);
    this._openTimer = null;
    this._working = this._transport.name;
    this._workingFailures = 0;
    this._round = [];
    this.clientId = result.client ?? null;
    this.user = result.user ?? null;
    this.connectData = result.data;
    this._attempt = 0;
    const previous = this.state;
    this.state = "connected"; // announced once the resubscriptions are on their way
    this._scheduleRefresh(result.ttl);
    this._startPing(result.ping);
    // Commands are processed in order: subscriptions (and their recovery) first,
    // then calls made while connecting, then the publishes still unacknowledged.
    for (const sub of this._subs.values()) if (!sub.serverSide) this._sendSubscribe(sub);
    const queued = this._queued;
    this._queued = [];
    for (const call of queued) {
      clearTimeout(call.timer);
      call.run();
    }
    for (const entry of this._pending.values()) {
      if (!entry.sent) this._sendPublish(entry);
    }
    this._announceState(previous, {
      client: this.clientId,
      user: this.user,
      ttl: result.ttl,
      transport: this._working,
    });
  }

  // One message: a JSON text from a WebSocket, or an object an HTTP transport parsed.
  _onMessage(raw) {
    this._lastReceived = Date.now();
    let msg = raw;
    if (typeof raw === "string") {
      try {
        msg = JSON.parse(raw);
      } catch (error) {
        this._emit("error", { type: "message", error });
        return;
      }
    } else if (raw === null || typeof raw !== "object" || ArrayBuffer.isView(raw) || raw instanceof ArrayBuffer || (typeof Blob === "function" && raw instanceof Blob)) {
      this._emit("error", { type: "message", error: new Error("binary message ignored") });
      return;
    }
    if (msg === null || typeof msg !== "object") return;
    if (typeof msg.id === "number" && msg.id > 0) {
      const entry = this._inflight.get(msg.id);
      if (!entry) return;
      this._inflight.delete(msg.id);
      clearTimeout(entry.timer);
      if (msg.error) {
        const e = msg.error;
        entry.cb(new TetherError(e.code, e.message ?? "error", Boolean(e.temporary)), null);
      } else {
        entry.cb(null, msg.result ?? {});
      }
      return;
    }
    switch (msg.push) {
      case "pub": {
        const sub = this._subs.get(msg.channel);
        if (sub) sub._onPub(msg);
        break;
      }
      case "join":
      case "leave": {
        const sub = this._subs.get(msg.channel);
        if (sub && sub.state === "subscribed") {
          sub._emit(msg.push, { channel: msg.channel, ...(msg.info ?? {}) });
        }
        break;
      }
      case "presence": {
        const sub = this._subs.get(msg.channel);
        if (sub && sub.state === "subscribed") {
          for (const [kind, info] of msg.changes ?? []) {
            if (kind === "join" || kind === "leave") {
              sub._emit(kind, { channel: msg.channel, ...(info ?? {}) });
            }
          }
        }
        break;
      }
      case "unsubscribe": {
        const sub = this._subs.get(msg.channel);
        if (sub) {
          this._subs.delete(msg.channel);
          sub._finish(msg.code, msg.reason);
        }
        break;
      }
      case "subscribe":
        this._onServerSubscribe(msg);
        break;
      case "disconnect":
        this._disconnectPush = { code: msg.code, reason: msg.reason, reconnect: msg.reconnect };
        break;
      default:
        this._log("unknown message", msg);
    }
  }

  // A server-side subscription (a `subscribe` push, fields as a subscribe result).
  _onServerSubscribe(msg) {
    let sub = this._subs.get(msg.channel);
    if (sub && !sub.serverSide) return; // the app's own subscription carries on
    if (!sub) {
      sub = new Subscription(this, msg.channel, { serverSide: true });
      this._subs.set(msg.channel, sub);
      this._emit("subscription", { channel: msg.channel, subscription: sub });
    }
    sub._onSubscribeReply(null, msg, false);
  }

  _onClose(code, reason) {
    if (this.state === "connecting" && !this._disconnectPush && shouldReconnect(code)) {
      // Never connected on this transport: it may be the network, not the hub (a proxy
      // that refuses upgrades, buffers streams ...): the next transport gets its turn.
      this._transportFailed(code, reason);
      return;
    }
    const push = this._disconnectPush;
    let reconnect;
    if (push) {
      code = push.code ?? code;
      reason = push.reason ?? reason;
      reconnect = typeof push.reconnect === "boolean" ? push.reconnect : shouldReconnect(code);
    } else {
      reconnect = shouldReconnect(code);
    }
    this._log("closed", code, reason, reconnect ? "(reconnect)" : "(stop)");
    this._dropTransport(code, reason, reconnect);
  }

  // Forget the current transport; then reconnect (with backoff) or stop.
  _dropTransport(code, reason, reconnect) {
    this._round = [];
    if (code === 3000) {
      if (this.options.getToken) this._needToken = true;
      else reconnect = false;
    }
    const transport = this._transport?.name ?? null;
    const lost = this._cleanupTransport();
    if (this.state === "disconnected") return;
    if (reconnect) {
      this._scheduleReconnect();
      this._setState("connecting", { code, reason, transport });
      this._announceSubscribing(lost);
    } else {
      this._terminal(code, reason, lost, transport);
    }
  }

  _cleanupTransport() {
    this._gen += 1;
    this._disconnectPush = null;
    const transport = this._transport;
    this._transport = null;
    transport?.close();
    clearTimeout(this._openTimer);
    clearTimeout(this._refreshTimer);
    this._openTimer = null;
    clearInterval(this._pingTimer);
    this._refreshTimer = this._pingTimer = null;
    this._pingInFlight = false;
    const inflight = [...this._inflight.values()];
    this._inflight.clear();
    const closed = new TetherError(ErrorCode.CONNECTION_CLOSED, "connection closed", true);
    for (const entry of inflight) {
      clearTimeout(entry.timer);
      entry.cb(closed, null);
    }
    for (const entry of this._pending.values()) {
      clearTimeout(entry.timer);
      entry.timer = null;
      entry.sent = false;
    }
    return [...this._subs.values()].filter((sub) => sub._transportLost());
  }

  // `subscribing` events, once the client's own state is consistent again.
  _announceSubscribing(subs) {
    for (const sub of subs) {
      if (sub._isActive()) sub._emit("subscribing", { channel: sub.channel });
    }
  }

  _scheduleReconnect() {
    clearTimeout(this._reconnectTimer);
    const { minReconnectDelay, maxReconnectDelay } = this.options;
    const delay = backoffDelay(this._attempt++, minReconnectDelay, maxReconnectDelay);
    this._log("reconnect in", delay, "ms");
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (this.state === "connecting") this._open();
    }, delay);
  }

  _terminal(code, reason, lost = [], transport = this._transport?.name ?? null) {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._round = [];
    lost = [...lost, ...this._cleanupTransport()];
    const gone = new TetherError(ErrorCode.DISCONNECTED, reason || "disconnected");
    const queued = this._queued;
    this._queued = [];
    for (const call of queued) {
      clearTimeout(call.timer);
      call.fail(gone);
    }
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const entry of pending) entry.reject(gone);
    this.clientId = null;
    this._setState("disconnected", { code, reason, transport });
    this._announceSubscribing(lost);
  }

  // Send one command on the open transport; `cb(err, result)` runs exactly once.
  // A critical command that times out drops the transport (reconnect and recover).
  _send(method, params, cb, critical) {
    if (!this._transport?.ready) {
      const closed = new TetherError(ErrorCode.CONNECTION_CLOSED, "not connected", true);
      queueMicrotask(() => cb(closed, null));
      return;
    }
    const id = this._nextId++;
    const timer = setTimeout(() => {
      if (!this._inflight.has(id)) return;
      if (critical) {
        this._dropTransport(LocalCode.NO_REPLY, `no reply to ${method}`, true);
      } else {
        this._inflight.delete(id);
        cb(new TetherError(ErrorCode.TIMEOUT, `no reply to ${method}`, true), null);
      }
    }, this.options.timeout);
    this._inflight.set(id, { cb, critical, timer });
    this._log("send", method, params);
    this._transport.send(JSON.stringify({ id, method, params }));
  }

  // A call for the app: sent now when connected, else when the connection is up.
  _call(method, params) {
    return new Promise((resolve, reject) => {
      if (this.state === "disconnected") {
        reject(new TetherError(ErrorCode.DISCONNECTED, "client is disconnected"));
        return;
      }
      const run = () =>
        this._send(method, params, (err, result) => (err ? reject(err) : resolve(result)), false);
      if (this.state === "connected") {
        run();
        return;
      }
      const call = { run, fail: reject, timer: null };
      call.timer = setTimeout(() => {
        this._queued = this._queued.filter((c) => c !== call);
        reject(new TetherError(ErrorCode.TIMEOUT, `not connected in time for ${method}`, true));
      }, this.options.timeout);
      this._queued.push(call);
    });
  }

  _sendSubscribe(sub) {
    const params = sub._subscribeParams();
    sub._buffer = [];
    if (sub._state !== "subscribing") {
      sub._state = "subscribing";
      sub._emit("subscribing", { channel: sub.channel });
    }
    this._send(
      "subscribe",
      params,
      (err, result) => sub._onSubscribeReply(err, result, params.recover === true),
      true,
    );
  }

  // A gap in a channel's offsets: subscribe again from the last position processed.
  _resync(sub) {
    if (this.state !== "connected" || !sub._isActive()) return;
    sub._state = "subscribing";
    sub._buffer = [];
    sub._emit("subscribing", { channel: sub.channel });
    this._send("unsubscribe", { channel: sub.channel }, () => {}, false);
    this._sendSubscribe(sub);
  }

  _sendPublish(entry) {
    entry.sent = true;
    const params = { channel: entry.channel, data: entry.data, idempotency_key: entry.key };
    this._send(
      "publish",
      params,
      (err, result) => {
        if (this._pending.get(entry.key) !== entry) return;
        if (err) {
          if (err.code === ErrorCode.CONNECTION_CLOSED) {
            entry.sent = false; // sent again after the next connect
            return;
          }
          if (err.temporary) {
            entry.sent = false;
            const { minReconnectDelay, maxReconnectDelay } = this.options;
            const delay = backoffDelay(entry.attempt++, minReconnectDelay, maxReconnectDelay);
            entry.timer = setTimeout(() => {
              entry.timer = null;
              if (this.state === "connected" && this._pending.get(entry.key) === entry) {
                if (!entry.sent) this._sendPublish(entry);
              }
            }, delay);
            return;
          }
          this._pending.delete(entry.key);
          this._emit("error", { type: "publish", channel: entry.channel, error: err });
          entry.reject(err);
          return;
        }
        this._pending.delete(entry.key);
        entry.resolve({ offset: result.offset, epoch: result.epoch });
      },
      true,
    );
  }

  _scheduleRefresh(ttl) {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (typeof ttl !== "number" || !this.options.getToken) return;
    const ms = ttl * 1000;
    const delay = Math.max(0, ms - Math.min(10000, ms * 0.2));
    this._refreshTimer = setTimeout(() => this._refresh(), delay);
  }

  async _refresh() {
    this._refreshTimer = null;
    const gen = this._gen;
    let token;
    try {
      token = await this.options.getToken();
    } catch (error) {
      if (gen !== this._gen || this.state !== "connected") return;
      this._emit("error", { type: "refresh", error });
      this._retryRefresh();
      return;
    }
    if (gen !== this._gen || this.state !== "connected") return;
    if (!token) {
      this._terminal(LocalCode.UNAUTHORIZED, "unauthorized: getToken() gave no token");
      return;
    }
    this._token = token;
    this._send(
      "refresh",
      { token },
      (err, result) => {
        if (err) {
          if (err.code === ErrorCode.CONNECTION_CLOSED) return;
          this._emit("error", { type: "refresh", error: err });
          // A refused token: the hub closes with 3000 at expiry and we reconnect with a new one.
          if (err.temporary) this._retryRefresh();
          return;
        }
        this._scheduleRefresh(result.ttl);
      },
      false,
    );
  }

  _retryRefresh() {
    const { minReconnectDelay, maxReconnectDelay } = this.options;
    this._refreshTimer = setTimeout(
      () => this._refresh(),
      backoffDelay(1, minReconnectDelay, maxReconnectDelay),
    );
  }

  // The hub pings with WebSocket frames that a page cannot see, so the client checks the
  // line itself: after `ping` seconds without any message it sends a `ping` command, and a
  // missing reply drops the connection (reconnect and recover).
  _startPing(seconds) {
    clearInterval(this._pingTimer);
    this._pingTimer = null;
    if (typeof seconds !== "number" || seconds <= 0) return;
    const interval = seconds * 1000;
    this._pingTimer = setInterval(() => {
      if (this.state !== "connected" || this._pingInFlight) return;
      if (Date.now() - this._lastReceived < interval) return;
      this._pingInFlight = true;
      this._send(
        "ping",
        {},
        () => {
          this._pingInFlight = false;
        },
        true,
      );
    }, interval);
  }
}
