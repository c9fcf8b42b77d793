/**
 * The node-local index channel → subscribers, and the fan-out. A message frame arrives here encoded
 * once; frames for the same channel that arrive in the same event-loop turn are written to each
 * subscriber together at the end of the turn, so a burst costs one socket write per subscriber
 * rather than one per message (joined once per channel with '\n' for batching clients).
 */

/** A subscriber's write side, as the Hub needs it. */
export interface Sink {
  /** Whether several frames may be joined with '\n' into one transport message. */
  readonly batched: boolean;
  /** Queues one transport message. Must not throw; a sink that cannot keep up closes itself. */
  send(frame: Buffer): void;
  /** Ends the subscriber's connection (the node could not keep its stream consistent). */
  close(code: number, reason: string): void;
}

const NEWLINE = Buffer.from('\n');

export class Hub {
  readonly #subscribers = new Map<string, Set<Sink>>();
  /** Frames waiting for the end of this turn, per channel, in arrival order. */
  #pending = new Map<string, Buffer[]>();
  #scheduled = false;
  #subscriptions = 0;
  /** Callbacks run once, right after the next flush. */
  #afterFlush: (() => void)[] = [];
  readonly #onDelivered: (count: number) => void;
  readonly #flush = (): void => this.#flushPending();

  constructor(onDelivered: (count: number) => void = () => {}) {
    this.#onDelivered = onDelivered;
  }

  /** Adds a subscriber; true when it is the channel's first on this node. */
  add(channel: string, sink: Sink): boolean {
    let set = this.#subscribers.get(channel);
    const first = set === undefined;
    if (set === undefined) {
      set = new Set();
      this.#subscribers.set(channel, set);
    }
    if (!set.has(sink)) {
      set.add(sink);
      this.#subscriptions++;
    }
    return first;
  }

  /** Removes a subscriber; true when it was the channel's last on this node. */
  remove(channel: string, sink: Sink): boolean {
    const set = this.#subscribers.get(channel);
    if (set === undefined || !set.delete(sink)) return false;
    this.#subscriptions--;
    if (set.size > 0) return false;
    this.#subscribers.delete(channel);
    return true;
  }

  /**
   * Swaps one subscriber for another without the channel ever having no subscriber, so the broker
   * subscription stays. False when `from` is no longer subscribed.
   */
  replace(channel: string, from: Sink, to: Sink): boolean {
    const set = this.#subscribers.get(channel);
    if (set === undefined || !set.delete(from)) return false;
    if (set.has(to)) this.#subscriptions--;
    else set.add(to);
    return true;
  }

  /** The channel's local subscribers (a copy). */
  sinksOf(channel: string): Sink[] {
    return [...(this.#subscribers.get(channel) ?? [])];
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
    return this.#subscribers.has(channel);
  }

  get channels(): number {
    return this.#subscribers.size;
  }

  get subscriptions(): number {
    return this.#subscriptions;
  }

  /** Queues `frame` for every local subscriber of `channel`; written at the end of this turn. */
  publish(channel: string, frame: Buffer): void {
    if (!this.#subscribers.has(channel)) return;
    const list = this.#pending.get(channel);
    if (list === undefined) this.#pending.set(channel, [frame]);
    else list.push(frame);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
  }

  #flushPending(): void {
    this.#scheduled = false;
    const pending = this.#pending;
    this.#pending = new Map();
    let delivered = 0;
    for (const [channel, frames] of pending) {
      const set = this.#subscribers.get(channel);
      if (set === undefined) continue;
      if (frames.length === 1) {
        const frame = frames[0] as Buffer;
        for (const sink of set) sink.send(frame);
      } else {
        let joined: Buffer | undefined;
        for (const sink of set) {
          if (sink.batched) {
            joined ??= joinFrames(frames);
            sink.send(joined);
          } else {
            for (const frame of frames) sink.send(frame);
          }
        }
      }
      delivered += set.size * frames.length;
    }
    this.#onDelivered(delivered);
    if (this.#afterFlush.length > 0) {
      const callbacks = this.#afterFlush;
      this.#afterFlush = [];
      for (const cb of callbacks) cb();
    }
  }
}

function joinFrames(frames: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const frame of frames) {
    if (parts.length > 0) parts.push(NEWLINE);
    parts.push(frame);
  }
  return Buffer.concat(parts);
}
