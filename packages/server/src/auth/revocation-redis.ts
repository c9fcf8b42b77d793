import type { Cluster, Redis } from 'ioredis';
import { connectRedis, type RedisTarget } from '../broker/redis-target.js';
import type { Credentials } from './auth.js';
import { revokes, type Revocation, type RevocationStore } from './revocation.js';

/**
 * Revocations in Redis, shared by every node: `<prefix>rv:t:<jti>` and `<prefix>rv:u:<sub>`
 * (value: the cut-off in ms), each expiring after the longest token lifetime.
 */
export class RedisRevocationStore implements RevocationStore {
  readonly #redis: Redis | Cluster;
  readonly #prefix: string;
  readonly #ttlMs: number;

  constructor(url: string | RedisTarget, prefix: string, ttlMs: number) {
    this.#redis = connectRedis(typeof url === 'string' ? { mode: 'single', url } : url, {
      connectionName: 'switchboard-revocations',
      maxRetriesPerRequest: 1,
      commandTimeout: 5000,
    });
    this.#redis.on('error', () => {
      // reconnects by itself; failed lookups surface as errors to the caller
    });
    this.#prefix = prefix;
    this.#ttlMs = ttlMs;
  }

  async add(r: Revocation): Promise<void> {
    if (r.kind === 'token') {
      await this.#redis.set(this.#prefix + 'rv:t:' + r.tokenId, '1', 'PX', this.#ttlMs);
      return;
    }
    // Keep the latest cut-off when two revocations race.
    await this.#redis.eval(
      "local v = tonumber(redis.call('GET', KEYS[1]) or '0'); if tonumber(ARGV[1]) > v then v = tonumber(ARGV[1]) end; redis.call('SET', KEYS[1], v, 'PX', ARGV[2]); return v",
      1,
      this.#prefix + 'rv:u:' + r.userId,
      r.before,
      this.#ttlMs,
    );
  }

  async isRevoked(creds: Credentials): Promise<boolean> {
    if (creds.kind !== 'token') return false;
    // Two GETs, not one MGET: on Redis Cluster the two keys live in different slots.
    const [token, before] = await Promise.all([
      this.#redis.get(this.#prefix + 'rv:t:' + (creds.tokenId ?? '')),
      this.#redis.get(this.#prefix + 'rv:u:' + creds.userId),
    ]);
    if (creds.tokenId !== undefined && token !== null) return true;
    return (
      before !== null &&
      revokes({ kind: 'user', userId: creds.userId, before: Number(before) }, creds)
    );
  }

  async close(): Promise<void> {
    try {
      await this.#redis.quit();
    } catch {
      this.#redis.disconnect();
    }
  }
}
