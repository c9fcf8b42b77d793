#!/usr/bin/env node
/// <reference types="node" />
/**
 * End-to-end publish throughput (#10 point 4): one `switchboard serve` node on one redis-server,
 * and on a 3-master Redis Cluster (`redis-cli --cluster create`, free ports), history on (the
 * default namespace keeps 1,000 messages). A separate load-generator process
 * (bench/publish-loadgen.js) publishes over WebSocket with acknowledgements: N connections × M in
 * flight over 1,000 channels. Reports acknowledged publishes/s, p50/p99 ack latency, and the CPU
 * of every process (node, loadgen, each redis-server) over the measured window, plus the machine's
 * load and what other tenants used. Placement on 2 cores: the node alone on core 0, the loadgen
 * and the redis-servers on core 1 (--no-pin: let the kernel place them).
 *
 *   node bench/publish-load.js [--mode single|cluster|both] [--connections 4] [--inflight 256]
 *     [--channels 1000] [--seconds 10] [--batch N] [--message-ids] [--no-pin] [--replica]
 *
 * `--batch` sets SWITCHBOARD_REDIS_PUBLISH_BATCH on the node (1: one script call per publish).
 * `--replica` (single mode only): the redis-server gets one replica and the node waits for it
 * (SWITCHBOARD_REDIS_WAIT_REPLICAS=1): every publish is gated (redis-wait.ts), and the report adds
 * WAIT calls per publish and how the held payloads went out (gatedStats).
 * Writes bench/results/<time>-publish-load.json and prints it. Every run is bounded by --timeout.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  cpuMeter,
  killTracked,
  parseJson,
  pinned,
  redisCli,
  startNode,
  startRedis,
  startRedisCluster,
  stop,
  track,
  writeResult,
} from './lib.js';

const { values: o } = parseArgs({
  options: {
    mode: { type: 'string', default: 'both' },
    connections: { type: 'string', default: '4' },
    inflight: { type: 'string', default: '256' },
    channels: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    batch: { type: 'string' },
    engine: { type: 'string', default: 'uws' },
    'message-ids': { type: 'boolean', default: false },
    'no-pin': { type: 'boolean', default: false },
    replica: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '180' },
  },
});
const PIN = !o['no-pin'];
const NODE_CORE = PIN ? 0 : undefined;
const LOAD_CORE = PIN ? 1 : undefined;
const LOADGEN = fileURLToPath(new URL('./publish-loadgen.js', import.meta.url));

const deadline = setTimeout(
  () => {
    process.stderr.write(`publish-load: over ${o.timeout} s, giving up\n`);
    killTracked('SIGKILL');
    process.exit(1);
  },
  Number(o.timeout) * 1000,
);
deadline.unref();

/**
 * Runs the loadgen against `url`; CPU of `pids` is metered over its measured window.
 * @param {string} url @param {Record<string, number>} pids @returns {Promise<object>}
 */
function drive(url, pids) {
  const args = ['--url', url, '--connections', String(o.connections)];
  args.push('--inflight', String(o.inflight), '--channels', String(o.channels));
  args.push('--seconds', String(o.seconds), '--warmup', String(o.warmup));
  if (o['message-ids']) args.push('--message-ids');
  const [cmd, argv] = pinned(LOAD_CORE, [process.execPath, LOADGEN, ...args]);
  const child = track(spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'inherit'] }));
  return new Promise((resolve, reject) => {
    /** @type {(() => Record<string, number | null>) | undefined} */
    let meter;
    /** @type {Record<string, number | null> | undefined} */
    let cpu;
    let load = loadavg();
    let buf = '';
    /** @type {unknown} */
    let report;
    child.stdout.on('data', (d) => {
      buf += String(d);
      for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const msg = /** @type {{ event?: string }} */ (parseJson(line));
        if (msg.event === 'measuring') {
          meter = cpuMeter({ ...pids, loadgen: /** @type {number} */ (child.pid) });
          load = loadavg();
        } else if (msg.event === 'measured') cpu = meter?.();
        else report = msg;
      }
    });
    child.on('exit', (code) => {
      if (code !== 0 || report === undefined) reject(new Error(`loadgen exited ${code}`));
      else {
        const acked = /** @type {{ ackedPerSec?: number }} */ (report).ackedPerSec ?? 0;
        const nodeCores = cpu?.['node'] ?? null;
        resolve({
          .../** @type {object} */ (report),
          // The node's CPU per acknowledged publish: what one core would cap it at.
          nodeCpuUsPerPublish:
            nodeCores === null || acked === 0 ? null : Math.round((nodeCores * 1e6) / acked),
          cpuCores: cpu,
          loadavg: load.map((x) => Math.round(x * 100) / 100),
        });
      }
    });
  });
}

