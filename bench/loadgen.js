#!/usr/bin/env node
/// <reference types="node" />
/**
 * Load generator: opens WebSocket subscribers, publishes at a fixed rate in steps, and reports one
 * JSON document on stdout (progress goes to stderr).
 *
 * Every payload is `{"s":<seq>,"c":<channel index>,"t":<send time, ms>,"p":"xxx…"}`, padded to
 * --payload bytes. Subscribers never JSON.parse a message: they find `{"s":` in the raw bytes and
 * read the three numbers, so one WebSocket message carrying many '\n'-joined frames (the
 * `switchboard.v1` batching) costs one scan. Seq numbers are per channel; each subscription keeps
 * a bitset per step to count duplicates, and the totals give the lost count. Send and receive
 * times come from the same clock (publisher and subscribers share this process).
 *
 * Layout: connection i subscribes to shared channel `bench-s<i % channels>`, and with --personal
 * also to its own channel `bench-p<i>`.
 *
 * Systems:
 * - switchboard: subscribers offer `switchboard.v1` and send `{"action":"subscribe","channel","id"}`
 *   (confirmed by the reply); publishes are WebSocket publish commands to --publish-url.
 * - tutorial: subscribers send `{"action":"subscribe","channel"}` (no reply; confirmed with Redis
 *   PUBSUB NUMSUB); publishes are Redis PUBLISH of the raw payload.
 * - socketio: Engine.IO v4 / Socket.IO v5 spoken over a raw `ws` socket (--url
 *   `ws://host:port/socket.io/?EIO=4&transport=websocket`): the server's `0{...}` open is answered
 *   with `40` (connect to the main namespace); after its `40{...}` each subscription is an event
 *   with an acknowledgement, `42<id>["subscribe","<channel>"]`, confirmed by `43<id>[]`; pings `2`
 *   are answered with `3`; messages arrive as `42["message",{"s":…}]` and are scanned like the
 *   others. Publishes go through `@socket.io/redis-emitter` (`emitter.to(channel).emit('message',
 *   payload)`), i.e. a Redis PUBLISH of the msgpack-encoded packet, as a backend would.
 *
 * With no --rates the run is idle: connect, subscribe, wait --idle-seconds, measure RSS. With
 * --hold, it then prints a `{"ready":true,…}` line, keeps every connection open (answering
 * heartbeats) until SIGUSR2 or --hold-max-seconds, and prints its report: scenario (e), where the
 * orchestrator measures the server meanwhile.
 *
 * --source-addresses K spreads the client sockets over the source addresses 127.0.0.1…127.0.0.K
 * (`localAddress`), each with its own ephemeral port range, for more than ~28,000 connections or
 * many sockets in TIME_WAIT.
 */
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { WebSocket } from 'ws';
import { Emitter } from '@socket.io/redis-emitter';
import { Packr } from 'msgpackr';
import { Histogram, cpuMeter, parseJson, round, rssKiB, sleep } from './lib.js';

const { values: opts } = parseArgs({
  options: {
    system: { type: 'string', default: 'switchboard' },
    url: { type: 'string', default: 'ws://127.0.0.1:8080/ws' },
    'publish-url': { type: 'string' },
    redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
    connections: { type: 'string', default: '1000' },
    channels: { type: 'string', default: '1' },
    personal: { type: 'boolean', default: false },
    'shared-share': { type: 'string' },
    payload: { type: 'string', default: '128' },
    rates: { type: 'string', default: '' },
    'step-seconds': { type: 'string', default: '10' },
    'warmup-seconds': { type: 'string', default: '2' },
    'drain-seconds': { type: 'string', default: '10' },
    'p99-limit-ms': { type: 'string', default: '1000' },
    'stop-on-fail': { type: 'boolean', default: false },
    refine: { type: 'string', default: '0' },
    'idle-seconds': { type: 'string', default: '5' },
    'connect-concurrency': { type: 'string', default: '200' },
    'subscribe-timeout-seconds': { type: 'string', default: '60' },
    publishers: { type: 'string', default: '4' },
    'server-pid': { type: 'string' },
    'redis-pid': { type: 'string' },
    watch: { type: 'string', default: '' },
    label: { type: 'string', default: '' },
    'noise-retries': { type: 'string', default: '2' },
    'noisy-wait': { type: 'string', default: '0.3' },
    name: { type: 'string' },
    'source-addresses': { type: 'string', default: '1' },
    hold: { type: 'boolean', default: false },
    'hold-max-seconds': { type: 'string', default: '600' },
  },
});

/** The protocol spoken; --name is the system's name in the results (e.g. switchboard-uws). */
const SYSTEM =
  opts.system === 'tutorial' ? 'tutorial' : opts.system === 'socketio' ? 'socketio' : 'switchboard';
/**
 * `--system ably`: Switchboard with Ably-SDK-shaped subscribers (the SDK's msgpack framing, its
 * Node default): connect on `/`, ATTACH each channel after CONNECTED, count ATTACHED; messages
 * published natively arrive as Ably MESSAGEs whose data is the payload's JSON text, scanned raw.
 */
