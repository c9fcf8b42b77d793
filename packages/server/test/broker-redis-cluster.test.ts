import { after } from 'node:test';
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
}
