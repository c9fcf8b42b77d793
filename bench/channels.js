#!/usr/bin/env node
/// <reference types="node" />
/**
 * Channel listing benchmark (issue #12 point 4). Starts a private redis-server and two
 * `switchboard serve` nodes sharing it; this process is the load generator. Creates C channels
 * (default 5,000) with one stored message each through REST (pipelined batches, alternating
 * nodes), makes O of them occupied (subscribers on node 1), then times, through node 2:
 *
 *   - a complete listing (GET /v1/channels, following `next`) at 100 and 1,000 per page;
 *   - GET /v1/channels/{channel} (occupancy + last position);
 *   - Redis memory of the occupancy keys per occupied channel.
 *
 * Prints one JSON line; see docs/benchmarks.md.
 *
 * Usage: node bench/channels.js [--channels 5000] [--occupied 1000] [--reads 5]
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
  sleep,
  startRedis,
  track,
  waitReady,
} from './lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const SERVER_CLI = join(here, '..', 'packages/server/dist/cli/main.js');

const { values: o } = parseArgs({
  options: {
    channels: { type: 'string', default: '5000' },
    occupied: { type: 'string', default: '1000' },
    reads: { type: 'string', default: '5' },
    engine: { type: 'string', default: 'uws' },
  },
});
const C = Number(o.channels);
const OCC = Math.min(C, Number(o.occupied));
const READS = Number(o.reads);

/** @param {string} redisUrl */
async function startNode(redisUrl) {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      SERVER_CLI,
      'serve',
      ...['--port', String(port), '--host', '127.0.0.1', '--log-level', 'warn'],
      ...['--engine', String(o.engine), '--redis', redisUrl, '--redis-prefix', 'cb:'],
      ...['--max-connections-per-ip-per-second', '1000000', '--max-commands-per-second', '1000000'],
      ...['--command-burst', '1000000', '--max-subscriptions-per-connection', '100000'],
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  track(child);
  await waitReady(port);
  return { port, base: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/ws` };
}

/** Runs `fn` over `items`, `width` at a time. @template T @param {T[]} items @param {number} width @param {(t: T) => Promise<void>} fn */
async function pool(items, width, fn) {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(/** @type {T} */ (items[next++]));
    }),
  );
}

/** @param {string} base @param {number} limit */
async function listAll(base, limit) {
  let cursor = '';
  let n = 0;
  let pages = 0;
  for (;;) {
    const r = await fetch(`${base}/v1/channels?limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`);
    const body = /** @type {{channels: unknown[], next: string | null}} */ (
      parseJson(await r.text())
    );
    n += body.channels.length;
    pages++;
    if (body.next === null) return { n, pages };
    cursor = body.next;
  }
}

const { redis, url } = await startRedis();
const n1 = await startNode(url);
const n2 = await startNode(url);
const names = Array.from({ length: C }, (_, i) => `bench:${String(i).padStart(6, '0')}`);
const createStart = performance.now();
await pool(names, 32, async (channel) => {
  const base = Number(channel.slice(-1)) % 2 === 0 ? n1.base : n2.base;
  const r = await fetch(`${base}/v1/channels/${channel}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"data":1}',
  });
  if (r.status !== 200) throw new Error(`publish ${channel}: ${r.status}`);
});
const createMs = performance.now() - createStart;

const memBefore = Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);
const ws = new WebSocket(n1.ws, ['switchboard.v1']);
await new Promise((resolve, reject) => {
  ws.once('open', resolve);
  ws.once('error', reject);
});
let acks = 0;
ws.on('message', (d) => {
  acks += rawText(d).split('"reply"').length - 1;
});
for (let i = 0; i < OCC; i++)
  ws.send(JSON.stringify({ action: 'subscribe', channel: names[i], id: i }));
while (acks < OCC) await sleep(20);
// The shares reach Redis debounced (~100 ms).
for (;;) {
  const r = await fetch(`${n2.base}/v1/channels/${names[OCC - 1]}`);
  const body = /** @type {{occupancy: {subscribers: number}}} */ (parseJson(await r.text()));
  if (body.occupancy.subscribers === 1) break;
  await sleep(50);
}
const memAfter = Number(/used_memory:(\d+)/.exec(await redis.info('memory'))?.[1]);

/** @type {Record<string, unknown>} */
const listing = {};
for (const limit of [100, 1000]) {
  const h = new Histogram();
  let pages = 0;
  for (let i = 0; i < READS; i++) {
    const t = performance.now();
    const r = await listAll(n2.base, limit);
    h.record(performance.now() - t);
    if (r.n !== C) throw new Error(`listed ${r.n} of ${C}`);
    pages = r.pages;
  }
  listing[`perPage${limit}`] = {
    pages,
    fullListingMsP50: round(h.quantile(0.5), 1),
    fullListingMsMax: round(h.max, 1),
    perPageMsP50: round(h.quantile(0.5) / pages, 2),
  };
}
const get = new Histogram();
for (let i = 0; i < 200; i++) {
  const t = performance.now();
  await (await fetch(`${n2.base}/v1/channels/${names[(i * 37) % C]}`)).json();
  get.record(performance.now() - t);
}
ws.close();
console.log(
  JSON.stringify({
    bench: 'channels',
    engine: o.engine,
    channels: C,
    occupied: OCC,
    createMs: round(createMs, 0),
    listing,
    getChannelMs: { p50: round(get.quantile(0.5), 2), p99: round(get.quantile(0.99), 2) },
    occupancyBytesPerOccupiedChannel: round((memAfter - memBefore) / OCC, 0),
    redisKeys: await redis.dbsize(),
  }),
);
redis.disconnect();
process.exit(0);
