interface Entry {
  readonly fn: (value: never) => void;
  readonly once: boolean;
}

/**
 * A minimal typed event emitter. A listener that throws does not stop the others or the SDK: its
 * error is rethrown from a timer, where the runtime reports it as uncaught.
 */
export class Emitter<Events extends object> {
  #events = new Map<keyof Events, readonly Entry[]>();

  /** Calls `fn` on every `event`. */
  on<K extends keyof Events>(event: K, fn: (value: Events[K]) => void): this {
    return this.#add(event, { fn, once: false });
  }

  /** Calls `fn` on the next `event` only. */
  once<K extends keyof Events>(event: K, fn: (value: Events[K]) => void): this {
    return this.#add(event, { fn, once: true });
  }

  /** Removes `fn` from `event`, or every listener of `event` when `fn` is omitted. */
  off<K extends keyof Events>(event: K, fn?: (value: Events[K]) => void): this {
    const list = this.#events.get(event);
    if (list !== undefined) this.#events.set(event, fn ? list.filter((e) => e.fn !== fn) : []);
    return this;
  }

  protected emit<K extends keyof Events>(event: K, value: Events[K]): void {
    for (const entry of this.#events.get(event) ?? []) {
      const fn = entry.fn as (value: Events[K]) => void;
      if (entry.once) this.off(event, fn);
      invoke(fn, value);
    }
  }

  #add(event: keyof Events, entry: Entry): this {
    this.#events.set(event, [...(this.#events.get(event) ?? []), entry]);
    return this;
  }
}

/** Calls a user callback; what it throws is reported asynchronously, never into SDK code. */
export function invoke<T>(fn: (value: T) => void, value: T): void {
  try {
    fn(value);
  } catch (err) {
    setTimeout(rethrow, 0, err);
  }
}

function rethrow(err: unknown): never {
  throw err;
}
