/**
 * What a resume needs of an Ably connection once its transport is gone, shared by every node:
 * that the connection still exists (it expires connectionStateTtl after its last transport
 * dropped) and whose it is (the clientId a resume must match). Nothing per message: a channel's
 * position comes back with the SDK's re-ATTACH (its channelSerial is the stream's epoch and
 * offset), and a publish the SDK resends keeps its msgSerial, whose message id the broker's
 * dedupe already recognises (`dedupeMs` ≥ connectionStateTtl).
 *
 * Writes: one when a connection is established, one when its transport drops, one batched
 * refresh of the node's live connections per refresh interval, one delete on CLOSE.
 */
import type { Cluster, Redis } from 'ioredis';
import { connectRedis, type RedisTarget } from '../broker/redis-target.js';

export interface ConnectionRecord {
  /** The connection's identity; a resume under another one is a new connection. */
  readonly clientId?: string | undefined;
  /** The serverId of the node that wrote it last (diagnostics). */
  readonly serverId: string;
}

export interface AblyConnectionStore {
  /** Records the connection, expiring `ttlMs` from now unless written again. */
  save(id: string, record: ConnectionRecord, ttlMs: number): Promise<void>;
  /** Pushes the expiry of these connections to `ttlMs` from now (one round trip). */
  refresh(ids: readonly string[], ttlMs: number): Promise<void>;
  /** The record, or undefined when it expired or never existed. */
  get(id: string): Promise<ConnectionRecord | undefined>;
  delete(id: string): Promise<void>;
  close(): Promise<void>;
}

/** The embedded engine's store: one process, so a Map with deadlines. */
export class MemoryConnectionStore implements AblyConnectionStore {
  readonly #records = new Map<string, { record: ConnectionRecord; until: number }>();
  readonly #sweep: NodeJS.Timeout;

  constructor() {
    // Connections that never come back are dropped here, so the Map is bounded by the
    // connections of the last connectionStateTtl.
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const [id, r] of this.#records) if (r.until <= now) this.#records.delete(id);
    }, 10_000);
    this.#sweep.unref();
  }

  save(id: string, record: ConnectionRecord, ttlMs: number): Promise<void> {
    this.#records.set(id, { record, until: Date.now() + ttlMs });
    return Promise.resolve();
  }

  refresh(ids: readonly string[], ttlMs: number): Promise<void> {
    const until = Date.now() + ttlMs;
    for (const id of ids) {
      const r = this.#records.get(id);
      if (r !== undefined) r.until = until;
    }
    return Promise.resolve();
  }

  get(id: string): Promise<ConnectionRecord | undefined> {
    const r = this.#records.get(id);
    if (r === undefined || r.until <= Date.now()) return Promise.resolve(undefined);
    return Promise.resolve(r.record);
  }

  delete(id: string): Promise<void> {
    this.#records.delete(id);
    return Promise.resolve();
  }

  close(): Promise<void> {
    clearInterval(this.#sweep);
    return Promise.resolve();
  }
}

/**
 * `<prefix>ably:conn:{<connectionId>}`: a hash (`clientId`, `serverId`) with a PEXPIRE. The
 * braces keep each key whole in one Redis Cluster slot; refreshes are pipelined per node.
 */
export class RedisConnectionStore implements AblyConnectionStore {
  readonly #redis: Redis | Cluster;
  readonly #prefix: string;

  constructor(target: RedisTarget, prefix: string) {
    this.#redis = connectRedis(target, {
      connectionName: 'switchboard-ably-connections',
      maxRetriesPerRequest: 1,
      commandTimeout: 5000,
    });
    this.#redis.on('error', () => {
      // reconnects by itself; a failed write or lookup surfaces to the caller
    });
    this.#prefix = prefix;
  }

  key(id: string): string {
    return `${this.#prefix}ably:conn:{${id}}`;
  }

  async save(id: string, record: ConnectionRecord, ttlMs: number): Promise<void> {
    const key = this.key(id);
    const fields: Record<string, string> = { serverId: record.serverId };
    if (record.clientId !== undefined) fields['clientId'] = record.clientId;
    // One MULTI: the hash never exists without its expiry, and a clientId of an earlier
    // life of the id does not survive.
    await this.#redis.multi().del(key).hset(key, fields).pexpire(key, ttlMs).exec();
  }

  async refresh(ids: readonly string[], ttlMs: number): Promise<void> {
    if (ids.length === 0) return;
    const p = this.#redis.pipeline();
    for (const id of ids) p.pexpire(this.key(id), ttlMs);
    await p.exec();
  }

  async get(id: string): Promise<ConnectionRecord | undefined> {
    const h = await this.#redis.hgetall(this.key(id));
    if (h['serverId'] === undefined) return undefined;
    return {
      serverId: h['serverId'],
      ...(h['clientId'] !== undefined ? { clientId: h['clientId'] } : {}),
    };
  }

  async delete(id: string): Promise<void> {
    await this.#redis.del(this.key(id));
  }

  async close(): Promise<void> {
    try {
      await this.#redis.quit();
    } catch {
      this.#redis.disconnect();
    }
  }
}
