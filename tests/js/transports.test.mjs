// Unit tests of tether.js's HTTP transports against a scripted `fetch` (docs/wire-protocol.md,
// "HTTP fallbacks"): session frames, poll acks and repeats, one upstream POST at a time,
// refusals as close codes, and the end of a stream. Run: node --test tests/js/
import assert from "node:assert/strict";
import { test } from "node:test";

import { loadTether, until } from "./harness.mjs";

const T = await loadTether();
const { Client, endpointUrl, TRANSPORTS } = T;

const FAST = { minReconnectDelay: 1, maxReconnectDelay: 4, timeout: 2000, WebSocket: undefined };

/** A scripted `fetch`: each request waits until the test answers it. */
class FakeFetch {
  constructor() {
    this.requests = [];
    this.waiters = [];
    this.fetch = (url, init = {}) =>
      new Promise((resolve, reject) => {
        const request = { url, init, body: init.body, resolve, reject };
        init.signal?.addEventListener("abort", () => reject(abortError()));
        this.requests.push(request);
        for (const w of [...this.waiters]) w();
      });
  }
  /** The n-th request to `path` (0-based), once it was made. */
  next(path, n = 0) {
    const find = () => this.requests.filter((r) => new URL(r.url).pathname === path)[n];
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no request ${n} to ${path}`)), 2000);
      const check = () => {
        const found = find();
        if (found) {
          clearTimeout(timer);
          this.waiters = this.waiters.filter((w) => w !== check);
          resolve(found);
        }
      };
      this.waiters.push(check);
      check();
    });
  }
}

function abortError() {
  const error = new Error("aborted");
  error.name = "AbortError";
  return error;
}

const json = (body, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

/** A streamed response whose chunks the test pushes: {response, push(text), end()}. */
function streamed() {
  let controller;
  const body = new ReadableStream({ start: (c) => (controller = c) });
  const encoder = new TextEncoder();
  return {
    response: new Response(body, { status: 200 }),
    push: (text) => controller.enqueue(encoder.encode(text)),
    end: () => controller.close(),
  };
}

function pollClient(fake, options = {}) {
  return new Client("http://hub.test/connection/websocket", {
    ...FAST,
    fetch: fake.fetch,
    transports: ["long_poll"],
    ...options,
  });
}

test("endpoints sit beside the WebSocket path; the default order", () => {
  assert.equal(endpointUrl("wss://h/x/connection/websocket", "poll"), "https://h/x/connection/poll");
  assert.equal(endpointUrl("ws://h:8/connection/websocket", "send"), "http://h:8/connection/send");
  assert.deepEqual([...TRANSPORTS], ["websocket", "http_stream", "sse", "long_poll"]);
  assert.throws(() => new Client("/c/websocket", { transports: ["pigeon"] }), /unknown transport/);
  assert.throws(() => new Client("/c/websocket", { transports: [] }), TypeError);
});

test("long polling: connect, ack, repeats dropped, commands posted one at a time in order", async () => {
  const fake = new FakeFetch();
  const client = pollClient(fake, { name: "alice" });
  const got = [];
  const sub = client.subscribe("chat:a", { onPublication: (p) => got.push(p.data) });
  client.connect();
  const first = await fake.next("/connection/poll", 0);
  const connect = JSON.parse(first.body).connect;
  assert.equal(connect.method, "connect");
  assert.deepEqual(connect.params, { presence_batches: true, name: "alice" });
  first.resolve(
    json({ session: "n1.key", seq: 1, messages: [{ id: connect.id, result: { client: "c1", user: "" } }] }),
  );
  await until(client, "connected");
  assert.equal(client.transportName, "long_poll");

  // The subscribe goes upstream; a second command waits for the first POST's answer.
  const send0 = await fake.next("/connection/send", 0);
  const body0 = JSON.parse(send0.body);
  assert.equal(body0.session, "n1.key");
  assert.deepEqual(body0.commands.map((c) => c.method), ["subscribe"]);
  const publishing = client.publish("chat:a", { text: "mine" });
  const ping = client.ping();
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(fake.requests.filter((r) => r.url.endsWith("/send")).length, 1, "one at a time");
  send0.resolve(json({}));
  const send1 = await fake.next("/connection/send", 1);
  assert.deepEqual(JSON.parse(send1.body).commands.map((c) => c.method), ["publish", "ping"]);
  send1.resolve(json({}));

  // The next poll acks frame 1; its answer repeats frame 2 in a later answer (a lost answer).
  const poll1 = await fake.next("/connection/poll", 1);
  assert.deepEqual(JSON.parse(poll1.body), { session: "n1.key", ack: 1 });
  const [subscribe] = body0.commands;
  const [publish, pingCommand] = JSON.parse(send1.body).commands;
  const pub = (offset) => ({ push: "pub", channel: "chat:a", data: offset, offset, epoch: "e" });
  poll1.resolve(
    json({
      session: "n1.key",
      seq: 2,
      messages: [{ id: subscribe.id, result: { offset: 0, epoch: "e", recoverable: true } }, pub(1)],
    }),
  );
  const poll2 = await fake.next("/connection/poll", 2);
  assert.deepEqual(JSON.parse(poll2.body), { session: "n1.key", ack: 3 });
  poll2.resolve(
    json({
      session: "n1.key",
      seq: 3,
      messages: [
        pub(1), // seq 3 again: dropped
        { id: publish.id, result: { offset: 2, epoch: "e" } },
        pub(2),
        { id: pingCommand.id, result: {} },
      ],
    }),
  );
  assert.deepEqual(await publishing, { offset: 2, epoch: "e" });
  await ping;
  const poll3 = await fake.next("/connection/poll", 3);
  assert.deepEqual(JSON.parse(poll3.body), { session: "n1.key", ack: 6 });
  assert.deepEqual(got, [1, 2]);
  assert.equal(sub.offset, 2);
  client.disconnect();
  assert.ok(poll3.init.signal.aborted, "disconnect aborts the waiting poll");
});

test("refusals: 404 (session gone) reconnects, 403 stops, 401 code 109 asks for a new token", async () => {
  const fake = new FakeFetch();
  let tokens = 0;
  const client = pollClient(fake, { getToken: async () => `t${++tokens}` });
  client.connect();
  const first = await fake.next("/connection/poll", 0);
  const connect = JSON.parse(first.body).connect;
  assert.equal(connect.params.token, "t1");
  first.resolve(json({ session: "n1.k", seq: 1, messages: [{ id: connect.id, result: {} }] }));
  await until(client, "connected");

  const lost = until(client, "connecting");
  (await fake.next("/connection/poll", 1)).resolve(
    json({ error: { code: 125, message: "session not found" } }, 404),
  );
  const ctx = await lost;
  assert.equal(ctx.code, 1006);
  assert.match(ctx.reason, /404.*session not found/);

  // The reconnect: the token expired meanwhile (401, code 109): a new token, then again.
  const again = await fake.next("/connection/poll", 2);
  assert.equal(JSON.parse(again.body).connect.params.token, "t1");
  again.resolve(json({ error: { code: 109, message: "token expired" } }, 401));
  const fresh = await fake.next("/connection/poll", 3);
  assert.equal(JSON.parse(fresh.body).connect.params.token, "t2");

  const stopped = until(client, "disconnected");
  fresh.resolve(json({ error: { code: 103, message: "permission denied" } }, 403));
  const end = await stopped;
  assert.equal(end.code, 4003);
  assert.equal(client.state, "disconnected");
});

test("HTTP streaming: session frame, frames in order, the end of the stream", async () => {
  const fake = new FakeFetch();
  const client = new Client("http://hub.test/connection/websocket", {
    ...FAST,
    fetch: fake.fetch,
    transports: ["http_stream"],
  });
  client.connect();
  const request = await fake.next("/connection/stream", 0);
  const connect = JSON.parse(request.body);
  assert.equal(connect.method, "connect");
  const stream = streamed();
  request.resolve(stream.response);
  // Split lines and heartbeats (empty lines) on the way.
  stream.push('{"session":"n2.k","seq":0,"transport":"http_stream","ping":25}\n\n{"id":');
  stream.push(`${connect.id},"result":{"client":"c2","user":""}}\n`);
  const connected = await until(client, "connected");
  assert.equal(connected.transport, "http_stream");
  assert.equal(client.clientId, "c2");

  // A stream that ends without a disconnect push: the network (1006), reconnect.
  const lost = until(client, "connecting");
  stream.end();
  assert.deepEqual(await lost, { code: 1006, reason: "stream ended", transport: "http_stream" });

  // The next session ends with a disconnect push that says not to reconnect.
  const request2 = await fake.next("/connection/stream", 1);
  const connect2 = JSON.parse(request2.body);
  const stream2 = streamed();
  request2.resolve(stream2.response);
  stream2.push(`{"session":"n2.k2","seq":0}\n{"id":${connect2.id},"result":{}}\n`);
  await until(client, "connected");
  const stopped = until(client, "disconnected");
  stream2.push('{"push":"disconnect","code":4005,"reason":"kicked","reconnect":false}\n');
  stream2.end();
  const end = await stopped;
  assert.equal(end.code, 4005);
  assert.equal(end.reason, "kicked");
});

test("fallback: a refused WebSocket makes way for the next transport, kept for reconnects", async () => {
  const fake = new FakeFetch();
  let sockets = 0;
  class Refused {
    constructor() {
      sockets += 1;
      this.readyState = 0;
      setTimeout(() => this.onclose?.({ code: 1006, reason: "" }), 1);
    }
    close() {}
  }
  const client = new Client("http://hub.test/connection/websocket", {
    ...FAST,
    WebSocket: Refused,
    fetch: fake.fetch,
    transports: ["websocket", "long_poll"],
  });
  const fallbacks = [];
  client.on("transport", (ctx) => fallbacks.push([ctx.previous, ctx.transport]));
  client.connect();
  const first = await fake.next("/connection/poll", 0);
  const connect = JSON.parse(first.body).connect;
  first.resolve(json({ session: "n.k", seq: 1, messages: [{ id: connect.id, result: {} }] }));
  await until(client, "connected");
  assert.deepEqual(fallbacks, [["websocket", "long_poll"]]);
  assert.equal(sockets, 1);

  // Lost: the reconnect goes straight to long polling, no WebSocket first.
  (await fake.next("/connection/poll", 1)).resolve(json({ error: { code: 125 } }, 404));
  const again = await fake.next("/connection/poll", 2);
  assert.ok(JSON.parse(again.body).connect);
  assert.equal(sockets, 1);
  client.disconnect();
});
