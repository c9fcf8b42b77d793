import { BATCH_SUBPROTOCOL, DisconnectCode, shouldReconnect } from '@switchboard/protocol';
import { fullJitter, type BackoffOptions } from './backoff.js';
import { Emitter } from './emitter.js';
import type { Reason } from './errors.js';

/**
 * - `connecting`: a socket is being opened.
 * - `connected`: open; commands flow.
 * - `disconnected`: the link dropped or could not be opened; a retry is scheduled.
 * - `suspended`: as `disconnected`, after `suspendAfterAttempts` failed attempts or
 *   `suspendAfterMs` without a connection; retries go on with delays drawn at the cap.
 * - `closed`: closed by the application (`close()`); `connect()` opens again.
 * - `failed`: the server closed with a terminal code (3500-3999, 4500-4999, 1000, 1002, 1003);
 *   nothing is retried until `connect()`.
 */
export type ConnectionState =
  'connecting' | 'connected' | 'disconnected' | 'suspended' | 'closed' | 'failed';

/** Payload of every connection event. */
export interface StateChange {
  readonly previous: ConnectionState;
  readonly current: ConnectionState;
  /** Why the link went down (for disconnected, suspended, closed, failed). */
  readonly reason?: Reason;
  /** When disconnected or suspended: the delay before the next attempt. */
  readonly retryInMs?: number;
}

/** One event per state, plus `change` for every transition. */
export type ConnectionEvents = { readonly [S in ConnectionState]: StateChange } & {
  readonly change: StateChange;
};

// A method's parameter is checked bivariantly, so both the DOM WebSocket and `ws` fit these types.
type Handler<E> = { bivariant(event: E): void }['bivariant'];

/** What the SDK needs of a WebSocket: the browser's, or `ws`'s in Node. */
export interface WebSocketLike {
  readonly protocol: string;
  onopen: Handler<unknown> | null;
  onmessage: Handler<{ readonly data: unknown }> | null;
  onclose: Handler<{ readonly code: number; readonly reason: string }> | null;
  onerror: Handler<unknown> | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  /** `ws` only: drops the TCP connection at once, without a closing handshake. */
  terminate?(): void;
}

export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
) => WebSocketLike;

/** Connection settings, all resolved (see SwitchboardOptions for their meaning). */
export interface ConnectionOptions {
  readonly endpoints: readonly string[];
  readonly WebSocket: WebSocketConstructor;
  readonly backoff: BackoffOptions;
  readonly pingIntervalMs: number;
  readonly pingTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly suspendAfterMs: number;
  readonly suspendAfterAttempts: number;
}

/** What the connection reports to the client that owns it. */
export interface LinkHandler {
  /** A socket opened; `send` writes to it (and is a no-op once that socket is gone). */
  open(send: (text: string) => void): void;
  /** One WebSocket message (possibly several frames). */
  frames(text: string): void;
  /** The socket went away; `end` is set when no retry follows (closed or failed). */
  down(end: Reason | undefined): void;
}

const PING = '{"action":"ping","id":"hb"}';

/**
 * The link to the server: one socket at a time, reconnect with full-jitter backoff over the
 * endpoints in turn, heartbeats, and the state machine. Obtained as `client.connection`.
 */
export class Connection extends Emitter<ConnectionEvents> {
  readonly #o: ConnectionOptions;
  readonly #link: LinkHandler;
  #state: ConnectionState = 'closed';
  #ws: WebSocketLike | undefined;
  /** Connect timeout while connecting, heartbeat while connected, retry while disconnected. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  #endpoint = 0;
  #attempt = 0;
  #downSince = 0;
  #lastRx = 0;
  #pinged = false;

  constructor(options: ConnectionOptions, link: LinkHandler) {
    super();
    this.#o = options;
    this.#link = link;
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The endpoint in use or being tried. */
  get url(): string {
    return this.#o.endpoints[this.#endpoint % this.#o.endpoints.length] as string;
  }

