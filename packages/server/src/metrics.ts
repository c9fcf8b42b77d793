import { performance } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Every series the server exports, on a registry of its own (several servers may share a
 * process). Base units only (seconds, bytes); label sets are closed lists chosen by the server,
 * never client input. docs/operations.md documents each series with the question it answers.
 *
 * The hot path (one delivery per message per subscriber) touches plain numbers only: per-transport
 * tallies are shared objects a connection holds (`TransportStats`), and latency is observed once
 * per frame per flush with the number of deliveries as its weight; prom-client reads them at
 * scrape time.
 */

/** Transports a connection can use; the label values of every per-transport series. */
export const TRANSPORTS = ['websocket', 'sse', 'long-polling'] as const;
export type Transport = (typeof TRANSPORTS)[number];

/** The native dialect's label value; other dialects (Ably) bring their own name. */
export const NATIVE_DIALECT = 'switchboard';

/** What a connection adds to as it delivers: one object per transport, shared by its connections. */
export interface TransportStats {
  /** Message frames written (live and replayed). */
  messages: number;
  /** Bytes of frames written (messages, replies, errors). */
  bytes: number;
  /** Bytes of frames received. */
  received: number;
}

/** A connection as the outbound-queue gauges read it at scrape time. */
export interface QueueHolder {
  /** Bytes accepted for the client and not yet taken by its socket. */
  readonly queuedBytes: number;
}

/** Why a login was refused: a closed list, so a new error text cannot grow the label set. */
export type AuthFailureReason =
  | 'expired'
  | 'revoked'
  | 'signature'
  | 'claims'
  | 'malformed'
  | 'not_configured'
  | 'invalid_credentials';

/** Broker operations timed by `instrumentBroker`. */
export type BrokerOp =
  | 'publish'
  | 'history'
  | 'subscribe'
  | 'unsubscribe'
  | 'probe'
  | 'publish_control'
  | 'subscribe_control'
  | 'unsubscribe_control';

/** Why the node read a channel's history. */
export type HistoryPurpose = 'resume' | 'rewind' | 'page' | 'repair' | 'seed';

/** Seconds; from well under a millisecond (same node, memory) to the 10 s a frozen Redis can take. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface Metrics {
  readonly registry: Registry;
  /** False when the operator turned metrics off (`metrics: false`): nothing per delivery. */
  readonly enabled: boolean;
  readonly connections: Gauge;
  readonly subscriptions: Gauge;
  readonly channels: Gauge;
  /** Read by the admin stats; counted with `published()`. */
  readonly messagesIn: Counter<'source'>;
  /** One message accepted for publishing, from `source` (a transport, or http). */
  published(source: string): void;
  readonly messagesOut: Counter;
  readonly errors: Counter<'code'>;
  readonly disconnects: Counter<'code'>;
  readonly brokerErrors: Counter<'op'>;
  readonly repaired: Counter;
  readonly resumes: Counter<'recovered'>;
  readonly resubscribes: Counter;
  readonly gapRepairs: Counter<'outcome'>;
  readonly slowConsumers: Counter;
  readonly rateLimited: Counter<'kind'>;
  /** One command refused for its connection's rate (pre-bound: a flood calls it per frame). */
  commandRefused(): void;
  readonly historyReads: Counter<'purpose'>;
  /** One publish acknowledged `seconds` after it reached the node. */
  publishAcked(seconds: number): void;
  /** The shared tally of a transport (see TransportStats). */
  stats(transport: Transport): TransportStats;
  /** A connection opened / closed: the per-transport gauges and connect counts. */
  opened(transport: Transport, dialect: string, conn: QueueHolder): void;
  closed(transport: Transport, dialect: string, conn: QueueHolder): void;
  /** `count` deliveries of one frame, `seconds` after the broker assigned it its offset. */
  delivered(seconds: number, count: number): void;
  /** One broker command of `op`, which took `seconds`. */
  brokerCommand(op: BrokerOp, seconds: number): void;
  authFailure(reason: AuthFailureReason): void;
  /** The exposition text: prom-client's, without the blank lines it puts between series. */
  exposition(): Promise<string>;
}

