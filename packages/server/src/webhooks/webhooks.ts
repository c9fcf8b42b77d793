import { encodeWebhookBody } from '@switchboard/protocol';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Endpoint, WebhookEventType } from './endpoints.js';
import { EVENT_ID_HEADER, SIGNATURE_HEADER, signWebhook } from './signature.js';
import type { ChannelState, Delivery, Taken, WebhookStore } from './store.js';

export interface WebhooksOptions {
  readonly endpoints: readonly Endpoint[];
  readonly store: WebhookStore;
  readonly logger: Logger;
  readonly registry?: Registry | undefined;
  /** First retry waits up to this long (full jitter), doubling per attempt up to retryMaxDelayMs. */
  readonly retryBaseMs: number;
  readonly retryMaxDelayMs: number;
  /** How long after the event it is retried before it is dropped. */
  readonly retryForMs: number;
  /** One request's timeout. */
  readonly timeoutMs: number;
  /** Requests in flight per endpoint on this node. */
  readonly concurrency: number;
  /** Deliveries one endpoint may have waiting; newer ones are dropped beyond it. */
  readonly maxPending: number;
  readonly debounceMs: number;
  /** Entries the delivery log keeps. */
  readonly logSize: number;
  /** How often retries that came due are queued again and idle queues are polled. */
  readonly pollMs?: number;
}

/** One attempt as the delivery log shows it. */
export interface DeliveryLogEntry {
  /** When the attempt ended (ISO 8601). */
  readonly at: string;
  readonly eventId: string;
  readonly type: WebhookEventType;
  readonly channel: string;
  readonly url: string;
  /** 1 for the first attempt. */
  readonly attempt: number;
  /** The HTTP status, or 0 when there was none (refused, timed out). */
  readonly status: number;
  /** ok: delivered; retry: failed, tried again later; dropped: given up (410, retry window over). */
  readonly result: 'ok' | 'retry' | 'dropped';
  readonly durationMs: number;
  readonly error?: string;
}

type DropReason = 'gone' | 'expired' | 'queue_full' | 'overload';

interface Lane {
  readonly endpoint: Endpoint;
  readonly buffer: Taken[];
  inFlight: number;
  fetching: boolean;
}

/** Producer writes (to Redis) that may be unanswered at once before new events are dropped. */
const MAX_PENDING_WRITES = 10_000;

/**
 * Signed webhooks: turns server events into deliveries in the store (written once, by the node
 * where the event happened) and delivers what the store hands this node, per endpoint with at most
 * `concurrency` requests in flight and a small read-ahead buffer, so a slow or dead endpoint holds
 * only its own lane and never anything on the message path. Retries use exponential backoff with
 * full jitter until `retryForMs` after the event; 2xx settles, 410 drops, anything else retries.
 */
export class Webhooks {
  readonly #o: WebhooksOptions;
  readonly #lanes: Lane[];
  readonly #byId = new Map<string, Lane>();
  readonly #log: (DeliveryLogEntry | undefined)[];
  #logNext = 0;
  #pendingWrites = 0;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  readonly #sending = new Set<Promise<void>>();
  /** Reads from the store under way: what they bring after close() began is handed back too. */
  readonly #fetches = new Set<Promise<void>>();
  readonly #results: Counter<'result'> | undefined;
  readonly #dropped: Counter<'reason'> | undefined;
  readonly #latency: Histogram | undefined;

