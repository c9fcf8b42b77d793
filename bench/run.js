#!/usr/bin/env node
/// <reference types="node" />
/**
 * Benchmark orchestrator: starts a private redis-server, runs each scenario against Switchboard
 * (Redis engine) and the tutorial baseline, each system in its own process, writes
 * bench/results/<timestamp>.json and prints a summary table. See docs/benchmarks.md.
 *
 * Scenarios:
 *   a  fan-out: 1 channel, many subscribers; step the publish rate up until loss or p99 blow-up.
 *   b  10k connections, each on its own channel plus one of 50 shared ones; steady publish rate.
 *   c  RSS per idle subscribed connection at 10k connections.
 *
 * Placement on a 2-core machine: the server under test alone on core 0; the load generator,
 * Redis and (for Switchboard) the publishing ingress node on core 1.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connect } from 'node:net';
import { Redis } from 'ioredis';
import { alive, fdLimit, freePort, machineCpu, parseJson, round, sleep } from './lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const SERVER_CLI = join(root, 'packages/server/dist/cli/main.js');
const TUTORIAL = join(here, 'baselines/tutorial.js');
const LOADGEN = join(here, 'loadgen.js');

const { values: o } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    scenarios: { type: 'string', default: 'a,b,c' },
    systems: { type: 'string', default: 'switchboard,tutorial' },
    'a-subscribers': { type: 'string' },
    'a-payload': { type: 'string', default: '128' },
    'a-rate-start': { type: 'string' },
    'a-rate-factor': { type: 'string', default: '1.5' },
    'a-rate-max': { type: 'string', default: '20000' },
    'a-step-seconds': { type: 'string' },
    'a-refine': { type: 'string' },
    'p99-limit-ms': { type: 'string', default: '1000' },
    'b-connections': { type: 'string' },
    'b-shared': { type: 'string', default: '50' },
    'b-rate': { type: 'string', default: '2000' },
    'b-seconds': { type: 'string' },
    'b-shared-share': { type: 'string' },
    'c-connections': { type: 'string' },
    'c-channels': { type: 'string', default: '50' },
    'c-idle-seconds': { type: 'string', default: '5' },
    'redis-maxclients': { type: 'string', default: '100000' },
    'sb-publish-via': { type: 'string', default: 'ingress' },
    publishers: { type: 'string', default: '4' },
    'no-pin': { type: 'boolean', default: false },
    nice: { type: 'string', default: '0' },
    nofile: { type: 'string', default: '200000' },
    out: { type: 'string' },
    'cpu-prof': { type: 'string' },
    'server-flag': { type: 'string', multiple: true, default: [] },
    'quiet-wait': { type: 'string' },
    'quiet-cores': { type: 'string', default: '0.3' },
    summarize: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (o.help === true) {
  process.stdout.write(
    'Usage: node bench/run.js [--quick] [--scenarios a,b,c] [--systems switchboard,tutorial] [options]\n' +
      'See docs/benchmarks.md for every option.\n',
  );
  process.exit(0);
}

const QUICK = o.quick === true;
/** @param {string | undefined} v @param {number} full @param {number} quick */
const pick = (v, full, quick) => (v === undefined ? (QUICK ? quick : full) : Number(v));

const A = {
  subscribers: pick(o['a-subscribers'], 5000, 500),
  payload: Number(o['a-payload']),
  rateStart: pick(o['a-rate-start'], 5, 20),
  rateFactor: Number(o['a-rate-factor']),
  rateMax: Number(o['a-rate-max']),
  stepSeconds: pick(o['a-step-seconds'], 10, 3),
  refine: pick(o['a-refine'], 2, 0),
  maxSteps: QUICK ? 5 : 14,
};
const B = {
  connections: pick(o['b-connections'], 10_000, 1000),
  shared: Number(o['b-shared']),
  rate: Number(o['b-rate']),
  seconds: pick(o['b-seconds'], 30, 5),
  sharedShare: o['b-shared-share'],
};
const Cc = {
  connections: pick(o['c-connections'], 10_000, 1000),
  channels: Number(o['c-channels']),
  idleSeconds: Number(o['c-idle-seconds']),
};
const P99_LIMIT = Number(o['p99-limit-ms']);
const SCENARIOS = String(o.scenarios).split(',');
const SYSTEMS = String(o.systems).split(',');
/** Before each system run, wait up to this many seconds for other load on the machine to settle. */
const QUIET_WAIT_S = pick(o['quiet-wait'], 15, 0);
const QUIET_CORES = Number(o['quiet-cores']);
const NICE = Number(o.nice);
/** Extra node flags: with --cpu-prof DIR every node process writes a .cpuprofile there on exit. */
const NODE_FLAGS =
  o['cpu-prof'] === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', o['cpu-prof']];

