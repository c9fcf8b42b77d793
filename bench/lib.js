/// <reference types="node" />
/**
 * Helpers shared by the benchmark orchestrator and the load generator: a fixed-bucket latency
 * histogram, /proc readers (RSS, CPU time), free ports and small timing utilities.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';

/** JSON.parse typed as unknown, so callers narrow it. @param {string} text @returns {unknown} */
export function parseJson(text) {
  return JSON.parse(text);
}

/** A `ws` message as text. @param {import('ws').RawData} data */
export function rawText(data) {
  if (Buffer.isBuffer(data)) return data.toString();
  if (Array.isArray(data)) return Buffer.concat(data).toString();
  return Buffer.from(data).toString();
}

/** @param {number} ms */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Latency histogram: 10 µs buckets up to 100 ms, then 1 ms buckets up to 60 s. Constant memory
 * whatever the number of samples; percentiles are exact to the bucket width.
 */
export class Histogram {
  static FINE_US = 10;
  static FINE_LIMIT_MS = 100;
  static COARSE_LIMIT_MS = 60_000;

  constructor() {
    this.fine = new Float64Array((Histogram.FINE_LIMIT_MS * 1000) / Histogram.FINE_US);
    this.coarse = new Float64Array(Histogram.COARSE_LIMIT_MS - Histogram.FINE_LIMIT_MS + 1);
    this.count = 0;
    this.sum = 0;
    this.max = 0;
  }

  /** @param {number} ms */
  record(ms) {
    if (ms < 0) ms = 0;
    this.count++;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
    if (ms < Histogram.FINE_LIMIT_MS) this.fine[Math.floor((ms * 1000) / Histogram.FINE_US)]++;
    else this.coarse[Math.min(Math.floor(ms) - Histogram.FINE_LIMIT_MS, this.coarse.length - 1)]++;
  }

  /** @param {number} q quantile in [0, 1] @returns {number} upper edge of the bucket, in ms */
  quantile(q) {
    if (this.count === 0) return 0;
    const target = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < this.fine.length; i++) {
      seen += this.fine[i] ?? 0;
      if (seen >= target) return Math.min(((i + 1) * Histogram.FINE_US) / 1000, this.max);
    }
    for (let i = 0; i < this.coarse.length; i++) {
      seen += this.coarse[i] ?? 0;
      if (seen >= target) return Math.min(Histogram.FINE_LIMIT_MS + i + 1, this.max);
    }
    return this.max;
  }

  summary() {
    if (this.count === 0)
      return { samples: 0, p50: null, p90: null, p99: null, max: null, mean: null };
    return {
      samples: this.count,
      p50: round(this.quantile(0.5), 2),
      p90: round(this.quantile(0.9), 2),
      p99: round(this.quantile(0.99), 2),
      max: round(this.max, 2),
      mean: round(this.count === 0 ? 0 : this.sum / this.count, 2),
    };
  }
}

/** @param {number} x @param {number} digits */
export function round(x, digits) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Resident set size of a process in KiB, or undefined when it is gone. @param {number} pid */
export function rssKiB(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m === null ? undefined : Number(m[1]);
  } catch {
    return undefined;
  }
}

/** The open-files limit (soft and hard) of a process, or undefined. @param {number} pid */
export function fdLimit(pid) {
  try {
    const limits = readFileSync(`/proc/${pid}/limits`, 'utf8');
    const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(limits);
    return m === null ? undefined : { soft: m[1], hard: m[2] };
  } catch {
    return undefined;
  }
}

const CLOCK_TICKS = 100;

/** User + system CPU seconds a process has used, or undefined. @param {number} pid */
export function cpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/**
 * Seconds a process's main thread has spent running and waiting on a run queue (runnable but
 * not running: CPU contention), from /proc/<pid>/schedstat; undefined when unavailable.
 * @param {number} pid
 */
