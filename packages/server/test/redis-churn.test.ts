/**
 * Subscription churn across two nodes: many clients subscribe and unsubscribe at random, all at
 * once, and Redis must end up subscribed to exactly the channels some node still has a local
 * subscriber for (a node holds a broker subscription only while it has one; nothing leaks, nothing
 * is missing). The PRNG is seeded: a failure prints the seed, and CHURN_SEED=<seed> replays it.
 */
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { test, type TestContext } from 'node:test';
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
const CLIENTS_PER_NODE = 20;
const CHANNELS = Array.from({ length: 50 }, (_, i) => `churn-${i}`);
const OPERATIONS = 1000;

/** mulberry32: a small, fast, seedable PRNG; returns an integer in [0, n). */
function prng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

function seedFor(t: TestContext): number {
  const fromEnv = process.env['CHURN_SEED'];
  const seed = fromEnv === undefined ? randomInt(2 ** 31) : Number(fromEnv);
  // Printed when the test starts, so a hang or a crash still shows it.
  process.stdout.write(`seed ${seed} for "${t.name}" (replay with CHURN_SEED=${seed})\n`);
  return seed;
}

interface Cluster {
  readonly redis: RedisProcess;
  readonly nodes: readonly [NodeProcess, NodeProcess];
  readonly prefix: string;
  readonly clients: TestClient[];
  /** The channels Redis has a subscriber for under this test's prefix. */
  subscribedInRedis(): string[];
}

/** A Redis, two nodes with a prefix of their own and CLIENTS_PER_NODE clients on each. */
async function startCluster(t: TestContext, prefix: string): Promise<Cluster> {
  const clients: TestClient[] = [];
  const nodes: NodeProcess[] = [];
  const redis = await startRedis();
  t.after(async () => {
    for (const c of clients) c.ws.terminate();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis.stop();
  });
  const args = ['--redis', redis.url, '--redis-prefix', prefix];
  nodes.push(await startNodeProcess(args));
  nodes.push(await startNodeProcess(args));
  for (let i = 0; i < CLIENTS_PER_NODE; i++)
    for (const node of nodes) clients.push(await TestClient.open(node.wsUrl));
  const head = `${prefix}p:{`;
  return {
    redis,
    nodes: [nodes[0] as NodeProcess, nodes[1] as NodeProcess],
    prefix,
    clients,
    subscribedInRedis: () =>
      redis
        .cli('PUBSUB', 'CHANNELS', `${prefix}p:*`)
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => {
          assert.ok(line.startsWith(head) && line.endsWith('}'), `unexpected channel ${line}`);
          return line.slice(head.length, -1);
        })
        .sort(),
  };
}

interface Sent {
  readonly client: number;
  readonly action: 'subscribe' | 'unsubscribe';
  readonly channel: string;
  readonly id: string;
}

/**
 * Issues `count` random subscribe/unsubscribe commands over all clients at once, without waiting
 * for any reply. Each command is valid for the client's state at that point of its own command
 * stream (subscribe what it does not hold, unsubscribe what it does), so every reply must be ok.
 * Updates `held`, the model: the channels each client holds once all commands are applied.
 * Returns the commands sent.
 */
function churn(
  clients: readonly TestClient[],
  held: readonly Set<string>[],
  random: (n: number) => number,
  count: number,
): Sent[] {
  const sent: Sent[] = [];
  for (let k = 0; k < count; k++) {
    const client = random(clients.length);
    const mine = held[client] as Set<string>;
    // Unsubscribing is likelier than subscribing, so a client holds about one channel at a time:
    // some channels end up held and others released, and a fresh subscription is often undone
    // before its reply arrives.
    const action = mine.size > 0 && random(100) < 65 ? 'unsubscribe' : 'subscribe';
    const choices = action === 'unsubscribe' ? [...mine] : CHANNELS.filter((c) => !mine.has(c));
    const channel = choices[random(choices.length)] as string;
    if (action === 'subscribe') mine.add(channel);
    else mine.delete(channel);
    const id = `op-${k}`;
    (clients[client] as TestClient).send({ action, channel, id });
    sent.push({ client, action, channel, id });
  }
  return sent;
}

/** Waits until every command has its reply (naming those that have none); returns them by id. */
async function allReplies(
  clients: readonly TestClient[],
  sent: readonly Sent[],
  seed: number,
): Promise<Map<string, Frame>> {
  const byId = (): Map<string, Frame> => {
    const replies = new Map<string, Frame>();
    for (const c of clients) for (const f of repliesOf(c)) replies.set(String(f['reply']), f);
    return replies;
  };
  try {
    await eventually(() => byId().size >= sent.length, 10_000, `${sent.length} replies`, 50);
  } catch (err) {
    const replies = byId();
    const missing = sent.filter((s) => !replies.has(s.id));
    const later = (s: Sent): Sent[] =>
      sent.filter((o) => o.client === s.client && o.channel === s.channel && o.id !== s.id);
    throw new Error(
      `seed ${seed}: ${missing.length} commands never answered, e.g. ` +
        missing
          .slice(0, 3)
          .map((s) => `${JSON.stringify(s)} (same client+channel: ${JSON.stringify(later(s))})`)
          .join('; '),
      { cause: err },
    );
  }
  return byId();
}