/** @param {string} text */
function log(text) {
  process.stderr.write(`[bench] ${text}\n`);
}

const hasTaskset = spawnSync('taskset', ['-c', '0', 'true']).status === 0 && o['no-pin'] !== true;

/** Every process we started and that still runs: killed by pid if the orchestrator exits early. */
/** @type {Set<import('node:child_process').ChildProcess>} */
const started = new Set();
process.on('exit', () => {
  for (const child of started) child.kill('SIGKILL');
});
for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM'])) {
  process.on(signal, () => {
    log(`${signal}: stopping the processes we started`);
    process.exit(130);
  });
}

/**
 * With --nice, also sets the nice value of the process's autogroup (the kernel shares CPU between
 * autogroups first, so a plain nice value only matters inside one).
 * @param {number} pid
 */
function setAutogroupNice(pid) {
  try {
    writeFileSync(`/proc/${pid}/autogroup`, String(NICE));
  } catch (err) {
    log(`cannot set the autogroup nice of ${pid}: ${String(err)}`);
  }
}

/**
 * Spawns `cmd args` pinned to `core` (when taskset exists) with the fd limit raised as far as
 * allowed: `ulimit -n <nofile>`, else the hard limit.
 * @param {string} cmd @param {string[]} args @param {number} core
 * @param {{stdout?: 'pipe' | 'ignore'}} [opts]
 */
function spawnPinned(cmd, args, core, opts = {}) {
  const nofile = String(o.nofile);
  const script = `ulimit -n ${nofile} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"`;
  const argv = ['-c', script, 'sh', cmd, ...args];
  const pinned = hasTaskset ? ['taskset', '-c', String(core), 'sh', ...argv] : ['sh', ...argv];
  // Optional priority boost for a shared machine (root only); off by default, recorded in results.
  const full = NICE === 0 ? pinned : ['nice', '-n', String(NICE), ...pinned];
  // detached: its own session, like a daemon, hence its own scheduler autogroup (Linux gives each
  // autogroup a fair share; inside ours, the server would share one group with the load generator).
  const child = spawn(full[0] ?? 'sh', full.slice(1), {
    cwd: root,
    stdio: ['ignore', opts.stdout ?? 'pipe', 'pipe'],
    detached: true,
  });
  started.add(child);
  child.once('exit', () => started.delete(child));
  if (NICE !== 0 && child.pid !== undefined) setAutogroupNice(child.pid);
  /** @type {string[]} */
  const tail = [];
  child.stderr?.on('data', (d) => {
    for (const line of String(d).split('\n')) {
      if (line === '') continue;
      tail.push(line);
      if (tail.length > 40) tail.shift();
    }
  });
  return { child, tail };
}

