import type { Credentials } from './auth.js';
import { revokes, type Revocation } from './revocation.js';

/** What the registry needs of a session. */
export interface Revocable {
  readonly credentials: Credentials;
  revoke(reason: string): void;
}

/** Credentials being checked against the revocation store; see SessionRegistry.watch. */
export interface RevocationWatch {
  /** Whether a revocation applied since the watch began covers the credentials. */
  readonly revoked: boolean;
  end(): void;
}

/**
 * The authenticated sessions of this node by user: for the per-user connection limit and for
 * applying revocations to live connections.
 */
export class SessionRegistry {
  readonly #byUser = new Map<string, Set<Revocable>>();
  readonly #maxPerUser: number;
  readonly #watches = new Set<{ creds: Credentials; revoked: boolean }>();

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

  /**
   * Notes revocations of `creds` from now until `end()`: a session checks the store with a watch
   * open, so a revocation that reaches this node between the store's answer and the session's
   * registration (the store write and the read raced) still applies to it.
   */
  watch(creds: Credentials): RevocationWatch {
    const w = { creds, revoked: false };
    this.#watches.add(w);
    return {
      get revoked() {
        return w.revoked;
      },
      end: () => {
        this.#watches.delete(w);
      },
    };
  }

  /** Revokes every live session the revocation applies to; returns how many. */
  apply(revocation: Revocation): number {
    for (const w of this.#watches) if (revokes(revocation, w.creds)) w.revoked = true;
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
