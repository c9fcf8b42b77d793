import { BATCH_SEPARATOR } from '@switchboard/protocol';
import type { StreamPosition } from './broker/broker.js';
import type { TransportStats } from './metrics.js';

/**
 * The node-local index channel → subscribers, and the fan-out. A message frame arrives here encoded
 * once; frames for the same channel that arrive in the same event-loop turn are written to each
 * subscriber together at the end of the turn, so a burst costs one socket write per subscriber
 * rather than one per message (joined once per channel with '\n' for batching clients).
 *
 * Subscribers whose engine has native topics (uWebSockets.js) are not written one by one: they
 * join the channel's topic, and one call per channel hands the frame to the engine, which copies
 * it into every socket in C++ without a JavaScript call per delivery.
 */

/** A subscriber's write side, as the Hub needs it. */
export interface Sink {
  /**
   * The tally of the sink's transport, shared by all its sinks (metrics.ts); the Hub adds the
   * frames and bytes it writes. Unset: not counted (resume buffers, tests).
   */
  stats?: TransportStats | undefined;
  /** Whether several frames may be joined with '\n' into one transport message. */
  readonly batched: boolean;
  /**
   * Queues one transport message. Must not throw; a sink that cannot keep up closes itself.
   * `position`: the stream position of the (last) message `frame` carries, as the broker assigned
   * it, so a sink that tracks positions (SSE event ids, resume buffers) never reads them back out
   * of the bytes; undefined for frames without one (events, bridged messages). `channel`: the
   * channel the frame's messages belong to, for the same reason.
   */
  send(frame: Buffer, position?: StreamPosition, channel?: string): void;
  /** Queues several transport messages to leave in one socket write, when the sink can. */
  sendMany?(frames: readonly Buffer[], positions?: readonly (StreamPosition | undefined)[]): void;
  /** Ends the subscriber's connection (the node could not keep its stream consistent). */
  close(code: number, reason: string): void;
}

/**
 * A subscriber on an engine with native topics. The Hub calls `join` when it subscribes to a
 * channel and `leave` when it stops; the engine delivers the channel's frames from then on.
 */
export interface TopicSink extends Sink {
  readonly topics: true;
  join(channel: string): void;
  leave(channel: string): void;
}

/** The engine side of native topics: delivers a turn's frames to everyone in `channel`'s topic. */
export interface TopicPublisher {
  publish(channel: string, frames: readonly Buffer[]): void;
}

function isTopicSink(sink: Sink): sink is TopicSink {
  return (sink as Partial<TopicSink>).topics === true;
}

const NEWLINE = Buffer.from(BATCH_SEPARATOR);

export class Hub {
  /** Subscribers written one by one (ws, SSE, long-polling, resume buffers). */
  readonly #subscribers = new Map<string, Set<Sink>>();
  /** Subscribers in the engine's native topic for the channel. */
  readonly #members = new Map<string, Set<TopicSink>>();
  readonly #topics: TopicPublisher | undefined;
  /** Frames waiting for the end of this turn, per channel, in arrival order. */
  #pending = new Map<string, Buffer[]>();
  /** The broker's assignment time (wall-clock ms) of each pending frame, NaN when unknown. */
  #assigned = new Map<string, number[]>();
  /** The stream position of each pending frame's message, undefined when it has none. */
  #positions = new Map<string, (StreamPosition | undefined)[]>();
  #scheduled = false;
  #subscriptions = 0;
  /** Callbacks run once, right after the next flush. */
  #afterFlush: (() => void)[] = [];
  readonly #onDelivered: (count: number) => void;
  readonly #onLatency: ((seconds: number, deliveries: number) => void) | undefined;
  readonly #flush = (): void => this.#flushPending();

  /**
   * `onLatency`: for each frame with a known assignment time, how long ago the broker assigned it
   * when it was written, and to how many subscribers (once per frame per flush, not per socket).
   */
  constructor(
    onDelivered: (count: number) => void = () => {},
    topics?: TopicPublisher,
    onLatency?: (seconds: number, deliveries: number) => void,
  ) {
    this.#onDelivered = onDelivered;
    this.#topics = topics;
    this.#onLatency = onLatency;
  }

