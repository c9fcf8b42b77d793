/**
 * One suite every PresenceStore must pass (presence.ts): enter/update/leave with data and one
 * offset order per channel, events in the same step as the change, take-over by a resumed
 * connection, expiry with exactly one leave however many nodes sweep, the member limit, and
 * complete pages without duplicates (with a clientId filter).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Cluster, Redis } from 'ioredis';
import { presenceStream } from '@switchboard/protocol';
import { createRedisKeys } from '../../src/broker/redis-keys.js';
import type { RedisTarget } from '../../src/broker/redis-target.js';
import { memberKey, type MemberOp, type PresenceStore } from '../../src/presence/presence.js';
import { RedisPresenceStore } from '../../src/presence/redis.js';
import { eventually } from '../helpers.js';

export interface PresenceHarness {
  readonly store: PresenceStore;
  /** Calls `onFrame` with every event frame of `channel` from now on; resolves once listening. */
  events(channel: string, onFrame: (frame: string) => void): Promise<void>;
  close(): Promise<void>;
}

/**
 * The harness of a RedisPresenceStore on `target` under `prefix`. Its scripts publish the events;
 * `sub` reads them as the broker would: a plain subscriber (PUBLISH), or on Cluster a sharded
 * one (SPUBLISH on the channel's slot). `sub` is disconnected on close.
 */
export function redisPresenceHarness(
  target: string | RedisTarget,
  prefix: string,
  sub: Redis | Cluster,
): PresenceHarness {
  const store = new RedisPresenceStore(target, prefix);
  const keys = createRedisKeys(prefix);
  const sharded = typeof target !== 'string' && target.mode === 'cluster';
  const listeners = new Map<string, (frame: string) => void>();
  sub.on(sharded ? 'smessage' : 'message', (pubsub: string, payload: string) =>
    listeners.get(pubsub)?.(payload),
  );
  return {
    store,
    events: async (channel, onFrame) => {
      const pubsub = keys.pubsub(presenceStream(channel));
      listeners.set(pubsub, onFrame);
      await (sharded ? (sub as Cluster).ssubscribe(pubsub) : sub.subscribe(pubsub));
    },
    close: async () => {
      sub.disconnect();
      await store.close();
    },
  };
}

interface Event {
  action: string;
  clientId: string;
  connectionId: string;
  data: unknown;
  offset: number;
}

const op = (
  kind: MemberOp['kind'],
  client: string,
  conn: string,
  owner: string,
  data: unknown = null,
): MemberOp => ({
  kind,
  key: memberKey(client, conn),
  owner,
  idJson: `"clientId":${JSON.stringify(client)},"connectionId":${JSON.stringify(conn)}`,
  dataJson: kind === 'leave' && data === null ? '' : JSON.stringify(data),
  timestamp: Date.now(),
});

