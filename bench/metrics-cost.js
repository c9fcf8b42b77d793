#!/usr/bin/env node
/// <reference types="node" />
/**
 * What metrics cost on the hot path: the same fan-out workload against one Switchboard node with
 * `metrics: true` and with `metrics: false`, alternating, several rounds. The load generator
 * (bench/loadgen.js, a separate process) reports deliveries per second and the server's CPU; the
 * figure compared is deliveries per server CPU-second, which other load on a shared machine
 * disturbs far less than raw throughput. Writes bench/results/<timestamp>-metrics-cost.json and
 * prints a summary. See docs/benchmarks.md, "Metrics cost".
 *
 *   node bench/metrics-cost.js [--connections 1000] [--rate 2000] [--seconds 8] [--rounds 3]
 *                              [--engine uws|ws] [--payload 128]
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { alive, freePort, parseJson, round, sleep } from './lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const SERVER_CLI = join(root, 'packages/server/dist/cli/main.js');
const LOADGEN = join(here, 'loadgen.js');

const { values: o } = parseArgs({
  options: {
    connections: { type: 'string', default: '1000' },
    rate: { type: 'string', default: '2000' },
    seconds: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '3' },
    engine: { type: 'string', default: 'uws' },
    payload: { type: 'string', default: '128' },
  },
});

/**
 * @typedef {{ deliveredPerSec?: number, deliveriesPerServerCpuSecond?: number, cpuCores?: Record<string, number>, latencyMs?: { p50?: number, p99?: number }, lost?: number, delivered?: number, pass?: boolean }} Step
 * @typedef {{ metrics: boolean, deliveredPerSec?: number, deliveriesPerServerCpuSecond?: number, serverCpuCores?: number, p50Ms?: number, p99Ms?: number, lost?: number, delivered?: number, pass?: boolean, latencyHistogramCount?: number }} Run
 */

/**
 * `args` pinned to `core` when taskset exists (server alone on core 0, the rest on 1).
 * @param {number} core @param {string[]} args @returns {[string, string[]]}
 */
function pinned(core, args) {
  const taskset = spawnSync('sh', ['-c', 'command -v taskset']).status === 0;
  return taskset
    ? ['taskset', ['-c', String(core), ...args]]
    : [/** @type {string} */ (args[0]), args.slice(1)];
}

/** @param {number} port */
async function waitPort(port, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/healthz`);
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`nothing on ${port} after ${timeoutMs} ms`);
    await sleep(100);
  }
}

/** @param {import('node:child_process').ChildProcess} child */
async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

async function startRedis() {
  const port = await freePort();
  const [cmd, args] = pinned(1, [
    'redis-server',
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
  ]);
  const child = spawn(cmd, args, { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const r = spawnSync('redis-cli', ['-p', String(port), 'ping']);
    if (r.stdout?.toString().trim() === 'PONG') return { child, port };
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error('redis-server did not start');
}

/** @param {number} redisPort @param {boolean} metrics @returns {Promise<Run>} */
async function round1(redisPort, metrics) {
  const port = await freePort();
  const [cmd, args] = pinned(0, [process.execPath, SERVER_CLI, 'serve']);
  const server = spawn(cmd, args, {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {
      ...process.env,
      SWITCHBOARD_PORT: String(port),
      SWITCHBOARD_HOST: '127.0.0.1',
      SWITCHBOARD_REDIS: `redis://127.0.0.1:${redisPort}`,
      SWITCHBOARD_ENGINE: String(o.engine),
      SWITCHBOARD_METRICS: String(metrics),
      SWITCHBOARD_LOG_LEVEL: 'warn',
      SWITCHBOARD_MAX_CONNECTIONS_PER_IP_PER_SECOND: '1000000',
      SWITCHBOARD_MAX_COMMANDS_PER_SECOND: '1000000',
      SWITCHBOARD_COMMAND_BURST: '1000000',
    },
  });
  try {
    await waitPort(port);
    // taskset execs node in place, so the child's pid is the server's.
    const serverPid = server.pid;
    const [lcmd, largs] = pinned(1, [
      process.execPath,
      LOADGEN,
      '--system',
      'switchboard',
      '--url',
      `ws://127.0.0.1:${port}/ws`,
      '--redis',
      `redis://127.0.0.1:${redisPort}`,
      '--connections',
      String(o.connections),
      '--channels',
      '1',
      '--payload',
      String(o.payload),
      '--rates',
      String(o.rate),
      '--step-seconds',
      String(o.seconds),
      '--drain-seconds',
      '5',
      '--server-pid',
      String(serverPid),
      '--name',
      `metrics-${metrics ? 'on' : 'off'}`,
    ]);
    const lg = spawnSync(lcmd, largs, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    if (lg.status !== 0) throw new Error(`loadgen failed: ${lg.stderr}`);
    const report = /** @type {{ lastStep?: Step }} */ (
      parseJson(lg.stdout.trim().split('\n').pop() ?? '')
    );
    const step = report.lastStep;
    if (step === undefined) throw new Error(`loadgen reported no step: ${lg.stdout}`);
    /** @type {{ latencyHistogramCount?: number }} */
    let scrape = {};
    if (metrics && serverPid !== undefined && alive(serverPid)) {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      const count = /^switchboard_delivery_latency_seconds_count (\S+)$/m.exec(text)?.[1];
      scrape = { latencyHistogramCount: Number(count) };
    }
    return {
      metrics,
      deliveredPerSec: step.deliveredPerSec,
      deliveriesPerServerCpuSecond: step.deliveriesPerServerCpuSecond,
      serverCpuCores: step.cpuCores?.server,
      p50Ms: step.latencyMs?.p50,
      p99Ms: step.latencyMs?.p99,
      lost: step.lost,
      delivered: step.delivered,
      pass: step.pass,
      ...scrape,
    };
  } finally {
    await stop(server);
  }
}

