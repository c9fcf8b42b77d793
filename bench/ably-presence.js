#!/usr/bin/env node
/// <reference types="node" />
/**
 * Ably dialect presence benchmark (issue #14 point 6). Starts a private redis-server and two
 * `switchboard serve` nodes sharing it; this process is the load generator, raw WebSockets
 * speaking the Ably framing (JSON, protocol v6), so no SDK cost is counted. Prints one JSON line;
 * see docs/benchmarks.md.
 *
 *   M members (default 2,000) are entered with `enterClient`-shaped PRESENCE messages of 100
 *   entries, one connection per 100 members, alternating nodes. Then R times (default 20) a new
 *   connection on alternating nodes attaches the channel: time from ATTACH to ATTACHED and to the
 *   last SYNC page, SYNC pages and bytes per member. Last, the time from one enter's ACK until a
 *   watcher on the other node gets its PRESENCE event.
 *
 * Usage: npm run bench:ably-presence -- [--members 2000] [--attaches 20] [--engine uws]
 */
import { spawn } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import {
  freePort,
  Histogram,
  parseJson,
  rawText,
  round,
  startRedis,
  track,
  waitReady,
} from './lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const SERVER_CLI = join(here, '..', 'packages/server/dist/cli/main.js');
const CHANNEL = 'room:ably-bench';
const KEY = encodeURIComponent('app.bench:secret-bench-0123456789');

const { values: o } = parseArgs({
  options: {
    members: { type: 'string', default: '2000' },
    attaches: { type: 'string', default: '20' },
    engine: { type: 'string', default: 'uws' },
  },
});
const M = Number(o.members);
const R = Number(o.attaches);

/** @param {string} redisUrl */
async function startNode(redisUrl) {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      SERVER_CLI,
      'serve',
      ...['--port', String(port), '--host', '127.0.0.1', '--log-level', 'warn'],
      ...['--engine', String(o.engine), '--redis', redisUrl, '--redis-prefix', 'apb:'],
      ...['--namespaces', JSON.stringify({ room: { presence: true } })],
      ...['--max-connections-per-ip-per-second', '1000000'],
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  track(child);
  await waitReady(port);
  return port;
}

/** One raw Ably connection: frames in order, with their sizes and arrival times. */
class Conn {
  /** @param {number} port */
  constructor(port) {
    /** @type {{f: Record<string, unknown>, bytes: number, at: number}[]} */
    this.frames = [];
    /** @type {(() => void)[]} */
    this.waiters = [];
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/?v=6&format=json&key=${KEY}`);
    this.ws.on('message', (data) => {
      const text = rawText(data);
      const f = /** @type {Record<string, unknown>} */ (parseJson(text));
      this.frames.push({ f, bytes: Buffer.byteLength(text), at: performance.now() });
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** @param {(f: Record<string, unknown>) => boolean} match */
  async frame(match, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.frames.find((x) => match(x.f));
      if (hit !== undefined) return hit;
      if (Date.now() > deadline) throw new Error('no matching frame');
      await new Promise((r) => {
        this.waiters.push(() => r(undefined));
        setTimeout(r, 50);
      });
    }
  }

  /** @param {unknown} pm */
  send(pm) {
    this.ws.send(JSON.stringify(pm));
  }
}

async function main() {
  const redisUrl = (await startRedis()).url;
  const ports = [await startNode(redisUrl), await startNode(redisUrl)];
  /** @type {Conn[]} */
  const enterers = [];
  const t0 = performance.now();
  for (let c = 0; c * 100 < M; c++) {
    const conn = new Conn(/** @type {number} */ (ports[c % 2]));
    enterers.push(conn);
    await conn.frame((f) => f['action'] === 4);
    const n = Math.min(100, M - c * 100);
    conn.send({
      action: 14,
      channel: CHANNEL,
      msgSerial: 0,
      presence: Array.from({ length: n }, (_, i) => ({
        action: 2,
        clientId: `c${c}-${i}`,
        data: JSON.stringify({ n: c * 100 + i }),
        encoding: 'json',
      })),
    });
  }
  for (const conn of enterers) await conn.frame((f) => f['action'] === 1);
  const enterMs = performance.now() - t0;

  const attached = new Histogram();
  const synced = new Histogram();
  let pages = 0;
  let syncBytes = 0;
  let listed = 0;
  for (let r = 0; r < R; r++) {
    const conn = new Conn(/** @type {number} */ (ports[r % 2]));
    await conn.frame((f) => f['action'] === 4);
    const start = performance.now();
    conn.send({ action: 10, channel: CHANNEL });
    const a = await conn.frame((f) => f['action'] === 11);
    const last = await conn.frame(
      (f) => f['action'] === 16 && /^[\w-]+:$/.test(String(f['channelSerial'])),
    );
    attached.record(a.at - start);
    synced.record(last.at - start);
    const syncs = conn.frames.filter((x) => x.f['action'] === 16);
    pages = syncs.length;
    syncBytes = syncs.reduce((s, x) => s + x.bytes, 0);
    listed = syncs.reduce((s, x) => s + /** @type {unknown[]} */ (x.f['presence']).length, 0);
    conn.ws.terminate();
  }

  // One event across nodes: enter on node 0, watcher attached on node 1.
  const watcher = new Conn(/** @type {number} */ (ports[1]));
  await watcher.frame((f) => f['action'] === 4);
  watcher.send({ action: 10, channel: CHANNEL });
  await watcher.frame((f) => f['action'] === 16 && /^[\w-]+:$/.test(String(f['channelSerial'])));
  const events = new Histogram();
  const one = /** @type {Conn} */ (enterers[0]);
  for (let i = 0; i < 50; i++) {
    const before = watcher.frames.length;
    const sent = performance.now();
    one.send({
      action: 14,
      channel: CHANNEL,
      msgSerial: 1 + i,
      presence: [{ action: 4, clientId: 'c0-0', data: `u${i}` }],
    });
    const ev = await watcher.frame(
      (f) =>
        f['action'] === 14 &&
        JSON.stringify(f['presence']).includes(`"u${i}"`) &&
        watcher.frames.length > before,
    );
    events.record(ev.at - sent);
  }

  const s = (/** @type {Histogram} */ h) => {
    const x = h.summary();
    return { p50: round(x.p50, 1), p99: round(x.p99, 1) };
  };
  process.stdout.write(
    JSON.stringify({
      scenario: 'ably-presence',
      engine: o.engine,
      members: M,
      attaches: R,
      enterAllMs: round(enterMs, 0),
      attachToAttachedMs: s(attached),
      attachToLastSyncMs: s(synced),
      syncPages: pages,
      syncMembersListed: listed,
      syncBytesPerMember: round(syncBytes / Math.max(1, listed), 1),
      updateToEventOtherNodeMs: s(events),
    }) + '\n',
  );
  for (const c of [...enterers, watcher]) c.ws.terminate();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
