/**
 * Timers for deadlines that may lie further ahead than setTimeout can wait: Node stores a delay
 * in 32 bits and runs a callback due in more than 2^31-1 ms (24.8 days) after 1 ms instead,
 * which closed connections holding long-lived tokens at once (issue 16.5).
 */

/** The longest delay setTimeout honours. */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

export interface LongTimer {
  clear(): void;
}

/** Runs `fn` once, `ms` from now, however far that is. */
export function setLongTimeout(fn: () => void, ms: number): LongTimer {
  const due = Date.now() + Math.max(0, ms);
  let timer: NodeJS.Timeout;
  const arm = (): void => {
    const left = due - Date.now();
    timer =
      left > MAX_TIMEOUT_MS ? setTimeout(arm, MAX_TIMEOUT_MS) : setTimeout(fn, Math.max(0, left));
  };
  arm();
  return { clear: () => clearTimeout(timer) };
}
