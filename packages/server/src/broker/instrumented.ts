import type {
  Broker,
  BrokerHandler,
  HistoryQuery,
  HistoryResult,
  PublishRequest,
  PublishResult,
} from './broker.js';
import { seconds, type BrokerOp } from '../metrics.js';

/**
 * A broker whose every command is timed, whichever implementation it wraps: the composition root
 * wraps the one it picked, so a new broker (Cluster, Sentinel) is measured without code of its own.
 * Failed commands are timed too: a timeout is exactly the latency an operator must see.
 */
export class InstrumentedBroker implements Broker {
  readonly #inner: Broker;
  readonly #observe: (op: BrokerOp, seconds: number) => void;

  constructor(inner: Broker, observe: (op: BrokerOp, seconds: number) => void) {
    this.#inner = inner;
    this.#observe = observe;
  }

  get name(): string {
    return this.#inner.name;
  }

  get ready(): boolean {
    return this.#inner.ready;
  }

  /** The broker this one measures. */
  get inner(): Broker {
    return this.#inner;
  }

  start(handler: BrokerHandler): Promise<void> {
    return this.#inner.start(handler);
  }

  subscribe(channel: string): Promise<void> {
    return this.#timed('subscribe', this.#inner.subscribe(channel));
  }

  unsubscribe(channel: string): Promise<void> {
    return this.#timed('unsubscribe', this.#inner.unsubscribe(channel));
  }

  publish(req: PublishRequest): Promise<PublishResult> {
    return this.#timed('publish', this.#inner.publish(req));
  }

  probe(): Promise<void> {
    return this.#timed('probe', this.#inner.probe());
  }

  history(channel: string, query: HistoryQuery): Promise<HistoryResult> {
    return this.#timed('history', this.#inner.history(channel, query));
  }

  publishControl(topic: string, payload: string): Promise<number> {
    return this.#timed('publish_control', this.#inner.publishControl(topic, payload));
  }

  subscribeControl(topic: string): Promise<void> {
    return this.#timed('subscribe_control', this.#inner.subscribeControl(topic));
  }

  unsubscribeControl(topic: string): Promise<void> {
    return this.#timed('unsubscribe_control', this.#inner.unsubscribeControl(topic));
  }

  close(): Promise<void> {
    return this.#inner.close();
  }

  #timed<T>(op: BrokerOp, call: Promise<T>): Promise<T> {
    const started = seconds();
    const done = (): void => this.#observe(op, seconds() - started);
    call.then(done, done);
    return call;
  }
}