const ABLY = opts.system === 'ably';
const ablyPackr = new Packr({ useRecords: false });
const NAME = opts.name ?? (ABLY ? 'ably' : SYSTEM);
const SOURCE_ADDRESSES = Math.max(1, Math.min(254, Number(opts['source-addresses'])));
const N = Number(opts.connections);
const C = Number(opts.channels);
const PERSONAL = opts.personal === true;
const PAYLOAD = Number(opts.payload);
const RATES = String(opts.rates)
  .split(',')
  .filter((s) => s.trim() !== '')
  .map(Number);
const STEP_S = Number(opts['step-seconds']);
const WARMUP_S = Number(opts['warmup-seconds']);
const DRAIN_S = Number(opts['drain-seconds']);
const P99_LIMIT = Number(opts['p99-limit-ms']);
const REFINE = Number(opts.refine);
const CONCURRENCY = Number(opts['connect-concurrency']);
const PUBLISHERS = Math.max(1, Number(opts.publishers));
const SERVER_PID = opts['server-pid'] === undefined ? undefined : Number(opts['server-pid']);
const REDIS_PID = opts['redis-pid'] === undefined ? undefined : Number(opts['redis-pid']);
const NOISE_RETRIES = Number(opts['noise-retries']);
const NOISY_WAIT = Number(opts['noisy-wait']);
const TOTAL_CHANNELS = C + (PERSONAL ? N : 0);
/** Fraction of publishes that go to shared channels; default: uniform over all channels. */
const SHARED_SHARE =
  opts['shared-share'] === undefined ? C / TOTAL_CHANNELS : Number(opts['shared-share']);

/** @param {string} text */
function log(text) {
  process.stderr.write(`[loadgen ${NAME}${opts.label === '' ? '' : ' ' + opts.label}] ${text}\n`);
}

/** @param {number} c */
function channelName(c) {
  return c < C ? `bench-s${c}` : `bench-p${c - C}`;
}

// ---- per-channel state --------------------------------------------------------------------------
/** Next seq to publish, per channel. */
const nextSeq = new Float64Array(TOTAL_CHANNELS);
/** First seq of the current step, per channel. */
const stepBase = new Float64Array(TOTAL_CHANNELS);
/** Subscriptions intended per channel (whether or not they were established). */
const subsPerChannel = new Float64Array(TOTAL_CHANNELS);
const channelNames = Array.from({ length: TOTAL_CHANNELS }, (_, c) => channelName(c));

// ---- step state ---------------------------------------------------------------------------------
let step = -1;
let hist = new Histogram();
/** Start of the current step (performance.now()), for the per-second timeline. */
let stepT0 = 0;
/** Per second of the current step: deliveries and the worst latency. */
let timelineCount = new Float64Array(0);
let timelineMax = new Float64Array(0);
let unique = 0;
let dups = 0;
let late = 0;
let reordered = 0;
let disconnects = 0;
let disconnectsTotal = 0;
/** @type {number | undefined} Seconds after start of the first close of an open subscriber. */
let firstDisconnectAt;
const T_START = performance.now();
let publishErrors = 0;
/** @type {string | undefined} */
let firstPublishError;
/** @type {Record<string, number>} */
const closeCodes = {};

class Tracker {
  /** @param {number} ch */
  constructor(ch) {
    this.ch = ch;
    this.step = -2;
    this.bits = new Uint8Array(0);
    this.max = -1;
  }

  /** @param {number} seq @param {number} latency @param {number} now */
  onSeq(seq, latency, now) {
    const base = stepBase[this.ch] ?? 0;
    if (seq < base || step < 0) {
      late++;
      return;
    }
    if (this.step !== step) {
      this.step = step;
      this.bits = new Uint8Array(64);
      this.max = -1;
    }
    const idx = seq - base;
    const byte = idx >>> 3;
    if (byte >= this.bits.length) {
      let size = this.bits.length * 2;
      while (size <= byte) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.bits);
      this.bits = grown;
    }
    const mask = 1 << (idx & 7);
    const cur = this.bits[byte] ?? 0;
    if ((cur & mask) !== 0) {
      dups++;
      return;
    }
    this.bits[byte] = cur | mask;
    if (idx < this.max) reordered++;
    else this.max = idx;
    unique++;
    hist.record(latency);
    const sec = Math.floor((now - stepT0) / 1000);
    if (sec >= 0 && sec < timelineCount.length) {
      timelineCount[sec] = (timelineCount[sec] ?? 0) + 1;
      if (latency > (timelineMax[sec] ?? 0)) timelineMax[sec] = latency;
    }
  }
}

class Conn {
  /** @param {number} i */
  constructor(i) {
    this.i = i;
    /** @type {WebSocket | undefined} */
    this.ws = undefined;
    this.open = false;
    this.shared = new Tracker(i % C);
    this.own = PERSONAL ? new Tracker(C + i) : undefined;
  }
}

// ---- receive path: scan raw bytes, no JSON.parse per message -------------------------------------
const NEEDLE = Buffer.from('{"s":');
let scanPos = 0;

/** @param {Buffer} b @param {number} i */
function readUint(b, i) {
  let v = 0;
  let c = b[i] ?? 0;
  while (c >= 48 && c <= 57) {
    v = v * 10 + (c - 48);
    c = b[++i] ?? 0;
  }
  scanPos = i;
  return v;
}

