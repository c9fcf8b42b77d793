/**
 * Whether this node should receive new clients (`/readyz`), as a list of reasons it should not.
 *
 * Two kinds of reason:
 * - **Decisions** the node takes about itself (draining on SIGTERM, shedding load): they count at
 *   once, since the balancer should stop sending clients the moment the node decided.
 * - **Faults** of what the node depends on (the broker cannot be reached, or cannot take writes:
 *   Redis frozen, out of memory): they count only once they have lasted `graceMs`. Every node
 *   sees the same Redis, so a fault that pulled a node out at once would pull all of them out at
 *   once on a blip of a second, and a balancer with no ready backend refuses everyone. A node in
 *   the grace period still serves (publishes fail with 108/118, which clients retry). Once a fault
 *   counted, the node is ready again only after `recoverMs` without it, so a flapping Redis does
 *   not flap the balancer.
 *
 * Faults are learnt from a probe run every `probeMs` (a cheap write, so an idle node notices a
 * Redis that refuses writes) and from the outcome of every publish.
 */

export interface ReadinessOptions {
  /** How long a fault must last before the node reports not ready. */
  readonly graceMs: number;
  /** How long a counted fault must be gone before the node reports ready again. */
  readonly recoverMs: number;
  /** How often `probe` runs; 0 never. */
  readonly probeMs: number;
  /** Resolves when the broker can take a write; rejects (or times out) when it cannot. */
  readonly probe?: () => Promise<void>;
  /** Whether the broker's connections are up (checked on every read of the state). */
  readonly connected: () => boolean;
  readonly now?: () => number;
}

/** A fault: since when it has been seen without a success in between, and its last error. */
interface Fault {
  readonly since: number;
  readonly error: string;
}

/** What /readyz reports. `reasons` is empty when ready; `faults` lists faults still in grace. */
export interface ReadinessState {
  readonly ready: boolean;
  readonly reasons: readonly string[];
  readonly faults: readonly string[];
}

type FaultName = 'broker-disconnected' | 'broker-not-writable';

export class Readiness {
  readonly #o: ReadinessOptions;
  readonly #now: () => number;
  readonly #decisions = new Map<string, string>();
  readonly #faults = new Map<FaultName, Fault>();
  /** When the last fault that had counted (outlived the grace) ended. */
  #countedEndedAt: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  #probing = false;

  constructor(options: ReadinessOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** Starts the periodic probe. */
  start(): void {
    if (this.#o.probe === undefined || this.#o.probeMs <= 0) return;
    this.#timer = setInterval(() => this.#runProbe(), this.#o.probeMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /**
   * Sets (or, with undefined, clears) a decision of the node's own that makes it not ready at
   * once, e.g. `set('draining', 'shutting down')`.
   */
  set(reason: string, detail: string | undefined): void {
    if (detail === undefined) this.#decisions.delete(reason);
    else this.#decisions.set(reason, detail);
  }

  /**
   * The outcome of a write to the broker (a publish, a probe) that started at `startedAt`: a write
   * that timed out says the broker stopped answering when it was sent, not when it gave up.
   */
  observeWrite(ok: boolean, startedAt: number, error?: string): void {
    this.#observe('broker-not-writable', ok, error ?? 'write failed', startedAt);
  }

  get ready(): boolean {
    return this.state().ready;
  }

  state(): ReadinessState {
    const now = this.#now();
    this.#observe('broker-disconnected', this.#o.connected(), 'connection down', now);
    const reasons = [...this.#decisions].map(([r, d]) => `${r}: ${d}`);
    const faults: string[] = [];
    // Just after a counted fault ended, any fault counts at once: a Redis that flaps keeps the
    // node out until it has been well for recoverMs.
    const recovering =
      this.#countedEndedAt !== undefined && now - this.#countedEndedAt < this.#o.recoverMs;
    for (const [name, f] of this.#faults) {
      const text = `${name}: ${f.error} (for ${now - f.since} ms)`;
      if (recovering || now - f.since >= this.#o.graceMs) reasons.push(text);
      else faults.push(text);
    }
    if (recovering && this.#faults.size === 0)
      reasons.push(
        `recovering: the broker has been well for ${now - (this.#countedEndedAt ?? now)} ms`,
      );
    return { ready: reasons.length === 0, reasons, faults };
  }

  #observe(name: FaultName, ok: boolean, error: string, at: number): void {
    const now = this.#now();
    const f = this.#faults.get(name);
    if (!ok) {
      if (f === undefined) this.#faults.set(name, { since: Math.min(at, now), error });
      return;
    }
    if (f === undefined) return;
    this.#faults.delete(name);
    const recovering =
      this.#countedEndedAt !== undefined && now - this.#countedEndedAt < this.#o.recoverMs;
    if (recovering || now - f.since >= this.#o.graceMs) this.#countedEndedAt = now;
  }

  #runProbe(): void {
    const probe = this.#o.probe;
    if (probe === undefined || this.#probing) return;
    this.#probing = true;
    const startedAt = this.#now();
    probe().then(
      () => {
        this.#probing = false;
        this.observeWrite(true, startedAt);
      },
      (err: unknown) => {
        this.#probing = false;
        this.observeWrite(false, startedAt, err instanceof Error ? err.message : String(err));
      },
    );
  }
}