export function schedSeconds(pid) {
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/schedstat`, 'utf8')
      .trim()
      .split(' ')
      .map(Number);
    return run === undefined || wait === undefined
      ? undefined
      : { run: run / 1e9, wait: wait / 1e9 };
  } catch {
    return undefined;
  }
}

/** Whether a command is on the PATH. @param {string} name */
export function hasBinary(name) {
  return spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
}

/** Whether a process exists. @param {number} pid */
export function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A TCP port free on 127.0.0.1 right now. @returns {Promise<number>} */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Busy and total CPU seconds of the whole machine (all cores), from /proc/stat. */
export function machineCpu() {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    // idle + iowait are not busy
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    return { busy: (total - idle) / CLOCK_TICKS, total: total / CLOCK_TICKS };
  } catch {
    return undefined;
  }
}

/**
 * CPU use of several processes over an interval, in cores (1 = one core busy), plus `machine`:
 * the whole machine's busy cores, and `others`: what the machine spent beyond the watched pids
 * (other tenants' load makes a run noisy; it is recorded so a reader can tell).
 * @param {Record<string, number>} pids
 */
export function cpuMeter(pids) {
  const start = performance.now();
  /** @type {Record<string, number | undefined>} */
  const before = {};
  for (const [name, pid] of Object.entries(pids)) before[name] = cpuSeconds(pid);
  const machineBefore = machineCpu();
  /** @type {Record<string, {run: number, wait: number} | undefined>} */
  const schedBefore = {};
  for (const [name, pid] of Object.entries(pids)) schedBefore[name] = schedSeconds(pid);
  return () => {
    const elapsed = (performance.now() - start) / 1000;
    /** @type {Record<string, number | null>} */
    const out = {};
    let ours = 0;
    for (const [name, pid] of Object.entries(pids)) {
      const a = before[name];
      const b = cpuSeconds(pid);
      const used = a === undefined || b === undefined ? null : (b - a) / elapsed;
      out[name] = used === null ? null : round(used, 2);
      ours += used ?? 0;
    }
    const machineAfter = machineCpu();
    if (machineBefore !== undefined && machineAfter !== undefined) {
      const busy = (machineAfter.busy - machineBefore.busy) / elapsed;
      out['machine'] = round(busy, 2);
      out['others'] = round(Math.max(0, busy - ours), 2);
    }
    // Fraction of the interval each main thread spent runnable but waiting for a CPU.
    for (const [name, pid] of Object.entries(pids)) {
      const a = schedBefore[name];
      const b = schedSeconds(pid);
      if (a !== undefined && b !== undefined)
        out[`${name}RunQueueWait`] = round((b.wait - a.wait) / elapsed, 2);
    }
    return out;
  };
}

/** @type {import('node:child_process').ChildProcess[]} */
const tracked = [];

/**
 * Kills `child` when the bench process exits, however it exits (a failed run must not leave
 * redis-server or node processes behind). @template {import('node:child_process').ChildProcess} C
 * @param {C} child @returns {C}
 */
export function track(child) {
  if (tracked.length === 0) process.on('exit', () => killTracked('SIGKILL'));
  tracked.push(child);
  return child;
}

/** Signals every tracked child. @param {NodeJS.Signals} signal */
export function killTracked(signal) {
  for (const c of tracked) c.kill(signal);
}

/** Resolves once the node on `port` answers /readyz with 200 (10 s at most). @param {number} port */
export async function waitReady(port) {
  for (let i = 0; i < 200; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/readyz`);
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`node on ${port} did not become ready`);
}

/**
 * A throwaway redis-server on a free port (nothing saved), tracked; resolves once it answers, with
 * a connected client. `core`: pinned there (see pinned()).
 * @param {number} [core]
 */
export async function startRedis(core) {
  const port = await freePort();
  const args = ['redis-server', '--port', String(port), '--bind', '127.0.0.1'];
  const [cmd, argv] = pinned(core, [...args, '--save', '', '--appendonly', 'no']);
  track(spawn(cmd, argv, { stdio: 'ignore' }));
  // Retried every 50 ms until redis-server listens; the PING waits in the offline queue till then.
  const redis = new Redis({ port, host: '127.0.0.1', retryStrategy: () => 50 });
  redis.on('error', () => {
    // retried until redis-server listens
  });
  await redis.ping();
  return { port, redis, url: `redis://127.0.0.1:${port}` };
}