/** @param {Buffer} b @param {number} i */
function readFloat(b, i) {
  let v = readUint(b, i);
  i = scanPos;
  if (b[i] === 46) {
    let scale = 0.1;
    let c = b[++i] ?? 0;
    while (c >= 48 && c <= 57) {
      v += (c - 48) * scale;
      scale /= 10;
      c = b[++i] ?? 0;
    }
  }
  scanPos = i;
  return v;
}

/** When the last message frame arrived (performance.now()). */
let lastArrival = 0;

/** Waits until no message has arrived for `quietMs`, or `maxMs` passed. @param {number} quietMs @param {number} maxMs */
async function waitIdle(quietMs, maxMs) {
  const t0 = performance.now();
  while (performance.now() - lastArrival < quietMs && performance.now() - t0 < maxMs)
    await sleep(100);
}

let subscribeReplies = 0;
let subscribeErrors = 0;
/** Heartbeat pings received from the server (WebSocket pings, or Engine.IO `2` packets). */
let pingsReceived = 0;
function onPing() {
  pingsReceived++;
}
/** @type {string | undefined} */
let firstSubscribeError;

/** @param {Conn} conn @param {Buffer} buf */
function onSubscriberData(conn, buf) {
  // `{"r…` reply or `{"e…` error (Switchboard control frames); everything else carries messages.
  const third = buf[2];
  if (third === 0x72 || third === 0x65) {
    onControl(buf);
    return;
  }
  const now = performance.now();
  lastArrival = now;
  let at = buf.indexOf(NEEDLE, 0);
  while (at !== -1) {
    const seq = readUint(buf, at + 5);
    // `,"c":`
    const ch = readUint(buf, scanPos + 5);
    // `,"t":`
    const t = readFloat(buf, scanPos + 5);
    const tracker = ch === conn.shared.ch ? conn.shared : conn.own;
    if (tracker !== undefined && tracker.ch === ch) tracker.onSeq(seq, now - t, now);
    // The payload is ~PAYLOAD bytes from `{"s":` (re-encoding may drop a trailing zero of "t"):
    // skip its padding before searching on.
    at = buf.indexOf(NEEDLE, Math.max(scanPos, at + PAYLOAD - 8));
  }
}

/** @param {Buffer} buf */
function onControl(buf) {
  for (const line of buf.toString().split('\n')) {
    let frame;
    try {
      frame = parseJson(line);
    } catch {
      continue;
    }
    if (typeof frame !== 'object' || frame === null) continue;
    if ('reply' in frame && 'ok' in frame && frame.ok === true) subscribeReplies++;
    else if ('error' in frame) {
      subscribeErrors++;
      firstSubscribeError ??= line;
    }
  }
}

/**
 * Ably msgpack frames: those carrying a payload are scanned raw like the others (a MESSAGE's first
 * bytes are its map header and the `action` key, never `{"r`/`{"e`); the rest are decoded.
 * @param {Conn} conn @param {Buffer} buf
 */
function onAblyData(conn, buf) {
  if (buf.indexOf(NEEDLE) !== -1) {
    onSubscriberData(conn, buf);
    return;
  }
  /** @type {unknown} */
  let decoded;
  try {
    decoded = /** @type {unknown} */ (ablyPackr.unpack(buf));
  } catch {
    return;
  }
  if (typeof decoded !== 'object' || decoded === null) return;
  const pm = /** @type {{action?: number, error?: unknown}} */ (decoded);
  if (pm.action === 4) {
    for (const c of subscribedChannels(conn))
      conn.ws?.send(ablyPackr.pack({ action: 10, channel: channelNames[c] ?? '' }));
  } else if (pm.action === 11) subscribeReplies++;
  else if (pm.action === 9 || (pm.action === 13 && pm.error !== undefined)) {
    subscribeErrors++;
    firstSubscribeError ??= JSON.stringify(pm).slice(0, 300);
  }
}

/**
 * Socket.IO over a raw WebSocket: one Engine.IO packet per WebSocket message; the first byte is
 * the Engine.IO packet type, the second (for a message, `4`) the Socket.IO packet type.
 * @param {Conn} conn @param {Buffer} buf
 */
function onSocketIoData(conn, buf) {
  const eio = buf[0];
  if (eio === 0x34 /* 4: message */) {
    const sio = buf[1];
    if (sio === 0x32 /* 2: event */) onSubscriberData(conn, buf);
    else if (sio === 0x33 /* 3: ack */) subscribeReplies++;
    else if (sio === 0x30 /* 0: namespace connected */) sendSocketIoSubscribes(conn);
    else if (sio === 0x34 /* 4: connect error */) {
      subscribeErrors++;
      firstSubscribeError ??= buf.toString().slice(0, 300);
    }
  } else if (eio === 0x32 /* 2: ping */) {
    pingsReceived++;
    conn.ws?.send('3');
  } else if (eio === 0x30 /* 0: open */) conn.ws?.send('40');
}

