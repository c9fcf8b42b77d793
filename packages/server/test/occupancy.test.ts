/**
 * Occupancy and the channel directory (#12 point 4): deployment-wide counts, the sorted listing
 * with a stable cursor (5,000 channels, under churn), the occupied/vacated hook exactly once per
 * real change across nodes, reaping of a node killed with -9, and the throttled occupancy event.
 * Real redis-server, real sockets; embedded engine too.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { encodeMessageHead } from '@switchboard/protocol';
import {
  eventually,
  requireBinary,
  startNodeProcess,
  startRedis,
  startTestServer,
  TestClient,
  type Frame,
  type NodeProcess,
  type RedisProcess,
} from './helpers.js';
import { PollTestClient, SseTestClient } from './http-clients.js';
import type { RunningServer } from '../src/index.js';

type Server = RunningServer & { url: string; wsUrl: string };

const skip = requireBinary('redis-server') || requireBinary('redis-cli');

interface Counter {
  occupied: string[];
  vacated: string[];
}

function count(servers: readonly Server[]): Counter {
  const c: Counter = { occupied: [], vacated: [] };
  for (const s of servers) {
    s.directory.on('occupied', (ch) => c.occupied.push(ch));
    s.directory.on('vacated', (ch) => c.vacated.push(ch));
  }
  return c;
}

const times = (list: readonly string[], channel: string): number =>
  list.filter((c) => c === channel).length;

async function getJson(url: string): Promise<{ status: number; body: Frame }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as Frame };
}

async function occupancyOf(server: Server, channel: string): Promise<Frame> {
  const r = await getJson(`${server.url}/v1/channels/${encodeURIComponent(channel)}`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body['occupancy'] as Frame;
}

async function publish(server: Server, channel: string, data: unknown): Promise<void> {
  const res = await fetch(`${server.url}/v1/channels/${encodeURIComponent(channel)}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ data }),
  });
  assert.equal(res.status, 200);
}

/** Creates channels straight through the broker (one stored message each), `batch` at a time. */
async function createChannels(
  server: Server,
  names: readonly string[],
  batch = 500,
): Promise<void> {
  for (let i = 0; i < names.length; i += batch) {
    await Promise.all(
      names.slice(i, i + batch).map((channel) =>
        server.broker.publish({
          channel,
          id: 'seed',
          head: encodeMessageHead({ channel, dataJson: '1', id: 'seed', timestamp: Date.now() }),
          history: { size: 1, ttlMs: 600_000 },
          dedupeMs: 0,
        }),
      ),
    );
  }
}

