/**
 * Redis faults under two switchboard processes: the pub/sub link is killed during traffic, and Redis
 * restarts without persistence. A node must outlive both, restore every subscription (channels and
 * bridge patterns), and never acknowledge a publish it could not store (Guarantee 5).
 * Messages published during an outage may be lost here; filling that gap is the continuity issue's job.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
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
const PREFIX = 'faults:';
const NOT_AVAILABLE = 108;
const BRIDGED = 'iss.position';

interface Cluster {
  readonly redis: RedisProcess;
  readonly nodes: readonly [NodeProcess, NodeProcess];
  readonly open: (node: NodeProcess) => Promise<TestClient>;
}

/** A Redis and two nodes on it, all stopped (and every client dropped) when the test ends. */
async function startCluster(t: TestContext): Promise<Cluster> {
  const clients: TestClient[] = [];
  const started: NodeProcess[] = [];
  const redis = await startRedis();
  t.after(async () => {
    for (const c of clients) c.ws.terminate();
    await Promise.all(started.map((n) => n.stop()));
    await redis.stop();
  });
  const args = ['--redis', redis.url, '--redis-prefix', PREFIX, '--redis-bridge', 'iss.*'];
  started.push(await startNodeProcess(args));
  started.push(await startNodeProcess(args));
  return {
    redis,
    nodes: [started[0] as NodeProcess, started[1] as NodeProcess],
    open: async (node) => {
      const c = await TestClient.open(node.wsUrl);
      clients.push(c);
      return c;
    },
  };
}

/** Two subscribers per node on every one of `channels`, and a plain bridged subscriber per node. */
async function subscribeBoth(
  { nodes, open }: Pick<Cluster, 'nodes' | 'open'>,
  channels: readonly string[],
): Promise<{ subs: TestClient[]; plain: TestClient[] }> {
  const subs: TestClient[] = [];
  for (const node of [...nodes, ...nodes]) {
    const c = await open(node);
    const replies = await pipeline(
      c,
      channels.map((channel) => ({ action: 'subscribe', channel, id: `s-${channel}` })),
    );
    for (const r of replies.values()) assert.equal(r['ok'], true, JSON.stringify(r));
    subs.push(c);
  }
  const plain: TestClient[] = [];
  for (const node of nodes) {
    const c = await open(node);
    c.send({ action: 'subscribe', channel: BRIDGED });
    plain.push(c);
  }
  return { subs, plain };
}

async function status(node: NodeProcess, path: string): Promise<number> {
  const res = await fetch(node.url + path);
  await res.arrayBuffer();
  return res.status;
}

