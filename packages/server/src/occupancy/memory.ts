import type { StreamPosition } from '../broker/broker.js';
import {
  PUBLISHERS_WINDOW_MS,
  type ChannelDetails,
  type OccupancyStore,
  type Share,
  type Transition,
} from './occupancy.js';

export interface MemorySources {
  /** The channel's top position, without creating a stream for it. */
  position(channel: string): StreamPosition | undefined;
  /** Channels with a kept stream position. */
  streams(): Iterable<string>;
  /** Live presence members of a channel. */
  members(channel: string): number;
  /** Channels with presence members. */
  presence(): Iterable<string>;
}

interface ChannelShares {
  readonly byNode: Map<string, { connections: number; subscribers: number }>;
  subscribers: number;
}

/**
 * Occupancy of the embedded engine: the shares live in this process (one node), with the same
 * semantics as the Redis store, so the directory code is the same for both.
 */
export class MemoryOccupancyStore implements OccupancyStore {
  readonly name = 'memory';
  readonly #sources: MemorySources;
  readonly #shares = new Map<string, ChannelShares>();
  readonly #publishers = new Map<string, Map<string, number>>();
  readonly #alive = new Map<string, number>();

  constructor(sources: MemorySources) {
    this.#sources = sources;
  }

  write(node: string, shares: readonly Share[]): Promise<Transition[]> {
    const now = Date.now();
    const out: Transition[] = [];
    for (const s of shares) {
      const t = this.#put(node, s.channel, s.connections, s.subscribers);
      if (t !== undefined) out.push(t);
      if (s.publishers.length > 0) {
        let pubs = this.#publishers.get(s.channel);
        if (pubs === undefined) this.#publishers.set(s.channel, (pubs = new Map<string, number>()));
        for (const p of s.publishers) pubs.set(p, now);
      }
    }
    return Promise.resolve(out);
  }

  heartbeat(node: string, ttlMs: number): Promise<boolean> {
    const known = this.#alive.has(node);
    this.#alive.set(node, Date.now() + ttlMs);
    return Promise.resolve(known);
  }

  reap(): Promise<Transition[]> {
    const now = Date.now();
    const out: Transition[] = [];
    for (const [node, until] of this.#alive) {
      if (until > now) continue;
      this.#alive.delete(node);
      for (const [channel, ch] of [...this.#shares])
        if (ch.byNode.has(node)) {
          const t = this.#put(node, channel, 0, 0);
          if (t !== undefined) out.push(t);
        }
    }
    for (const [channel, pubs] of this.#publishers) {
      for (const [p, at] of pubs) if (at <= now - PUBLISHERS_WINDOW_MS) pubs.delete(p);
      if (pubs.size === 0) this.#publishers.delete(channel);
    }
    return Promise.resolve(out);
  }

  read(channels: readonly string[]): Promise<ChannelDetails[]> {
    const since = Date.now() - PUBLISHERS_WINDOW_MS;
    return Promise.resolve(
      channels.map((channel) => {
        let connections = 0;
        const ch = this.#shares.get(channel);
        for (const v of ch?.byNode.values() ?? []) connections += v.connections;
        let publishers = 0;
        for (const at of this.#publishers.get(channel)?.values() ?? [])
          if (at > since) publishers++;
        return {
          channel,
          occupancy: {
            connections,
            subscribers: ch?.subscribers ?? 0,
            presenceMembers: this.#sources.members(channel),
            publishersLastMinute: publishers,
          },
          last: this.#sources.position(channel) ?? null,
        };
      }),
    );
  }

  names(prefix: string): Promise<string[]> {
    const out = new Set<string>();
    for (const channel of this.#shares.keys()) if (channel.startsWith(prefix)) out.add(channel);
    for (const channel of this.#sources.streams()) if (channel.startsWith(prefix)) out.add(channel);
    for (const channel of this.#sources.presence())
      if (channel.startsWith(prefix)) out.add(channel);
    return Promise.resolve([...out]);
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  #put(
    node: string,
    channel: string,
    connections: number,
    subscribers: number,
  ): Transition | undefined {
    let ch = this.#shares.get(channel);
    const before = ch?.subscribers ?? 0;
    if (connections === 0 && subscribers === 0) {
      const old = ch?.byNode.get(node);
      if (ch === undefined || old === undefined) return undefined;
      ch.byNode.delete(node);
      ch.subscribers -= old.subscribers;
      if (ch.byNode.size === 0) this.#shares.delete(channel);
    } else {
      if (ch === undefined) this.#shares.set(channel, (ch = { byNode: new Map(), subscribers: 0 }));
      const old = ch.byNode.get(node);
      ch.subscribers += subscribers - (old?.subscribers ?? 0);
      ch.byNode.set(node, { connections, subscribers });
    }
    const after = this.#shares.get(channel)?.subscribers ?? 0;
    if (before === 0 && after > 0) return { channel, occupied: true };
    if (before > 0 && after === 0) return { channel, occupied: false };
    return undefined;
  }
}
