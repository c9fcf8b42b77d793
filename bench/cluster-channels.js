#!/usr/bin/env node
/// <reference types="node" />
/**
 * 10,000 channels over a 3-master Redis Cluster (#10 point 4): two `switchboard serve` nodes, each
 * with subscribers on every channel (2 WebSocket connections per node, half the channels each).
 * Reports:
 *
 *   - Redis connections per node (its sockets to the cluster's ports, from /proc, and CLIENT LIST
 *     on every redis-server for the total);
 *   - after `CLUSTER FAILOVER` on a replica, and after `kill -9` of a master: the time until every
 *     channel receives again on both nodes. From the fault on, this process publishes one message to
 *     every channel not yet heard from again (through node 1, in rounds, retrying refused
 *     publishes); a channel counts on a node once a message published after the fault reached its
 *     subscriber there (live, or repaired from the stream after the resubscribe).
 *
 *   node bench/cluster-channels.js [--channels 10000] [--timeout 240]
 *
 * Writes bench/results/<time>-cluster-channels.json and prints it.
 */
import { mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import {
  killTracked,
  parseJson,
  rawText,
  redisCli,
  sleep,
  startNode,
  startRedisCluster,
  writeResult,
} from './lib.js';

const { values: o } = parseArgs({
  options: {
    channels: { type: 'string', default: '10000' },
    timeout: { type: 'string', default: '240' },
    'fault-timeout': { type: 'string', default: '90' },
  },
});
const C = Number(o.channels);
const FAULT_TIMEOUT_MS = Number(o['fault-timeout']) * 1000;
const channels = Array.from({ length: C }, (_, i) => `cc-${i}`);

const deadline = setTimeout(
  () => {
    process.stderr.write(`cluster-channels: over ${o.timeout} s, giving up\n`);
    killTracked('SIGKILL');
    process.exit(1);
  },
  Number(o.timeout) * 1000,
);
deadline.unref();

/** @param {string} msg */
function log(msg) {
  process.stderr.write(`[cluster-channels] ${msg}\n`);
}

/**
 * A WebSocket connection running native commands; `onFrame` sees every pushed frame.
 * @param {string} url @param {(f: Record<string, unknown>) => void} onFrame
 */
async function connect(url, onFrame) {
  const ws = new WebSocket(url, ['switchboard.v1'], { perMessageDeflate: false });
  /** @type {Map<number, (f: Record<string, unknown>) => void>} */
  const waiting = new Map();
  let id = 0;
  ws.on('message', (data) => {
    for (const line of rawText(data).split('\n')) {
      if (line === '') continue;
      const f = /** @type {Record<string, unknown>} */ (parseJson(line));
      const r = typeof f['reply'] === 'number' ? waiting.get(f['reply']) : undefined;
      if (r !== undefined) {
        waiting.delete(/** @type {number} */ (f['reply']));
        r(f);
      } else onFrame(f);
    }
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return {
    ws,
    /** @param {Record<string, unknown>} cmd @returns {Promise<Record<string, unknown>>} */
    call(cmd) {
      const rid = ++id;
      ws.send(JSON.stringify({ ...cmd, id: rid }));
      return new Promise((resolve) => waiting.set(rid, resolve));
    },
  };
}

/** Sockets of `pid` connected to one of `ports`, per port (from /proc). @param {number} pid @param {number[]} ports */
function socketsTo(pid, ports) {
  const inodes = new Set();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      // closed meanwhile
    }
  }
  /** @type {Record<string, number>} */
  const per = {};
  let total = 0;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !inodes.has(f[9]) || f[3] !== '01') continue; // 01: ESTABLISHED
    const port = parseInt((f[2] ?? '').split(':')[1] ?? '', 16);
    if (!ports.includes(port)) continue;
    per[port] = (per[port] ?? 0) + 1;
    total++;
  }
  return { total, perRedisPort: per };
}

