/**
 * Presence through the SDK (issue #12 points 1-2): `channel.presence.enter/update/leave/get/
 * subscribe`; on 2 nodes + Redis every presence subscriber sees the same event sequence and
 * get() ends equal to the members still entered; a node killed with SIGKILL takes its members out
 * with exactly one leave each within presenceTtlMs + 5 s; a client cut for 3 s resumes without a
 * leave/enter; a client gone for longer than the grace period leaves once.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import {
  ErrorCode,
  Switchboard,
  type PresenceEvent,
  type SwitchboardError,
  type SwitchboardOptions,
} from '../src/index.js';
import {
  eventually,
  requireBinary,
  soakOr,
  startNodeProcess,
  startRedis,
  startTestServer,
  type NodeProcess,
  type RedisProcess,
} from '../../server/test/helpers.js';
import { startRedisCluster, type RedisClusterKit } from '../../server/test/redis-kit.js';
import { TcpProxy } from './tcp-proxy.js';

const NAMESPACES = { room: { presence: true } };
const cleanup: (() => unknown)[] = [];

function client(options: SwitchboardOptions): Switchboard {
  const c = new Switchboard({ WebSocket, backoff: { baseMs: 20, capMs: 200 }, ...options });
  cleanup.push(() => c.close());
  return c;
}

after(async () => {
  for (const f of cleanup.reverse()) await f();
});

const line = (e: PresenceEvent): string =>
  `${e.offset} ${e.action} ${e.clientId} ${e.connectionId} ${JSON.stringify(e.data)}`;

describe('SDK presence on the embedded engine', () => {
  it('enter/update/leave with data reach a subscriber; get() pages; limits and disabled presence reject with their codes', async () => {
    const s = await startTestServer({ namespaces: NAMESPACES, presenceMaxDataBytes: 64 });
    cleanup.push(() => s.close());
    const a = client({ url: s.wsUrl });
    const b = client({ url: s.wsUrl });
    const seen: PresenceEvent[] = [];
    const watched = b.channels.get('room:sdk');
    await watched.presence.subscribe((e) => seen.push(e));
    assert.deepEqual(await watched.presence.get(), []);

    const room = a.channels.get('room:sdk');
    await room.presence.enter({ status: 'here' });
    await room.presence.update({ status: 'away' });
    await eventually(() => seen.length === 2, 5000, 'enter and update');
    const [member] = await watched.presence.get();
    assert.deepEqual(member?.data, { status: 'away' });
    assert.equal(member?.clientId, member?.connectionId, 'anonymous: the connection is the client');
    // Without streaming, get() reads every page from the server.
    assert.deepEqual(
      (await a.channels.get('room:sdk').presence()).map((m) => m.data),
      [{ status: 'away' }],
    );
    await room.presence.leave();
    await eventually(() => seen.length === 3, 5000, 'leave');
    assert.deepEqual(
      seen.map((e) => [e.action, e.data]),
      [
        ['enter', { status: 'here' }],
        ['update', { status: 'away' }],
        ['leave', { status: 'away' }],
      ],
    );
    assert.deepEqual(await watched.presence.get(), []);

    await assert.rejects(
      room.presence.enter({ big: 'x'.repeat(100) }),
      (err: SwitchboardError) => err.code === ErrorCode.PRESENCE_DATA_TOO_LARGE,
    );
    await assert.rejects(
      room.presence.leave(),
      (err: SwitchboardError) => err.code === ErrorCode.PRESENCE_NOT_ENTERED,
    );
    await assert.rejects(
      a.channels.get('lobby').presence.enter(),
      (err: SwitchboardError) => err.code === ErrorCode.PRESENCE_DISABLED,
    );
  });
});

const missing = requireBinary('redis-server');
describe('SDK presence on 2 nodes + Redis', { skip: missing }, () => {
  const TTL_MS = 2000;
  const GRACE_MS = 6000;
  let redis: RedisProcess;
  let a: NodeProcess;
  let b: NodeProcess;
  const args = (): string[] => [
    ...['--redis', redis.url, '--redis-prefix', 'sp:'],
    ...['--namespaces', JSON.stringify(NAMESPACES)],
    ...['--presence-ttl-ms', String(TTL_MS), '--presence-grace-ms', String(GRACE_MS)],
  ];

  before(async () => {
    redis = await startRedis();
    [a, b] = await Promise.all([startNodeProcess(args()), startNodeProcess(args())]);
  });
  after(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
    await Promise.all([a.stop(), b.stop()]);
    await redis.stop();
  });

  it('200 members entering and leaving on both nodes: every subscriber sees the same sequence, and get() ends with those still entered', async () => {
    const n = soakOr('SWITCHBOARD_PRESENCE_MEMBERS', 2000, 200);
    const watchers = [a, b, a, b].map((node) => {
      const events: string[] = [];
      const c = client({ url: node.wsUrl });
      return {
        c,
        events,
        ready: c.channels.get('room:200').presence.subscribe((e) => events.push(line(e))),
      };
    });
    await Promise.all(watchers.map((w) => w.ready));
    const members = Array.from({ length: n }, (_, i) =>
      client({ url: (i % 2 === 0 ? a : b).wsUrl }),
    );
    await Promise.all(members.map((m, i) => m.channels.get('room:200').presence.enter({ i })));
    const leaving = members.filter((_, i) => i % 4 < 2);
    await Promise.all(leaving.map((m) => m.channels.get('room:200').presence.leave()));
    const total = n + leaving.length;
    await eventually(
      () => watchers.every((w) => w.events.length >= total),
      30_000,
      `every watcher to see every event (${total})`,
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}: ${watchers.map((w) => w.events.length).join(', ')}`);
    });
    const first = watchers[0]?.events ?? [];
    for (const w of watchers) assert.deepEqual(w.events, first, 'the same sequence everywhere');
    assert.deepEqual(
      first.map((l) => Number(l.split(' ')[0])),
      Array.from({ length: total }, (_, i) => i + 1),
      'consecutive offsets',
    );
    const expected = members
      .map((_, i) => i)
      .filter((i) => i % 4 >= 2)
      .sort((x, y) => x - y);
    for (const w of watchers) {
      const got = (await w.c.channels.get('room:200').presence.get())
        .map((m) => (m.data as { i: number }).i)
        .sort((x, y) => x - y);
      assert.deepEqual(got, expected, "the watcher's view");
    }
    const fresh = client({ url: b.wsUrl });
    const read = (await fresh.channels.get('room:200').presence.get())
      .map((m) => (m.data as { i: number }).i)
      .sort((x, y) => x - y);
    assert.deepEqual(read, expected, 'a paged read');
  });

  it('a client cut for 3 s resumes without leave/enter; one gone past the grace period leaves once; a SIGKILLed node takes its 100 members out with one leave each', async () => {
    const events: PresenceEvent[] = [];
    const watcher = client({ url: b.wsUrl });
    const watched = watcher.channels.get('room:k');
    await watched.presence.subscribe((e) => events.push(e));
    const fence = async (data: string): Promise<void> => {
      const f = client({ url: b.wsUrl });
      await f.channels.get('room:k').presence.enter(data);
      await eventually(() => events.some((e) => e.data === data), 10_000, `fence ${data}`);
    };

    // Cut for 3 s, behind a proxy that refuses meanwhile: the SDK re-enters with its presence key.
    const proxy = await TcpProxy.start(b.port);
    cleanup.push(() => proxy.close());
    // Retrying all through the outage (not suspended after 10 attempts).
    // (A refused attempt is noticed by the connect timeout.)
    const cut = client({
      url: proxy.wsUrl(),
      suspendAfterAttempts: 1000,
      suspendAfterMs: 60_000,
      connectTimeoutMs: 300,
    });
    await cut.channels.get('room:k').presence.enter('cut');
    await eventually(() => events.some((e) => e.data === 'cut'), 5000, 'the cut client to enter');
    proxy.refusing = true;
    proxy.cut();
    await new Promise((r) => setTimeout(r, 3000)); // the outage itself
    proxy.refusing = false;
    await eventually(() => cut.connection.state === 'connected', 5000, 'reconnected');
    await eventually(
      async () =>
        (await watched.presence.get()).some((m) => m.data === 'cut') && proxy.accepted > 1,
      5000,
      'the cut client back',
    );
    await fence('after-cut');
    assert.deepEqual(
      events.filter((e) => e.data === 'cut').map((e) => e.action),
      ['enter'],
      'no leave/enter for a 3 s cut',
    );

    // Gone for good: one leave once the grace period is over.
    const goneAt = performance.now();
    cut.close();
    proxy.cut();
    await eventually(
      () => events.some((e) => e.data === 'cut' && e.action === 'leave'),
      GRACE_MS + TTL_MS + 5000,
      () =>
        `the gone client to leave; its events ${JSON.stringify(events.filter((e) => e.data === 'cut').map((e) => e.action))}, members ${JSON.stringify(events.filter((e) => e.action === 'enter').length)} entered`,
    );
    const goneMs = performance.now() - goneAt;
    assert.ok(
      goneMs >= GRACE_MS - 500,
      `left after ${goneMs.toFixed(0)} ms, inside the grace period`,
    );

    // 100 members on node a, which is then killed: the SDK clients reconnect to a only (dead).
    const ghosts = Array.from({ length: 100 }, () => client({ url: a.wsUrl }));
    await Promise.all(ghosts.map((g, i) => g.channels.get('room:k').presence.enter(`ghost${i}`)));
    await eventually(
      () => events.filter((e) => String(e.data).startsWith('ghost')).length === 100,
      10_000,
      'the ghosts to enter',
    );
    const exited = once(a.child, 'exit');
    const killedAt = performance.now();
    a.child.kill('SIGKILL');
    await exited;
    const leaves = (): PresenceEvent[] =>
      events.filter((e) => e.action === 'leave' && String(e.data).startsWith('ghost'));
    await eventually(() => leaves().length >= 100, TTL_MS + 5000, 'one leave per ghost');
    const leftMs = performance.now() - killedAt;
    await fence('after-kill');
    assert.equal(leaves().length, 100, 'exactly one leave each');
    assert.equal(new Set(leaves().map((e) => e.data)).size, 100);
    process.stdout.write(
      `presence: 100 members of a SIGKILLed node left ${leftMs.toFixed(0)} ms after the kill (TTL ${TTL_MS} ms); a gone client left ${goneMs.toFixed(0)} ms after it went (grace ${GRACE_MS} ms)\n`,
    );
    for (const g of ghosts) g.close();
  });
});

describe('SDK presence on 2 nodes + Redis Cluster', { skip: missing }, () => {
  let cluster: RedisClusterKit;
  let a: NodeProcess;
  let b: NodeProcess;

  before(async () => {
    cluster = await startRedisCluster();
    const args = [
      ...['--redis-cluster', cluster.seeds.slice(0, 3).join(','), '--redis-prefix', 'spc:'],
      ...['--namespaces', JSON.stringify(NAMESPACES)],
    ];
    [a, b] = await Promise.all([startNodeProcess(args), startNodeProcess(args)]);
  });
  after(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
    await Promise.all([a.stop(), b.stop()]);
    await cluster.stop();
  });

  it('members entering and leaving on both nodes: presence events (SPUBLISHed on the channel slot) reach subscribers on both, in the same sequence', async () => {
    const channels = ['room:c1', 'room:c2', 'room:c3'];
    const watchers = [a, b].flatMap((node) =>
      channels.map((ch) => {
        const events: string[] = [];
        const c = client({ url: node.wsUrl });
        return {
          ch,
          events,
          ready: c.channels.get(ch).presence.subscribe((e) => events.push(line(e))),
        };
      }),
    );
    await Promise.all(watchers.map((w) => w.ready));
    const members = Array.from({ length: 20 }, (_, i) =>
      client({ url: (i % 2 === 0 ? a : b).wsUrl }),
    );
    for (const ch of channels)
      await Promise.all(members.map((m, i) => m.channels.get(ch).presence.enter({ i })));
    await Promise.all(members.slice(0, 10).map((m) => m.channels.get('room:c1').presence.leave()));
    const expected = (ch: string): number => (ch === 'room:c1' ? 30 : 20);
    await eventually(
      () => watchers.every((w) => w.events.length >= expected(w.ch)),
      15_000,
      'every watcher on both nodes to see every presence event',
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}: ${watchers.map((w) => w.events.length).join(', ')}`);
    });
    for (const ch of channels) {
      const seen = watchers.filter((w) => w.ch === ch).map((w) => w.events);
      assert.deepEqual(seen[1], seen[0], `${ch}: the same sequence on both nodes`);
      assert.equal(seen[0]?.length, expected(ch));
    }
  });
});
