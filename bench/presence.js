#!/usr/bin/env node
/// <reference types="node" />
/**
 * Presence benchmark (issue #12), scenarios (f) and (g). Starts a private redis-server and two
 * `switchboard serve` nodes sharing it; this process is the load generator (raw WebSocket
 * clients, `ws`), so no SDK cost is counted. Prints one JSON line; see docs/benchmarks.md.
 *
 *   f  N members (default 10,000) enter one channel, one connection each, half on each node,
 *      while W presence subscribers (half on each node) watch: time from the first enter until
 *      every subscriber saw every enter; bytes on the wire per event (frames received by one
 *      subscriber / N); Redis memory per member; node RSS per member (sockets included).
 *   g  get() latency: reading every member page by page (1,000 per page, the SDK's page) over
 *      WebSocket, repeated, at 1,000 and at N members.
 *
 * Usage: npm run bench:presence -- [--members 10000] [--watchers 4] [--reads 20]
 */
import { spawn } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import {
  freePort,
  parseJson,
  rawText,
  round,
  rssKiB,
  sleep,
  startRedis,
  track,
  waitReady,
} from './lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const SERVER_CLI = join(here, '..', 'packages/server/dist/cli/main.js');
const CHANNEL = 'room:bench';

const { values: o } = parseArgs({
  options: {
    members: { type: 'string', default: '10000' },
    watchers: { type: 'string', default: '4' },
    reads: { type: 'string', default: '20' },
    engine: { type: 'string', default: 'uws' },
  },
});
const N = Number(o.members);
const W = Number(o.watchers);
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
      ...['--engine', String(o.engine), '--redis', redisUrl, '--redis-prefix', 'pb:'],
      ...['--namespaces', JSON.stringify({ room: { presence: true } })],
      ...['--max-connections-per-ip-per-second', '1000000', '--max-connections', '100000'],
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  track(child);
  await waitReady(port);
  return { port, pid: /** @type {number} */ (child.pid), url: `ws://127.0.0.1:${port}/ws` };
}

/** @param {string} url @returns {Promise<WebSocket>} */
function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['switchboard.v1']);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

/** A request/reply helper over one socket. @param {WebSocket} ws */
function requester(ws) {
  let id = 0;
  /** @type {Map<number, (f: Record<string, unknown>) => void>} */
  const waiting = new Map();
  /** @type {((text: string, bytes: number) => void) | undefined} */
  let onOther;
  ws.on('message', (data) => {
    const text = rawText(data);
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const f = /** @type {Record<string, unknown>} */ (parseJson(line));
      const r = f['reply'];
      if (typeof r === 'number' && waiting.has(r)) {
        waiting.get(r)?.(f);
        waiting.delete(r);
      } else onOther?.(line, Buffer.byteLength(line));
    }
  });
  return {
    /** @param {Record<string, unknown>} cmd @returns {Promise<Record<string, unknown>>} */
    request(cmd) {
      const rid = ++id;
      return new Promise((resolve) => {
        waiting.set(rid, resolve);
        ws.send(JSON.stringify({ ...cmd, id: rid }));
      });
    },
    /** @param {(text: string, bytes: number) => void} fn */
    onPush(fn) {
      onOther = fn;
    },
  };
}

/** Reads every member, page by page; returns [ms, count]. @param {ReturnType<typeof requester>} r */
async function readAll(r) {
  const t0 = performance.now();
  let cursor;
  let count = 0;
  do {
    const reply = await r.request({
      action: 'presence',
      channel: CHANNEL,
      limit: 1000,
      ...(cursor && { cursor }),
    });
    count += /** @type {unknown[]} */ (reply['members']).length;
    cursor = reply['next'] ?? undefined;
  } while (cursor);
  return [performance.now() - t0, count];
}

/** @param {number[]} xs @param {number} p */
function pct(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}

/**
 * Enters `count` members from new connections, alternating nodes, 200 at a time.
 * @param {{url: string}[]} nodes @param {number} count @param {number} from
 * @param {WebSocket[]} sockets
 */
