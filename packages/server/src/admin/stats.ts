import { DisconnectCode, ErrorCode } from '@switchboard/protocol';
import type { Metrics } from '../metrics.js';

/**
 * What this node tells the admin API about itself: the numbers /metrics exposes, read from the
 * same prom-client objects, plus a bounded ring of recent errors and refusals.
 */

export interface NodeOverview {
  readonly id: string;
  readonly version: string;
  readonly engine: string;
  readonly broker: string;
  readonly startedAt: string;
  readonly uptimeS: number;
  readonly connections: number;
  readonly channels: number;
  readonly messagesInPerSec: number;
  readonly messagesOutPerSec: number;
  readonly eventLoopLagMs: number;
  readonly ready: boolean;
}

export interface LatencyHistogram {
  /** Cumulative, as in Prometheus; the last is `+Inf`. */
  readonly buckets: readonly { readonly le: number | '+Inf'; readonly count: number }[];
  readonly count: number;
  readonly sum: number;
}

export interface ErrorEntry {
  readonly at: string;
  readonly node: string;
  readonly code: number;
  readonly name: string;
  readonly message: string;
  readonly channel?: string;
  readonly address?: string;
}

const NAMES = new Map<number, string>([
  ...Object.entries(ErrorCode).map(([k, v]) => [v, k] as [number, string]),
  ...Object.entries(DisconnectCode).map(([k, v]) => [v, k] as [number, string]),
]);

export function codeName(code: number): string {
  return NAMES.get(code) ?? 'UNKNOWN';
}

/**
 * The last `size` errors of this node, oldest overwritten first. The same refusal (code, address,
 * message) is kept once a second: a client retrying a bad token in a loop must not push every
 * other entry out, nor cost an entry per attempt.
 */
export class ErrorRing {
  readonly #entries: (ErrorEntry | undefined)[];
  readonly #node: string;
  #next = 0;
  #second = 0;
  readonly #seen = new Set<string>();

  constructor(node: string, size = 200) {
    this.#node = node;
    this.#entries = new Array<ErrorEntry | undefined>(size);
  }

  push(e: {
    code: number;
    message: string;
    channel?: string | undefined;
    address?: string | undefined;
  }): void {
    const second = Math.floor(Date.now() / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#seen.clear();
    }
    const key = `${e.code}\n${e.address ?? ''}\n${e.message}`;
    if (this.#seen.has(key) || this.#seen.size >= 1000) return;
    this.#seen.add(key);
    this.#entries[this.#next] = {
      at: new Date().toISOString(),
      node: this.#node,
      code: e.code,
      name: codeName(e.code),
      message: e.message.slice(0, 300),
      ...(e.channel !== undefined && { channel: e.channel }),
      ...(e.address !== undefined && { address: e.address }),
    };
    this.#next = (this.#next + 1) % this.#entries.length;
  }

  /** Newest first. */
  last(limit: number): ErrorEntry[] {
    const out: ErrorEntry[] = [];
    const n = this.#entries.length;
    for (let i = 1; i <= n && out.length < limit; i++) {
      const e = this.#entries[(this.#next - i + n) % n];
      if (e === undefined) break;
      out.push(e);
    }
    return out;
  }
}

export interface StatsSources {
  readonly metrics: Metrics;
  readonly info: () => Omit<
    NodeOverview,
    'messagesInPerSec' | 'messagesOutPerSec' | 'eventLoopLagMs' | 'uptimeS'
  > & { readonly uptimeMs: number };
}

const SAMPLE_MS = 1000;

/** Samples the message counters once a second to turn them into per-second rates. */
export class NodeStats {
  readonly #s: StatsSources;
  #timer: NodeJS.Timeout | undefined;
  #last = { at: 0, inTotal: 0, outTotal: 0 };
  #rates = { in: 0, out: 0 };

  constructor(sources: StatsSources) {
    this.#s = sources;
  }

  start(): void {
    void this.#sample();
    this.#timer = setInterval(() => void this.#sample(), SAMPLE_MS).unref();
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #totals(): Promise<{ inTotal: number; outTotal: number }> {
    const [inM, outM] = await Promise.all([
      this.#s.metrics.messagesIn.get(),
      this.#s.metrics.messagesOut.get(),
    ]);
    const sum = (m: { values: readonly { value: number }[] }): number =>
      m.values.reduce((a, v) => a + v.value, 0);
    return { inTotal: sum(inM), outTotal: sum(outM) };
  }

  async #sample(): Promise<void> {
    const now = Date.now();
    const t = await this.#totals();
    const dt = (now - this.#last.at) / 1000;
    if (this.#last.at !== 0 && dt > 0) {
      this.#rates = {
        in: Math.max(0, (t.inTotal - this.#last.inTotal) / dt),
        out: Math.max(0, (t.outTotal - this.#last.outTotal) / dt),
      };
    }
    this.#last = { at: now, ...t };
  }

  async overview(): Promise<NodeOverview> {
    const info = this.#s.info();
    const { uptimeMs, ...rest } = info;
    const lag = this.#s.metrics.registry.getSingleMetric('nodejs_eventloop_lag_seconds');
    const lagValue = lag === undefined ? 0 : ((await lag.get()).values[0]?.value ?? 0);
    return {
      ...rest,
      uptimeS: Math.round(uptimeMs / 1000),
      messagesInPerSec: round(this.#rates.in),
      messagesOutPerSec: round(this.#rates.out),
      eventLoopLagMs: round(lagValue * 1000),
    };
  }

  /** switchboard_delivery_latency_seconds: publish (offset assigned) to write to a client socket. */
  async latency(): Promise<LatencyHistogram> {
    const h = this.#s.metrics.registry.getSingleMetric('switchboard_delivery_latency_seconds');
    if (h === undefined) return { buckets: [], count: 0, sum: 0 };
    const values = (await h.get()).values;
    const buckets: { le: number | '+Inf'; count: number }[] = [];
    let count = 0;
    let sum = 0;
    for (const v of values) {
      const name = (v as { metricName?: string }).metricName ?? '';
      if (name.endsWith('_bucket')) {
        const le = v.labels['le'];
        buckets.push({ le: le === '+Inf' ? '+Inf' : Number(le), count: v.value });
      } else if (name.endsWith('_count')) count = v.value;
      else if (name.endsWith('_sum')) sum = v.value;
    }
    return { buckets, count, sum };
  }
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

/** Adds histograms bucket by bucket (every node uses the same bounds). */
export function mergeHistograms(all: readonly LatencyHistogram[]): LatencyHistogram {
  const byLe = new Map<number | '+Inf', number>();
  let count = 0;
  let sum = 0;
  for (const h of all) {
    for (const b of h.buckets) byLe.set(b.le, (byLe.get(b.le) ?? 0) + b.count);
    count += h.count;
    sum += h.sum;
  }
  const buckets = [...byLe.entries()]
    .map(([le, c]) => ({ le, count: c }))
    .sort((a, b) => (a.le === '+Inf' ? 1 : b.le === '+Inf' ? -1 : a.le - b.le));
  return { buckets, count, sum };
}
