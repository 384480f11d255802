// Unit tests of tether.js (backoff, close codes, recovery, dedup, acknowledged publishing,
// token refresh, timeouts) against a scripted hub. Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import { FakeHub, loadTether, record, until } from "./harness.mjs";

const T = await loadTether();
const { Client, backoffDelay, shouldReconnect, resolveUrl } = T;

const FAST = { minReconnectDelay: 1, maxReconnectDelay: 4, timeout: 2000 };

function newClient(hub, options = {}) {
  return new Client("ws://hub.test/connection/websocket", {
    WebSocket: hub.WebSocket,
    ...FAST,
    ...options,
  });
}

const pub = (channel, offset, epoch = "e1", text = `m${offset}`) => ({
  push: "pub",
  channel,
  data: { text },
  offset,
  epoch,
  info: { client: "other", user: "" },
});

const texts = (log) => log.filter(([e]) => e === "publication").map(([, p]) => p.data.text);

test("backoff is full jitter: random(0, min(max, base * 2^attempt))", () => {
  const top = () => 0.999999;
  assert.equal(backoffDelay(0, 500, 20000, () => 0), 0);
  assert.equal(backoffDelay(0, 500, 20000, top), 499);
  assert.equal(backoffDelay(1, 500, 20000, top), 999);
  assert.equal(backoffDelay(3, 500, 20000, top), 3999);
  assert.equal(backoffDelay(10, 500, 20000, top), 19999);
  assert.equal(backoffDelay(1000, 500, 20000, top), 19999);
  assert.equal(backoffDelay(2, 500, 20000, () => 0.5), 1000);
  for (let attempt = 0; attempt < 12; attempt++) {
    const d = backoffDelay(attempt, 100, 3000);
    assert.ok(d >= 0 && d < Math.min(3000, 100 * 2 ** attempt), `${attempt}: ${d}`);
  }
});

test("close codes: reconnect or stop as the wire protocol says", () => {
  for (const code of [1001, 1005, 1006, 1011, 1012, 1013, 3000, 4010, 4011, 4012, 4200, 4499]) {
    assert.equal(shouldReconnect(code), true, `${code} should reconnect`);
  }
  for (const code of [1000, 1002, 1003, 1008, 1009, 4000, 4001, 4003, 4005, 4009, 4500, 4999]) {
    assert.equal(shouldReconnect(code), false, `${code} should stop`);
  }
});

test("URLs: relative to the page, http(s) becomes ws(s)", () => {
  assert.equal(
    resolveUrl("/connection/websocket", "http://h:8000/x?y"),
    "ws://h:8000/connection/websocket",
  );
  assert.equal(
    resolveUrl("/connection/websocket", "https://h/"),
    "wss://h/connection/websocket",
  );
  assert.equal(resolveUrl("wss://a/b"), "wss://a/b");
  assert.equal(resolveUrl(undefined, "http://h/"), "ws://h/connection/websocket");
});

test("connect: offers tether.v1, token and name ride in the connect command only", async () => {
  const hub = new FakeHub();
  const client = newClient(hub, { token: "secret-token", name: "alice" });
  const events = record(client, ["connecting", "connected"]);
  client.connect();
  const socket = await hub.socket(0);
  assert.deepEqual(socket.protocols, ["tether.v1"]);
  assert.ok(!socket.url.includes("secret"), socket.url);
  socket.accept();
  const connect = await hub.command(socket, "connect");
  assert.equal(socket.sent[0], connect, "connect is the first command");
  assert.deepEqual(connect.params, { presence_batches: true, token: "secret-token", name: "alice" });
  assert.ok(Number.isInteger(connect.id) && connect.id > 0);
  socket.reply(connect, { client: "c1", user: "u1", ping: 25 });
  assert.equal(client.state, "connected");
  assert.equal(client.clientId, "c1");
  assert.deepEqual(
    events.map(([e]) => e),
    ["connecting", "connected"],
  );
  client.disconnect();
  assert.equal(socket.closedWith, 1000);
});

