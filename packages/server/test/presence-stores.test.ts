import { after } from 'node:test';
import { MemoryPresenceStore } from '../src/presence/memory.js';
import { RedisPresenceStore } from '../src/presence/redis.js';
import { runPresenceSuite } from './conformance/presence.js';
import { requireBinary, startRedis } from './helpers.js';

runPresenceSuite('MemoryPresenceStore', () => new MemoryPresenceStore());

if (requireBinary('redis-server') === false) {
  const redis = await startRedis();
  after(() => redis.stop());
  runPresenceSuite('RedisPresenceStore', () => new RedisPresenceStore(redis.url, 'conf:'));
}