export function runPresenceSuite(name: string, make: () => PresenceHarness): void {
  describe(`${name} (presence conformance)`, () => {
    let h: PresenceHarness;
    let n = 0;
    const channel = (): string => `pc:${name}-${++n}`;
    const listen = async (ch: string): Promise<Event[]> => {
      const seen: Event[] = [];
      await h.events(ch, (f) => {
        const frame = JSON.parse(f) as { channel: string; epoch: string; presence: Event[] };
        assert.equal(frame.channel, ch);
        assert.equal(typeof frame.epoch, 'string');
        seen.push(...frame.presence);
      });
      return seen;
    };
    before(() => {
      h = make();
    });
    after(() => h.close());

    it('enter, update and leave emit events with consecutive offsets; pages carry data and each member its offset', async () => {
      const ch = channel();
      const seen = await listen(ch);
      let r = await h.store.apply(
        ch,
        [op('enter', 'alice', 'c1', 'o1', { x: 1 }), op('enter', 'bob', 'c2', 'o2')],
        60_000,
        100,
      );
      assert.deepEqual(
        { results: r.results, offset: r.offset },
        { results: ['ok', 'ok'], offset: 2 },
      );
      // One epoch names the offsets' life: the same in replies, pages and event frames.
      const epoch = r.epoch;
      assert.ok(epoch.length > 0);
      assert.equal((await h.store.page(ch, { limit: 1 })).epoch, epoch);
      r = await h.store.apply(ch, [op('update', 'alice', 'c1', 'o1', { x: 2 })], 60_000, 100);
      assert.equal(r.offset, 3);
      const page = await h.store.page(ch, { limit: 10 });
      assert.equal(page.offset, 3);
      assert.equal(page.next, null);
      assert.deepEqual(
        page.members.map((m) => {
          const { timestamp, ...rest } = JSON.parse(m) as Event & { timestamp: number };
          assert.equal(typeof timestamp, 'number');
          return rest;
        }),
        [
          { clientId: 'alice', connectionId: 'c1', data: { x: 2 }, offset: 3 },
          { clientId: 'bob', connectionId: 'c2', data: null, offset: 2 },
        ],
      );
      r = await h.store.apply(ch, [op('leave', 'alice', 'c1', 'o1')], 60_000, 100);
      assert.deepEqual(r.results, ['ok']);
      r = await h.store.apply(ch, [op('leave', 'alice', 'c1', 'o1')], 60_000, 100);
      assert.deepEqual(r.results, ['none']);
      await eventually(() => seen.length === 4, 3000, 'four events');
      assert.deepEqual(
        seen.map((e) => [e.action, e.clientId, e.data, e.offset]),
        [
          ['enter', 'alice', { x: 1 }, 1],
          ['enter', 'bob', null, 2],
          ['update', 'alice', { x: 2 }, 3],
          ['leave', 'alice', { x: 2 }, 4],
        ],
      );
    });

    it('a resumed connection takes a member over silently; the old one can no longer refresh or remove it', async () => {
      const ch = channel();
      const seen = await listen(ch);
      await h.store.apply(ch, [op('enter', 'alice', 'c1', 'old', { a: 1 })], 60_000, 100);
      // Same data, new owner: no event.
      let r = await h.store.apply(ch, [op('enter', 'alice', 'c1', 'new', { a: 1 })], 60_000, 100);
      assert.deepEqual({ results: r.results, offset: r.offset }, { results: ['ok'], offset: 1 });
      r = await h.store.apply(
        ch,
        [op('refresh', 'alice', 'c1', 'old'), op('leave', 'alice', 'c1', 'old')],
        60_000,
        100,
      );
      assert.deepEqual(
        { results: r.results, offset: r.offset },
        { results: ['lost', 'lost'], offset: 1 },
      );
      assert.equal((await h.store.page(ch, { limit: 10 })).members.length, 1);
      // A refresh of a member the store lost enters it again.
      await h.store.apply(ch, [op('leave', 'alice', 'c1', 'new')], 60_000, 100);
      r = await h.store.apply(ch, [op('refresh', 'alice', 'c1', 'new')], 60_000, 100);
      assert.deepEqual({ results: r.results, offset: r.offset }, { results: ['ok'], offset: 3 });
      await eventually(() => seen.length === 3, 3000, 'three events');
      assert.deepEqual(
        seen.map((e) => e.action),
        ['enter', 'leave', 'enter'],
      );
    });

    it('an unrefreshed member expires with exactly one leave, however many sweeps run at once', async () => {
      const ch = channel();
      const seen = await listen(ch);
      await h.store.apply(
        ch,
        [op('enter', 'gone', 'c1', 'o'), op('enter', 'kept', 'c2', 'o')],
        300,
        100,
      );
      const t0 = Date.now();
      const refresh = setInterval(() => {
        h.store.apply(ch, [op('refresh', 'kept', 'c2', 'o')], 300, 100).catch(() => {});
      }, 100);
      try {
        await eventually(
          async () => {
            await Promise.all([1, 2, 3].map(() => h.store.apply(ch, [], 300, 100)));
            return seen.some((e) => e.action === 'leave');
          },
          3000,
          'the unrefreshed member to leave',
          20,
        );
        const expiredAfter = Date.now() - t0;
        assert.ok(expiredAfter >= 290, `expired after ${expiredAfter} ms, before its TTL`);
        await Promise.all([1, 2, 3].map(() => h.store.apply(ch, [], 300, 100)));
        const page = await h.store.page(ch, { limit: 10 });
        assert.deepEqual(
          page.members.map((m) => (JSON.parse(m) as Event).clientId),
          ['kept'],
        );
        assert.deepEqual(
          seen.filter((e) => e.action === 'leave').map((e) => e.clientId),
          ['gone'],
        );
      } finally {
        clearInterval(refresh);
      }
    });

    it('refuses a member over the limit; pages are complete, without duplicates, and filter by clientId', async () => {
      const ch = channel();
      const ops = Array.from({ length: 1500 }, (_, i) =>
        op('enter', `u${i % 500}`, `c${i}`, 'o', i),
      );
      for (let i = 0; i < ops.length; i += 500)
        await h.store.apply(ch, ops.slice(i, i + 500), 60_000, 1500);
      const over = await h.store.apply(ch, [op('enter', 'late', 'c', 'o')], 60_000, 1500);
      assert.deepEqual(over.results, ['full']);
      const keys = new Set<string>();
      let after: string | undefined;
      let pages = 0;
      do {
        const page = await h.store.page(ch, { limit: 400, after });
        pages++;
        for (const m of page.members) {
          const e = JSON.parse(m) as Event;
          const key = `${e.clientId}/${e.connectionId}`;
          assert.ok(!keys.has(key), `${key} listed twice`);
          keys.add(key);
        }
        after = page.next ?? undefined;
      } while (after !== undefined && pages < 10);
      assert.equal(keys.size, 1500);
      assert.equal(pages, 4);
      const mine = await h.store.page(ch, { limit: 2, clientId: 'u7' });
      assert.equal(mine.members.length, 2);
      const rest = await h.store.page(ch, { limit: 2, clientId: 'u7', after: mine.next ?? '' });
      assert.equal(rest.next, null);
      const all = [...mine.members, ...rest.members].map((m) => JSON.parse(m) as Event);
      assert.deepEqual(all.map((e) => e.connectionId).sort(), ['c1007', 'c507', 'c7']);
      assert.ok(all.every((e) => e.clientId === 'u7'));
    });
  });
}
