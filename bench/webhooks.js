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
import { createServer } from 'node:http';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { loadgen, round, startNode, startRedis, stop, writeResult } from './lib.js';

const { values: o } = parseArgs({
  options: {
    connections: { type: 'string', default: '200' },
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '5' },
    engine: { type: 'string', default: 'uws' },
  },
});

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

/**
 * @param {string} redisUrl @param {string} name @param {number | undefined} hookPort
 * @returns {Promise<Record<string, unknown>>}
 */
async function run(redisUrl, name, hookPort) {
  const node = await startNode({
    redisUrl,
    engine: String(o.engine),
    env: {
      SWITCHBOARD_REDIS_PREFIX: `bench-${name}:`,
      SWITCHBOARD_LOG_LEVEL: 'error',
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
    const step = await loadgen([
      ...['--system', 'switchboard', '--url', `ws://127.0.0.1:${node.port}/ws`],
      ...['--redis', redisUrl, '--connections', String(o.connections)],
      ...['--channels', '1', '--payload', '128', '--rates', String(o.rate)],
      ...['--step-seconds', String(o.seconds), '--drain-seconds', '3'],
      ...['--server-pid', String(node.pid), '--name', `webhooks-${name}`],
    ]);
    const text = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
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
    await stop(node.child, 20_000);
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
    const r = await run(redis.url, name, hook);
    runs.push(r);
    process.stderr.write(`${JSON.stringify(r)}\n`);
  }
} finally {
  ok.close();
  hang.close();
  redis.redis.disconnect();
}
const result = {
  bench: 'webhooks',
  at: new Date().toISOString(),
  machine: { cpus: cpus().length, loadavg: loadavg().map((x) => round(x, 2)) },
  options: o,
  receivers: { okRequests: ok.requests, hangingRequests: hang.requests },
  runs,
};
writeResult('webhooks', result);
process.stdout.write(JSON.stringify(result) + '\n');
// redis-server is tracked: killed as this process exits.
process.exit(0);
