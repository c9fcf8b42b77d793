#!/usr/bin/env node
/// <reference types="node" />
/**
 * Broker publish throughput (#10): acknowledged publishes per second through the Redis broker
 * (history on), on one Redis and on a 3-master Redis Cluster, with each redis-server's CPU so the
 * per-shard scaling is visible. The publisher is the broker's own client (what a node runs); it
 * is one process, and the redis-servers are others. Prints JSON; see docs/benchmarks.md.
 *
 *   node bench/publish.js [--seconds 5] [--inflight 2048] [--channels 1000] [--mode single|cluster|both]
 *     [--batch N] (messages per script call at most; 1: one call per publish)
 *     [--replica] (one replica per master and WAIT 1, redisWaitReplicas 1: the gated path of
 *     publish after WAIT, redis-wait.ts; without it waitReplicas is 0)
 * Reports script calls per acknowledged publish (EVALSHA + EVAL on the masters, INFO commandstats).
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { encodeMessageHead } from '@switchboard/protocol';
import { RedisBroker, RedisClusterBroker, createLogger } from '@switchboard/server';
import { freePort, sleep } from './lib.js';

const { values: o } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    inflight: { type: 'string', default: '2048' },
    channels: { type: 'string', default: '1000' },
    mode: { type: 'string', default: 'both' },
    batch: { type: 'string', default: '128' },
    replica: { type: 'boolean', default: false },
  },
});
const SECONDS = Number(o.seconds);
const INFLIGHT = Number(o.inflight);
const CHANNELS = Number(o.channels);
const BATCH = Number(o.batch);
const REPLICA = o.replica === true;

/**
 * Script calls a redis-server has run (EVALSHA + EVAL).
 * @param {number} port
 */
function scriptCalls(port) {
  const info = spawnSync('redis-cli', [
    '-p',
    String(port),
    'info',
    'commandstats',
  ]).stdout.toString();
  let n = 0;
  for (const m of info.matchAll(/^cmdstat_eval(?:sha)?:calls=(\d+)/gm)) n += Number(m[1]);
  return n;
}

/**
 * CPU seconds (user + system) a process has used, from /proc.
 * @param {number} pid
 */
function cpuOf(pid) {
  const f = (readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1] ?? '').split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/**
 * @param {string} dir
 * @param {boolean} cluster
 */
