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

    it('answers outcome unknown while the replica does not confirm, stores once on the retry, and starts a new epoch after a promotion', async () => {
      const broker = new RedisBroker({
        url: '',
        target,
        prefix: 'wait:',
        waitTimeoutMs: 300,
        logger: createLogger('silent'),
      });
      await broker.start({ onPublication() {}, onResubscribed() {}, onControl() {} });
      try {
        const first = await broker.publish(req('w', 'a'));
        assert.equal(first.offset, 1);
        const replica = kit.currentMaster() === kit.master ? kit.replica : kit.master;
        // SIGSTOP: the replica stays "online" for the master, but no longer acknowledges.
        process.kill(replica.pid, 'SIGSTOP');
        let refused: unknown;
        try {
          await broker.publish(req('w', 'b'));
        } catch (err) {
          refused = err;
        } finally {
          process.kill(replica.pid, 'SIGCONT');
        }
        assert.ok(refused instanceof PublishError, String(refused));
        assert.equal(refused.outcome, 'unknown', refused.message);
        // Refused unsent (not-stored) until the master is seen with its replica again (≤ 1 s).
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

        const old = kit.currentMaster();
        (kit.sentinels[0] as (typeof kit.sentinels)[number]).cli('SENTINEL', 'FAILOVER', kit.name);
        await eventually(() => kit.currentMaster() !== old, 15_000, 'the sentinels to switch', 50);
        let after: Awaited<ReturnType<RedisBroker['publish']>> | undefined;
        await eventually(
          async () => {
            after = await broker.publish(req('w', 'c')).catch(() => undefined);
            return after !== undefined;
          },
          15_000,
          'a publish on the new master',
          100,
        );
        assert.ok(after);
        assert.notEqual(after.epoch, first.epoch, 'a new epoch under the new master');
        assert.equal(after.offset, 3, 'offsets carry on');
        const history = await broker.history('w', { limit: 10 });
        assert.equal(history.position.epoch, after.epoch);
        assert.equal(history.entries.length, 3, 'the stored history is kept');
      } finally {
        await broker.close();
      }
    });
  });
}