/** @param {number} port @param {number} timeoutMs */
async function waitPort(port, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    /** @type {Promise<boolean>} */
    const attempt = new Promise((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (await attempt) return;
    await sleep(100);
  }
  throw new Error(`port ${port} did not open within ${timeoutMs} ms`);
}

/**
 * Stops a process we started, by pid: SIGTERM, then SIGKILL after `graceMs`.
 * @param {import('node:child_process').ChildProcess} child @param {number} [graceMs]
 */
async function stop(child, graceMs = 3000) {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * Per-client admission limits that exist to stop one abusive client, and that a benchmark trips by
 * design: every simulated client comes from 127.0.0.1, and one publisher connection stands for a
 * backend. Lifted when this build of the server has them (found in `serve --help`); recorded in
 * the results. Extra flags: --server-flag '--name=value' (repeatable).
 */
const LIFTED_LIMITS = [
  ['--max-connections-per-ip-per-second', '1000000'],
  ['--max-commands-per-second', '1000000'],
  ['--command-burst', '1000000'],
];

function switchboardFlags() {
  const help =
    spawnSync(process.execPath, [SERVER_CLI, 'serve', '--help']).stdout?.toString() ?? '';
  /** @type {string[]} */
  const flags = [];
  for (const [flag, value] of LIFTED_LIMITS)
    if (flag !== undefined && value !== undefined && help.includes(flag + ' '))
      flags.push(flag, value);
  for (const extra of /** @type {string[]} */ (o['server-flag'] ?? []))
    flags.push(...extra.split('='));
  return flags;
}
const SB_FLAGS = switchboardFlags();

/** The commit under test and whether the packages differ from it (read-only git). */
function sourceState() {
  const head = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root })
    .stdout?.toString()
    .trim();
  const dirty = spawnSync('git', ['status', '--porcelain', '--', 'packages'], { cwd: root })
    .stdout?.toString()
    .split('\n')
    .filter(Boolean).length;
  return { commit: head, uncommittedFilesUnderPackages: dirty };
}

// ---- redis --------------------------------------------------------------------------------------
/** @type {{child: import('node:child_process').ChildProcess, port: number, url: string, pid: number, maxclients: string} | undefined} */
let redis;

async function startRedis() {
  const port = await freePort();
  if (port === 6379) throw new Error('refusing to use 6379');
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
  const maxclients = String(o['redis-maxclients']);
  if (maxclients !== '0') args.push('--maxclients', maxclients);
  const { child } = spawnPinned('redis-server', args, 1, { stdout: 'ignore' });
  await waitPort(port, 10_000);
  const url = `redis://127.0.0.1:${port}`;
  const r = new Redis(url);
  const got = /** @type {string[]} */ (await r.config('GET', 'maxclients'));
  r.disconnect();
  redis = { child, port, url, pid: child.pid ?? 0, maxclients: got[1] ?? '?' };
  log(`redis on ${port} (pid ${redis.pid}, maxclients ${redis.maxclients})`);
}

async function flushRedis() {
  if (redis === undefined) return;
  const r = new Redis(redis.url);
  await r.flushall();
  r.disconnect();
}

// ---- systems ------------------------------------------------------------------------------------
/**
 * @typedef {{
 *   pid: number, port: number, url: string, publishUrl: string, watch: string,
 *   procs: {child: import('node:child_process').ChildProcess, tail: string[], name: string}[]
 * }} Running
 */

/** @param {string} system @returns {Promise<Running>} */
async function startSystem(system) {
  if (redis === undefined) throw new Error('redis not started');
  const port = await freePort();
  if (system === 'tutorial') {
    const proc = spawnPinned(
      process.execPath,
      [...NODE_FLAGS, TUTORIAL, '--port', String(port), '--redis', redis.url],
      0,
    );
    await waitPort(port, 10_000);
    return {
      pid: proc.child.pid ?? 0,
      port,
      url: `ws://127.0.0.1:${port}/ws`,
      publishUrl: redis.url,
      watch: '',
      procs: [{ ...proc, name: 'tutorial' }],
    };
  }
  const serve = (/** @type {number} */ p, /** @type {number} */ core) =>
    spawnPinned(
      process.execPath,
      [
        ...NODE_FLAGS,
        SERVER_CLI,
        'serve',
        '--port',
        String(p),
        '--redis',
        redis?.url ?? '',
        '--log-level',
        'warn',
        ...SB_FLAGS,
      ],
      core,
    );
  const node = serve(port, 0);
  /** @type {Running['procs']} */
  const procs = [{ ...node, name: 'switchboard' }];
  await waitPort(port, 10_000);
  let publishUrl = `ws://127.0.0.1:${port}/ws`;
  let watch = '';
  if (o['sb-publish-via'] === 'ingress') {
    const ingressPort = await freePort();
    const ingress = serve(ingressPort, 1);
    procs.push({ ...ingress, name: 'ingress' });
    await waitPort(ingressPort, 10_000);
    publishUrl = `ws://127.0.0.1:${ingressPort}/ws`;
    watch = `ingress=${ingress.child.pid ?? 0}`;
  }
  return {
    pid: node.child.pid ?? 0,
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    publishUrl,
    watch,
    procs,
  };
}

