/**
 * The SDK against a real Switchboard server started in-process, with real sockets. Faults are
 * injected by terminating the SDK's own ws socket, by a TCP proxy, or by restarting the server.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, describe, it } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import {
  eventually,
  freePort,
  requireBinary,
  startRedis,
  startTestServer,
} from '../../server/test/helpers.js';
import {
  ErrorCode,
  Switchboard,
  type SwitchboardError,
  type ConnectionState,
  type DiscontinuityInfo,
  type Message,
  type StateChange,
  type SwitchboardOptions,
  type WebSocketConstructor,
} from '../src/index.js';
import { TcpProxy } from './tcp-proxy.js';

type TestServer = Awaited<ReturnType<typeof startTestServer>>;

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

/** A `ws` WebSocket class that remembers its instances, so a test can kill the SDK's socket. */
function recordingWebSocket(): { WebSocket: WebSocketConstructor; sockets: WebSocket[] } {
  const sockets: WebSocket[] = [];
  class Recorded extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      sockets.push(this);
    }
  }
  return { WebSocket: Recorded, sockets };
}

function client(options: SwitchboardOptions): Switchboard {
  const c = new Switchboard({ WebSocket, backoff: { baseMs: 20, capMs: 100 }, ...options });
  cleanup.push(() => c.close());
  return c;
}

async function server(overrides: Record<string, unknown> = {}): Promise<TestServer> {
  const s = await startTestServer(overrides);
  cleanup.push(() => s.close());
  return s;
}

async function proxyTo(s: TestServer): Promise<TcpProxy> {
  const p = await TcpProxy.start(s.port);
  cleanup.push(() => p.close());
  return p;
}

function reached(c: Switchboard, state: ConnectionState, timeoutMs = 5000): Promise<void> {
  return eventually(() => c.connection.state === state, timeoutMs, `state ${state}`, 5);
}

/** The next transition into `state`; call before causing it (transient states are easy to miss). */
function nextState(c: Switchboard, state: ConnectionState): Promise<StateChange> {
  return new Promise((resolve) => c.connection.once(state, resolve));
}

function channelLog(c: Switchboard, name: string): { got: Message[]; gaps: DiscontinuityInfo[] } {
  const got: Message[] = [];
  const gaps: DiscontinuityInfo[] = [];
  c.channels.get(name).on('discontinuity', (i) => gaps.push(i));
  return { got, gaps };
}

