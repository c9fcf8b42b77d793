/**
 * SSE and long-polling against real servers over real sockets: streams, commands by POST,
 * Last-Event-ID resume, cursors, bounds, bad input, and commands and polls that reach a node other
 * than the one holding the connection (two nodes sharing a real Redis).
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, describe, it } from 'node:test';
import { mint } from './security-kit.js';
import { PollTestClient, SseTestClient, postCommands } from './http-clients.js';
import { requireBinary, startRedis, startTestServer, type Frame } from './helpers.js';

type TestServer = Awaited<ReturnType<typeof startTestServer>>;

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

async function server(overrides: Record<string, unknown> = {}): Promise<TestServer> {
  const s = await startTestServer(overrides);
  cleanup.push(() => s.close());
  return s;
}

async function sse(
  base: string,
  query = '',
  headers: Record<string, string> = {},
): Promise<SseTestClient> {
  const c = await SseTestClient.open(base, query, headers);
  cleanup.push(() => c.close());
  return c;
}

/** A long-polling client closed (DELETE) at the end, before its server stops. */
async function poller(base: string, query = ''): Promise<PollTestClient> {
  const p = await PollTestClient.open(base, query);
  cleanup.push(() => p.close(base));
  return p;
}

async function publish(base: string, channel: string, data: unknown): Promise<number> {
  const r = await fetch(`${base}/v1/channels/${channel}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ data }),
  });
  assert.equal(r.status, 200);
  const body = (await r.json()) as { messages: { offset: number }[] };
  return body.messages[0]?.offset as number;
}

const offsets = (fs: Frame[]): unknown[] => fs.map((f) => f['offset']);
const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('SSE', () => {
  it('streams with anti-buffering headers, a connected event first, and comment heartbeats', async () => {
    const s = await server({ pingIntervalMs: 200 });
    const c = await sse(s.url, '?channel=news');
    assert.equal(c.status, 200);
    assert.match(c.headers?.get('content-type') ?? '', /^text\/event-stream/);
    assert.equal(c.headers?.get('x-accel-buffering'), 'no');
    assert.match(c.headers?.get('cache-control') ?? '', /no-cache/);
    assert.equal(c.events[0]?.type, 'connected');
    assert.match(c.connection, /^[A-Za-z0-9_-]{24}$/, '144 random bits, base64url');
    const sub = await c.replyTo('sse:0');
    assert.equal(sub['channel'], 'news', 'the reply to a URL subscribe names its channel');
    assert.equal(sub['ok'], true);
    await c.until(() => c.comments >= 2, 3000, 'two heartbeats');
    await publish(s.url, 'news', 'hello');
    await c.until(() => c.messages('news').length === 1);
    assert.equal(c.messages('news')[0]?.['message'], 'hello');
    const epoch = c.messages('news')[0]?.['epoch'] as string;
    assert.equal(c.lastEventId, `1,${epoch},news`, 'the event id carries the position');
  });

  it('takes commands by POST, several per request, in order, with replies on the stream', async () => {
    const s = await server();
    const c = await sse(s.url);
    const r = await c.post(
      [
        { action: 'subscribe', channel: 'chat', id: 1 },
        ...range(1, 20).map((i) => ({ action: 'publish', channel: 'chat', data: i, id: `p${i}` })),
        { action: 'ping', id: 'ping' },
      ],
      s.url,
    );
    assert.equal(r.status, 202);
    assert.deepEqual(r.body, { ok: true, frames: 22 });
    await c.until(() => c.messages('chat').length === 20);
    assert.deepEqual(
      c.messages('chat').map((f) => f['message']),
      range(1, 20),
    );
    assert.deepEqual(offsets(c.messages('chat')), range(1, 20));
    assert.equal((await c.replyTo('p20'))['offset'], 20);
    assert.equal((await c.replyTo('ping'))['pong'], true);
    // A malformed frame is answered on the stream like on a WebSocket; the connection stays.
    assert.equal((await c.post('{"action":"subscribe"', s.url)).status, 202);
    await c.until(() => c.frames.some((f) => f['code'] === 110));
    assert.equal((await c.post([{ action: 'ping', id: 'after' }], s.url)).status, 202);
    await c.replyTo('after');
  });

  it('resumes from Last-Event-ID exactly: every missed message once, then live ones', async () => {
    const s = await server();
    const a = await sse(s.url, '?channel=feed&channel=other');
    await a.replyTo('sse:0');
    await a.replyTo('sse:1');
    for (const i of range(1, 5)) await publish(s.url, 'feed', i);
    await publish(s.url, 'other', 'o1');
    await a.until(() => a.messages().length === 6);
    const lastId = a.lastEventId as string;
    a.close();
    for (const i of range(6, 9)) await publish(s.url, 'feed', i);
    await publish(s.url, 'other', 'o2');
    // The browser sends the last id back; the URL is the same as before.
    const b = await sse(s.url, '?channel=feed&channel=other', { 'last-event-id': lastId });
    const subs = [await b.replyTo('sse:0'), await b.replyTo('sse:1')];
    assert.deepEqual(
      subs.map((f) => [f['channel'], f['recovered']]),
      [
        ['feed', true],
        ['other', true],
      ],
    );
    await b.until(() => b.messages().length === 5);
    for (const i of range(10, 11)) await publish(s.url, 'feed', i);
    // A last message fences the stream: a duplicate would arrive before it.
    await publish(s.url, 'feed', 'fence');
    await b.until(() => b.messages('feed').at(-1)?.['message'] === 'fence');
    assert.deepEqual(
      b.messages('feed').map((f) => f['message']),
      [...range(6, 11), 'fence'],
    );
    assert.deepEqual(
      b.messages('other').map((f) => f['message']),
      ['o2'],
    );
    // The lastEventId query parameter does the same for clients that cannot set headers.
    const c = await sse(s.url, `?lastEventId=${encodeURIComponent(b.lastEventId as string)}`);
    await c.replyTo('sse:0');
    await publish(s.url, 'feed', 12);
    await c.until(() => c.messages('feed').length === 1);
    assert.equal(c.messages('feed')[0]?.['message'], 12);
  });

  it('answers recovered: false with no partial replay when the gap left history', async () => {
    const s = await server({ historySize: 3 });
    const a = await sse(s.url, '?channel=short');
    await a.replyTo('sse:0');
    await publish(s.url, 'short', 1);
    await a.until(() => a.messages().length === 1);
    const lastId = a.lastEventId as string;
    a.close();
    for (const i of range(2, 10)) await publish(s.url, 'short', i);
    const b = await sse(s.url, '?channel=short', { 'last-event-id': lastId });
    const sub = await b.replyTo('sse:0');
    assert.equal(sub['recovered'], false);
    assert.deepEqual(sub['position'], { offset: 10, epoch: a.messages()[0]?.['epoch'] });
    await publish(s.url, 'short', 11);
    await publish(s.url, 'short', 'fence');
    await b.until(() => b.messages().at(-1)?.['message'] === 'fence');
    assert.deepEqual(
      b.messages().map((f) => f['message']),
      [11, 'fence'],
    );
  });

  it('refuses a Last-Event-ID it did not write, and bad channel names, with JSON errors', async () => {
    const s = await server();
    const bad = await sse(s.url, '', { 'last-event-id': 'garbage;;' });
    assert.equal(bad.status, 400);
    assert.equal(bad.refusal?.['code'], 107);
    const name = await sse(s.url, '?channel=' + encodeURIComponent('bad name!'));
    assert.equal(name.status, 400);
    assert.equal(name.refusal?.['code'], 113);
  });

  it('bounds what a reader that stopped reading holds: over maxOutboundBytes it is cut with 3008', async () => {
    const s = await server({ maxOutboundBytes: 64 * 1024 });
    // A raw socket that sends its request and then never reads.
    const socket = connect(s.port, '127.0.0.1');
    await once(socket, 'connect');
    socket.write(`GET /sse?channel=flood HTTP/1.1\r\nHost: x\r\n\r\n`);
    socket.pause();
    // The node holds the stream once its connection counts.
    const connected = async (): Promise<boolean> => {
      const text = await (await fetch(`${s.url}/metrics`)).text();
      return Number(/^switchboard_connections (\d+)/m.exec(text)?.[1] ?? 0) >= 1;
    };
    for (let i = 0; i < 200 && !(await connected()); i++) await new Promise((r) => setImmediate(r));
    assert.ok(await connected(), 'the SSE stream is open');
    const big = 'x'.repeat(48 * 1024);
    const closes = async (): Promise<number> => {
      const text = await (await fetch(`${s.url}/metrics`)).text();
      return Number(/switchboard_disconnects_total\{code="3008"\} (\d+)/.exec(text)?.[1] ?? 0);
    };
    // Enough to fill the kernel's socket buffers and then the bound.
    for (let i = 0; i < 400 && (await closes()) === 0; i++) await publish(s.url, 'flood', big);
    assert.equal(await closes(), 1);
    socket.destroy();
    // Others are unaffected.
    const c = await sse(s.url, '?channel=flood');
    await c.replyTo('sse:0');
  });

  it('closes with a close event: on DELETE (any node) and on shutdown (3012)', async () => {
    const s = await server();
    const a = await sse(s.url);
    const del = await fetch(`${s.url}/connections/${a.connection}`, { method: 'DELETE' });
    assert.equal(del.status, 200);
    await a.until(() => a.ended);
    assert.equal(a.closed?.code, 1000);
    const again = await postCommands(s.url, a.connection, [{ action: 'ping' }]);
    assert.equal(again.status, 404, 'a closed connection is unknown');
    const s2 = await startTestServer();
    const b = await sse(s2.url);
    await s2.close();
    await b.until(() => b.ended);
    assert.deepEqual(b.closed, { code: 3012, reason: 'node draining: reconnect elsewhere' });
  });
});

describe('long-polling', () => {
  it('returns pending frames at once, else waits up to the bound', async () => {
    const s = await server();
    const p = await poller(s.url, '?channel=lp');
    const first = await p.poll(s.url, { wait: 2000 });
    assert.equal(first.status, 200);
    const [sub] = first.body['frames'] as Frame[];
    assert.deepEqual([sub?.['channel'], sub?.['reply'], sub?.['ok']], ['lp', 'sse:0', true]);
    assert.equal(first.body['cursor'], 1);
    let t0 = Date.now();
    const empty = await p.poll(s.url, { wait: 300 });
    const waited = Date.now() - t0;
    assert.deepEqual(empty.body['frames'], []);
    assert.ok(waited >= 280 && waited < 1500, `an empty poll waited ${waited} ms`);
    t0 = Date.now();
    const parked = p.poll(s.url, { wait: 5000 });
    // Lets the poll park first (nothing outside the node says it did); were it late, the frame
    // would be pending and the poll answered at once: the test would pass, testing less.
    await new Promise((r) => setTimeout(r, 100));
    await publish(s.url, 'lp', 'x');
    const r = await parked;
    assert.ok(Date.now() - t0 < 1000, 'a parked poll is answered when a frame arrives');
    assert.deepEqual(
      (r.body['frames'] as Frame[]).map((f) => f['message']),
      ['x'],
    );
  });

  it('makes a lost response harmless: the same cursor gets the same frames again', async () => {
    const s = await server();
    const p = await poller(s.url);
    await p.post([{ action: 'subscribe', channel: 'c', id: 's' }], s.url);
    await p.until(s.url, (fs) => fs.some((f) => f['reply'] === 's'));
    const base = p.cursor;
    for (const i of range(1, 3)) await publish(s.url, 'c', i);
    // Re-reading from the same cursor acknowledges nothing, so this waits without side effects.
    let lost = await p.poll(s.url, { cursor: base, wait: 1000 });
    const count = (body: Record<string, unknown>): number =>
      (body['frames'] as Frame[]).filter((f) => f['channel'] === 'c' && 'message' in f).length;
    for (let i = 0; i < 50 && count(lost.body) < 3; i++)
      lost = await p.poll(s.url, { cursor: base, wait: 1000 });
    const retry = await p.poll(s.url, { cursor: base, wait: 0 });
    assert.deepEqual(retry.body, lost.body, 'nothing acknowledged, nothing lost');
    assert.deepEqual(
      (retry.body['frames'] as Frame[]).map((f) => f['message']),
      [1, 2, 3],
    );
    // The next cursor acknowledges them; an older one is a replay and refused.
    const next = await p.poll(s.url, { cursor: retry.body['cursor'] as number, wait: 0 });
    assert.deepEqual(next.body['frames'], []);
    const replay = await p.poll(s.url, { cursor: base, wait: 0 });
    assert.equal(replay.status, 409);
    assert.equal(replay.body['code'], 112);
    assert.equal(replay.body['cursor'], retry.body['cursor']);
    for (const cursor of ['abc', '-1', '1.5', '']) {
      const r = await p.poll(s.url, { cursor, wait: 0 });
      assert.equal(r.status, 400, `cursor ${JSON.stringify(cursor)}`);
      assert.equal(r.body['code'], 107);
    }
    const future = await p.poll(s.url, { cursor: 10_000, wait: 0 });
    assert.equal(future.status, 400);
    assert.match(String(future.body['error']), /never issued/);
    const ok = await p.poll(s.url, { wait: 0 });
    assert.equal(ok.status, 200, 'bad polls leave the connection usable');
  });

  it('carries a busy channel in few polls and keeps order', async () => {
    const s = await server();
    const p = await poller(s.url, '?channel=busy');
    let polls = 0;
    const done = (async () => {
      while (p.messages().length < 300) {
        await p.poll(s.url, { wait: 1000 });
        polls++;
      }
    })();
    for (const i of range(1, 300)) {
      await publish(s.url, 'busy', i);
    }
    await done;
    assert.deepEqual(
      p.messages().map((f) => f['message']),
      range(1, 300),
    );
    assert.ok(polls < 200, `${polls} polls for 300 messages`);
  });

  it('bounds unacknowledged frames: over maxOutboundBytes the connection closes with 3008', async () => {
    const s = await server({ maxOutboundBytes: 4096 });
    const p = await poller(s.url, '?channel=flood');
    await p.poll(s.url, { wait: 0 });
    for (let i = 0; i < 40; i++) await publish(s.url, 'flood', 'x'.repeat(200));
    for (let i = 0; i < 20 && p.closed === undefined; i++) await p.poll(s.url, { wait: 0 });
    assert.equal(p.closed?.code, 3008);
    assert.ok(p.messages().length < 40, 'frames beyond the bound were not kept');
  });

  it('closes a connection that stops polling with 3002, and tells a waiting poll about shutdown', async () => {
    const s = await server({ pingIntervalMs: 150 });
    const idle = await poller(s.url);
    const idleCloses = async (): Promise<number> => {
      const text = await (await fetch(`${s.url}/metrics`)).text();
      return Number(/switchboard_disconnects_total\{code="3002"\} (\d+)/.exec(text)?.[1] ?? 0);
    };
    // The node closes it by itself; the poll below only collects the close it kept.
    while ((await idleCloses()) === 0) await new Promise((r) => setTimeout(r, 25));
    const r = await idle.poll(s.url, { wait: 0 });
    assert.equal(r.status, 200);
    assert.equal(idle.closed?.code, 3002);
    // A closed poll connection stays 10 s (CLOSED_LINGER_MS) to tell a late poll its close, and the
    // drain waits for it until shutdownTimeoutMs: this test is about the parked poll being told.
    const s2 = await startTestServer({ shutdownTimeoutMs: 1000 });
    const p = await PollTestClient.open(s2.url); // s2 stops below, with it parked
    const parked = p.poll(s2.url, { wait: 5000 });
    await new Promise((res) => setTimeout(res, 50));
    await s2.close();
    await parked;
    assert.deepEqual(p.closed, { code: 3012, reason: 'node draining: reconnect elsewhere' });
  });
});

describe('HTTP transports: bad input', () => {
  it('answers unknown ids, wrong methods, oversized and empty bodies with JSON errors', async () => {
    const s = await server({ maxRequestBodyBytes: 2048, maxMessageBytes: 512 });
    const c = await sse(s.url);
    const unknownId = 'A'.repeat(24);
    for (const path of [`/connections/${unknownId}/commands`, '/connections/short/commands']) {
      const r = await fetch(`${s.url}${path}`, { method: 'POST', body: '{"action":"ping"}' });
      assert.equal(r.status, 404);
      assert.deepEqual(Object.keys((await r.json()) as object), ['error', 'code']);
    }
    const poll404 = await fetch(`${s.url}/poll/${unknownId}?cursor=0`);
    assert.equal(poll404.status, 404);
    assert.equal(((await poll404.json()) as Frame)['code'], 115);
    const pollOnSse = await fetch(`${s.url}/poll/${c.connection}?cursor=0`);
    assert.equal(pollOnSse.status, 400, 'an SSE connection cannot be polled');
    const wrong: [string, string][] = [
      ['/sse', 'POST'],
      ['/poll', 'GET'],
      [`/poll/${c.connection}`, 'POST'],
      [`/connections/${c.connection}/commands`, 'GET'],
      [`/connections/${c.connection}`, 'POST'],
    ];
    for (const [path, method] of wrong) {
      const r = await fetch(`${s.url}${path}`, { method });
      assert.equal(r.status, 405, `${method} ${path}`);
      assert.ok(r.headers.get('allow')?.includes('OPTIONS'));
      assert.equal(((await r.json()) as Frame)['code'], 116);
    }
    const big = await c.post('{"action":"ping"}\n'.repeat(200), s.url);
    assert.equal(big.status, 413);
    assert.equal(big.body['code'], 114);
    const bigFrame = await c.post(
      JSON.stringify({ action: 'publish', channel: 'x', data: 'y'.repeat(600) }),
      s.url,
    );
    assert.equal(bigFrame.status, 413);
    assert.match(String(bigFrame.body['error']), /maxMessageBytes/);
    const empty = await c.post('\n\n', s.url);
    assert.equal(empty.status, 400);
    const s2 = await server();
    const c2 = await sse(s2.url);
    const many = await c2.post('{"action":"ping"}\n'.repeat(1001), s2.url);
    assert.equal(many.status, 413);
    assert.match(String(many.body['error']), /at most 1000 frames/);
    // None of it hurt the connection.
    assert.equal((await c.post([{ action: 'ping', id: 'alive' }], s.url)).status, 202);
    await c.replyTo('alive');
    assert.equal(c.ended, false);
  });

  it('answers CORS preflights and lets other origins read responses', async () => {
    const s = await server();
    const pre = await fetch(`${s.url}/connections/${'A'.repeat(24)}`, {
      method: 'OPTIONS',
      headers: { origin: 'http://app.example', 'access-control-request-method': 'DELETE' },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get('access-control-allow-origin'), 'http://app.example');
    assert.equal(pre.headers.get('access-control-allow-methods'), 'DELETE');
    const c = await sse(s.url, '', { origin: 'http://app.example' });
    assert.equal(c.headers?.get('access-control-allow-origin'), 'http://app.example');
  });

  it('applies authentication to every transport: no token, no subscription; ?token= works', async () => {
    const s = await server({ jwtSecret: 'test-secret-of-at-least-32-bytes-long-0123456789' });
    const anon = await sse(s.url);
    await anon.post([{ action: 'subscribe', channel: 'private', id: 1 }], s.url);
    assert.equal((await anon.replyTo(1))['code'], 101, 'UNAUTHORIZED over SSE');
    const p = await poller(s.url);
    await p.post([{ action: 'subscribe', channel: 'private', id: 1 }], s.url);
    await p.until(s.url, (fs) => fs.some((f) => f['reply'] === 1));
    assert.equal(
      p.frames.find((f) => f['reply'] === 1)?.['code'],
      101,
      'UNAUTHORIZED over long-polling',
    );
    const token = await mint('alice', { cap: { '*': ['subscribe', 'publish'] } });
    const authed = await sse(s.url, `?token=${token}&channel=private`);
    const sub = await authed.replyTo('sse:0');
    assert.equal(sub['ok'], true, JSON.stringify(sub));
  });
});

describe('HTTP transports across nodes (Redis)', () => {
  it('routes commands, polls and closes to the node holding the connection; unknown ids get 404', async (t) => {
    const missing = requireBinary('redis-server');
    if (missing) return t.skip(missing);
    const redis = await startRedis();
    cleanup.push(() => redis.stop(true));
    const a = await server({ redis: redis.url });
    const b = await server({ redis: redis.url });
    // SSE held by A, commanded through B.
    const c = await sse(a.url, '?channel=x');
    await c.replyTo('sse:0');
    const r = await c.post(
      range(1, 10).map((i) => ({ action: 'publish', channel: 'x', data: i, id: i })),
      b.url,
    );
    assert.equal(r.status, 202);
    await c.until(() => c.messages('x').length === 10);
    assert.deepEqual(
      c.messages('x').map((f) => f['message']),
      range(1, 10),
    );
    // Long-polling held by B, polled and commanded through A.
    const p = await poller(b.url, '?channel=x');
    await p.until(a.url, (fs) => fs.some((f) => f['reply'] === 'sse:0'));
    await p.post([{ action: 'publish', channel: 'x', data: 'from-lp', id: 'lp' }], a.url);
    await p.until(a.url, (fs) => fs.some((f) => f['message'] === 'from-lp'));
    await c.until(() => c.messages('x').length === 11);
    const lost = await p.poll(a.url, { cursor: 0, wait: 0 });
    assert.equal(lost.status, 409, 'cursor rules hold across nodes');
    // Unknown everywhere.
    const unknownId = 'B'.repeat(24);
    assert.equal((await postCommands(a.url, unknownId, [{ action: 'ping' }])).status, 404);
    assert.equal((await fetch(`${b.url}/poll/${unknownId}?cursor=0`)).status, 404);
    // Closed through the other node.
    assert.equal(
      (await fetch(`${b.url}/connections/${c.connection}`, { method: 'DELETE' })).status,
      200,
    );
    await c.until(() => c.ended);
    assert.equal(c.closed?.code, 1000);
    assert.equal((await postCommands(b.url, c.connection, [{ action: 'ping' }])).status, 404);
    // Its Last-Event-ID resumes it on the other node, exactly.
    const before = c.messages('x').length;
    for (const i of range(1, 3)) await publish(a.url, 'x', `missed${i}`);
    const d = await sse(b.url, '?channel=x', { 'last-event-id': c.lastEventId as string });
    assert.equal((await d.replyTo('sse:0'))['recovered'], true);
    await d.until(() => d.messages('x').length === 3);
    assert.deepEqual(
      d.messages('x').map((f) => f['offset']),
      range(before + 1, before + 3),
    );
  });
});
