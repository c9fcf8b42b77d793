import { randomBytes } from 'node:crypto';

const EPOCH_BYTES = 6;
/** Epochs drawn per refill: one CSPRNG call serves many (every batch call draws a candidate). */
const POOL_EPOCHS = 512;
let pool = Buffer.alloc(0);
let at = 0;

/** A new random epoch: 8 base64url characters, safe to embed in JSON and Redis keys unescaped. */
export function newEpoch(): string {
  if (at + EPOCH_BYTES > pool.length) {
    pool = randomBytes(EPOCH_BYTES * POOL_EPOCHS);
    at = 0;
  }
  at += EPOCH_BYTES;
  return pool.toString('base64url', at - EPOCH_BYTES, at);
}

/**
 * Ids unique across nodes and restarts without randomness per id: `tag`, a 96-bit random prefix
 * drawn once, '-', and a counter (a UUID per id cost ~1 µs of CSPRNG and formatting per publish).
 */
export function uniqueIds(tag = ''): () => string {
  const prefix = tag + randomBytes(12).toString('base64url') + '-';
  let seq = 0;
  return () => prefix + (++seq).toString(36);
}