  /** Adds a subscriber; true when it is the channel's first on this node. */
  add(channel: string, sink: Sink): boolean {
    const first = !this.has(channel);
    if (this.#insert(channel, sink)) this.#subscriptions++;
    return first;
  }

  /** Removes a subscriber; true when it was the channel's last on this node. */
  remove(channel: string, sink: Sink): boolean {
    if (!this.#delete(channel, sink)) return false;
    this.#subscriptions--;
    return !this.has(channel);
  }

  /**
   * Swaps one subscriber for another without the channel ever having no subscriber, so the broker
   * subscription stays. False when `from` is no longer subscribed.
   */
  replace(channel: string, from: Sink, to: Sink): boolean {
    if (!this.#delete(channel, from)) return false;
    if (!this.#insert(channel, to)) this.#subscriptions--;
    return true;
  }

  /** The channels with a local subscriber (for the admin API's listing). */
  *names(): IterableIterator<string> {
    yield* this.#subscribers.keys();
    for (const c of this.#members.keys()) if (!this.#subscribers.has(c)) yield c;
  }

  /** The channel's local subscribers (a copy). */
  sinksOf(channel: string): Sink[] {
    return [...(this.#subscribers.get(channel) ?? []), ...(this.#members.get(channel) ?? [])];
  }

  /** Adds `sink` to the channel's set (or topic); false when it was there already. */
  #insert(channel: string, sink: Sink): boolean {
    if (this.#topics !== undefined && isTopicSink(sink)) {
      let members = this.#members.get(channel);
      if (members === undefined) {
        members = new Set();
        this.#members.set(channel, members);
      }
      if (members.has(sink)) return false;
      members.add(sink);
      sink.join(channel);
      return true;
    }
    let set = this.#subscribers.get(channel);
    if (set === undefined) {
      set = new Set();
      this.#subscribers.set(channel, set);
    }
    if (set.has(sink)) return false;
    set.add(sink);
    return true;
  }

  /** Takes `sink` out of the channel's set (or topic); false when it was not in it. */
  #delete(channel: string, sink: Sink): boolean {
    if (this.#topics !== undefined && isTopicSink(sink)) {
      const members = this.#members.get(channel);
      if (members === undefined || !members.delete(sink)) return false;
      sink.leave(channel);
      if (members.size === 0) this.#members.delete(channel);
      return true;
    }
    const set = this.#subscribers.get(channel);
    if (set === undefined || !set.delete(sink)) return false;
    if (set.size === 0) this.#subscribers.delete(channel);
    return true;
  }

  /**
   * Resolves once every frame already queued for `channel` has been handed to its subscribers.
   * Resolution runs in a microtask right after the flush, before any new I/O is processed.
   */
  settled(channel: string): Promise<void> {
    if (!this.#pending.has(channel)) return Promise.resolve();
    return new Promise((resolve) => this.#afterFlush.push(resolve));
  }

  has(channel: string): boolean {
    return this.#subscribers.has(channel) || this.#members.has(channel);
  }

  get channels(): number {
    if (this.#members.size === 0) return this.#subscribers.size;
    let n = this.#members.size;
    for (const channel of this.#subscribers.keys()) if (!this.#members.has(channel)) n++;
    return n;
  }

  get subscriptions(): number {
    return this.#subscriptions;
  }

  /**
   * Queues `frame` for every local subscriber of `channel`; written at the end of this turn.
   * `assignedAt`: when the broker assigned it its offset (wall-clock ms), for the latency metric.
   * `position`: the message's stream position, carried as data to the sinks (see Sink.send).
   */
  publish(channel: string, frame: Buffer, assignedAt = NaN, position?: StreamPosition): void {
    if (!this.has(channel)) return;
    const list = this.#pending.get(channel);
    if (list === undefined) {
      this.#pending.set(channel, [frame]);
      this.#assigned.set(channel, [assignedAt]);
      this.#positions.set(channel, [position]);
    } else {
      list.push(frame);
      this.#assigned.get(channel)?.push(assignedAt);
      this.#positions.get(channel)?.push(position);
    }
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
  }

  #flushPending(): void {
    this.#scheduled = false;
    const pending = this.#pending;
    const assigned = this.#assigned;
    const allPositions = this.#positions;
    this.#pending = new Map();
    this.#assigned = new Map();
    this.#positions = new Map();
    let delivered = 0;
    for (const [channel, frames] of pending) {
      let sinks = 0;
      let bytes = 0;
      for (const frame of frames) bytes += frame.length;
      const members = this.#members.get(channel);
      if (members !== undefined) {
        (this.#topics as TopicPublisher).publish(channel, frames);
        sinks += members.size;
        // Every member is a socket of the same engine: one tally for all of them.
        const stats = firstOf(members)?.stats;
        if (stats !== undefined) {
          stats.messages += members.size * frames.length;
          stats.bytes += members.size * bytes;
        }
      }
      const set = this.#subscribers.get(channel);
      if (set !== undefined) {
        sinks += set.size;
        const positions = allPositions.get(channel) ?? [];
        if (frames.length === 1) {
          const frame = frames[0] as Buffer;
          const position = positions[0];
          for (const sink of set) {
            sink.send(frame, position, channel);
            const stats = sink.stats;
            if (stats !== undefined) {
              stats.messages++;
              stats.bytes += bytes;
            }
          }
        } else {
          let joined: Buffer | undefined;
          for (const sink of set) {
            if (sink.batched) {
              joined ??= joinFrames(frames);
              // A batch's position is its last message's, as the last line would say.
              sink.send(joined, positions[frames.length - 1], channel);
            } else if (sink.sendMany !== undefined) {
              sink.sendMany(frames, positions);
            } else {
              for (let i = 0; i < frames.length; i++)
                sink.send(frames[i] as Buffer, positions[i], channel);
            }
            const stats = sink.stats;
            if (stats !== undefined) {
              stats.messages += frames.length;
              stats.bytes += bytes;
            }
          }
        }
      }
      delivered += sinks * frames.length;
      if (this.#onLatency !== undefined && sinks > 0) {
        const now = Date.now();
        for (const at of assigned.get(channel) ?? []) {
          if (!Number.isNaN(at)) this.#onLatency((now - at) / 1000, sinks);
        }
      }
    }
    this.#onDelivered(delivered);
    if (this.#afterFlush.length > 0) {
      const callbacks = this.#afterFlush;
      this.#afterFlush = [];
      for (const cb of callbacks) cb();
    }
  }
}

function firstOf<T>(set: ReadonlySet<T>): T | undefined {
  for (const item of set) return item;
  return undefined;
}

/** Frames as one batch for `switchboard.v1` clients: joined by '\n'. */
export function joinFrames(frames: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const frame of frames) {
    if (parts.length > 0) parts.push(NEWLINE);
    parts.push(frame);
  }
  return Buffer.concat(parts);
}
