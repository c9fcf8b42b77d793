import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { Readiness } from './readiness.js';

export interface SheddingOptions {
  /** Connections at which new ones are refused. */
  readonly maxConnections: number;
  /** Resident memory above which new connections are refused; 0 off. */
  readonly memoryBytes: number;
  /** Longest event-loop stall in the last second above which new connections are refused; 0 off. */
  readonly eventLoopLagMs: number;
  readonly connections: () => number;
  readonly readiness: Pick<Readiness, 'set'>;
  /** Resident memory in bytes; `process.memoryUsage.rss` unless a test gives its own. */
  readonly rss?: () => number;
}

/** How often memory and event-loop lag are sampled: a storm of upgrades must not read /proc each. */
const SAMPLE_MS = 1000;

/**
 * Load shedding: whether the node should refuse new connections now, and why. While it sheds,
 * readiness says so (reason `shedding`), so a balancer that reads /readyz sends new clients to
 * other nodes instead of letting each one be refused here; clients already connected are served as
 * before. The connection count is read on every check, so the node accepts again, and is ready
 * again, as soon as one client left; memory and lag are samples at most SAMPLE_MS old.
 */
export class Shedding {
  readonly #o: SheddingOptions;
  readonly #rss: () => number;
  #lag: IntervalHistogram | undefined;
  #lagMs = 0;
  #rssBytes = 0;
  #timer: NodeJS.Timeout | undefined;
  #reason: string | undefined;

  constructor(options: SheddingOptions) {
    this.#o = options;
    this.#rss = options.rss ?? (() => process.memoryUsage.rss());
  }

  /** Starts sampling memory and event-loop lag when a threshold is set. */
  start(): void {
    if (this.#o.eventLoopLagMs > 0) {
      this.#lag = monitorEventLoopDelay({ resolution: 10 });
      this.#lag.enable();
    }
    if (this.#o.memoryBytes > 0 || this.#lag !== undefined) {
      this.#sample();
      this.#timer = setInterval(() => {
        this.#sample();
        this.check();
      }, SAMPLE_MS);
      this.#timer.unref();
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#lag?.disable();
  }

  /** Why new connections are refused now, or undefined; keeps readiness in step. */
  check(): string | undefined {
    const n = this.#o.connections();
    let why: string | undefined;
    if (n >= this.#o.maxConnections)
      why = `at its connection limit (${n} of maxConnections ${this.#o.maxConnections})`;
    else if (this.#o.memoryBytes > 0 && this.#rssBytes > this.#o.memoryBytes)
      why = `resident memory ${this.#rssBytes} bytes is over shedMemoryBytes ${this.#o.memoryBytes}`;
    else if (this.#o.eventLoopLagMs > 0 && this.#lagNow() > this.#o.eventLoopLagMs)
      why = `event-loop lag ${Math.round(this.#lagNow())} ms is over shedEventLoopLagMs ${this.#o.eventLoopLagMs}`;
    if (why !== this.#reason) {
      this.#reason = why;
      this.#o.readiness.set('shedding', why);
    }
    return why;
  }

  /** The longest stall in the window so far and the one before it (so a stall counts 1-2 s). */
  #lagNow(): number {
    const h = this.#lag;
    return h === undefined ? 0 : Math.max(this.#lagMs, h.count > 0 ? h.max / 1e6 : 0);
  }

  #sample(): void {
    if (this.#o.memoryBytes > 0) this.#rssBytes = this.#rss();
    if (this.#lag !== undefined) {
      // The longest stall, not a percentile: a second holds only ~100 samples at a 10 ms
      // resolution, and one 300 ms stall among them does not move the p99.
      this.#lagMs = this.#lag.count > 0 ? this.#lag.max / 1e6 : 0;
      this.#lag.reset();
    }
  }
}
