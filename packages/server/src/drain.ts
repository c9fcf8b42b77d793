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

/**
 * Asks `clients` to leave one by one, client i at (i + 1/2) * windowMs / n, so that their
 * reconnects land on the other nodes evenly spread over the window instead of all in the same
 * second (a reconnect costs a TLS handshake, an authentication and a resume each). Resolves when
 * no connection is left, or at `deadline`, with whether the last one left.
 */
export async function drain(clients: readonly Leaver[], o: DrainOptions): Promise<boolean> {
  const start = Date.now();
  const n = clients.length;
  const windowMs = Math.max(0, Math.min(o.windowMs, o.deadline - start));
  let asked = 0;
  while (asked < n) {
    const elapsed = Date.now() - start;
    const due = windowMs === 0 ? n : Math.min(n, Math.floor((elapsed * n) / windowMs + 0.5));
    if (asked === 0 && due > 0) o.onFirst?.(Date.now());
    for (; asked < due; asked++) (clients[asked] as Leaver).close(o.code, o.reason);
    if (asked >= n) break;
    const nextAt = start + ((asked + 0.5) * windowMs) / n;
    await sleep(Math.max(TICK_MS, nextAt - Date.now()));
  }
  while (o.connections() > 0 && Date.now() < o.deadline)
    await sleep(Math.min(POLL_MS, o.deadline - Date.now()));
  return o.connections() === 0;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