/** @param {Running} sys */
async function stopSystem(sys) {
  /** @type {Record<string, unknown>} */
  const exits = {};
  for (const p of sys.procs) {
    const crashed = p.child.exitCode !== null || p.child.signalCode !== null;
    if (crashed) {
      exits[p.name] = {
        crashed: true,
        exitCode: p.child.exitCode,
        signal: p.child.signalCode,
        stderrTail: p.tail.slice(-15),
      };
    }
    await stop(p.child);
  }
  return exits;
}

/**
 * Runs the load generator with `args`; resolves with its JSON report, or a failure record.
 * @param {string[]} args @param {number} timeoutMs
 */
function runLoadgen(args, timeoutMs) {
  /** @type {Promise<Record<string, unknown>>} */
  const report = new Promise((resolve) => {
    const { child } = spawnPinned(process.execPath, [...NODE_FLAGS, LOADGEN, ...args], 1);
    let out = '';
    /** @type {string[]} */
    const errTail = [];
    child.stdout?.on('data', (d) => (out += String(d)));
    child.stderr?.on('data', (d) => {
      process.stderr.write(String(d));
      errTail.push(...String(d).split('\n').filter(Boolean));
      if (errTail.length > 20) errTail.splice(0, errTail.length - 20);
    });
    const timer = setTimeout(() => {
      log(`load generator exceeded ${Math.round(timeoutMs / 1000)} s; stopping it`);
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').at(-1) ?? '';
      let parsed;
      try {
        parsed = parseJson(line);
      } catch {
        parsed = undefined;
      }
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed))
        resolve({ ...parsed });
      else resolve({ failed: true, exitCode: code, signal, stderrTail: errTail });
    });
  });
  return report;
}

/**
 * Waits (up to QUIET_WAIT_S) until the machine has been nearly idle for 3 s: nothing of ours runs
 * between system runs except an idle Redis, so busy CPU here is other tenants' load.
 * @returns {Promise<{waitedSeconds: number, busyCores: number | undefined}>}
 */
async function waitQuiet() {
  const t0 = Date.now();
  let busy;
  for (;;) {
    const a = machineCpu();
    await sleep(3000);
    const b = machineCpu();
    busy = a === undefined || b === undefined ? undefined : round((b.busy - a.busy) / 3, 2);
    if (busy === undefined || busy <= QUIET_CORES) break;
    if (Date.now() - t0 >= QUIET_WAIT_S * 1000) break;
  }
  const waitedSeconds = round((Date.now() - t0) / 1000, 1);
  if (busy !== undefined && busy > QUIET_CORES)
    log(`machine still busy (${busy} cores used by others); running anyway`);
  return { waitedSeconds, busyCores: busy };
}

/**
 * Starts `system`, runs the load generator against it, stops it.
 * @param {string} system @param {string[]} args @param {number} timeoutMs
 */
async function runAgainst(system, args, timeoutMs) {
  if (redis === undefined) throw new Error('redis not started');
  await flushRedis();
  const quiet = QUIET_WAIT_S > 0 ? await waitQuiet() : undefined;
  const sys = await startSystem(system);
  await sleep(1500);
  const fd = fdLimit(sys.pid);
  const common = [
    '--system',
    system,
    '--url',
    sys.url,
    '--publish-url',
    sys.publishUrl,
    '--redis',
    redis.url,
    '--server-pid',
    String(sys.pid),
    '--redis-pid',
    String(redis.pid),
    '--watch',
    sys.watch,
    '--publishers',
    String(o.publishers),
    '--p99-limit-ms',
    String(P99_LIMIT),
  ];
  const report = await runLoadgen([...common, ...args], timeoutMs);
  const serverAlive = alive(sys.pid);
  const exits = await stopSystem(sys);
  await sleep(1000);
  /** The first error line a crashed process printed, e.g. why the tutorial died. */
  let serverFailure;
  for (const [name, exit] of Object.entries(exits)) {
    const tail = /** @type {{stderrTail?: string[]}} */ (exit).stderrTail ?? [];
    const line = tail.find((l) => /^\w*Error\b|Error:/.test(l.trim()));
    const text = line?.trim() ?? 'no error printed';
    serverFailure ??= `${name} exited: ${text.length > 90 ? text.slice(0, 87) + '...' : text}`;
  }
  return {
    ...report,
    serverFailure,
    serverFdLimit: fd,
    serverAliveAtEnd: serverAlive,
    processExits: exits,
    othersBusyCoresBeforeStart: quiet?.busyCores,
  };
}

