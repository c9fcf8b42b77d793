import type { Cluster, Redis } from 'ioredis';
import { connectRedis, type RedisTarget } from '../broker/redis-target.js';

/**
 * What the admin API keeps beyond one request: failed logins per client address, and sessions
 * ended by logout before they expire. Failed admin logins per client address, in a fixed window: after MAX_FAILURES inside
 * WINDOW_MS the address is locked out until the window ends. In Redis (every node sees the same
 * count) or in this process (embedded engine).
 */
export const MAX_FAILURES = 5;
export const WINDOW_MS = 15 * 60_000;

export interface Attempts {
  readonly attempts: number;
  readonly resetMs: number;
}

export interface LockoutStore {
  /**
   * Counts a login attempt before its password is checked, so that parallel guesses cannot all
   * slip in before the first failure is counted. Resolves with the attempts in the address's
   * current window (this one included) and ms until that window ends.
   */
  attempt(address: string): Promise<Attempts>;
  /** A successful login: the address starts afresh. */
  clear(address: string): Promise<void>;
  /** Ends a session before its expiry (logout), for `ttlMs` (its remaining life). */
  endSession(sid: string, ttlMs: number): Promise<void>;
  sessionEnded(sid: string): Promise<boolean>;
  close(): Promise<void>;
}

export class MemoryLockoutStore implements LockoutStore {
  readonly #entries = new Map<string, { count: number; until: number }>();
  /** Bounds memory under a spray of addresses: the oldest window goes first. */
  readonly #max: number;

  constructor(max = 100_000) {
    this.#max = max;
  }

  #live(address: string, now: number): { count: number; until: number } | undefined {
    const e = this.#entries.get(address);
    if (e !== undefined && e.until <= now) {
      this.#entries.delete(address);
      return undefined;
    }
    return e;
  }

  attempt(address: string): Promise<Attempts> {
    const now = Date.now();
    let e = this.#live(address, now);
    if (e === undefined) {
      if (this.#entries.size >= this.#max) {
        const oldest = this.#entries.keys().next().value;
        if (oldest !== undefined) this.#entries.delete(oldest);
      }
      e = { count: 0, until: now + WINDOW_MS };
      this.#entries.set(address, e);
    }
    e.count++;
    return Promise.resolve({ attempts: e.count, resetMs: e.until - now });
  }

  clear(address: string): Promise<void> {
    this.#entries.delete(address);
    return Promise.resolve();
  }

  /** sid → when it would have expired anyway. */
  readonly #ended = new Map<string, number>();

  endSession(sid: string, ttlMs: number): Promise<void> {
    const now = Date.now();
    for (const [k, until] of this.#ended) if (until <= now) this.#ended.delete(k);
    if (this.#ended.size < this.#max) this.#ended.set(sid, now + ttlMs);
    return Promise.resolve();
  }

  sessionEnded(sid: string): Promise<boolean> {
    const until = this.#ended.get(sid);
    return Promise.resolve(until !== undefined && until > Date.now());
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** `<prefix>adm:lock:<address>`: the failure count, expiring at the end of its window. */
export class RedisLockoutStore implements LockoutStore {
  readonly #redis: Redis | Cluster;
  readonly #prefix: string;

  constructor(target: RedisTarget, prefix: string) {
    this.#redis = connectRedis(target, {
      connectionName: 'switchboard-admin',
      maxRetriesPerRequest: 1,
      commandTimeout: 5000,
    });
    this.#redis.on('error', () => {
      // reconnects by itself; a failed check refuses the login (503) rather than skipping it
    });
    this.#prefix = prefix;
  }

  #key(address: string): string {
    return `${this.#prefix}adm:lock:${address}`;
  }

  async attempt(address: string): Promise<Attempts> {
    const [count, ttl] = (await this.#redis.eval(
      "local n = redis.call('INCR', KEYS[1]); if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end; return {n, redis.call('PTTL', KEYS[1])}",
      1,
      this.#key(address),
      WINDOW_MS,
    )) as [number, number];
    return { attempts: count, resetMs: Math.max(1, ttl) };
  }

  async clear(address: string): Promise<void> {
    await this.#redis.del(this.#key(address));
  }

  /** `<prefix>adm:end:<sid>`, expiring when the session would have. */
  async endSession(sid: string, ttlMs: number): Promise<void> {
    await this.#redis.set(`${this.#prefix}adm:end:${sid}`, '1', 'PX', Math.max(1, ttlMs));
  }

  async sessionEnded(sid: string): Promise<boolean> {
    return (await this.#redis.exists(`${this.#prefix}adm:end:${sid}`)) === 1;
  }

  async close(): Promise<void> {
    try {
      await this.#redis.quit();
    } catch {
      this.#redis.disconnect();
    }
  }
}
