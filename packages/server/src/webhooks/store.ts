import type { WebhookEventType } from './endpoints.js';

/**
 * Where pending webhook deliveries wait: per endpoint a queue read by one node at a time, and a
 * due-time set for retries and debounced channel events. The in-memory store serves the embedded
 * engine (one node; pending deliveries die with the process); the Redis store keeps them in Redis
 * (a stream per endpoint read through a consumer group), so they survive node restarts and each is
 * handed to exactly one node. This file holds only types.
 */

/** One event for one endpoint, as stored. */
export interface Delivery {
  /** The event id (the same for every endpoint and attempt). */
  readonly event: string;
  readonly type: WebhookEventType;
  readonly channel: string;
  /** The raw JSON body; signed anew on each attempt (the signature carries the attempt's time). */
  readonly body: string;
  /** When the event happened (ms since the epoch): the retry window counts from here. */
  readonly firstAt: number;
  /** Attempts made so far. */
  readonly attempt: number;
}

/** A delivery handed to this node, with what the store needs to settle it. */
export interface Taken {
  readonly endpoint: string;
  readonly delivery: Delivery;
  readonly handle: string;
}

export type ChannelState = 'occupied' | 'vacated';

export interface WebhookStore {
  readonly name: string;
  /**
   * Queues `delivery` for each endpoint id (one atomic step per call). An endpoint whose queue
   * holds `maxPending` deliveries refuses it: resolves with the number refused.
   */
  add(endpoints: readonly string[], delivery: Delivery, maxPending: number): Promise<number>;
  /**
   * A channel's occupancy changed. When the opposite change of the channel is still waiting out
   * its debounce, both cancel (nothing is sent); otherwise `delivery` is queued for `endpoints`
   * at `dueAt`. Resolves with whether it was scheduled.
   */
  debounce(
    channel: string,
    state: ChannelState,
    endpoints: readonly string[],
    delivery: Delivery,
    dueAt: number,
  ): Promise<boolean>;
  /** Hands up to `max` deliveries of one endpoint to this node (those of dead nodes included). */
  take(endpoint: string, max: number): Promise<Taken[]>;
  /** The delivery is settled (delivered or dropped). */
  done(taken: Taken): Promise<void>;
  /** The attempt failed: `next` waits until `dueAt`, then is queued again. */
  retry(taken: Taken, next: Delivery, dueAt: number): Promise<void>;
  /**
   * Queues the retries and debounced events due at `now` for the endpoints in `endpoints`;
   * resolves with how many were dropped (queue full, endpoint no longer configured).
   */
  promote(now: number, endpoints: readonly string[], maxPending: number): Promise<number>;
  /** Deliveries waiting in this process (the in-memory store), for the queue-depth gauge. */
  depth?(): number;
  close(): Promise<void>;
}
