#!/usr/bin/env node
// A Node.js `ws` (npm ws@8) peer for tether's interop tests
// (tests/interop/test_interop_node.py). Install its dependency first:
//
//     cd tests/interop/node && npm ci
//
// Client:  node peer.js client URL SCENARIO [ARGS...]
//          runs SCENARIO against URL and prints one JSON line with the outcome.
// Server:  node peer.js server [deflate]
//          listens on 127.0.0.1, port 0, prints {"port": N}, then serves by path:
//          /echo (echo), /close/CODE/REASON (close after the first message),
//          /terminate (drop TCP after the first message), /ping (ping the client,
//          report the pong, then echo). Ends when stdin closes.
'use strict';

const { WebSocket, WebSocketServer } = require('ws');

const MiB = 1 << 20;
const SIZES = [0, 125, 126, 65535, 65536, MiB, 16 * MiB];
const MAX_PAYLOAD = 64 * MiB;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(message) {
  out({ error: String(message) });
  process.exit(1);
}

// A deterministic payload of exactly `size` bytes (ASCII when text).
function payload(kind, size) {
  const buf = Buffer.alloc(size);
  let x = size + 1;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    buf[i] = kind === 'text' ? 32 + (x % 95) : x & 0xff;
  }
  return kind === 'text' ? buf.toString('latin1') : buf;
}

function nextMessage(ws) {
  return new Promise((resolve, reject) => {
    const onMessage = (data, isBinary) => {
      cleanup();
      resolve({ data, isBinary });
    };
    const onClose = (code, reason) => {
      cleanup();
      reject(new Error(`closed ${code} ${reason}`));
    };
    const cleanup = () => {
      ws.off('message', onMessage);
      ws.off('close', onClose);
    };
    ws.on('message', onMessage);
    ws.on('close', onClose);
  });
}

function closed(ws) {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) resolve({ code: 1006, reason: '' });
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString('utf8') }));
  });
}

function opened(ws) {
  return new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('unexpected-response', (req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
}

const scenarios = {
  // Echo every size, text and binary; the peer must echo each message unchanged.
  async echo(ws) {
    let checked = 0;
    for (const kind of ['text', 'binary']) {
      for (const size of SIZES) {
        const message = payload(kind, size);
        ws.send(message, { binary: kind === 'binary' });
        const { data, isBinary } = await nextMessage(ws);
        if (isBinary !== (kind === 'binary')) fail(`${kind} ${size}: got isBinary=${isBinary}`);
        const expected = kind === 'text' ? Buffer.from(message, 'latin1') : message;
        if (!Buffer.from(data).equals(expected)) fail(`${kind} ${size}: echo differs`);
        checked++;
      }
    }
    // Non-ASCII text round trip.
    const snowman = 'naïve ☃ 𝄞 '.repeat(1000);
    ws.send(snowman);
    const { data } = await nextMessage(ws);
    if (data.toString('utf8') !== snowman) fail('non-ASCII text differs');
    checked++;
    ws.close(1000);
    const { code } = await closed(ws);
    return { checked, code };
  },

  // Ping the server, then let the server ping us.
  async ping(ws) {
    const pong = new Promise((resolve) => ws.once('pong', (data) => resolve(data.toString())));
    const gotPing = new Promise((resolve) => ws.once('ping', (data) => resolve(data.toString())));
    ws.ping('node-ping');
    const pongData = await pong;
    ws.send('ping me');
    const pingData = await gotPing; // ws answers pings by itself
    const { data } = await nextMessage(ws);
    ws.close(1000);
    await closed(ws);
    return { pong: pongData, ping: pingData, after: data.toString() };
  },

  // Close from the client with CODE and REASON.
  async close(ws, code, reason) {
    ws.send('hi');
    await nextMessage(ws);
    ws.close(Number(code), reason || '');
    return closed(ws);
  },

  // Send one message, then wait for the server to end the connection.
  async 'wait-close'(ws) {
    const done = closed(ws);
    ws.send('go');
    return done;
  },

  // Send one message, get the echo, then drop TCP without a closing handshake.
  async terminate(ws) {
    ws.send('hi');
    await nextMessage(ws);
    ws.terminate();
    return closed(ws);
  },

  // permessage-deflate with ws's defaults.
  async compress(ws) {
    const text = '{"event": "tick", "value": 12345, "tags": ["a", "b", "c"]}\n'.repeat(20000);
    const binary = payload('binary', MiB);
    for (const [message, binaryFlag] of [[text, false], [binary, true], ['small', false]]) {
      ws.send(message, { binary: binaryFlag });
      const { data, isBinary } = await nextMessage(ws);
      const expected = binaryFlag ? message : Buffer.from(message, 'utf8');
      if (isBinary !== binaryFlag || !Buffer.from(data).equals(expected)) fail('echo differs');
    }
    const extensions = ws.extensions;
    ws.close(1000);
    const { code } = await closed(ws);
    return { extensions, code };
  },
};

async function runClient(url, scenario, args) {
  const compress = scenario === 'compress';
  const ws = new WebSocket(url, { perMessageDeflate: compress, maxPayload: MAX_PAYLOAD });
  await opened(ws);
  const run = scenarios[scenario];
  if (!run) fail(`unknown scenario ${scenario}`);
  out(await run(ws, ...args));
  process.exit(0);
}

function runServer(options) {
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    maxPayload: MAX_PAYLOAD,
    perMessageDeflate: options.includes('deflate'),
  });
  wss.on('connection', (ws, req) => {
    const parts = req.url.split('/').map(decodeURIComponent);
    const route = parts[1];
    if (route === 'echo') {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    } else if (route === 'close') {
      ws.once('message', () => ws.close(Number(parts[2]), parts[3] || ''));
    } else if (route === 'terminate') {
      ws.once('message', () => ws.terminate());
    } else if (route === 'ping') {
      ws.once('pong', (data) => ws.send(`pong:${data.toString()}`));
      ws.ping('from-node');
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    } else {
      ws.close(4404, 'no such route');
    }
  });
  wss.on('listening', () => out({ port: wss.address().port }));
  // The test owns this process: end with its stdin.
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

const [mode, ...rest] = process.argv.slice(2);
setTimeout(() => fail('timed out after 120 s'), 120000).unref();
if (mode === 'client') {
  runClient(rest[0], rest[1], rest.slice(2)).catch(fail);
} else if (mode === 'server') {
  runServer(rest);
} else {
  fail('usage: node peer.js client URL SCENARIO [ARGS...] | node peer.js server');
}