/**
 * `args` (a command and its arguments) pinned to `core` when one is given and taskset exists, so
 * two processes of a bench do not take each other's core; taskset execs in place, so the
 * child's pid is the command's. @param {number | undefined} core @param {string[]} args
 * @returns {[string, string[]]}
 */
export function pinned(core, args) {
  if (core !== undefined && hasBinary('taskset')) return ['taskset', ['-c', String(core), ...args]];
  return [/** @type {string} */ (args[0]), args.slice(1)];
}

/**
 * SIGTERM, then SIGKILL after `graceMs`; resolves once `child` exited.
 * @param {import('node:child_process').ChildProcess} child @param {number} [graceMs]
 */
export async function stop(child, graceMs = 10_000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** The server's CLI, built by `tsc -b packages/server` (every bench script's npm script does). */
export const SERVER_CLI = fileURLToPath(
  new URL('../packages/server/dist/cli/main.js', import.meta.url),
);
const LOADGEN = fileURLToPath(new URL('./loadgen.js', import.meta.url));

/**
 * Spawns one Switchboard node on a free port with Redis at `redisUrl` and the limits lifted that
 * would throttle a load generator (per-address connects, commands per second), tracked; resolves
 * once it is ready (`redisUrl` '' with SWITCHBOARD_REDIS_CLUSTER in `env`: Cluster). `env`: more
 * SWITCHBOARD_* settings; `core`: pinned there.
 * @param {{ redisUrl: string, engine: string, env?: Record<string, string>, core?: number }} o
 */
export async function startNode(o) {
  const port = await freePort();
  // e.g. BENCH_NODE_FLAGS='--cpu-prof --cpu-prof-dir=/tmp/prof': node refuses --cpu-prof in NODE_OPTIONS.
  const flags = (process.env['BENCH_NODE_FLAGS'] ?? '').split(' ').filter((f) => f !== '');
  const [cmd, args] = pinned(o.core, [process.execPath, ...flags, SERVER_CLI, 'serve']);
  const child = track(
    spawn(cmd, args, {
      stdio: ['ignore', 'ignore', 'inherit'],
      env: {
        ...process.env,
        SWITCHBOARD_PORT: String(port),
        SWITCHBOARD_HOST: '127.0.0.1',
        // '' for Cluster (SWITCHBOARD_REDIS_CLUSTER in env): the two exclude each other.
        ...(o.redisUrl !== '' && { SWITCHBOARD_REDIS: o.redisUrl }),
        SWITCHBOARD_ENGINE: o.engine,
        SWITCHBOARD_LOG_LEVEL: 'warn',
        SWITCHBOARD_MAX_CONNECTIONS_PER_IP_PER_SECOND: '1000000',
        SWITCHBOARD_MAX_COMMANDS_PER_SECOND: '1000000',
        SWITCHBOARD_COMMAND_BURST: '1000000',
        ...o.env,
      },
    }),
  );
  await waitReady(port);
  return { port, child, pid: /** @type {number} */ (child.pid) };
}

/**
 * @typedef {{ deliveredPerSec?: number, deliveriesPerServerCpuSecond?: number, cpuCores?: Record<string, number>, latencyMs?: { p50?: number, p99?: number }, lost?: number, delivered?: number, pass?: boolean }} LoadStep
 */

/**
 * Runs bench/loadgen.js with `args` in its own process (pinned to `core` if given) and resolves
 * with the last step of its report. Not spawnSync: whatever runs in this process (a webhook
 * receiver) keeps answering meanwhile.
 * @param {string[]} args @param {number} [core] @returns {Promise<LoadStep>}
 */