// ---- scenarios ----------------------------------------------------------------------------------
function fanoutRates() {
  const rates = [];
  let r = A.rateStart;
  while (r <= A.rateMax && rates.length < A.maxSteps) {
    rates.push(Math.round(r));
    r *= A.rateFactor;
  }
  return rates;
}

/** @param {string} system */
function scenarioA(system) {
  const rates = fanoutRates();
  const args = [
    '--label',
    'a',
    '--connections',
    String(A.subscribers),
    '--channels',
    '1',
    '--payload',
    String(A.payload),
    '--rates',
    rates.join(','),
    '--step-seconds',
    String(A.stepSeconds),
    '--stop-on-fail',
    '--refine',
    String(A.refine),
    '--drain-seconds',
    QUICK ? '3' : '8',
  ];
  const budget = 60_000 + (rates.length + A.refine + 1) * (A.stepSeconds + 12) * 1000;
  return runAgainst(system, args, budget);
}

/** @param {string} system */
function scenarioB(system) {
  const args = [
    '--label',
    'b',
    '--connections',
    String(B.connections),
    '--channels',
    String(B.shared),
    '--personal',
    '--payload',
    '128',
    '--rates',
    String(B.rate),
    '--step-seconds',
    String(B.seconds),
    '--drain-seconds',
    '5',
    '--subscribe-timeout-seconds',
    QUICK ? '20' : '60',
  ];
  if (B.sharedShare !== undefined) args.push('--shared-share', String(B.sharedShare));
  return runAgainst(system, args, 150_000 + B.seconds * 1000);
}

/** @param {string} system */
function scenarioC(system) {
  const args = [
    '--label',
    'c',
    '--connections',
    String(Cc.connections),
    '--channels',
    String(Cc.channels),
    '--idle-seconds',
    String(Cc.idleSeconds),
    '--subscribe-timeout-seconds',
    '30',
  ];
  return runAgainst(system, args, 150_000);
}

// ---- report -------------------------------------------------------------------------------------
/** @param {unknown} v @param {string} path @returns {unknown} */
function get(v, path) {
  let cur = v;
  for (const k of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = /** @type {Record<string, unknown>} */ (cur)[k];
  }
  return cur;
}

/** @param {unknown} x */
function fmt(x) {
  if (x === undefined || x === null) return '—';
  if (typeof x === 'number') return x >= 10_000 ? Math.round(x).toLocaleString('en-US') : String(x);
  return typeof x === 'string' ? x : JSON.stringify(x);
}

/** @param {unknown} a @param {unknown} b @param {boolean} lowerIsBetter */
function ratio(a, b, lowerIsBetter) {
  if (typeof a !== 'number' || typeof b !== 'number' || a === 0 || b === 0) return '—';
  return `${round(lowerIsBetter ? b / a : a / b, 2)}×`;
}

