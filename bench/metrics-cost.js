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
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { alive, loadgen, round, startNode, startRedis, stop, writeResult } from './lib.js';

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
 * @typedef {{ metrics: boolean, deliveredPerSec?: number, deliveriesPerServerCpuSecond?: number, serverCpuCores?: number, p50Ms?: number, p99Ms?: number, lost?: number, delivered?: number, pass?: boolean, latencyHistogramCount?: number }} Run
 */

/** The server alone on core 0, Redis and the load generator on 1. @param {string} redisUrl @param {boolean} metrics @returns {Promise<Run>} */
async function round1(redisUrl, metrics) {
  const node = await startNode({
    redisUrl,
    engine: String(o.engine),
    env: { SWITCHBOARD_METRICS: String(metrics) },
    core: 0,
  });
  try {
    const step = await loadgen(
      [
        ...['--system', 'switchboard', '--url', `ws://127.0.0.1:${node.port}/ws`],
        ...['--redis', redisUrl, '--connections', String(o.connections), '--channels', '1'],
        ...['--payload', String(o.payload), '--rates', String(o.rate)],
        ...['--step-seconds', String(o.seconds), '--drain-seconds', '5'],
        ...['--server-pid', String(node.pid), '--name', `metrics-${metrics ? 'on' : 'off'}`],
      ],
      1,
    );
    /** @type {{ latencyHistogramCount?: number }} */
    let scrape = {};
    if (metrics && alive(node.pid)) {
      const text = await (await fetch(`http://127.0.0.1:${node.port}/metrics`)).text();
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
    await stop(node.child);
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

const redis = await startRedis(1);
/** @type {(Run & { round: number })[]} */
const runs = [];
try {
  for (let r = 0; r < Number(o.rounds); r++) {
    // Alternate which goes first, so a drift of the machine's load does not favour one side.
    for (const metrics of r % 2 === 0 ? [true, false] : [false, true]) {
      const run = await round1(redis.url, metrics);
      process.stderr.write(
        `round ${r + 1} metrics ${metrics ? 'on ' : 'off'}: ${JSON.stringify(run)}\n`,
      );
      runs.push({ round: r + 1, ...run });
    }
  }
} finally {
  redis.redis.disconnect();
}

/**
 * Runs in which the load generator lost messages measured the generator, not the server (it
 * starves first on a loaded machine): they are reported but left out of the summary.
 * @param {boolean} on
 */
const side = (on) => runs.filter((x) => x.metrics === on && x.lost === 0);
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
  validRuns: { on: side(true).length, off: side(false).length },
  /** Share of server CPU per delivery that metrics add (median of rounds). */
  costPercent: on && off ? round((off / on - 1) * 100, 1) : undefined,
};
const file = writeResult('metrics-cost', output);
process.stdout.write(JSON.stringify({ summary, costPercent: output.costPercent, file }) + '\n');
// redis-server is tracked: killed as this process exits.
process.exit(0);
