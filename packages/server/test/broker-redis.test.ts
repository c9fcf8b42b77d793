import { after } from 'node:test';
import { RedisBroker, createLogger } from '../src/index.js';
import { runBrokerSuite } from './conformance/broker.js';
import { requireBinary, startRedis, type RedisProcess } from './helpers.js';

const missing = requireBinary('redis-server');
if (missing === false) {
  const redis: RedisProcess = await startRedis();
  after(() => redis.stop());
  runBrokerSuite(
    'RedisBroker',
    () =>
      Promise.resolve({
        broker: new RedisBroker({
          url: redis.url,
          prefix: 'conf:',
          logger: createLogger('silent'),
        }),
        wipe: () => {
          redis.cli('FLUSHALL');
          return Promise.resolve();
        },
      }),
    { lossy: true },
  );
}
