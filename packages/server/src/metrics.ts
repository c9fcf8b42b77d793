import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

/** Every metric the server exports, on a registry of its own (several servers may share a process). */
export interface Metrics {
  readonly registry: Registry;
  readonly connections: Gauge;
  readonly subscriptions: Gauge;
  readonly channels: Gauge;
  readonly messagesIn: Counter<'source'>;
  readonly messagesOut: Counter;
  readonly errors: Counter<'code'>;
  readonly disconnects: Counter<'code'>;
  readonly brokerErrors: Counter<'op'>;
  readonly repaired: Counter;
  readonly resumes: Counter<'recovered'>;
}

export function createMetrics(read: {
  subscriptions(): number;
  channels(): number;
  connections(): number;
}): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    connections: new Gauge({
      name: 'switchboard_connections',
      help: 'Open client connections on this node',
      registers: [registry],
      collect() {
        this.set(read.connections());
      },
    }),
    subscriptions: new Gauge({
      name: 'switchboard_subscriptions',
      help: 'Channel subscriptions held by clients of this node',
      registers: [registry],
      collect() {
        this.set(read.subscriptions());
      },
    }),
    channels: new Gauge({
      name: 'switchboard_channels',
      help: 'Channels with at least one subscriber on this node',
      registers: [registry],
      collect() {
        this.set(read.channels());
      },
    }),
    messagesIn: new Counter({
      name: 'switchboard_messages_published_total',
      help: 'Messages accepted for publishing by this node',
      labelNames: ['source'],
      registers: [registry],
    }),
    messagesOut: new Counter({
      name: 'switchboard_messages_delivered_total',
      help: 'Message deliveries written to clients of this node (one per message per subscriber)',
      registers: [registry],
    }),
    errors: new Counter({
      name: 'switchboard_command_errors_total',
      help: 'Commands answered with an error, by code',
      labelNames: ['code'],
      registers: [registry],
    }),
    disconnects: new Counter({
      name: 'switchboard_disconnects_total',
      help: 'Connections closed by the server, by close code',
      labelNames: ['code'],
      registers: [registry],
    }),
    brokerErrors: new Counter({
      name: 'switchboard_broker_errors_total',
      help: 'Failed broker operations, by operation',
      labelNames: ['op'],
      registers: [registry],
    }),
    repaired: new Counter({
      name: 'switchboard_gap_repaired_messages_total',
      help: 'Messages this node fetched from history because pub/sub skipped them',
      registers: [registry],
    }),
    resumes: new Counter({
      name: 'switchboard_resumes_total',
      help: 'Subscribes with a position, by whether everything after it was recovered',
      labelNames: ['recovered'],
      registers: [registry],
    }),
  };
}
