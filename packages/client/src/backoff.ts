/**
 * Reconnect delays: exponential backoff with full jitter ("Exponential Backoff And Jitter", AWS
 * Architecture Blog, 2015). Spreading retries uniformly over the whole window keeps a fleet of
 * clients that lost the same node from reconnecting in lockstep.
 */

/** Backoff settings; both durations in milliseconds. */
export interface BackoffOptions {
  /** The window of the first retry (attempt 0). Default 500. */
  readonly baseMs?: number;
  /** The largest window; retries keep drawing from [0, capMs) once it is reached. Default 30 000. */
  readonly capMs?: number;
}

export const DEFAULT_BACKOFF = { baseMs: 500, capMs: 30_000 } as const;

/**
 * The delay before retry number `attempt` (0-based): a uniform draw from
 * `[0, min(capMs, baseMs * 2^attempt))`, rounded down. Never negative, never above `capMs`.
 * `random` must return values in [0, 1), as `Math.random` does.
 */
export function fullJitter(
  attempt: number,
  { baseMs = DEFAULT_BACKOFF.baseMs, capMs = DEFAULT_BACKOFF.capMs }: BackoffOptions = {},
  random: () => number = Math.random,
): number {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** Math.max(0, attempt)));
}
