import type { PresenceStore } from './presence.js';

interface Entry {
  readonly info: string;
  expiresAt: number;
}

const SWEEP_INTERVAL_MS = 60_000;

/** Presence of the embedded engine: in this process, entries expiring after their TTL. */
export class MemoryPresenceStore implements PresenceStore {
  readonly name = 'memory';
  readonly #channels = new Map<string, Map<string, Entry>>();
  readonly #sweep: NodeJS.Timeout;

  constructor() {
    this.#sweep = setInterval(() => this.#expire(Date.now()), SWEEP_INTERVAL_MS);
    this.#sweep.unref();
  }

  add(channel: string, clientId: string, info: string, ttlMs: number): Promise<void> {
    let members = this.#channels.get(channel);
    if (members === undefined) this.#channels.set(channel, (members = new Map<string, Entry>()));
    members.set(clientId, { info, expiresAt: Date.now() + ttlMs });
    return Promise.resolve();
  }

  remove(channel: string, clientId: string): Promise<void> {
    const members = this.#channels.get(channel);
    if (members !== undefined && members.delete(clientId) && members.size === 0)
      this.#channels.delete(channel);
    return Promise.resolve();
  }

  get(channel: string): Promise<string[]> {
    const members = this.#channels.get(channel);
    if (members === undefined) return Promise.resolve([]);
    const now = Date.now();
    const out: string[] = [];
    for (const [id, e] of members) {
      if (e.expiresAt > now) out.push(e.info);
      else members.delete(id);
    }
    if (members.size === 0) this.#channels.delete(channel);
    return Promise.resolve(out);
  }

  close(): Promise<void> {
    clearInterval(this.#sweep);
    return Promise.resolve();
  }

  #expire(now: number): void {
    for (const [channel, members] of this.#channels) {
      for (const [id, e] of members) if (e.expiresAt <= now) members.delete(id);
      if (members.size === 0) this.#channels.delete(channel);
    }
  }
}
