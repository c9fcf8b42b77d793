#!/usr/bin/env node
/// <reference types="node" />
/**
 * Cost of the publish script inside Redis (#10 point 4) at several batch sizes (1: one script
 * call per message, as with `redisPublishBatch 1`), called directly (pipelined, 200 calls in flight) on a private
 * redis-server (pinned to core 1; this process on core 0), 1,000 channels, history 1,000, with
 * idempotency keys. Per run: Redis time per message from INFO commandstats (EVALSHA + EVAL usec
 * over messages; includes preemption on a loaded machine, so `uptime` load is recorded), the
 * commands inside per message, and Redis CPU per message (/proc).
 *
 *   node bench/publish-script.js [--messages 200000] [--channels 1000] [--sizes 1,10,100,128,256]
 */
import { parseArgs } from 'node:util';
import { loadavg } from 'node:os';
// The built modules (npm run bench:publish-script builds them first).
import { publishBatchLua, runBatch } from '../packages/server/dist/broker/redis-batch.js';
import { createRedisKeys } from '../packages/server/dist/broker/redis-keys.js';
import { cpuSeconds, killTracked, redisCli, round, startRedis, writeResult } from './lib.js';

const { values: o } = parseArgs({
  options: {
    messages: { type: 'string', default: '200000' },
    channels: { type: 'string', default: '1000' },
    sizes: { type: 'string', default: '1,10,100,128,256' },
  },
});
const MESSAGES = Number(o.messages);
const CHANNELS = Number(o.channels);
const keys = createRedisKeys('ps:');
const { redis, port } = await startRedis(1);
const pid = Number(/process_id:(\d+)/.exec(redisCli(port, 'info', 'server'))?.[1]);
const r =
  /** @type {import('ioredis').Redis & Record<string, (...a: unknown[]) => Promise<unknown>>} */ (
    redis
  );
r.defineCommand('sbPublishBatch', { numberOfKeys: 1, lua: publishBatchLua('PUBLISH') });
/** Every channel's namespace options: one object, as the node's resolver hands out. */
const HISTORY = { size: 1000, ttlMs: 60_000 };

let seq = 0;
/** @param {number} c */
function message(c) {
  const channel = `bench-${c}`;
  const id = `m${++seq}`;
  const head = `{"action":"message","channel":"${channel}","id":"${id}","message":{"n":1},"timestamp":1765000000000`;
  return { channel, id, head };
}

/** @param {string} info @param {string} cmd */
function stat(info, cmd) {
  const m = new RegExp(`^cmdstat_${cmd}:calls=(\\d+),usec=(\\d+)`, 'm').exec(info);
  return m === null ? { calls: 0, usec: 0 } : { calls: Number(m[1]), usec: Number(m[2]) };
}

/** @param {number} size messages per script call */
async function run(size) {
  await r.flushall();
  await r.config('RESETSTAT');
  const calls = Math.ceil(MESSAGES / size);
  let c = 0;
  const cpu0 = cpuSeconds(pid) ?? 0;
  const t0 = performance.now();
  for (let k = 0; k < calls; k += 200) {
    const inFlight = [];
    for (let j = 0; j < 200 && k + j < calls; j++) {
      const batch = [];
      for (let i = 0; i < size; i++) {
        const m = message(c++ % CHANNELS);
        batch.push({ ...m, history: HISTORY, dedupeMs: 120_000 });
      }
      inFlight.push(runBatch(/** @type {any} */ (r), keys, batch, 86_400_000, '', false));
    }
    await Promise.all(inFlight);
  }
  const wallS = (performance.now() - t0) / 1000;
  const cpu = (cpuSeconds(pid) ?? 0) - cpu0;
  const info = /** @type {string} */ (await r.info('commandstats'));
  const script = [stat(info, 'evalsha'), stat(info, 'eval')];
  const usec = script.reduce((n, s) => n + s.usec, 0);
  const messages = stat(info, 'publish').calls;
  /** @type {Record<string, number>} */
  const inside = {};
  for (const cmd of [
    'get',
    'set',
    'hmget',
    'hincrby',
    'hset',
    'xadd',
    'pexpire',
    'publish',
    'time',
  ]) {
    const s = stat(info, cmd);
    if (s.calls > 0) inside[cmd] = round(s.calls / messages, 2);
  }
  return {
    batch: size,
    messages,
    scriptUsecPerMessage: round(usec / messages, 2),
    redisCpuUsecPerMessage: round((cpu * 1e6) / messages, 2),
    messagesPerSecond: Math.round(messages / wallS),
    redisCallsPerMessage: inside,
    loadavg: loadavg().map((x) => round(x, 2)),
  };
}

const runs = [];
try {
  for (const size of String(o.sizes).split(',').map(Number)) runs.push(await run(size));
} finally {
  redis.disconnect();
  killTracked('SIGKILL');
}
const result = { at: new Date().toISOString(), channels: CHANNELS, history: 1000, runs };
const file = writeResult('publish-script', result);
process.stdout.write(JSON.stringify(result, null, 2) + '\n' + `written to ${file}\n`);
process.exit(0);