async function enterMany(nodes, count, from, sockets) {
  for (let i = 0; i < count; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, count - i) }, async (_, j) => {
        const k = from + i + j;
        const ws = await open(nodes[k % 2]?.url ?? '');
        sockets.push(ws);
        const r = requester(ws);
        const reply = await r.request({ action: 'enter', channel: CHANNEL, data: { n: k } });
        if (reply['ok'] !== true) throw new Error(`enter failed: ${JSON.stringify(reply)}`);
      }),
    );
  }
}

async function main() {
  const redis = await startRedis();
  const nodes = [await startNode(redis.url), await startNode(redis.url)];
  const watchers = [];
  for (let i = 0; i < W; i++) {
    const ws = await open(nodes[i % 2].url);
    const r = requester(ws);
    const w = { r, enters: 0, bytes: 0, frames: 0, doneAt: 0 };
    r.onPush((line, bytes) => {
      if (!line.includes('"presence":[')) return;
      w.frames++;
      w.bytes += bytes + 1;
      w.enters += (line.match(/"action":"enter"/g) ?? []).length;
      if (w.enters >= N && w.doneAt === 0) w.doneAt = performance.now();
    });
    await r.request({ action: 'presence-subscribe', channel: CHANNEL });
    watchers.push(w);
  }
  const reader = requester(await open(nodes[0].url));
  /** @type {WebSocket[]} */
  const sockets = [];

  // (g) at 1,000 members first, then (f) up to N, then (g) at N.
  /** @type {Record<number, {p50Ms: number, p99Ms: number, reads: number, pageSize: number}>} */
  const g = {};
  /** @param {number} label */
  const measureReads = async (label) => {
    const ms = [];
    for (let i = 0; i < READS; i++) {
      const [t, count] = await readAll(reader);
      if (count !== label) throw new Error(`read ${count} members, expected ${label}`);
      ms.push(t);
    }
    g[label] = {
      p50Ms: round(pct(ms, 50), 1),
      p99Ms: round(pct(ms, 99), 1),
      reads: READS,
      pageSize: 1000,
    };
  };
  const memBefore = Number((await redis.redis.info('memory')).match(/used_memory:(\d+)/)?.[1]);
  const rssBefore = nodes.map((n) => rssKiB(n.pid) ?? 0);
  const t0 = performance.now();
  await enterMany(nodes, Math.min(1000, N), 0, sockets);
  if (N > 1000) {
    await measureReads(1000);
    await enterMany(nodes, N - 1000, 1000, sockets);
  }
  const lastAck = performance.now();
  const deadline = Date.now() + 120_000;
  while (watchers.some((w) => w.doneAt === 0) && Date.now() < deadline) await sleep(20);
  const completeMs = Math.max(...watchers.map((w) => w.doneAt)) - t0;
  const memAfter = Number((await redis.redis.info('memory')).match(/used_memory:(\d+)/)?.[1]);
  const rssAfter = nodes.map((n) => rssKiB(n.pid) ?? 0);
  const rss = (/** @type {number[]} */ xs) => (xs[0] ?? 0) + (xs[1] ?? 0);
  await measureReads(N);
  if (N <= 1000 && g[N] !== undefined) g[1000] = g[N];
  const w0 = watchers[0];
  const report = {
    scenario: 'presence',
    engine: o.engine,
    members: N,
    watchers: W,
    f: {
      // With N > 1000 the time includes the (g) reads at 1,000 members in between.
      completeViewMs: round(completeMs, 0),
      // From the last enter's acknowledgement until every watcher saw every enter.
      lagAfterLastEnterMs: round(Math.max(...watchers.map((w) => w.doneAt)) - lastAck, 1),
      includesReadsAt1000: N > 1000,
      everyWatcherComplete: watchers.every((w) => w.doneAt > 0),
      eventFramesPerWatcher: w0?.frames,
      bytesPerEvent: round((w0?.bytes ?? 0) / N, 1),
      redisBytesPerMember: round((memAfter - memBefore) / N, 0),
      nodeRssKiBPerMemberConnection: round((rss(rssAfter) - rss(rssBefore)) / N, 2),
    },
    g,
  };
  process.stdout.write(JSON.stringify(report) + '\n');
  for (const s of sockets) s.terminate();
  redis.redis.disconnect();
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