/** Every page of GET /v1/channels, following `next`; `between` runs after each page. */
async function listAll(
  server: Server,
  prefix: string,
  limit: number,
  between: (page: number) => Promise<void> = async () => {},
): Promise<string[]> {
  const names: string[] = [];
  let cursor: string | null = '';
  for (let page = 0; cursor !== null; page++) {
    const r = await getJson(
      `${server.url}/v1/channels?prefix=${encodeURIComponent(prefix)}&limit=${limit}${cursor === '' ? '' : `&cursor=${cursor}`}`,
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const channels = r.body['channels'] as { channel: string }[];
    assert.ok(channels.length <= limit);
    names.push(...channels.map((c) => c.channel));
    cursor = r.body['next'] as string | null;
    await between(page);
  }
  return names;
}

function assertSortedUnique(names: readonly string[]): void {
  assert.equal(new Set(names).size, names.length, 'no channel listed twice');
  for (let i = 1; i < names.length; i++)
    assert.ok((names[i - 1] as string) < (names[i] as string), 'sorted by name');
}

describe('occupancy on the embedded engine', () => {
  let server: Server;
  let events: Counter;
  before(async () => {
    server = await startTestServer({ namespaces: { room: { presence: true } } });
    events = count([server]);
  });
  after(() => server.close());

  test('counts, listing with history-only channels, the hook once per change', async () => {
    const a = await TestClient.open(server.wsUrl);
    const b = await TestClient.open(server.wsUrl);
    await a.subscribe('room:a');
    await b.subscribe('room:a');
    await b.request({ action: 'presence-subscribe', channel: 'room:a', id: 'ps' });
    await b.request({ action: 'enter', channel: 'room:a', id: 'en', dataJson: '1' });
    await publish(server, 'room:a', 1);
    await publish(server, 'room:a', 2);
    await publish(server, 'hist:only', 3);
    await server.directory.settled();
    assert.deepEqual(await occupancyOf(server, 'room:a'), {
      connections: 2,
      subscribers: 2,
      presenceMembers: 1,
      publishersLastMinute: 1,
    });
    const detail = await getJson(`${server.url}/v1/channels/room:a`);
    assert.equal((detail.body['last'] as Frame)['offset'], 2);
    assert.equal((await getJson(`${server.url}/v1/channels/never:used`)).body['last'], null);
    const listed = await listAll(server, '', 1);
    assert.deepEqual(listed, ['hist:only', 'room:a']);
    assert.deepEqual(await listAll(server, 'room', 10), ['room:a']);
    assert.equal(times(events.occupied, 'room:a'), 1);
    a.ws.close();
    await eventually(async () => (await occupancyOf(server, 'room:a'))['subscribers'] === 1);
    assert.equal(times(events.vacated, 'room:a'), 0);
    b.ws.close();
    await eventually(() => times(events.vacated, 'room:a') === 1, 5000, 'vacated');
    assert.equal(times(events.occupied, 'room:a'), 1);
    assert.equal(times(events.occupied, 'hist:only'), 0);
  });

  test('bad listing input gets a clear error', async () => {
    const bad = await getJson(`${server.url}/v1/channels?cursor=%21%21`);
    assert.deepEqual([bad.status, bad.body['code']], [400, 180]);
    const prefix = await getJson(`${server.url}/v1/channels?prefix=%7Bx`);
    assert.deepEqual([prefix.status, prefix.body['code']], [400, 181]);
    const limit = await getJson(`${server.url}/v1/channels?limit=0`);
    assert.deepEqual([limit.status, limit.body['code']], [400, 107]);
  });
});

describe('channel listing is capability-checked', () => {
  test('an API key lists only what it may subscribe to; others get 401/403', async () => {
    const key = {
      name: 'rooms',
      secret: 'rooms-secret-0123456789',
      capabilities: { 'room:*': ['subscribe'] },
    };
    const server = await startTestServer({ apiKeys: [key] });
    try {
      await createChannels(server, ['room:1', 'room:2', 'other:1']);
      const auth = {
        authorization: 'Basic ' + Buffer.from(`${key.name}:${key.secret}`).toString('base64'),
      };
      const listed = await fetch(`${server.url}/v1/channels`, { headers: auth });
      const body = (await listed.json()) as { channels: { channel: string }[] };
      assert.deepEqual(
        body.channels.map((c) => c.channel),
        ['room:1', 'room:2'],
      );
      const one = await fetch(`${server.url}/v1/channels/room:1`, { headers: auth });
      assert.equal(one.status, 200);
      const denied = await fetch(`${server.url}/v1/channels/other:1`, { headers: auth });
      assert.deepEqual([denied.status, ((await denied.json()) as Frame)['code']], [403, 103]);
      const anonymous = await fetch(`${server.url}/v1/channels`);
      assert.deepEqual([anonymous.status, ((await anonymous.json()) as Frame)['code']], [401, 101]);
    } finally {
      await server.close();
    }
  });
});

describe('occupancy over 2 nodes and Redis', { skip }, () => {
  let redis: RedisProcess;
  let a: Server;
  let b: Server;
  let events: Counter;
  before(async () => {
    redis = await startRedis();
    const config = { redis: redis.url, presenceTtlMs: 4000, redisPrefix: 'occ:' };
    a = await startTestServer(config);
    b = await startTestServer(config);
    events = count([a, b]);
  });
  after(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await redis?.stop();
  });

  test('counts add up across nodes; occupied/vacated fire once per real change', async () => {
    const onA = await TestClient.open(a.wsUrl);
    const onB = await TestClient.open(b.wsUrl);
    await Promise.all([onA.subscribe('x:1'), onB.subscribe('x:1')]);
    await eventually(async () => (await occupancyOf(b, 'x:1'))['subscribers'] === 2);
    assert.equal((await occupancyOf(a, 'x:1'))['connections'], 2);
    assert.equal(times(events.occupied, 'x:1'), 1);
    // One publisher per connection, on each node, counted once each however often it publishes.
    for (let i = 0; i < 3; i++) {
      await onA.request({ action: 'publish', channel: 'x:1', data: i, id: `pa${i}` });
      await onB.request({ action: 'publish', channel: 'x:1', data: i, id: `pb${i}` });
    }
    await eventually(
      async () => (await occupancyOf(a, 'x:1'))['publishersLastMinute'] === 2,
      5000,
      'two publishers',
    );
    // The subscriber on A comes and goes while B's stays: no change of occupied-ness.
    for (let i = 0; i < 5; i++) {
      await onA.request({ action: 'unsubscribe', channel: 'x:1', id: `u${i}` });
      await a.directory.settled();
      await onA.subscribe('x:1', `s${i}`);
      await a.directory.settled();
    }
    await onB.request({ action: 'unsubscribe', channel: 'x:1', id: 'ub' });
    await onA.request({ action: 'unsubscribe', channel: 'x:1', id: 'ua' });
    await eventually(() => times(events.vacated, 'x:1') === 1, 5000, 'vacated');
    // Both nodes' last subscribers arrive at once: one occupied; both leave at once: one vacated.
    for (let round = 0; round < 5; round++) {
      await Promise.all([onA.subscribe('x:2', `a${round}`), onB.subscribe('x:2', `b${round}`)]);
      await eventually(() => times(events.occupied, 'x:2') === round + 1, 5000, 'occupied');
      await Promise.all([
        onA.request({ action: 'unsubscribe', channel: 'x:2', id: `ua${round}` }),
        onB.request({ action: 'unsubscribe', channel: 'x:2', id: `ub${round}` }),
      ]);
      await eventually(() => times(events.vacated, 'x:2') === round + 1, 5000, 'vacated');
    }
    await Promise.all([a.directory.settled(), b.directory.settled()]);
    assert.equal(times(events.occupied, 'x:1'), 1);
    assert.equal(times(events.vacated, 'x:1'), 1);
    assert.equal(times(events.occupied, 'x:2'), 5);
    assert.equal(times(events.vacated, 'x:2'), 5);
    onA.ws.close();
    onB.ws.close();
  });

  test('5,000 channels: pagination complete, sorted, no duplicates, stable under churn', async () => {
    const stable = Array.from({ length: 5000 }, (_, i) => `bulk:s${String(i).padStart(5, '0')}`);
    const doomed = Array.from(
      { length: 400 },
      (_, i) => `bulk:s${String(i * 12).padStart(5, '0')}x`,
    );
    await createChannels(a, [...stable, ...doomed]);
    const whole = await listAll(b, 'bulk:', 1000);
    assertSortedUnique(whole);
    assert.equal(whole.length, stable.length + doomed.length);
    let added = 0;
    const seen = await listAll(b, 'bulk:', 250, async (page) => {
      // Channels appear ahead of and behind the cursor, and others vanish, while paging.
      const fresh = Array.from(
        { length: 50 },
        () => `bulk:s${String((added++ * 97) % 5000).padStart(5, '0')}n${page}`,
      );
      await createChannels(a, fresh);
      const gone = doomed.slice(page * 20, page * 20 + 20);
      if (gone.length > 0) redis.cli('DEL', ...gone.map((c) => `occ:m:{${c}}`));
    });
    assertSortedUnique(seen);
    const listed = new Set(seen);
    for (const c of stable) assert.ok(listed.has(c), `${c} listed`);
  });

  test('occupancy events: at most one per second per channel, on WebSocket, SSE and long-polling', async () => {
    const ws = await TestClient.open(a.wsUrl);
    const sse = await SseTestClient.open(b.url);
    const poll = await PollTestClient.open(a.url);
    const first = await ws.request({ action: 'occupancy-subscribe', channel: 'o:1', id: 'o' });
    assert.deepEqual(first['occupancy'], {
      connections: 0,
      subscribers: 0,
      presenceMembers: 0,
      publishersLastMinute: 0,
    });
    const arrivals: number[] = [];
    ws.ws.on('message', (d: Buffer) => {
      if (d.toString().includes('"event":"occupancy"')) arrivals.push(Date.now());
    });
    await sse.post([{ action: 'occupancy-subscribe', channel: 'o:1', id: 's' }], b.url);
    await poll.post([{ action: 'occupancy-subscribe', channel: 'o:1', id: 'p' }], a.url);
    // Subscribers join on both nodes every 100 ms for 3 s: the counts change 30 times.
    const churn: TestClient[] = [];
    const started = Date.now();
    for (let i = 0; Date.now() - started < 3000; i++) {
      const c = await TestClient.open((i % 2 === 0 ? a : b).wsUrl);
      churn.push(c);
      await c.subscribe('o:1');
      await new Promise((r) => setTimeout(r, 100));
    }
    await Promise.all([a.directory.settled(), b.directory.settled()]);
    const final = await occupancyOf(a, 'o:1');
    const isFinal = (f: Frame): boolean =>
      f['event'] === 'occupancy' && f['subscribers'] === final['subscribers'];
    await ws.until(
      (fs) =>
        fs.filter((f) => f['event'] === 'occupancy').at(-1)?.['subscribers'] ===
        final['subscribers'],
      5000,
      'the final counts',
    );
    await sse.until(
      () => sse.frames.filter((f) => f['event'] === 'occupancy').some(isFinal),
      5000,
      'SSE event',
    );
    await poll.until(a.url, (fs) => fs.some(isFinal), 5000);
    const events = ws.frames.filter((f) => f['event'] === 'occupancy');
    assert.equal(events.at(-1)?.['channel'], 'o:1');
    assert.ok(
      events.length >= 2,
      'counts changed several times: ' + JSON.stringify(ws.frames.slice(-8)),
    );
    assert.ok(
      events.length <= Math.ceil((Date.now() - started) / 1000) + 1,
      `${events.length} events`,
    );
    for (let i = 1; i < arrivals.length; i++)
      assert.ok(
        (arrivals[i] as number) - (arrivals[i - 1] as number) >= 900,
        `gap ${i}: ${arrivals.join(',')}`,
      );
    await ws.request({ action: 'occupancy-unsubscribe', channel: 'o:1', id: 'ou' });
    const again = await ws.request({ action: 'occupancy-unsubscribe', channel: 'o:1', id: 'ou2' });
    assert.equal(again['code'], 109);
    for (const c of [ws, ...churn]) c.ws.close();
    sse.close();
  });

  test('kill -9 of a node: its counts are reaped and vacated fires once', async () => {
    const node: NodeProcess = await startNodeProcess([
      '--redis',
      redis.url,
      '--redis-prefix',
      'occ:',
      '--presence-ttl-ms',
      '3000',
    ]);
    try {
      const client = await TestClient.open(node.wsUrl);
      await client.subscribe('k:1');
      await client.subscribe('k:2');
      await eventually(async () => (await occupancyOf(b, 'k:2'))['subscribers'] === 1, 5000);
      const killedAt = Date.now();
      node.child.kill('SIGKILL');
      await eventually(
        () => times(events.vacated, 'k:1') === 1 && times(events.vacated, 'k:2') === 1,
        3000 + 5000,
        'vacated after the kill',
      );
      assert.ok(Date.now() - killedAt < 8000);
      assert.equal((await occupancyOf(a, 'k:1'))['connections'], 0);
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(times(events.vacated, 'k:1'), 1, 'one vacated across the surviving nodes');
    } finally {
      await node.stop('SIGKILL');
    }
  });
});
