// A TypeScript consumer of the packed tether-client package: it must type-check cleanly.
// The `@ts-expect-error` lines are misuses the declarations must refuse: if the types
// went loose (e.g. `any`), tsc would fail on the unused directive.
import {
  Client,
  ErrorCode,
  LocalCode,
  PROTOCOL,
  TRANSPORTS,
  TetherError,
  backoffDelay,
  endpointUrl,
  makeIdempotencyKey,
  resolveUrl,
  shouldReconnect,
  type ClientInfo,
  type PublicationContext,
  type Subscription,
  type TransportName,
  type WebSocketConstructor,
} from "tether-client";

// No DOM or Node typings in this project: the declarations must not need them.
declare const console: { log(...args: unknown[]): void };

interface ChatMessage {
  text: string;
  name: string;
  ts: number;
}

const protocol: "tether.v1" = PROTOCOL;
const client = new Client("/connection/websocket", {
  name: "alice",
  info: { name: "alice" },
  getToken: async () => "a.jwt.token",
  minReconnectDelay: 100,
  timeout: 5000,
});

client.on("connected", ({ client: id, user, ttl }) => {
  const who: string | null = user;
  const seconds: number | undefined = ttl;
  console.log(id, who, seconds, protocol);
});
client.on("connecting", ({ code, reason }) => console.log(code.toFixed(0), reason.trim()));
client.on("state", ({ state, previous }) => console.log(state, previous)).once("disconnected", () => {});
client.on("error", ({ type, error }) => {
  if (type === "publish" && error instanceof TetherError) console.log(error.code, error.temporary);
});

const sub: Subscription<ChatMessage> = client.subscribe<ChatMessage>("chat:lobby", {
  onPublication: (pub: PublicationContext<ChatMessage>) => {
    const text: string = pub.data.text;
    const sender: ClientInfo | undefined = pub.info;
    console.log(text, sender?.user, pub.offset, pub.epoch);
  },
  onJoin: ({ client: id, user, info }) => console.log("join", id, user, info),
  onSubscribed: ({ recovered, wasRecovering, epoch }) => {
    if (!recovered && wasRecovering) console.log("lost history, new epoch", epoch);
  },
  onUnsubscribed: ({ code, reason }) => console.log(code, reason),
  since: { offset: 3, epoch: "abc" },
});
client.connect();

async function main(): Promise<void> {
  await client.ready(1000);
  const { offset, epoch } = await sub.publish({ text: "hi", name: "alice", ts: Date.now() });
  console.log(offset, epoch);
  const history = await sub.history({ limit: 10, reverse: true, since: { offset: 1, epoch: "e" } });
  for (const pub of history.publications) console.log(pub.data.name, pub.offset, pub.info?.client);
  const presence = await client.presence("chat:lobby");
  for (const entry of Object.values(presence.clients)) console.log(entry.client, entry.user);
  const stats = await sub.presenceStats();
  console.log(stats.num_clients + stats.num_users, client.pendingPublishes, client.clientId);
  await client.ping();
  const total: number = await client.rpc<number>("sum", [1, 2]);
  console.log(total, client.connectData, sub.serverSide, sub.data);
  client.on("subscription", ({ channel, subscription }) => console.log(channel, subscription.state));
  console.log(client.transport?.extensions, client.state === "connected", sub.state);
  client.on("transport", ({ transport, previous, code }) => console.log(transport, previous, code));
  client.on("state", ({ state, transport }) => console.log(state, transport));
  client.on("connected", ({ transport }) => console.log(transport === "long_poll"));
  const name: TransportName | null = client.transportName;
  console.log(name, client.transport?.name, TRANSPORTS.length, endpointUrl(client.url, "poll"));
  sub.unsubscribe();
  client.disconnect();
}

const codes: string[] = [ErrorCode.TIMEOUT, ErrorCode.CONNECTION_CLOSED, ErrorCode.DISCONNECTED];
const stop: boolean = shouldReconnect(LocalCode.NO_REPLY);
const delay: number = backoffDelay(3, 500, 20000, Math.random);
const url: string = resolveUrl("/connection/websocket", "https://example.org/");
const key: string = makeIdempotencyKey();
console.log(codes, stop, delay, url, key, main);

// A Node project passes a WebSocket class of its own (structurally typed, no DOM needed).
declare const NodeWebSocket: WebSocketConstructor;
new Client("ws://127.0.0.1:8000/connection/websocket", { WebSocket: NodeWebSocket });
// Fallbacks: order or force the transports (the HTTP ones use Node's own fetch).
new Client("/connection/websocket", { transports: ["http_stream", "long_poll"], transportTimeout: 3000 });
// @ts-expect-error: not a transport
new Client("/connection/websocket", { transports: ["carrier_pigeon"] });

// @ts-expect-error: the channel must be a string
client.subscribe(42);
// @ts-expect-error: not an event of the client
client.on("publication", () => {});
// @ts-expect-error: the connected context has no `channel`
client.on("connected", ({ channel }) => console.log(channel));
// @ts-expect-error: timeout is a number of milliseconds
new Client("/connection/websocket", { timeout: "10s" });
// @ts-expect-error: publication data is typed by the subscription
sub.on("publication", ({ data }) => data.missing);
// @ts-expect-error: an RPC method is a string
client.rpc(7);
// @ts-expect-error: the state is read-only
client.state = "connected";