test("recovery after a network drop: missed publications in order, none twice", async () => {
  const hub = new FakeHub();
  const client = newClient(hub);
  const sub = client.subscribe("chat:a");
  const log = record(sub, ["publication", "subscribed"]);
  client.connect();
  const { socket: s0 } = await hub.open(0);
  const first = await hub.command(s0, "subscribe");
  assert.deepEqual(first.params, { channel: "chat:a" });
  s0.reply(first, { offset: 2, epoch: "e1", recoverable: true, recovered: false, publications: [] });
  s0.receive(pub("chat:a", 2)); // already before our position: skipped
  s0.receive(pub("chat:a", 3));
  s0.receive(pub("chat:a", 4));
  s0.receive(pub("chat:a", 4)); // a duplicate
  assert.deepEqual(texts(log), ["m3", "m4"]);
  assert.equal(sub.offset, 4);

  const connecting = until(client, "connecting");
  s0.drop(1006);
  assert.deepEqual(await connecting, { code: 1006, reason: "", transport: "websocket" });
  assert.equal(sub.state, "subscribing");

  const { socket: s1 } = await hub.open(1);
  const again = await hub.command(s1, "subscribe");
  assert.deepEqual(again.params, { channel: "chat:a", recover: true, offset: 4, epoch: "e1" });
  // Pushes that overtake the reply are held back and deduplicated against it.
  s1.receive(pub("chat:a", 7));
  s1.receive(pub("chat:a", 6));
  s1.reply(again, {
    offset: 7,
    epoch: "e1",
    recoverable: true,
    recovered: true,
    positioned: true,
    publications: [pub("chat:a", 4), pub("chat:a", 5), pub("chat:a", 6)],
  });
  s1.receive(pub("chat:a", 7));
  s1.receive(pub("chat:a", 8));
  assert.deepEqual(texts(log), ["m3", "m4", "m5", "m6", "m7", "m8"]);
  const subscribed = log.filter(([e]) => e === "subscribed").map(([, c]) => c);
  assert.equal(subscribed.length, 2);
  assert.equal(subscribed[0].recovered, false);
  assert.equal(subscribed[1].recovered, true);
  assert.equal(subscribed[1].epoch, "e1");
  assert.equal(subscribed[1].offset, 7);
  client.disconnect();
});

test("failed recovery (new epoch) starts from the hub's position", async () => {
  const hub = new FakeHub();
  const client = newClient(hub);
  const sub = client.subscribe("chat:a", { since: { offset: 10, epoch: "old" } });
  const log = record(sub, ["publication", "subscribed"]);
  client.connect();
  const { socket } = await hub.open(0);
  const cmd = await hub.command(socket, "subscribe");
  assert.deepEqual(cmd.params, { channel: "chat:a", recover: true, offset: 10, epoch: "old" });
  socket.reply(cmd, { offset: 3, epoch: "new", recoverable: true, recovered: false });
  socket.receive(pub("chat:a", 4, "new"));
  assert.equal(log[0][1].recovered, false);
  assert.equal(log[0][1].wasRecovering, true);
  assert.deepEqual(texts(log), ["m4"]);
  assert.equal(sub.epoch, "new");
  client.disconnect();
});

test("a gap in offsets resubscribes from the last position", async () => {
  const hub = new FakeHub();
  const client = newClient(hub);
  const sub = client.subscribe("chat:a");
  const log = record(sub, ["publication"]);
  client.connect();
  const { socket } = await hub.open(0);
  socket.reply(await hub.command(socket, "subscribe"), { offset: 1, epoch: "e1" });
  socket.receive(pub("chat:a", 3)); // 2 is missing
  assert.equal((await hub.command(socket, "unsubscribe")).params.channel, "chat:a");
  const resub = await hub.command(socket, "subscribe", 1);
  assert.deepEqual(resub.params, { channel: "chat:a", recover: true, offset: 1, epoch: "e1" });
  socket.reply(resub, {
    offset: 3,
    epoch: "e1",
    recovered: true,
    publications: [pub("chat:a", 2), pub("chat:a", 3)],
  });
  assert.deepEqual(texts(log), ["m2", "m3"]);
  client.disconnect();
});

