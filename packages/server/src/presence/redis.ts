import type { Cluster, Redis } from 'ioredis';
import { connectRedis, type RedisTarget } from '../broker/redis-target.js';
import { createRedisKeys, type RedisKeys } from '../broker/redis-keys.js';
import { presenceLua, presenceStream } from '@switchboard/protocol';
import type {
  ApplyResult,
  MemberOp,
  MembersPage,
  OpResult,
  PageQuery,
  PresenceStore,
  ProducedListener,
} from './presence.js';

/**
 * How the scripts fan out their events: SPUBLISH on Cluster, where the broker holds the presence
 * pub/sub names with SSUBSCRIBE (a plain PUBLISH there reaches no sharded subscriber).
 */
type PublishCommand = 'PUBLISH' | 'SPUBLISH';

/**
 * Shared by both scripts. KEYS: expiry (sorted set: key → expiry ms, Redis clock), info (hash:
 * key → record), order (sorted set: key scored 0), offset (counter), events (pub/sub channel),
 * epoch (names the offset counter's life; kept and expired with it).
 * A record is `owner \n offset \n timestamp \n idJson \n dataJson` (JSON text holds no raw
 * newline); the frames' bytes come from the protocol package (presenceLua). Expiry is by Redis's
 * clock, so nodes' clocks do not matter; scripts that call TIME and
 * then write must be replicated by effects (the default since Redis 5).
 */
const commonLua = (publish: PublishCommand): string => `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local chj = ARGV[1]
local offset = redis.call('GET', KEYS[4])
local epoch = redis.call('GET', KEYS[6])
if not offset or not epoch then
  -- A new life of the channel's presence offset (first use, expiry, a Redis that lost its data):
  -- a new epoch, written with the offset, so a reader's offset from another life never matches.
  epoch = string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
  redis.call('SET', KEYS[4], offset or '0', 'PX', 86400000)
  redis.call('SET', KEYS[6], epoch, 'PX', 86400000)
end
offset = tonumber(offset or '0')
local events = {}
local function parse(rec)
  local a = string.find(rec, '\\n', 1, true)
  local b = string.find(rec, '\\n', a + 1, true)
  local c = string.find(rec, '\\n', b + 1, true)
  local d = string.find(rec, '\\n', c + 1, true)
  return string.sub(rec, 1, a - 1), string.sub(rec, a + 1, b - 1), string.sub(rec, b + 1, c - 1),
    string.sub(rec, c + 1, d - 1), string.sub(rec, d + 1)
end
local function emit(action, idj, data, ts)
  offset = offset + 1
  events[#events + 1] = ${presenceLua.event('action', 'idj', 'data', 'ts', 'offset')}
  return offset
end
local function prune()
  local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
  for _, key in ipairs(dead) do
    local rec = redis.call('HGET', KEYS[2], key)
    if rec then
      local _, _, _, idj, data = parse(rec)
      emit('leave', idj, data, now)
    end
    redis.call('ZREM', KEYS[1], key)
    redis.call('ZREM', KEYS[3], key)
    redis.call('HDEL', KEYS[2], key)
  end
end
local function finish()
  if #events == 0 then return end
  redis.call('SET', KEYS[4], offset, 'PX', 86400000)
  redis.call('PEXPIRE', KEYS[6], 86400000)
  redis.call('${publish}', KEYS[5], ${presenceLua.frame('chj', 'epoch', 'events')})
end
`;

/**
 * Applies ops after pruning. ARGV: channel JSON, ttl ms, max members, then per op: kind (E U L R),
 * key, owner, idJson, dataJson, timestamp. Returns the offset, one result per op, the epoch, then
 * the events.
 */
const applyLua = (publish: PublishCommand): string => `${commonLua(publish)}
local ttl = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
prune()
local out = {0}
local function put(key, owner, ofs, ts, idj, data)
  redis.call('HSET', KEYS[2], key, owner .. '\\n' .. ofs .. '\\n' .. ts .. '\\n' .. idj .. '\\n' .. data)
  redis.call('ZADD', KEYS[1], now + ttl, key)
end
for i = 4, #ARGV, 6 do
  local kind, key, owner, idj, data, ts = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local rec = redis.call('HGET', KEYS[2], key)
  local res = 'ok'
  if kind == 'L' then
    if not rec then res = 'none' else
      local o, _, _, idj0, data0 = parse(rec)
      if o ~= owner then res = 'lost' else
        if data == '' then data = data0 end
        emit('leave', idj0, data, ts)
        redis.call('ZREM', KEYS[1], key)
        redis.call('ZREM', KEYS[3], key)
        redis.call('HDEL', KEYS[2], key)
      end
    end
  elseif rec then
    local o, ofs, ts0, idj0, data0 = parse(rec)
    if kind == 'R' then
      if o ~= owner then res = 'lost' else redis.call('ZADD', KEYS[1], now + ttl, key) end
    else
      if kind == 'U' or data ~= data0 then
        ofs = emit('update', idj, data, ts)
        ts0 = ts
        data0 = data
      end
      put(key, owner, ofs, ts0, idj, data0)
    end
  elseif redis.call('ZCARD', KEYS[1]) >= max then
    res = 'full'
  else
    local ofs = emit('enter', idj, data, ts)
    put(key, owner, ofs, ts, idj, data)
    redis.call('ZADD', KEYS[3], 0, key)
  end
  out[#out + 1] = res
end
for k = 1, 3 do
  if redis.call('PTTL', KEYS[k]) < ttl then redis.call('PEXPIRE', KEYS[k], ttl) end
end
finish()
out[1] = offset
out[#out + 1] = epoch
for _, e in ipairs(events) do out[#out + 1] = e end
return out
`;

