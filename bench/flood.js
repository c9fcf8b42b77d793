#!/usr/bin/env node
/// <reference types="node" />
/**
 * Flood isolation benchmark (issue 5: "a flood from one client does not raise the p99 latency of
 * the others by more than 20%"): `npm run bench:flood`.
 *
 * One node (embedded engine, the shipped command-rate limits) per WebSocket engine. A receivers
 * process holds --receivers subscribers of one channel and publishes to it at --rate msg/s over
 * its own connection, measuring publish-to-delivery latency. Phases of --phase-ms alternate:
 * without a flooder, then with one — a third process that sends publishes and garbage (one in ten)
 * as fast as its socket takes them, reconnecting whenever it is closed. Alternating short phases
 * lets whatever else the machine does hit both kinds alike; the medians of the phases' p99 are
 * compared.
 *
 * Placement on a 2-core machine: the node alone on core 0; the receivers on core 1; the flooder on
 * core 1 at SCHED_IDLE (chrt -i), so that it takes only CPU nobody else wants, as a flooder on
 * another machine would. Without taskset/chrt it runs unpinned and says so.
 *
 * --control (an A/A run: phases alike but for the flood) shows how far the figures move on their
 * own; --steady-rate N replaces the flood with a well-behaved client publishing N msg/s.
 *
 * Writes bench/results/<time>-flood.json; the JSON report is also the last stdout line.
 * The same file is the receivers (--role receivers) and the flooder (--role flooder).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import {
  Histogram,
  cpuSeconds,
  freePort,
  hasBinary,
  parseJson,
  rawText,
  round,
  sleep,
} from './lib.js';

/**
 * @typedef {ReturnType<Histogram['summary']>} Latency
 * @typedef {{ sent: number, tooMany: number, otherErrors: number, replies: number, connections: number, closes: Record<string, number> }} FloodStats
 * @typedef {{ published: number, expected: number, delivered: number, disconnects: number, pooled: Record<string, Latency> }} Totals
 */

const { values: o } = parseArgs({
  options: {
    role: { type: 'string', default: 'run' },
    url: { type: 'string' },
    engines: { type: 'string', default: 'uws,ws' },
    receivers: { type: 'string', default: '50' },
    rate: { type: 'string', default: '200' },
    'phase-ms': { type: 'string', default: '1200' },
    rounds: { type: 'string', default: '16' },
    quick: { type: 'boolean', default: false },
    control: { type: 'boolean', default: false },
    'steady-rate': { type: 'string' },
    'flooder-core': { type: 'string', default: '1' },
    'server-node-arg': { type: 'string', multiple: true, default: [] },
  },
});

const SELF = fileURLToPath(import.meta.url);
const CLI = fileURLToPath(new URL('../packages/server/dist/cli/main.js', import.meta.url));

/** @param {string} text */
function log(text) {
  process.stderr.write(`[flood] ${text}\n`);
}

// ---- flooder ------------------------------------------------------------------------------------
async function flooder() {
  const url = String(o.url);
  const publish = JSON.stringify({ action: 'publish', channel: 'flood', data: 'x'.repeat(100) });
  const garbage = '{"action":"publish","channel":';
  let running = false;
  /** @type {FloodStats} */
  let stats = { sent: 0, tooMany: 0, otherErrors: 0, replies: 0, connections: 0, closes: {} };
  async function flood() {
    while (running) {
      const ws = new WebSocket(url);
      let open = false;
      /** @type {Promise<void>} */
      const closed = new Promise((resolve) =>
        ws.on('close', (code) => {
          open = false;
          stats.closes[code] = (stats.closes[code] ?? 0) + 1;
          resolve();
        }),
      );
      ws.on('error', () => {});
      ws.on('message', (d) => {
        const s = rawText(d);
        if (s.includes('"code":111')) stats.tooMany++;
        else if (s.includes('"error"')) stats.otherErrors++;
        else stats.replies++;
      });
      await new Promise((resolve) => {
        ws.on('open', () => {
          open = true;
          resolve(undefined);
        });
        ws.on('close', resolve);
      });
      if (open) {
        stats.connections++;
        process.stdout.write('flooding\n');
      }
      let i = 0;
      const steady = o['steady-rate'] === undefined ? 0 : Number(o['steady-rate']);
      const t0 = performance.now();
      while (open && running) {
        if (steady > 0) {
          // The comparison: a well-behaved client publishing at `steady` msg/s, no garbage.
          while (i < ((performance.now() - t0) * steady) / 1000) {
            ws.send(publish);
            i++;
            stats.sent++;
          }
          await sleep(2);
          continue;
        }
        if (ws.bufferedAmount > 1 << 20) {
          // Not every millisecond: the server's backlog from us stays full either way, and with
          // 1 ms checks on the receivers' core their p99 rose by a quarter (docs/benchmarks.md).
          await sleep(10);
          continue;
        }
        ws.send(i % 10 === 9 ? garbage : publish);
        i++;
        stats.sent++;
        if (i % 256 === 0) await new Promise((r) => setImmediate(r));
      }
      // A flooder does not wait for a polite close behind megabytes the server reads at its pace.
      if (open) ws.terminate();
      await closed;
    }
    process.stdout.write(JSON.stringify(stats) + '\n');
  }
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === 'start') {
      stats = { sent: 0, tooMany: 0, otherErrors: 0, replies: 0, connections: 0, closes: {} };
      if (o.control) {
        // The A/A control: phases alike in every way but the flood, to show the noise floor.
        process.stdout.write('flooding\n');
        continue;
      }
      running = true;
      void flood();
    } else if (line === 'stop') {
      if (running) running = false;
      else process.stdout.write(JSON.stringify(stats) + '\n');
    }
  }
}

