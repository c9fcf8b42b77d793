/**
 * What every Ably session of a node shares: the node, policy and credentials, connection ids and
 * keys, the channel fan-outs and the browser heartbeat timer.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { Credentials } from '../auth/auth.js';
import type { AccessPolicy } from '../auth/policy.js';
import type { Revocable, SessionRegistry } from '../auth/registry.js';
import type { RevocationStore } from '../auth/revocation.js';
import type { TopicBroadcaster } from '../engine/transport.js';
import type { Node } from '../node.js';
import type { AblyAuth } from './auth.js';
import { MemoryConnectionStore, type AblyConnectionStore } from './connection-state.js';
import { ChannelFanout } from './fanout.js';
import { PresenceFanout, type MemberLimits } from './presence.js';

/**
 * Connection ids and keys. A key is the id plus an HMAC of it, so any node holding the same
 * secret (derived from the configured keys, identical on every node) recognises a key another
 * node issued, and a resume keeps its connectionId wherever it lands without shared state. The
 * key does not change over the connection's life: the SDK resumes with the key of its first
 * CONNECTED even after an in-band AUTH.
 */
export class ConnectionKeys {
  readonly #secret: Buffer;

  constructor(material: string) {
    this.#secret = createHash('sha256')
      .update('switchboard ably connection key\n')
      .update(material)
      .digest();
  }

  newId(): string {
    // No ':' (the SDK splits message ids on it) and no '!' (the key's separator).
    return randomBytes(9).toString('base64url');
  }

  keyFor(id: string): string {
    return `${id}!${this.#mac(id)}`;
  }

  /** The connectionId of a key this cluster issued, or undefined. */
  verify(key: string): string | undefined {
    const m = /^([A-Za-z0-9_-]{1,32})!([A-Za-z0-9_-]{22})$/.exec(key);
    if (m === null) return undefined;
    const id = m[1] as string;
    const ok = timingSafeEqual(Buffer.from(this.#mac(id)), Buffer.from(m[2] as string));
    return ok ? id : undefined;
  }

  #mac(id: string): string {
    return createHmac('sha256', this.#secret).update(id).digest('base64url').slice(0, 22);
  }
}

export interface AblySessionLike {
  readonly connectionId: string;
  readonly heartbeats: boolean;
  heartbeat(): void;
  disconnect(error: { message: string; code: number; statusCode: number }): void;
}

export interface AblyContextOptions {
  readonly node: Node;
  readonly policy: AccessPolicy;
  readonly auth: AblyAuth;
  readonly logger: Logger;
  readonly keyMaterial: string;
  readonly maxMessageSize: number;
  readonly maxChannels: number;
  readonly maxReplay: number;
  readonly pingIntervalMs: number;
  readonly commandsPerSecond: number;
  /** The node's revocations and live sessions (shared with the native protocol). */
  readonly revocations?: RevocationStore | undefined;
  /** Connection state for resumes on any node (Redis, or memory for the embedded engine). */
  readonly store?: AblyConnectionStore | undefined;
  /** Ably's default 120 s; shorter only in tests. */
  readonly connectionStateTtlMs?: number | undefined;
  readonly registry?: SessionRegistry | undefined;
  /** The engine's native topics (uws): live subscribers get deliveries without a JS call each. */
  readonly broadcaster?: TopicBroadcaster | undefined;
  /** Presence limits, the native protocol's (presenceMaxDataBytes, …, presenceGraceMs). */
  readonly presence?: MemberLimits | undefined;
}

const DEFAULT_MEMBER_LIMITS: MemberLimits = {
  maxDataBytes: 1024,
  maxEntersPerConnection: 100,
  graceMs: 15_000,
};

export class AblyContext {
  readonly node: Node;
  readonly policy: AccessPolicy;
  readonly auth: AblyAuth;
  readonly logger: Logger;
  readonly connections: ConnectionKeys;
  readonly maxMessageSize: number;
  readonly maxInboundRate: number;
  readonly maxChannels: number;
  readonly maxReplay: number;
  /** The server pings (or, for browsers, sends HEARTBEAT) at least this often. */
  readonly maxIdleIntervalMs: number;
  /** Ably's default: how long a connection outlives its transport (and the SDK tries to resume). */
  readonly connectionStateTtlMs: number;
  readonly store: AblyConnectionStore;
  /** How often the live connections' records are pushed forward (one pipeline per node). */
  readonly #refreshMs: number;
  readonly #refreshTimer: NodeJS.Timeout;
  readonly serverId = `switchboard-${randomBytes(4).toString('hex')}`;
  /** Live sessions by connectionId: a resume takes over a connection still held here. */
  readonly sessions = new Map<string, AblySessionLike>();
  readonly presence: MemberLimits;
  readonly #fanouts = new Map<string, ChannelFanout>();
  readonly #presenceFanouts = new Map<string, PresenceFanout>();
  readonly #broadcaster: TopicBroadcaster | undefined;
  readonly #revocations: RevocationStore | undefined;
  readonly #registry: SessionRegistry | undefined;
  readonly #timer: NodeJS.Timeout;

  constructor(o: AblyContextOptions) {
    this.node = o.node;
    this.policy = o.policy;
    this.auth = o.auth;
    this.logger = o.logger;
    this.connections = new ConnectionKeys(o.keyMaterial);
    this.maxMessageSize = o.maxMessageSize;
    this.maxInboundRate = o.commandsPerSecond;
    this.maxChannels = o.maxChannels;
    this.maxReplay = o.maxReplay;
    this.maxIdleIntervalMs = o.pingIntervalMs;
    this.#broadcaster = o.broadcaster;
    this.#revocations = o.revocations;
    this.connectionStateTtlMs = o.connectionStateTtlMs ?? 120_000;
    this.store = o.store ?? new MemoryConnectionStore();
    this.#refreshMs = Math.max(1000, Math.floor(this.connectionStateTtlMs / 4));
    // A node killed without a word leaves its connections' records to expire between
    // connectionStateTtl and connectionStateTtl + one interval after its last refresh.
    this.#refreshTimer = setInterval(() => {
      const ids = [...this.sessions.keys()];
      this.store
        .refresh(ids, this.liveTtlMs)
        .catch((err: unknown) => this.logger.warn({ err }, 'ably connection state refresh failed'));
    }, this.#refreshMs);
    this.#refreshTimer.unref();
    this.#registry = o.registry;
    this.presence = o.presence ?? DEFAULT_MEMBER_LIMITS;
    // Browsers send heartbeats=true: they cannot see WebSocket pings, so they get HEARTBEATs.
    this.#timer = setInterval(
      () => {
        for (const s of this.sessions.values()) if (s.heartbeats) s.heartbeat();
      },
      Math.max(100, Math.floor(o.pingIntervalMs / 2)),
    );
    this.#timer.unref();
  }