async function redisServer(dir, cluster, replicaOf = 0) {
  const port = await freePort();
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
  args.push('--dir', dir, '--dbfilename', `dump-${port}.rdb`);
  if (replicaOf > 0) args.push('--replicaof', '127.0.0.1', String(replicaOf));
  if (cluster)
    args.push(
      '--cluster-enabled',
      'yes',
      '--cluster-port',
      String(await freePort()),
      '--cluster-config-file',
      join(dir, `n-${port}.conf`),
    );
  const child = spawn('redis-server', args, { stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    if (
      spawnSync('redis-cli', ['-p', String(port), 'ping'])
        .stdout?.toString()
        .trim() === 'PONG'
    )
      return { port, child };
    await sleep(25);
  }
  throw new Error('redis did not start');
}

/**
 * Waits until the master on `port` has `n` replicas online.
 * @param {number} port
 * @param {number} n
 */
async function replicaInSync(port, n) {
  for (let i = 0; i < 400; i++) {
    const info = spawnSync('redis-cli', [
      '-p',
      String(port),
      'info',
      'replication',
    ]).stdout.toString();
    if ((info.match(/^slave\d+:.*state=online/gm)?.length ?? 0) >= n) return;
    await sleep(50);
  }
  throw new Error(`no replica in sync on ${port}`);
}

/**
 * @param {import('@switchboard/server').Broker} broker
 * @param {number[]} pids
 * @param {number[]} masters ports whose script calls are counted
 */
async function run(broker, pids, masters) {
  await broker.start({ onPublication() {}, onResubscribed() {}, onControl() {} });
  const channels = Array.from({ length: CHANNELS }, (_, i) => `bench-${i}`);
  let acked = 0;
  let failed = 0;
  let seq = 0;
  let stop = false;
  const one = async () => {
    while (!stop) {
      const channel = channels[seq % CHANNELS];
      const id = `m${++seq}`;
      try {
        await broker.publish({
          channel,
          id,
          head: encodeMessageHead({ channel, dataJson: '{"n":1}', id, timestamp: Date.now() }),
          history: { size: 100, ttlMs: 60_000 },
          dedupeMs: 120_000,
        });
        acked++;
      } catch {
        failed++;
      }
    }
  };
  const workers = Array.from({ length: INFLIGHT }, one);
  await sleep(1000); // warm-up, not measured
  const a0 = acked;
  const c0 = pids.map(cpuOf);
  const s0 = masters.reduce((n, p) => n + scriptCalls(p), 0);
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(SECONDS * 1000);
  const dt = (performance.now() - t0) / 1000;
  const a1 = acked;
  const c1 = pids.map(cpuOf);
  const s1 = masters.reduce((n, p) => n + scriptCalls(p), 0);
  const self = process.cpuUsage(self0);
  stop = true;
  await Promise.all(workers);
  await broker.close();
  return {
    ackedPerSecond: Math.round((a1 - a0) / dt),
    failed,
    scriptCallsPerPublish: Number(((s1 - s0) / Math.max(1, a1 - a0)).toFixed(3)),
    redisCpuPerShard: c1.map((c, i) => Number(((c - c0[i]) / dt).toFixed(2))),
    publisherCpu: Number(((self.user + self.system) / 1e6 / dt).toFixed(2)),
  };
}

const results = {
  seconds: SECONDS,
  inflight: INFLIGHT,
  channels: CHANNELS,
  history: 100,
  batch: BATCH,
  replica: REPLICA,
};
const dir = mkdtempSync(join(tmpdir(), 'sb-bench-'));
const children = [];
try {
  if (o.mode !== 'cluster') {
    const r = await redisServer(dir, false);
    children.push(r.child);
    if (REPLICA) {
      const rep = await redisServer(dir, false, r.port);
      children.push(rep.child);
      await replicaInSync(r.port, 1);
    }
    results.single = await run(
      new RedisBroker({
        url: `redis://127.0.0.1:${r.port}`,
        prefix: 'b:',
        publishBatch: BATCH,
        waitReplicas: REPLICA ? 1 : 0,
        logger: createLogger('warn'),
      }),
      [r.child.pid],
      [r.port],
    );
  }
  if (o.mode !== 'single') {
    const nodes = [];
    for (let i = 0; i < (REPLICA ? 6 : 3); i++) nodes.push(await redisServer(dir, true));
    children.push(...nodes.map((n) => n.child));
    const create = spawnSync(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...nodes.map((n) => `127.0.0.1:${n.port}`),
        ...(REPLICA ? ['--cluster-replicas', '1'] : []),
        '--cluster-yes',
      ],
      { timeout: 30_000 },
    );
    if (create.status !== 0) throw new Error(`cluster create failed: ${create.stdout.toString()}`);
    for (let i = 0; i < 200; i++) {
      const info = spawnSync('redis-cli', ['-p', String(nodes[0].port), 'cluster', 'info']);
      if (info.stdout?.toString().includes('cluster_state:ok')) break;
      await sleep(50);
    }
    const masters = nodes.filter((n) =>
      spawnSync('redis-cli', ['-p', String(n.port), 'role'])
        .stdout.toString()
        .startsWith('master'),
    );
    if (REPLICA) for (const m of masters) await replicaInSync(m.port, 1);
    results.cluster3 = await run(
      new RedisClusterBroker({
        seeds: nodes.map((n) => `127.0.0.1:${n.port}`),
        prefix: 'b:',
        waitReplicas: REPLICA ? 1 : 0,
        publishBatch: BATCH,
        logger: createLogger('warn'),
      }),
      masters.map((n) => n.child.pid),
      masters.map((n) => n.port),
    );
  }
} finally {
  for (const c of children) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(results, null, 2) + '\n');
