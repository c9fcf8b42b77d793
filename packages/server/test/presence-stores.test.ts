import assert from 'node:assert/strict';
import { after, it } from 'node:test';
import {
  encodeMemberId,
  encodePresenceEvent,
  encodePresenceFrame,
  encodePresenceMember,
  presenceLua,
} from '@switchboard/protocol';
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

  it("the Redis scripts' presence frames are the protocol encoders' bytes", async () => {
    const r = new Redis(redis.url);
    after(() => r.quit());
    const id = encodeMemberId('ann "the" ünïcode', 'c\\1');
    const data = '{"x":[1,"é\\n"]}';
    const lua = `local action, idj, data, ts, offset, chj, epoch = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local events = { ${presenceLua.event('action', 'idj', 'data', 'ts', 'offset')}, ${presenceLua.event('action', 'idj', 'data', 'ts', 'offset')} }
return { events[1], ${presenceLua.member('idj', 'data', 'ts', 'offset')}, ${presenceLua.frame('chj', 'epoch', 'events')} }`;
    const ts = 1765000000123;
    const out = (await r.eval(
      lua,
      0,
      'update',
      id,
      data,
      ts,
      42,
      JSON.stringify('room:ü'),
      'e1f',
    )) as string[];
    const event = encodePresenceEvent('update', id, data, ts, 42);
    assert.deepEqual(out, [
      event,
      encodePresenceMember(id, data, ts, 42),
      encodePresenceFrame('room:ü', 'e1f', [event, event]),
    ]);
  });
}
