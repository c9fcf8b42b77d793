import { randomUUID } from 'node:crypto';
import type { Cluster, Redis } from 'ioredis';
import { connectRedis, type RedisTarget } from '../broker/redis-target.js';
import { createRedisKeys, type RedisKeys } from '../broker/redis-keys.js';
import type { ChannelState, Delivery, Taken, WebhookStore } from './store.js';

/** The consumer group every node reads the endpoint streams through. */
const GROUP = 'switchboard-webhooks';
/** A consumer (one node's life) idle this long with nothing pending is removed from the group. */
const CONSUMER_IDLE_MS = 3_600_000;

/**
 * KEYS: the endpoints' streams. ARGV: max pending, delivery JSON. Queues the delivery on each
 * stream that has room; returns how many refused it.
 */
const ADD_LUA = `
local refused = 0
for i = 1, #KEYS do
  if redis.call('XLEN', KEYS[i]) >= tonumber(ARGV[1]) then refused = refused + 1
  else redis.call('XADD', KEYS[i], '*', 'd', ARGV[2]) end
end
return refused
`;

/**
 * KEYS: due set, debounce hash. ARGV: channel, state, member, due time. The opposite change
 * waiting for the channel cancels with this one; the same change waiting is kept; else this one
 * waits. Returns 1 when scheduled.
 */
const DEBOUNCE_LUA = `
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur then
  local nl = string.find(cur, '\\n', 1, true)
  if string.sub(cur, 1, nl - 1) ~= ARGV[2] then
    redis.call('ZREM', KEYS[1], string.sub(cur, nl + 1))
    redis.call('HDEL', KEYS[2], ARGV[1])
  end
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '\\n' .. ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
return 1
`;

/** KEYS: stream, due set. ARGV: group, entry id, due time, member. Settles the attempt, schedules the next. */
const RETRY_LUA = `
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
`;

/** KEYS: stream. ARGV: group, entry id. */
const DONE_LUA = `
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
`;

/**
 * KEYS: due set, debounce hash, then the endpoints' streams. ARGV: now, max pending, then the
 * endpoint ids in KEYS order. Moves up to 200 due members (JSON {u, c, e: [endpoint ids], d:
 * delivery JSON}) onto their endpoints' streams in one step, so exactly one node moves each.
 * Returns how many were dropped (endpoint gone or full).
 */
const PROMOTE_LUA = `
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 200)
local stream = {}
for i = 3, #ARGV do stream[ARGV[i]] = KEYS[i] end
local max = tonumber(ARGV[2])
local dropped = 0
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local m = cjson.decode(member)
  if m.c ~= '' then
    local cur = redis.call('HGET', KEYS[2], m.c)
    if cur and string.sub(cur, -#member) == member then redis.call('HDEL', KEYS[2], m.c) end
  end
  for _, e in ipairs(m.e) do
    local k = stream[e]
    if k == nil or redis.call('XLEN', k) >= max then dropped = dropped + 1
    else redis.call('XADD', k, '*', 'd', m.d) end
  end
end
return dropped
`;

interface WebhookScripts {
  sbWebhookAdd(...args: (string | number)[]): Promise<number>;
  sbWebhookDebounce(...args: (string | number)[]): Promise<number>;
  sbWebhookRetry(...args: (string | number)[]): Promise<number>;
  sbWebhookDone(...args: (string | number)[]): Promise<number>;
  sbWebhookPromote(...args: (string | number)[]): Promise<number>;
}

type StreamEntries = [string, [string, string[]][]][] | null;

/**
 * Pending deliveries in Redis, shared by every node: one stream per endpoint read through one
 * consumer group (XREADGROUP hands each entry to one node; XACK+XDEL settle it; XAUTOCLAIM takes
 * over entries a dead node was holding), and a due-time sorted set for retries and debounced
 * channel events, moved back onto the streams by a script. All keys share the `{webhooks}` hash
 * tag, so every script runs on one Redis Cluster slot.
 */
export class RedisWebhookStore implements WebhookStore {
  readonly name = 'redis';
  readonly #redis: (Redis | Cluster) & WebhookScripts;
  readonly #keys: RedisKeys;
  readonly #consumer: string;
  readonly #claimIdleMs: number;
  readonly #groups = new Set<string>();
  readonly #claimedAt = new Map<string, number>();
  readonly #cleanedAt = new Map<string, number>();

