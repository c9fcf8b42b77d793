/**
 * The one connection contract: the edge's view of a client connection, whatever carries it (a
 * WebSocket on the ws or the uWebSockets.js engine, an SSE stream, long-polling). Nothing above
 * the edge knows which one it is. Every connection type extends BaseConnection, so all four
 * share one outbound bound and one too-slow close (3008) instead of a copy per engine
 * (test/conformance/connection.ts holds them to the same behaviour).
 */
import type { IncomingHttpHeaders } from 'node:http';
import { DisconnectCode, type DecodeResult, type Position } from '@switchboard/protocol';
import type { Sink } from '../hub.js';
import type { TransportStats } from '../metrics.js';

/**
 * What admission and sessions read from the request that opened a connection; node:http's
 * IncomingMessage is one, and the uWebSockets.js engine builds one from its request.
 */
export interface RequestInfo {
  readonly url?: string | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly socket: { readonly remoteAddress?: string | undefined };
}

export type TransportName = 'websocket' | 'sse' | 'long-polling';

export interface Connection extends Sink {
  readonly transport: TransportName;
  /** Bytes accepted for the client and not yet taken by its socket (or, long-polling, its polls). */
  readonly queuedBytes: number;
  /** Sends a control frame (reply, error); same queue and limits as message frames. */
  sendText(frame: string): void;
  /** Sends one binary frame (dialects with a binary encoding); WebSocket engines only. */
  sendBinary?(frame: Buffer): void;
  /**
   * Joins or leaves an engine-native topic by its raw name (engines with topics only): what is
   * published to it reaches the socket without a JavaScript call (see TopicBroadcaster).
   */
  joinTopic?(topic: string): void;
  leaveTopic?(topic: string): void;
  /** Ends the connection with a close code and a reason of at most 123 bytes. */
  close(code: number, reason: string): void;
  /**
   * Flow control for a client over its command rate: stop reading its frames for `ms` (frames
   * already received are still handled). Optional: transports without a stream to pause skip it.
   */
  pauseReading?(ms: number): void;
  /**
   * A subscribe took effect at `position` (undefined: none known yet), told before its reply and
   * replay are sent; and a channel was left. For a transport that keeps positions itself (SSE
   * event ids), which then never reads them back out of reply frames.
   */
  tracked?(channel: string, position: Position | undefined): void;
  untracked?(channel: string): void;
}

/**
 * A command that reached the session already decoded: the HTTP transports decode a POSTed frame
 * once, on the node holding the connection, and the server's own subscribes (an SSE/long-polling
 * URL's channels, a Last-Event-ID resume) are built as commands, never as text.
 */
export interface InboundCommand {
  readonly decoded: DecodeResult;
  /** Bytes the client sent for it: 0 for the server's own commands (not received from anyone). */
  readonly bytes: number;
  /**
   * Set on the server's own subscribes: the channel its reply (or error) names, so that a client
   * that never sent the command knows what it answers.
   */
  readonly label?: string;
}

/** What the edge calls as frames arrive; implemented by Session. */
export interface ConnectionHandler {
  /** A text frame as it arrived from the client. */
  onFrame(text: string): void;
  /**
   * A command decoded by the transport. Handlers without it (a dialect that only speaks over
   * WebSocket) are never given to a transport that needs it.
   */
  onCommand?(command: InboundCommand): void;
  /**
   * A binary frame. Handlers without it (the native protocol is JSON text only) have binary
   * frames refused by the engine with code 107.
   */
  onBinary?(data: Buffer): void;
  /** A frame the engine could not take: its inbox for the connection was full. */
  onDropped?(text: string): void;
  onClose(): void;
}

/**
 * A second WebSocket protocol served beside the native one, on its own path (the Ably dialect on
 * `/`). Same admission, limits and heartbeat as the native path; its own sessions.
 */
export interface Dialect {
  readonly path: string;
  readonly accept: (conn: Connection, req: RequestInfo) => ConnectionHandler;
}

/** An engine's native topics by raw name: one call hands a frame to every socket in `topic`. */
export interface TopicBroadcaster {
  publishTopic(topic: string, frame: Buffer | string, binary: boolean): void;
}

/** What every connection needs of the engine that holds it. */
export interface TransportHost {
  /** Bytes a connection may have queued for its client; past that it is closed with 3008. */
  readonly maxOutboundBytes: number;
  /** The server closed a connection with `code` (metrics). */
  disconnected(code: number): void;
}

export const TOO_SLOW_REASON = 'too slow: outbound queue full';
/** A slow client gets this long to take its close before its socket is destroyed. */
export const SLOW_CLOSE_GRACE_MS = 2000;

