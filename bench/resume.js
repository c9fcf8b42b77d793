/// <reference types="node" />
/**
 * Resume storm and catch-up benchmark (npm run bench:resume).
 *
 * (d) N clients subscribed over C channels drop at once; 100 messages are published to every
 *     channel; all N reconnect at once with `since`. Reports the time until every client holds
 *     every missed message, lost, duplicated and recovered counts.
 * (e) one client resumes 1,000 messages behind: the time from subscribe to the last message.
 *
 * Switchboard (Redis engine) runs in its own process (pinned to core 0 when taskset exists);
 * this process is the load generator. JSON goes to bench/results/<time>-resume.json.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';
import { freePort, parseJson, round, rssKiB, sleep } from './lib.js';

const { values: o } = parseArgs({
  options: {
    clients: { type: 'string', default: '2000' },
    channels: { type: 'string', default: '100' },
    missed: { type: 'string', default: '100' },
    catchup: { type: 'string', default: '1000' },
    quick: { type: 'boolean', default: false },
  },
});
const CLIENTS = o.quick ? 200 : Number(o.clients);
const CHANNELS = Math.min(Number(o.channels), CLIENTS);
const MISSED = Number(o.missed);
const CATCHUP = Number(o.catchup);
const CLI = fileURLToPath(new URL('../packages/server/dist/cli/main.js', import.meta.url));
const pinned = spawnSync('sh', ['-c', 'command -v taskset']).status === 0;

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

/** @param {number} port */
async function waitPort(port) {
  for (let i = 0; i < 200; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/readyz`);
      if (res.ok) return;
    } catch {
      // not up yet
    }
    await sleep(50);
  }
  throw new Error(`nothing ready on ${port}`);
}

const redisPort = await freePort();
start(
  'redis-server',
  ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
  1,
);
await sleep(300);
const port = await freePort();
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
  ],
  0,
);
await waitPort(port);
const wsUrl = `ws://127.0.0.1:${port}/ws`;
const base = `http://127.0.0.1:${port}`;

/**
 * @typedef {{ offset: number, epoch: string }} Position
 * @typedef {{ ws: WebSocket, offsets: number[], position?: Position, recovered?: boolean, done?: () => void }} Sub
 */

/**
 * A subscriber that records the offsets it receives.
 * @param {string} channel @param {Position | undefined} since @returns {Promise<Sub>}
 */
function subscriber(channel, since) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, ['switchboard.v1']);
    /** @type {Sub} */
    const s = { ws, offsets: [] };
    ws.on('open', () =>
      ws.send(JSON.stringify({ action: 'subscribe', channel, id: 1, ...(since && { since }) })),
    );
    ws.on('message', (/** @type {Buffer} */ data) => {
      for (const line of data.toString().split('\n')) {
        const f = /** @type {Record<string, unknown>} */ (parseJson(line));
        if (f['reply'] === 1) {
          if (f['ok'] !== true) reject(new Error(String(f['error'])));
          s.position = /** @type {{offset: number, epoch: string}} */ (f['position']);
          if (typeof f['recovered'] === 'boolean') s.recovered = f['recovered'];
          resolve(s);
        } else if (typeof f['offset'] === 'number') {
          s.offsets.push(f['offset']);
          s.done?.();
        }
      }
    });
    ws.on('error', reject);
  });
}

/** @param {string} channel @param {number} n */
async function publish(channel, n) {
  for (let sent = 0; sent < n; sent += 1000) {
    const batch = Array.from({ length: Math.min(1000, n - sent) }, (_, i) => ({
      data: { i: sent + i, pad: 'x'.repeat(100) },
    }));
    const res = await fetch(`${base}/v1/channels/${channel}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(batch),
    });
    if (!res.ok) throw new Error(`publish ${res.status}: ${await res.text()}`);
  }
}

// (d) resume storm
const rssBefore = rssKiB(server.pid ?? 0);
/** @type {Sub[]} */
const first = [];
for (let i = 0; i < CLIENTS; i += 500) {
  first.push(
    ...(await Promise.all(
      Array.from({ length: Math.min(500, CLIENTS - i) }, (_, j) =>
        subscriber(`storm:${(i + j) % CHANNELS}`, undefined),
      ),
    )),
  );
}
const positions = first.map((s) => s.position);
for (const s of first) s.ws.terminate();
await sleep(500);
for (let c = 0; c < CHANNELS; c++) await publish(`storm:${c}`, MISSED);
const t0 = performance.now();
const resumed = await Promise.all(positions.map((p, i) => subscriber(`storm:${i % CHANNELS}`, p)));
const tReplied = performance.now() - t0;
await Promise.all(
  resumed.map((s) =>
    s.offsets.length >= MISSED
      ? Promise.resolve(undefined)
      : new Promise((resolve) => {
          s.done = () => {
            if (s.offsets.length >= MISSED) resolve(undefined);
          };
        }),
  ),
);
const tAll = performance.now() - t0;
let lost = 0;
let duplicated = 0;
for (const [i, s] of resumed.entries()) {
  const from = (positions[i]?.offset ?? 0) + 1;
  const seen = new Set(s.offsets);
  duplicated += s.offsets.length - seen.size;
  for (let off = from; off < from + MISSED; off++) if (!seen.has(off)) lost++;
}
const recovered = resumed.filter((s) => s.recovered === true).length;
const rssAfter = rssKiB(server.pid ?? 0);
for (const s of resumed) s.ws.terminate();

// (e) one client, CATCHUP messages behind
const probe = await subscriber('catchup', undefined);
probe.ws.terminate();
await publish('catchup', CATCHUP);
const t1 = performance.now();
const late = await subscriber('catchup', probe.position);
await (late.offsets.length >= CATCHUP
  ? undefined
  : new Promise((resolve) => {
      late.done = () => {
        if (late.offsets.length >= CATCHUP) resolve(undefined);
      };
    }));
const tCatchup = performance.now() - t1;
late.ws.terminate();

const result = {
  at: new Date().toISOString(),
  machine: {
    nproc: Number(spawnSync('nproc').stdout.toString().trim()),
    node: process.version,
    pinned,
  },
  storm: {
    clients: CLIENTS,
    channels: CHANNELS,
    missedPerClient: MISSED,
    recovered,
    lost,
    duplicated,
    allRepliedMs: round(tReplied, 1),
    allCaughtUpMs: round(tAll, 1),
    serverRssKiB: { before: rssBefore, after: rssAfter },
  },
  catchup: {
    messages: CATCHUP,
    received: late.offsets.length,
    recovered: late.recovered,
    ms: round(tCatchup, 1),
  },
};
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
const file = new URL(`./results/${result.at.replace(/[:.]/g, '-')}-resume.json`, import.meta.url);
writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
process.stdout.write(JSON.stringify(result, null, 2) + '\n');
process.exit(0);
