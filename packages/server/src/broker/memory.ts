import { closeMessageFrame } from '@switchboard/protocol';
import type {
  Broker,
  BrokerHandler,
  HistoryEntry,
  HistoryQuery,
  HistoryResult,
  PublishRequest,
  PublishResult,
} from './broker.js';
import { newEpoch } from './epoch.js';

interface ChannelState {
  epoch: string;
  offset: number;
  entries: HistoryEntry[];
  /** When the history expires (and, META_TTL later, the whole state). */
  historyExpiresAt: number;
  touchedAt: number;
  dedupe: Map<string, { offset: number; expiresAt: number }>;
}

/** How long a channel's epoch and offset outlive its last publish, as the Redis meta key does. */
const META_TTL_MS = 24 * 60 * 60 * 1000;
const SWEEP_INTERVAL_MS = 60_000;

/**
 * The embedded engine: one process, no Redis. Same contract as RedisBroker: offsets per channel,
 * an epoch per stream life, history by size and age, idempotent publish.
 */
export class MemoryBroker implements Broker {
  readonly name = 'memory';
  #handler: BrokerHandler | undefined;
  #channels = new Map<string, ChannelState>();
  #subscribed = new Set<string>();
  #controls = new Set<string>();
  #sweep: NodeJS.Timeout | undefined;

  get ready(): boolean {
    return this.#handler !== undefined;
  }

  start(handler: BrokerHandler): Promise<void> {
    this.#handler = handler;
    this.#sweep = setInterval(() => this.#sweepExpired(Date.now()), SWEEP_INTERVAL_MS);
    this.#sweep.unref();
    return Promise.resolve();
  }

  subscribe(channel: string): Promise<void> {
    this.#subscribed.add(channel);
    return Promise.resolve();
  }

  unsubscribe(channel: string): Promise<void> {
    this.#subscribed.delete(channel);
    return Promise.resolve();
  }

  publish(req: PublishRequest): Promise<PublishResult> {
    const now = Date.now();
    const state = this.#state(req.channel, now);
    if (req.dedupeMs > 0) {
      const seen = state.dedupe.get(req.id);
      if (seen !== undefined && seen.expiresAt > now) {
        return Promise.resolve({ offset: seen.offset, epoch: state.epoch, duplicate: true });
      }
    }
    const offset = ++state.offset;
    const frame = Buffer.from(closeMessageFrame(req.head, offset, state.epoch));
    state.touchedAt = now;
    if (req.history.size > 0) {
      state.entries.push({ offset, frame });
      if (state.entries.length > req.history.size)
        state.entries.splice(0, state.entries.length - req.history.size);
      state.historyExpiresAt = now + req.history.ttlMs;
    }
    if (req.dedupeMs > 0) state.dedupe.set(req.id, { offset, expiresAt: now + req.dedupeMs });
    if (this.#subscribed.has(req.channel))
      this.#handler?.onPublication(req.channel, frame, offset, state.epoch, now);
    return Promise.resolve({ offset, epoch: state.epoch, duplicate: false });
  }

  probe(): Promise<void> {
    return Promise.resolve();
  }

  history(channel: string, query: HistoryQuery): Promise<HistoryResult> {
    const state = this.#state(channel, Date.now());
    const position = { offset: state.offset, epoch: state.epoch };
    if (query.limit <= 0) return Promise.resolve({ entries: [], position });
    const since = query.sinceOffset ?? -1;
    const until = query.untilOffset ?? Infinity;
    let entries = state.entries.filter((e) => e.offset > since && e.offset < until);
    entries =
      query.reverse === true
        ? entries.slice(-query.limit).reverse()
        : entries.slice(0, query.limit);
    return Promise.resolve({ entries, position });
  }

  publishControl(topic: string, payload: string): Promise<number> {
    if (!this.#controls.has(topic) || this.#handler === undefined) return Promise.resolve(0);
    this.#handler.onControl(topic, Buffer.from(payload));
    return Promise.resolve(1);
  }

  subscribeControl(topic: string): Promise<void> {
    this.#controls.add(topic);
    return Promise.resolve();
  }

  unsubscribeControl(topic: string): Promise<void> {
    this.#controls.delete(topic);
    return Promise.resolve();
  }

  /** The channels whose stream position is kept (the channel directory lists them). */
  *channelNames(): IterableIterator<string> {
    const now = Date.now();
    for (const [channel, state] of this.#channels)
      if (state.touchedAt + META_TTL_MS > now) yield channel;
  }

  /** The channel's top position without creating it, or undefined when none is kept. */
  positionOf(channel: string): { offset: number; epoch: string } | undefined {
    const state = this.#channels.get(channel);
    if (state === undefined || state.touchedAt + META_TTL_MS <= Date.now()) return undefined;
    return { offset: state.offset, epoch: state.epoch };
  }

  close(): Promise<void> {
    if (this.#sweep !== undefined) clearInterval(this.#sweep);
    this.#handler = undefined;
    this.#subscribed.clear();
    return Promise.resolve();
  }

  #state(channel: string, now: number): ChannelState {
    let state = this.#channels.get(channel);
    if (state !== undefined && state.touchedAt + META_TTL_MS <= now) state = undefined;
    if (state === undefined) {
      state = {
        epoch: newEpoch(),
        offset: 0,
        entries: [],
        historyExpiresAt: 0,
        touchedAt: now,
        dedupe: new Map(),
      };
      this.#channels.set(channel, state);
    } else if (state.entries.length > 0 && state.historyExpiresAt <= now) {
      state.entries = [];
    }
    return state;
  }

  #sweepExpired(now: number): void {
    for (const [channel, state] of this.#channels) {
      if (state.touchedAt + META_TTL_MS <= now) {
        this.#channels.delete(channel);
        continue;
      }
      if (state.historyExpiresAt <= now) state.entries = [];
      for (const [id, seen] of state.dedupe) if (seen.expiresAt <= now) state.dedupe.delete(id);
    }
  }
}