test("unacknowledged publishes are resent after reconnect with the same key", async () => {
  const hub = new FakeHub();
  const client = newClient(hub);
  client.subscribe("chat:a");
  client.connect();
  const { socket: s0 } = await hub.open(0);
  s0.reply(await hub.command(s0, "subscribe"), { offset: 0, epoch: "e1" });
  const acked = client.publish("chat:a", { text: "one" });
  const lost = client.publish("chat:a", { text: "two" });
  const p1 = await hub.command(s0, "publish", 0);
  const p2 = await hub.command(s0, "publish", 1);
  assert.ok(p1.params.idempotency_key.length <= 64);
  assert.notEqual(p1.params.idempotency_key, p2.params.idempotency_key);
  s0.reply(p1, { offset: 1, epoch: "e1" });
  assert.deepEqual(await acked, { offset: 1, epoch: "e1" });
  s0.drop(1006); // the reply to "two" never came
  const queuedWhileDown = client.publish("chat:a", { text: "three" });
  assert.equal(client.pendingPublishes, 2);

  const { socket: s1 } = await hub.open(1);
  const sub = await hub.command(s1, "subscribe");
  const r2 = await hub.command(s1, "publish", 0);
  const r3 = await hub.command(s1, "publish", 1);
  const order = s1.sent.map((c) => c.method);
  assert.deepEqual(order, ["connect", "subscribe", "publish", "publish"]);
  assert.ok(s1.sent.indexOf(sub) < s1.sent.indexOf(r2), "subscribe (recovery) goes first");
  assert.equal(r2.params.idempotency_key, p2.params.idempotency_key);
  assert.deepEqual(r2.params.data, { text: "two" });
  assert.deepEqual(r3.params.data, { text: "three" });
  s1.reply(r2, { offset: 2, epoch: "e1" });
  s1.reply(r3, { offset: 3, epoch: "e1" });
  assert.deepEqual(await lost, { offset: 2, epoch: "e1" });
  assert.deepEqual(await queuedWhileDown, { offset: 3, epoch: "e1" });
  assert.equal(client.pendingPublishes, 0);
  client.disconnect();
});

test("temporary publish errors retry with the same key; permanent ones reject", async () => {
  const hub = new FakeHub();
  const client = newClient(hub);
  client.connect();
  const { socket } = await hub.open(0);
  const retried = client.publish("chat:a", "x");
  const first = await hub.command(socket, "publish", 0);
  socket.fail(first, 112, "broker unavailable", true);
  const second = await hub.command(socket, "publish", 1);
  assert.equal(second.params.idempotency_key, first.params.idempotency_key);
  socket.reply(second, { offset: 9, epoch: "e" });
  assert.deepEqual(await retried, { offset: 9, epoch: "e" });

  const refused = client.publish("chat:a", "y");
  socket.fail(await hub.command(socket, "publish", 2), 103, "permission denied");
  await assert.rejects(refused, (err) => err.code === 103 && err.message === "permission denied");
  client.disconnect();
});

test("stop codes end the client: no reconnect, pending publishes rejected", async () => {
  for (const code of [1000, 4003, 4005]) {
    const hub = new FakeHub();
    const client = newClient(hub);
    client.connect();
    const { socket } = await hub.open(0);
    const pending = client.publish("chat:a", "x");
    const disconnected = until(client, "disconnected");
    socket.drop(code, "bye");
    assert.deepEqual(await disconnected, { code, reason: "bye", transport: "websocket" });
    await assert.rejects(pending, (err) => err.code === "disconnected");
    assert.equal(client.state, "disconnected");
    assert.equal(client._reconnectTimer, null);
    assert.equal(hub.sockets.length, 1);
  }
});

test("reconnect codes reconnect; a disconnect push decides with its flag", async () => {
  const hub = new FakeHub();
  const client = newClient(hub);
  client.connect();
  const { socket: s0 } = await hub.open(0);
  s0.drop(4010, "slow consumer");
  const { socket: s1 } = await hub.open(1);
  assert.equal(client.state, "connected");
  const disconnected = until(client, "disconnected");
  s1.receive({ push: "disconnect", code: 4200, reason: "go away", reconnect: false });
  s1.drop(4200, "go away");
  assert.deepEqual(await disconnected, { code: 4200, reason: "go away", transport: "websocket" });
  assert.equal(hub.sockets.length, 2);
});

test("token: ttl triggers getToken() and refresh; close 3000 reconnects with a new token", async () => {
  const hub = new FakeHub();
  let n = 0;
  const client = newClient(hub, { getToken: async () => `token-${++n}` });
  client.connect();
  const s0 = await hub.socket(0);
  s0.accept();
  const connect = await hub.command(s0, "connect");
  assert.equal(connect.params.token, "token-1");
  s0.reply(connect, { client: "c", user: "u", ttl: 0.05, ping: 25 });
  const refresh = await hub.command(s0, "refresh");
  assert.deepEqual(refresh.params, { token: "token-2" });
  s0.reply(refresh, {}); // no ttl: no further refresh
  s0.drop(3000, "token expired");
  const s1 = await hub.socket(1);
  s1.accept();
  assert.equal((await hub.command(s1, "connect")).params.token, "token-3");
  client.disconnect();
});

