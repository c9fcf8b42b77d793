/**
 * Server-Sent Events: one streaming response carries a connection's frames (an EventSource in
 * browsers). Each event's `data` lines are one transport message (several frames of a batch, one
 * per line, exactly as a batched WebSocket message), and its `id` carries the connection's
 * positions (stream-state.ts) so a reconnect with `Last-Event-ID` resumes on any node.
 */
import type { ServerResponse } from 'node:http';
import { DisconnectCode, type Position } from '@switchboard/protocol';
import { BaseConnection, OutboundQueue, type InboundCommand } from './transport.js';
import type { HeldConnection, HeldHost } from './http-session.js';
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

/** An SSE stream as a Connection; its outbound queue is the response's writableLength. */
export class SseConnection extends BaseConnection implements HeldConnection {
  readonly transport = 'sse';
  readonly batched = true;
  readonly id: string;
  protected readonly outbound: OutboundQueue;
  readonly #pingIntervalMs: number;
  readonly #forget: (conn: HeldConnection) => void;
  readonly #res: ServerResponse;
  readonly #state = new StreamState();
  /** The state changed since the last id written. */
  #dirty = false;
  #lastWrite = 0;

  constructor(host: HeldHost, id: string, res: ServerResponse) {
    super(host);
    this.#pingIntervalMs = host.pingIntervalMs;
    this.#forget = (conn) => host.forget(conn);
    this.id = id;
    this.#res = res;
    this.outbound = new OutboundQueue(() => res.writableLength);
    res.on('close', () => this.#gone());
  }

  /** Starts the stream: headers, the `connected` event with the id commands are posted to. */
  open(headers: Readonly<Record<string, string>>): void {
    this.#res.writeHead(200, { ...SSE_HEADERS, ...headers });
    const info = JSON.stringify({
      connection: this.id,
      transport: 'sse',
      pingIntervalMs: this.#pingIntervalMs,
    });
    this.#push(`retry: ${RETRY_MS}\nevent: connected\ndata: ${info}\n\n`);
  }

  tracked(channel: string, position: Position | undefined): void {
    if (this.#state.subscribed(channel, position)) this.#dirty = true;
  }

  untracked(channel: string): void {
    if (this.#state.unsubscribed(channel)) this.#dirty = true;
  }

  protected write(frame: Buffer | string, position?: Position, channel?: string): void {
    if (
      channel !== undefined &&
      typeof frame !== 'string' &&
      this.#state.message(channel, position)
    )
      this.#dirty = true;
    // The id goes with the next event after a change: a subscribe's reply or first replayed
    // message, or the message that moved a position.
    const id = this.#dirty ? `id: ${this.#state.encode()}\n` : '';
    this.#dirty = false;
    if (typeof frame === 'string') {
      this.#push(`data: ${frame}\n${id}\n`);
      return;
    }
    const parts: Buffer[] = [];
    let start = 0;
    for (;;) {
      const nl = frame.indexOf(0x0a, start);
      parts.push(DATA, nl === -1 ? frame.subarray(start) : frame.subarray(start, nl), NL);
      if (nl === -1) break;
      start = nl + 1;
    }
    if (id !== '') parts.push(Buffer.from(id));
    parts.push(NL);
    this.#push(Buffer.concat(parts));
  }

  commands(commands: readonly InboundCommand[]): void {
    for (const c of commands) {
      if (this.closed) return;
      this.handler?.onCommand?.(c);
    }
  }

  release(): void {
    if (this.closed) return;
    this.closed = true;
    this.end(DisconnectCode.NORMAL, 'closed by the client');
  }

  /** A final `close` event with the code, then the end of the response. */
  protected end(code: number, reason: string): void {
    this.#res.end(`event: close\ndata: ${JSON.stringify({ code, reason })}\n\n`);
  }

  override abort(): void {
    this.#res.destroy();
  }

  tick(now: number): void {
    // Comment lines keep proxies from timing out an idle stream; EventSource ignores them.
    if (!this.closed && now - this.#lastWrite >= this.#pingIntervalMs / 2) {
      this.#push(HEARTBEAT);
      this.backlog();
    }
  }

  #push(chunk: string | Buffer): void {
    this.#lastWrite = Date.now();
    this.#res.write(chunk);
  }

  #gone(): void {
    this.closed = true;
    this.#forget(this);
    this.handler?.onClose();
    this.handler = undefined;
  }
}