/**
 * One page after pruning. ARGV: channel JSON, min (ZRANGEBYLEX bound), max bound, limit. Returns
 * the offset, the next cursor ('' when last), the epoch, the number of events, the events, then
 * member JSONs.
 */
const pageLua = (publish: PublishCommand): string => `${commonLua(publish)}
prune()
finish()
local limit = tonumber(ARGV[4])
local keys = redis.call('ZRANGEBYLEX', KEYS[3], ARGV[2], ARGV[3], 'LIMIT', 0, limit + 1)
local out = {offset, '', epoch, #events}
for _, e in ipairs(events) do out[#out + 1] = e end
local n = math.min(limit, #keys)
for i = 1, n do
  local rec = redis.call('HGET', KEYS[2], keys[i])
  if rec then
    local _, ofs, ts, idj, data = parse(rec)
    out[#out + 1] = ${presenceLua.member('idj', 'data', 'ts', 'ofs')}
  end
end
if #keys > limit then out[2] = keys[n] end
return out
`;

const OP_CODE = { enter: 'E', update: 'U', leave: 'L', refresh: 'R' } as const;

interface PresenceScripts {
  sbPresenceApply(...args: (string | number)[]): Promise<(string | number)[]>;
  sbPresencePage(...args: (string | number)[]): Promise<(string | number)[]>;
}

/**
 * Presence in Redis, shared by every node: per channel an expiry sorted set, a record hash, a
 * lexicographic sorted set for pages and an offset counter, all under the channel's hash tag
 * (redis-keys.ts). Every change and its event are one script: the event is (S)PUBLISHed on the
 * channel's presence pub/sub channel in offset order, and the broker delivers it to the nodes
 * that subscribed `[presence]<channel>`.
 */
export class RedisPresenceStore implements PresenceStore {
  readonly name = 'redis';
  readonly #redis: (Redis | Cluster) & PresenceScripts;
  readonly #keys: RedisKeys;
  #produced: ProducedListener | undefined;

  constructor(url: string | RedisTarget, prefix: string) {
    const target: RedisTarget = typeof url === 'string' ? { mode: 'single', url } : url;
    this.#redis = connectRedis(target, {
      connectionName: 'switchboard-presence',
      maxRetriesPerRequest: 1,
      commandTimeout: 5000,
    }) as (Redis | Cluster) & PresenceScripts;
    this.#redis.on('error', () => {
      // reconnects by itself; failed calls surface as errors to the caller
    });
    const publish: PublishCommand = target.mode === 'cluster' ? 'SPUBLISH' : 'PUBLISH';
    this.#redis.defineCommand('sbPresenceApply', { numberOfKeys: 6, lua: applyLua(publish) });
    this.#redis.defineCommand('sbPresencePage', { numberOfKeys: 6, lua: pageLua(publish) });
    this.#keys = createRedisKeys(prefix);
  }

  /** The store's connection, shared with the occupancy store (one connection for both). */
  get connection(): Redis | Cluster {
    return this.#redis;
  }

  #channelKeys(channel: string): string[] {
    const k = this.#keys;
    return [
      k.presenceMembers(channel),
      k.presenceInfo(channel),
      k.presenceOrder(channel),
      k.presenceOffset(channel),
      k.pubsub(presenceStream(channel)),
      k.presenceEpoch(channel),
    ];
  }

  async apply(
    channel: string,
    ops: readonly MemberOp[],
    ttlMs: number,
    maxMembers: number,
  ): Promise<ApplyResult> {
    const args: (string | number)[] = [
      ...this.#channelKeys(channel),
      JSON.stringify(channel),
      ttlMs,
      maxMembers,
    ];
    for (const op of ops)
      args.push(OP_CODE[op.kind], op.key, op.owner, op.idJson, op.dataJson, op.timestamp);
    const reply = await this.#redis.sbPresenceApply(...args);
    this.#report(channel, reply.slice(2 + ops.length));
    return {
      offset: Number(reply[0]),
      results: reply.slice(1, 1 + ops.length) as OpResult[],
      epoch: String(reply[1 + ops.length]),
    };
  }

  async page(channel: string, query: PageQuery): Promise<MembersPage> {
    // ZRANGEBYLEX bounds: '(' excludes, '[' includes; a clientId filter is the key range
    // [clientId\0, clientId\x01).
    const min =
      query.after !== undefined
        ? '(' + query.after
        : query.clientId !== undefined
          ? '[' + query.clientId + '\u0000'
          : '-';
    const max = query.clientId !== undefined ? '(' + query.clientId + '\u0001' : '+';
    const reply = await this.#redis.sbPresencePage(
      ...this.#channelKeys(channel),
      JSON.stringify(channel),
      min,
      max,
      query.limit,
    );
    const next = String(reply[1]);
    const events = 4 + Number(reply[3]);
    this.#report(channel, reply.slice(4, events));
    return {
      offset: Number(reply[0]),
      next: next === '' ? null : next,
      epoch: String(reply[2]),
      members: reply.slice(events).map(String),
    };
  }

  onProduced(listener: ProducedListener): void {
    this.#produced = listener;
  }

  #report(channel: string, events: readonly (string | number)[]): void {
    if (events.length > 0) this.#produced?.(channel, events.map(String));
  }

  async close(): Promise<void> {
    try {
      await this.#redis.quit();
    } catch {
      this.#redis.disconnect();
    }
  }
}
