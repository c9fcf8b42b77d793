/**
 * What every Ably session of a node shares: the node, policy and credentials, connection ids and
 * keys, the channel fan-outs and the browser heartbeat timer.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import type { AccessPolicy } from '../auth/policy.js';
import type { TopicBroadcaster } from '../engine/connection.js';
import type { Node } from '../node.js';
import type { AblyAuth } from './auth.js';
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
  /** Ably's default: how long the SDK keeps trying to resume before it gives up the connection. */
  readonly connectionStateTtlMs = 120_000;
  readonly serverId = `switchboard-${randomBytes(4).toString('hex')}`;
  /** Live sessions by connectionId: a resume takes over a connection still held here. */
  readonly sessions = new Map<string, AblySessionLike>();
  readonly presence: MemberLimits;
  readonly #fanouts = new Map<string, ChannelFanout>();
  readonly #presenceFanouts = new Map<string, PresenceFanout>();
  readonly #broadcaster: TopicBroadcaster | undefined;
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
    for (const s of [...this.sessions.values()])
      s.disconnect({ message: 'server shutting down', code: 80017, statusCode: 400 });
  }
}