test("close 3000 without getToken stops", async () => {
  const hub = new FakeHub();
  const client = newClient(hub, { token: "t" });
  client.connect();
  const { socket } = await hub.open(0);
  const disconnected = until(client, "disconnected");
  socket.drop(3000, "token expired");
  assert.equal((await disconnected).code, 3000);
});

test("command timeouts: calls reject, a missing subscribe reply reconnects", async () => {
  const hub = new FakeHub();
  const client = newClient(hub, { timeout: 30 });
  client.subscribe("chat:a");
  client.connect();
  const { socket: s0 } = await hub.open(0);
  await hub.command(s0, "subscribe"); // never answered
  const connecting = until(client, "connecting");
  assert.equal((await connecting).code, 4012);
  const { socket: s1 } = await hub.open(1);
  s1.reply(await hub.command(s1, "subscribe"), { offset: 0, epoch: "e" });
  const presence = client.presence("chat:a");
  await hub.command(s1, "presence");
  await assert.rejects(presence, (err) => err.code === "timeout");
  assert.equal(client.state, "connected");
  client.disconnect();
});

test("calls made while connecting wait for the connection", async () => {
  const hub = new FakeHub();
  const client = newClient(hub);
  client.connect();
  const history = client.history("chat:a", { limit: 5, since: { offset: 1, epoch: "e" } });
  const { socket } = await hub.open(0);
  const cmd = await hub.command(socket, "history");
  assert.deepEqual(cmd.params, { channel: "chat:a", limit: 5, since: { offset: 1, epoch: "e" } });
  socket.reply(cmd, { publications: [], offset: 1, epoch: "e" });
  assert.deepEqual(await history, { publications: [], offset: 1, epoch: "e" });
  client.disconnect();
  await assert.rejects(client.presence("chat:a"), (err) => err.code === "disconnected");
});

test("join/leave, server unsubscribe and permanent subscribe errors", async () => {
  const hub = new FakeHub();
  const client = newClient(hub);
  const a = client.subscribe("chat:a");
  const b = client.subscribe("chat:b");
  const logA = record(a, ["join", "leave", "unsubscribed"]);
  const logB = record(b, ["unsubscribed", "error"]);
  client.connect();
  const { socket } = await hub.open(0);
  socket.reply(await hub.command(socket, "subscribe", 0), { offset: 0, epoch: "e" });
  socket.fail(await hub.command(socket, "subscribe", 1), 103, "permission denied");
  assert.equal(b.state, "unsubscribed");
  assert.deepEqual(logB.map(([e]) => e), ["error", "unsubscribed"]);
  assert.equal(logB[1][1].code, 103);
  assert.equal(client.getSubscription("chat:b"), null);
  socket.receive({ push: "join", channel: "chat:a", info: { client: "x", user: "bob" } });
  socket.receive({ push: "leave", channel: "chat:a", info: { client: "x", user: "bob" } });
  socket.receive({ push: "unsubscribe", channel: "chat:a", code: 2000, reason: "kicked" });
  assert.deepEqual(logA, [
    ["join", { channel: "chat:a", client: "x", user: "bob" }],
    ["leave", { channel: "chat:a", client: "x", user: "bob" }],
    ["unsubscribed", { channel: "chat:a", code: 2000, reason: "kicked" }],
  ]);
  assert.throws(() => {
    client.subscribe("chat:x");
    client.subscribe("chat:x");
  }, /already subscribed/);
  client.disconnect();
});

test("a presence push is its joins and leaves, in order; connect asks for them", async () => {
  const hub = new FakeHub();
  const client = newClient(hub);
  const a = client.subscribe("chat:a");
  const log = record(a, ["join", "leave"]);
  client.connect();
  const { socket } = await hub.open(0);
  assert.equal(socket.sent[0].params.presence_batches, true);
  socket.reply(await hub.command(socket, "subscribe", 0), { offset: 0, epoch: "e" });
  socket.receive({
    push: "presence",
    channel: "chat:a",
    changes: [
      ["join", { client: "x", user: "bob" }],
      ["join", { client: "y", user: "eve" }],
      ["leave", { client: "x", user: "bob" }],
      ["launch", { client: "z", user: "mallory" }],
    ],
  });
  assert.deepEqual(log, [
    ["join", { channel: "chat:a", client: "x", user: "bob" }],
    ["join", { channel: "chat:a", client: "y", user: "eve" }],
    ["leave", { channel: "chat:a", client: "x", user: "bob" }],
  ]);
  client.disconnect();
});