const dir = mkdtempSync(join(tmpdir(), 'sb-cluster-channels-'));
/** @type {Record<string, unknown>} */
const result = { at: new Date().toISOString(), channels: C, loadavgAtStart: loadavg() };
try {
  const cluster = await startRedisCluster({ masters: 3, replicas: 1, dir, nodeTimeoutMs: 1000 });
  const ports = cluster.nodes.map((n) => n.port);
  const env = {
    SWITCHBOARD_REDIS_CLUSTER: cluster.seeds.join(','),
    SWITCHBOARD_MAX_SUBSCRIPTIONS_PER_CONNECTION: '100000',
  };
  const nodes = await Promise.all(
    [0, 1].map((core) => startNode({ redisUrl: '', engine: 'uws', env, core })),
  );
  /** Per node, per channel: the generation last heard (a message's `g`). */
  const heard = nodes.map(() => new Map());
  let gen = 0;
  /** @type {Set<string>[]} per node, the channels not yet heard in this generation */
  let pending = nodes.map(() => new Set());
  const subs = [];
  for (let n = 0; n < nodes.length; n++) {
    const node = /** @type {{ port: number }} */ (nodes[n]);
    for (let half = 0; half < 2; half++) {
      const conn = await connect(`ws://127.0.0.1:${node.port}/ws`, (f) => {
        if (f['action'] !== 'message' && f['type'] !== 'message' && !('channel' in f)) return;
        const ch = /** @type {string} */ (f['channel']);
        const data = /** @type {{ g?: number } | undefined} */ (f['message'] ?? f['data']);
        const g = data?.g;
        if (typeof g !== 'number') return;
        heard[n]?.set(ch, g);
        if (g === gen) pending[n]?.delete(ch);
      });
      subs.push(conn);
      const mine = channels.filter((_, i) => i % 2 === half);
      const t0 = performance.now();
      const replies = [];
      // Under the node's limit of 1024 commands in flight per connection.
      for (let i = 0; i < mine.length; i += 1000)
        replies.push(
          ...(await Promise.all(
            mine.slice(i, i + 1000).map((channel) => conn.call({ action: 'subscribe', channel })),
          )),
        );
      const bad = replies.filter((r) => r['ok'] !== true);
      if (bad.length > 0) throw new Error(`subscribe refused: ${JSON.stringify(bad[0])}`);
      log(
        `node ${n + 1} connection ${half + 1}: ${mine.length} subscribed in ${Math.round(performance.now() - t0)} ms`,
      );
    }
  }
  const publisher = await connect(`ws://127.0.0.1:${nodes[0]?.port}/ws`, () => {});

  /**
   * Starts generation `g` and publishes to every channel not heard in it on some node, in rounds,
   * until every channel was heard on every node; resolves with the ms that took and the stats.
   * @param {number} t0 when the fault was made (performance.now())
   */
  async function untilAllHeard(t0) {
    gen++;
    pending = nodes.map(() => new Set(channels));
    let rounds = 0;
    let published = 0;
    let refused = 0;
    /** @type {string | undefined} */
    let firstRefusal;
    while (pending.some((p) => p.size > 0)) {
      if (performance.now() - t0 > FAULT_TIMEOUT_MS)
        return {
          ms: null,
          rounds,
          published,
          refused,
          firstRefusal,
          stillSilent: pending.map((p) => p.size),
        };
      rounds++;
      const todo = channels.filter((c) => pending.some((p) => p.has(c)));
      // At most 1,000 in flight: the node's per-connection limit is 1024 commands.
      for (let i = 0; i < todo.length; i += 1000) {
        const replies = await Promise.all(
          todo
            .slice(i, i + 1000)
            .map((channel) =>
              publisher.call({ action: 'publish', channel, data: { g: gen, r: rounds } }),
            ),
        );
        for (const r of replies) {
          if (r['ok'] === true) published++;
          else {
            refused++;
            firstRefusal ??= JSON.stringify(r).slice(0, 200);
          }
        }
      }
      await sleep(200);
    }
    // The last channel was heard when its frame arrived; the loop notices within its round.
    return { ms: Math.round(performance.now() - t0), rounds, published, refused, firstRefusal };
  }

  const steady = await untilAllHeard(performance.now());
  log(`steady state: every channel heard on both nodes in ${steady.ms} ms`);
  const clientList = cluster.nodes.map(
    (n) =>
      redisCli(n.port, 'client', 'list')
        .split('\n')
        .filter((l) => /name=switchboard/.test(l)).length,
  );
  result['redisConnections'] = {
    perNode: nodes.map((n) => socketsTo(n.pid, ports)),
    clientListPerRedis: Object.fromEntries(ports.map((p, i) => [p, clientList[i]])),
    note: 'a node: per master one command connection (ioredis Cluster) + one sharded-subscriber connection, plus presence, revocation, occupancy and webhook clients',
  };
  result['steady'] = steady;

  // CLUSTER FAILOVER: a replica takes over its master's slots (coordinated, no data loss).
  const [m1] = cluster.masters();
  const replica = cluster.nodes.find(
    (n) =>
      redisCli(n.port, 'role').startsWith('slave') &&
      redisCli(n.port, 'info', 'replication').includes(`master_port:${m1}`),
  );
  if (replica === undefined) throw new Error('no replica of the first master');
  log(`CLUSTER FAILOVER on ${replica.port} (replica of ${m1})`);
  let t0 = performance.now();
  redisCli(replica.port, 'cluster', 'failover');
  result['afterClusterFailover'] = await untilAllHeard(t0);
  log(`after CLUSTER FAILOVER: ${JSON.stringify(result['afterClusterFailover'])}`);
  await sleep(3000);

  // kill -9 of a master: the cluster fails it over after cluster-node-timeout (1 s).
  const victimPort = cluster.masters().find((p) => p !== replica.port);
  const victim = cluster.nodes.find((n) => n.port === victimPort);
  if (victim === undefined) throw new Error('no master to kill');
  log(`kill -9 master ${victim.port}`);
  t0 = performance.now();
  victim.child.kill('SIGKILL');
  result['afterKill9'] = await untilAllHeard(t0);
  log(`after kill -9: ${JSON.stringify(result['afterKill9'])}`);
  result['loadavgAtEnd'] = loadavg();
  for (const s of [...subs, publisher]) s.ws.terminate();
} finally {
  killTracked('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
const file = writeResult('cluster-channels', /** @type {{ at: string }} */ (result));
process.stdout.write(JSON.stringify(result, null, 2) + '\n' + `written to ${file}\n`);
process.exit(0);
