/**
 * One connection's publish order across a failed publish (#10). Once a publish on a channel failed
 * with 108, 111 or 118 (not stored, too many in flight, outcome unknown), a later publish of the
 * same connection on that channel could be stored before the failed one is retried: on a failover
 * the publishes in flight fail on the old master while the next one already reaches the new one.
 * So the fence refuses (108, nothing stored) every publish on the channel that is not one of the
 * failed ones, until each failed one was sent again, oldest first. Refused publishes join the list,
 * so a client re-sending everything in its original order passes. A failed publish re-sent while
 * older ones were not means the client gave those up (the SDK re-sends a channel's publishes in
 * order, each only after the older ones): they leave the fence. A fence lapses FENCE_MS after the
 * last failure the broker (or the in-flight limit) answered, its own refusals not counted.
 */

/** How long a channel stays fenced after its last failed publish. */
export const FENCE_MS = 10_000;

/** Channels one connection may have fenced at once; beyond it the oldest fence is dropped. */
const MAX_FENCED_CHANNELS = 128;

/** Failed message ids kept per channel (a client retries at most its in-flight publishes). */
const MAX_FAILED_PER_CHANNEL = 1024;

interface Fence {
  /** Message ids of the failed publishes not sent again yet, in the order they were first sent. */
  readonly failed: { readonly seq: number; readonly id: string }[];
  /** Failed publishes sent again, with their first send's seq: one failing again keeps its place. */
  readonly resent: Map<string, number>;
  until: number;
}

export class PublishFence {
  readonly #fences = new Map<string, Fence>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /**
   * Whether the publish `messageId` (undefined when the client gave none) may go to the broker
   * now. True for the oldest failed publish of the channel, which then leaves the fence.
   */
  admit(channel: string, messageId: string | undefined): boolean {
    const fence = this.#fences.get(channel);
    if (fence === undefined) return true;
    if (this.#now() >= fence.until) {
      this.#fences.delete(channel);
      return true;
    }
    const oldest = fence.failed[0];
    if (oldest === undefined) {
      this.#fences.delete(channel);
      return true;
    }
    const i = messageId === undefined ? -1 : fence.failed.findIndex((f) => f.id === messageId);
    if (i < 0) return false;
    // Those before it were given up: they leave the fence with it.
    const removed = fence.failed.splice(0, i + 1);
    for (const f of removed) fence.resent.delete(f.id);
    const admitted = removed[i] as { seq: number; id: string };
    fence.resent.set(admitted.id, admitted.seq);
    return true;
  }

  /**
   * The publish `messageId`, sent as this connection's `seq`-th publish, failed (108, 111 or 118).
   * Without a message id it cannot be re-sent as itself, so it does not fence. `refused`: the
   * fence itself refused it (it joins the list but does not prolong the fence).
   */
  failed(channel: string, messageId: string | undefined, seq: number, refused = false): void {
    if (messageId === undefined) return;
    let fence = this.#fences.get(channel);
    if (fence === undefined && refused) return;
    if (fence === undefined) {
      if (this.#fences.size >= MAX_FENCED_CHANNELS) {
        const first = this.#fences.keys().next().value;
        if (first !== undefined) this.#fences.delete(first);
      }
      fence = { failed: [], resent: new Map(), until: 0 };
      this.#fences.set(channel, fence);
    }
    if (!refused) fence.until = this.#now() + FENCE_MS;
    if (fence.failed.some((f) => f.id === messageId)) return;
    if (fence.failed.length >= MAX_FAILED_PER_CHANNEL) return;
    seq = fence.resent.get(messageId) ?? seq;
    fence.resent.delete(messageId);
    // Failures can be answered out of send order (different causes): keep the send order.
    let i = fence.failed.length;
    while (i > 0 && (fence.failed[i - 1] as { seq: number }).seq > seq) i--;
    fence.failed.splice(i, 0, { seq, id: messageId });
  }

  /** Channels currently fenced (for tests and metrics). */
  get size(): number {
    return this.#fences.size;
  }
}
