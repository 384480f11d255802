// tether.js against a real hub (started by tests/hub/test_hub_hooks_js.py): rpc() replies
// and errors, connect `data` both ways, and a server-side subscription with its first
// publication. Prints one JSON line with what it saw; node 20 needs --experimental-websocket.
import { loadTether } from "./harness.mjs";

const { Client } = await loadTether();
const url = process.argv[2];
const client = new Client(url, { data: { from: "tether.js" }, timeout: 5000 });
const out = {};
const published = new Promise((resolve) => {
  client.on("subscription", ({ channel, subscription }) => {
    out.serverSubscription = channel;
    subscription.on("publication", (ctx) => resolve(ctx.data));
  });
});
client.connect();
await client.ready();
out.connectData = client.connectData;
out.sum = await client.rpc("add", [1, 2, 3]);
try {
  await client.rpc("nope", null);
  out.error = null;
} catch (error) {
  out.error = { code: error.code, message: error.message, temporary: error.temporary };
}
out.published = await client.rpc("publish_to_me", null).then(() => published);
client.disconnect();
console.log(JSON.stringify(out));