/** @param {(number | undefined)[]} xs */
function median(xs) {
  const s = /** @type {number[]} */ (xs.filter((x) => typeof x === 'number')).sort((a, b) => a - b);
  if (s.length === 0) return undefined;
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1
    ? s[m]
    : /** @type {number} */ (s[m - 1] + /** @type {number} */ (s[m])) / 2;
}

const redis = await startRedis();
/** @type {(Run & { round: number })[]} */
const runs = [];
try {
  for (let r = 0; r < Number(o.rounds); r++) {
    // Alternate which goes first, so a drift of the machine's load does not favour one side.
    for (const metrics of r % 2 === 0 ? [true, false] : [false, true]) {
      const run = await round1(redis.port, metrics);
      process.stderr.write(
        `round ${r + 1} metrics ${metrics ? 'on ' : 'off'}: ${JSON.stringify(run)}\n`,
      );
      runs.push({ round: r + 1, ...run });
    }
  }
} finally {
  await stop(redis.child);
}

/** @param {boolean} on */
const side = (on) => runs.filter((x) => x.metrics === on);
/** @type {Record<string, { deliveredPerSec?: number, deliveriesPerServerCpuSecond?: number, p99Ms?: number }>} */
const summary = {};
for (const [name, on] of /** @type {[string, boolean][]} */ ([
  ['on', true],
  ['off', false],
])) {
  summary[name] = {
    deliveredPerSec: median(side(on).map((x) => x.deliveredPerSec)),
    deliveriesPerServerCpuSecond: median(side(on).map((x) => x.deliveriesPerServerCpuSecond)),
    p99Ms: median(side(on).map((x) => x.p99Ms)),
  };
}
const on = summary['on']?.deliveriesPerServerCpuSecond;
const off = summary['off']?.deliveriesPerServerCpuSecond;
const output = {
  bench: 'metrics-cost',
  at: new Date().toISOString(),
  machine: {
    cpus: cpus().length,
    model: cpus()[0]?.model,
    loadavg: loadavg().map((x) => round(x, 2)),
  },
  params: { ...o },
  runs,
  summary,
  /** Share of server CPU per delivery that metrics add (median of rounds). */
  costPercent: on && off ? round((off / on - 1) * 100, 1) : undefined,
};
const dir = join(here, 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `${output.at.replace(/[:.]/g, '-')}-metrics-cost.json`);
writeFileSync(file, JSON.stringify(output, null, 2) + '\n');
process.stdout.write(JSON.stringify({ summary, costPercent: output.costPercent, file }) + '\n');