/** @param {Record<string, Record<string, unknown>>} results */
function summaryRows(results) {
  /** @type {string[][]} */
  const rows = [];
  /** @param {string} scen @param {string} label @param {string} path @param {boolean} lower */
  const row = (scen, label, path, lower) => {
    const r = results[scen];
    if (r === undefined) return;
    const sb = get(r['switchboard'], path);
    const tu = get(r['tutorial'], path);
    rows.push([`(${scen}) ${label}`, fmt(sb), fmt(tu), ratio(sb, tu, lower)]);
  };
  row('a', 'max rate with 0 loss (msg/s)', 'best.rate', false);
  row('a', 'deliveries/s at that rate', 'best.deliveredPerSec', false);
  row('a', 'p99 at that rate (ms)', 'best.latencyMs.p99', true);
  row('a', 'deliveries per server CPU-second there', 'best.deliveriesPerServerCpuSecond', false);
  row('a', 'first failing rate (msg/s)', 'firstFailure', false);
  cpuRow(results, rows, 'a', 'CPU cores at last passing step', 'bestStep');
  cpuRow(results, rows, 'a', 'CPU cores at first failing step', 'failStep');
  const limits = ['switchboard', 'tutorial'].map((sys) => limitedBy(results['a']?.[sys]));
  if (results['a'] !== undefined)
    rows.push(['(a) limited by (at first failing step)', limits[0] ?? '—', limits[1] ?? '—', '']);
  row('b', 'server survived', 'serverAliveAtEnd', false);
  row('b', 'server failure', 'serverFailure', false);
  row('b', 'connections open after subscribing', 'connect.openAfterSubscribe', false);
  row('b', 'channels with a Redis subscriber', 'connect.subscribeConfirmedChannels', false);
  row('b', 'p50 (ms)', 'lastStep.latencyMs.p50', true);
  row('b', 'p99 (ms)', 'lastStep.latencyMs.p99', true);
  row('b', 'lost', 'lastStep.lost', true);
  row('b', 'delivered/s', 'lastStep.deliveredPerSec', false);
  cpuRow(results, rows, 'b', 'CPU cores during the run', 'lastStep');
  row('c', 'connections', 'connect.openAfterSubscribe', false);
  row('c', 'RSS before (KiB)', 'memory.serverRssBeforeKiB', true);
  row('c', 'RSS after (KiB)', 'memory.serverRssAfterConnectKiB', true);
  row('c', 'KiB per connection', 'memory.perConnectionKiB', true);
  return rows;
}

/**
 * What stopped scenario (a): a process is saturated when its main thread ran or waited for a CPU
 * for at least 85% of the failing step (CPU time + run-queue wait).
 * @param {unknown} sys
 */
function limitedBy(sys) {
  const stored = get(sys, 'steps');
  if (!Array.isArray(stored)) return undefined;
  /** @type {unknown[]} */
  const steps = stored;
  const fail = steps.find((s) => get(s, 'pass') === false && get(s, 'retried') !== true);
  if (fail === undefined) return 'not reached';
  /** @param {string} name */
  const busy = (name) => {
    const cpu = get(fail, `cpuCores.${name}`);
    const wait = get(fail, `cpuCores.${name}RunQueueWait`);
    return (typeof cpu === 'number' ? cpu : 0) + (typeof wait === 'number' ? wait : 0);
  };
  const server = busy('server') >= 0.85;
  const gen = busy('loadgen') >= 0.85;
  const detail = `srv ${round(busy('server'), 2)}, gen ${round(busy('loadgen'), 2)}`;
  if (server && gen) return `server and load generator (${detail})`;
  if (server) return `server (${detail})`;
  if (gen) return `load generator (${detail})`;
  return `neither saturated (${detail})`;
}

/**
 * A row of CPU use (server / load generator / other tenants) for one step of a scenario.
 * @param {Record<string, Record<string, unknown>>} results @param {string[][]} rows
 * @param {string} scen @param {string} label @param {string} which 'bestStep' | 'failStep' | a path
 */
function cpuRow(results, rows, scen, label, which) {
  const r = results[scen];
  if (r === undefined) return;
  /** @param {unknown} sys */
  const cell = (sys) => {
    const steps = get(sys, 'steps');
    if (!Array.isArray(steps)) return '—';
    /** @type {unknown} */
    let step;
    if (which === 'bestStep') {
      const best = get(sys, 'best.rate');
      step = steps.find((s) => get(s, 'rate') === best && get(s, 'pass') === true);
    } else if (which === 'failStep')
      step = steps.find((s) => get(s, 'pass') === false && get(s, 'retried') !== true);
    else step = get(sys, which);
    const cpu = get(step, 'cpuCores');
    if (cpu === undefined) return '—';
    return `srv ${fmt(get(cpu, 'server'))} / gen ${fmt(get(cpu, 'loadgen'))} / other ${fmt(get(cpu, 'others'))}`;
  };
  rows.push([`(${scen}) ${label}`, cell(r['switchboard']), cell(r['tutorial']), '']);
}