// ---- receivers ----------------------------------------------------------------------------------
async function receivers() {
  const url = String(o.url);
  const count = Number(o.receivers);
  const rate = Number(o.rate);
  /** Send time (performance.now()) by sequence number, for the messages of the current phase. */
  /** @type {Map<number, number>} */
  const sentAt = new Map();
  let hist = new Histogram();
  /** Every phase's samples pooled by kind (the second word of "phase <ms> <kind>"). */
  /** @type {Map<string, Histogram>} */
  const pooled = new Map();
  /** @type {Histogram | undefined} */
  let pool;
  let delivered = 0;
  let disconnects = 0;
  /** @type {WebSocket[]} */
  const sockets = [];
  for (let i = 0; i < count; i++) {
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    ws.on('close', () => disconnects++);
    ws.on('message', (data) => {
      const f = /** @type {{ channel?: string, message?: { n: number } }} */ (
        parseJson(rawText(data))
      );
      if (f.channel !== 'stream' || f.message === undefined) return;
      const t = sentAt.get(f.message.n);
      if (t !== undefined) {
        const ms = performance.now() - t;
        hist.record(ms);
        pool?.record(ms);
      }
      delivered++;
    });
    const subscribed = new Promise((resolve) => ws.once('message', resolve));
    ws.send(JSON.stringify({ action: 'subscribe', channel: 'stream', id: 1 }));
    await subscribed;
    sockets.push(ws);
  }
  const publisher = new WebSocket(url);
  await new Promise((resolve) => publisher.once('open', resolve));
  let n = 0;
  process.stdout.write('ready\n');
  for await (const line of createInterface({ input: process.stdin })) {
    const [cmd, arg, kind] = line.split(' ');
    if (cmd === 'phase') {
      // Publishes on a schedule (not a drifting interval), then waits for the stragglers.
      const ms = Number(arg);
      hist = new Histogram();
      if (kind !== undefined && !pooled.has(kind)) pooled.set(kind, new Histogram());
      pool = kind === undefined ? undefined : pooled.get(kind);
      sentAt.clear();
      const first = n;
      const start = performance.now();
      while (performance.now() - start < ms) {
        const due = Math.floor(((performance.now() - start) * rate) / 1000);
        while (n - first <= due) {
          sentAt.set(n, performance.now());
          publisher.send(JSON.stringify({ action: 'publish', channel: 'stream', data: { n } }));
          n++;
        }
        await sleep(2);
      }
      await sleep(100);
      process.stdout.write(JSON.stringify({ latency: hist.summary() }) + '\n');
    } else if (cmd === 'end') {
      await sleep(300);
      process.stdout.write(
        JSON.stringify({
          published: n,
          expected: n * count,
          delivered,
          disconnects,
          pooled: Object.fromEntries([...pooled].map(([k, h]) => [k, h.summary()])),
        }) + '\n',
      );
      for (const ws of [...sockets, publisher]) ws.terminate();
      process.exit(0);
    }
  }
}