/** One label set's observations of a TallyHistogram, counted in plain numbers until a scrape. */
export interface Tally {
  observe(value: number): void;
  /** `n` equal observations at once (one per frame per flush for all of its subscribers). */
  observeMany(value: number, n: number): void;
}

/**
 * A histogram observed on the hot path: observations go to plain per-bucket counts (a bound
 * search and three additions, no label hashing, no closure), and prom-client's record is brought
 * up to date when it collects, before every scrape. prom-client has no way to add counts other
 * than one observe() per observation (which costs more than the publish it measures a share of),
 * so the fold adds to the same per-label record its observe() keeps (sum, count, bucketValues);
 * the exposition is byte for byte what observe() would have produced (metrics.test.ts).
 */
export class TallyHistogram extends Histogram {
  readonly #tallies: { labels: Record<string, string>; t: Counts }[] = [];
  readonly #bounds: readonly number[];

  constructor(config: ConstructorParameters<typeof Histogram>[0] & { buckets: number[] }) {
    super({
      ...config,
      collect() {
        (this as TallyHistogram).fold();
      },
    });
    this.#bounds = [...config.buckets].sort((a, b) => a - b);
  }

  /** The tally of one label set (of none, for a histogram without labels). */
  tally(labels: Record<string, string> = {}): Tally {
    const t = new Counts(this.#bounds);
    this.#tallies.push({ labels, t });
    return t;
  }

  /** Moves every tally into prom-client's records (its collect hook: run by every scrape). */
  fold(): void {
    const self = this as unknown as HistogramInternals;
    for (const { labels, t } of this.#tallies) {
      if (t.count === 0) continue;
      let record = findRecord(self, labels);
      if (record === undefined) {
        this.zero(labels);
        record = findRecord(self, labels);
        if (record === undefined) continue;
      }
      record.sum += t.sum;
      record.count += t.count;
      const bounds = this.#bounds;
      for (let i = 0; i < bounds.length; i++) {
        const n = t.buckets[i] as number;
        if (n === 0) continue;
        const bound = bounds[i] as number;
        record.bucketValues[bound] = (record.bucketValues[bound] ?? 0) + n;
      }
      t.clear();
    }
  }
}

class Counts implements Tally {
  /** Observations per bucket, by the index of its upper bound (the last: above every bound). */
  readonly buckets: Float64Array;
  sum = 0;
  count = 0;
  readonly #bounds: readonly number[];

  constructor(bounds: readonly number[]) {
    this.#bounds = bounds;
    this.buckets = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    this.observeMany(value, 1);
  }

  observeMany(value: number, n: number): void {
    if (!(n > 0) || !Number.isFinite(value)) return;
    const bounds = this.#bounds;
    let i = 0;
    while (i < bounds.length && value > (bounds[i] as number)) i++;
    this.buckets[i] = (this.buckets[i] as number) + n;
    this.sum += value * n;
    this.count += n;
  }

