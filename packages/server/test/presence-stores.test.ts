import { after } from 'node:test';
import { Redis } from 'ioredis';
import { MemoryPresenceStore } from '../src/presence/memory.js';
import { redisPresenceHarness, runPresenceSuite } from './conformance/presence.js';
import { requireBinary, startRedis } from './helpers.js';

runPresenceSuite('MemoryPresenceStore', () => {
  const store = new MemoryPresenceStore();
  const listeners = new Map<string, (frame: string) => void>();
  store.listen((channel, frame) => listeners.get(channel)?.(frame.toString()));
  return {
    store,
    events: (channel, onFrame) => {
      listeners.set(channel, onFrame);
      return Promise.resolve();
    },
    close: () => store.close(),
  };
});

if (requireBinary('redis-server') === false) {
  const redis = await startRedis();
  after(() => redis.stop());
  runPresenceSuite('RedisPresenceStore', () =>
    redisPresenceHarness(redis.url, 'conf:', new Redis(redis.url)),
  );
}
