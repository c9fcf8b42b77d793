#!/usr/bin/env node
/// <reference types="node" />
/**
 * Resume storm and catch-up benchmark: scenario (d) of `npm run bench` (bench/run.js runs this
 * file as its load generator, with --url), and `npm run bench:resume` on its own.
 *
 * (d) resume storm: N clients subscribed over C channels drop at once; --missed messages are
 *     published to every channel (HTTP API); all N reconnect at once with `since`. Reports the time
 *     until every subscribe was answered and until every client held every missed message (and
 *     the distribution of per-client recovery times), lost, duplicated and `recovered` counts.
 * catch-up: one client resumes --catchup messages behind: the time from subscribe to the last one.
 *
 * Against a running node: --url ws://host:port/ws [--http http://host:port (where to publish;
 * default: the node itself)] [--server-pid PID]. Without --url it starts its own Redis and one
 * Switchboard node (pinned to core 0 when taskset exists; this process is the load generator)
 * and writes bench/results/<time>-resume.json. Either way the JSON report is the last stdout line.
 *
 * Messages are not JSON.parse'd: replies and errors (`{"r…`, `{"e…`) are, but a message frame is
 * only scanned for `"offset":` (one WebSocket message may carry several '\n'-joined frames).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import {
  Histogram,
  cpuSeconds,
  freePort,
  hasBinary,
  parseJson,
  round,
  rssKiB,
  sleep,
} from './lib.js';

const { values: o } = parseArgs({
  options: {
    clients: { type: 'string', default: '2000' },
    channels: { type: 'string', default: '100' },
    missed: { type: 'string', default: '100' },
    catchup: { type: 'string', default: '1000' },
    quick: { type: 'boolean', default: false },
    url: { type: 'string' },
    http: { type: 'string' },
    'server-pid': { type: 'string' },
    'source-addresses': { type: 'string', default: '1' },
    'timeout-seconds': { type: 'string', default: '120' },
    'server-flag': { type: 'string', multiple: true, default: [] },
    retries: { type: 'string', default: '8' },
  },
});
const CLIENTS = o.quick ? 200 : Number(o.clients);
const CHANNELS = Math.min(Number(o.channels), CLIENTS);
const MISSED = Number(o.missed);
const CATCHUP = Number(o.catchup);
const SOURCE_ADDRESSES = Math.max(1, Math.min(254, Number(o['source-addresses'])));
const TIMEOUT_MS = Number(o['timeout-seconds']) * 1000;
/** Subscribes refused with a temporary error are sent again, like the SDK does, at most this often. */
const RETRIES = Number(o.retries);
/** Temporary error codes (`isTemporary` in packages/protocol): internal, not available, too many. */
const TEMPORARY = new Set([100, 108, 111]);
/** The SDK's backoff: full jitter over [0, min(30 s, 500 ms × 2^attempt)). @param {number} attempt */
const retryDelay = (attempt) => Math.floor(Math.random() * Math.min(30_000, 500 * 2 ** attempt));
let retriesSent = 0;
/** @type {Record<string, number>} */
const retriedCodes = {};
const CLI = fileURLToPath(new URL('../packages/server/dist/cli/main.js', import.meta.url));
const pinned = hasBinary('taskset');

/** @param {string} text */
function log(text) {
  process.stderr.write(`[resume] ${text}\n`);
}

/** @type {import('node:child_process').ChildProcess[]} */
const children = [];
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

/** @param {string} cmd @param {string[]} args @param {number} core */
function start(cmd, args, core) {
  const child = pinned
    ? spawn('taskset', ['-c', String(core), cmd, ...args], { stdio: 'ignore' })
    : spawn(cmd, args, { stdio: 'ignore' });
  children.push(child);
  return child;
}

/** @param {string} base */
async function waitReady(base) {
  for (let i = 0; i < 200; i++) {
    try {
      const res = await fetch(`${base}/readyz`);
      if (res.ok) return;
    } catch {
      // not up yet
    }
    await sleep(50);
  }
  throw new Error(`nothing ready at ${base}`);
}

/** Starts a private Redis and one node; returns the node's URLs and pid. */
async function startOwn() {
  const redisPort = await freePort();
  start(
    'redis-server',
    ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    1,
  );
  await sleep(300);
  const port = await freePort();
  const extra = /** @type {string[]} */ (o['server-flag'] ?? []).flatMap((f) => f.split('='));
  const server = start(
    process.execPath,
    [
      CLI,
      'serve',
      '--port',
      String(port),
      '--host',
      '127.0.0.1',
      '--redis',
      `redis://127.0.0.1:${redisPort}`,
      '--log-level',
      'warn',
      '--max-connections-per-ip-per-second',
      '1000000',
      '--max-commands-per-second',
      '1000000',
      '--command-burst',
      '1000000',
      ...extra,
    ],
    0,
  );
  const base = `http://127.0.0.1:${port}`;
  await waitReady(base);
  return { wsUrl: `ws://127.0.0.1:${port}/ws`, base, pid: server.pid ?? 0 };
}