async function postMessages(
  node: NodeProcess,
  channel: string,
  body: unknown,
): Promise<{ status: number; body: Frame }> {
  const res = await fetch(`${node.url}/v1/channels/${encodeURIComponent(channel)}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Frame };
}

/** Sends every command at once, then resolves with their replies (or errors) by id. */
async function pipeline(
  client: TestClient,
  commands: (Frame & { id: string })[],
  timeoutMs = 10_000,
): Promise<Map<unknown, Frame>> {
  for (const cmd of commands) client.send(cmd);
  const ids = new Set<unknown>(commands.map((c) => c.id));
  const got = (): Map<unknown, Frame> => {
    const byId = new Map<unknown, Frame>();
    for (const f of client.frames) if (ids.has(f['reply'])) byId.set(f['reply'], f);
    return byId;
  };
  await client.until(() => got().size === ids.size, timeoutMs, `${ids.size} replies`);
  return got();
}

/** Pushes of `channel`: offsets strictly increasing (nothing twice, nothing reordered), one epoch. */
function assertNoDuplicates(client: TestClient, channel: string): void {
  const offsets = client.messages(channel).map((f) => f['offset'] as number);
  for (let i = 1; i < offsets.length; i++)
    assert.ok(
      (offsets[i] as number) > (offsets[i - 1] as number),
      `${channel}: offsets must increase, got ${offsets.join(',')}`,
    );
}

/** Connections with at least one pattern subscription, from CLIENT LIST output. */
function patternSubscribers(clientList: string): number {
  return clientList.split('\n').filter((line) => /\bpsub=[1-9]/.test(line)).length;
}

/** Subscriber connections per channel, and connections holding a bridge pattern, in Redis. */
async function subscriberCounts(
  admin: Redis,
  channels: readonly string[],
): Promise<{ numsub: number[]; patternHolders: number }> {
  const numsub = (await admin.pubsub('NUMSUB', ...channels.map((c) => `${PREFIX}p:{${c}}`))) as (
    string | number
  )[];
  // PUBSUB NUMPAT counts unique patterns, not subscribers: count the connections holding one.
  const patternHolders = patternSubscribers(String(await admin.call('CLIENT', 'LIST')));
  return { numsub: numsub.filter((_, i) => i % 2 === 1).map(Number), patternHolders };
}

void test(
  'CLIENT KILL TYPE pubsub during traffic: every channel and the bridge deliver again afterwards',
  { skip },
  async (t) => {
    const { redis, nodes, open } = await startCluster(t);
    const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    t.after(() => admin.disconnect());
    await admin.connect();
    const channels = ['kill-0', 'kill-1', 'kill-2', 'kill-3'];

    const { subs, plain } = await subscribeBoth({ nodes, open }, channels);
    await eventually(
      async () => {
        const { numsub } = await subscriberCounts(admin, [BRIDGED]);
        return numsub[0] === 2;
      },
      5000,
      'plain subscribers registered',
    );
    const publishers = [await open(nodes[0]), await open(nodes[1])];

    // Background traffic from both nodes until told to stop: every publish must be acknowledged,
    // the command connection is not what gets killed.
    let stopping = false;
    let round = 0;
    const traffic = (async () => {
      while (!stopping) {
        const r = round++;
        const results = await Promise.all(
          publishers.map((p, pi) =>
            pipeline(
              p,
              channels.map((channel) => ({
                action: 'publish',
                channel,
                data: { phase: 'traffic', p: pi, r },
                id: `t-${r}-${channel}`,
              })),
            ),
          ),
        );
        for (const replies of results)
          for (const reply of replies.values())
            assert.equal(reply['ok'], true, `traffic publish: ${JSON.stringify(reply)}`);
      }
    })();
    // Marked handled now; awaited (and rethrown) below once the kills are done.
    traffic.catch(() => {});

    try {
      for (let kill = 1; kill <= 2; kill++) {
        // Traffic is flowing to every subscriber before the link is cut.
        const before = subs.map((c) => c.messages().length);
        await eventually(
          () =>
            subs.every((c, i) => c.messages().length >= (before[i] as number) + channels.length),
          5000,
          'traffic flowing',
        );
        const killed = (await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')) as number;
        assert.ok(
          killed >= 2,
          `both nodes' subscriber connections killed (kill ${kill}: ${killed})`,
        );
        // Recovered means Redis again lists both nodes on every channel and on the bridge pattern.
        let seen = '';
        await eventually(
          async () => {
            const counts = await subscriberCounts(admin, [...channels, BRIDGED]);
            seen = JSON.stringify(counts);
            return counts.numsub.every((n) => n === 2) && counts.patternHolders === 2;
          },
          10_000,
          `both nodes resubscribed after kill ${kill}`,
        ).catch((err: Error) => {
          throw new Error(`${err.message}; last seen ${seen}`);
        });
      }
    } finally {
      stopping = true;
      await traffic.catch(() => {});
    }
    await traffic;

    // Published after recovery was observed: every subscriber gets each one, exactly once, in order.
    const perPublisher = 10;
    const results = await Promise.all(
      publishers.map((p, pi) =>
        pipeline(
          p,
          channels.flatMap((channel) =>
            Array.from({ length: perPublisher }, (_, i) => ({
              action: 'publish',
              channel,
              data: { phase: 'after', p: pi, i },
              id: `a-${channel}-${i}`,
            })),
          ),
        ),
      ),
    );
    const acked = new Map<string, number[]>();
    for (const replies of results) {
      for (const [id, reply] of replies) {
        assert.equal(reply['ok'], true, JSON.stringify(reply));
        const channel = String(id).slice(2, String(id).lastIndexOf('-'));
        acked.set(channel, [...(acked.get(channel) ?? []), reply['offset'] as number]);
      }
    }
    for (const channel of channels) {
      const max = Math.max(...(acked.get(channel) ?? []));
      for (const c of subs) {
        await c.until(
          (fs) => fs.some((f) => f['channel'] === channel && (f['offset'] as number) >= max),
          5000,
          `${channel} up to offset ${max}`,
        );
      }
    }
    for (const c of subs) {
      for (const channel of channels) {
        assertNoDuplicates(c, channel);
        const after = c
          .messages(channel)
          .filter((f) => (f['message'] as { phase: string }).phase === 'after');
        assert.deepEqual(
          after.map((f) => f['offset']).sort((x, y) => (x as number) - (y as number)),
          [...(acked.get(channel) ?? [])].sort((x, y) => x - y),
          `${channel}: every message published after recovery, exactly once`,
        );
        for (const pi of [0, 1]) {
          assert.deepEqual(
            after
              .map((f) => f['message'] as { p: number; i: number })
              .filter((m) => m.p === pi)
              .map((m) => m.i),
            Array.from({ length: perPublisher }, (_, i) => i),
            `${channel}: publisher ${pi} in order`,
          );
        }
      }
    }

    // The bridge pattern was restored too: raw PUBLISHes reach both plain subscribers once.
    for (let i = 0; i < 3; i++)
      assert.equal(await admin.publish(BRIDGED, JSON.stringify({ after: i })), 2);
    for (const c of plain) {
      await c.until(() => c.messages(BRIDGED).length >= 3, 5000, 'bridged messages');
      assert.deepEqual(
        c.messages(BRIDGED).map((f) => f['message']),
        [0, 1, 2].map((i) => ({ after: i })),
      );
      // Raw PUBLISHes sent while a bridge was down are lost: each loss was announced (#16.6).
      const told = c.frames.filter((f) => f['event'] === 'discontinuity');
      assert.equal(told.length, 2, 'one discontinuity event per kill');
    }
    for (const node of nodes) assert.equal(node.child.exitCode, null, 'node still running');
  },
);