const dataOf = (ms: readonly Message[]): unknown[] => ms.map((m) => m.data);
const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('Switchboard client against a real server', () => {
  it('round-trips a message: subscribe, publish, ack fields, delivery', async () => {
    const s = await server();
    const sub = client({ url: s.wsUrl });
    const pub = client({ url: s.wsUrl });
    const got: Message[] = [];
    await sub.channels.get('iss.telemetry').subscribe((m) => got.push(m));
    assert.equal(sub.connection.state, 'connected');
    const ack = await pub.channels
      .get('iss.telemetry')
      .publish('position', { lat: 51.5, lon: -0.1 });
    assert.equal(typeof ack.id, 'string');
    assert.equal(ack.offset, 1);
    assert.equal(typeof ack.epoch, 'string');
    assert.equal(ack.duplicate, false);
    await eventually(() => got.length === 1, 5000, 'the message');
    const m = got[0] as Message;
    assert.equal(m.channel, 'iss.telemetry');
    assert.equal(m.name, 'position');
    assert.deepEqual(m.data, { lat: 51.5, lon: -0.1 });
    assert.equal(m.id, ack.id);
    assert.equal(m.offset, ack.offset);
    assert.equal(m.epoch, ack.epoch);
    assert.ok(Math.abs(m.timestamp - Date.now()) < 5000);
    const again = await pub.channels.get('iss.telemetry').publish({ id: ack.id, data: 'ignored' });
    assert.deepEqual(again, { ...ack, duplicate: true });
  });

  it('delivers many messages exactly once and in publish order', async () => {
    const s = await server();
    const sub = client({ url: s.wsUrl });
    const pub = client({ url: s.wsUrl });
    const got: Message[] = [];
    await sub.channels.get('many').subscribe((m) => got.push(m));
    const acks = await Promise.all(
      range(1, 500).map((i) => pub.channels.get('many').publish('n', i)),
    );
    assert.deepEqual(
      acks.map((a) => a.offset),
      range(1, 500),
    );
    // A last message fences the stream: a duplicate or a straggler would arrive before it.
    await pub.channels.get('many').publish('n', 'fence');
    await eventually(() => got.at(-1)?.data === 'fence', 10_000, '500 messages and the fence');
    assert.deepEqual(dataOf(got), [...range(1, 500), 'fence']);
    assert.deepEqual(
      got.map((m) => m.offset),
      range(1, 501),
    );
  });

  it('reconnects after its socket dies and resumes without loss or duplicates', async () => {
    const s = await server();
    const { WebSocket: Recorded, sockets } = recordingWebSocket();
    const sub = client({ url: s.wsUrl, WebSocket: Recorded });
    const pub = client({ url: s.wsUrl });
    const { got, gaps } = channelLog(sub, 'resume');
    await sub.channels.get('resume').subscribe((m) => got.push(m));
    for (const i of range(1, 3)) await pub.channels.get('resume').publish('n', i);
    await eventually(() => got.length === 3, 5000, 'first 3');
    const states: StateChange[] = [];
    sub.connection.on('change', (c) => states.push(c));
    const down = nextState(sub, 'disconnected');
    sockets[0]?.terminate();
    await down;
    // Published at once, while the subscriber waits out its backoff; stored in this order.
    const missed = range(4, 8).map((i) => pub.channels.get('resume').publish('n', i));
    await Promise.all(missed);
    await reached(sub, 'connected');
    await eventually(() => got.length >= 8, 5000, 'the missed messages');
    for (const i of range(9, 10)) await pub.channels.get('resume').publish('n', i);
    await pub.channels.get('resume').publish('n', 'fence');
    await eventually(() => got.at(-1)?.data === 'fence', 5000, 'live messages and the fence');
    assert.deepEqual(dataOf(got), [...range(1, 10), 'fence']);
    assert.deepEqual(gaps, []);
    assert.deepEqual(
      states.map((c) => c.current),
      ['disconnected', 'connecting', 'connected'],
    );
    assert.equal(states[0]?.reason?.code, 1006);
    assert.equal(sockets.length, 2);
  });

  it('queues publishes while disconnected and delivers them exactly once after reconnect', async () => {
    const s = await server();
    const proxy = await proxyTo(s);
    const pub = client({ url: proxy.wsUrl() });
    const sub = client({ url: s.wsUrl });
    const got: Message[] = [];
    await sub.channels.get('queued').subscribe((m) => got.push(m));
    await pub.channels.get('queued').publish('n', 0);
    const down = nextState(pub, 'disconnected');
    proxy.refusing = true;
    proxy.cut();
    await down;
    const pending = range(1, 5).map((i) => pub.channels.get('queued').publish('n', i));
    // A reconnect attempt refused by the proxy: the client tried while the publishes waited.
    const attempts = proxy.accepted;
    await eventually(() => proxy.accepted > attempts, 5000, 'a refused reconnect attempt');
    assert.notEqual(pub.connection.state, 'connected');
    assert.equal(got.length, 1, 'nothing sent while disconnected');
    proxy.refusing = false;
    const acks = await Promise.all(pending);
    assert.deepEqual(
      acks.map((a) => [a.offset, a.duplicate]),
      range(2, 6).map((o) => [o, false]),
    );
    await pub.channels.get('queued').publish('n', 'fence');
    await eventually(() => got.at(-1)?.data === 'fence', 5000, 'queued messages and the fence');
    assert.deepEqual(dataOf(got), [...range(0, 5), 'fence']);
  });

  it('re-sends a publish whose ack was lost; the server dedupes it and the promise resolves once', async () => {
    const s = await server();
    const proxy = await proxyTo(s);
    const pub = client({ url: proxy.wsUrl() });
    const sub = client({ url: s.wsUrl });
    const got: Message[] = [];
    await sub.channels.get('lost-ack').subscribe((m) => got.push(m));
    await pub.channels.get('lost-ack').publish('n', 'warm-up');
    proxy.blackhole('toClient');
    let resolved = 0;
    const acked = pub.channels
      .get('lost-ack')
      .publish('n', 'once')
      .then((r) => (resolved++, r));
    await eventually(() => got.length === 2, 5000, 'the server to store the publish');
    proxy.cut();
    const ack = await acked;
    assert.equal(ack.duplicate, true, 'the re-send was recognised by its messageId');
    assert.equal(ack.offset, 2);
    assert.equal(ack.id, got[1]?.id);
    // The fence's ack comes after any second resolution of the first publish could.
    await pub.channels.get('lost-ack').publish('n', 'fence');
    await eventually(() => got.at(-1)?.data === 'fence', 5000, 'the fence');
    assert.equal(resolved, 1);
    assert.deepEqual(dataOf(got), ['warm-up', 'once', 'fence']);
  });

  it('detects a dead link with heartbeats within interval + timeout, then reconnects and resumes', async () => {
    const s = await server();
    const proxy = await proxyTo(s);
    const sub = client({ url: proxy.wsUrl(), pingIntervalMs: 200, pingTimeoutMs: 200 });
    const pub = client({ url: s.wsUrl });
    const { got, gaps } = channelLog(sub, 'hb');
    await sub.channels.get('hb').subscribe((m) => got.push(m));
    await pub.channels.get('hb').publish('n', 1);
    await eventually(() => got.length === 1, 5000, 'first message');
    const down = new Promise<StateChange>((resolve) =>
      sub.connection.once('disconnected', resolve),
    );
    const t0 = Date.now();
    proxy.blackhole('both');
    const change = await down;
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 200 && elapsed <= 600, `dead link detected after ${elapsed} ms`);
    assert.equal(change.reason?.code, 3002);
    await pub.channels.get('hb').publish('n', 2);
    await reached(sub, 'connected');
    await pub.channels.get('hb').publish('n', 3);
    await eventually(() => got.length >= 3, 5000, 'resumed messages');
    assert.deepEqual(dataOf(got), [1, 2, 3]);
    assert.deepEqual(gaps, []);
  });

  it('rotates endpoints when the first one refuses', async () => {
    const s = await server();
    const refused = `ws://127.0.0.1:${await freePort()}/ws`;
    const c = client({ endpoints: [refused, s.wsUrl] });
    const states: StateChange[] = [];
    c.connection.on('change', (x) => states.push(x));
    await reached(c, 'connected');
    assert.equal(c.connection.url, s.wsUrl);
    assert.deepEqual(
      states.map((x) => x.current),
      ['disconnected', 'connecting', 'connected'],
    );
    assert.equal(states[0]?.reason?.code, 1006);
    assert.equal(typeof states[0]?.retryInMs, 'number');
    await c.channels.get('rot').subscribe(() => {});
  });

  it('reports state events across a server restart and emits discontinuity for the new epoch', async () => {
    const port = await freePort();
    let s = await startTestServer({ port });
    const c = client({ url: s.wsUrl });
    const { got, gaps } = channelLog(c, 'restart');
    await c.channels.get('restart').subscribe((m) => got.push(m));
    const states: StateChange[] = [];
    c.connection.on('change', (x) => states.push(x));
    const first = await c.channels.get('restart').publish('n', 'before');
    await eventually(() => got.length === 1, 5000, 'first message');
    const down = nextState(c, 'disconnected');
    await s.close(); // the memory broker's streams go with it: a new epoch on restart
    await down;
    s = await startTestServer({ port });
    cleanup.push(() => s.close());
    await reached(c, 'connected');
    await eventually(() => gaps.length === 1, 5000, 'a discontinuity');
    assert.equal(gaps[0]?.reason, 'unrecovered');
    assert.deepEqual(gaps[0]?.previous, { offset: 1, epoch: first.epoch });
    assert.notEqual(gaps[0]?.current?.epoch, first.epoch);
    const next = await c.channels.get('restart').publish('n', 'after');
    assert.equal(next.offset, 1);
    await eventually(() => got.length === 2, 5000, 'the message after the restart');
    assert.deepEqual(dataOf(got), ['before', 'after']);
    c.close();
    const seq = states.map((x) => x.current);
    assert.equal(seq[0], 'disconnected');
    assert.equal(states[0]?.reason?.code, 3012);
    assert.deepEqual(seq.slice(-3), ['connecting', 'connected', 'closed']);
    assert.deepEqual(states[states.length - 1]?.reason, {
      code: 1000,
      message: 'closed by the application',
    });
  });

  it('emits discontinuity when the gap is no longer in history (recovered: false)', async () => {
    const s = await server({ historySize: 3 });
    const proxy = await proxyTo(s);
    const sub = client({ url: proxy.wsUrl() });
    const pub = client({ url: s.wsUrl });
    const { got, gaps } = channelLog(sub, 'short');
    await sub.channels.get('short').subscribe((m) => got.push(m));
    await pub.channels.get('short').publish('n', 1);
    await eventually(() => got.length === 1, 5000, 'first message');
    const down = nextState(sub, 'disconnected');
    proxy.refusing = true;
    proxy.cut();
    await down;
    for (const i of range(2, 10)) await pub.channels.get('short').publish('n', i);
    proxy.refusing = false;
    await eventually(() => gaps.length === 1, 5000, 'a discontinuity');
    assert.deepEqual(gaps[0], {
      reason: 'unrecovered',
      previous: { offset: 1, epoch: got[0]?.epoch },
      current: { offset: 10, epoch: got[0]?.epoch },
    });
    await pub.channels.get('short').publish('n', 11);
    await eventually(() => got.length === 2, 5000, 'live message');
    assert.deepEqual(dataOf(got), [1, 11], 'no partial replay');
  });

  it('enters failed on a terminal close code and stops reconnecting', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await once(wss, 'listening');
    cleanup.push(() => new Promise((r) => wss.close(r)));
    let connections = 0;
    wss.on('connection', (ws) => {
      connections++;
      ws.close(3501, 'bad client');
    });
    const { port } = wss.address() as { port: number };
    const c = client({ url: `ws://127.0.0.1:${port}/ws` });
    const failed = new Promise<StateChange>((resolve) => c.connection.once('failed', resolve));
    const pending = c.channels.get('x').publish('n', 1);
    const change = await failed;
    assert.deepEqual(change.reason, { code: 3501, message: 'bad client' });
    await assert.rejects(pending, { name: 'ConnectionClosedError', code: 3501 });
    // Not a settle: a bounded window, many backoff periods long, in which a retry would show.
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(connections, 1);
    assert.equal(c.connection.state, 'failed');
  });

  it('pages through history forwards and backwards (embedded engine)', async () => {
    await historyPaging(await server());
  });

  it('pages through history forwards and backwards (Redis)', async (t) => {
    const missing = requireBinary('redis-server');
    if (missing) return t.skip(missing);
    const redis = await startRedis();
    cleanup.push(() => redis.stop(true));
    await historyPaging(await server({ redis: redis.url }));
  });
});