const external = o.url !== undefined;
const target = external
  ? {
      wsUrl: String(o.url),
      base: o.http ?? String(o.url).replace(/^ws/, 'http').replace(/\/ws$/, ''),
      pid: Number(o['server-pid'] ?? 0),
    }
  : await startOwn();

/**
 * @typedef {{ offset: number, epoch: string }} Position
 * @typedef {{
 *   ws: WebSocket, from: number, seen: Uint8Array, received: number, dups: number,
 *   position?: Position, recovered?: boolean, failed?: string, caughtUpAt?: number,
 *   done?: () => void
 * }} Sub
 */

const OFFSET = Buffer.from('"offset":');

/** @param {Buffer} b @param {number} i */
function readUint(b, i) {
  let v = 0;
  let c = b[i] ?? 0;
  while (c >= 48 && c <= 57) {
    v = v * 10 + (c - 48);
    c = b[++i] ?? 0;
  }
  return v;
}

let nextSource = 0;

/**
 * A subscriber that records the offsets it receives after `since` (a bitset over the next
 * `expect` offsets). Resolves once the subscribe is answered, or with `failed` set.
 * @param {string} channel @param {Position | undefined} since @param {number} expect
 * @returns {Promise<Sub>}
 */
function subscriber(channel, since, expect) {
  return new Promise((resolve) => {
    const source = SOURCE_ADDRESSES > 1 ? 1 + (nextSource++ % SOURCE_ADDRESSES) : 0;
    const ws = new WebSocket(target.wsUrl, ['switchboard.v1'], {
      perMessageDeflate: false,
      skipUTF8Validation: true,
      ...(source > 0 && { localAddress: `127.0.0.${source}` }),
    });
    /** @type {Sub} */
    const s = {
      ws,
      from: (since?.offset ?? 0) + 1,
      seen: new Uint8Array(expect),
      received: 0,
      dups: 0,
    };
    let answered = false;
    const answer = () => {
      if (!answered) {
        answered = true;
        resolve(s);
      }
    };
    let attempt = 0;
    const send = () => {
      if (ws.readyState !== WebSocket.OPEN) return;
      ws.send(
        JSON.stringify({ action: 'subscribe', channel, id: attempt + 1, ...(since && { since }) }),
      );
    };
    ws.on('open', send);
    ws.on('message', (/** @type {Buffer} */ data) => {
      let start = 0;
      while (start < data.length) {
        let end = data.indexOf(10, start);
        if (end === -1) end = data.length;
        const third = data[start + 2];
        if (third === 0x72 || third === 0x65) {
          const f = /** @type {Record<string, unknown>} */ (
            parseJson(data.subarray(start, end).toString())
          );
          if (typeof f['reply'] === 'number' && f['ok'] === true) {
            s.position = /** @type {Position} */ (f['position']);
            if (typeof f['recovered'] === 'boolean') s.recovered = f['recovered'];
            answer();
          } else if ('error' in f) {
            const code = Number(f['code']);
            if (typeof f['reply'] === 'number' && TEMPORARY.has(code) && attempt < RETRIES) {
              retriesSent++;
              retriedCodes[`${code} ${String(f['error'])}`] =
                (retriedCodes[`${code} ${String(f['error'])}`] ?? 0) + 1;
              setTimeout(send, retryDelay(attempt++));
            } else {
              s.failed ??= `${code} ${JSON.stringify(f['error'])}`;
              answer();
            }
          }
        } else {
          const at = data.lastIndexOf(OFFSET, end);
          if (at >= start) {
            const idx = readUint(data, at + OFFSET.length) - s.from;
            if (idx >= 0 && idx < s.seen.length) {
              if (s.seen[idx] === 1) s.dups++;
              else {
                s.seen[idx] = 1;
                s.received++;
                if (s.received === s.seen.length) {
                  s.caughtUpAt = performance.now();
                  s.done?.();
                }
              }
            }
          }
        }
        start = end + 1;
      }
    });
    ws.on('error', (err) => {
      s.failed ??= err.message;
      answer();
    });
    ws.on('close', () => {
      if (!answered) s.failed ??= 'closed before the reply';
      answer();
    });
  });
}

