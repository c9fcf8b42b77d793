import type { ChannelState, Delivery, Taken, WebhookStore } from './store.js';

interface Due {
  readonly at: number;
  readonly endpoints: readonly string[];
  readonly delivery: Delivery;
  /** The channel whose debounced change this is ('' for a retry). */
  readonly channel: string;
  readonly state?: ChannelState;
}

/**
 * Pending deliveries in this process (the embedded engine: one node). Same contract as the Redis
 * store; everything pending is lost with the process (docs/operations.md says so).
 */
export class MemoryWebhookStore implements WebhookStore {
  readonly name = 'memory';
  readonly #queues = new Map<string, Delivery[]>();
  readonly #taken = new Map<string, Taken>();
  #due: Due[] = [];
  readonly #debounced = new Map<string, Due>();
  #seq = 0;

  add(endpoints: readonly string[], delivery: Delivery, maxPending: number): Promise<number> {
    let refused = 0;
    for (const e of endpoints) {
      let q = this.#queues.get(e);
      if (q === undefined) this.#queues.set(e, (q = []));
      if (q.length >= maxPending) refused++;
      else q.push(delivery);
    }
    return Promise.resolve(refused);
  }

  debounce(
    channel: string,
    state: ChannelState,
    endpoints: readonly string[],
    delivery: Delivery,
    dueAt: number,
  ): Promise<boolean> {
    const waiting = this.#debounced.get(channel);
    if (waiting !== undefined) {
      if (waiting.state !== state) {
        this.#debounced.delete(channel);
        this.#due = this.#due.filter((d) => d !== waiting);
      }
      return Promise.resolve(false);
    }
    const due: Due = { at: dueAt, endpoints, delivery, channel, state };
    this.#debounced.set(channel, due);
    this.#due.push(due);
    return Promise.resolve(true);
  }

  take(endpoint: string, max: number): Promise<Taken[]> {
    const q = this.#queues.get(endpoint);
    if (q === undefined || q.length === 0) return Promise.resolve([]);
    const out = q.splice(0, max).map((delivery) => {
      const t: Taken = { endpoint, delivery, handle: String(this.#seq++) };
      this.#taken.set(t.handle, t);
      return t;
    });
    return Promise.resolve(out);
  }

  done(taken: Taken): Promise<void> {
    this.#taken.delete(taken.handle);
    return Promise.resolve();
  }

  retry(taken: Taken, next: Delivery, dueAt: number): Promise<void> {
    this.#taken.delete(taken.handle);
    this.#due.push({ at: dueAt, endpoints: [taken.endpoint], delivery: next, channel: '' });
    return Promise.resolve();
  }

  promote(now: number, endpoints: readonly string[], maxPending: number): Promise<number> {
    if (!this.#due.some((d) => d.at <= now)) return Promise.resolve(0);
    const ready = this.#due.filter((d) => d.at <= now);
    this.#due = this.#due.filter((d) => d.at > now);
    const known = new Set(endpoints);
    let dropped = 0;
    for (const d of ready) {
      if (d.channel !== '' && this.#debounced.get(d.channel) === d)
        this.#debounced.delete(d.channel);
      for (const e of d.endpoints) {
        const q = this.#queues.get(e) ?? [];
        this.#queues.set(e, q);
        if (!known.has(e) || q.length >= maxPending) dropped++;
        else q.push(d.delivery);
      }
    }
    return Promise.resolve(dropped);
  }

  depth(): number {
    let n = this.#due.length + this.#taken.size;
    for (const q of this.#queues.values()) n += q.length;
    return n;
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