  /** The expiry of a live connection's record: the TTL counts from the next refresh at the latest. */
  get liveTtlMs(): number {
    return this.connectionStateTtlMs + this.#refreshMs;
  }

  /** Registers a session; an older one with the same connectionId is disconnected (newest wins). */
  add(session: AblySessionLike): void {
    const old = this.sessions.get(session.connectionId);
    this.sessions.set(session.connectionId, session);
    if (old !== undefined && old !== session)
      old.disconnect({ message: 'connection resumed elsewhere', code: 80017, statusCode: 400 });
  }

  remove(session: AblySessionLike): void {
    if (this.sessions.get(session.connectionId) === session)
      this.sessions.delete(session.connectionId);
  }

  /**
   * Checks token credentials against the revocation store and registers the session under its
   * user, so a later revocation (from any node) reaches it. The registration happens in the same
   * turn as the store's answer, and a revocation applied while the store was read is caught by
   * the watch. Returns why the credentials are refused, or undefined.
   */
  async admit(
    session: Revocable,
    creds: Credentials,
  ): Promise<'revoked' | 'unavailable' | 'too many' | undefined> {
    const registry = this.#registry;
    // Like the native protocol: only token sessions are registered (an API key is not a user,
    // and revocations apply to tokens only).
    if (registry === undefined || creds.kind !== 'token') return undefined;
    if (this.#revocations !== undefined) {
      const watch = registry.watch(creds);
      try {
        if ((await this.#revocations.isRevoked(creds)) || watch.revoked) return 'revoked';
      } catch {
        return 'unavailable';
      } finally {
        watch.end();
      }
    }
    return registry.track(session, creds.userId) ? undefined : 'too many';
  }

  /** Whether token credentials were revoked (REST); a store error counts as not revoked. */
  async isRevoked(creds: Credentials): Promise<boolean> {
    if (creds.kind !== 'token' || this.#revocations === undefined) return false;
    return this.#revocations.isRevoked(creds);
  }

  release(session: Revocable, creds: Credentials): void {
    this.#registry?.untrack(session, creds.userId);
  }

  /** The channel's fan-out on this node, made on first use. */
  fanout(channel: string): ChannelFanout {
    let f = this.#fanouts.get(channel);
    if (f === undefined || f.closed) {
      const made: ChannelFanout = new ChannelFanout(
        this.node,
        channel,
        () => {
          if (this.#fanouts.get(channel) === made) this.#fanouts.delete(channel);
        },
        this.#broadcaster,
      );
      f = made;
      this.#fanouts.set(channel, f);
    }
    return f;
  }

  /** The channel's presence fan-out on this node, made on first use. */
  presenceFanout(channel: string): PresenceFanout {
    let f = this.#presenceFanouts.get(channel);
    if (f === undefined || f.closed) {
      const made: PresenceFanout = new PresenceFanout(this.node, channel, () => {
        if (this.#presenceFanouts.get(channel) === made) this.#presenceFanouts.delete(channel);
      });
      f = made;
      this.#presenceFanouts.set(channel, f);
    }
    return f;
  }

  close(): void {
    clearInterval(this.#timer);
    clearInterval(this.#refreshTimer);
    for (const s of [...this.sessions.values()])
      s.disconnect({ message: 'server shutting down', code: 80017, statusCode: 400 });
  }
}