/** @param {Conn} conn */
function subscribedChannels(conn) {
  return conn.own === undefined ? [conn.shared.ch] : [conn.shared.ch, conn.own.ch];
}

/** @param {Conn} conn */
function sendSocketIoSubscribes(conn) {
  let id = 1;
  for (const c of subscribedChannels(conn))
    conn.ws?.send(`42${id++}["subscribe","${channelNames[c] ?? ''}"]`);
}

// ---- connecting ---------------------------------------------------------------------------------
const conns = Array.from({ length: N }, (_, i) => new Conn(i));
let connectFailures = 0;
/** @type {string | undefined} */
let firstConnectError;
let subscribesSent = 0;

for (let i = 0; i < N; i++) {
  subsPerChannel[i % C] = (subsPerChannel[i % C] ?? 0) + 1;
  if (PERSONAL) subsPerChannel[C + i] = 1;
}

/** @param {Conn} conn @returns {Promise<void>} */
function connectOne(conn) {
  return new Promise((resolve) => {
    const protocols = SYSTEM === 'switchboard' && !ABLY ? ['switchboard.v1'] : [];
    const ws = new WebSocket(String(opts.url), protocols, {
      perMessageDeflate: false,
      skipUTF8Validation: true,
      handshakeTimeout: 20_000,
      ...(SOURCE_ADDRESSES > 1 && { localAddress: `127.0.0.${1 + (conn.i % SOURCE_ADDRESSES)}` }),
    });
    conn.ws = ws;
    let settled = false;
    const done = () => {
      if (!settled) {
        settled = true;
        resolve();
      }
    };
    ws.on('open', () => {
      conn.open = true;
      const channels = subscribedChannels(conn);
      if (SYSTEM === 'socketio' || ABLY) {
        // Sent once the namespace is connected (`40{...}`) or on CONNECTED; counted now.
        subscribesSent += channels.length;
        done();
        return;
      }
      let id = 1;
      for (const c of channels) {
        const name = channelNames[c] ?? '';
        ws.send(
          SYSTEM === 'switchboard'
            ? `{"action":"subscribe","channel":"${name}","id":${id++}}`
            : `{"action":"subscribe","channel":"${name}"}`,
        );
        subscribesSent++;
      }
      done();
    });
    if (ABLY) {
      ws.on('message', (data) => onAblyData(conn, /** @type {Buffer} */ (data)));
      ws.on('ping', onPing);
    } else if (SYSTEM === 'socketio')
      ws.on('message', (data) => onSocketIoData(conn, /** @type {Buffer} */ (data)));
    else {
      ws.on('message', (data) => onSubscriberData(conn, /** @type {Buffer} */ (data)));
      ws.on('ping', onPing);
    }
    ws.on('error', (err) => {
      if (!conn.open) {
        connectFailures++;
        firstConnectError ??= err.message;
      }
      done();
    });
    ws.on('close', (code) => {
      if (conn.open) {
        disconnects++;
        disconnectsTotal++;
        firstDisconnectAt ??= round((performance.now() - T_START) / 1000, 1);
        closeCodes[code] = (closeCodes[code] ?? 0) + 1;
        conn.open = false;
      } else if (!settled) {
        connectFailures++;
        firstConnectError ??= `closed with ${code} before open`;
      }
      done();
    });
  });
}

async function connectAll() {
  let next = 0;
  const worker = async () => {
    while (next < N) {
      const conn = conns[next++];
      if (conn !== undefined) await connectOne(conn);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, N) }, worker));
}

/** Switchboard's default Redis prefix: its pub/sub channel for `x` is `<prefix>p:{x}`. */
const SB_PREFIX = 'switchboard:';

/**
 * Channels with at least one Redis subscriber.
 * @param {Redis} redis @param {string} [prefix] Switchboard's key prefix (its pub/sub names differ)
 * @returns {Promise<number>}
 */
async function countSubscribedChannels(redis, prefix = '') {
  if (prefix !== '') {
    // Switchboard names pub/sub channels itself; count the ones under its prefix.
    const active = /** @type {string[]} */ (
      await redis.call('PUBSUB', 'CHANNELS', `${prefix}*bench-*`)
    );
    return active.length;
  }
  let subscribed = 0;
  for (let from = 0; from < TOTAL_CHANNELS; from += 1000) {
    const names = channelNames.slice(from, from + 1000);
    const reply = /** @type {(string | number)[]} */ (
      await redis.call('PUBSUB', 'NUMSUB', ...names)
    );
    for (let i = 1; i < reply.length; i += 2) if (Number(reply[i]) > 0) subscribed++;
  }
  return subscribed;
}

/** Waits until every subscription is confirmed, or progress stalls, or the timeout passes. */
async function waitSubscribed(/** @type {Redis} */ redis) {
  const deadline = performance.now() + Number(opts['subscribe-timeout-seconds']) * 1000;
  let last = -1;
  let lastChange = performance.now();
  for (;;) {
    let confirmed;
    let target;
    if (SYSTEM !== 'tutorial') {
      confirmed = subscribeReplies + subscribeErrors;
      target = subscribesSent;
    } else {
      confirmed = await countSubscribedChannels(redis);
      target = TOTAL_CHANNELS;
    }
    if (confirmed >= target) return confirmed;
    if (confirmed !== last) {
      last = confirmed;
      lastChange = performance.now();
    }
    if (performance.now() > deadline || performance.now() - lastChange > 10_000) return confirmed;
    await sleep(250);
  }
}

