#!/usr/bin/env node
/// <reference types="node" />
/**
 * The baseline: the classic "scale WebSockets with Redis pub/sub" tutorial, written the way the
 * tutorials write it, kept deliberately naive so the benchmark measures the design rather than a
 * tuned variant of it:
 * - a `ws` WebSocketServer;
 * - clients send `{"action":"subscribe","channel":"x"}` (no reply);
 * - on the first subscribe to a channel, a NEW ioredis connection is opened and SUBSCRIBEs it;
 * - each Redis message is parsed once and JSON.stringify'd per client as `{"channel","message"}`,
 *   then sent with ws.send.
 * Publishers PUBLISH the raw JSON payload to the Redis channel of the same name.
 *
 * The tutorials have no heartbeat. With --heartbeat-ms N (used by scenario (e) only) it adds the
 * one the `ws` README shows ("How to detect and close broken connections"): every N ms, terminate
 * each client that has not answered the previous ping, mark the rest not alive, ping them.
 *
 * Usage: node bench/baselines/tutorial.js --port P --redis redis://127.0.0.1:RPORT [--heartbeat-ms N]
 */
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { WebSocketServer, WebSocket } from 'ws';
import { parseJson, rawText } from '../lib.js';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8080' },
    redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
    'heartbeat-ms': { type: 'string', default: '0' },
  },
});
const port = Number(values.port);
const redisUrl = String(values.redis);

/** @type {Map<string, {redis: Redis, clients: Set<WebSocket>}>} channel → its Redis connection and clients */
const channels = new Map();

const wss = new WebSocketServer({ port, path: '/ws' });

wss.on('connection', (ws) => {
  /** @type {Set<string>} */
  const mine = new Set();
  ws.on('message', (raw) => {
    let msg;
    try {
      msg = parseJson(rawText(raw));
    } catch {
      return;
    }
    if (typeof msg !== 'object' || msg === null || !('action' in msg) || !('channel' in msg))
      return;
    if (msg.action !== 'subscribe' || typeof msg.channel !== 'string') return;
    const channel = msg.channel;
    let entry = channels.get(channel);
    if (entry === undefined) {
      const redis = new Redis(redisUrl);
      /** @type {Set<WebSocket>} */
      const clients = new Set();
      entry = { redis, clients };
      channels.set(channel, entry);
      void redis.subscribe(channel);
      redis.on('message', (_ch, /** @type {string} */ message) => {
        let data;
        try {
          data = parseJson(message);
        } catch {
          data = message;
        }
        for (const client of clients) {
          if (client.readyState === WebSocket.OPEN) {
            client.send(JSON.stringify({ channel, message: data }));
          }
        }
      });
    }
    entry.clients.add(ws);
    mine.add(channel);
  });
  ws.on('close', () => {
    for (const channel of mine) channels.get(channel)?.clients.delete(ws);
  });
});

const heartbeatMs = Number(values['heartbeat-ms']);
if (heartbeatMs > 0) {
  /** @type {WeakMap<WebSocket, boolean>} */
  const isAlive = new WeakMap();
  wss.on('connection', (ws) => {
    isAlive.set(ws, true);
    ws.on('pong', () => isAlive.set(ws, true));
  });
  const interval = setInterval(() => {
    for (const ws of wss.clients) {
      if (isAlive.get(ws) === false) {
        ws.terminate();
        continue;
      }
      isAlive.set(ws, false);
      ws.ping();
    }
  }, heartbeatMs);
  wss.on('close', () => clearInterval(interval));
}

wss.on('listening', () => {
  process.stderr.write(`tutorial baseline listening on ${port}\n`);
});

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
