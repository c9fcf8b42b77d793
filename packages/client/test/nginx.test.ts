/**
 * Behind real NGINX (deploy/nginx/switchboard.conf, round-robin, no sticky sessions) in front of
 * three `switchboard serve` processes and a real Redis: clients of all three transports on the
 * same channels, and a node killed with SIGKILL under them.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { eventually, requireBinary } from '../../server/test/helpers.js';
import {
  Switchboard,
  type DiscontinuityInfo,
  type Message,
  type SwitchboardOptions,
  type TransportName,
} from '../src/index.js';
import { startCluster, type Cluster } from './cluster-kit.js';

const TRANSPORTS: readonly TransportName[] = ['websocket', 'sse', 'long-polling'];

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

function missing(): string | false {
  return requireBinary('nginx') || requireBinary('redis-server');
}

async function cluster(): Promise<Cluster> {
  const c = await startCluster(3);
  cleanup.push(() => c.stop());
  return c;
}

interface Tracked {
  readonly transport: TransportName;
  readonly client: Switchboard;
  readonly got: Map<string, Message[]>;
  readonly gaps: DiscontinuityInfo[];
  downs: number;
}

async function open(
  url: string,
  transport: TransportName,
  channels: readonly string[],
  options: Partial<SwitchboardOptions> = {},
): Promise<Tracked> {
  const client = new Switchboard({
    url,
    WebSocket,
    transports: [transport],
    backoff: { baseMs: 50, capMs: 500 },
    ...options,
  });
  cleanup.push(() => client.close());
  const t: Tracked = { transport, client, got: new Map(), gaps: [], downs: 0 };
  client.connection.on('disconnected', () => t.downs++);
  for (const name of channels) {
    const list: Message[] = [];
    t.got.set(name, list);
    const ch = client.channels.get(name);
    ch.on('discontinuity', (g) => t.gaps.push(g));
    await ch.subscribe((m) => list.push(m));
  }
  return t;
}

const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Every client received every offset of every channel exactly once, in order, with the same ids. */
function assertIdentical(
  clients: readonly Tracked[],
  channels: readonly string[],
  count: Map<string, number>,
): void {
  for (const name of channels) {
    const n = count.get(name) ?? 0;
    const reference = clients[0]?.got.get(name)?.map((m) => m.id);
    for (const c of clients) {
      const got = c.got.get(name) ?? [];
      assert.deepEqual(
        got.map((m) => m.offset),
        range(1, n),
        `${c.transport} client on ${name}: every offset once, in order`,
      );
      assert.deepEqual(
        got.map((m) => m.id),
        reference,
        `${c.transport} client on ${name}: same sequence`,
      );
      assert.deepEqual(c.gaps, [], `${c.transport} client: no discontinuity`);
    }
  }
}