// ---- publishing ---------------------------------------------------------------------------------
const PAD = 'x'.repeat(Math.max(PAYLOAD, 16));

/** @param {number} c @param {number} seq */
function payload(c, seq) {
  const head = `{"s":${seq},"c":${c},"t":${performance.now().toFixed(3)},"p":"`;
  return head + PAD.slice(0, Math.max(0, PAYLOAD - head.length - 2)) + '"}';
}

/** @type {Publisher[]} */
const publishers = [];
/** @type {Redis | undefined} */
let pubRedis;
/** @type {Emitter | undefined} */
let emitter;

/**
 * A Switchboard publishing connection with client-side flow control: every publish carries a
 * request id, and at most MAX_IN_FLIGHT wait for their acknowledgement (the server refuses more
 * than 1024 per connection); the rest queue here, so a backlog shows up as latency (the payload's
 * timestamp is taken when the message is generated), never as refused publishes.
 */
class Publisher {
  static MAX_IN_FLIGHT = 512;

  /** @param {WebSocket} ws */
  constructor(ws) {
    this.ws = ws;
    this.inFlight = 0;
    this.nextId = 1;
    /** @type {string[]} */
    this.queue = [];
    this.queueHead = 0;
  }

  /** @param {string} name @param {string} data */
  publish(name, data) {
    const frame = `{"action":"publish","channel":"${name}","data":${data},"id":`;
    if (this.inFlight < Publisher.MAX_IN_FLIGHT && this.queueHead === this.queue.length) {
      this.#send(frame);
    } else this.queue.push(frame);
  }

  /** @param {string} frame */
  #send(frame) {
    this.inFlight++;
    this.ws.send(frame + String(this.nextId++) + '}');
  }

  /** @param {Buffer} buf replies and errors, possibly several per message */
  onData(buf) {
    let acks = 0;
    for (let at = buf.indexOf('{"reply"'); at !== -1; at = buf.indexOf('{"reply"', at + 8)) acks++;
    if (buf.includes('"error"')) {
      const text = buf.toString();
      const errors = text.split('\n').filter((line) => line.includes('"error"'));
      publishErrors += errors.length;
      firstPublishError ??= errors[0]?.slice(0, 300);
      // error frames without a reply id still end a command
      acks += errors.filter((line) => !line.startsWith('{"reply"')).length;
    }
    this.inFlight -= acks;
    while (this.inFlight < Publisher.MAX_IN_FLIGHT && this.queueHead < this.queue.length) {
      this.#send(this.queue[this.queueHead++] ?? '');
    }
    if (this.queueHead === this.queue.length && this.queueHead > 0) {
      this.queue = [];
      this.queueHead = 0;
    }
  }

  get queued() {
    return this.queue.length - this.queueHead;
  }
}

async function openPublishers() {
  if (SYSTEM !== 'switchboard') {
    pubRedis = new Redis(String(opts['publish-url'] ?? opts.redis), {
      enableAutoPipelining: true,
      lazyConnect: true,
    });
    await pubRedis.connect();
    if (SYSTEM === 'socketio') emitter = new Emitter(pubRedis);
    return;
  }
  const url = String(opts['publish-url'] ?? opts.url);
  await Promise.all(
    Array.from(
      { length: PUBLISHERS },
      () =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(url, ['switchboard.v1'], { perMessageDeflate: false });
          const publisher = new Publisher(ws);
          ws.on('open', () => resolve(undefined));
          ws.on('error', reject);
          ws.on('message', (data) => publisher.onData(/** @type {Buffer} */ (data)));
          publishers.push(publisher);
        }),
    ),
  );
}

/** @param {number} c */
function publishOne(c) {
  const seq = nextSeq[c] ?? 0;
  nextSeq[c] = seq + 1;
  const data = payload(c, seq);
  const name = channelNames[c] ?? '';
  if (emitter !== undefined) {
    // An object, so Socket.IO's JSON encoding yields `{"s":…,"c":…,"t":…,"p":"…"}` on the wire.
    emitter.to(name).emit('message', parseJson(data));
  } else if (pubRedis !== undefined) {
    pubRedis.publish(name, data).catch((/** @type {unknown} */ err) => {
      publishErrors++;
      firstPublishError ??= String(err);
    });
  } else {
    publishers[c % publishers.length]?.publish(name, data);
  }
}

let rr = 0;
let rrShared = 0;
let rrPersonal = 0;

function pickChannel() {
  if (!PERSONAL) return rrShared++ % C;
  const k = rr++;
  const toShared = Math.floor((k + 1) * SHARED_SHARE) > Math.floor(k * SHARED_SHARE);
  return toShared ? rrShared++ % C : C + (rrPersonal++ % N);
}

/**
 * Publishes at `rate` msg/s for `seconds`, ticking every 2 ms and sending whatever is due.
 * @param {number} rate @param {number} seconds
 */
