import type { Credentials } from './auth.js';
import { revokes, type Revocation, type RevocationStore } from './revocation.js';

/** Revocations of the embedded engine: in this process, expiring after `ttlMs`. */
export class MemoryRevocationStore implements RevocationStore {
  readonly #ttlMs: number;
  readonly #tokens = new Map<string, number>();
  readonly #users = new Map<string, { before: number; expiresAt: number }>();

  constructor(ttlMs: number) {
    this.#ttlMs = ttlMs;
  }

  add(r: Revocation): Promise<void> {
    const expiresAt = Date.now() + this.#ttlMs;
    if (r.kind === 'token') this.#tokens.set(r.tokenId, expiresAt);
    else {
      const prev = this.#users.get(r.userId);
      this.#users.set(r.userId, { before: Math.max(r.before, prev?.before ?? 0), expiresAt });
    }
    return Promise.resolve();
  }

  isRevoked(creds: Credentials): Promise<boolean> {
    const now = Date.now();
    this.#sweep(now);
    if (creds.tokenId !== undefined && this.#tokens.has(creds.tokenId))
      return Promise.resolve(true);
    const user = this.#users.get(creds.userId);
    return Promise.resolve(
      user !== undefined &&
        revokes({ kind: 'user', userId: creds.userId, before: user.before }, creds),
    );
  }

  close(): Promise<void> {
    return Promise.resolve();
  }

  #sweep(now: number): void {
    for (const [k, exp] of this.#tokens) if (exp <= now) this.#tokens.delete(k);
    for (const [k, u] of this.#users) if (u.expiresAt <= now) this.#users.delete(k);
  }
}