// ---- orchestrator -------------------------------------------------------------------------------
/** A child speaking line-delimited text on stdout; `next(pred)` waits for a line matching. */
function child(/** @type {string[]} */ argv) {
  const proc = spawn(argv[0] ?? '', argv.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  /** @type {string[]} */
  const lines = [];
  /** @type {(() => void) | undefined} */
  let wake;
  createInterface({ input: /** @type {import('node:stream').Readable} */ (proc.stdout) }).on(
    'line',
    (l) => {
      lines.push(l);
      wake?.();
    },
  );
  proc.on('exit', () => wake?.());
  return {
    proc,
    send: (/** @type {string} */ line) => proc.stdin?.write(line + '\n'),
    /** @param {(line: string) => boolean} pred */
    async next(pred) {
      for (;;) {
        const i = lines.findIndex(pred);
        if (i >= 0) return lines.splice(0, i + 1).pop() ?? '';
        if (proc.exitCode !== null) throw new Error(`${argv.join(' ')} exited`);
        await new Promise((r) => (wake = () => r(undefined)));
      }
    },
  };
}

/** @param {number} x */
const pct = (x) => `${x >= 0 ? '+' : ''}${round(x * 100, 1)}%`;

/** @param {number[]} xs */
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

/** @param {string} engine @param {{ pinned: boolean, idle: boolean }} place */
async function runEngine(engine, place) {
  const rounds = o.quick ? 4 : Number(o.rounds);
  const phaseMs = Number(o['phase-ms']);
  const port = await freePort();
  const pin = (/** @type {number} */ core) => (place.pinned ? ['taskset', '-c', String(core)] : []);
  const [cmd = '', ...args] = [
    ...pin(0),
    process.execPath,
    // e.g. --server-node-arg=--cpu-prof --server-node-arg=--cpu-prof-dir=/tmp/prof
    .../** @type {string[]} */ (o['server-node-arg']),
    CLI,
    'serve',
    ...['--port', String(port), '--host', '127.0.0.1', '--log-level', 'warn'],
    ...['--engine', engine, '--max-connections-per-ip-per-second', '100000'],
  ];
  // The node's output (warnings, --trace-gc) to stderr: stdout ends with the JSON report.
  const server = spawn(cmd, args, { stdio: ['ignore', 2, 2] });
  const t0 = performance.now();
  try {
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) break;
      } catch {
        if (i > 200) throw new Error('node did not start');
      }
      await sleep(50);
    }
    const url = `ws://127.0.0.1:${port}/ws`;
    const node = [process.execPath, SELF, '--url', url];
    const recv = child([
      ...pin(1),
      ...node,
      '--role',
      'receivers',
      '--receivers',
      String(o.receivers),
      '--rate',
      String(o.rate),
    ]);
    await recv.next((l) => l === 'ready');
    const flood = child([
      ...(place.idle ? ['chrt', '-i', '0'] : []),
      ...pin(Number(o['flooder-core'])),
      ...node,
      '--role',
      'flooder',
      ...(o.control ? ['--control'] : []),
      ...(o['steady-rate'] === undefined ? [] : ['--steady-rate', String(o['steady-rate'])]),
    ]);
    /**
     * The node's own event-loop delay since the last scrape (prom-client resets its histogram on
     * every collect): what the flood does to the server itself, apart from the machine.
     */
    const loopLag = async () => {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const get = (/** @type {string} */ name) =>
        round(Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]) * 1000, 2);
      return {
        p99: get('nodejs_eventloop_lag_p99_seconds'),
        max: get('nodejs_eventloop_lag_max_seconds'),
      };
    };
    const phase = async (/** @type {string} */ kind) => {
      await loopLag();
      const c0 = cpuSeconds(server.pid ?? 0) ?? NaN;
      const t1 = performance.now();
      recv.send(`phase ${phaseMs} ${kind}`);
      const { latency } = /** @type {{ latency: Latency }} */ (
        parseJson(await recv.next((l) => l.startsWith('{')))
      );
      const cpu = ((cpuSeconds(server.pid ?? 0) ?? NaN) - c0) / ((performance.now() - t1) / 1000);
      const lag = await loopLag();
      return {
        p99: latency.p99 ?? NaN,
        p50: latency.p50 ?? NaN,
        samples: latency.samples,
        cpu: round(cpu * 100, 1),
        /** When the phase started, ms after the node was spawned (to line up with its own logs). */
        startMs: round(t1 - t0, 0),
        loopLagMs: lag,
      };
    };
    await phase('warmup'); // not counted
    /** @type {Awaited<ReturnType<typeof phase>>[]} */
    const base = [];
    /** @type {Awaited<ReturnType<typeof phase>>[]} */
    const flooded = [];
    /** @type {FloodStats[]} */
    const flooders = [];
    for (let r = 0; r < rounds; r++) {
      base.push(await phase('baseline'));
      flood.send('start');
      await flood.next((l) => l === 'flooding');
      await sleep(200); // past the burst the command bucket allows: the flood is in full swing
      flooded.push(await phase('flooded'));
      flood.send('stop');
      flooders.push(
        /** @type {FloodStats} */ (parseJson(await flood.next((l) => l.startsWith('{')))),
      );
      await sleep(200);
    }
    recv.send('end');
    const totals = /** @type {Totals} */ (parseJson(await recv.next((l) => l.startsWith('{'))));
    flood.proc.stdin?.end();
    const p99Base = median(base.map((p) => p.p99));
    const p99Flood = median(flooded.map((p) => p.p99));
    const sum = (/** @type {'sent' | 'tooMany' | 'otherErrors' | 'connections'} */ k) =>
      flooders.reduce((a, f) => a + f[k], 0);
    const result = {
      engine,
      control: o.control,
      steadyRate: o['steady-rate'] === undefined ? null : Number(o['steady-rate']),
      flooderCore: Number(o['flooder-core']),
      rounds,
      phaseMs,
      receivers: Number(o.receivers),
      rate: Number(o.rate),
      p99Ms: {
        baseline: p99Base,
        flooded: p99Flood,
        /** Of the medians: flooded / baseline - 1. */
        rise: round(p99Flood / p99Base - 1, 3),
        /** Median over rounds of each flooded phase against the baseline phase just before it. */
        pairedRise: round(median(base.map((b, i) => (flooded[i]?.p99 ?? NaN) / b.p99 - 1)), 3),
        /** Rounds whose flooded phase had the higher p99 (about half when the flood changes nothing). */
        roundsHigher: base.filter((b, i) => (flooded[i]?.p99 ?? 0) > b.p99).length,
        /** Over all samples of each kind together. */
        pooled: {
          baseline: totals.pooled['baseline']?.p99 ?? null,
          flooded: totals.pooled['flooded']?.p99 ?? null,
        },
      },
      p50Ms: {
        baseline: median(base.map((p) => p.p50)),
        flooded: median(flooded.map((p) => p.p50)),
      },
      /** The node's event-loop delay (monitorEventLoopDelay, 10 ms resolution included): medians of the phases' max. */
      serverLoopLagMaxMs: {
        baseline: median(base.map((p) => p.loopLagMs.max)),
        flooded: median(flooded.map((p) => p.loopLagMs.max)),
      },
      serverCpuPct: {
        baseline: median(base.map((p) => p.cpu)),
        flooded: median(flooded.map((p) => p.cpu)),
      },
      lost: totals.expected - totals.delivered,
      disconnects: totals.disconnects,
      flooder: {
        framesSent: sum('sent'),
        refused111: sum('tooMany'),
        otherErrors: sum('otherErrors'),
        connections: sum('connections'),
      },
      phases: { baseline: base, flooded },
    };
    log(
      `${engine}: p99 ${p99Base} → ${p99Flood} ms (${pct(result.p99Ms.rise)}; paired ${pct(result.p99Ms.pairedRise)}, ` +
        `higher in ${result.p99Ms.roundsHigher}/${rounds} rounds; pooled ${result.p99Ms.pooled.baseline} → ${result.p99Ms.pooled.flooded}), ` +
        `server CPU ${result.serverCpuPct.baseline}% → ${result.serverCpuPct.flooded}%, ` +
        `loop delay max ${result.serverLoopLagMaxMs.baseline} → ${result.serverLoopLagMaxMs.flooded} ms, lost ${result.lost}, ` +
        `flooder ${result.flooder.framesSent} frames, ${result.flooder.refused111} × 111`,
    );
    return result;
  } finally {
    // SIGTERM: a profile asked for with --server-node-arg is written on a clean exit.
    const exited = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000)]);
    server.kill('SIGKILL');
  }
}

async function run() {
  const place = { pinned: hasBinary('taskset'), idle: hasBinary('chrt') };
  if (!place.pinned || !place.idle)
    log(
      `unpinned run (taskset: ${place.pinned}, chrt: ${place.idle}): the figures mix in CPU contention`,
    );
  const results = [];
  for (const engine of String(o.engines).split(',')) results.push(await runEngine(engine, place));
  const report = {
    at: new Date().toISOString(),
    machine: {
      nproc: Number(spawnSync('nproc').stdout.toString().trim()),
      node: process.version,
      ...place,
    },
    results,
  };
  mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
  const file = new URL(`./results/${report.at.replace(/[:.]/g, '-')}-flood.json`, import.meta.url);
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n');
  process.stdout.write(JSON.stringify(report) + '\n');
  process.exit(0);
}

if (o.role === 'flooder') await flooder();
else if (o.role === 'receivers') await receivers();
else await run();
