import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { RedisClusterBroker, createLogger } from '../src/index.js';
import { runBrokerSuite } from './conformance/broker.js';
import { requireBinary } from './helpers.js';
import { startRedisCluster } from './redis-kit.js';

const missing = requireBinary('redis-server');
if (missing === false) {
  const cluster = await startRedisCluster();
  after(() => cluster.stop());
  runBrokerSuite(
    'RedisClusterBroker',
    () =>
      Promise.resolve({
        broker: new RedisClusterBroker({
          seeds: cluster.seeds.slice(0, 2),
          prefix: 'conf:',
          logger: createLogger('silent'),
        }),
        wipe: () => {
          for (const n of cluster.nodes) n.cli('FLUSHALL');
          return Promise.resolve();
        },
      }),
    { lossy: true },
  );

  describe('RedisClusterBroker readiness per shard', () => {
    it('stays ready and probes fine while a shard none of its channels live on is down', async () => {
      const broker = new RedisClusterBroker({
        seeds: cluster.seeds.slice(0, 2),
        prefix: 'ready:',
        logger: createLogger('silent'),
      });
      await broker.start({ onPublication() {}, onResubscribed() {}, onControl() {} });
      try {
        const channel = 'ready-ch';
        await broker.subscribe(channel);
        const mine = cluster.masterOf(cluster.slotOf(`ready:p:{${channel}}`));
        const other = cluster.nodes.find(
          (n) => n.alive && n !== mine && n.cli('ROLE').startsWith('master'),
        );
        assert.ok(other, 'another master');
        // SIGSTOP, not a kill: the shard stops answering without a failover during the test.
        process.kill(other.pid, 'SIGSTOP');
        try {
          await broker.probe();
          assert.equal(broker.ready, true, 'ready: its own shard answers');
        } finally {
          process.kill(other.pid, 'SIGCONT');
        }
        process.kill(mine.pid, 'SIGSTOP');
        try {
          await assert.rejects(
            Promise.race([
              broker.probe(),
              new Promise((_, reject) => setTimeout(() => reject(new Error('no answer')), 1500)),
            ]),
            "the probe fails while its channel's shard does not answer",
          );
        } finally {
          process.kill(mine.pid, 'SIGCONT');
        }
      } finally {
        await broker.close();
      }
    });
  });
}
