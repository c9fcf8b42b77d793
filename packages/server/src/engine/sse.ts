/**
 * Server-Sent Events: one streaming response carries a connection's frames (an EventSource in
 * browsers). Each event's `data` lines are one transport message (several frames of a batch, one
 * per line, exactly as a batched WebSocket message), and its `id` carries the connection's
 * positions (stream-state.ts) so a reconnect with `Last-Event-ID` resumes on any node.
 */
import type { ServerResponse } from 'node:http';
import { DisconnectCode, type Position } from '@switchboard/protocol';
import type { ConnectionHandler } from './connection.js';
import { labelOwnReply, type HeldConnection, type HeldHost } from './http-session.js';
import { StreamState } from './stream-state.js';

/** Headers that keep every hop from buffering or transforming the stream. */
export const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  // NGINX buffers proxied responses unless told not to; this header tells it per response.
  'x-accel-buffering': 'no',
} as const;

/** EventSource's reconnect delay, sent once; the SDK reconnects by itself with backoff. */
const RETRY_MS = 2000;
const DATA = Buffer.from('data: ');
const NL = Buffer.from('\n');
const HEARTBEAT = ':\n\n';
/** A slow client gets this long to take its close event before its socket is destroyed. */
const SLOW_CLOSE_GRACE_MS = 2000;

export class SseConnection implements HeldConnection {
  readonly transport = 'sse';
  readonly batched = true;
  readonly id: string;
  handler: ConnectionHandler | undefined;
  closed = false;
  readonly #host: HeldHost;
  readonly #res: ServerResponse;
  readonly #state = new StreamState();
  /** The server's own subscribe request ids → channel. */
  #own: ReadonlyMap<string, string> = new Map();
  #lastWrite = 0;

  constructor(host: HeldHost, id: string, res: ServerResponse) {
    this.#host = host;
    this.id = id;
    this.#res = res;
    res.on('close', () => this.#gone());
  }

  /** Starts the stream: headers, the `connected` event with the id commands are posted to. */
  open(headers: Readonly<Record<string, string>>, own: ReadonlyMap<string, string>): void {
    this.#own = own;
    this.#res.writeHead(200, { ...SSE_HEADERS, ...headers });
    const info = JSON.stringify({
      connection: this.id,
      transport: 'sse',
      pingIntervalMs: this.#host.pingIntervalMs,
    });
    this.#write(`retry: ${RETRY_MS}\nevent: connected\ndata: ${info}\n\n`);
  }

  get queuedBytes(): number {
    return this.#res.writableLength;
  }

  send(frame: Buffer, position?: Position): void {
    if (this.closed) return;
    const changed = this.#state.message(frame, position);
    const parts: Buffer[] = [];
    let start = 0;
    for (;;) {
      const nl = frame.indexOf(0x0a, start);
      parts.push(DATA, nl === -1 ? frame.subarray(start) : frame.subarray(start, nl), NL);
      if (nl === -1) break;
      start = nl + 1;
    }
    if (changed) parts.push(Buffer.from(`id: ${this.#state.encode()}\n`));
    parts.push(NL);
    this.#write(Buffer.concat(parts));
  }

  sendText(frame: string): void {
    if (this.closed) return;
    const changed = this.#state.reply(frame) !== undefined;
    const text = labelOwnReply(frame, this.#own);
    this.#write(changed ? `data: ${text}\nid: ${this.#state.encode()}\n\n` : `data: ${text}\n\n`);
  }

  commands(frames: readonly string[]): void {
    for (const frame of frames) {
      if (this.closed) return;
      this.#state.command(frame);
      this.handler?.onFrame(frame);
    }
  }

  /** A final `close` event with the code, then the end of the response. */
  close(code: number, reason: string): void {
    if (this.closed) return;
    this.#host.disconnected(code);
    this.#end(code, reason);
  }

  release(): void {
    if (!this.closed) this.#end(DisconnectCode.NORMAL, 'closed by the client');
  }

  #end(code: number, reason: string): void {
    this.closed = true;
    this.#res.end(`event: close\ndata: ${JSON.stringify({ code, reason })}\n\n`);
  }

  tick(now: number): void {
    // Comment lines keep proxies from timing out an idle stream; EventSource ignores them.
    if (!this.closed && now - this.#lastWrite >= this.#host.pingIntervalMs / 2)
      this.#write(HEARTBEAT);
  }

  #write(chunk: string | Buffer): void {
    this.#lastWrite = Date.now();
    this.#res.write(chunk);
    if (this.#res.writableLength > this.#host.maxOutboundBytes) {
      this.close(DisconnectCode.SLOW, 'too slow: outbound queue full');
      // The close event sits behind everything the client has not read; do not wait for it.
      setTimeout(destroy, SLOW_CLOSE_GRACE_MS, this.#res).unref();
    }
  }

  #gone(): void {
    this.closed = true;
    this.#host.forget(this);
    this.handler?.onClose();
    this.handler = undefined;
  }
}

function destroy(res: ServerResponse): void {
  res.destroy();
}
