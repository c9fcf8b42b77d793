import type { Cluster, Redis } from 'ioredis';
import { connectRedis, type RedisTarget } from '../broker/redis-target.js';
import { createRedisKeys, type RedisKeys } from '../broker/redis-keys.js';
import type { PresenceStore } from './presence.js';

/**
 * Redis time in ms, inside a script: every node's entries expire by the same clock. Scripts that
 * call TIME and then write must be replicated by effects (the default since Redis 5).
 */
const NOW_LUA = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function prune(zset, hash)
  local dead = redis.call('ZRANGEBYSCORE', zset, '-inf', now)
  if #dead == 0 then return end
  redis.call('ZREMRANGEBYSCORE', zset, '-inf', now)
  for i = 1, #dead, 1000 do
    redis.call('HDEL', hash, unpack(dead, i, math.min(i + 999, #dead)))
  end
end
`;

/**
 * Add or refresh one member. KEYS: members (sorted set: client id scored by expiry in ms), info
 * (hash: client id → member JSON). ARGV: client id, member JSON, ttl ms. Both keys expire no
 * sooner than the newest entry, so a channel nobody refreshes any more leaves nothing behind.
 */
const ADD_LUA = `${NOW_LUA}
local ttl = tonumber(ARGV[3])
prune(KEYS[1], KEYS[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
for _, k in ipairs(KEYS) do
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
return 1
`;

/** The live members' JSON. KEYS: members, info. Expired entries are removed on the way. */
const GET_LUA = `${NOW_LUA}
prune(KEYS[1], KEYS[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local out = {}
for i = 1, #ids, 1000 do
  local infos = redis.call('HMGET', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
  for _, v in ipairs(infos) do
    if v then out[#out + 1] = v end
  end
end
return out
`;

interface PresenceScripts {
  sbPresenceAdd(members: string, info: string, id: string, json: string, ttlMs: number): Promise<1>;
  sbPresenceGet(members: string, info: string): Promise<string[]>;
}

/**
 * Presence in Redis, shared by every node: per channel a sorted set of client ids scored by expiry
 * and a hash of their member JSON, both under the channel's hash tag (redis-keys.ts). Expiry is
 * by Redis's clock, so nodes' clocks do not matter.
 */
export class RedisPresenceStore implements PresenceStore {
  readonly name = 'redis';
  readonly #redis: (Redis | Cluster) & PresenceScripts;
  readonly #keys: RedisKeys;

  constructor(url: string | RedisTarget, prefix: string) {
    this.#redis = connectRedis(typeof url === 'string' ? { mode: 'single', url } : url, {
      connectionName: 'switchboard-presence',
      maxRetriesPerRequest: 1,
      commandTimeout: 5000,
    }) as (Redis | Cluster) & PresenceScripts;
    this.#redis.on('error', () => {
      // reconnects by itself; failed calls surface as errors to the caller
    });
    this.#redis.defineCommand('sbPresenceAdd', { numberOfKeys: 2, lua: ADD_LUA });
    this.#redis.defineCommand('sbPresenceGet', { numberOfKeys: 2, lua: GET_LUA });
    this.#keys = createRedisKeys(prefix);
  }

  async add(channel: string, clientId: string, info: string, ttlMs: number): Promise<void> {
    const k = this.#keys;
    await this.#redis.sbPresenceAdd(
      k.presenceMembers(channel),
      k.presenceInfo(channel),
      clientId,
      info,
      ttlMs,
    );
  }

  async remove(channel: string, clientId: string): Promise<void> {
    const k = this.#keys;
    await this.#redis
      .multi()
      .zrem(k.presenceMembers(channel), clientId)
      .hdel(k.presenceInfo(channel), clientId)
      .exec();
  }

  get(channel: string): Promise<string[]> {
    const k = this.#keys;
    return this.#redis.sbPresenceGet(k.presenceMembers(channel), k.presenceInfo(channel));
  }

  async close(): Promise<void> {
    try {
      await this.#redis.quit();
    } catch {
      this.#redis.disconnect();
    }
  }
}