async function historyPaging(s: TestServer): Promise<void> {
  const c = client({ url: s.wsUrl });
  const ch = c.channels.get('hist');
  for (const i of range(1, 25)) await ch.publish('n', i);
  const p1 = await ch.history({ limit: 10 });
  assert.deepEqual(dataOf(p1.items), range(1, 10));
  assert.equal(p1.hasNext(), true);
  assert.equal(p1.position?.offset, 25);
  const p2 = await p1.next();
  assert.deepEqual(dataOf(p2?.items ?? []), range(11, 20));
  const p3 = await p2?.next();
  assert.deepEqual(dataOf(p3?.items ?? []), range(21, 25));
  assert.equal(p3?.hasNext(), false);
  assert.equal(await p3?.next(), undefined);
  const m = p1.items[0];
  assert.equal(m?.name, 'n');
  assert.equal(m?.offset, 1);
  const since = await ch.history({ since: { offset: 22, epoch: p1.position?.epoch ?? '' } });
  assert.deepEqual(dataOf(since.items), [23, 24, 25]);
  const b1 = await ch.history({ limit: 20, direction: 'backward' });
  assert.deepEqual(dataOf(b1.items), range(6, 25).reverse());
  const b2 = await b1.next();
  assert.deepEqual(dataOf(b2?.items ?? []), range(1, 5).reverse(), 'backward: the page before');
  assert.equal(b2?.hasNext(), false);
  const before = await ch.history({ direction: 'backward', before: 4 });
  assert.deepEqual(dataOf(before.items), [3, 2, 1], 'backward from before an offset');
}