/** @param {string[][]} rows */
function table(rows) {
  const head = ['metric', 'switchboard', 'tutorial', 'switchboard vs tutorial'];
  const all = [head, ...rows];
  const widths = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const line = (/** @type {string[]} */ r) =>
    '| ' + r.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ') + ' |';
  return [
    line(head),
    '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|',
    ...rows.map(line),
  ].join('\n');
}

function machine() {
  const redisVersion = spawnSync('redis-server', ['--version']).stdout?.toString().trim();
  let kernel = '';
  try {
    kernel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {
    // not Linux
  }
  return {
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model,
    memoryGiB: round(totalmem() / 2 ** 30, 1),
    node: process.version,
    redis: redisVersion,
    kernel,
    loadavgAtStart: loadavg().map((x) => round(x, 2)),
    taskset: hasTaskset,
    benchFdLimit: fdLimit(process.pid),
  };
}

async function main() {
  if (o.summarize !== undefined) {
    const doc = parseJson(readFileSync(o.summarize, 'utf8'));
    /** @type {Record<string, Record<string, unknown>>} */
    const results = {};
    const stored = get(doc, 'results');
    if (typeof stored === 'object' && stored !== null) Object.assign(results, stored);
    process.stdout.write(`${table(summaryRows(results))}\n`);
    return;
  }
  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const outPath = o.out ?? join(here, 'results', `${stamp}${QUICK ? '-quick' : ''}.json`);
  const m = machine();
  log(`machine: ${m.nproc} cores, node ${m.node}, load ${m.loadavgAtStart.join(' ')}`);
  const cpu0 = machineCpu();
  await startRedis();
  /** @type {Record<string, Record<string, unknown>>} */
  const results = {};
  try {
    for (const scen of SCENARIOS) {
      const fn =
        scen === 'a' ? scenarioA : scen === 'b' ? scenarioB : scen === 'c' ? scenarioC : undefined;
      if (fn === undefined) {
        log(`unknown scenario ${scen}; skipped`);
        continue;
      }
      results[scen] = {};
      for (const system of SYSTEMS) {
        log(`scenario ${scen}: ${system}`);
        const t = Date.now();
        try {
          const r = await fn(system);
          results[scen][system] = { ...r, wallSeconds: round((Date.now() - t) / 1000, 1) };
        } catch (err) {
          results[scen][system] = { failed: true, error: String(err) };
          log(`scenario ${scen} ${system} failed: ${String(err)}`);
        }
      }
    }
  } finally {
    if (redis !== undefined) await stop(redis.child);
  }
  const cpu1 = machineCpu();
  const finishedAt = new Date();
  const doc = {
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    wallSeconds: round((finishedAt.getTime() - startedAt.getTime()) / 1000, 1),
    quick: QUICK,
    machine: m,
    machineBusyCoresAvg:
      cpu0 === undefined || cpu1 === undefined
        ? undefined
        : round((cpu1.busy - cpu0.busy) / ((finishedAt.getTime() - startedAt.getTime()) / 1000), 2),
    loadavgAtEnd: loadavg().map((x) => round(x, 2)),
    source: sourceState(),
    switchboardFlags: SB_FLAGS,
    redis: { maxclientsRequested: o['redis-maxclients'], maxclientsEffective: redis?.maxclients },
    options: {
      a: A,
      b: B,
      c: Cc,
      p99LimitMs: P99_LIMIT,
      sbPublishVia: o['sb-publish-via'],
      nice: NICE,
      quietWaitSeconds: QUIET_WAIT_S,
    },
    results,
  };
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, JSON.stringify(doc, null, 2) + '\n');
  const rows = summaryRows(results);
  process.stdout.write(`\n${table(rows)}\n\nresults: ${outPath} (${doc.wallSeconds} s)\n`);
}

main().catch(async (err) => {
  log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  if (redis !== undefined) await stop(redis.child);
  process.exit(1);
});
