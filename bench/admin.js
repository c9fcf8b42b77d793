#!/usr/bin/env node
/// <reference types="node" />
/**
 * Admin API benchmark (issue #13). Starts a private redis-server and two `switchboard serve`
 * nodes with `--admin` and an admin API key; this process is the load generator. Prints one JSON
 * line; see docs/benchmarks.md.
 *
 *   overview  GET /v1/admin/overview on node A, one after another: each is a question to every
 *             node over the broker and the wait for both answers (round trip, ms).
 *   tail      GET /v1/admin/tail/{channel} on node A while this process publishes by REST on
 *             node B at --rate messages/s: time from the publish request to the message's
 *             arrival on the tail (ms), the publish's own ack time, and whether the tail's
 *             offsets were consecutive (every message, in stream order).
 *
 * Usage: npm run bench:admin -- [--requests 200] [--messages 2000] [--rate 500] [--engine uws]
 */
import { spawn } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadavg } from 'node:os';
import {
  Histogram,
  freePort,
  parseJson,
  sleep,
  killTracked,
  startRedis,
  track,
  waitReady,
} from './lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const SERVER_CLI = join(here, '..', 'packages/server/dist/cli/main.js');
const KEY = 'ops:bench-admin-secret-0123';
const API_KEYS = JSON.stringify([
  {
    name: 'ops',
    secret: 'bench-admin-secret-0123',
    capabilities: { '*': ['publish'] },
    admin: true,
  },
]);

const { values: o } = parseArgs({
  options: {
    requests: { type: 'string', default: '200' },
    messages: { type: 'string', default: '2000' },
    rate: { type: 'string', default: '500' },
    engine: { type: 'string', default: 'uws' },
  },
});
const REQUESTS = Number(o.requests);
const MESSAGES = Number(o.messages);
const RATE = Number(o.rate);

/** @param {string} redisUrl @param {string} id */
async function startNode(redisUrl, id) {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      SERVER_CLI,
      'serve',
      ...['--port', String(port), '--host', '127.0.0.1', '--log-level', 'warn'],
      ...['--engine', String(o.engine), '--redis', redisUrl, '--redis-prefix', 'ab:'],
      ...['--admin', 'true', '--api-keys', API_KEYS, '--node-id', id],
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  track(child);
  await waitReady(port);
  return `http://127.0.0.1:${port}`;
}

const auth = { authorization: `Bearer ${KEY}` };

/** @param {string} a */
async function overview(a) {
  const h = new Histogram();
  for (let i = 0; i < REQUESTS; i++) {
    const t0 = performance.now();
    const r = await fetch(`${a}/v1/admin/overview`, { headers: auth });
    const body = /** @type {{nodes: unknown[]}} */ (parseJson(await r.text()));
    if (body.nodes.length !== 2) throw new Error(`overview saw ${body.nodes.length} nodes`);
    h.record(performance.now() - t0);
  }
  return h.summary();
}

/** @param {string} a @param {string} b */
async function tail(a, b) {
  const ctl = new AbortController();
  const res = await fetch(`${a}/v1/admin/tail/bench`, { headers: auth, signal: ctl.signal });
  if (res.body === null) throw new Error('no tail body');
  /** @type {Map<number, number>} */
  const sentAt = new Map();
  const h = new Histogram();
  const ack = new Histogram();
  let received = 0;
  let inOrder = true;
  let last = -1;
  let subscribed = false;
  /** @type {() => void} */
  let allIn = () => {};
  const done = new Promise((r) => (allIn = () => r(undefined)));
  const decoder = new TextDecoder();
  let buffer = '';
  const pump = (async () => {
    for await (const chunk of /** @type {AsyncIterable<Uint8Array>} */ (
      /** @type {unknown} */ (res.body)
    )) {
      buffer += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (block.startsWith('event: subscribed')) subscribed = true;
        if (!block.startsWith('data: ')) continue;
        const m = /** @type {{offset: number, data: {i: number}}} */ (parseJson(block.slice(6)));
        const t = sentAt.get(m.data.i);
        if (t !== undefined) h.record(performance.now() - t);
        // Concurrent REST publishes have no order among themselves; the stream's offsets do.
        if (last !== -1 && m.offset !== last + 1) inOrder = false;
        last = m.offset;
        if (++received === MESSAGES) allIn();
      }
    }
  })().catch(() => undefined);
  while (!subscribed) await sleep(10);
  const started = performance.now();
  const posts = [];
  for (let i = 0; i < MESSAGES; i++) {
    const due = started + (i * 1000) / RATE;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const t0 = performance.now();
    sentAt.set(i, t0);
    posts.push(
      fetch(`${b}/v1/channels/bench/messages`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ data: { i } }),
      })
        .then((r) => r.arrayBuffer())
        .then(() => ack.record(performance.now() - t0)),
    );
  }
  await Promise.all(posts);
  await Promise.race([done, sleep(10_000)]);
  ctl.abort();
  await pump;
  return {
    messages: MESSAGES,
    rate: RATE,
    received,
    inOrder,
    publishAckMs: ack.summary(),
    publishToTailMs: h.summary(),
  };
}

const redisUrl = (await startRedis()).url;
const [a, b] = await Promise.all([startNode(redisUrl, 'a'), startNode(redisUrl, 'b')]);
const result = {
  bench: 'admin',
  engine: o.engine,
  loadavg1m: loadavg()[0],
  overviewMs: await overview(a),
  tail: await tail(a, b),
};
process.stdout.write(JSON.stringify(result) + '\n');
killTracked('SIGTERM');
process.exit(0);