  /**
   * `claimIdleMs`: how long a delivery handed to a node may stay unsettled before another node
   * takes it over (it must exceed the longest a live node holds one: queue wait plus timeout).
   */
  constructor(target: RedisTarget, prefix: string, consumer: string, claimIdleMs: number) {
    this.#redis = connectRedis(target, {
      connectionName: 'switchboard-webhooks',
      maxRetriesPerRequest: 1,
      commandTimeout: 5000,
    }) as (Redis | Cluster) & WebhookScripts;
    this.#redis.on('error', () => {
      // reconnects by itself; failed calls surface to the dispatcher, which retries on its timer
    });
    this.#redis.defineCommand('sbWebhookAdd', { lua: ADD_LUA });
    this.#redis.defineCommand('sbWebhookDebounce', { numberOfKeys: 2, lua: DEBOUNCE_LUA });
    this.#redis.defineCommand('sbWebhookRetry', { numberOfKeys: 2, lua: RETRY_LUA });
    this.#redis.defineCommand('sbWebhookDone', { numberOfKeys: 1, lua: DONE_LUA });
    this.#redis.defineCommand('sbWebhookPromote', { lua: PROMOTE_LUA });
    this.#keys = createRedisKeys(prefix);
    this.#consumer = consumer;
    this.#claimIdleMs = claimIdleMs;
  }

  add(endpoints: readonly string[], delivery: Delivery, maxPending: number): Promise<number> {
    const keys = endpoints.map((e) => this.#keys.webhookStream(e));
    return this.#redis.sbWebhookAdd(keys.length, ...keys, maxPending, JSON.stringify(delivery));
  }

  async debounce(
    channel: string,
    state: ChannelState,
    endpoints: readonly string[],
    delivery: Delivery,
    dueAt: number,
  ): Promise<boolean> {
    const member = dueMember(channel, endpoints, delivery);
    const r = await this.#redis.sbWebhookDebounce(
      this.#keys.webhookDue(),
      this.#keys.webhookDebounce(),
      channel,
      state,
      member,
      dueAt,
    );
    return Number(r) === 1;
  }

  async take(endpoint: string, max: number): Promise<Taken[]> {
    const key = this.#keys.webhookStream(endpoint);
    try {
      return await this.#take(endpoint, key, max);
    } catch (err) {
      // Redis lost the group (restarted without persistence): make it again on the next call.
      if (err instanceof Error && err.message.includes('NOGROUP')) this.#groups.delete(key);
      throw err;
    }
  }

  async #take(endpoint: string, key: string, max: number): Promise<Taken[]> {
    if (!this.#groups.has(key)) await this.#createGroup(key);
    const out: Taken[] = [];
    const now = Date.now();
    // Deliveries a node took and never settled (it died) come back after claimIdleMs.
    if (now - (this.#claimedAt.get(key) ?? 0) >= Math.min(5000, this.#claimIdleMs / 2)) {
      this.#claimedAt.set(key, now);
      const claimed = (await this.#redis.xautoclaim(
        key,
        GROUP,
        this.#consumer,
        this.#claimIdleMs,
        '0-0',
        'COUNT',
        max,
      )) as [string, ([string, string[]] | null)[]];
      for (const entry of claimed[1]) if (entry !== null) out.push(this.#taken(endpoint, entry));
      await this.#forgetIdleConsumers(key, now);
    }
    if (out.length >= max) return out;
    const reply = (await this.#redis.call(
      'XREADGROUP',
      'GROUP',
      GROUP,
      this.#consumer,
      'COUNT',
      max - out.length,
      'STREAMS',
      key,
      '>',
    )) as StreamEntries;
    for (const [, entries] of reply ?? [])
      for (const e of entries) out.push(this.#taken(endpoint, e));
    return out;
  }

  async done(taken: Taken): Promise<void> {
    await this.#redis.sbWebhookDone(this.#keys.webhookStream(taken.endpoint), GROUP, taken.handle);
  }

  async retry(taken: Taken, next: Delivery, dueAt: number): Promise<void> {
    await this.#redis.sbWebhookRetry(
      this.#keys.webhookStream(taken.endpoint),
      this.#keys.webhookDue(),
      GROUP,
      taken.handle,
      dueAt,
      dueMember('', [taken.endpoint], next),
    );
  }

  async promote(now: number, endpoints: readonly string[], maxPending: number): Promise<number> {
    const keys = [
      this.#keys.webhookDue(),
      this.#keys.webhookDebounce(),
      ...endpoints.map((e) => this.#keys.webhookStream(e)),
    ];
    return Number(
      await this.#redis.sbWebhookPromote(keys.length, ...keys, now, maxPending, ...endpoints),
    );
  }

  async close(): Promise<void> {
    // This node's consumer goes when it holds nothing (what it read ahead stays for a claim).
    for (const key of this.#groups) {
      try {
        const mine = await this.#redis.xpending(key, GROUP, '-', '+', 1, this.#consumer);
        if (mine.length === 0) await this.#redis.xgroup('DELCONSUMER', key, GROUP, this.#consumer);
      } catch {
        // Redis away: the consumer is removed later by another node (#forgetIdleConsumers).
      }
    }
    try {
      await this.#redis.quit();
    } catch {
      this.#redis.disconnect();
    }
  }

  #taken(endpoint: string, [handle, fields]: [string, string[]]): Taken {
    const i = fields.indexOf('d');
    return { endpoint, handle, delivery: JSON.parse(fields[i + 1] ?? '{}') as Delivery };
  }

  /**
   * Every node start is a new consumer; those of nodes gone (killed) stay in the group. Once their
   * deliveries were claimed (pending 0) and they were idle for an hour, they are removed, at most
   * once a minute per stream.
   */
  async #forgetIdleConsumers(key: string, now: number): Promise<void> {
    if (now - (this.#cleanedAt.get(key) ?? 0) < 60_000) return;
    this.#cleanedAt.set(key, now);
    const consumers = (await this.#redis.xinfo('CONSUMERS', key, GROUP)) as unknown[][];
    for (const c of consumers) {
      const info = new Map<string, unknown>();
      for (let i = 0; i + 1 < c.length; i += 2) info.set(String(c[i]), c[i + 1]);
      const name = String(info.get('name'));
      if (name === this.#consumer) continue;
      if (Number(info.get('pending')) === 0 && Number(info.get('idle')) > CONSUMER_IDLE_MS)
        await this.#redis.xgroup('DELCONSUMER', key, GROUP, name);
    }
  }

  async #createGroup(key: string): Promise<void> {
    try {
      // From the stream's start: entries added before this node made the group are read too.
      await this.#redis.xgroup('CREATE', key, GROUP, '0', 'MKSTREAM');
    } catch (err) {
      if (!(err instanceof Error && err.message.includes('BUSYGROUP'))) throw err;
    }
    this.#groups.add(key);
  }
}

/** A member of the due set: unique (u), so two equal deliveries are two members. */
function dueMember(channel: string, endpoints: readonly string[], delivery: Delivery): string {
  return JSON.stringify({ u: randomUUID(), c: channel, e: endpoints, d: JSON.stringify(delivery) });
}