/** One frame held by an OutboundQueue, numbered from 1. */
export interface Held<T> {
  readonly seq: number;
  readonly item: T;
  readonly bytes: number;
  /** When it was queued (ms). */
  readonly at: number;
}

/**
 * A connection's outbound queue: what was accepted for its client and not yet taken. Bytes are
 * counted where they wait: in the socket (`buffered`: ws bufferedAmount, uWS getBufferedAmount,
 * the SSE response's writableLength) and in frames the connection holds itself until its client
 * acknowledges them (long-polling). The same count is what the queue gauges read and what the
 * too-slow close is decided on.
 */
export class OutboundQueue<T = never> {
  readonly #buffered: () => number;
  #items: Held<T>[] = [];
  #heldBytes = 0;
  #seq = 0;

  constructor(buffered: () => number = () => 0) {
    this.#buffered = buffered;
  }

  /** Bytes waiting for the client, in the socket and held. */
  get bytes(): number {
    return this.#heldBytes + this.#buffered();
  }

  /** Number of the last frame held; the first is 1. */
  get seq(): number {
    return this.#seq;
  }

  get items(): readonly Held<T>[] {
    return this.#items;
  }

  /** Holds a frame until acknowledged. */
  hold(item: T, bytes: number): void {
    this.#items.push({ seq: ++this.#seq, item, bytes, at: Date.now() });
    this.#heldBytes += bytes;
  }

  /** Drops the frames numbered up to `seq` (the client has them). */
  ack(seq: number): void {
    let drop = 0;
    for (const p of this.#items) {
      if (p.seq > seq) break;
      this.#heldBytes -= p.bytes;
      drop++;
    }
    if (drop > 0) this.#items = this.#items.slice(drop);
  }
}

/**
 * What every connection type shares: the closed flag, the handler, the stats tally, the guarded
 * writes and the one too-slow close. A subclass says how bytes leave (`write`), how it ends
 * (`end`), where its backlog waits (the OutboundQueue it builds) and how to drop a client that
 * does not read its close (`abort`).
 */
export abstract class BaseConnection implements Connection {
  abstract readonly transport: TransportName;
  abstract readonly batched: boolean;
  stats?: TransportStats | undefined;
  handler: ConnectionHandler | undefined;
  closed = false;
  protected readonly host: TransportHost;
  protected abstract readonly outbound: OutboundQueue<unknown>;

  constructor(host: TransportHost) {
    this.host = host;
  }

  get queuedBytes(): number {
    return this.closed ? 0 : this.outbound.bytes;
  }

  send(frame: Buffer, position?: Position, channel?: string): void {
    if (!this.#writable()) return;
    this.write(frame, position, channel);
    this.backlog();
  }

  sendMany(frames: readonly Buffer[]): void {
    if (!this.#writable()) return;
    this.writeMany(frames);
    this.backlog();
  }

  sendText(frame: string): void {
    if (!this.#writable()) return;
    this.write(frame);
    this.backlog();
  }

  /** Ends the connection as the server: counted as a disconnect with `code`. */
  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.host.disconnected(code);
    this.end(code, reason);
  }

  /**
   * Bytes queued for the client; past maxOutboundBytes the client is too slow and is closed with
   * 3008 (then 0). Checked before each write (what the engine delivered by itself, uWS topics,
   * counts too) and after it.
   */
  backlog(): number {
    if (this.closed) return 0;
    const n = this.outbound.bytes;
    if (n <= this.host.maxOutboundBytes) return n;
    this.close(DisconnectCode.SLOW, TOO_SLOW_REASON);
    // The close sits behind everything the client has not read; do not wait long for it.
    setTimeout(abortLater, SLOW_CLOSE_GRACE_MS, this).unref();
    return 0;
  }

  /**
   * Writes one transport message (the bound is checked by the caller); `position` and `channel`:
   * those of its (last) message, as the Hub carried them, for transports that track positions (SSE).
   */
  protected abstract write(frame: Buffer | string, position?: Position, channel?: string): void;

  /** Several messages at once; one write where the transport can. */
  protected writeMany(frames: readonly Buffer[]): void {
    for (const frame of frames) this.write(frame);
  }

  /** Sends the close (code and reason) the transport's way; `closed` is already set. */
  protected abstract end(code: number, reason: string): void;

  /** Drops a client that did not take its close in time (default: nothing to drop). */
  abort(): void {}

  /** A write of the subclass's own (binary frames) under the same bound. */
  protected writeGuarded(write: () => void): void {
    if (!this.#writable()) return;
    write();
    this.backlog();
  }

  #writable(): boolean {
    if (this.closed) return false;
    this.backlog();
    return !this.closed;
  }
}

function abortLater(conn: BaseConnection): void {
  conn.abort();
}