/** Script calls and their Redis-side time per publish, from INFO commandstats. @param {number} port */
function scriptStats(port) {
  const info = redisCli(port, 'info', 'commandstats');
  let calls = 0;
  let usec = 0;
  for (const m of info.matchAll(/^cmdstat_eval(?:sha)?:calls=(\d+),usec=(\d+)/gm)) {
    calls += Number(m[1]);
    usec += Number(m[2]);
  }
  const pub = /^cmdstat_publish:calls=(\d+)/m.exec(info);
  const spub = /^cmdstat_spublish:calls=(\d+)/m.exec(info);
  const messages = Number(pub?.[1] ?? 0) + Number(spub?.[1] ?? 0);
  return {
    scriptCalls: calls,
    messages,
    messagesPerCall: calls === 0 ? null : Math.round((messages / calls) * 10) / 10,
    scriptUsecPerMessage: messages === 0 ? null : Math.round((usec / messages) * 100) / 100,
  };
}

/**
 * WAIT calls per publish, and how the held payloads went out: per message, fan-out script calls
 * and top-level PUBLISHes (those the node sent, not those a script called). INFO commandstats
 * counts are exact but cannot tell these apart (a PUBLISH a script makes is a PUBLISH there, and
 * both scripts are EVALSHA), so they are counted in the SLOWLOG, which keeps every command of the
 * run (threshold 0, up to `SLOWLOG_LEN`; a script's own commands show the client `?:0`; a blocking
 * WAIT is not logged). The fan-out script is told from the publish script by its SHA (from the
 * built packages/server/dist; absent before fanoutManyLua existed) or, for the EVAL that loads
 * it, its first line. `conn`: a client of that redis-server.
 * @param {number} port @param {import('ioredis').Redis} conn
 * @param {number} published messages published (PUBLISH calls, any caller)
 */
