#!/usr/bin/env node
/// <reference types="node" />
/**
 * Benchmark orchestrator: starts a private redis-server, runs each scenario against Switchboard
 * (Redis engine; once per WebSocket engine, uws and ws, when the server has `--engine`), the
 * tutorial baseline and the Socket.IO baseline, each system in its own process, writes
 * bench/results/<timestamp>.json, prints a summary table with Switchboard's ratio to each
 * baseline, and draws a chart (SVG). See docs/benchmarks.md.
 *
 * Scenarios:
 *   a  fan-out: 1 channel, many subscribers; step the publish rate up until loss or p99 blow-up.
 *   b  10k connections, each on its own channel plus one of 50 shared ones; steady publish rate.
 *   c  RSS per idle subscribed connection at 10k connections.
 *   d  resume storm: 10k clients drop, 100 messages per channel are published, all resume at once
 *      (Switchboard only: the baselines have no resume).
 *   e  as many connections as the fd limit allows (target 50k) held with heartbeats: server CPU
 *      over whole ping intervals, and RSS.
 *
 * Placement on a 2-core machine: the server under test alone on core 0; the load generator(s),
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
import {
  alive,
  cpuMeter,
  cpuSeconds,
  fdLimit,
  freePort,
  machineCpu,
  parseJson,
  round,
  rssKiB,
  sleep,
} from './lib.js';
import { renderChart, shortName } from './chart.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');
const SERVER_CLI = join(root, 'packages/server/dist/cli/main.js');
const TUTORIAL = join(here, 'baselines/tutorial.js');
const SOCKETIO = join(here, 'baselines/socketio.js');
const LOADGEN = join(here, 'loadgen.js');
const RESUME = join(here, 'resume.js');
const DOCS_CHART = join(root, 'docs/benchmarks-chart.svg');
const DEFAULT_SCENARIOS = 'a,b,c,d,e';
const DEFAULT_SYSTEMS = 'switchboard-uws,switchboard-ws,tutorial,socketio';

const { values: o } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    scenarios: { type: 'string', default: DEFAULT_SCENARIOS },
    systems: { type: 'string', default: DEFAULT_SYSTEMS },
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
    'd-clients': { type: 'string' },
    'd-channels': { type: 'string', default: '100' },
    'd-missed': { type: 'string', default: '100' },
    'd-timeout-seconds': { type: 'string', default: '120' },
    'e-target': { type: 'string' },
    'e-channels': { type: 'string', default: '50' },
    'e-ping-interval-ms': { type: 'string' },
    'e-window-seconds': { type: 'string' },
    'e-loadgens': { type: 'string', default: '0' },
    'e-fd-reserve': { type: 'string', default: '300' },
    'source-addresses': { type: 'string', default: '4' },
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
    'chart-only': { type: 'string' },
    'chart-out': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

if (o.help === true) {
  process.stdout.write(
    `Usage: node bench/run.js [--quick] [--scenarios ${DEFAULT_SCENARIOS}] [--systems ${DEFAULT_SYSTEMS}] [options]\n` +
      '       node bench/run.js --summarize <results.json> | --chart-only <results.json> [--chart-out <file.svg>]\n' +
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
const D = {
  clients: pick(o['d-clients'], 10_000, 500),
  channels: Number(o['d-channels']),
  missed: Number(o['d-missed']),
  timeoutSeconds: Number(o['d-timeout-seconds']),
};
const E_PING_MS = pick(o['e-ping-interval-ms'], 25_000, 5000);
const E = {
  /** The figure; the run holds as many as the fd limit allows, up to this. */
  target: pick(o['e-target'], 50_000, 2000),
  channels: Number(o['e-channels']),
  /** Every system's heartbeat interval in (e) (each one's default is 25 s). */
  pingIntervalMs: E_PING_MS,
  /** Two whole ping intervals: every connection is pinged twice whatever the phase. */
  windowSeconds: pick(o['e-window-seconds'], (2 * E_PING_MS) / 1000, (2 * E_PING_MS) / 1000),
  loadgens: Number(o['e-loadgens']),
  /** File descriptors a server keeps for itself (Redis, listening socket, Node internals). */
  fdReserve: Number(o['e-fd-reserve']),
};
const SOURCE_ADDRESSES = Number(o['source-addresses']);
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
 * allowed: `ulimit -n <nofile>`, else the hard limit. `tail` keeps its last 40 stderr lines, and
 * with `stdout: 'tail'` its stdout lines too (servers: Switchboard logs JSON lines on stdout; an
 * unread pipe would fill up and stall the server).
 * @param {string} cmd @param {string[]} args @param {number} core
 * @param {{stdout?: 'pipe' | 'ignore' | 'tail'}} [opts]
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
    stdio: ['ignore', opts.stdout === 'ignore' ? 'ignore' : 'pipe', 'pipe'],
    detached: true,
  });
  started.add(child);
  child.once('exit', () => started.delete(child));
  if (NICE !== 0 && child.pid !== undefined) setAutogroupNice(child.pid);
  /** @type {string[]} */
  const tail = [];
  const keep = (/** @type {unknown} */ d) => {
    for (const line of String(d).split('\n')) {
      if (line === '') continue;
      tail.push(line.length > 500 ? line.slice(0, 500) : line);
      if (tail.length > 40) tail.shift();
    }
  };
  child.stderr?.on('data', keep);
  if (opts.stdout === 'tail') child.stdout?.on('data', keep);
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