async function publishFor(rate, seconds) {
  const start = performance.now();
  const end = start + seconds * 1000;
  let sent = 0;
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const now = Math.min(performance.now(), end);
      const due = Math.floor(((now - start) / 1000) * rate);
      while (sent < due) {
        publishOne(pickChannel());
        sent++;
      }
      if (now >= end) {
        clearInterval(timer);
        resolve(undefined);
      }
    }, 2);
  });
  return sent;
}

// ---- steps --------------------------------------------------------------------------------------
const watchPids = /** @type {Record<string, number>} */ ({ loadgen: process.pid });
if (SERVER_PID !== undefined) watchPids['server'] = SERVER_PID;
if (REDIS_PID !== undefined) watchPids['redis'] = REDIS_PID;
for (const pair of String(opts.watch).split(',')) {
  const [name, pid] = pair.split('=');
  if (name !== undefined && name !== '' && pid !== undefined) watchPids[name] = Number(pid);
}

/** @param {number} seconds expected length of the step, for the timeline */
function beginStep(seconds) {
  step++;
  stepBase.set(nextSeq);
  hist = new Histogram();
  stepT0 = performance.now();
  timelineCount = new Float64Array(Math.ceil(seconds + DRAIN_S + 2));
  timelineMax = new Float64Array(timelineCount.length);
  unique = 0;
  dups = 0;
  late = 0;
  reordered = 0;
  disconnects = 0;
  publishErrors = 0;
  firstPublishError = undefined;
}

function expectedDeliveries() {
  let total = 0;
  for (let c = 0; c < TOTAL_CHANNELS; c++)
    total += ((nextSeq[c] ?? 0) - (stepBase[c] ?? 0)) * (subsPerChannel[c] ?? 0);
  return total;
}

/** Runs one step at `rate` and returns its measurements. @param {number} rate */
async function runStep(rate) {
  beginStep(STEP_S);
  const cpu = cpuMeter(watchPids);
  const t0 = performance.now();
  const sent = await publishFor(rate, STEP_S);
  const publishMs = performance.now() - t0;
  const receivedInWindow = unique;
  const cpuDuring = cpu();
  const publishBacklog = publishers.reduce((n, p) => n + p.queued, 0);
  const expected = expectedDeliveries();
  // Drain: wait for everything, or until nothing new arrives for 2 s, or DRAIN_S.
  const drainStart = performance.now();
  let lastUnique = unique;
  let lastProgress = drainStart;
  while (unique < expected) {
    await sleep(50);
    const now = performance.now();
    if (unique !== lastUnique) {
      lastUnique = unique;
      lastProgress = now;
    }
    if (now - lastProgress > 2000 || now - drainStart > DRAIN_S * 1000) break;
  }
  const drainMs = performance.now() - drainStart;
  const lat = hist.summary();
  const lost = expected - unique;
  const result = {
    rate,
    published: sent,
    publishSeconds: round(publishMs / 1000, 2),
    expectedDeliveries: expected,
    delivered: unique,
    deliveredPerSec: Math.round(unique / (publishMs / 1000)),
    deliveredInWindowPerSec: Math.round(receivedInWindow / (publishMs / 1000)),
    drainSeconds: round(drainMs / 1000, 2),
    latencyMs: lat,
    lost,
    duplicated: dups,
    reordered,
    late,
    disconnects,
    publishErrors,
    firstPublishError,
    /** Publishes generated but still waiting for the publisher's flow control at the step's end. */
    publishBacklog,
    cpuCores: cpuDuring,
    /** Server efficiency, robust to other load on the machine: deliveries per CPU-second used. */
    deliveriesPerServerCpuSecond:
      typeof cpuDuring['server'] === 'number' && cpuDuring['server'] > 0
        ? Math.round(receivedInWindow / (publishMs / 1000) / cpuDuring['server'])
        : undefined,
    serverRssKiB: SERVER_PID === undefined ? undefined : rssKiB(SERVER_PID),
    /** Per second from the start of the step: [deliveries, worst latency ms]. */
    timeline: Array.from(timelineCount, (n, i) => [n, round(timelineMax[i] ?? 0, 1)]).filter(
      (_, i) => i < Math.ceil((publishMs + drainMs) / 1000),
    ),
    pass: false,
    retried: false,
  };
  result.pass =
    lost === 0 &&
    dups === 0 &&
    disconnects === 0 &&
    publishErrors === 0 &&
    (lat.p99 ?? Infinity) <= P99_LIMIT &&
    sent > 0;
  log(
    `rate ${rate}/s: delivered ${result.deliveredPerSec}/s, p50 ${lat.p50} p99 ${lat.p99} max ${lat.max} ms, ` +
      `lost ${lost}, dup ${dups}, disc ${disconnects}, pubErr ${publishErrors}, cpu ${JSON.stringify(cpuDuring)} → ${result.pass ? 'pass' : 'FAIL'}`,
  );
  return result;
}

let noiseRetriesLeft = NOISE_RETRIES;

/**
 * Runs a step; when it fails while the server's or the load generator's main thread spent more
 * than NOISY_WAIT of the step waiting for a CPU (other load on the machine), and nothing was cut
 * off, records the attempt (`retried: true`) and runs the same rate once more.
 * @param {number} rate @param {Awaited<ReturnType<typeof runStep>>[]} steps
 */
