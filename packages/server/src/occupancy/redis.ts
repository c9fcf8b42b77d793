import { Cluster, type Redis } from 'ioredis';
import { createRedisKeys, type RedisKeys } from '../broker/redis-keys.js';
import {
  PUBLISHERS_WINDOW_MS,
  type ChannelDetails,
  type OccupancyStore,
  type Share,
  type Transition,
} from './occupancy.js';

/** Sum of the subscribers of every node's share (`"<connections> <subscribers>"`). */
const TOTALS_LUA = `
local function totals()
  local vals = redis.call('HVALS', KEYS[1])
  local c, s = 0, 0
  for _, v in ipairs(vals) do
    local sp = string.find(v, ' ', 1, true)
    c = c + tonumber(string.sub(v, 1, sp - 1))
    s = s + tonumber(string.sub(v, sp + 1))
  end
  return c, s
end
`;

/**
 * Replaces one node's share. KEYS: share hash, publishers sorted set. ARGV: node, connections,
 * subscribers, then publisher ids. Returns 1 when the channel became occupied, -1 vacated, 0.
 * Atomic, so of all the nodes writing a channel exactly one sees each crossing of zero.
 */
const WRITE_LUA = `
if redis.replicate_commands then redis.replicate_commands() end
${TOTALS_LUA}
local _, before = totals()
local c, s = tonumber(ARGV[2]), tonumber(ARGV[3])
if c == 0 and s == 0 then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], c .. ' ' .. s) end
local _, after = totals()
if #ARGV > 3 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for i = 4, #ARGV do redis.call('ZADD', KEYS[2], now, ARGV[i]) end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ${PUBLISHERS_WINDOW_MS})
  redis.call('PEXPIRE', KEYS[2], ${PUBLISHERS_WINDOW_MS + 1000})
end
if before == 0 and after > 0 then return 1 end
if before > 0 and after == 0 then return -1 end
return 0
`;

/**
 * KEYS: share hash, publishers, presence expiry set, stream meta. Returns connections,
 * subscribers, publishers in the window, live presence members, epoch, offset.
 */
const READ_LUA = `
${TOTALS_LUA}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local c, s = totals()
local p = redis.call('ZCOUNT', KEYS[2], '(' .. (now - ${PUBLISHERS_WINDOW_MS}), '+inf')
local m = redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')
local meta = redis.call('HMGET', KEYS[4], 'e', 'o')
return {c, s, p, m, meta[1] or '', meta[2] or ''}
`;

/** KEYS: live nodes. ARGV: node, ttl ms. Returns 1 when the node was still listed. */
const HEARTBEAT_LUA = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if known then return 1 end
return 0
`;

/**
 * KEYS: live nodes, nodes being reaped. ARGV: how long a claim holds (ms). Moves the nodes whose
 * heartbeat lapsed, and those whose claim lapsed (their reaper died), to the reaping set with a
 * claim until now + ARGV[1], and returns them: one survivor at a time removes a node's shares.
 */
const CLAIM_LUA = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 16)
local stuck = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 16)
for _, n in ipairs(stuck) do dead[#dead + 1] = n end
for _, n in ipairs(dead) do
  redis.call('ZREM', KEYS[1], n)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), n)
end
return dead
`;

interface OccupancyScripts {
  sbOccWrite(...args: (string | number)[]): Promise<number>;
  sbOccRead(...args: string[]): Promise<(string | number)[]>;
  sbOccHeartbeat(...args: (string | number)[]): Promise<number>;
  sbOccClaim(nodes: string, reaping: string, claimMs: number): Promise<string[]>;
}

const SCAN_COUNT = 1000;
/** How long a reaper holds a dead node before another survivor may take it over. */
const CLAIM_MS = 30_000;

/** Redis glob metacharacters escaped, so operator and client text only ever matches itself. */
function globEscape(text: string): string {
  return text.replace(/[*?[\]\\^]/g, '\\$&');
}

/**
 * Occupancy in Redis, shared by every node. Per channel, under its hash tag: a hash of the
 * nodes' shares and a sorted set of recent publishers. Per deployment: a sorted set of live
 * nodes and, per node, the set of channels it holds a share of, so a survivor can remove the
 * shares of a node that died. The listing scans the stream metadata, share and presence keys
 * (on every master of a Cluster).
 */
export class RedisOccupancyStore implements OccupancyStore {
  readonly name = 'redis';
  readonly #redis: (Redis | Cluster) & OccupancyScripts;
  readonly #keys: RedisKeys;