void test(
  'Redis restart without persistence: nodes stay up, refuse publishes while down, then recover',
  { skip },
  async (t) => {
    const { redis, nodes, open } = await startCluster(t);
    const channels = ['restart-0', 'restart-1', 'restart-2'];
    const { subs, plain } = await subscribeBoth({ nodes, open }, channels);
    await eventually(
      () => redis.cli('PUBSUB', 'NUMSUB', `${PREFIX}p:{${BRIDGED}}`).trim().endsWith('\n2'),
      5000,
      'plain subscribers registered',
    );
    const wsPublisher = await open(nodes[1]);

    // Before: a message per channel, to learn the epoch of this life of the streams.
    const epochs = new Map<string, unknown>();
    for (const channel of channels) {
      const r = await postMessages(nodes[0], channel, { data: 'before' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      epochs.set(channel, (r.body['messages'] as Frame[])[0]?.['epoch']);
    }
    for (const node of nodes) assert.equal(await status(node, '/readyz'), 200);

    await redis.stop();
    // Not ready once the outage outlasts readinessGraceMs (5 s), not at the first failure.
    for (const node of nodes)
      await eventually(async () => (await status(node, '/readyz')) === 503, 10_000, 'readyz 503');

    // While Redis is away: every publish is refused with NOT_AVAILABLE, none acknowledged.
    for (const node of nodes) {
      assert.equal(await status(node, '/healthz'), 200, 'the process itself is alive');
      const single = await postMessages(node, channels[0] as string, { data: 'down' });
      assert.equal(single.status, 503, JSON.stringify(single.body));
      assert.equal(single.body['code'], NOT_AVAILABLE);
      const batch = await postMessages(node, channels[0] as string, [
        { data: 'down-1' },
        { data: 'down-2', id: 'down-2' },
      ]);
      assert.equal(batch.status, 503, JSON.stringify(batch.body));
      assert.equal(batch.body['code'], NOT_AVAILABLE);
      for (const m of batch.body['messages'] as Frame[])
        assert.equal(m['offset'], undefined, `no message was stored: ${JSON.stringify(m)}`);
    }
    const refused = await pipeline(
      wsPublisher,
      channels.map((channel) => ({
        action: 'publish',
        channel,
        data: 'down',
        id: `down-${channel}`,
      })),
    );
    for (const r of refused.values()) {
      assert.equal(r['ok'], undefined, `never acknowledged: ${JSON.stringify(r)}`);
      assert.equal(r['code'], NOT_AVAILABLE, JSON.stringify(r));
    }
    // Without an id the error still comes back, just without `reply`.
    wsPublisher.send({ action: 'publish', channel: channels[0], data: 'down, no id' });
    await wsPublisher.until(
      (fs) => fs.some((f) => f['reply'] === undefined && f['code'] === NOT_AVAILABLE),
      5000,
      'error for the id-less publish',
    );
    // A subscribe made while Redis is away is answered once it is back (or refused in time).
    const late = await open(nodes[0]);
    late.send({ action: 'subscribe', channel: channels[0], id: 'late' });

    await redis.restart();
    for (const node of nodes)
      await eventually(async () => (await status(node, '/readyz')) === 200, 10_000, 'readyz 200');
    await late.until((fs) => fs.some((f) => f['reply'] === 'late'), 10_000, 'late reply');
    const lateReply = late.frames.find((f) => f['reply'] === 'late') as Frame;
    if (lateReply['ok'] !== true) {
      assert.equal(lateReply['code'], NOT_AVAILABLE, JSON.stringify(lateReply));
      assert.equal((await late.subscribe(channels[0] as string, 'late-again'))['ok'], true);
    }
    subs.push(late);
    // Resubscribed: both nodes on every channel (the late one included) and on the bridge pattern.
    await eventually(
      () => {
        const numsub = redis
          .cli('PUBSUB', 'NUMSUB', ...[...channels, BRIDGED].map((c) => `${PREFIX}p:{${c}}`))
          .trim()
          .split('\n')
          .filter((_, i) => i % 2 === 1);
        return (
          numsub.every((n) => n === '2') && patternSubscribers(redis.cli('CLIENT', 'LIST')) === 2
        );
      },
      10_000,
      'subscriptions restored',
    );

    // After: REST on one node, WebSocket on the other; a new epoch, offsets from 1 again.
    for (const channel of channels) {
      const r = await postMessages(nodes[0], channel, { data: 'after-rest' });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const m = (r.body['messages'] as Frame[])[0] as Frame;
      assert.equal(m['offset'], 1, 'the stream was lost: offsets start again');
      assert.notEqual(m['epoch'], epochs.get(channel), 'the stream was lost: a new epoch');
      const w = await wsPublisher.request({
        action: 'publish',
        channel,
        data: 'after-ws',
        id: `after-${channel}`,
      });
      assert.equal(w['ok'], true, JSON.stringify(w));
      assert.equal(w['offset'], 2);
    }
    for (const c of subs) {
      const mine = c === late ? [channels[0] as string] : channels;
      await c.until(
        (fs) =>
          mine.every((ch) => fs.some((f) => f['channel'] === ch && f['message'] === 'after-ws')),
        5000,
        'messages after the restart',
      );
      for (const channel of mine) {
        const data = c.messages(channel).map((f) => f['message']);
        assert.deepEqual(
          data.filter((d) => d !== 'before'),
          ['after-rest', 'after-ws'],
          `${channel}: nothing refused was delivered, everything after arrived once`,
        );
      }
    }
    assert.equal(redis.cli('PUBLISH', BRIDGED, 'after restart').trim(), '2');
    for (const c of plain) {
      await c.until(() => c.messages(BRIDGED).length >= 1, 5000, 'bridged message');
      assert.deepEqual(
        c.messages(BRIDGED).map((f) => f['message']),
        ['after restart'],
      );
    }
    for (const node of nodes) {
      assert.equal(node.child.exitCode, null, 'node never exited');
      assert.equal(await status(node, '/readyz'), 200);
    }
  },
);
