#!/usr/bin/env node
/// <reference types="node" />
/**
 * The Socket.IO baseline: Socket.IO 4 with `@socket.io/redis-adapter`, written the way the
 * Socket.IO documentation shows it, without tuning:
 * - `new Server(port)` with its defaults (Engine.IO v4: polling and WebSocket allowed, the built-in
 *   heartbeat: a ping every 25 s, pingTimeout 20 s, no compression);
 * - `io.adapter(createAdapter(pubClient, subClient))` with an ioredis pair (`subClient =
 *   pubClient.duplicate()`): the adapter pattern-subscribes to `socket.io#*` once, whatever the
 *   number of rooms;
 * - a client joins one room per channel by emitting `subscribe` with the channel name (with an
 *   acknowledgement, so the load generator knows the join happened);
 * - publishers are backends using `@socket.io/redis-emitter` (`emitter.to(channel).emit('message',
 *   data)`), the documented way to emit from outside a Socket.IO server: the emitter PUBLISHes the
 *   msgpack-encoded packet to `socket.io#/#<room>#`, the adapter decodes it once, encodes the
 *   Socket.IO packet once (`42["message",{...}]`) and writes it to every socket in the room.
 *   So this server, like the tutorial and the measured Switchboard node, does fan-out only.
 *
 * Usage: node bench/baselines/socketio.js --port P --redis redis://127.0.0.1:RPORT
 *          [--ping-interval-ms 25000]
 */
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8080' },
    redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
    'ping-interval-ms': { type: 'string', default: '25000' },
  },
});
const port = Number(values.port);

const pubClient = new Redis(String(values.redis));
const subClient = pubClient.duplicate();

const io = new Server({ pingInterval: Number(values['ping-interval-ms']) });
io.adapter(createAdapter(pubClient, subClient));

io.on('connection', (socket) => {
  socket.on(
    'subscribe',
    (/** @type {unknown} */ channel, /** @type {(() => void) | undefined} */ ack) => {
      if (typeof channel !== 'string') return;
      void socket.join(channel);
      if (typeof ack === 'function') ack();
    },
  );
});

io.listen(port);
process.stderr.write(`socket.io baseline listening on ${port}\n`);

process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