async function runStepRetryingNoise(rate, steps) {
  const r = await runStep(rate);
  if (r.pass || noiseRetriesLeft <= 0 || r.disconnects > 0) return r;
  const waits = [r.cpuCores['serverRunQueueWait'], r.cpuCores['loadgenRunQueueWait']];
  if (!waits.some((w) => typeof w === 'number' && w > NOISY_WAIT)) return r;
  noiseRetriesLeft--;
  log(
    `rate ${rate}/s failed while CPUs were contended (run-queue wait ${waits.join('/')}); retrying once`,
  );
  steps.push({ ...r, retried: true });
  await waitIdle(1500, 30_000);
  return runStep(rate);
}

// ---- hold (scenario e) --------------------------------------------------------------------------
/**
 * Tells the orchestrator every connection is up and keeps them open (answering heartbeats): the
 * first SIGUSR2 starts the measured window, the second ends it (or --hold-max-seconds each);
 * then reports what happened during the window.
 * @param {Record<string, unknown>} connectReport @param {Record<string, unknown>} memory
 */
async function hold(connectReport, memory) {
  let signals = 0;
  let wake = () => {};
  process.on('SIGUSR2', () => {
    signals++;
    wake();
  });
  const maxMs = Number(opts['hold-max-seconds']) * 1000;
  /** @param {number} n */
  const untilSignals = (n) =>
    new Promise((resolve) => {
      if (signals >= n) {
        resolve(undefined);
        return;
      }
      const timer = setTimeout(resolve, maxMs);
      wake = () => {
        if (signals < n) return;
        clearTimeout(timer);
        resolve(undefined);
      };
    });
  process.stdout.write(
    JSON.stringify({ ready: true, pid: process.pid, open: conns.filter((c) => c.open).length }) +
      '\n',
  );
  await untilSignals(1);
  const open = conns.filter((c) => c.open).length;
  const pings0 = pingsReceived;
  const disc0 = disconnectsTotal;
  const t0 = performance.now();
  await untilSignals(2);
  const heldSeconds = (performance.now() - t0) / 1000;
  const output = {
    system: NAME,
    protocol: SYSTEM,
    label: opts.label,
    config: { url: opts.url, connections: N, sharedChannels: C, sourceAddresses: SOURCE_ADDRESSES },
    connect: connectReport,
    memory,
    hold: {
      seconds: round(heldSeconds, 1),
      openAtStart: open,
      openAtEnd: conns.filter((c) => c.open).length,
      disconnects: disconnectsTotal - disc0,
      pingsReceived: pingsReceived - pings0,
    },
    closeCodes,
    firstDisconnectAt,
  };
  process.stdout.write(JSON.stringify(output) + '\n');
}