const SERVE_HELP =
  spawnSync(process.execPath, [SERVER_CLI, 'serve', '--help']).stdout?.toString() ?? '';

function switchboardFlags() {
  /** @type {string[]} */
  const flags = [];
  for (const [flag, value] of LIFTED_LIMITS)
    if (flag !== undefined && value !== undefined && SERVE_HELP.includes(flag + ' '))
      flags.push(flag, value);
  for (const extra of /** @type {string[]} */ (o['server-flag'] ?? []))
    flags.push(...extra.split('='));
  return flags;
}
const SB_FLAGS = switchboardFlags();

/** Whether this server build has `serve --engine uws|ws` (the uWebSockets.js engine). */
const ENGINE_FLAG = /--engine\b/.test(SERVE_HELP);

/**
 * Whether the module `uWebSockets.js` loads from the server package (the engine falls back to ws
 * when it does not; the bench then skips the uws run instead of measuring ws twice).
 * @returns {{loads: boolean, error?: string}}
 */
function uwsLoads() {
  const r = spawnSync(process.execPath, ['-e', "require('uWebSockets.js')"], {
    cwd: join(root, 'packages/server'),
  });
  if (r.status === 0) return { loads: true };
  const err =
    r.stderr
      ?.toString()
      .split('\n')
      .find((l) => /Error/.test(l)) ?? 'did not load';
  return { loads: false, error: err.trim().slice(0, 200) };
}
const UWS = uwsLoads();

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
 * A system under test: the protocol it speaks and, for Switchboard, the engine asked for; `skip`
 * says why it cannot run here (recorded in the results instead of a measurement).
 * @typedef {{ name: string, kind: 'switchboard' | 'ably' | 'tutorial' | 'socketio', engine?: string, skip?: string }} SystemDef
 */

/** @param {string} name @returns {SystemDef} */
function systemDef(name) {
  if (name === 'tutorial' || name === 'socketio') return { name, kind: name };
  if (name === 'switchboard') return { name, kind: 'switchboard' };
  // `-ably`: the same server with Ably-SDK-shaped subscribers (loadgen --system ably).
  const m = /^switchboard-(uws|ws)(-ably)?$/.exec(name);
  if (m === null) return { name, kind: 'switchboard', skip: `unknown system ${name}` };
  const engine = m[1] ?? 'ws';
  if (m[2] !== undefined) {
    const base = systemDef(`switchboard-${engine}`);
    return { ...base, name, kind: 'ably' };
  }
  if (engine === 'uws' && !ENGINE_FLAG)
    return { name, kind: 'switchboard', engine, skip: 'this server build has no --engine' };
  if (engine === 'uws' && !UWS.loads)
    return {
      name,
      kind: 'switchboard',
      engine,
      skip: `uWebSockets.js does not load (${UWS.error ?? '?'})`,
    };
  return { name, kind: 'switchboard', engine };
}

/**
 * @typedef {{
 *   def: SystemDef, pid: number, port: number, url: string, publishUrl: string, watch: string,
 *   procs: {child: import('node:child_process').ChildProcess, tail: string[], name: string}[]
 * }} Running
 * @typedef {{ ingress?: boolean, heartbeatMs?: number }} StartOptions
 */

