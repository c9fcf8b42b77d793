/**
 * What a refused connection attempt said about when to try again: the `Retry-After` of a 503 (a
 * node shedding load). Kept beside the socket object, whichever transport made it, so the
 * connection's state machine reads it without each transport widening the WebSocket shape. A
 * browser's WebSocket never shows the refused upgrade's headers; there the usual backoff applies.
 */
const retryAfter = new WeakMap<object, number>();

/** Records that the server asked `socket`'s client to wait `ms` before its next attempt. */
export function noteRetryAfter(socket: object, ms: number): void {
  retryAfter.set(socket, ms);
}

/** The wait the server asked for on `socket`'s refusal, if any. */
export function retryAfterOf(socket: object): number | undefined {
  return retryAfter.get(socket);
}

/** Longest wait honoured: a broken or hostile header must not park a client for a day. */
const MAX_RETRY_AFTER_MS = 5 * 60_000;

/**
 * A `Retry-After` header in milliseconds: delay-seconds or an HTTP date (RFC 9110 10.2.3);
 * undefined when absent or unreadable.
 */
export function parseRetryAfter(
  value: string | null | undefined,
  now = Date.now(),
): number | undefined {
  if (value === null || value === undefined) return undefined;
  const text = value.trim();
  let ms: number;
  if (/^\d+$/.test(text)) ms = Number(text) * 1000;
  else {
    const at = Date.parse(text);
    if (Number.isNaN(at)) return undefined;
    ms = at - now;
  }
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms));
}

/** `ws`'s refused-upgrade event: the response's headers, which a browser WebSocket never shows. */
type UnexpectedResponse = (
  req: unknown,
  res: { readonly headers?: Record<string, unknown> },
) => void;

/**
 * On Node's `ws`, reads the Retry-After of a refused upgrade. With a listener on
 * 'unexpected-response', `ws` leaves the failed handshake to it: terminating reports the close
 * (1006) as without one.
 */
export function watchUpgradeRefusal(ws: { terminate?(): void }): void {
  const on = (ws as { on?: unknown }).on;
  if (typeof on !== 'function') return;
  (on as (this: unknown, event: string, listener: UnexpectedResponse) => void).call(
    ws,
    'unexpected-response',
    (_req, res) => {
      const value = res.headers?.['retry-after'];
      const ms = parseRetryAfter(typeof value === 'string' ? value : undefined);
      if (ms !== undefined) noteRetryAfter(ws, ms);
      ws.terminate?.();
    },
  );
}