function repliesOf(client: TestClient): Frame[] {
  return client.frames.filter((f) => f['reply'] !== undefined);
}

function union(held: readonly Set<string>[]): string[] {
  const all = new Set<string>();
  for (const set of held) for (const channel of set) all.add(channel);
  return [...all].sort();
}

void test(
  '1,000 concurrent random subscribes/unsubscribes on 2 nodes leave Redis subscribed to exactly the held channels',
  { skip },
  async (t) => {
    const seed = seedFor(t);
    const random = prng(seed);
    const cluster = await startCluster(t, `churn${seed}:`);
    const { clients, nodes } = cluster;

    const held = clients.map(() => new Set<string>());
    const sent = churn(clients, held, random, OPERATIONS);
    // Every command gets exactly one reply, and each is ok.
    const replies = await allReplies(clients, sent, seed);
    assert.equal(replies.size, sent.length, `seed ${seed}: one reply per command`);
    for (const r of replies.values())
      assert.equal(r['ok'], true, `seed ${seed}: ${JSON.stringify(r)}`);
    for (const c of clients)
      assert.equal(repliesOf(c).length, new Set(repliesOf(c).map((f) => f['reply'])).size);

    // Unsubscribes reach Redis after their reply: converge, then compare exactly.
    const expected = union(held);
    t.diagnostic(`${expected.length} of ${CHANNELS.length} channels still held`);
    assert.ok(
      expected.length > 0 && expected.length < CHANNELS.length,
      `seed ${seed}: the model should hold some channels and have released others`,
    );
    let seen: string[] = [];
    await eventually(
      () => {
        seen = cluster.subscribedInRedis();
        return JSON.stringify(seen) === JSON.stringify(expected);
      },
      5000,
      'PUBSUB CHANNELS to match the model',
    ).catch(() => {
      assert.deepEqual(seen, expected, `seed ${seed}: PUBSUB CHANNELS vs. held channels`);
    });
    assert.deepEqual(cluster.subscribedInRedis(), expected, `seed ${seed}: stays matched`);

    // The nodes' local indexes match the model too: a message on each channel reaches exactly its
    // holders. A fence channel every client joins, published last, bounds what can still arrive.
    const fence = 'fence';
    for (const c of clients) assert.equal((await c.subscribe(fence, 'fence'))['ok'], true);
    for (const [k, channel] of CHANNELS.entries()) {
      const res = await fetch(`${nodes[k % 2]?.url}/v1/channels/${channel}/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ data: channel }),
      });
      assert.equal(res.status, 200, await res.text());
    }
    const res = await fetch(`${nodes[0].url}/v1/channels/${fence}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ data: 'fence' }),
    });
    assert.equal(res.status, 200, await res.text());
    for (const [i, c] of clients.entries()) {
      await c.until(() => c.messages(fence).length > 0, 5000, `fence on client ${i}`);
      const received = c
        .messages()
        .filter((f) => f['channel'] !== fence)
        .map((f) => f['channel'] as string);
      assert.deepEqual(
        received.sort(),
        [...(held[i] as Set<string>)].sort(),
        `seed ${seed}: client ${i} receives exactly its channels, once each`,
      );
    }

    // Closing every client releases every subscription on both nodes.
    for (const c of clients) c.close();
    await eventually(
      () => cluster.subscribedInRedis().length === 0,
      5000,
      `seed ${seed}: no subscription left after all clients closed`,
    );
  },
);

void test(
  'clients that disconnect while their subscribes and unsubscribes are in flight leave nothing subscribed',
  { skip },
  async (t) => {
    const seed = seedFor(t);
    const random = prng(seed);
    const cluster = await startCluster(t, `churn-close${seed}:`);
    const { clients } = cluster;
    // Subscribe everyone to something first, so that closing also has settled subscriptions to undo.
    const held = clients.map(() => new Set<string>());
    await allReplies(clients, churn(clients, held, random, OPERATIONS / 2), seed);
    await eventually(
      () => JSON.stringify(cluster.subscribedInRedis()) === JSON.stringify(union(held)),
      5000,
      'first round subscribed',
    );
    // A second round, and the clients go while it is in flight: half close cleanly, half drop.
    churn(clients, held, random, OPERATIONS / 2);
    for (const [i, c] of clients.entries()) {
      if (i % 2 === 0) c.close();
      else c.ws.terminate();
    }
    let seen: string[] = [];
    await eventually(
      () => {
        seen = cluster.subscribedInRedis();
        return seen.length === 0;
      },
      5000,
      'no subscription left',
    ).catch(() => {
      assert.deepEqual(seen, [], `seed ${seed}: subscriptions left behind`);
    });
  },
);
