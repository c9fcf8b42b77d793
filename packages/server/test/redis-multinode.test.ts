/**
 * Two switchboard processes on one Redis: what is published on one node reaches the subscribers of
 * every node, in order, exactly once (Guarantee 1), over WebSocket, REST and the raw-PUBLISH bridge
 * of the classic tutorial. Real redis-server, real server processes, real sockets.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  eventually,
  requireBinary,
  startNodeProcess,
  startRedis,
  TestClient,
  type Frame,
  type NodeProcess,
  type RedisProcess,
} from './helpers.js';

const skip = requireBinary('redis-server') || requireBinary('redis-cli');
const PREFIX = 'mn:';

interface RestResult {
  readonly status: number;
  readonly body: Frame;
}

async function postMessages(
  node: NodeProcess,
  channel: string,
  body: unknown,
): Promise<RestResult> {
  const res = await fetch(`${node.url}/v1/channels/${encodeURIComponent(channel)}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Frame };
}

/** Sends every command at once, without waiting, then resolves with their replies by id. */
async function pipeline(client: TestClient, commands: (Frame & { id: number | string })[]) {
  for (const cmd of commands) client.send(cmd);
  const ids = new Set(commands.map((c) => c.id));
  const count = (fs: Frame[]): number =>
    fs.filter((f) => f['reply'] !== undefined && ids.has(f['reply'] as string | number)).length;
  await client.until((fs) => count(fs) >= ids.size, 15_000, `${ids.size} replies`);
  const byId = new Map<unknown, Frame>();
  for (const f of client.frames)
    if (ids.has(f['reply'] as string | number)) byId.set(f['reply'], f);
  return byId;
}

/** Message data of `channel`'s pushes, in arrival order. */
function dataOf(client: TestClient, channel: string): unknown[] {
  return client.messages(channel).map((f) => f['message']);
}

/** Asserts the pushes of `channel` carry consecutive offsets from `first` in one epoch, ids unique. */
function assertPositions(client: TestClient, channel: string, first = 1): void {
  const pushes = client.messages(channel);
  assert.deepEqual(
    pushes.map((f) => f['offset']),
    pushes.map((_, i) => first + i),
    `offsets of ${channel} must be consecutive (no gap, no duplicate, no reordering)`,
  );
  assert.equal(new Set(pushes.map((f) => f['epoch'])).size, 1, 'one epoch');
  assert.equal(new Set(pushes.map((f) => f['id'])).size, pushes.length, 'message ids are unique');
}