describe('behind NGINX: 3 nodes, Redis, round-robin', () => {
  it('gives WebSocket, SSE and long-polling clients identical sequences; HTTP commands go through any node', async (t) => {
    const why = missing();
    if (why) return t.skip(why);
    const { nginx } = await cluster();
    const channels = ['mix:a', 'mix:b', 'mix:c'];
    const clients: Tracked[] = [];
    for (const transport of TRANSPORTS)
      for (let i = 0; i < 4; i++) clients.push(await open(nginx.wsUrl, transport, channels));
    // Every client publishes to every channel, one publish after the other, all at once.
    const perClient = 10;
    const acks = await Promise.all(
      clients.map(async (c, ci) => {
        const offsets: number[] = [];
        for (let i = 0; i < perClient; i++)
          for (const name of channels)
            offsets.push((await c.client.channels.get(name).publish('n', `${ci}:${i}`)).offset);
        return offsets;
      }),
    );
    const total = clients.length * perClient;
    assert.deepEqual(
      acks.flat().sort((a, b) => a - b),
      range(1, total).flatMap((o) => [o, o, o]),
      'every publish acknowledged once per channel',
    );
    // A last message per channel fences the streams: a duplicate would come before it.
    for (const name of channels) await clients[0]?.client.channels.get(name).publish('fence', 0);
    await eventually(
      () => clients.every((c) => channels.every((n) => (c.got.get(n)?.length ?? 0) >= total + 1)),
      20_000,
      'every message and the fence at every client',
    );
    assertIdentical(clients, channels, new Map(channels.map((n) => [n, total + 1])));

    // The balancer spread each SSE and long-polling connection's command POSTs over the nodes:
    // the connection lives on one node, so every POST served elsewhere was forwarded.
    const served = new Map<string, Set<string>>();
    for (const line of nginx.accessLog()) {
      const m = /"POST \/connections\/([\w-]+)\/commands HTTP\/1\.1" 202 .* upstream=(\S+)/.exec(
        line,
      );
      if (m === null) continue;
      const set = served.get(m[1] as string) ?? new Set<string>();
      set.add(m[2] as string);
      served.set(m[1] as string, set);
    }
    assert.equal(served.size, 8, 'the 8 SSE and long-polling connections posted commands');
    assert.equal(
      new Set([...served.values()].flatMap((s) => [...s])).size,
      3,
      'POSTs reached all 3 nodes',
    );
    const spread = [...served.values()].filter((s) => s.size >= 2).length;
    assert.ok(spread >= 4, `${spread} of 8 connections had their commands served by 2+ nodes`);
    const polls = new Set<string>();
    for (const line of nginx.accessLog()) {
      const m = /"GET \/poll\/[\w-]+ HTTP\/1\.1" 200 .* upstream=(\S+)/.exec(line);
      if (m !== null) polls.add(m[1] as string);
    }
    assert.equal(polls.size, 3, 'polls were answered through all 3 nodes');
  });

  it('writes no query string, so no ?token=, into the access log', async (t) => {
    const why = missing();
    if (why) return t.skip(why);
    const { nginx } = await cluster();
    const secret = 'eyJhbGciOiJIUzI1NiJ9.secret-token-text.sig';
    const res = await fetch(`${nginx.url}/healthz?token=${secret}`);
    assert.equal(res.status, 200);
    const ws = new WebSocket(`${nginx.wsUrl}?token=${secret}`);
    await new Promise((resolve) => ws.once('close', resolve));
    await eventually(
      () => nginx.accessLog().some((l) => l.includes('"GET /ws HTTP/1.1"')),
      5000,
      'the WebSocket request logged',
    );
    const lines = nginx.accessLog();
    assert.ok(
      lines.some((l) => l.includes('"GET /healthz HTTP/1.1" 200')),
      lines.join('\n'),
    );
    assert.deepEqual(
      lines.filter((l) => l.includes('secret-token-text') || l.includes('token=')),
      [],
    );
  });

  it('kill -9 of one node: clients of every transport resume on the others with 0 lost', async (t) => {
    const why = missing();
    if (why) return t.skip(why);
    const { nginx, nodes } = await cluster();
    const fast: Partial<SwitchboardOptions> = {
      pingIntervalMs: 1000,
      pingTimeoutMs: 1000,
      pollWaitMs: 1000,
      connectTimeoutMs: 2000,
    };
    const clients: Tracked[] = [];
    // One at a time, so round-robin spreads each transport's clients over the three nodes.
    for (const transport of TRANSPORTS)
      for (let i = 0; i < 9; i++) clients.push(await open(nginx.wsUrl, transport, ['kill'], fast));
    const pub = new Switchboard({
      url: nginx.wsUrl,
      WebSocket,
      ...fast,
      backoff: { baseMs: 50, capMs: 500 },
    });
    cleanup.push(() => pub.close());
    let published = 0;
    let stop = false;
    const publishing = (async () => {
      while (!stop) {
        const ack = await pub.channels.get('kill').publish('n', published + 1);
        assert.equal(ack.offset, ++published);
        await new Promise((r) => setTimeout(r, 10)); // the publisher's pace
      }
    })();
    await eventually(() => published >= 20, 10_000, 'traffic before the kill');
    const victims = [nodes[0], nodes[1]];
    const atKill = published;
    for (const victim of victims) {
      victim?.child.kill('SIGKILL');
      // Long enough for the killed node's clients to notice (their sockets are reset at once;
      // long-polling ones at their next poll, pollWaitMs 1 s) while traffic goes on.
      const mark = published;
      await eventually(() => published >= mark + 100, 20_000, 'traffic after the kill');
      // Round-robin put some clients of each transport on the first victim; if by chance a
      // transport had none there, the second node goes too (one stays).
      if (TRANSPORTS.every((tr) => clients.some((c) => c.transport === tr && c.downs > 0))) break;
    }
    const mark = published;
    await eventually(() => published >= mark + 50, 20_000, 'traffic after the kills');
    stop = true;
    await publishing;
    await pub.channels.get('kill').publish('fence', 0);
    for (const tr of TRANSPORTS) {
      const hit = clients.filter((c) => c.transport === tr && c.downs > 0).length;
      assert.ok(hit > 0, `some ${tr} clients were on the killed node (${hit})`);
    }
    await eventually(
      () => clients.every((c) => (c.got.get('kill')?.length ?? 0) >= published + 1),
      20_000,
      `all ${published} messages and the fence at every client`,
    );
    assertIdentical(clients, ['kill'], new Map([['kill', published + 1]]));
    assert.ok(
      atKill >= 10 && published >= atKill + 20,
      `publishing went on across the kill: ${atKill} messages before it, ${published} in all`,
    );
  });
});