  clear(): void {
    this.buckets.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

function findRecord(
  h: HistogramInternals,
  labels: Record<string, string>,
): HistogramRecord | undefined {
  const names = Object.keys(labels);
  for (const r of Object.values(h.hashMap))
    if (r !== undefined && names.every((k) => r.labels[k] === labels[k])) return r;
  return undefined;
}

interface HistogramRecord {
  labels: Record<string, string | number>;
  sum: number;
  count: number;
  bucketValues: Record<number, number>;
}

interface HistogramInternals {
  readonly hashMap: Record<string, HistogramRecord | undefined>;
}

export function createMetrics(
  read: {
    subscriptions(): number;
    channels(): number;
    connections(): number;
    /** The node's `maxConnections` (0: none). */
    maxConnections?(): number;
  },
  enabled = true,
): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Gauges named like counters: `promtool check metrics` rejects them, and a dashboard applying
  // rate() to a *_total would mislead. Nothing of ours needs them.
  for (const name of [
    'nodejs_active_handles_total',
    'nodejs_active_requests_total',
    'nodejs_active_resources_total',
  ])
    registry.removeSingleMetric(name);
  const registers = [registry];

  const tallies = new Map<Transport, TransportStats>(
    TRANSPORTS.map((t) => [t, { messages: 0, bytes: 0, received: 0 }]),
  );
  const stats = (t: Transport): TransportStats => tallies.get(t) as TransportStats;
  /** Open connections per transport and dialect ("transport\ndialect" → count). */
  const open = new Map<string, number>();
  const holders = new Set<QueueHolder>();

  const sentMessages = new Counter({
    name: 'switchboard_transport_messages_sent_total',
    help: 'Message frames written to clients of this node, by transport (live and replayed)',
    labelNames: ['transport'],
    registers,
    collect: () => moveTallies(),
  });
  const sentBytes = new Counter({
    name: 'switchboard_sent_bytes_total',
    help: 'Bytes of frames written to clients of this node (messages, replies, errors), by transport',
    labelNames: ['transport'],
    registers,
    collect: () => moveTallies(),
  });
  const receivedBytes = new Counter({
    name: 'switchboard_received_bytes_total',
    help: 'Bytes of command frames received from clients of this node, by transport',
    labelNames: ['transport'],
    registers,
    collect: () => moveTallies(),
  });
  // The three counters above are fed from the shared tallies, once per scrape; whichever is
  // collected first moves every tally, so all three read the same instant.
  const last = new Map<Transport, TransportStats>(
    TRANSPORTS.map((t) => [t, { messages: 0, bytes: 0, received: 0 }]),
  );
  const moveTallies = (): void => {
    for (const t of TRANSPORTS) {
      const now = stats(t);
      const before = last.get(t) as TransportStats;
      if (now.messages > before.messages)
        sentMessages.inc({ transport: t }, now.messages - before.messages);
      if (now.bytes > before.bytes) sentBytes.inc({ transport: t }, now.bytes - before.bytes);
      if (now.received > before.received)
        receivedBytes.inc({ transport: t }, now.received - before.received);
      before.messages = now.messages;
      before.bytes = now.bytes;
      before.received = now.received;
    }
  };
  for (const c of [sentMessages, sentBytes, receivedBytes])
    for (const t of TRANSPORTS) c.inc({ transport: t }, 0);

  new Gauge({
    name: 'switchboard_transport_connections',
    help: 'Open client connections on this node, by transport and dialect',
    labelNames: ['transport', 'dialect'],
    registers,
    collect() {
      this.reset();
      for (const t of TRANSPORTS) this.set({ transport: t, dialect: NATIVE_DIALECT }, 0);
      for (const [key, n] of open) {
        const [transport, dialect] = key.split('\n') as [string, string];
        this.set({ transport, dialect }, n);
      }
    },
  });
  const connects = new Counter({
    name: 'switchboard_connects_total',
    help: 'Client connections accepted by this node, by transport and dialect',
    labelNames: ['transport', 'dialect'],
    registers,
  });
  for (const t of TRANSPORTS) connects.inc({ transport: t, dialect: NATIVE_DIALECT }, 0);

  new Gauge({
    name: 'switchboard_outbound_queue_max_bytes',
    help: 'Largest outbound queue of one connection of this node (bytes accepted, not yet taken by the socket)',
    registers,
    collect() {
      let max = 0;
      for (const h of holders) max = Math.max(max, h.queuedBytes);
      this.set(max);
    },
  });
  new Gauge({
    name: 'switchboard_outbound_queue_bytes',
    help: 'Sum of the outbound queues of every connection of this node',
    registers,
    collect() {
      let sum = 0;
      for (const h of holders) sum += h.queuedBytes;
      this.set(sum);
    },
  });

  const deliveryLatency = new TallyHistogram({
    name: 'switchboard_delivery_latency_seconds',
    help: "Time from the broker's assignment of a message's offset to its write to a client socket of this node, one observation per delivery",
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const publishAck = new TallyHistogram({
    name: 'switchboard_publish_ack_latency_seconds',
    help: 'Time from a publish reaching the node to the broker confirming it stored (what the publisher waits for its acknowledgement)',
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const brokerLatency = new TallyHistogram({
    name: 'switchboard_broker_command_duration_seconds',
    help: 'Duration of broker commands, by operation (failed ones included)',
    labelNames: ['op'],
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const brokerOps: BrokerOp[] = [
    'publish',
    'history',
    'subscribe',
    'unsubscribe',
    'probe',
    'publish_control',
    'subscribe_control',
    'unsubscribe_control',
  ];
  const deliveryTally = deliveryLatency.tally();
  const publishAckTally = publishAck.tally();
  /** Publishes per source since the last scrape (the counter takes them in its collect). */
  const publishedBy = new Map<string, number>();
  const messagesIn = new Counter<'source'>({
    name: 'switchboard_messages_published_total',
    help: 'Messages accepted for publishing by this node, by where they came from (a transport, or http for the REST API)',
    labelNames: ['source'],
    registers,
    collect() {
      for (const [source, n] of publishedBy) if (n > 0) this.inc({ source }, n);
      publishedBy.clear();
    },
  });
  const brokerTallies = new Map(brokerOps.map((op) => [op, brokerLatency.tally({ op })]));
  for (const op of brokerOps) brokerLatency.zero({ op });

  const authFailures = new Counter({
    name: 'switchboard_auth_failures_total',
    help: 'Refused logins (WebSocket, SSE, long-polling and REST), by reason',
    labelNames: ['reason'],
    registers,
  });
  const reasons: AuthFailureReason[] = [
    'expired',
    'revoked',
    'signature',
    'claims',
    'malformed',
    'not_configured',
    'invalid_credentials',
  ];
  for (const reason of reasons) authFailures.inc({ reason }, 0);

  // Event-loop utilisation as a counter of busy seconds: rate() over any window gives the share of
  // time the loop was busy, for every scraper alike (a gauge "since the last scrape" would depend
  // on who scraped last).
  let eluBase = performance.eventLoopUtilization();
  let activeSeconds = 0;
  new Counter({
    name: 'switchboard_event_loop_active_seconds_total',
    help: 'Time the event loop spent running callbacks (rate() of it is the event-loop utilisation, 0 to 1)',
    registers,
    collect() {
      const now = performance.eventLoopUtilization();
      const delta = performance.eventLoopUtilization(now, eluBase);
      eluBase = now;
      activeSeconds = delta.active / 1000;
      if (activeSeconds > 0) this.inc(activeSeconds);
    },
  });

  const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
    new Counter<L>({ name, help, labelNames, registers });

  const resumes = counter(
    'switchboard_resumes_total',
    'Subscribes with a position, by whether everything after it was recovered',
    ['recovered'],
  );
  resumes.inc({ recovered: 'true' }, 0);
  resumes.inc({ recovered: 'false' }, 0);
  const gapRepairs = counter(
    'switchboard_gap_repairs_total',
    'Gaps in pub/sub delivery this node repaired from history, by outcome (lost: no longer in history, subscribers told to resume)',
    ['outcome'],
  );
  gapRepairs.inc({ outcome: 'repaired' }, 0);
  gapRepairs.inc({ outcome: 'lost' }, 0);
  const rateLimited = counter(
    'switchboard_rate_limited_total',
    'Requests refused for a rate: commands over a connection’s rate, connections over the per-address rate',
    ['kind'],
  );
  rateLimited.inc({ kind: 'command' }, 0);
  rateLimited.inc({ kind: 'connection' }, 0);
  const refusedCommands = rateLimited.labels({ kind: 'command' });
  const historyReads = counter(
    'switchboard_history_reads_total',
    'History reads this node sent to the broker, by purpose',
    ['purpose'],
  );
  for (const purpose of ['resume', 'rewind', 'page', 'repair', 'seed'])
    historyReads.inc({ purpose }, 0);

  new Gauge({
    name: 'switchboard_max_connections',
    help: 'Connections this node accepts before refusing new ones (maxConnections; 0: no limit)',
    registers,
    collect() {
      this.set(read.maxConnections?.() ?? 0);
    },
  });

  return {
    registry,
    enabled,
    connections: new Gauge({
      name: 'switchboard_connections',
      help: 'Open client connections on this node',
      registers,
      collect() {
        this.set(read.connections());
      },
    }),
    subscriptions: new Gauge({
      name: 'switchboard_subscriptions',
      help: 'Channel subscriptions held by clients of this node',
      registers,
      collect() {
        this.set(read.subscriptions());
      },
    }),
    channels: new Gauge({
      name: 'switchboard_channels',
      help: 'Channels with at least one subscriber on this node',
      registers,
      collect() {
        this.set(read.channels());
      },
    }),
    messagesIn,
    published(source) {
      publishedBy.set(source, (publishedBy.get(source) ?? 0) + 1);
    },
    messagesOut: counter(
      'switchboard_messages_delivered_total',
      'Message deliveries written to clients of this node (one per message per subscriber)',
    ),
    errors: counter(
      'switchboard_command_errors_total',
      'Commands answered with an error, by code',
      ['code'],
    ),
    disconnects: counter(
      'switchboard_disconnects_total',
      'Connections closed (or upgrades refused) by the server, by close code or HTTP status',
      ['code'],
    ),
    brokerErrors: counter(
      'switchboard_broker_errors_total',
      'Failed broker operations, by operation',
      ['op'],
    ),
    repaired: counter(
      'switchboard_gap_repaired_messages_total',
      'Messages this node fetched from history because pub/sub skipped them',
    ),
    resumes,
    resubscribes: counter(
      'switchboard_broker_resubscribes_total',
      'Times the broker link came back and this node resubscribed its channels',
    ),
    gapRepairs,
    slowConsumers: counter(
      'switchboard_slow_consumer_disconnects_total',
      'Connections closed because their outbound queue went over maxOutboundBytes (code 3008)',
    ),
    rateLimited,
    commandRefused: () => refusedCommands.inc(),
    historyReads,
    publishAcked: (s) => publishAckTally.observe(s),
    stats,
    opened(transport, dialect, conn) {
      const key = `${transport}\n${dialect}`;
      open.set(key, (open.get(key) ?? 0) + 1);
      holders.add(conn);
      connects.inc({ transport, dialect });
    },
    closed(transport, dialect, conn) {
      if (!holders.delete(conn)) return;
      const key = `${transport}\n${dialect}`;
      open.set(key, (open.get(key) ?? 1) - 1);
    },
    delivered(seconds, count) {
      deliveryTally.observeMany(seconds > 0 ? seconds : 0, count);
    },
    brokerCommand(op, seconds) {
      brokerTallies.get(op)?.observe(seconds);
    },
    authFailure(reason) {
      authFailures.inc({ reason });
    },
    async exposition() {
      return (await registry.metrics()).replace(/\n{2,}/g, '\n');
    },
  };
}

/** The closed reason of a refusal message (auth-log.ts, jwt.ts and the API's texts). */
export function authFailureReason(message: string): AuthFailureReason {
  if (/expired/i.test(message)) return 'expired';
  if (/revoked/i.test(message)) return 'revoked';
  if (/not configured/i.test(message)) return 'not_configured';
  if (/invalid credentials|api key/i.test(message)) return 'invalid_credentials';
  if (/signature|algorithm|key/i.test(message)) return 'signature';
  if (/claim|sub |lifetime|iat|audience|issuer/i.test(message)) return 'claims';
  return 'malformed';
}

/** A monotonic clock in seconds, for durations. */
export function seconds(): number {
  return performance.now() / 1000;
}
