/**
 * The Broker and presence-store conformance suites against Redis Sentinel (1 master + 1 replica +
 * 3 sentinels) and the presence suite against Redis Cluster (3 masters + 3 replicas), real
 * redis-server processes from redis-kit.ts. The Broker suite on Cluster is broker-redis-cluster.test.ts.
 * With Sentinel the broker WAITs for the replica (redisWaitReplicas defaults to 1), so the suite
 * also checks that replicated acknowledgements change nothing a subscriber sees.
 */
import { after } from 'node:test';
import { Cluster, Redis } from 'ioredis';
import { presenceStream } from '@switchboard/protocol';
import { RedisBroker, createLogger } from '../src/index.js';
import { RedisPresenceStore } from '../src/presence/redis.js';
import { createRedisKeys } from '../src/broker/redis-keys.js';
import type { RedisTarget } from '../src/broker/redis-target.js';
import { runBrokerSuite } from './conformance/broker.js';
import { runPresenceSuite } from './conformance/presence.js';
import { requireBinary } from './helpers.js';
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

  runPresenceSuite('RedisPresenceStore on Sentinel', () => {
    const store = new RedisPresenceStore(target, 'confs:');
    const sub = new Redis({ port: kit.currentMaster().port });
    const keys = createRedisKeys('confs:');
    const listeners = new Map<string, (frame: string) => void>();
    sub.on('message', (pubsub: string, payload: string) => listeners.get(pubsub)?.(payload));
    return {
      store,
      events: async (channel, onFrame) => {
        const pubsub = keys.pubsub(presenceStream(channel));
        listeners.set(pubsub, onFrame);
        await sub.subscribe(pubsub);
      },
      close: async () => {
        sub.disconnect();
        await store.close();
      },
    };
  });

  runPresenceSuite('RedisPresenceStore on Cluster', () => {
    const seeds = cluster.seeds.slice(0, 3).map((s) => {
      const i = s.lastIndexOf(':');
      return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
    });
    const store = new RedisPresenceStore({ mode: 'cluster', seeds }, 'confc:');
    // The scripts SPUBLISH on the channel's slot: a sharded subscriber there reads them.
    const sub = new Cluster(seeds, { shardedSubscribers: true });
    const keys = createRedisKeys('confc:');
    const listeners = new Map<string, (frame: string) => void>();
    sub.on('smessage', (pubsub: string, payload: string) => listeners.get(pubsub)?.(payload));
    return {
      store,
      events: async (channel, onFrame) => {
        const pubsub = keys.pubsub(presenceStream(channel));
        listeners.set(pubsub, onFrame);
        await sub.ssubscribe(pubsub);
      },
      close: async () => {
        sub.disconnect();
        await store.close();
      },
    };
  });
}