  constructor(options: WebhooksOptions) {
    this.#o = options;
    this.#lanes = options.endpoints.map((endpoint) => ({
      endpoint,
      buffer: [],
      inFlight: 0,
      fetching: false,
    }));
    for (const l of this.#lanes) this.#byId.set(l.endpoint.id, l);
    this.#log = new Array<DeliveryLogEntry | undefined>(Math.max(1, options.logSize));
    const registry = options.registry;
    if (registry !== undefined) {
      const registers = [registry];
      this.#results = new Counter({
        name: 'switchboard_webhook_deliveries_total',
        help: 'Webhook delivery attempts and their outcomes on this node: ok (2xx), failed (an attempt failed), retried (scheduled again), dropped (given up)',
        labelNames: ['result'],
        registers,
      });
      this.#dropped = new Counter({
        name: 'switchboard_webhook_dropped_total',
        help: 'Webhook deliveries given up, by reason: gone (410), expired (retry window over), queue_full (endpoint backlog at webhookMaxPending, or the endpoint left the configuration), overload (the store not answering the producer)',
        labelNames: ['reason'],
        registers,
      });
      // Every label value from the start at 0, so rate() and alerts see them before the first event.
      for (const result of ['ok', 'failed', 'retried', 'dropped']) this.#results.inc({ result }, 0);
      for (const reason of ['gone', 'expired', 'queue_full', 'overload'])
        this.#dropped.inc({ reason }, 0);
      this.#latency = new Histogram({
        name: 'switchboard_webhook_delivery_seconds',
        help: 'Time from a webhook event to its successful delivery (retries included)',
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 600, 3600, 86400],
        registers,
      });
      const lanes = this.#lanes;
      const store = options.store;
      new Gauge({
        name: 'switchboard_webhook_queue_depth',
        help: 'Webhook deliveries held by this node: read ahead and in flight (embedded engine: every pending one)',
        registers,
        collect() {
          let n = 0;
          for (const l of lanes) n += l.buffer.length + l.inFlight;
          this.set(store.depth?.() ?? n);
        },
      });
    }
  }

  /** Whether any endpoint is configured (without one every call here is a no-op). */
  get enabled(): boolean {
    return this.#lanes.length > 0;
  }

  /** Whether an event of `type` on `channel` goes anywhere: lets callers skip building its data. */
  wants(type: WebhookEventType, channel: string): boolean {
    return this.#lanes.some((l) => l.endpoint.events.has(type) && l.endpoint.matches(channel));
  }

  /** Starts polling the store (retries coming due, deliveries other nodes produced). */
  start(): void {
    if (this.#lanes.length === 0 || this.#timer !== undefined) return;
    const every = this.#o.pollMs ?? Math.max(20, Math.min(250, this.#o.retryBaseMs));
    this.#timer = setInterval(() => this.#tick(), every);
    this.#timer.unref();
  }

  /**
   * An event happened here (this node is its only producer): queued once per matching endpoint.
   * `dataJson` is the JSON text of the body's `data`. Never throws, never waits.
   */
  emit(type: WebhookEventType, channel: string, dataJson: string): void {
    const targets = this.#targets(type, channel);
    if (targets.length === 0 || this.#closed) return;
    if (this.#pendingWrites >= MAX_PENDING_WRITES) {
      this.#drop('overload', targets.length);
      return;
    }
    this.#pendingWrites++;
    this.#o.store.add(targets, this.#delivery(type, channel, dataJson), this.#o.maxPending).then(
      (refused) => {
        this.#pendingWrites--;
        if (refused > 0) this.#drop('queue_full', refused);
        this.#pumpAll();
      },
      (err: unknown) => {
        this.#pendingWrites--;
        this.#drop('overload', targets.length);
        this.#o.logger.warn({ err: errorText(err), type, channel }, 'webhook event not stored');
      },
    );
  }

  /**
   * A channel became occupied or vacated (reported once deployment-wide). Sent after
   * `debounceMs` unless the opposite change comes first, when both are dropped: a flapping
   * channel sends one pair or nothing.
   */
  occupancy(channel: string, state: ChannelState): void {
    const type: WebhookEventType = state === 'occupied' ? 'channel.occupied' : 'channel.vacated';
    const targets = this.#targets(type, channel);
    // Both kinds pass the debounce so they cancel each other even when only one is wanted.
    const other = this.#targets(
      state === 'occupied' ? 'channel.vacated' : 'channel.occupied',
      channel,
    );
    if ((targets.length === 0 && other.length === 0) || this.#closed) return;
    const d = this.#delivery(type, channel, '{}');
    this.#o.store
      .debounce(channel, state, targets, d, Date.now() + this.#o.debounceMs)
      .catch((err: unknown) =>
        this.#o.logger.warn({ err: errorText(err), type, channel }, 'webhook event not stored'),
      );
  }

  /** The last `limit` delivery attempts made by this node, newest first. */
  log(limit = 100): DeliveryLogEntry[] {
    const out: DeliveryLogEntry[] = [];
    const n = this.#log.length;
    for (let i = 1; i <= n && out.length < limit; i++) {
      const e = this.#log[(this.#logNext - i + n) % n];
      if (e === undefined) break;
      out.push(e);
    }
    return out;
  }

  /**
   * Stops taking deliveries; waits (up to the request timeout) for the ones in flight, then hands
   * back what was read ahead and never sent, so this node leaves the store holding nothing and
   * another node sends those at once instead of claiming them after `claimIdleMs`.
   */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    const waiting = [...this.#sending, ...this.#fetches];
    if (waiting.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(waiting),
        new Promise((r) => (timer = setTimeout(r, this.#o.timeoutMs + 100))),
      ]);
      clearTimeout(timer);
    }
    const unsent = this.#lanes.flatMap((l) => l.buffer.splice(0));
    await Promise.allSettled(
      // Due now and with its attempt count unchanged: it was never tried. What fails to go back
      // stays pending under this node and is claimed by another after claimIdleMs.
      unsent.map((t) => this.#o.store.retry(t, t.delivery, Date.now())),
    );
    await this.#o.store.close();
  }

  #targets(type: WebhookEventType, channel: string): string[] {
    const out: string[] = [];
    for (const l of this.#lanes)
      if (l.endpoint.events.has(type) && l.endpoint.matches(channel)) out.push(l.endpoint.id);
    return out;
  }

  #delivery(type: WebhookEventType, channel: string, dataJson: string): Delivery {
    const event = 'evt_' + randomBytes(12).toString('hex');
    const at = Date.now();
    const body = encodeWebhookBody({ id: event, type, at, channel, dataJson });
    return { event, type, channel, body, firstAt: at, attempt: 0 };
  }

  #drop(reason: DropReason, n = 1): void {
    this.#results?.inc({ result: 'dropped' }, n);
    this.#dropped?.inc({ reason }, n);
  }

  #tick(): void {
    if (this.#closed) return;
    this.#o.store
      .promote(
        Date.now(),
        this.#lanes.map((l) => l.endpoint.id),
        this.#o.maxPending,
      )
      .then(
        (dropped) => {
          if (dropped > 0) this.#drop('queue_full', dropped);
          this.#pumpAll();
        },
        (err: unknown) => {
          if (!this.#closed)
            this.#o.logger.warn({ err: errorText(err) }, 'webhook retries not moved');
        },
      );
  }

  #pumpAll(): void {
    for (const l of this.#lanes) this.#pump(l);
  }

  #pump(lane: Lane): void {
    if (this.#closed) return;
    while (lane.buffer.length > 0 && lane.inFlight < this.#o.concurrency) {
      const t = lane.buffer.shift() as Taken;
      lane.inFlight++;
      const p = this.#send(lane, t).finally(() => {
        lane.inFlight--;
        this.#sending.delete(p);
        this.#pump(lane);
      });
      this.#sending.add(p);
    }
    // Read ahead only as much as the lane can start soon: what this node takes, no other node can.
    const room = this.#o.concurrency * 2 - lane.buffer.length - lane.inFlight;
    if (room <= 0 || lane.fetching) return;
    lane.fetching = true;
    const reading = this.#o.store.take(lane.endpoint.id, room).then(
      (taken) => {
        lane.fetching = false;
        lane.buffer.push(...taken);
        if (taken.length > 0) this.#pump(lane);
      },
      (err: unknown) => {
        lane.fetching = false;
        if (!this.#closed)
          this.#o.logger.warn(
            { err: errorText(err), url: lane.endpoint.url },
            'webhook read failed',
          );
      },
    );
    this.#fetches.add(reading);
    void reading.finally(() => this.#fetches.delete(reading));
  }

  async #send(lane: Lane, t: Taken): Promise<void> {
    const d = t.delivery;
    const attempt = d.attempt + 1;
    const started = Date.now();
    let status = 0;
    let error: string | undefined;
    try {
      const res = await fetch(lane.endpoint.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'switchboard-webhooks',
          [SIGNATURE_HEADER]: signWebhook(lane.endpoint.secret, d.body, Math.floor(started / 1000)),
          [EVENT_ID_HEADER]: d.event,
        },
        body: d.body,
        signal: AbortSignal.timeout(this.#o.timeoutMs),
        redirect: 'manual',
      });
      status = res.status;
      // The body is not read: release the connection.
      await res.body?.cancel();
    } catch (err) {
      error = errorText(err);
    }
    const now = Date.now();
    let result: DeliveryLogEntry['result'];
    try {
      if (status >= 200 && status < 300) {
        result = 'ok';
        await this.#o.store.done(t);
        this.#results?.inc({ result: 'ok' });
        this.#latency?.observe((now - d.firstAt) / 1000);
      } else if (status === 410) {
        result = 'dropped';
        await this.#o.store.done(t);
        this.#drop('gone');
        this.#o.logger.warn(
          { url: lane.endpoint.url, eventId: d.event },
          'webhook endpoint answered 410 Gone: delivery dropped',
        );
      } else if (now - d.firstAt >= this.#o.retryForMs) {
        result = 'dropped';
        await this.#o.store.done(t);
        this.#results?.inc({ result: 'failed' });
        this.#drop('expired');
        this.#o.logger.warn(
          { url: lane.endpoint.url, eventId: d.event, attempts: attempt },
          'webhook delivery dropped: retry window over',
        );
      } else {
        result = 'retry';
        const cap = Math.min(
          this.#o.retryMaxDelayMs,
          this.#o.retryBaseMs * 2 ** Math.min(30, d.attempt),
        );
        await this.#o.store.retry(t, { ...d, attempt }, now + Math.random() * cap);
        this.#results?.inc({ result: 'failed' });
        this.#results?.inc({ result: 'retried' });
      }
    } catch (err) {
      // The store did not take the outcome: the delivery stays pending and comes back (at least once).
      this.#o.logger.warn({ err: errorText(err), eventId: d.event }, 'webhook outcome not stored');
      return;
    }
    this.#log[this.#logNext] = {
      at: new Date(now).toISOString(),
      eventId: d.event,
      type: d.type,
      channel: d.channel,
      url: lane.endpoint.url,
      attempt,
      status,
      result,
      durationMs: now - started,
      ...(error === undefined ? {} : { error }),
    };
    this.#logNext = (this.#logNext + 1) % this.#log.length;
  }
}

function errorText(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as Error & { cause?: unknown }).cause;
    return cause instanceof Error ? `${err.message}: ${cause.message}` : err.message;
  }
  return String(err);
}