  /** `connection` is shared (the presence store's): close() leaves it to its owner. */
  constructor(connection: Redis | Cluster, prefix: string) {
    this.#redis = connection as (Redis | Cluster) & OccupancyScripts;
    this.#redis.defineCommand('sbOccWrite', { numberOfKeys: 2, lua: WRITE_LUA });
    this.#redis.defineCommand('sbOccRead', { numberOfKeys: 4, lua: READ_LUA });
    this.#redis.defineCommand('sbOccHeartbeat', { numberOfKeys: 1, lua: HEARTBEAT_LUA });
    this.#redis.defineCommand('sbOccClaim', { numberOfKeys: 2, lua: CLAIM_LUA });
    this.#keys = createRedisKeys(prefix);
  }

  async write(node: string, shares: readonly Share[]): Promise<Transition[]> {
    const k = this.#keys;
    const held = shares.filter((s) => s.connections > 0 || s.subscribers > 0);
    const nodeSet = k.occupancyNodeChannels(node);
    // Listed before the share exists and unlisted after it is gone: a reaper always finds it.
    if (held.length > 0) await this.#redis.sadd(nodeSet, ...held.map((s) => s.channel));
    const results = await Promise.all(
      shares.map((s) =>
        this.#redis.sbOccWrite(
          k.occupancy(s.channel),
          k.occupancyPublishers(s.channel),
          node,
          s.connections,
          s.subscribers,
          ...s.publishers,
        ),
      ),
    );
    const released = shares.filter((s) => s.connections === 0 && s.subscribers === 0);
    if (released.length > 0) await this.#redis.srem(nodeSet, ...released.map((s) => s.channel));
    const out: Transition[] = [];
    results.forEach((r, i) => {
      if (r !== 0) out.push({ channel: (shares[i] as Share).channel, occupied: r > 0 });
    });
    return out;
  }

  async heartbeat(node: string, ttlMs: number): Promise<boolean> {
    return (await this.#redis.sbOccHeartbeat(this.#keys.occupancyNodes(), node, ttlMs)) === 1;
  }

  async reap(): Promise<Transition[]> {
    const k = this.#keys;
    const out: Transition[] = [];
    const reaping = k.occupancyReaping();
    const dead = await this.#redis.sbOccClaim(k.occupancyNodes(), reaping, CLAIM_MS);
    for (const node of dead) {
      const set = k.occupancyNodeChannels(node);
      let cursor = '0';
      do {
        const [next, channels] = await this.#redis.sscan(set, cursor, 'COUNT', SCAN_COUNT);
        cursor = next;
        const shares = channels.map((channel) => ({
          channel,
          connections: 0,
          subscribers: 0,
          publishers: [],
        }));
        out.push(...(await this.write(node, shares)));
      } while (cursor !== '0');
      await this.#redis.del(set);
      await this.#redis.zrem(reaping, node);
    }
    return out;
  }

  async read(channels: readonly string[]): Promise<ChannelDetails[]> {
    const k = this.#keys;
    const replies = await Promise.all(
      channels.map((c) =>
        this.#redis.sbOccRead(
          k.occupancy(c),
          k.occupancyPublishers(c),
          k.presenceMembers(c),
          k.meta(c),
        ),
      ),
    );
    return replies.map((r, i) => {
      const epoch = String(r[4]);
      return {
        channel: channels[i] as string,
        occupancy: {
          connections: Number(r[0]),
          subscribers: Number(r[1]),
          publishersLastMinute: Number(r[2]),
          presenceMembers: Number(r[3]),
        },
        last: epoch === '' ? null : { epoch, offset: Number(r[5]) || 0 },
      };
    });
  }

  async names(prefix: string): Promise<string[]> {
    const k = this.#keys;
    const heads = [k.meta(''), k.occupancy(''), k.presenceMembers('')].map((h) => h.slice(0, -1));
    const servers: Redis[] =
      this.#redis instanceof Cluster ? this.#redis.nodes('master') : [this.#redis];
    const out = new Set<string>();
    await Promise.all(
      servers.flatMap((server) =>
        heads.map(async (head) => {
          const match = globEscape(head + prefix) + '*';
          let cursor = '0';
          do {
            const [next, keys] = await server.scan(cursor, 'MATCH', match, 'COUNT', SCAN_COUNT);
            cursor = next;
            for (const key of keys) if (key.endsWith('}')) out.add(key.slice(head.length, -1));
          } while (cursor !== '0');
        }),
      ),
    );
    return [...out];
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
