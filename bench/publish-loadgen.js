#!/usr/bin/env node
/// <reference types="node" />
/**
 * Closed-loop publish load (bench/publish-load.js runs it as its own process): N WebSocket
 * connections each keep M publishes in flight (a new one as each acknowledgement arrives), round
 * robin over C channels; every ack's latency is recorded (send → reply). After the warm-up it
 * prints `{"event":"measuring"}`, after the measured window `{"event":"measured"}`, then the report
 * as the last line (JSON).
 *
 *   node bench/publish-loadgen.js --url ws://127.0.0.1:8080/ws[,ws://...] [--connections 4]
 *     [--inflight 256] [--channels 1000] [--seconds 10] [--warmup 2] [--payload 64] [--message-ids]
 */
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { Histogram, round, sleep } from './lib.js';

const { values: o } = parseArgs({
  options: {
    url: { type: 'string' },
    connections: { type: 'string', default: '4' },
    inflight: { type: 'string', default: '256' },
    channels: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '2' },
    payload: { type: 'string', default: '64' },
    prefix: { type: 'string', default: 'load' },
    'message-ids': { type: 'boolean', default: false },
  },
});
const URLS = String(o.url ?? '').split(',');
const CONNECTIONS = Number(o.connections);
const INFLIGHT = Number(o.inflight);
const CHANNELS = Number(o.channels);
const channels = Array.from({ length: CHANNELS }, (_, i) => `${o.prefix}-${i}`);
const DATA = JSON.stringify({ p: 'x'.repeat(Math.max(0, Number(o.payload) - 8)) });
const REPLY = Buffer.from('{"reply":');

let measuring = false;
let acked = 0;
let errors = 0;
/** @type {string | undefined} */
let firstError;
const latency = new Histogram();
let next = 0;

/** One connection: request id → send time, refilled on each ack. @param {string} url */
function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['switchboard.v1'], { perMessageDeflate: false });
    /** @type {Map<number, number>} */
    const sentAt = new Map();
    let id = 0;
    let stopped = false;
    const send = () => {
      const c = next++ % CHANNELS;
      const rid = ++id;
      const msgId = o['message-ids'] ? `,"messageId":"m${rid}-${c}"` : '';
      sentAt.set(rid, performance.now());
      ws.send(`{"action":"publish","channel":"${channels[c]}","data":${DATA}${msgId},"id":${rid}}`);
    };
    ws.on('open', () => {
      for (let i = 0; i < INFLIGHT; i++) send();
      resolve({ stop: () => ((stopped = true), ws.terminate()) });
    });
    ws.on('error', reject);
    // The refills one reply batch triggers go out in one write (a client that publishes in bursts
    // would do the same), so the generator spends less of its core per publish than the node.
    const raw = /** @type {{ _socket: import('node:net').Socket }} */ (/** @type {unknown} */ (ws));
    ws.on('message', (/** @type {Buffer} */ buf) => {
      const now = performance.now();
      const socket = raw._socket;
      socket.cork();
      process.nextTick(() => socket.uncork());
      // Replies may be batched, one frame per line.
      for (let at = buf.indexOf(REPLY); at !== -1; at = buf.indexOf(REPLY, at + 9)) {
        let end = at + 9;
        let rid = 0;
        for (let ch = buf[end]; ch !== undefined && ch >= 0x30 && ch <= 0x39; ch = buf[++end])
          rid = rid * 10 + ch - 0x30;
        const t = sentAt.get(rid);
        if (t === undefined) continue;
        sentAt.delete(rid);
        const nl = buf.indexOf(0x0a, end);
        const line = buf.subarray(at, nl === -1 ? buf.length : nl);
        if (line.includes('"ok":true')) {
          if (measuring) {
            acked++;
            latency.record(now - t);
          }
        } else {
          errors++;
          firstError ??= line.toString().slice(0, 300);
        }
        if (!stopped) send();
      }
    });
  });
}

const conns = /** @type {{ stop: () => void }[]} */ (
  await Promise.all(
    Array.from({ length: CONNECTIONS }, (_, i) => open(URLS[i % URLS.length] ?? '')),
  )
);
await sleep(Number(o.warmup) * 1000);
measuring = true;
process.stdout.write('{"event":"measuring"}\n');
const t0 = performance.now();
const cpu0 = process.cpuUsage();
await sleep(Number(o.seconds) * 1000);
measuring = false;
const dt = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
process.stdout.write('{"event":"measured"}\n');
for (const c of conns) c.stop();
process.stdout.write(
  JSON.stringify({
    ackedPerSec: Math.round(acked / dt),
    acked,
    errors,
    firstError,
    seconds: round(dt, 2),
    latencyMs: latency.summary(),
    loadgenCpu: round((cpu.user + cpu.system) / 1e6 / dt, 2),
  }) + '\n',
);
process.exit(0);
