/**
 * The Broker contract: cross-node fan-out plus per-channel history, in one atomic step per channel.
 * The broker never sees sessions; it calls back into a BrokerHandler (the Node), and the Hub fans
 * out locally. This file holds only types.
 */

/** A place in a channel's stream. `epoch` names one life of the stream; offsets restart only with a new epoch. */
export interface StreamPosition {
  readonly offset: number;
  readonly epoch: string;
}

export interface HistoryOptions {
  /** Messages kept per channel; 0 keeps none (offsets are still assigned). */
  readonly size: number;
  /** How long history lives after the channel's last publish. */
  readonly ttlMs: number;
}

export interface PublishRequest {
  readonly channel: string;
  /** The message id; the idempotency key when `dedupeMs` > 0. */
  readonly id: string;
  /** The encoded message frame without its position (see protocol `encodeMessageHead`). */
  readonly head: string;
  readonly history: HistoryOptions;
  /** Window in which a second publish with the same (channel, id) is stored once; 0 disables it. */
  readonly dedupeMs: number;
}

export interface PublishResult extends StreamPosition {
  /** True when (channel, id) was already stored inside the dedupe window; the original position is returned. */
  readonly duplicate: boolean;
}

export interface HistoryEntry {
  readonly offset: number;
  /** The complete message frame, as delivered live. */
  readonly frame: Buffer;
}

export interface HistoryQuery {
  /** Return entries after this offset (exclusive). */
  readonly sinceOffset?: number | undefined;
  /** Return entries before this offset (exclusive). */
  readonly untilOffset?: number | undefined;
  /** At most this many entries; 0 returns none, only the current position. */
  readonly limit: number;
  /** Newest first. */
  readonly reverse?: boolean;
}

export interface HistoryResult {
  readonly entries: readonly HistoryEntry[];
  /** The channel's current top position (offset 0 when nothing was ever published in this epoch). */
  readonly position: StreamPosition;
}

/** Implemented by the Node. Called for every publication on a channel this node subscribed to. */
export interface BrokerHandler {
  /**
   * A message frame for `channel`. `offset` and `epoch` are set when the message went through
   * publish(); bridged raw messages have neither. `assignedAt` is when the broker assigned the
   * offset, in wall-clock milliseconds (the broker's clock), when the broker knows it.
   */
  onPublication(
    channel: string,
    frame: Buffer,
    offset: number | undefined,
    epoch: string | undefined,
    assignedAt?: number,
  ): void;
  /** The broker lost its fan-out link and has restored it; messages may have been missed meanwhile. */
  onResubscribed(channels: readonly string[]): void;
  /** A control message on a topic this node subscribed to with subscribeControl(). */
  onControl(topic: string, payload: Buffer): void;
  /**
   * The raw-PUBLISH bridge was not subscribed from `gap.from` to `gap.until` (ms since the epoch):
   * raw messages published meanwhile on channels `covers` accepts never reached this node and
   * cannot be recovered (they have no stream position). Called before any later bridged message.
   */
  onBridgeGap?(covers: (channel: string) => boolean, gap: BridgeGap): void;
}

export interface BridgeGap {
  readonly from: number;
  readonly until: number;
}

/**
 * Why a publish was rejected: `not-stored` when the message certainly was not stored (refused, or
 * never sent), `unknown` when it may have been (a timeout, a connection lost while the command was
 * in flight): a retry with the same id is then stored once.
 */
export type PublishOutcome = 'not-stored' | 'unknown';

export interface Broker {
  readonly name: string;
  /** Connects and starts calling `handler`. Rejects when the backend cannot be reached in time. */
  start(handler: BrokerHandler): Promise<void>;
  /** Whether the broker can currently publish and deliver. */
  readonly ready: boolean;
  /**
   * Starts delivering `channel`'s publications to the handler. The Node calls it when a channel's
   * first local subscriber joins and unsubscribe() when its last one leaves; calls are applied in
   * call order, so interleaved subscribe/unsubscribe leave the backend matching the last call.
   * Resolves once the backend confirmed the subscription.
   */
  subscribe(channel: string): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  /**
   * Stores the message (when history is on), assigns the next offset and publishes it to every
   * node, as one atomic step. Resolves only after the message is stored; rejects otherwise, with a
   * PublishError (publish-error.ts) saying whether it may have been stored all the same.
   */
  publish(req: PublishRequest): Promise<PublishResult>;
  /**
   * A cheap write to the backend, for readiness: resolves when it can take writes, rejects when it
   * refuses them (out of memory) or does not answer in time.
   */
  probe(): Promise<void>;
  history(channel: string, query: HistoryQuery): Promise<HistoryResult>;
  /**
   * Node-to-node messages (revocations, commands for a connection held elsewhere): delivered at
   * most once to every node subscribed to `topic`, never stored. Topics are server-chosen names.
   * Resolves with the number of nodes it was delivered to (0: no node subscribes the topic).
   */
  publishControl(topic: string, payload: string): Promise<number>;
  subscribeControl(topic: string): Promise<void>;
  unsubscribeControl(topic: string): Promise<void>;
  /** Stops deliveries and releases connections. */
  close(): Promise<void>;
}
