/**
 * The Broker and presence-store conformance suites against Redis Sentinel (1 master + 1 replica +
 * 3 sentinels) and the presence suite against Redis Cluster (3 masters + 3 replicas), real
 * redis-server processes from redis-kit.ts. The Broker suite on Cluster is broker-redis-cluster.test.ts.
 * With Sentinel the broker WAITs for the replica (redisWaitReplicas defaults to 1), so the suite
 * also checks that replicated acknowledgements change nothing a subscriber sees.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { encodeMessageHead } from '@switchboard/protocol';
import { RedisBroker, createLogger } from '../src/index.js';
import type { RedisTarget } from '../src/broker/redis-target.js';
import { runBrokerSuite } from './conformance/broker.js';
import { redisPresenceHarness, runPresenceSuite } from './conformance/presence.js';
import { eventually, requireBinary } from './helpers.js';
import { PublishError } from '../src/broker/publish-error.js';
import type { PublishRequest } from '../src/broker/broker.js';
import { startRedisCluster, startSentinelKit } from './redis-kit.js';

if (requireBinary('redis-server') === false) {
  const kit = await startSentinelKit();
  const cluster = await startRedisCluster();
  after(() => Promise.all([kit.stop(), cluster.stop()]));
  const target: RedisTarget = {
    mode: 'sentinel',
    sentinels: kit.seeds.map((s) => {
      const i = s.lastIndexOf(':');
      return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
    }),
    name: kit.name,
    url: undefined,
  };

  runBrokerSuite(
    'RedisBroker on Sentinel',
    () =>
      Promise.resolve({
        broker: new RedisBroker({
          url: '',
          target,
          prefix: 'confs:',
          logger: createLogger('silent'),
        }),
        wipe: () => {
          kit.currentMaster().cli('FLUSHALL');
          return Promise.resolve();
        },
      }),
    { lossy: true },
  );

  runPresenceSuite('RedisPresenceStore on Sentinel', () =>
    redisPresenceHarness(target, 'confs:', new Redis({ port: kit.currentMaster().port })),
  );

  runPresenceSuite('RedisPresenceStore on Cluster', () => {
    const seeds = cluster.seeds.slice(0, 3).map((s) => {
      const i = s.lastIndexOf(':');
      return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
    });
    const sub = new Cluster(seeds, { shardedSubscribers: true });
    return redisPresenceHarness({ mode: 'cluster', seeds }, 'confc:', sub);
  });

  // Last: it fails the kit over.
  describe('RedisBroker on Sentinel: WAIT and the epoch per master lineage', () => {
    const req = (channel: string, id: string): PublishRequest => ({
      channel,
      id,
      head: encodeMessageHead({ channel, dataJson: '1', id, timestamp: 1 }),
      history: { size: 100, ttlMs: 60_000 },
      dedupeMs: 60_000,
    });

    it('starts a new epoch for a channel last written under a master outside the lineage', async () => {
      const broker = new RedisBroker({
        url: '',
        target,
        prefix: 'lin:',
        logger: createLogger('silent'),
      });
      await broker.start({ onPublication() {}, onResubscribed() {}, onControl() {} });
      try {
        const first = await broker.publish(req('l', 'a'));
        // As if the channel had last been written under an unrelated master.
        const master = new Redis({ port: kit.currentMaster().port, lazyConnect: true });
        await master.connect();
        await master.hset('lin:m:{l}', 'r', 'f'.repeat(40));
        master.disconnect();
        const next = await broker.publish(req('l', 'b'));
        assert.notEqual(next.epoch, first.epoch, 'a new epoch');
        assert.equal(next.offset, 2, 'offsets carry on');
      } finally {
        await broker.close();
      }
    });

    it('answers outcome unknown while the replica does not confirm yet fans the message out, in order, once it does; stores once on the retry; keeps the epoch across a promotion', async () => {
      const seen: number[] = [];
      const broker = new RedisBroker({
        url: '',
        target,
        prefix: 'wait:',
        waitTimeoutMs: 300,
        logger: createLogger('silent'),
      });
      await broker.start({
        onPublication(channel, _frame, offset) {
          if (channel === 'w' && offset !== undefined) seen.push(offset);
        },
        onResubscribed() {},
        onControl() {},
      });
      try {
        await broker.subscribe('w');
        const first = await broker.publish(req('w', 'a'));
        assert.equal(first.offset, 1);
        await eventually(() => seen.includes(1), 2000, 'the first message delivered');
        const replica = kit.currentMaster() === kit.master ? kit.replica : kit.master;
        // SIGSTOP: the replica stays "online" for the master, but no longer acknowledges.
        process.kill(replica.pid, 'SIGSTOP');
        let refused: unknown;
        let stopped = true;
        try {
          try {
            await broker.publish(req('w', 'b'));
          } catch (err) {
            refused = err;
          }
          assert.ok(refused instanceof PublishError, String(refused));
          assert.equal(refused.outcome, 'unknown', refused.message);
          // Stored but not replicated: no subscriber may see it yet (a failover could discard it).
          await new Promise((r) => setTimeout(r, 500));
          assert.deepEqual(seen, [1], 'not fanned out before a replica holds it');
          // Nor read: a history page or a resume must not hand it out before a replica holds it.
          await assert.rejects(broker.history('w', { limit: 10 }), /did not confirm/);
          process.kill(replica.pid, 'SIGCONT');
          stopped = false;
          // Held, not dropped: it goes out at the next confirming WAIT, without any retry.
          await eventually(() => seen.includes(2), 5000, 'the held message delivered');
          assert.deepEqual(seen, [1, 2]);
          const read = await broker.history('w', { limit: 10 });
          assert.deepEqual(
            read.entries.map((e) => e.offset),
            [1, 2],
            'read once the replica confirms',
          );
        } finally {
          if (stopped) process.kill(replica.pid, 'SIGCONT');
        }
        // The retry (same id) is stored once and gets the original position back.
        let retried: Awaited<ReturnType<RedisBroker['publish']>> | undefined;
        await eventually(
          async () => {
            retried = await broker.publish(req('w', 'b')).catch((err: unknown) => {
              assert.ok(err instanceof PublishError && err.outcome === 'not-stored', String(err));
              return undefined;
            });
            return retried !== undefined;
          },
          5000,
          'the retry to be stored',
          100,
        );
        assert.deepEqual(retried, { offset: 2, epoch: first.epoch, duplicate: true });
        const third = await broker.publish(req('w', 'c'));
        assert.equal(third.offset, 3);
        await eventually(() => seen.includes(3), 2000, 'the third message delivered');
        // A retry fans the stored entry out again (subscribers drop an offset they have): never
        // anything out of order.
        assert.deepEqual([...new Set(seen)], [1, 2, 3]);
        for (let i = 1; i < seen.length; i++)
          assert.ok((seen[i] as number) >= (seen[i - 1] as number), `in order: ${seen.join(',')}`);

        const old = kit.currentMaster();
        (kit.sentinels[0] as (typeof kit.sentinels)[number]).cli('SENTINEL', 'FAILOVER', kit.name);
        await eventually(() => kit.currentMaster() !== old, 15_000, 'the sentinels to switch', 50);
        let after: Awaited<ReturnType<RedisBroker['publish']>> | undefined;
        await eventually(
          async () => {
            after = await broker.publish(req('w', 'd')).catch(() => undefined);
            return after !== undefined;
          },
          15_000,
          'a publish on the new master',
          100,
        );
        assert.ok(after);
        // The promoted replica continues the old master's stream (master_replid2): same epoch.
        assert.equal(after.epoch, first.epoch, 'the epoch carries on across the promotion');
        assert.equal(after.offset, 4, 'offsets carry on');
        const history = await broker.history('w', { limit: 10 });
        assert.equal(history.position.epoch, after.epoch);
        assert.deepEqual(
          history.entries.map((e) => e.offset),
          [1, 2, 3, 4],
          'the stored history is kept',
        );
      } finally {
        await broker.close();
      }
    });
  });
}
