// A scripted stand-in for the browser's WebSocket, so tether.js runs under node's test
// runner: the test plays the hub by answering the commands the client sends.
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, "..", "..", "src", "tether", "static", "tether.js");

/** Import src/tether/static/tether.js as an ES module (copied to .mjs: no package.json here). */
export async function loadTether() {
  const dir = mkdtempSync(join(tmpdir(), "tether-js-"));
  const target = join(dir, "tether.mjs");
  copyFileSync(source, target);
  process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
  return import(pathToFileURL(target).href);
}

/** Resolves when `predicate()` holds, checked whenever `signal` fires. */
class Waiters {
  constructor() {
    this.list = [];
  }
  wait(predicate, what, timeout = 2000) {
    const value = predicate();
    if (value) return Promise.resolve(value);
    return new Promise((resolve, reject) => {
      const entry = { predicate, resolve };
      entry.timer = setTimeout(() => {
        this.list = this.list.filter((e) => e !== entry);
        reject(new Error(`timed out waiting for ${what}`));
      }, timeout);
      this.list.push(entry);
    });
  }
  signal() {
    for (const entry of [...this.list]) {
      const value = entry.predicate();
      if (value) {
        clearTimeout(entry.timer);
        this.list = this.list.filter((e) => e !== entry);
        entry.resolve(value);
      }
    }
  }
}

export class FakeHub {
  constructor() {
    this.sockets = [];
    this.waiters = new Waiters();
    const hub = this;
    this.WebSocket = class FakeSocket {
      constructor(url, protocols) {
        this.url = url;
        this.protocols = protocols;
        this.readyState = 0;
        this.protocol = "";
        this.extensions = "";
        this.sent = [];
        this.closedWith = null;
        hub.sockets.push(this);
        hub.waiters.signal();
      }
      send(text) {
        if (this.readyState !== 1) return;
        this.sent.push(JSON.parse(text));
        hub.waiters.signal();
      }
      close(code) {
        if (this.readyState < 2) this.readyState = 2;
        this.closedWith = code ?? 1005;
      }
      // ---- the hub's side
      accept() {
        this.readyState = 1;
        this.protocol = "tether.v1";
        this.onopen?.({});
      }
      receive(message) {
        this.onmessage?.({ data: JSON.stringify(message) });
      }
      reply(command, result) {
        this.receive({ id: command.id, result });
      }
      fail(command, code, message, temporary = false) {
        this.receive({ id: command.id, error: { code, message, temporary } });
      }
      drop(code = 1006, reason = "") {
        this.readyState = 3;
        this.onclose?.({ code, reason });
      }
    };
  }

  /** The n-th socket the client opened (0-based), once it exists. */
  socket(n) {
    return this.waiters.wait(() => this.sockets[n], `socket ${n}`);
  }

  /** The next command with `method` sent on `socket` after the `skip` earlier ones. */
  command(socket, method, skip = 0) {
    return this.waiters.wait(
      () => socket.sent.filter((c) => c.method === method)[skip],
      `${method} #${skip}`,
    );
  }

  /** Accept socket n and answer its connect command; returns {socket, connect}. */
  async open(n, result = {}) {
    const socket = await this.socket(n);
    socket.accept();
    const connect = await this.command(socket, "connect");
    socket.reply(connect, { client: `c${n}`, user: "", ping: 25, ...result });
    return { socket, connect };
  }
}

/** Collects a client's or subscription's events in order. */
export function record(emitter, events) {
  const log = [];
  for (const event of events) emitter.on(event, (ctx) => log.push([event, ctx]));
  return log;
}

export const until = (emitter, event) => new Promise((resolve) => emitter.once(event, resolve));
