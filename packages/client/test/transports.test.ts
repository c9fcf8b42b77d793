/**
 * The SDK's fallback transports against a real server: SSE and long-polling end to end, resume
 * after a cut, and the automatic fallback (upgrade refused, swallowed, or streams buffered by a
 * proxy), the memory of what worked, and the move back to WebSocket once it works again.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { eventually, startTestServer } from '../../server/test/helpers.js';
import {
  Switchboard,
  type DiscontinuityInfo,
  type Message,
  type SwitchboardOptions,
  type TransportName,
} from '../src/index.js';
import { Connection, type Transport } from '../src/connection.js';
import { SseParser, type SseEvent } from '../src/sse-parser.js';
import { FakeSocket } from './fake-socket.js';
import { HttpProxy } from './http-proxy.js';

type TestServer = Awaited<ReturnType<typeof startTestServer>>;

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

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

async function proxyTo(s: TestServer): Promise<HttpProxy> {
  const p = await HttpProxy.start(s.port);
  cleanup.push(() => p.close());
  return p;
}

const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);
const dataOf = (ms: readonly Message[]): unknown[] => ms.map((m) => m.data);

describe('SseParser', () => {
  it('splits events across chunks, joins data lines, names events, skips comments and ids', () => {
    const events: SseEvent[] = [];
    let comments = 0;
    const p = new SseParser(
      (e) => events.push(e),
      () => comments++,
    );
    for (const chunk of [
      'retry: 2000\nevent: conn',
      'ected\ndata: {"a":1}\n\n',
      ': hb\n\nda',
      'ta: x\r\ndata:y\nid: 3,E,c\n\n',
      'data: tail',
    ])
      p.push(chunk);
    assert.deepEqual(events, [
      { type: 'connected', data: '{"a":1}' },
      { type: 'message', data: 'x\ny' },
    ]);
    assert.equal(comments, 1);
    p.push('\n\nevent: close\n\n');
    assert.deepEqual(events[2], { type: 'message', data: 'tail' });
    assert.equal(events.length, 3, 'an event without data is not dispatched');
  });
});

describe('Connection: transport order', () => {
  it('tries each transport once per round, starts each round from the one that last worked', async () => {
    const opened: [TransportName, FakeSocket][] = [];
    const transports: Transport[] = (['websocket', 'sse', 'long-polling'] as const).map((name) => ({
      name,
      open: (url: string) => {
        const s = new FakeSocket(url);
        opened.push([name, s]);
        return s;
      },
    }));
    const states: string[] = [];
    const conn = new Connection(
      {
        endpoints: ['ws://a/ws', 'ws://b/ws'],
        transports,
        upgradeRetryMs: 60_000,
        backoff: { baseMs: 1, capMs: 2 },
        pingIntervalMs: 60_000,
        pingTimeoutMs: 60_000,
        connectTimeoutMs: 60_000,
        suspendAfterAttempts: 100,
        suspendAfterMs: 600_000,
      },
      { open: () => {}, frames: () => {}, down: () => {} },
    );
    conn.on('change', (c) => states.push(c.current));
    const last = (): FakeSocket => (opened[opened.length - 1] as [TransportName, FakeSocket])[1];
    const tried = (): string[] => opened.map(([n, s]) => `${n}@${s.url.slice(5, 6)}`);
    conn.connect();
    // Every transport fails before opening: one round on endpoint a, then backoff, then b.
    last().drop(1006);
    last().drop(1006);
    last().drop(1006);
    assert.deepEqual(tried(), ['websocket@a', 'sse@a', 'long-polling@a']);
    assert.deepEqual(states, ['connecting', 'disconnected']);
    await eventually(() => opened.length === 4, 1000, 'the next round');
    assert.deepEqual(tried().slice(3), ['websocket@b'], 'a new round starts from WebSocket');
    last().drop(1006);
    last().open(); // SSE opens, and a frame comes through: it works
    last().push({ ok: true, pong: true });
    assert.equal(conn.transport, 'sse');
    assert.equal(conn.state, 'connected');
    last().drop(1006); // the link drops after working: retry with what worked
    await eventually(() => opened.length === 6, 1000, 'a reconnect');
    assert.deepEqual(tried().slice(4), ['sse@b', 'sse@a']);
    // Opens but never passes a frame (a proxy that lets the handshake through, then drops all):
    // that is no better than refused, so the next transport is tried at once.
    last().open();
    last().drop(1006);
    assert.deepEqual(tried().slice(6), ['long-polling@a']);
    conn.close();
  });
});

for (const transport of ['sse', 'long-polling'] as const) {
  describe(`Switchboard over ${transport}`, () => {
    it('subscribes, publishes and receives in order, exactly once', async () => {
      const s = await server();
      const sub = client({ url: s.wsUrl, transports: [transport] });
      const pub = client({ url: s.wsUrl, transports: [transport] });
      const got: Message[] = [];
      await sub.channels.get('t').subscribe((m) => got.push(m));
      assert.equal(sub.connection.transport, transport);
      const acks = await Promise.all(
        range(1, 300).map((i) => pub.channels.get('t').publish('n', i)),
      );
      assert.deepEqual(
        acks.map((a) => a.offset),
        range(1, 300),
      );
      // A last message fences the stream: whatever could still arrive (a duplicate) is before it.
      await pub.channels.get('t').publish('n', 'fence');
      await eventually(() => got.at(-1)?.data === 'fence', 10_000, '300 messages and the fence');
      assert.deepEqual(dataOf(got), [...range(1, 300), 'fence']);
      const page = await pub.channels.get('t').history({ limit: 5, direction: 'backward' });
      assert.deepEqual(dataOf(page.items), ['fence', 300, 299, 298, 297]);
    });

    it('resumes after its connection is cut, without loss or duplicates', async () => {
      const s = await server();
      const proxy = await proxyTo(s);
      const sub = client({ url: proxy.wsUrl(), transports: [transport], pollWaitMs: 1000 });
      const pub = client({ url: s.wsUrl });
      const got: Message[] = [];
      const gaps: DiscontinuityInfo[] = [];
      const ch = sub.channels.get('cut');
      ch.on('discontinuity', (g) => gaps.push(g));
      await ch.subscribe((m) => got.push(m));
      for (const i of range(1, 5)) await pub.channels.get('cut').publish('n', i);
      await eventually(() => got.length === 5, 5000, 'first messages');
      const down = new Promise((r) => sub.connection.once('disconnected', r));
      proxy.cut();
      await down;
      for (const i of range(6, 10)) await pub.channels.get('cut').publish('n', i);
      await eventually(() => sub.connection.state === 'connected', 5000, 'reconnected');
      for (const i of range(11, 15)) await pub.channels.get('cut').publish('n', i);
      await pub.channels.get('cut').publish('n', 'fence');
      await eventually(() => got.at(-1)?.data === 'fence', 5000, 'all messages and the fence');
      assert.deepEqual(dataOf(got), [...range(1, 15), 'fence']);
      assert.deepEqual(gaps, []);
      assert.equal(sub.connection.transport, transport);
    });
  });
}

describe('transport fallback', () => {
  async function fallsBack(
    setup: (proxy: HttpProxy) => void,
    expected: TransportName,
    options: Partial<SwitchboardOptions> = {},
  ): Promise<{ c: Switchboard; proxy: HttpProxy; s: TestServer }> {
    const s = await server();
    const proxy = await proxyTo(s);
    setup(proxy);
    const c = client({ url: proxy.wsUrl(), connectTimeoutMs: 400, ...options });
    const states: string[] = [];
    c.connection.on('change', (x) => states.push(x.current));
    const got: Message[] = [];
    await c.channels.get('fb').subscribe((m) => got.push(m));
    assert.equal(c.connection.transport, expected);
    assert.deepEqual(states, ['connected'], 'the fallback happens inside one connecting state');
    await c.channels.get('fb').publish('n', 1);
    await eventually(() => got.length === 1, 5000, 'a message over the fallback');
    return { c, proxy, s };
  }

  it('falls back to SSE when the WebSocket upgrade is refused', async () => {
    const { proxy } = await fallsBack((p) => (p.upgrades = 'refuse'), 'sse');
    assert.equal(proxy.upgradeAttempts, 1);
  });

  it('falls back to SSE when the WebSocket does not open within the connect timeout', async () => {
    await fallsBack((p) => (p.upgrades = 'hang'), 'sse');
  });

  it('falls back to SSE when the runtime has no WebSocket at all', async () => {
    const s = await server();
    const c = new Switchboard({ url: s.wsUrl }); // Node 20: no global WebSocket
    cleanup.push(() => c.close());
    await c.channels.get('x').subscribe(() => {});
    assert.equal(c.connection.transport, 'sse');
  });

  it('falls back to long-polling when a proxy buffers the event stream', async () => {
    const { proxy } = await fallsBack((p) => {
      p.upgrades = 'refuse';
      p.bufferStreams = true;
    }, 'long-polling');
    assert.equal(proxy.count('/sse'), 1);
  });

  it('remembers what worked: reconnects with it without trying WebSocket again', async () => {
    const { c, proxy } = await fallsBack((p) => (p.upgrades = 'refuse'), 'sse');
    const down = new Promise((r) => c.connection.once('disconnected', r));
    proxy.cut();
    await down;
    await eventually(() => c.connection.state === 'connected', 5000, 'reconnected');
    assert.equal(c.connection.transport, 'sse');
    assert.equal(proxy.upgradeAttempts, 1, 'no second WebSocket attempt');
    assert.equal(proxy.count('/sse'), 2);
  });

  it('moves back to WebSocket once it works again, losing and repeating nothing', async () => {
    const s = await server();
    const proxy = await proxyTo(s);
    proxy.upgrades = 'refuse';
    const c = client({ url: proxy.wsUrl(), upgradeRetryMs: 300, connectTimeoutMs: 400 });
    const pub = client({ url: s.wsUrl });
    const got: Message[] = [];
    const gaps: DiscontinuityInfo[] = [];
    c.channels.get('up').on('discontinuity', (g) => gaps.push(g));
    await c.channels.get('up').subscribe((m) => got.push(m));
    assert.equal(c.connection.transport, 'sse');
    const states: string[] = [];
    c.connection.on('change', (x) => states.push(x.current));
    let n = 0;
    let stop = false;
    const publishing = (async () => {
      while (!stop) {
        await pub.channels.get('up').publish('n', ++n);
        await new Promise((r) => setTimeout(r, 5)); // the publisher's pace
      }
    })();
    // Traffic flows over SSE while the upgrade probes fail: two of them, at least.
    const attempts = proxy.upgradeAttempts;
    await eventually(() => proxy.upgradeAttempts >= attempts + 2, 5000, 'two refused probes');
    assert.equal(c.connection.transport, 'sse');
    proxy.upgrades = 'pass';
    await eventually(() => c.connection.transport === 'websocket', 5000, 'the move to WebSocket');
    // The client also publishes across the move: its commands are not lost either.
    const own = await c.channels.get('up').publish('own', 'mine');
    const afterMove = n;
    await eventually(() => n >= afterMove + 20, 5000, 'more traffic after the move');
    stop = true;
    await publishing;
    const fence = await pub.channels.get('up').publish('n', 'fence');
    await eventually(
      () => got.at(-1)?.offset === fence.offset,
      5000,
      'every message and the fence',
    );
    const offsets = got.map((m) => m.offset as number);
    assert.deepEqual(offsets, range(1, n + 2), 'every offset once, in order');
    assert.ok(got.some((m) => m.offset === own.offset && m.data === 'mine'));
    assert.deepEqual(gaps, []);
    assert.deepEqual(states, [], 'the move does not pass through disconnected');
  });
});
