import { randomBytes } from 'node:crypto';

/** A new random epoch: 8 base64url characters, safe to embed in JSON and Redis keys unescaped. */
export function newEpoch(): string {
  return randomBytes(6).toString('base64url');
}
