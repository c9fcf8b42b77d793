/**
 * The frame bytes that Redis scripts build (the publish scripts close a message with its position,
 * the presence scripts build their event frames) come from the protocol package as Lua
 * expressions; here both sides run and must agree byte for byte.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import {
  encodeMemberId,
  encodePositionSuffix,
  encodePresenceEvent,
  encodePresenceFrame,
  encodePresenceMember,
  positionSuffixLua,
  presenceLua,
} from '@switchboard/protocol';
import { channelKeysLua, createRedisKeys } from '../src/broker/redis-keys.js';
import { requireBinary, startRedis, type RedisProcess } from './helpers.js';

const skip = requireBinary('redis-server');

describe('frames built inside Redis', { skip }, () => {
  let redis: RedisProcess;
  let r: Redis;
  before(async () => {
    redis = await startRedis();
    r = new Redis(redis.url);
  });
  after(async () => {
    await r?.quit();
    await redis?.stop();
  });

  it("the publish scripts' position suffix is encodePositionSuffix's bytes", async () => {
    const lua = `local offset, epoch = tonumber(ARGV[1]), ARGV[2]
return ${positionSuffixLua('offset', 'epoch')}`;
    for (const [offset, epoch] of [
      [1, 'aB3_-x'],
      [9007199254740, 'E'],
    ] as const)
      assert.equal(await r.eval(lua, 0, offset, epoch), encodePositionSuffix(offset, epoch));
  });

  it("the Redis scripts' presence frames are the protocol encoders' bytes", async () => {
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
  it("the batch publish script's key names are createRedisKeys' names", async () => {
    const lua = `local P, ch, id = ARGV[1], ARGV[2], ARGV[3]
return {${channelKeysLua.meta('P', 'ch')}, ${channelKeysLua.stream('P', 'ch')}, ${channelKeysLua.pubsub('P', 'ch')}, ${channelKeysLua.dedupe('P', 'ch', 'id')}}`;
    for (const [prefix, channel, id] of [
      ['sb:', 'room:1', 'm-1'],
      ['', 'a/b=c,d~e@f.g_h-', 'x'],
      ['deploy{x}:', 'Z', 'id with spaces'],
    ] as const) {
      const keys = createRedisKeys(prefix);
      assert.deepEqual(await r.eval(lua, 0, prefix, channel, id), [
        keys.meta(channel),
        keys.stream(channel),
        keys.pubsub(channel),
        keys.dedupe(channel, id),
      ]);
    }
  });
});
