import type { Logger } from 'pino';
import type { PresenceStore } from './presence.js';

/**
 * The members this node holds, kept in its store: added on join, removed on leave, and refreshed
 * every third of the TTL so they stay listed while their connections live. If this node dies
 * without leaving, its members expire at most `ttlMs` after its last refresh (guarantee 8).
 */
export class PresenceTracker {
  readonly #store: PresenceStore;
  readonly #ttlMs: number;
  readonly #log: Logger;
  /** channel → client id → member JSON. */
  readonly #members = new Map<string, Map<string, string>>();
  readonly #timer: NodeJS.Timeout;

  constructor(store: PresenceStore, ttlMs: number, log: Logger) {
    this.#store = store;
    this.#ttlMs = ttlMs;
    this.#log = log;
    this.#timer = setInterval(() => this.#refresh(), Math.max(100, Math.floor(ttlMs / 3)));
    this.#timer.unref();
  }

  /**
   * Adds a member. Resolves once the store has it, or once the attempt failed (logged): the member
   * stays tracked, so the next refresh adds it when the store is back.
   */
  join(channel: string, clientId: string, info: string): Promise<void> {
    let members = this.#members.get(channel);
    if (members === undefined) this.#members.set(channel, (members = new Map<string, string>()));
    members.set(clientId, info);
    return this.#store
      .add(channel, clientId, info, this.#ttlMs)
      .catch((err: unknown) => this.#warn(err, channel, 'presence add failed'));
  }

  /** Removes a member (a no-op when it is not one). Store calls run in call order, after its add. */
  leave(channel: string, clientId: string): void {
    const members = this.#members.get(channel);
    if (members === undefined || !members.delete(clientId)) return;
    if (members.size === 0) this.#members.delete(channel);
    this.#store
      .remove(channel, clientId)
      .catch((err: unknown) => this.#warn(err, channel, 'presence remove failed'));
  }

  get(channel: string): Promise<string[]> {
    return this.#store.get(channel);
  }

  /** Stops refreshing (shutdown: the connections' leaves remove what this node added). */
  close(): void {
    clearInterval(this.#timer);
  }

  #refresh(): void {
    // One warning per round, not one per member, while the store is away.
    let warned = false;
    const onError = (err: unknown, channel: string): void => {
      if (warned) return;
      warned = true;
      this.#warn(err, channel, 'presence refresh failed');
    };
    for (const [channel, members] of this.#members) {
      for (const [clientId, info] of members) {
        this.#store
          .add(channel, clientId, info, this.#ttlMs)
          .catch((err: unknown) => onError(err, channel));
      }
    }
  }

  #warn(err: unknown, channel: string, what: string): void {
    this.#log.warn({ err: err instanceof Error ? err.message : String(err), channel }, what);
  }
}
