/**
 * Revocations: a token by its `jti`, or every token of a user issued before a time. Stored with a
 * TTL of the longest token lifetime (a revoked token cannot outlive it anyway). This file holds
 * only the contract.
 */
import type { Credentials } from './auth.js';

export type Revocation =
  | { readonly kind: 'token'; readonly tokenId: string }
  | {
      readonly kind: 'user';
      readonly userId: string;
      /** ms; tokens issued before are revoked */ readonly before: number;
    };

export interface RevocationStore {
  /** Stores the revocation; resolves once it is stored. */
  add(revocation: Revocation): Promise<void>;
  /** Whether these credentials were revoked. */
  isRevoked(creds: Credentials): Promise<boolean>;
  close(): Promise<void>;
}

/** Whether `revocation` applies to `creds` (for live connections, without a store lookup). */
export function revokes(revocation: Revocation, creds: Credentials): boolean {
  if (creds.kind !== 'token') return false;
  if (revocation.kind === 'token')
    return creds.tokenId !== undefined && creds.tokenId === revocation.tokenId;
  // A token without iat cannot prove it is newer than the cut-off.
  return creds.userId === revocation.userId && (creds.issuedAt ?? 0) < revocation.before;
}

/** Parses a revocation from JSON text or an object; returns why it is malformed as a string. */
export function parseRevocation(value: unknown, now: number): Revocation | string {
  if (typeof value !== 'object' || value === null)
    return 'expected {"jti": "..."} or {"sub": "...", "before"?: ms}';
  const v = value as Record<string, unknown>;
  if (v['jti'] !== undefined) {
    if (typeof v['jti'] !== 'string' || v['jti'] === '' || v['jti'].length > 256)
      return 'jti must be a non-empty string';
    return { kind: 'token', tokenId: v['jti'] };
  }
  if (v['sub'] !== undefined) {
    if (typeof v['sub'] !== 'string' || v['sub'] === '' || v['sub'].length > 256)
      return 'sub must be a non-empty string';
    const before = v['before'] ?? now;
    if (typeof before !== 'number' || !Number.isSafeInteger(before) || before < 0)
      return 'before must be a time in ms';
    return { kind: 'user', userId: v['sub'], before };
  }
  return 'expected {"jti": "..."} or {"sub": "...", "before"?: ms}';
}

/** The wire form parseRevocation reads: `{"jti"}` or `{"sub", "before"}`. */
export function revocationJson(r: Revocation): string {
  return JSON.stringify(
    r.kind === 'token' ? { jti: r.tokenId } : { sub: r.userId, before: r.before },
  );
}
