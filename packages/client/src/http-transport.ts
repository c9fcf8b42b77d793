/**
 * What the SDK's HTTP transports (SSE, long-polling) share: their URLs, derived from the WebSocket
 * URL, and the sending of commands by POST. Commands go one POST at a time, each carrying every
 * frame queued meanwhile (one per line), so a client's commands reach the server in the order sent
 * whichever node each POST lands on. No Node built-ins: only `fetch`.
 */

import { BATCH_SUBPROTOCOL } from '@switchboard/protocol';
import type { Handler, WebSocketLike } from './connection.js';
import { noteRetryAfter, parseRetryAfter } from './retry-after.js';

/** The `fetch` the SDK uses: `globalThis.fetch` unless one is injected. */
export type FetchLike = (url: string, init?: RequestInit) => Promise<Response>;

/** The largest body one command POST carries (the server accepts `maxRequestBodyBytes`, 1 MiB by default). */
const MAX_POST_BYTES = 64 * 1024;
/** The server's limit of frames per POST. */
const MAX_POST_FRAMES = 1000;

/**
 * The HTTP base of a WebSocket URL: `ws://host:port/ws?token=t` → `http://host:port` with the
 * query kept, so `url('/sse')` is `http://host:port/sse?token=t`. A path ending in `/ws` loses
 * that segment (`wss://h/realtime/ws` → `https://h/realtime`).
 */
export function httpUrl(wsUrl: string, path: string, params: Record<string, string> = {}): string {
  const u = new URL(wsUrl);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  else if (u.protocol === 'wss:') u.protocol = 'https:';
  u.pathname = u.pathname.replace(/\/ws\/?$/, '').replace(/\/$/, '') + path;
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  u.hash = '';
  return u.toString();
}

/** A failed response's error text: the server's JSON `error`, else the status. */
export async function failure(res: Response): Promise<string> {
  let detail = '';
  try {
    const body = (await res.json()) as { error?: unknown; code?: unknown };
    if (typeof body.error === 'string') detail = `: ${body.error}`;
  } catch {
    // not JSON: the status says enough
  }
  return `HTTP ${res.status}${detail}`;
}

/**
 * Sends a connection's commands, in order, by POST to `/connections/{id}/commands`. Calls `fail`
 * once when a POST fails (network error or error status): the link is then unusable, and the
 * client reconnects and re-sends what was not answered.
 */
export class CommandPoster {
  readonly #fetch: FetchLike;
  readonly #url: string;
  readonly #fail: (reason: string) => void;
  #queue: string[] = [];
  #sending = false;
  #stopped = false;

  constructor(fetch: FetchLike, url: string, fail: (reason: string) => void) {
    this.#fetch = fetch;
    this.#url = url;
    this.#fail = fail;
  }

  send(frame: string): void {
    if (this.#stopped) return;
    this.#queue.push(frame);
    if (!this.#sending) void this.#drain();
  }

  stop(): void {
    this.#stopped = true;
    this.#queue = [];
  }

  async #drain(): Promise<void> {
    this.#sending = true;
    while (this.#queue.length > 0 && !this.#stopped) {
      let bytes = 0;
      let n = 0;
      while (n < this.#queue.length && n < MAX_POST_FRAMES) {
        bytes += (this.#queue[n] as string).length + 1;
        if (n > 0 && bytes > MAX_POST_BYTES) break;
        n++;
      }
      const body = this.#queue.splice(0, n).join('\n');
      let reason: string | undefined;
      try {
        // A string body is sent as text/plain: a "simple" cross-origin request, no preflight.
        const res = await this.#fetch(this.#url, { method: 'POST', body });
        if (!res.ok) reason = `command POST failed: ${await failure(res)}`;
        // Read to the end, so the connection can carry the next request.
        else await res.text();
      } catch (err) {
        reason = `command POST failed: ${err instanceof Error ? err.message : String(err)}`;
      }
      if (reason !== undefined && !this.#stopped) {
        this.stop();
        this.#fail(reason);
      }
    }
    this.#sending = false;
  }
}

/**
 * What SSE and long-polling sockets share as WebSocket-shaped objects: commands by POST once the
 * server named the connection, close (which tells the server, freeing the connection at once),
 * terminate, and the single close callback. Subclasses read frames and call `opened` and `end`.
 */
export abstract class HttpSocket implements WebSocketLike {
  /** Frames of one event or poll are '\n'-separated, as in a batched WebSocket message. */
  readonly protocol = BATCH_SUBPROTOCOL;
  onopen: Handler<unknown> | null = null;
  onmessage: Handler<{ readonly data: unknown }> | null = null;
  onclose: Handler<{ readonly code: number; readonly reason: string }> | null = null;
  onerror: Handler<unknown> | null = null;
  protected readonly url: string;
  protected readonly fetch: FetchLike;
  protected readonly abort = new AbortController();
  /** Closed or terminated: nothing more is read or reported. */
  protected done = false;
  #poster: CommandPoster | undefined;
  #id: string | undefined;

  constructor(url: string, fetch: FetchLike) {
    this.url = url;
    this.fetch = fetch;
  }

  send(data: string): void {
    this.#poster?.send(data);
  }

  /** Stops reading and tells the server, which frees the connection at once. */
  close(): void {
    const id = this.#id;
    this.terminate();
    if (id !== undefined) {
      this.fetch(httpUrl(this.url, `/connections/${id}`), { method: 'DELETE' }).catch(ignore);
    }
  }

  /** Stops reading; no close callback follows. */
  terminate(): void {
    this.done = true;
    this.#poster?.stop();
    this.abort.abort();
  }

  /** The server named the connection: commands can go, and the socket is open. */
  protected opened(id: string): void {
    this.#id = id;
    this.#poster = new CommandPoster(
      this.fetch,
      httpUrl(this.url, `/connections/${id}/commands`),
      (reason) => this.end(1006, reason),
    );
    this.onopen?.({});
  }

  /** A refused open: remembers its Retry-After (a node shedding load) for the reconnect. */
  protected refused(res: Response): void {
    const ms = parseRetryAfter(res.headers.get('retry-after'));
    if (ms !== undefined) noteRetryAfter(this, ms);
  }

  /** Ends the socket with one close callback. */
  protected end(code: number, reason: string): void {
    if (this.done) return;
    this.terminate();
    this.onclose?.({ code, reason });
  }
}

/** An error's text. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function ignore(): void {}