  /** Opens the connection if it is closed or failed; otherwise (also while retrying) does nothing. */
  connect(): void {
    if (this.#state !== 'closed' && this.#state !== 'failed') return;
    this.#attempt = 0;
    this.#downSince = 0;
    this.#dial();
  }

  /** Closes the connection for good (state `closed`); pending commands are rejected. */
  close(): void {
    if (this.#state === 'closed') return;
    this.#drop(false);
    const reason = { code: DisconnectCode.NORMAL, message: 'closed by the application' };
    this.#link.down(reason);
    this.#set('closed', reason);
  }

  #dial(): void {
    this.#set('connecting');
    const url = this.url;
    let ws: WebSocketLike;
    try {
      ws = new this.#o.WebSocket(url, [BATCH_SUBPROTOCOL]);
    } catch (err) {
      this.#gone(1006, `cannot open ${url}: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    this.#ws = ws;
    ws.onopen = () => {
      if (this.#ws === ws) this.#opened(ws);
    };
    ws.onmessage = (event) => {
      if (this.#ws !== ws) return;
      this.#lastRx = Date.now();
      this.#pinged = false;
      this.#link.frames(String(event.data));
    };
    ws.onclose = (event) => {
      if (this.#ws !== ws) return;
      this.#ws = undefined;
      this.#gone(event.code, event.reason || 'connection closed');
    };
    // An error is always followed by close; `ws` needs a listener so it does not throw.
    ws.onerror = () => {};
    this.#timer = setTimeout(() => this.#gone(1006, 'connect timeout'), this.#o.connectTimeoutMs);
  }

  #opened(ws: WebSocketLike): void {
    clearTimeout(this.#timer);
    this.#attempt = 0;
    this.#downSince = 0;
    this.#lastRx = Date.now();
    this.#pinged = false;
    this.#timer = setTimeout(this.#beat, this.#o.pingIntervalMs);
    this.#link.open((text) => {
      if (this.#ws === ws) ws.send(text);
    });
    this.#set('connected');
  }

  /**
   * Pings after `pingIntervalMs` without any frame, and declares the link dead when no frame at
   * all follows within `pingTimeoutMs`: a dead link is found within interval + timeout even when
   * TCP reports nothing.
   */
  readonly #beat = (): void => {
    if (this.#pinged) {
      this.#gone(DisconnectCode.NO_PONG, `no frame within ${this.#o.pingTimeoutMs} ms of a ping`);
      return;
    }
    const idle = Date.now() - this.#lastRx;
    if (idle < this.#o.pingIntervalMs) {
      this.#timer = setTimeout(this.#beat, this.#o.pingIntervalMs - idle);
      return;
    }
    this.#pinged = true;
    this.#ws?.send(PING);
    this.#timer = setTimeout(this.#beat, this.#o.pingTimeoutMs);
  };

  /** Forgets the socket; `kill` drops it without a closing handshake when the runtime can. */
  #drop(kill: boolean): void {
    clearTimeout(this.#timer);
    const ws = this.#ws;
    this.#ws = undefined;
    if (ws === undefined) return;
    if (kill && ws.terminate) ws.terminate();
    else ws.close(DisconnectCode.NORMAL);
  }

  #gone(code: number, message: string): void {
    this.#drop(true);
    const reason = { code, message };
    if (!shouldReconnect(code)) {
      this.#link.down(reason);
      this.#set('failed', reason);
      return;
    }
    this.#link.down(undefined);
    const now = Date.now();
    if (this.#downSince === 0) this.#downSince = now;
    const suspended =
      ++this.#attempt >= this.#o.suspendAfterAttempts ||
      now - this.#downSince >= this.#o.suspendAfterMs;
    // Once suspended, every retry draws from the whole capped window.
    const delay = fullJitter(suspended ? Infinity : this.#attempt - 1, this.#o.backoff);
    this.#endpoint++;
    this.#timer = setTimeout(() => this.#dial(), delay);
    this.#set(suspended ? 'suspended' : 'disconnected', reason, delay);
  }

  #set(current: ConnectionState, reason?: Reason, retryInMs?: number): void {
    const previous = this.#state;
    if (previous === current) return;
    this.#state = current;
    const change: StateChange = {
      previous,
      current,
      ...(reason && { reason }),
      ...(retryInMs !== undefined && { retryInMs }),
    };
    this.emit(current, change);
    this.emit('change', change);
  }
}
