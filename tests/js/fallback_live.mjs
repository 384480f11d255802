// tether.js over each transport against a real hub (started by
// tests/hub/test_hub_fallbacks_js.py): falling back by itself when the WebSocket is refused
// or hangs, chat both ways, presence, and a network cut in the middle (a TCP proxy that
// drops every connection) after which nothing is lost and nothing doubled.
//
//   node --experimental-websocket fallback_live.mjs HUB_URL SCENARIO
//
// Prints one JSON line with what it saw.
import net from "node:net";

import { loadTether } from "./harness.mjs";

const { Client } = await loadTether();
const [hubUrl, scenario] = process.argv.slice(2);
const GUARD = 15000;

/** A TCP proxy whose connections can all be cut at once, as a network failure would. */
function dropProxy(target) {
  const sockets = new Set();
  let up = true;
  const server = net.createServer((downstream) => {
    if (!up) {
      downstream.destroy();
      return;
    }
    const upstream = net.connect(target.port, target.hostname);
    for (const s of [downstream, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    downstream.pipe(upstream).pipe(downstream);
    downstream.on("close", () => upstream.destroy());
    upstream.on("close", () => downstream.destroy());
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        cut() {
          up = false;
          for (const s of sockets) s.destroy();
        },
        restore() {
          up = true;
        },
        close: () => server.close(),
      }),
    ),
  );
}

/** A WebSocket that a proxy refused (the upgrade failed: close 1006 at once). */
class RefusedWebSocket {
  constructor() {
    this.readyState = 0;
    setTimeout(() => {
      this.readyState = 3;
      this.onclose?.({ code: 1006, reason: "" });
    }, 5);
  }
  send() {}
  close() {}
}

/** A WebSocket that never opens (a proxy holding the upgrade). */
class HangingWebSocket {
  constructor() {
    this.readyState = 0;
  }
  send() {}
  close() {
    this.readyState = 3;
  }
}

function until(predicate, what) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const check = () => {
      if (predicate()) resolve();
      else if (Date.now() - started > GUARD) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(check, 10);
    };
    check();
  });
}

const SCENARIOS = {
  // The WebSocket is refused: the client goes on to HTTP streaming by itself.
  refused: { transports: undefined, WebSocket: RefusedWebSocket },
  // The WebSocket hangs: after transportTimeout the next transport (long polling here).
  hanging: {
    transports: ["websocket", "long_poll"],
    WebSocket: HangingWebSocket,
    transportTimeout: 400,
  },
  http_stream: { transports: ["http_stream"] },
  long_poll: { transports: ["long_poll"] },
  websocket: { transports: ["websocket"] },
};

const chosen = SCENARIOS[scenario];
if (!chosen) throw new Error(`unknown scenario ${scenario}`);
const proxy = await dropProxy(new URL(hubUrl));
const channel = `chat:${Math.random().toString(16).slice(2)}`;
const out = { scenario, states: [], fallbacks: [], gotA: [], gotB: [], recovered: [] };

const options = { timeout: 5000, minReconnectDelay: 20, maxReconnectDelay: 200 };
for (const [key, value] of Object.entries(chosen)) if (value !== undefined) options[key] = value;
const a = new Client(`${proxy.url}/connection/websocket`, { ...options, name: "alice" });
const b = new Client(`${hubUrl}/connection/websocket`, {
  ...options,
  transports: ["long_poll"],
  name: "bob",
  WebSocket: undefined,
});
a.on("state", (ctx) => out.states.push([ctx.state, ctx.transport]));
a.on("transport", (ctx) => out.fallbacks.push([ctx.previous, ctx.transport]));

const subA = a.subscribe(channel, { onPublication: (p) => out.gotA.push(p.data.text) });
const subB = b.subscribe(channel, { onPublication: (p) => out.gotB.push(p.data.text) });
subA.on("subscribed", (ctx) => out.recovered.push(ctx.recovered));
a.connect();
b.connect();
await a.ready(GUARD);
await b.ready(GUARD);
out.transport = a.transportName;
out.bTransport = b.transportName;
await until(() => subA.state === "subscribed" && subB.state === "subscribed", "subscribed");
await a.publish(channel, { text: "a1" });
await b.publish(channel, { text: "b1" });
await until(() => out.gotA.length >= 2 && out.gotB.length >= 2, "a1 and b1 both ways");
out.presence = Object.keys((await a.presence(channel)).clients).length;

// Cut A's network: what B publishes meanwhile, and what A publishes while cut, arrive once.
proxy.cut();
await until(() => a.state === "connecting", "A to notice the cut");
const pending = a.publish(channel, { text: "a2" });
await b.publish(channel, { text: "b2" });
await b.publish(channel, { text: "b3" });
proxy.restore();
await pending;
await until(() => out.gotA.length >= 5 && out.gotB.length >= 5, "everything after the cut");
await b.publish(channel, { text: "b4" });
await until(() => out.gotA.length >= 6 && out.gotB.length >= 6, "b4");
out.transportAfter = a.transportName;
a.disconnect();
b.disconnect();
proxy.close();
console.log(JSON.stringify(out));
process.exit(0);