async function gatedStats(port, conn, published) {
  const info = redisCli(port, 'info', 'commandstats');
  const calls = (/** @type {string} */ name) =>
    Number(new RegExp(`^cmdstat_${name}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0);
  const scripts = calls('evalsha') + calls('eval');
  const waits = calls('wait');
  /** @type {string | undefined} */
  let fanoutSha;
  try {
    const mod = /** @type {{ fanoutManyLua?: (command: string) => string }} */ (
      await import('../packages/server/dist/broker/redis-scripts.js')
    );
    const { createHash } = await import('node:crypto');
    if (typeof mod.fanoutManyLua === 'function')
      fanoutSha = createHash('sha1').update(mod.fanoutManyLua('PUBLISH')).digest('hex');
  } catch {
    // no build: the script calls are not split
  }
  const log = /** @type {[unknown, unknown, unknown, string[], string][]} */ (
    await conn.call('slowlog', 'get', '-1')
  );
  const kinds = { publish: 0, fanoutScript: 0, otherScript: 0, other: 0, byScripts: 0 };
  for (const [, , , args, client] of log) {
    if (client === '?:0') {
      kinds.byScripts++;
      continue;
    }
    const cmd = String(args[0]).toLowerCase();
    const arg = String(args[1]);
    if (cmd === 'publish') kinds.publish++;
    else if (cmd === 'evalsha' || cmd === 'eval') {
      if (arg === fanoutSha || arg.startsWith('-- switchboard fanoutManyLua')) kinds.fanoutScript++;
      else kinds.otherScript++;
    } else kinds.other++;
  }
  const perMessage = (/** @type {number} */ n) =>
    published === 0 ? null : Math.round((n / published) * 10_000) / 10_000;
  return {
    published,
    scriptCallsPerPublish: perMessage(scripts),
    waitCallsPerPublish: perMessage(waits),
    publishScriptCallsPerPublish: perMessage(kinds.otherScript),
    fanoutScriptCallsPerMessage: perMessage(kinds.fanoutScript),
    topLevelPublishPerMessage: perMessage(kinds.publish),
    slowlogFull: log.length >= SLOWLOG_LEN,
    slowlog: kinds,
  };
}
// Every command of a run at ~10,000 publishes/s (about 1.1 per publish: the scripts' own PUBLISHes,
// the node's calls); when the log is full, the split is that of the run's last SLOWLOG_LEN.
const SLOWLOG_LEN = 1_000_000;

const env = {
  SWITCHBOARD_MAX_SUBSCRIPTIONS_PER_CONNECTION: '100000',
  ...(o.batch !== undefined && { SWITCHBOARD_REDIS_PUBLISH_BATCH: String(o.batch) }),
};

/** @type {Record<string, unknown>} */
const result = {
  at: new Date().toISOString(),
  config: {
    connections: Number(o.connections),
    inflight: Number(o.inflight),
    channels: Number(o.channels),
    seconds: Number(o.seconds),
    batch: o.batch === undefined ? 'default' : Number(o.batch),
    messageIds: o['message-ids'],
    replica: o.replica,
    engine: o.engine,
    pinned: PIN ? 'node core 0; loadgen + redis core 1' : 'no',
  },
};
const dir = mkdtempSync(join(tmpdir(), 'sb-publish-load-'));
try {
  if (o.mode !== 'cluster') {
    const redis = await startRedis(LOAD_CORE);
    const replica = o.replica ? await startRedis(LOAD_CORE) : undefined;
    if (replica !== undefined) {
      redisCli(replica.port, 'replicaof', '127.0.0.1', String(redis.port));
      for (
        let i = 0;
        !/^slave0:.*state=online/m.test(redisCli(redis.port, 'info', 'replication'));
        i++
      ) {
        if (i > 200) throw new Error('the replica did not sync');
        await new Promise((r) => setTimeout(r, 50));
      }
      redisCli(redis.port, 'config', 'set', 'slowlog-log-slower-than', '0');
      redisCli(redis.port, 'config', 'set', 'slowlog-max-len', String(SLOWLOG_LEN));
    }
    const node = await startNode({
      redisUrl: redis.url,
      engine: String(o.engine),
      env: { ...env, ...(replica !== undefined && { SWITCHBOARD_REDIS_WAIT_REPLICAS: '1' }) },
      core: NODE_CORE,
    });
    const pidOf = (/** @type {number} */ port) =>
      Number(redisCli(port, 'info', 'server').match(/process_id:(\d+)/)?.[1]);
    /** @type {Record<string, number>} */
    const pids = { node: node.pid, redis: pidOf(redis.port) };
    if (replica !== undefined) pids['replica'] = pidOf(replica.port);
    redisCli(redis.port, 'config', 'resetstat');
    redisCli(redis.port, 'slowlog', 'reset');
    const run = await drive(`ws://127.0.0.1:${node.port}/ws`, pids);
    const stats = scriptStats(redis.port);
    /** @type {Record<string, unknown>} */
    const single = { ...run, redis: stats };
    // Over warm-up and window alike (resetstat before both): per message fanned out (each
    // published message is PUBLISHed once, by the node or by a script).
    if (replica !== undefined)
      single['gated'] = await gatedStats(redis.port, redis.redis, stats.messages);
    result['single'] = single;
    await stop(node.child);
    redis.redis.disconnect();
    redisCli(redis.port, 'shutdown', 'nosave');
    if (replica !== undefined) {
      replica.redis.disconnect();
      redisCli(replica.port, 'shutdown', 'nosave');
    }
  }
  if (o.mode !== 'single' && !o.replica) {
    const cluster = await startRedisCluster({ masters: 3, dir, core: LOAD_CORE });
    const node = await startNode({
      redisUrl: '',
      engine: String(o.engine),
      // No replicas here, and WAIT-gated publishes are not batched (docs/redis.md): WAIT off.
      env: {
        ...env,
        SWITCHBOARD_REDIS_CLUSTER: cluster.seeds.join(','),
        SWITCHBOARD_REDIS_WAIT_REPLICAS: '0',
      },
      core: NODE_CORE,
    });
    for (const n of cluster.nodes) redisCli(n.port, 'config', 'resetstat');
    /** @type {Record<string, number>} */
    const pids = { node: node.pid };
    cluster.nodes.forEach((n, i) => (pids[`redis${i + 1}`] = n.pid));
    const run = await drive(`ws://127.0.0.1:${node.port}/ws`, pids);
    result['cluster3'] = { ...run, shards: cluster.nodes.map((n) => scriptStats(n.port)) };
    await stop(node.child);
    cluster.stop();
  }
} finally {
  killTracked('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
const single = /** @type {{ ackedPerSec?: number } | undefined} */ (result['single']);
const cl = /** @type {{ ackedPerSec?: number } | undefined} */ (result['cluster3']);
if (single?.ackedPerSec && cl?.ackedPerSec)
  result['clusterOverSingle'] = Math.round((cl.ackedPerSec / single.ackedPerSec) * 100) / 100;
const file = writeResult('publish-load', /** @type {{ at: string }} */ (result));
process.stdout.write(JSON.stringify(result, null, 2) + '\n' + `written to ${file}\n`);
process.exit(0);