// ---- main ---------------------------------------------------------------------------------------
async function main() {
  const redis = new Redis(String(opts.redis), { lazyConnect: true, maxRetriesPerRequest: 2 });
  await redis.connect();
  const rssBefore = SERVER_PID === undefined ? undefined : rssKiB(SERVER_PID);
  const redisRssBefore = REDIS_PID === undefined ? undefined : rssKiB(REDIS_PID);
  const t0 = performance.now();
  await connectAll();
  const connected = conns.filter((c) => c.open).length;
  const connectSeconds = (performance.now() - t0) / 1000;
  log(`${connected}/${N} connected in ${connectSeconds.toFixed(1)} s; confirming subscriptions`);
  const confirmed = await waitSubscribed(redis);
  const subscribeSeconds = (performance.now() - t0) / 1000 - connectSeconds;
  log(
    SYSTEM !== 'tutorial'
      ? `${subscribeReplies} subscribe ${SYSTEM === 'socketio' ? 'acks' : 'replies ok'}, ${subscribeErrors} errors of ${subscribesSent} sent`
      : `${confirmed}/${TOTAL_CHANNELS} channels have a Redis subscriber`,
  );
  /** @type {Record<string, string>} */
  const redisInfo = {};
  try {
    const info = await redis.info();
    for (const key of ['connected_clients', 'rejected_connections', 'maxclients']) {
      const m = new RegExp(`^${key}:(\\S+)`, 'm').exec(info);
      if (m !== null && m[1] !== undefined) redisInfo[key] = m[1];
    }
    const maxclients = /** @type {string[]} */ (await redis.config('GET', 'maxclients'));
    if (maxclients[1] !== undefined) redisInfo['maxclients'] = maxclients[1];
  } catch (err) {
    redisInfo['error'] = String(err);
  }

  const idle = RATES.length === 0;
  let rssAfter;
  if (idle) {
    // Let the server settle, then take the last of a few samples.
    const samples = [];
    for (let i = 0; i < Math.max(1, Number(opts['idle-seconds'])); i++) {
      await sleep(1000);
      if (SERVER_PID !== undefined) samples.push(rssKiB(SERVER_PID));
    }
    rssAfter = samples.at(-1);
  } else {
    await sleep(500);
    rssAfter = SERVER_PID === undefined ? undefined : rssKiB(SERVER_PID);
  }
  const stillOpen = conns.filter((c) => c.open).length;
  const connectReport = {
    connections: N,
    connected,
    connectFailures,
    firstConnectError,
    connectSeconds: round(connectSeconds, 2),
    subscriptions: N * (PERSONAL ? 2 : 1),
    channels: TOTAL_CHANNELS,
    subscribeConfirmed: SYSTEM === 'tutorial' ? confirmed : subscribeReplies,
    subscribeConfirmedUnit: SYSTEM === 'tutorial' ? 'channels' : 'subscriptions',
    /**
     * Channels with a Redis subscriber once subscribing settled (PUBSUB NUMSUB / CHANNELS); the
     * Socket.IO adapter holds one pattern subscription (`socket.io#*`) whatever the rooms.
     */
    subscribeConfirmedChannels:
      SYSTEM === 'switchboard'
        ? await countSubscribedChannels(redis, SB_PREFIX)
        : SYSTEM === 'socketio'
          ? 'n/a: one PSUBSCRIBE'
          : confirmed,
    subscribeErrors,
    firstSubscribeError,
    subscribeSeconds: round(subscribeSeconds, 2),
    openAfterSubscribe: stillOpen,
    disconnectsWhileSubscribing: disconnects,
    redis: redisInfo,
  };
  const memory = {
    serverRssBeforeKiB: rssBefore,
    serverRssAfterConnectKiB: rssAfter,
    perConnectionKiB:
      rssBefore === undefined || rssAfter === undefined || connected === 0
        ? undefined
        : round((rssAfter - rssBefore) / connected, 2),
    redisRssBeforeKiB: redisRssBefore,
    redisRssAfterConnectKiB: REDIS_PID === undefined ? undefined : rssKiB(REDIS_PID),
  };
  log(`server RSS ${rssBefore} → ${rssAfter} KiB (${memory.perConnectionKiB} KiB per connection)`);

  if (opts.hold === true) {
    await hold(connectReport, memory);
    for (const c of conns) c.ws?.terminate();
    redis.disconnect();
    setTimeout(() => process.exit(0), 200).unref();
    return;
  }

  /** @type {Awaited<ReturnType<typeof runStep>>[]} */
  const steps = [];
  let best;
  let firstFail;
  if (!idle && connected > 0) {
    await openPublishers();
    if (WARMUP_S > 0) {
      beginStep(WARMUP_S);
      await publishFor(RATES[0] ?? 100, WARMUP_S);
      await sleep(1000);
    }
    for (const rate of RATES) {
      const r = await runStepRetryingNoise(rate, steps);
      steps.push(r);
      if (r.pass) best = r;
      else {
        firstFail = r;
        if (opts['stop-on-fail'] === true) break;
      }
      if (conns.every((c) => !c.open)) break;
    }
    // Bisect between the best passing rate and the first failing one, while nothing was cut off.
    let lo = best?.rate;
    let hi = firstFail?.rate;
    for (let k = 0; k < REFINE && lo !== undefined && hi !== undefined; k++) {
      if (steps.some((s) => s.disconnects > 0)) break;
      const rate = Math.round((lo + hi) / 2);
      if (rate <= lo || rate >= hi) break;
      // A failed step may leave a backlog in the server; start the next one from idle.
      await waitIdle(1500, 30_000);
      const r = await runStepRetryingNoise(rate, steps);
      steps.push(r);
      if (r.pass) {
        best = r;
        lo = rate;
      } else hi = rate;
    }
  }
  const output = {
    system: NAME,
    protocol: SYSTEM,
    label: opts.label,
    config: {
      url: opts.url,
      publishUrl: opts['publish-url'],
      connections: N,
      sharedChannels: C,
      personalChannels: PERSONAL,
      sharedShare: PERSONAL ? SHARED_SHARE : 1,
      payloadBytes: PAYLOAD,
      rates: RATES,
      stepSeconds: STEP_S,
      p99LimitMs: P99_LIMIT,
      publishers:
        SYSTEM === 'switchboard' ? PUBLISHERS : SYSTEM === 'socketio' ? 'redis-emitter' : 'redis',
      sourceAddresses: SOURCE_ADDRESSES,
    },
    connect: connectReport,
    memory,
    steps,
    best:
      best === undefined
        ? undefined
        : {
            rate: best.rate,
            deliveredPerSec: best.deliveredPerSec,
            latencyMs: best.latencyMs,
            deliveriesPerServerCpuSecond: best.deliveriesPerServerCpuSecond,
            cpuCores: best.cpuCores,
          },
    firstFailure: firstFail?.rate,
    /** The last step run (for single-rate runs: the result, after any retry). */
    lastStep: steps.at(-1),
    openAtEnd: conns.filter((c) => c.open).length,
    disconnectsTotal,
    firstDisconnectAt,
    closeCodes,
  };
  process.stdout.write(JSON.stringify(output) + '\n');
  for (const c of conns) c.ws?.terminate();
  for (const p of publishers) p.ws.terminate();
  pubRedis?.disconnect();
  redis.disconnect();
  setTimeout(() => process.exit(0), 200).unref();
}

main().catch((err) => {
  log(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
});