void describe('redis: two nodes on one Redis', { skip }, () => {
  let redis: RedisProcess | undefined;
  let a: NodeProcess | undefined;
  let b: NodeProcess | undefined;
  const clients: TestClient[] = [];

  const open = async (node: NodeProcess | undefined): Promise<TestClient> => {
    assert.ok(node, 'node started');
    const c = await TestClient.open(node.wsUrl);
    clients.push(c);
    return c;
  };
  const nodeA = (): NodeProcess => a as NodeProcess;
  const nodeB = (): NodeProcess => b as NodeProcess;

  before(async () => {
    redis = await startRedis();
    const args = ['--redis', redis.url, '--redis-prefix', PREFIX, '--redis-bridge', 'iss.*'];
    // Started one after the other so a failure of the second still leaves the first to stop.
    a = await startNodeProcess(args);
    b = await startNodeProcess(args);
  });

  after(async () => {
    for (const c of clients) c.ws.terminate();
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  void test('a subscriber on A receives 200 WebSocket publishes made on B in order, exactly once', async () => {
    const channel = 'ws-orders';
    const onA = await open(a);
    const onB = await open(b);
    assert.equal((await onA.subscribe(channel))['ok'], true);
    assert.equal((await onB.subscribe(channel))['ok'], true);

    const publisher = await open(b);
    const n = 200;
    // Pipelined from one connection: sequential publishes must keep their order end to end.
    const replies = await pipeline(
      publisher,
      Array.from({ length: n }, (_, i) => ({
        action: 'publish',
        channel,
        data: { n: i },
        id: i + 1,
      })),
    );
    for (let i = 0; i < n; i++) {
      const r = replies.get(i + 1);
      assert.equal(r?.['ok'], true, `publish ${i} acknowledged: ${JSON.stringify(r)}`);
      assert.equal(r['offset'], i + 1, 'offsets follow publish order');
    }
    // A fence: whatever arrives after it would be a duplicate; per-channel order puts it last.
    assert.equal(
      (await publisher.request({ action: 'publish', channel, data: 'fence', id: 'fence' }))['ok'],
      true,
    );
    const expected = [...Array.from({ length: n }, (_, i) => ({ n: i })), 'fence'];
    for (const [name, sub] of [
      ['A', onA],
      ['B', onB],
    ] as const) {
      await sub.until((fs) => fs.some((f) => f['message'] === 'fence'), 10_000, `fence on ${name}`);
      assert.deepEqual(dataOf(sub, channel), expected, `subscriber on ${name}: sequence`);
      assertPositions(sub, channel);
    }
    const pushA = onA.messages(channel);
    const pushB = onB.messages(channel);
    assert.deepEqual(
      pushA.map((f) => f['id']),
      pushB.map((f) => f['id']),
      'both nodes deliver the same ids in the same order',
    );
    assert.equal(pushA[0]?.['channel'], channel);
    assert.equal(typeof pushA[0]?.['timestamp'], 'number');
  });

  void test('a subscriber on A receives 200 REST publishes made on B in order, exactly once', async () => {
    const channel = 'rest-orders';
    const onA = await open(a);
    assert.equal((await onA.subscribe(channel))['ok'], true);

    // 100 single-message requests, each awaited, then one batch of 100 (order inside the array).
    for (let i = 0; i < 100; i++) {
      const r = await postMessages(nodeB(), channel, { data: { n: i } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const messages = r.body['messages'] as Frame[];
      assert.equal(messages[0]?.['offset'], i + 1);
    }
    const batch = Array.from({ length: 100 }, (_, j) => ({
      data: { n: 100 + j },
      name: 'batch',
      id: `batch-${j}`,
    }));
    const r = await postMessages(nodeB(), channel, batch);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(
      (r.body['messages'] as Frame[]).map((m) => m['offset']),
      batch.map((_, j) => 101 + j),
      'batch offsets follow array order',
    );
    assert.deepEqual(
      r.body['ids'],
      batch.map((m) => m.id),
    );
    assert.equal((await postMessages(nodeB(), channel, { data: 'fence' })).status, 200);

    await onA.until((fs) => fs.some((f) => f['message'] === 'fence'), 10_000, 'fence');
    assert.deepEqual(dataOf(onA, channel), [
      ...Array.from({ length: 200 }, (_, i) => ({ n: i })),
      'fence',
    ]);
    assertPositions(onA, channel);
    const pushes = onA.messages(channel);
    assert.deepEqual(
      pushes.slice(100, 200).map((f) => [f['name'], f['id']]),
      batch.map((m) => ['batch', m.id]),
      'name and publisher-supplied id are delivered',
    );
    assert.equal(pushes[0]?.['name'], undefined, 'no name when none was given');
  });

  void test('many subscribers over both nodes and several channels each get their channels exactly once', async () => {
    const channels = ['fan-0', 'fan-1', 'fan-2', 'fan-3', 'fan-4', 'fan-5'];
    const perNode = 12;
    const subscribers: { client: TestClient; channels: string[] }[] = [];
    for (let k = 0; k < 2 * perNode; k++) {
      const client = await open(k % 2 === 0 ? a : b);
      // Client k takes the channels c with (k + c) % 3 != 0: every channel has subscribers on
      // both nodes, every client has some channels it must NOT receive.
      const mine = channels.filter((_, c) => (k + c) % 3 !== 0);
      const replies = await pipeline(
        client,
        mine.map((channel, i) => ({ action: 'subscribe', channel, id: i + 1 })),
      );
      for (const reply of replies.values()) assert.equal(reply['ok'], true, JSON.stringify(reply));
      subscribers.push({ client, channels: mine });
    }

    // One publisher per node, both publishing to every channel at the same time.
    const perPublisher = 30;
    const publishers = [await open(a), await open(b)];
    const results = await Promise.all(
      publishers.map((p, pi) =>
        pipeline(
          p,
          channels.flatMap((channel, c) =>
            Array.from({ length: perPublisher }, (_, i) => ({
              action: 'publish',
              channel,
              data: { p: pi, i },
              id: c * perPublisher + i,
            })),
          ),
        ),
      ),
    );
    for (const replies of results)
      for (const reply of replies.values()) assert.equal(reply['ok'], true, JSON.stringify(reply));
    for (const channel of channels)
      assert.equal((await postMessages(nodeA(), channel, { data: 'fence' })).status, 200);

    const total = 2 * perPublisher;
    const order = new Map<string, unknown[]>();
    for (const { client, channels: mine } of subscribers) {
      await client.until(
        (fs) => mine.every((ch) => fs.some((f) => f['channel'] === ch && f['message'] === 'fence')),
        10_000,
        `fences of ${mine.join(',')}`,
      );
      const received = new Set(client.messages().map((f) => f['channel'] as string));
      assert.deepEqual([...received].sort(), [...mine].sort(), 'only subscribed channels arrive');
      for (const channel of mine) {
        const data = dataOf(client, channel);
        assert.equal(data.length, total + 1, `${channel}: every message exactly once`);
        assert.equal(data.at(-1), 'fence');
        for (const pi of [0, 1]) {
          assert.deepEqual(
            data.filter((d) => (d as { p?: number }).p === pi).map((d) => (d as { i: number }).i),
            Array.from({ length: perPublisher }, (_, i) => i),
            `${channel}: publisher ${pi}'s messages in publish order`,
          );
        }
        assertPositions(client, channel);
        // Guarantee 1: every subscriber of a channel, on either node, sees the same order.
        const ids = client.messages(channel).map((f) => f['id']);
        const seen = order.get(channel);
        if (seen === undefined) order.set(channel, ids);
        else assert.deepEqual(ids, seen, `${channel}: same order for every subscriber`);
      }
    }
  });

  void test('classic tutorial: a raw PUBLISH on a bridged channel reaches plain subscribers on both nodes once', async () => {
    const channel = 'iss.telemetry';
    const plainA = await open(a);
    const plainB = await open(b);
    // The tutorial's client: no id, so no reply is expected.
    plainA.send({ action: 'subscribe', channel });
    plainB.send({ action: 'subscribe', channel });
    // Both nodes subscribed in Redis means both sessions took the command.
    await eventually(
      () => numsub(redis, PREFIX + 'p:{' + channel + '}') === 2,
      5000,
      'both nodes subscribed',
    );

    const payloads = [
      ...Array.from({ length: 5 }, (_, i) => JSON.stringify({ lat: i + 1 })),
      'not json at all',
      '"a json string"',
      '{"fence":true}',
    ];
    for (const payload of payloads) {
      // Both nodes hold the bridge pattern: Redis hands each raw message to two connections.
      assert.equal(redis?.cli('PUBLISH', channel, payload).trim(), '2');
    }
    const expected = [
      ...Array.from({ length: 5 }, (_, i) => ({ lat: i + 1 })),
      'not json at all',
      'a json string',
      { fence: true },
    ];
    for (const [name, client] of [
      ['A', plainA],
      ['B', plainB],
    ] as const) {
      await client.until(
        (fs) => fs.some((f) => (f['message'] as { fence?: boolean } | undefined)?.fence === true),
        5000,
        `fence on ${name}`,
      );
      assert.deepEqual(dataOf(client, channel), expected, `plain subscriber on ${name}`);
      // Nothing but message pushes: no reply to the id-less subscribe, no error.
      for (const f of client.frames) {
        assert.equal(f['channel'], channel, `only pushes on ${name}: ${JSON.stringify(f)}`);
        assert.equal(typeof f['id'], 'string');
        assert.equal(typeof f['timestamp'], 'number');
      }
      assert.equal(new Set(client.frames.map((f) => f['id'])).size, client.frames.length);
    }
  });

  void test('a raw PUBLISH on a channel outside the bridge patterns is not delivered', async () => {
    const channel = 'plain.unbridged';
    const sub = await open(a);
    assert.equal((await sub.subscribe(channel))['ok'], true);
    assert.equal(redis?.cli('PUBLISH', channel, '{"raw":true}').trim(), '0');
    // Both reach node A over its one subscriber connection, in Redis order: the fence comes second.
    assert.equal((await postMessages(nodeB(), channel, { data: 'fence' })).status, 200);
    await sub.until((fs) => fs.some((f) => f['message'] === 'fence'), 5000, 'fence');
    assert.deepEqual(dataOf(sub, channel), ['fence']);
  });
});

function numsub(redis: RedisProcess | undefined, pubsub: string): number {
  const lines = (redis?.cli('PUBSUB', 'NUMSUB', pubsub) ?? '').trim().split('\n');
  return Number(lines[1]);
}
