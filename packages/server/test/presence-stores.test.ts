import { after } from 'node:test';
import { Redis } from 'ioredis';
import { presenceStream } from '@switchboard/protocol';
import { createRedisKeys } from '../src/broker/redis-keys.js';
import { MemoryPresenceStore } from '../src/presence/memory.js';
import { RedisPresenceStore } from '../src/presence/redis.js';
import { runPresenceSuite } from './conformance/presence.js';
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
  runPresenceSuite('RedisPresenceStore', () => {
    const store = new RedisPresenceStore(redis.url, 'conf:');
    // Events are PUBLISHed by the store's scripts; the broker would deliver them to the nodes.
    const sub = new Redis(redis.url);
    const keys = createRedisKeys('conf:');
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
}
