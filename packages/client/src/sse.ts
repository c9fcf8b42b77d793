/**
 * The SSE transport as a WebSocket-shaped object, so the connection's state machine drives it
 * unchanged: the event stream (`GET /sse`, read with `fetch` streaming, which works in browsers and
 * Node alike and needs no EventSource) carries the server's frames; commands go by POST. It "opens"
 * when the server's `connected` event arrives, not when headers do, so a proxy that buffers the
 * stream counts as a failure and the SDK falls back to long-polling.
 */
import { errorMessage, failure, httpUrl, HttpSocket, type FetchLike } from './http-transport.js';
import { SseParser, type SseEvent } from './sse-parser.js';

export class SseSocket extends HttpSocket {
  constructor(url: string, fetch: FetchLike) {
    super(url, fetch);
    void this.#run();
  }

  async #run(): Promise<void> {
    let res: Response;
    try {
      res = await this.fetch(httpUrl(this.url, '/sse'), {
        headers: { accept: 'text/event-stream' },
        signal: this.abort.signal,
      });
    } catch (err) {
      this.end(1006, `cannot open the event stream: ${errorMessage(err)}`);
      return;
    }
    if (!res.ok || res.body === null) {
      this.refused(res);
      this.end(1006, `event stream refused: ${await failure(res)}`);
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
        if (done || this.done) break;
        parser.push(decoder.decode(value, { stream: true }));
      }
    } catch (err) {
      this.end(1006, `event stream failed: ${errorMessage(err)}`);
      return;
    }
    this.end(1006, 'event stream ended');
  }

  #event(event: SseEvent): void {
    if (this.done) return;
    switch (event.type) {
      case 'message':
        this.onmessage?.({ data: event.data });
        return;
      case 'connected': {
        const info = parse(event.data);
        if (typeof info?.['connection'] !== 'string') {
          this.end(1006, 'event stream opened without a connection id');
          return;
        }
        this.opened(info['connection']);
        return;
      }
      case 'close': {
        const info = parse(event.data);
        const code = typeof info?.['code'] === 'number' ? info['code'] : 1006;
        this.end(code, typeof info?.['reason'] === 'string' ? info['reason'] : 'closed');
        return;
      }
    }
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
