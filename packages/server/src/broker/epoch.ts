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
