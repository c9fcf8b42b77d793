/** A connection the drain can ask to leave. */
export interface Leaver {
  close(code: number, reason: string): void;
}

export interface DrainOptions {
  /** The window over which the clients are asked to leave; 0 asks all at once. */
  readonly windowMs: number;
  /** When (Date.now() time) to give up waiting for the last client. */
  readonly deadline: number;
  /** Connections still open (they leave when their client closed or answered the close). */
  readonly connections: () => number;
  readonly code: number;
  readonly reason: string;
  /** Called once with the time the first client is asked to leave. */
  readonly onFirst?: (at: number) => void;
}

/** The drain's timer never fires more often than this: 100,000 clients over 10 s are 100 a tick. */
const TICK_MS = 10;
/** How often the end of the drain checks whether the last client left. */
const POLL_MS = 20;
/** Behind schedule (the event loop stalled), the drain catches up at most this much faster. */
const CATCH_UP = 1.5;

/**
 * Asks `clients` to leave one by one, client i at (i + 1/2) * windowMs / n, so that their
 * reconnects land on the other nodes evenly spread over the window instead of all in the same
 * second (a reconnect costs a TLS handshake, an authentication and a resume each). After a stall
 * of the event loop the clients that fell due meanwhile are not closed in one burst: the drain
 * catches up at most CATCH_UP times its pace, past the window if need be, and closes whoever is
 * left at once only halfway between the window's end and the deadline. Resolves when no
 * connection is left, or at `deadline`, with whether the last one left.
 */
export async function drain(clients: readonly Leaver[], o: DrainOptions): Promise<boolean> {
  const start = Date.now();
  const n = clients.length;
  const windowMs = Math.max(0, Math.min(o.windowMs, o.deadline - start));
  const flushAt = start + windowMs + (o.deadline - start - windowMs) / 2;
  const gapMs = n === 0 ? 0 : windowMs / (CATCH_UP * n);
  const maxCredit = gapMs === 0 ? n : Math.max(1, TICK_MS / gapMs);
  let credit = 1;
  let last = start;
  let asked = 0;
  while (asked < n) {
    const now = Date.now();
    credit = Math.min(maxCredit, credit + (gapMs === 0 ? n : (now - last) / gapMs));
    last = now;
    const due =
      windowMs === 0 || now >= flushAt
        ? n
        : Math.min(n, Math.floor(((now - start) * n) / windowMs + 0.5));
    const k =
      now >= flushAt || windowMs === 0 ? due - asked : Math.min(due - asked, Math.floor(credit));
    if (asked === 0 && k > 0) o.onFirst?.(now);
    for (let j = 0; j < k; j++) (clients[asked + j] as Leaver).close(o.code, o.reason);
    asked += Math.max(0, k);
    credit -= Math.max(0, k);
    if (asked >= n) break;
    const nextAt = asked < due ? now + gapMs : start + ((asked + 0.5) * windowMs) / n;
    await sleep(Math.max(TICK_MS, nextAt - now));
  }
  while (o.connections() > 0 && Date.now() < o.deadline)
    await sleep(Math.min(POLL_MS, o.deadline - Date.now()));
  return o.connections() === 0;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