/** @param {string} channel @param {number} n */
async function publish(channel, n) {
  for (let sent = 0; sent < n; sent += 1000) {
    const batch = Array.from({ length: Math.min(1000, n - sent) }, (_, i) => ({
      data: { i: sent + i, pad: 'x'.repeat(100) },
    }));
    const res = await fetch(`${target.base}/v1/channels/${channel}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(batch),
    });
    if (!res.ok) throw new Error(`publish ${res.status}: ${await res.text()}`);
  }
}

/**
 * Resolves when every sub has every expected message, or after `timeoutMs`.
 * @param {Sub[]} subs @param {number} timeoutMs
 */
function allCaughtUp(subs, timeoutMs) {
  /** @type {Promise<boolean>} */
  const all = new Promise((resolve) => {
    let missing = subs.filter((s) => s.failed === undefined && s.received < s.seen.length).length;
    if (missing === 0) {
      resolve(true);
      return;
    }
    const timer = setTimeout(() => resolve(false), timeoutMs);
    for (const s of subs) {
      if (s.failed !== undefined || s.received >= s.seen.length) continue;
      s.done = () => {
        if (--missing === 0) {
          clearTimeout(timer);
          resolve(true);
        }
      };
    }
  });
  return all;
}

// (d) resume storm
log(`${CLIENTS} clients over ${CHANNELS} channels, ${MISSED} missed messages each`);
const rssBefore = rssKiB(target.pid);
/** @type {Sub[]} */
const first = [];
for (let i = 0; i < CLIENTS; i += 500) {
  first.push(
    ...(await Promise.all(
      Array.from({ length: Math.min(500, CLIENTS - i) }, (_, j) =>
        subscriber(`storm:${(i + j) % CHANNELS}`, undefined, 0),
      ),
    )),
  );
}
const firstFailed = first.filter((s) => s.failed !== undefined);
if (firstFailed.length > 0)
  log(`${firstFailed.length} first subscribes failed, e.g. ${firstFailed[0]?.failed}`);
const positions = first.map((s) => s.position);
const rssSubscribed = rssKiB(target.pid);
for (const s of first) s.ws.terminate();
await sleep(1000);
for (let c = 0; c < CHANNELS; c++) await publish(`storm:${c}`, MISSED);
await sleep(500);
log('all dropped, messages published; reconnecting all at once');
const retriesBefore = retriesSent;
const cpu0 = cpuSeconds(target.pid);
const t0 = performance.now();
const resumed = await Promise.all(
  positions.map((p, i) => subscriber(`storm:${i % CHANNELS}`, p, MISSED)),
);
const tReplied = performance.now() - t0;
const complete = await allCaughtUp(resumed, Math.max(1000, TIMEOUT_MS - tReplied));
const tAll = performance.now() - t0;
const cpu1 = cpuSeconds(target.pid);
let lost = 0;
let duplicated = 0;
const recoveryHist = new Histogram();
for (const s of resumed) {
  lost += s.seen.length - s.received;
  duplicated += s.dups;
  if (s.caughtUpAt !== undefined) recoveryHist.record(s.caughtUpAt - t0);
}
const failed = resumed.filter((s) => s.failed !== undefined);
const recovered = resumed.filter((s) => s.recovered === true).length;
const caughtUp = resumed.filter((s) => s.received === s.seen.length).length;
const rssAfter = rssKiB(target.pid);
for (const s of resumed) s.ws.terminate();
log(
  `${caughtUp}/${CLIENTS} caught up in ${round(tAll, 0)} ms (replies ${round(tReplied, 0)} ms), ` +
    `recovered ${recovered}, lost ${lost}, dup ${duplicated}, failed ${failed.length}, ` +
    `retries ${retriesSent - retriesBefore}`,
);

// catch-up: one client, CATCHUP messages behind
const probe = await subscriber('catchup', undefined, 0);
probe.ws.terminate();
await publish('catchup', CATCHUP);
const t1 = performance.now();
const late = await subscriber('catchup', probe.position, CATCHUP);
await allCaughtUp([late], 30_000);
const tCatchup = performance.now() - t1;
late.ws.terminate();

const result = {
  at: new Date().toISOString(),
  machine: {
    nproc: Number(spawnSync('nproc').stdout.toString().trim()),
    node: process.version,
    pinned,
  },
  target: external ? 'external' : 'own',
  storm: {
    clients: CLIENTS,
    channels: CHANNELS,
    missedPerClient: MISSED,
    sourceAddresses: SOURCE_ADDRESSES,
    firstSubscribeFailures: firstFailed.length,
    resubscribeFailures: failed.length,
    /** Subscribes sent again after a temporary error (as the SDK does), and why. */
    retries: retriesSent - retriesBefore,
    retriedErrors: retriedCodes,
    firstResubscribeFailure: failed[0]?.failed,
    recovered,
    caughtUp,
    complete,
    lost,
    duplicated,
    allRepliedMs: round(tReplied, 1),
    /** Until every client held every missed message; null when some never did. */
    allCaughtUpMs: complete && failed.length === 0 ? round(tAll, 1) : null,
    waitedMs: round(tAll, 1),
    /** Per client: from the start of the storm to holding every missed message. */
    recoveryMs: recoveryHist.summary(),
    serverCpuSeconds: cpu0 === undefined || cpu1 === undefined ? null : round(cpu1 - cpu0, 2),
    serverRssKiB: { before: rssBefore, subscribed: rssSubscribed, after: rssAfter },
  },
  catchup: {
    messages: CATCHUP,
    received: late.received,
    recovered: late.recovered,
    ms: round(tCatchup, 1),
  },
};
if (!external) {
  mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
  const file = new URL(`./results/${result.at.replace(/[:.]/g, '-')}-resume.json`, import.meta.url);
  writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
}
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