describe('commands refused over the command rate (111)', () => {
  it('carry their request id, so the SDK retries them at once instead of waiting for its timeout', async () => {
    const s = await server({ maxCommandsPerSecond: 20, commandBurst: 5 });
    const { WebSocket: Recorded, sockets } = recordingWebSocket();
    const c = client({ url: s.wsUrl, WebSocket: Recorded, requestTimeoutMs: 60_000 });
    const refused: unknown[] = [];
    await eventually(() => sockets.length > 0);
    sockets[0]?.on('message', (data: Buffer) => {
      for (const line of data.toString().split('\n')) {
        const f = JSON.parse(line) as Record<string, unknown>;
        if (f['code'] === 111) refused.push(f['reply']);
      }
    });
    const ch = c.channels.get('rate');
    const t0 = performance.now();
    const pages = await Promise.all(Array.from({ length: 15 }, () => ch.history({ limit: 1 })));
    const ms = performance.now() - t0;
    assert.equal(pages.length, 15);
    assert.ok(refused.length > 0, 'some were refused');
    assert.ok(
      refused.every((id) => typeof id === 'number'),
      `every refusal names its request: ${JSON.stringify(refused)}`,
    );
    // Without the id each refused request waited for requestTimeoutMs (60 s) and failed.
    assert.ok(ms < 10_000, `served in ${ms.toFixed(0)} ms`);
  });
});

describe('presence', () => {
  it('channel.presence() lists the subscribers, and rejects with the server code where presence is off', async () => {
    const s = await server({ namespaces: { room: { presence: true } } });
    const a = client({ url: s.wsUrl });
    const b = client({ url: s.wsUrl });
    const room = a.channels.get('room:sdk');
    assert.deepEqual(await room.presence(), []);
    await room.subscribe(() => {});
    await b.channels.get('room:sdk').subscribe(() => {});
    const members = await b.channels.get('room:sdk').presence();
    assert.equal(members.length, 2);
    for (const m of members) assert.deepEqual(Object.keys(m), ['clientId']); // no token: no user
    room.unsubscribe();
    await eventually(async () => (await b.channels.get('room:sdk').presence()).length === 1);
    await assert.rejects(
      a.channels.get('lobby').presence(),
      (err: SwitchboardError) => err.code === ErrorCode.PRESENCE_DISABLED,
    );
  });
});
