/**
 * The SSE transport as a WebSocket-shaped object, so the connection's state machine drives it
 * unchanged: the event stream (`GET /sse`, read with `fetch` streaming, which works in browsers and
 * Node alike and needs no EventSource) carries the server's frames; commands go by POST. It "opens"
 * when the server's `connected` event arrives, not when headers do, so a proxy that buffers the
 * stream counts as a failure and the SDK falls back to long-polling.
 */
import { BATCH_SUBPROTOCOL } from '@switchboard/protocol';
import type { Handler, WebSocketLike } from './connection.js';
import { CommandPoster, failure, httpUrl, type FetchLike } from './http-transport.js';
import { SseParser, type SseEvent } from './sse-parser.js';

export class SseSocket implements WebSocketLike {
  /** Frames of one event are '\n'-separated, as in a batched WebSocket message. */
  readonly protocol = BATCH_SUBPROTOCOL;
  onopen: Handler<unknown> | null = null;
  onmessage: Handler<{ readonly data: unknown }> | null = null;
  onclose: Handler<{ readonly code: number; readonly reason: string }> | null = null;
  onerror: Handler<unknown> | null = null;
  readonly #url: string;
  readonly #fetch: FetchLike;
  readonly #abort = new AbortController();
  #poster: CommandPoster | undefined;
  #id: string | undefined;
  #done = false;

  constructor(url: string, fetch: FetchLike) {
    this.#url = url;
    this.#fetch = fetch;
    void this.#run();
  }

  send(data: string): void {
    this.#poster?.send(data);
  }

  /** Ends the stream and tells the server, which frees the connection at once. */
  close(): void {
    const id = this.#id;
    this.terminate();
    if (id !== undefined) {
      this.#fetch(httpUrl(this.#url, `/connections/${id}`), { method: 'DELETE' }).catch(ignore);
    }
  }

  /** Ends the stream; no close callback follows. */
  terminate(): void {
    this.#done = true;
    this.#poster?.stop();
    this.#abort.abort();
  }

  async #run(): Promise<void> {
    let res: Response;
    try {
      res = await this.#fetch(httpUrl(this.#url, '/sse'), {
        headers: { accept: 'text/event-stream' },
        signal: this.#abort.signal,
      });
    } catch (err) {
      this.#end(1006, `cannot open the event stream: ${message(err)}`);
      return;
    }
    if (!res.ok || res.body === null) {
      this.#end(1006, `event stream refused: ${await failure(res)}`);
      return;
    }
    const parser = new SseParser(
      (event) => this.#event(event),
      // Heartbeat comments prove the link is alive; an empty message carries no frame.
      () => this.onmessage?.({ data: '' }),
    );
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.#done) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch (err) {
      this.#end(1006, `event stream failed: ${message(err)}`);
      return;
    }
    this.#end(1006, 'event stream ended');
  }

  #event(event: SseEvent): void {
    if (this.#done) return;
    switch (event.type) {
      case 'message':
        this.onmessage?.({ data: event.data });
        return;
      case 'connected': {
        const info = parse(event.data);
        if (typeof info?.['connection'] !== 'string') {
          this.#end(1006, 'event stream opened without a connection id');
          return;
        }
        this.#id = info['connection'];
        this.#poster = new CommandPoster(
          this.#fetch,
          httpUrl(this.#url, `/connections/${this.#id}/commands`),
          (reason) => this.#end(1006, reason),
        );
        this.onopen?.({});
        return;
      }
      case 'close': {
        const info = parse(event.data);
        const code = typeof info?.['code'] === 'number' ? info['code'] : 1006;
        this.#end(code, typeof info?.['reason'] === 'string' ? info['reason'] : 'closed');
        return;
      }
    }
  }

  #end(code: number, reason: string): void {
    if (this.#done) return;
    this.terminate();
    this.onclose?.({ code, reason });
  }
}

function parse(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function ignore(): void {}