test("unsubscribe sends the command and ignores later pushes", async () => {
  const hub = new FakeHub();
  const client = newClient(hub);
  const sub = client.subscribe("chat:a");
  const log = record(sub, ["publication", "unsubscribed"]);
  client.connect();
  const { socket } = await hub.open(0);
  socket.reply(await hub.command(socket, "subscribe"), { offset: 0, epoch: "e" });
  sub.unsubscribe();
  assert.deepEqual((await hub.command(socket, "unsubscribe")).params, { channel: "chat:a" });
  socket.receive(pub("chat:a", 1));
  assert.deepEqual(
    log.map(([e]) => e),
    ["unsubscribed"],
  );
  const again = client.subscribe("chat:a");
  assert.deepEqual((await hub.command(socket, "subscribe", 1)).params, { channel: "chat:a" });
  assert.equal(again.state, "subscribing");
  client.disconnect();
});

test("listeners may call the client from any event without breaking its state", async () => {
  const hub = new FakeHub();
  const client = newClient(hub);
  const sub = client.subscribe("chat:a");
  const calls = [];
  client.on("connected", () => {
    if (!client.getSubscription("chat:b")) client.subscribe("chat:b");
  });
  sub.on("subscribing", () => {
    calls.push(client.state);
    client.presence("chat:a").catch((err) => calls.push(err.code));
  });
  client.connect();
  const { socket: s0 } = await hub.open(0);
  await hub.command(s0, "subscribe", 1);
  const subscribes = s0.sent.filter((c) => c.method === "subscribe").map((c) => c.params.channel);
  assert.deepEqual(subscribes, ["chat:a", "chat:b"], "each channel subscribed once");
  s0.reply(s0.sent[1], { offset: 0, epoch: "e" });
  s0.reply(s0.sent[2], { offset: 0, epoch: "e" });
  s0.drop(1006);
  assert.deepEqual(calls, ["connecting"]);
  const { socket: s1 } = await hub.open(1);
  const presence = await hub.command(s1, "presence"); // the call waited for the connection
  assert.deepEqual(presence.params, { channel: "chat:a" });
  const again = s1.sent.filter((c) => c.method === "subscribe").map((c) => c.params.channel);
  assert.deepEqual(again, ["chat:a", "chat:b"]);
  client.disconnect();
  assert.equal(client.state, "disconnected");
});

test("rpc resolves with the reply's data and rejects with the app's code", async () => {
  const hub = new FakeHub();
  const client = newClient(hub, { data: { tab: 1 } });
  client.connect();
  const { socket, connect } = await hub.open(0, { data: { plan: "gold" } });
  assert.deepEqual(connect.params.data, { tab: 1 });
  assert.deepEqual(client.connectData, { plan: "gold" });
  const sum = client.rpc("add", [1, 2]);
  const call = await hub.command(socket, "rpc");
  assert.deepEqual(call.params, { method: "add", data: [1, 2] });
  socket.reply(call, { data: 3 });
  assert.equal(await sum, 3);
  const missing = client.rpc("nope");
  socket.fail(await hub.command(socket, "rpc", 1), 1404, "no method nope");
  await assert.rejects(missing, (e) => e.code === 1404 && e.temporary === false);
  client.disconnect();
});

test("server-side subscriptions: announced, delivered, and left to the hub on reconnect", async () => {
  const hub = new FakeHub();
  const client = newClient(hub);
  const seen = [];
  client.on("subscription", ({ channel, subscription }) => {
    seen.push(channel);
    subscription.on("publication", (p) => seen.push(p.data.text));
  });
  client.connect();
  const first = await hub.open(0);
  first.socket.receive({ push: "subscribe", channel: "inbox", offset: 4, epoch: "e1" });
  first.socket.receive(pub("inbox", 5));
  assert.deepEqual(seen, ["inbox", "m5"]);
  const sub = client.getSubscription("inbox");
  assert.equal(sub.serverSide, true);
  assert.equal(sub.state, "subscribed");
  first.socket.drop(1012);
  const second = await hub.open(1);
  // The connect reply was handled (synchronously) without a subscribe for it: the hub
  // makes it again, with another push.
  assert.equal(second.socket.sent.filter((c) => c.method === "subscribe").length, 0);
  second.socket.receive({ push: "subscribe", channel: "inbox", offset: 6, epoch: "e1" });
  assert.equal(client.getSubscription("inbox"), sub);
  assert.equal(sub.state, "subscribed");
  client.disconnect();
});
