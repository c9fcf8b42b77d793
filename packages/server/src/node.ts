import { randomUUID } from 'node:crypto';
import { ErrorCode, encodeMessageHead } from '@switchboard/protocol';
import type { Logger } from 'pino';
import type { Broker, BrokerHandler, HistoryOptions, PublishResult } from './broker/broker.js';
import { ReplyError } from './errors.js';
import type { Hub, Sink } from './hub.js';
import type { Metrics } from './metrics.js';

export interface NodeOptions {
  readonly broker: Broker;
  readonly hub: Hub;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly history: HistoryOptions;
  readonly dedupeMs: number;
  /** How long a subscribe waits for the broker before failing with NOT_AVAILABLE. */
  readonly subscribeTimeoutMs?: number;
}

export interface PublishInput {
  readonly channel: string;
  /** The data as JSON text (encoded once by the edge that received it). */
  readonly dataJson: string;
  readonly name?: string | undefined;
  /** Publisher-supplied id: makes the publish idempotent within the dedupe window. */
  readonly id?: string | undefined;
}

export interface Published extends PublishResult {
  readonly id: string;
}

/**
 * The rules between the edge and the broker: subscribe, unsubscribe, publish. Knows interfaces
 * only; the composition root picks the implementations.
 */
export class Node implements BrokerHandler {
  readonly #broker: Broker;
  readonly #hub: Hub;
  readonly #log: Logger;
  readonly #metrics: Metrics;
  readonly #history: HistoryOptions;
  readonly #dedupeMs: number;
  readonly #subscribeTimeoutMs: number;
  /** Broker subscriptions in flight, so later local subscribers wait for the same confirmation. */
  readonly #subscribing = new Map<string, Promise<void>>();

  constructor(options: NodeOptions) {
    this.#broker = options.broker;
    this.#hub = options.hub;
    this.#log = options.logger;
    this.#metrics = options.metrics;
    this.#history = options.history;
    this.#dedupeMs = options.dedupeMs;
    this.#subscribeTimeoutMs = options.subscribeTimeoutMs ?? 5000;
  }

  get broker(): Broker {
    return this.#broker;
  }

  /**
   * Adds `sink` to the channel's local subscribers; resolves once the broker delivers the channel to
   * this node. On failure the sink is not subscribed and a ReplyError says why.
   */
  async subscribe(sink: Sink, channel: string): Promise<void> {
    let confirmed: Promise<void> | undefined;
    if (this.#hub.add(channel, sink)) {
      confirmed = withTimeout(this.#broker.subscribe(channel), this.#subscribeTimeoutMs);
      this.#subscribing.set(channel, confirmed);
      const clear = (): void => {
        if (this.#subscribing.get(channel) === confirmed) this.#subscribing.delete(channel);
      };
      confirmed.then(clear, clear);
    } else {
      confirmed = this.#subscribing.get(channel);
    }
    if (confirmed === undefined) return;
    try {
      await confirmed;
    } catch (err) {
      this.#metrics.brokerErrors.inc({ op: 'subscribe' });
      this.#log.warn({ err: errorText(err), channel }, 'broker subscribe failed');
      this.unsubscribe(sink, channel);
      throw new ReplyError(
        ErrorCode.NOT_AVAILABLE,
        'subscription backend unavailable, retry later',
        { cause: err },
      );
    }
  }

  /** Removes `sink` from the channel; the broker subscription goes with the last local subscriber. */
  unsubscribe(sink: Sink, channel: string): void {
    if (!this.#hub.remove(channel, sink)) return;
    this.#broker.unsubscribe(channel).catch((err: unknown) => {
      this.#metrics.brokerErrors.inc({ op: 'unsubscribe' });
      this.#log.warn({ err: errorText(err), channel }, 'broker unsubscribe failed');
    });
  }

  /**
   * Publishes one message. Resolves after the broker stored it; rejects with NOT_AVAILABLE when it
   * could not, and then the message was not acknowledged.
   */
  publish(input: PublishInput, source: string): Promise<Published> {
    const id = input.id ?? randomUUID();
    const head = encodeMessageHead({
      channel: input.channel,
      dataJson: input.dataJson,
      id,
      timestamp: Date.now(),
      name: input.name,
    });
    // No await before broker.publish: sequential publishes from one client must reach the broker in order.
    return this.#broker
      .publish({
        channel: input.channel,
        id,
        head,
        history: this.#history,
        dedupeMs: input.id === undefined ? 0 : this.#dedupeMs,
      })
      .then(
        (result) => {
          if (!result.duplicate) this.#metrics.messagesIn.inc({ source });
          return { ...result, id };
        },
        (err: unknown) => {
          this.#metrics.brokerErrors.inc({ op: 'publish' });
          this.#log.warn({ err: errorText(err), channel: input.channel }, 'broker publish failed');
          throw new ReplyError(
            ErrorCode.NOT_AVAILABLE,
            'message could not be stored, retry later',
            { cause: err },
          );
        },
      );
  }

  onPublication(channel: string, frame: Buffer): void {
    this.#hub.publish(channel, frame);
  }

  onResubscribed(channels: readonly string[]): void {
    this.#log.info({ channels: channels.length }, 'broker resubscribed');
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
