#!/usr/bin/env node
/// <reference types="node" />
/**
 * Webhooks and message delivery: the same fan-out workload against one Switchboard node on Redis
 * with no webhook, with a webhook for every message to a receiver answering 200, and to a
 * receiver that never answers (each request times out). The load generator (bench/loadgen.js,
 * a separate process) reports message delivery latency; the receivers run in this process.
 * Writes bench/results/<timestamp>-webhooks.json and prints a summary. docs/benchmarks.md,
 * "Webhooks".
 *
 *   node bench/webhooks.js [--connections 200] [--rate 1000] [--seconds 5] [--engine uws|ws]
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort, parseJson, round, sleep } from './lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const SERVER_CLI = join(root, 'packages/server/dist/cli/main.js');
const LOADGEN = join(here, 'loadgen.js');

const { values: o } = parseArgs({
  options: {
    connections: { type: 'string', default: '200' },
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '5' },
    engine: { type: 'string', default: 'uws' },
  },
});

/** @param {number} port */
async function waitPort(port, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/healthz`)).status === 200) return;
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
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  await exited;
  clearTimeout(timer);
}

/** A receiver answering `status`, or never (0); counts requests. @param {number} status */
async function receiver(status) {
  const r = { requests: 0, port: 0, close: () => {} };
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      r.requests++;
      if (status !== 0) res.writeHead(status).end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  r.port = /** @type {{ port: number }} */ (server.address()).port;
  r.close = () => {
    server.closeAllConnections();
    server.close();
  };
  return r;
}

/** @param {string[]} args @returns {Promise<{ status: number | null, stdout: string, stderr: string }>} */
function runLoadgen(args) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

async function startRedis() {
  const port = await freePort();
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: 'ignore' },
  );
  for (let i = 0; i < 100; i++) {
    const r = spawnSync('redis-cli', ['-p', String(port), 'ping']);
    if (r.stdout?.toString().trim() === 'PONG') return { child, port };
    await sleep(100);
  }
  child.kill('SIGKILL');
  throw new Error('redis-server did not start');
}

/**
 * @param {number} redisPort @param {string} name @param {number | undefined} hookPort
 * @returns {Promise<Record<string, unknown>>}
 */
async function run(redisPort, name, hookPort) {
  const port = await freePort();
  const server = spawn(process.execPath, [SERVER_CLI, 'serve'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {
      ...process.env,
      SWITCHBOARD_PORT: String(port),
      SWITCHBOARD_HOST: '127.0.0.1',
      SWITCHBOARD_REDIS: `redis://127.0.0.1:${redisPort}`,
      SWITCHBOARD_REDIS_PREFIX: `bench-${name}:`,
      SWITCHBOARD_ENGINE: String(o.engine),
      SWITCHBOARD_LOG_LEVEL: 'error',
      SWITCHBOARD_MAX_CONNECTIONS_PER_IP_PER_SECOND: '1000000',
      SWITCHBOARD_MAX_COMMANDS_PER_SECOND: '1000000',
      SWITCHBOARD_COMMAND_BURST: '1000000',
      SWITCHBOARD_WEBHOOK_SECRET: 'bench-secret-0123456789',
      SWITCHBOARD_WEBHOOK_TIMEOUT_MS: '2000',
      SWITCHBOARD_WEBHOOKS:
        hookPort === undefined
          ? '[]'
          : JSON.stringify([
              { url: `http://127.0.0.1:${hookPort}/hook`, events: ['message.published'] },
            ]),
    },
  });
  try {
    await waitPort(port);
    // Not spawnSync: the receivers live in this process and must keep answering meanwhile.
    const lg = await runLoadgen([
      LOADGEN,
      ...['--system', 'switchboard', '--url', `ws://127.0.0.1:${port}/ws`],
      ...['--redis', `redis://127.0.0.1:${redisPort}`, '--connections', String(o.connections)],
      ...['--channels', '1', '--payload', '128', '--rates', String(o.rate)],
      ...['--step-seconds', String(o.seconds), '--drain-seconds', '3'],
      ...['--server-pid', String(server.pid), '--name', `webhooks-${name}`],
    ]);
    if (lg.status !== 0) throw new Error(`loadgen failed: ${lg.stderr}`);
    const report =
      /** @type {{ lastStep?: { deliveredPerSec?: number, latencyMs?: { p50?: number, p99?: number }, lost?: number, pass?: boolean } }} */ (
        parseJson(lg.stdout.trim().split('\n').pop() ?? '')
      );
    const step = report.lastStep ?? {};
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const series = (/** @type {string} */ re) => Number(re && new RegExp(re, 'm').exec(text)?.[1]);
    return {
      name,
      deliveredPerSec: step.deliveredPerSec,
      p50Ms: step.latencyMs?.p50,
      p99Ms: step.latencyMs?.p99,
      lost: step.lost,
      pass: step.pass,
      webhooksOk: series('^switchboard_webhook_deliveries_total\\{result="ok"\\} (\\S+)$'),
      webhooksFailed: series('^switchboard_webhook_deliveries_total\\{result="failed"\\} (\\S+)$'),
      webhookQueueDepth: series('^switchboard_webhook_queue_depth (\\S+)$'),
      rssMiB: round(series('^process_resident_memory_bytes (\\S+)$') / 1048576, 1),
    };
  } finally {
    await stop(server);
  }
}

const redis = await startRedis();
const ok = await receiver(200);
const hang = await receiver(0);
/** @type {Record<string, unknown>[]} */
const runs = [];
try {
  for (const [name, hook] of /** @type {[string, number | undefined][]} */ ([
    ['none', undefined],
    ['ok-receiver', ok.port],
    ['hanging-receiver', hang.port],
  ])) {
    const r = await run(redis.port, name, hook);
    runs.push(r);
    process.stderr.write(`${JSON.stringify(r)}\n`);
  }
} finally {
  ok.close();
  hang.close();
  redis.child.kill('SIGKILL');
}
const result = {
  bench: 'webhooks',
  at: new Date().toISOString(),
  machine: { cpus: cpus().length, loadavg: loadavg().map((x) => round(x, 2)) },
  options: o,
  receivers: { okRequests: ok.requests, hangingRequests: hang.requests },
  runs,
};
mkdirSync(join(here, 'results'), { recursive: true });
const file = join(here, 'results', `${result.at.replace(/[:.]/g, '-')}-webhooks.json`);
writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
process.stdout.write(JSON.stringify(result) + '\n');