/** @param {SystemDef} def @param {StartOptions} [opts] @returns {Promise<Running>} */
async function startSystem(def, opts = {}) {
  if (redis === undefined) throw new Error('redis not started');
  const port = await freePort();
  if (def.kind === 'tutorial' || def.kind === 'socketio') {
    const tutorial = def.kind === 'tutorial';
    const args = [
      ...NODE_FLAGS,
      tutorial ? TUTORIAL : SOCKETIO,
      '--port',
      String(port),
      '--redis',
      redis.url,
    ];
    if (opts.heartbeatMs !== undefined)
      args.push(tutorial ? '--heartbeat-ms' : '--ping-interval-ms', String(opts.heartbeatMs));
    const proc = spawnPinned(process.execPath, args, 0, { stdout: 'tail' });
    await waitPort(port, 10_000);
    return {
      def,
      pid: proc.child.pid ?? 0,
      port,
      url: tutorial
        ? `ws://127.0.0.1:${port}/ws`
        : `ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`,
      publishUrl: redis.url,
      watch: '',
      procs: [{ ...proc, name: def.name }],
    };
  }
  const engineFlags = def.engine !== undefined && ENGINE_FLAG ? ['--engine', def.engine] : [];
  const heartbeat =
    opts.heartbeatMs === undefined ? [] : ['--ping-interval-ms', String(opts.heartbeatMs)];
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
        ...engineFlags,
        ...heartbeat,
        ...SB_FLAGS,
      ],
      core,
      { stdout: 'tail' },
    );
  const node = serve(port, 0);
  /** @type {Running['procs']} */
  const procs = [{ ...node, name: def.name }];
  await waitPort(port, 10_000);
  let publishUrl = `ws://127.0.0.1:${port}/ws`;
  let watch = '';
  if (opts.ingress !== false && o['sb-publish-via'] === 'ingress') {
    const ingressPort = await freePort();
    const ingress = serve(ingressPort, 1);
    procs.push({ ...ingress, name: 'ingress' });
    await waitPort(ingressPort, 10_000);
    publishUrl = `ws://127.0.0.1:${ingressPort}/ws`;
    watch = `ingress=${ingress.child.pid ?? 0}`;
  }
  return {
    def,
    pid: node.child.pid ?? 0,
    port,
    url:
      def.kind === 'ably'
        ? `ws://127.0.0.1:${port}/?v=6&format=msgpack&heartbeats=false`
        : `ws://127.0.0.1:${port}/ws`,
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
 * Runs a load-generating script (pinned to core 1) with `args`; resolves with the JSON report on
 * its last stdout line, or a failure record.
 * @param {string} script @param {string[]} args @param {number} timeoutMs
 */
function runScript(script, args, timeoutMs) {
  /** @type {Promise<Record<string, unknown>>} */
  const report = new Promise((resolve) => {
    const { child } = spawnPinned(process.execPath, [...NODE_FLAGS, script, ...args], 1);
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
      log(`${script} exceeded ${Math.round(timeoutMs / 1000)} s; stopping it`);
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
 * Starts the system on a flushed Redis, lets `body` measure it, stops it, and adds what happened
 * to its processes.
 * @param {SystemDef} def @param {StartOptions} startOpts
 * @param {(sys: Running) => Promise<Record<string, unknown>>} body
 */
async function withSystem(def, startOpts, body) {
  await flushRedis();
  const quiet = QUIET_WAIT_S > 0 ? await waitQuiet() : undefined;
  const sys = await startSystem(def, startOpts);
  await sleep(1500);
  const fd = fdLimit(sys.pid);
  /** @type {Record<string, unknown>} */
  let report = {};
  let serverAlive = false;
  /** @type {Record<string, unknown>} */
  let exits = {};
  try {
    report = await body(sys);
  } finally {
    serverAlive = alive(sys.pid);
    exits = await stopSystem(sys);
  }
  await sleep(1000);
  /** The first error line a crashed process printed, e.g. why the tutorial died. */
  let serverFailure;
  for (const [name, exit] of Object.entries(exits)) {
    const tail = /** @type {{stderrTail?: string[]}} */ (exit).stderrTail ?? [];
    const line = tail.find((l) => /^\w*Error\b|Error:/.test(l.trim()));
    const text = line?.trim() ?? 'no error printed';
    serverFailure ??= `${name} exited: ${text.length > 90 ? text.slice(0, 87) + '...' : text}`;
  }
  /** What the server said about its engine (e.g. a fallback from uws to ws). */
  const engineNotes = sys.procs
    .flatMap((p) => p.tail)
    .filter((l) => /uws|uWebSockets|engine|fall(ing)? back/i.test(l))
    .slice(0, 5);
  /** The measured server's last output lines (Switchboard: its warnings, --log-level warn). */
  const serverLogTail = (sys.procs[0]?.tail ?? []).slice(-5).map((l) => l.slice(0, 300));
  return {
    ...report,
    serverLogTail: serverLogTail.length > 0 ? serverLogTail : undefined,
    engine: def.engine,
    engineFlagPassed: def.engine !== undefined && ENGINE_FLAG,
    engineNotes: engineNotes.length > 0 ? engineNotes : undefined,
    serverFailure,
    serverFdLimit: fd,
    serverAliveAtEnd: serverAlive,
    processExits: exits,
    othersBusyCoresBeforeStart: quiet?.busyCores,
  };
}

/**
 * Starts the system, runs the load generator against it, stops it.
 * @param {SystemDef} def @param {string[]} args @param {number} timeoutMs
 */
function runAgainst(def, args, timeoutMs) {
  return withSystem(def, {}, (sys) =>
    runScript(LOADGEN, [...loadgenCommon(sys), ...args], timeoutMs),
  );
}

/** @param {Running} sys */
function loadgenCommon(sys) {
  if (redis === undefined) throw new Error('redis not started');
  return [
    '--system',
    sys.def.kind,
    '--name',
    sys.def.name,
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

/** @param {SystemDef} def */
function scenarioA(def) {
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
  return runAgainst(def, args, budget);
}

/** @param {SystemDef} def */
function scenarioB(def) {
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
  return runAgainst(def, args, 150_000 + B.seconds * 1000);
}

/** @param {SystemDef} def */
function scenarioC(def) {
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
  return runAgainst(def, args, 150_000);
}

/**
 * (d) Resume storm, with bench/resume.js as the load generator against the measured node (the
 * missed messages are published through its HTTP API while every client is away).
 * @param {SystemDef} def
 */
async function scenarioD(def) {
  if (def.kind !== 'switchboard') return { na: 'n/a — no resume' };
  return withSystem(def, { ingress: false }, (sys) =>
    runScript(
      RESUME,
      [
        '--url',
        sys.url,
        '--server-pid',
        String(sys.pid),
        '--clients',
        String(D.clients),
        '--channels',
        String(D.channels),
        '--missed',
        String(D.missed),
        '--source-addresses',
        String(SOURCE_ADDRESSES),
        '--timeout-seconds',
        String(D.timeoutSeconds),
      ],
      180_000 + D.timeoutSeconds * 1000,
    ),
  );
}

/**
 * A load generator in --hold mode: `ready` resolves with its `{"ready":true,…}` line (undefined if
 * it exits first), `report` with its final report after SIGUSR2.
 * @param {string[]} args
 */
function spawnHolder(args) {
  const { child } = spawnPinned(process.execPath, [...NODE_FLAGS, LOADGEN, ...args], 1);
  /** @type {(v: Record<string, unknown> | undefined) => void} */
  let onReady = () => {};
  /** @type {Promise<Record<string, unknown> | undefined>} */
  const ready = new Promise((resolve) => (onReady = resolve));
  let out = '';
  /** @type {Record<string, unknown> | undefined} */
  let last;
  child.stdout?.on('data', (d) => {
    out += String(d);
    let nl;
    while ((nl = out.indexOf('\n')) !== -1) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      let parsed;
      try {
        parsed = parseJson(line);
      } catch {
        continue;
      }
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) continue;
      const rec = /** @type {Record<string, unknown>} */ (parsed);
      if (rec['ready'] === true) onReady(rec);
      else last = rec;
    }
  });
  child.stderr?.on('data', (d) => process.stderr.write(String(d)));
  /** @type {Promise<Record<string, unknown>>} */
  const report = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      onReady(undefined);
      resolve(last ?? { failed: true, exitCode: code, signal });
    }),
  );
  return { child, ready, report };
}

/**
 * `promise`, or undefined after `ms` (the timer is cleared either way).
 * @template T @param {Promise<T>} promise @param {number} ms @returns {Promise<T | undefined>}
 */
async function withTimeout(promise, ms) {
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  /** @type {Promise<undefined>} */
  const expiry = new Promise((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  try {
    return await Promise.race([promise, expiry]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * (e) Connections held with heartbeats: as many as the server's fd limit allows, up to E.target,
 * spread over as many load generator processes as their own fd limits need and over
 * SOURCE_ADDRESSES source addresses; then the server's CPU over E.windowSeconds (whole ping
 * intervals) and its RSS, with both scaled to the target.
 * @param {SystemDef} def
 */
function scenarioE(def) {
  return withSystem(def, { ingress: false, heartbeatMs: E.pingIntervalMs }, async (sys) => {
    const fd = fdLimit(sys.pid);
    const soft = fd === undefined || fd.soft === 'unlimited' ? Infinity : Number(fd.soft);
    const fdCap = soft - E.fdReserve;
    const reachable = Math.max(0, Math.min(E.target, fdCap));
    // Each load generator is started the same way, so it has the same fd limit.
    const perGen = Math.max(1000, fdCap);
    const gens = Math.max(E.loadgens, Math.ceil(reachable / perGen), 1);
    const limitReason =
      reachable < E.target
        ? `file descriptors: the server process may open ${fd?.soft ?? '?'} files (hard limit ` +
          `${fd?.hard ?? '?'}; asked for ${String(o.nofile)}, which needs CAP_SYS_RESOURCE), ` +
          `${E.fdReserve} kept for its own use`
        : undefined;
    log(
      `(e) ${def.name}: target ${E.target}, holding ${reachable} over ${gens} load generator(s)` +
        (limitReason === undefined ? '' : ` (${limitReason})`),
    );
    const rssBefore = rssKiB(sys.pid);
    const holders = Array.from({ length: gens }, (_, g) => {
      const share = Math.floor(reachable / gens) + (g < reachable % gens ? 1 : 0);
      return spawnHolder([
        ...loadgenCommon(sys),
        '--label',
        `e${gens > 1 ? g : ''}`,
        '--connections',
        String(share),
        '--channels',
        String(E.channels),
        '--idle-seconds',
        '1',
        '--subscribe-timeout-seconds',
        '120',
        '--source-addresses',
        String(SOURCE_ADDRESSES),
        '--hold',
        '--hold-max-seconds',
        String(E.windowSeconds + 600),
      ]);
    });
    const t0 = Date.now();
    const readies = await Promise.all(holders.map((h) => withTimeout(h.ready, 600_000)));
    const connectSeconds = round((Date.now() - t0) / 1000, 1);
    const held = readies.reduce((n, r) => n + Number(r?.['open'] ?? 0), 0);
    log(`(e) ${def.name}: ${held} connections open after ${connectSeconds} s; settling`);
    await sleep(3000);
    const rssConnected = rssKiB(sys.pid);
    /** @type {Record<string, number>} */
    const pids = { server: sys.pid };
    holders.forEach((h, g) => (pids[`loadgen${gens > 1 ? g : ''}`] = h.child.pid ?? 0));
    // The window: the load generators count heartbeats from the first SIGUSR2 to the second.
    for (const h of holders) h.child.kill('SIGUSR2');
    const meter = cpuMeter(pids);
    const cpuStart = cpuSeconds(sys.pid);
    const windowStart = performance.now();
    await sleep(E.windowSeconds * 1000);
    const cpu = meter();
    const cpuEnd = cpuSeconds(sys.pid);
    const windowSeconds = (performance.now() - windowStart) / 1000;
    const rssAfter = rssKiB(sys.pid);
    for (const h of holders) h.child.kill('SIGUSR2');
    const reports = await Promise.all(
      holders.map(async (h) => {
        const r = await withTimeout(h.report, 30_000);
        if (r !== undefined) return r;
        h.child.kill('SIGKILL');
        return /** @type {Record<string, unknown>} */ ({ failed: true, error: 'no report' });
      }),
    );
    const sum = (/** @type {string} */ path) =>
      reports.reduce(
        (n, r) => n + (typeof get(r, path) === 'number' ? Number(get(r, path)) : 0),
        0,
      );
    const pings = sum('hold.pingsReceived');
    const holdSeconds = Math.max(...reports.map((r) => Number(get(r, 'hold.seconds') ?? 0)));
    // From the raw CPU times: cpuMeter rounds to 0.01 core, too coarse for an idle server.
    const percent =
      cpuStart === undefined || cpuEnd === undefined
        ? undefined
        : ((cpuEnd - cpuStart) / windowSeconds) * 100;
    const perConnKiB =
      rssBefore === undefined || rssAfter === undefined || held === 0
        ? undefined
        : (rssAfter - rssBefore) / held;
    const connectFailures = sum('connect.connectFailures');
    return {
      targetConnections: E.target,
      reachableConnections: reachable,
      connections: held,
      openAtEnd: sum('hold.openAtEnd'),
      disconnectsDuringWindow: sum('hold.disconnects'),
      connectFailures,
      firstConnectError: reports.map((r) => get(r, 'connect.firstConnectError')).find(Boolean),
      limitedBy:
        limitReason ??
        (held < reachable ? `connections failed (${connectFailures} connect failures)` : 'target'),
      loadgens: gens,
      sourceAddresses: SOURCE_ADDRESSES,
      connectSeconds,
      pingIntervalMs: E.pingIntervalMs,
      windowSeconds: E.windowSeconds,
      cpuCores: cpu,
      measuredWindowSeconds: round(windowSeconds, 1),
      serverCpuPercentOfCore: percent === undefined ? undefined : round(percent, 2),
      /** Linear in connections (the heartbeat's cost is per connection; the idle floor is ~0). */
      projectedCpuPercentAtTarget:
        percent === undefined || held === 0 ? undefined : round((percent * E.target) / held, 1),
      serverRssKiB: { before: rssBefore, connected: rssConnected, after: rssAfter },
      rssPerConnectionKiB: perConnKiB === undefined ? undefined : round(perConnKiB, 2),
      projectedRssMiBAtTarget:
        perConnKiB === undefined || rssBefore === undefined
          ? undefined
          : round((rssBefore + perConnKiB * E.target) / 1024, 0),
      /** Heartbeats each connection received per ping interval while held (~1 when working). */
      heartbeatsPerConnectionPerInterval:
        held === 0 || holdSeconds === 0
          ? undefined
          : round(pings / held / ((holdSeconds * 1000) / E.pingIntervalMs), 2),
      loadgenReports: reports,
    };
  });
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
  if (typeof x === 'boolean') return x ? 'yes' : 'no';
  return typeof x === 'string' ? x : JSON.stringify(x);
}

/** @param {unknown} a @param {unknown} b @param {boolean} lowerIsBetter */
function ratio(a, b, lowerIsBetter) {
  if (typeof a !== 'number' || typeof b !== 'number' || a <= 0 || b <= 0) return '—';
  return `${round(lowerIsBetter ? b / a : a / b, 2)}×`;
}

/**
 * One row of the summary: `path` into each system's result, or `cell` for composite cells;
 * `better` makes ratio cells (Switchboard ÷ baseline, or the inverse when lower is better).
 * @typedef {{ scen: string, label: string, path?: string, better?: 'higher' | 'lower',
 *   cell?: (r: unknown) => string }} RowSpec
 */

/** @type {RowSpec[]} */
const ROWS = [
  { scen: 'a', label: 'max rate with 0 loss (msg/s)', path: 'best.rate', better: 'higher' },
  {
    scen: 'a',
    label: 'deliveries/s at that rate',
    path: 'best.deliveredPerSec',
    better: 'higher',
  },
  { scen: 'a', label: 'p99 at that rate (ms)', path: 'best.latencyMs.p99', better: 'lower' },
  {
    scen: 'a',
    label: 'deliveries per server CPU-second there',
    path: 'best.deliveriesPerServerCpuSecond',
    better: 'higher',
  },
  { scen: 'a', label: 'first failing rate (msg/s)', path: 'firstFailure' },
  { scen: 'a', label: 'CPU cores at last passing step', cell: (r) => cpuCell(r, 'bestStep') },
  { scen: 'a', label: 'CPU cores at first failing step', cell: (r) => cpuCell(r, 'failStep') },
  { scen: 'a', label: 'limited by (at first failing step)', cell: (r) => limitedBy(r) ?? '—' },
  { scen: 'b', label: 'server survived', path: 'serverAliveAtEnd' },
  { scen: 'b', label: 'server failure', path: 'serverFailure' },
  { scen: 'b', label: 'connections open after subscribing', path: 'connect.openAfterSubscribe' },
  {
    scen: 'b',
    label: 'channels with a Redis subscriber',
    path: 'connect.subscribeConfirmedChannels',
  },
  { scen: 'b', label: 'p50 (ms)', path: 'lastStep.latencyMs.p50', better: 'lower' },
  { scen: 'b', label: 'p99 (ms)', path: 'lastStep.latencyMs.p99', better: 'lower' },
  { scen: 'b', label: 'lost', path: 'lastStep.lost' },
  { scen: 'b', label: 'delivered/s', path: 'lastStep.deliveredPerSec', better: 'higher' },
  { scen: 'b', label: 'CPU cores during the run', cell: (r) => cpuCell(r, 'lastStep') },
  { scen: 'c', label: 'connections', path: 'connect.openAfterSubscribe' },
  { scen: 'c', label: 'RSS before (KiB)', path: 'memory.serverRssBeforeKiB' },
  { scen: 'c', label: 'RSS after (KiB)', path: 'memory.serverRssAfterConnectKiB' },
  { scen: 'c', label: 'KiB per connection', path: 'memory.perConnectionKiB', better: 'lower' },
  { scen: 'd', label: 'clients resuming at once', path: 'storm.clients' },
  { scen: 'd', label: 'recovered: true', path: 'storm.recovered' },
  { scen: 'd', label: 'lost / duplicated', cell: (r) => pair(r, 'storm.lost', 'storm.duplicated') },
  {
    scen: 'd',
    label: 'subscribes retried after a temporary error / failed',
    cell: (r) => pair(r, 'storm.retries', 'storm.resubscribeFailures'),
  },
  { scen: 'd', label: 'all subscribes answered (ms)', path: 'storm.allRepliedMs' },
  { scen: 'd', label: 'all clients caught up (ms)', path: 'storm.allCaughtUpMs' },
  {
    scen: 'd',
    label: 'per-client recovery p50 / p99 (ms)',
    cell: (r) => pair(r, 'storm.recoveryMs.p50', 'storm.recoveryMs.p99'),
  },
  { scen: 'd', label: 'server CPU-seconds during the storm', path: 'storm.serverCpuSeconds' },
  { scen: 'd', label: 'one client 1,000 behind: catch-up (ms)', path: 'catchup.ms' },
  { scen: 'e', label: 'connections: target', path: 'targetConnections' },
  { scen: 'e', label: 'connections held', path: 'connections' },
  { scen: 'e', label: 'limited by', path: 'limitedBy' },
  {
    scen: 'e',
    label: 'ping interval (ms) / window (s)',
    cell: (r) => pair(r, 'pingIntervalMs', 'windowSeconds'),
  },
  {
    scen: 'e',
    label: 'server CPU, % of one core',
    path: 'serverCpuPercentOfCore',
    better: 'lower',
  },
  {
    scen: 'e',
    label: 'server CPU scaled to the target, % of one core',
    path: 'projectedCpuPercentAtTarget',
    better: 'lower',
  },
  { scen: 'e', label: 'RSS after (KiB)', path: 'serverRssKiB.after' },
  { scen: 'e', label: 'KiB per connection', path: 'rssPerConnectionKiB', better: 'lower' },
  {
    scen: 'e',
    label: 'heartbeats per connection per interval',
    path: 'heartbeatsPerConnectionPerInterval',
  },
  { scen: 'e', label: 'disconnects during the window', path: 'disconnectsDuringWindow' },
];

/** @param {unknown} r @param {string} a @param {string} b */
function pair(r, a, b) {
  return `${fmt(get(r, a))} / ${fmt(get(r, b))}`;
}

/**
 * Columns: every system in the results; then, for every Switchboard system, its ratio to each
 * baseline ("how many times better": > 1 means Switchboard is better).
 * @param {Record<string, Record<string, unknown>>} results
 */
function columns(results) {
  /** @type {string[]} */
  const systems = [];
  for (const bySystem of Object.values(results))
    for (const name of Object.keys(bySystem)) if (!systems.includes(name)) systems.push(name);
  const order = ['switchboard-uws', 'switchboard-ws', 'switchboard', 'tutorial', 'socketio'];
  systems.sort((x, y) => (order.indexOf(x) + 1 || 99) - (order.indexOf(y) + 1 || 99));
  const ours = systems.filter((s) => s.startsWith('switchboard'));
  const baselines = systems.filter((s) => !s.startsWith('switchboard'));
  /** @type {[string, string][]} */
  const ratios = [];
  for (const sb of ours) for (const base of baselines) ratios.push([sb, base]);
  return { systems, ratios };
}

/** @param {Record<string, Record<string, unknown>>} results */
function summaryRows(results) {
  const { systems, ratios } = columns(results);
  const head = [
    'metric',
    ...systems.map(shortName),
    ...ratios.map(([sb, base]) => `${shortName(sb)} vs ${shortName(base)}`),
  ];
  /** @type {string[][]} */
  const rows = [];
  /** @type {Set<string>} */
  const noted = new Set();
  for (const spec of ROWS) {
    const bySystem = results[spec.scen];
    if (bySystem === undefined) continue;
    const cells = systems.map((name) => {
      const r = bySystem[name];
      if (r === undefined) return '';
      // A system that did not run: say why in the scenario's first row only.
      const why =
        typeof r['skipped'] === 'string'
          ? `skipped: ${r['skipped']}`
          : typeof r['na'] === 'string'
            ? r['na']
            : r['failed'] === true && r['connect'] === undefined && r['storm'] === undefined
              ? `failed: ${fmt(r['error'] ?? r['stderrTail'] ?? '?').slice(0, 80)}`
              : undefined;
      if (why !== undefined) {
        const key = `${spec.scen}/${name}`;
        if (noted.has(key)) return '';
        noted.add(key);
        return why;
      }
      return spec.cell !== undefined ? spec.cell(r) : fmt(get(r, spec.path ?? ''));
    });
    const ratioCells = ratios.map(([sb, base]) =>
      spec.better === undefined || spec.path === undefined
        ? ''
        : ratio(
            get(bySystem[sb], spec.path),
            get(bySystem[base], spec.path),
            spec.better === 'lower',
          ),
    );
    rows.push([`(${spec.scen}) ${spec.label}`, ...cells, ...ratioCells]);
  }
  return { head, rows };
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
 * CPU use (server / load generator / other tenants) during one step of a system's run.
 * @param {unknown} sys @param {string} which 'bestStep' | 'failStep' | a path
 */
function cpuCell(sys, which) {
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
}

/** @param {{head: string[], rows: string[][]}} t */
function table({ head, rows }) {
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

/** Installed version of a package (from its package.json), or undefined. @param {string} name */
function version(name) {
  try {
    const pkg = parseJson(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8'));
    const v = get(pkg, 'version');
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
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
    packages: Object.fromEntries(
      ['ws', 'ioredis', 'socket.io', '@socket.io/redis-adapter', '@socket.io/redis-emitter'].map(
        (p) => [p, version(p)],
      ),
    ),
    switchboardEngines: { engineFlag: ENGINE_FLAG, uwsLoads: UWS.loads, uwsError: UWS.error },
  };
}

/** @param {string} path @returns {Record<string, unknown>} */
function readResults(path) {
  const doc = parseJson(readFileSync(path, 'utf8'));
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw new Error(`${path}: not a results document`);
  return /** @type {Record<string, unknown>} */ (doc);
}

/** @param {Record<string, unknown>} doc */
function resultsOf(doc) {
  /** @type {Record<string, Record<string, unknown>>} */
  const results = {};
  const stored = get(doc, 'results');
  if (typeof stored === 'object' && stored !== null) Object.assign(results, stored);
  return results;
}

/** @param {Record<string, unknown>} doc @param {string} path */
function writeChart(doc, path) {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, renderChart(doc));
  log(`chart: ${path}`);
}

async function main() {
  if (o.summarize !== undefined) {
    process.stdout.write(`${table(summaryRows(resultsOf(readResults(o.summarize))))}\n`);
    return;
  }
  if (o['chart-only'] !== undefined) {
    writeChart(readResults(o['chart-only']), o['chart-out'] ?? DOCS_CHART);
    return;
  }
  const startedAt = new Date();
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const outPath = o.out ?? join(here, 'results', `${stamp}${QUICK ? '-quick' : ''}.json`);
  const m = machine();
  log(`machine: ${m.nproc} cores, node ${m.node}, load ${m.loadavgAtStart.join(' ')}`);
  log(
    `engines: --engine ${ENGINE_FLAG ? 'supported' : 'not in this build'}; uWebSockets.js ` +
      (UWS.loads ? 'loads' : `does not load (${UWS.error ?? '?'})`),
  );
  const defs = SYSTEMS.map(systemDef);
  for (const def of defs) if (def.skip !== undefined) log(`${def.name}: skipped: ${def.skip}`);
  const cpu0 = machineCpu();
  await startRedis();
  /** @type {Record<string, Record<string, unknown>>} */
  const results = {};
  try {
    for (const scen of SCENARIOS) {
      const fn = { a: scenarioA, b: scenarioB, c: scenarioC, d: scenarioD, e: scenarioE }[scen];
      if (fn === undefined) {
        log(`unknown scenario ${scen}; skipped`);
        continue;
      }
      const bySystem = (results[scen] = /** @type {Record<string, unknown>} */ ({}));
      for (const def of defs) {
        if (def.skip !== undefined) {
          bySystem[def.name] = { skipped: def.skip };
          continue;
        }
        log(`scenario ${scen}: ${def.name}`);
        const t = Date.now();
        try {
          const r = await fn(def);
          bySystem[def.name] = { ...r, wallSeconds: round((Date.now() - t) / 1000, 1) };
        } catch (err) {
          bySystem[def.name] = { failed: true, error: String(err) };
          log(`scenario ${scen} ${def.name} failed: ${String(err)}`);
        }
      }
    }
  } finally {
    if (redis !== undefined) await stop(redis.child);
  }
  const cpu1 = machineCpu();
  const finishedAt = new Date();
  const summary = table(summaryRows(results));
  const doc = {
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    wallSeconds: round((finishedAt.getTime() - startedAt.getTime()) / 1000, 1),
    quick: QUICK,
    command: process.argv.slice(2),
    machine: m,
    machineBusyCoresAvg:
      cpu0 === undefined || cpu1 === undefined
        ? undefined
        : round((cpu1.busy - cpu0.busy) / ((finishedAt.getTime() - startedAt.getTime()) / 1000), 2),
    loadavgAtEnd: loadavg().map((x) => round(x, 2)),
    source: sourceState(),
    switchboardFlags: SB_FLAGS,
    systems: defs,
    redis: { maxclientsRequested: o['redis-maxclients'], maxclientsEffective: redis?.maxclients },
    options: {
      a: A,
      b: B,
      c: Cc,
      d: D,
      e: E,
      sourceAddresses: SOURCE_ADDRESSES,
      p99LimitMs: P99_LIMIT,
      sbPublishVia: o['sb-publish-via'],
      nice: NICE,
      quietWaitSeconds: QUIET_WAIT_S,
    },
    results,
    /** The printed summary (markdown); ratios are "how many times better Switchboard is". */
    summaryTable: summary,
  };
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, JSON.stringify(doc, null, 2) + '\n');
  // The chart beside the results; a full default run also refreshes the one docs/ embeds.
  writeChart(doc, o['chart-out'] ?? outPath.replace(/\.json$/, '') + '.svg');
  const fullDefault =
    !QUICK &&
    o['chart-out'] === undefined &&
    o.scenarios === DEFAULT_SCENARIOS &&
    o.systems === DEFAULT_SYSTEMS;
  if (fullDefault) writeChart(doc, DOCS_CHART);
  process.stdout.write(`\n${summary}\n\nresults: ${outPath} (${doc.wallSeconds} s)\n`);
}

main().catch(async (err) => {
  log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  if (redis !== undefined) await stop(redis.child);
  process.exit(1);
});