export function loadgen(args, core) {
  const [cmd, argv] = pinned(core, [process.execPath, LOADGEN, ...args]);
  return new Promise((resolve, reject) => {
    const child = track(spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] }));
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('exit', (status) => {
      if (status !== 0) return reject(new Error(`loadgen failed: ${stderr}`));
      const report = /** @type {{ lastStep?: LoadStep }} */ (
        parseJson(stdout.trim().split('\n').pop() ?? '')
      );
      if (report.lastStep === undefined) reject(new Error(`loadgen reported no step: ${stdout}`));
      else resolve(report.lastStep);
    });
  });
}

/**
 * Writes `result` (with its `at`) as bench/results/<at>-<name>.json; returns the file's path.
 * @param {string} name @param {{ at: string }} result
 */
export function writeResult(name, result) {
  const dir = fileURLToPath(new URL('./results/', import.meta.url));
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${result.at.replace(/[:.]/g, '-')}-${name}.json`);
  writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
  return file;
}

/**
 * redis-cli against the server on `port`; returns stdout ('' when it fails).
 * @param {number} port @param {string[]} args
 */
export function redisCli(port, ...args) {
  const r = spawnSync('redis-cli', ['-p', String(port), ...args], { timeout: 10_000 });
  return r.status === 0 ? r.stdout.toString() : '';
}

/**
 * A throwaway Redis Cluster on free ports (nothing saved), tracked: `masters` masters with
 * `replicas` replicas each, built with `redis-cli --cluster create`; resolves once every node
 * reports cluster_state:ok. `core`: every redis-server pinned there.
 * @param {{ masters?: number, replicas?: number, core?: number, nodeTimeoutMs?: number, dir: string }} o
 */
export async function startRedisCluster(o) {
  const masters = o.masters ?? 3;
  const replicas = o.replicas ?? 0;
  /** @type {{ port: number, child: import('node:child_process').ChildProcess, pid: number }[]} */
  const nodes = [];
  for (let i = 0; i < masters * (1 + replicas); i++) {
    const port = await freePort();
    const args = ['redis-server', '--port', String(port), '--bind', '127.0.0.1'];
    args.push('--save', '', '--appendonly', 'no', '--loglevel', 'warning', '--dir', o.dir);
    args.push('--cluster-enabled', 'yes', '--cluster-port', String(await freePort()));
    args.push('--cluster-config-file', join(o.dir, `nodes-${port}.conf`));
    args.push('--cluster-node-timeout', String(o.nodeTimeoutMs ?? 1000));
    const [cmd, argv] = pinned(o.core, args);
    const child = track(spawn(cmd, argv, { stdio: 'ignore' }));
    nodes.push({ port, child, pid: /** @type {number} */ (child.pid) });
  }
  for (const n of nodes)
    for (let i = 0; redisCli(n.port, 'ping').trim() !== 'PONG'; i++) {
      if (i > 200) throw new Error(`redis-server on ${n.port} did not start`);
      await sleep(25);
    }
  const create = spawnSync(
    'redis-cli',
    [
      '--cluster',
      'create',
      ...nodes.map((n) => `127.0.0.1:${n.port}`),
      '--cluster-replicas',
      String(replicas),
      '--cluster-yes',
    ],
    { timeout: 60_000 },
  );
  if (create.status !== 0) throw new Error(`cluster create failed: ${create.stdout.toString()}`);
  for (let i = 0; ; i++) {
    if (nodes.every((n) => redisCli(n.port, 'cluster', 'info').includes('cluster_state:ok'))) break;
    if (i > 400) throw new Error('cluster did not become ok');
    await sleep(50);
  }
  return {
    nodes,
    seeds: nodes.map((n) => `127.0.0.1:${n.port}`),
    /** Ports of the current masters. */
    masters: () =>
      nodes
        .filter((n) => n.child.exitCode === null && n.child.signalCode === null)
        .filter((n) => redisCli(n.port, 'role').startsWith('master'))
        .map((n) => n.port),
    stop: () => {
      for (const n of nodes) n.child.kill('SIGKILL');
    },
  };
}
