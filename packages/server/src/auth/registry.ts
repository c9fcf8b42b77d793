import type { Credentials } from './auth.js';
import { revokes, type Revocation } from './revocation.js';

/** What the registry needs of a session. */
export interface Revocable {
  readonly credentials: Credentials;
  revoke(reason: string): void;
}

/**
 * The authenticated sessions of this node by user: for the per-user connection limit and for
 * applying revocations to live connections.
 */
export class SessionRegistry {
  readonly #byUser = new Map<string, Set<Revocable>>();
  readonly #maxPerUser: number;

  constructor(maxPerUser: number) {
    this.#maxPerUser = maxPerUser;
  }

  /** Adds the session under its user; false when the user is at the limit. */
  track(session: Revocable, userId: string): boolean {
    let set = this.#byUser.get(userId);
    if (set === undefined) {
      set = new Set();
      this.#byUser.set(userId, set);
    }
    if (set.has(session)) return true;
    if (set.size >= this.#maxPerUser) return false;
    set.add(session);
    return true;
  }

  untrack(session: Revocable, userId: string): void {
    const set = this.#byUser.get(userId);
    if (set === undefined) return;
    set.delete(session);
    if (set.size === 0) this.#byUser.delete(userId);
  }

  /** Revokes every live session the revocation applies to; returns how many. */
  apply(revocation: Revocation): number {
    let n = 0;
    const candidates =
      revocation.kind === 'user'
        ? [this.#byUser.get(revocation.userId) ?? []]
        : this.#byUser.values();
    for (const set of candidates) {
      for (const s of set) {
        if (revokes(revocation, s.credentials)) {
          s.revoke('token revoked');
          n++;
        }
      }
    }
    return n;
  }
}
