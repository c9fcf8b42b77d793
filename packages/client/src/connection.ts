import { DisconnectCode, shouldReconnect } from '@switchboard/protocol';
import { fullJitter, type BackoffOptions } from './backoff.js';
import { Emitter } from './emitter.js';
import type { Reason } from './errors.js';
import { retryAfterOf } from './retry-after.js';

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
export type Handler<E> = { bivariant(event: E): void }['bivariant'];

/**
 * What the SDK needs of a WebSocket: the browser's, or `ws`'s in Node. The SSE and long-polling
 * transports take the same shape, so one state machine drives all three.
 */
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

/** The ways to reach a server, in the SDK's order of preference. */
export type TransportName = 'websocket' | 'sse' | 'long-polling';

/** One transport: opens a WebSocket-shaped link to an endpoint (a `ws://` or `wss://` URL). */
export interface Transport {
  readonly name: TransportName;
  open(url: string): WebSocketLike;
}

/** Connection settings, all resolved (see SwitchboardOptions for their meaning). */
export interface ConnectionOptions {
  readonly endpoints: readonly string[];
  /** In order of preference; at least one. */
  readonly transports: readonly Transport[];
  /** While on a fallback transport, how long before the first one is tried again. */
  readonly upgradeRetryMs: number;
  readonly backoff: BackoffOptions;
  readonly pingIntervalMs: number;
  readonly pingTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly suspendAfterMs: number;
  readonly suspendAfterAttempts: number;
  /** Whether to reconnect after a close code that normally ends the connection (see shouldReconnect). */
  readonly reconnectAfter?: (code: number) => boolean;
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
/** Longest wait between attempts to move back to the preferred transport. */
const MAX_UPGRADE_RETRY_MS = 10 * 60_000;

/**
 * The link to the server: one socket at a time, reconnect with full-jitter backoff over the
 * endpoints in turn, heartbeats, and the state machine. Obtained as `client.connection`.
 *
 * Transports are tried in order: one that fails before it works (refused, upgrade blocked, not
 * open within `connectTimeoutMs`, or closed before a single frame came through) hands over at once
 * to the next; when the last fails too, the usual backoff follows and the next round starts again
 * from the transport that last worked (delivered a frame).
 * While on a fallback, the first transport is tried again in the background every
 * `upgradeRetryMs` (doubling while it fails); when it opens, the link moves to it and every
 * channel resumes from its position, so nothing is lost or repeated.
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
  /** The transport of the socket being opened or open, and the one that last opened. */
  #current = 0;
  #preferred = 0;
  #opened = false;
  /** A frame came through the current socket: the transport works end to end. */
  #worked = false;
  #probe: WebSocketLike | undefined;
  #probeTimer: ReturnType<typeof setTimeout> | undefined;
  #probeDelay: number;

  constructor(options: ConnectionOptions, link: LinkHandler) {
    super();
    if (options.transports.length === 0) throw new TypeError('at least one transport is required');
    this.#o = options;
    this.#link = link;
    this.#probeDelay = options.upgradeRetryMs;
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The endpoint in use or being tried. */
  get url(): string {
    return this.#o.endpoints[this.#endpoint % this.#o.endpoints.length] as string;
  }

  /** The transport in use or being tried. */
  get transport(): TransportName {
    return (this.#o.transports[this.#current] as Transport).name;
  }

  /** Opens the connection if it is closed or failed; otherwise (also while retrying) does nothing. */
  connect(): void {
    if (this.#state !== 'closed' && this.#state !== 'failed') return;
    this.#attempt = 0;
    this.#downSince = 0;
    this.#current = this.#preferred;
    this.#dial();
  }

  /** Drops the current link as if the server had closed it with `code` (then reconnects or fails by the code). */
  abort(code: number, message: string): void {
    if (this.#ws === undefined) return;
    this.#gone(code, message);
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
    const transport = this.#o.transports[this.#current] as Transport;
    let ws: WebSocketLike;
    try {
      ws = transport.open(url);
    } catch (err) {
      this.#gone(1006, `cannot open ${url}: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    this.#attach(ws);
    this.#timer = setTimeout(() => this.#gone(1006, 'connect timeout'), this.#o.connectTimeoutMs);
  }

  #attach(ws: WebSocketLike): void {
    this.#ws = ws;
    this.#opened = false;
    this.#worked = false;
    ws.onopen = () => {
      if (this.#ws === ws) this.#onOpen(ws);
    };
    ws.onmessage = (event) => {
      if (this.#ws !== ws) return;
      this.#lastRx = Date.now();
      this.#pinged = false;
      if (!this.#worked) {
        this.#worked = true;
        this.#preferred = this.#current;
      }
      this.#link.frames(String(event.data));
    };
    ws.onclose = (event) => {
      if (this.#ws !== ws) return;
      this.#ws = undefined;
      this.#gone(event.code, event.reason || 'connection closed', retryAfterOf(ws));
    };
    // An error is always followed by close; `ws` needs a listener so it does not throw.
    ws.onerror = () => {};
  }

  #onOpen(ws: WebSocketLike): void {
    clearTimeout(this.#timer);
    this.#opened = true;
    this.#attempt = 0;
    this.#downSince = 0;
    this.#lastRx = Date.now();
    this.#pinged = false;
    this.#timer = setTimeout(this.#beat, this.#o.pingIntervalMs);
    this.#link.open((text) => {
      if (this.#ws === ws) ws.send(text);
    });
    this.#set('connected');
    if (this.#current > 0) {
      clearTimeout(this.#probeTimer);
      this.#probeTimer = setTimeout(this.#tryUpgrade, this.#probeDelay);
    }
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

  /** In the background, opens the preferred transport; if it opens, the link moves to it. */
  readonly #tryUpgrade = (): void => {
    if (this.#state !== 'connected' || this.#current === 0 || this.#probe !== undefined) return;
    let probe: WebSocketLike;
    try {
      probe = (this.#o.transports[0] as Transport).open(this.url);
    } catch {
      this.#upgradeFailed(undefined);
      return;
    }
    this.#probe = probe;
    const timer = setTimeout(() => this.#upgradeFailed(probe), this.#o.connectTimeoutMs);
    probe.onopen = () => {
      clearTimeout(timer);
      if (this.#probe !== probe) return;
      this.#probe = undefined;
      this.#probeDelay = this.#o.upgradeRetryMs;
      // The old link goes down and the new one up without passing through `disconnected`:
      // channels resubscribe from their positions and unanswered commands are re-sent.
      const old = this.#ws;
      this.#ws = undefined;
      clearTimeout(this.#timer);
      old?.close(DisconnectCode.NORMAL);
      this.#link.down(undefined);
      this.#current = 0;
      this.#attach(probe);
      this.#onOpen(probe);
    };
    probe.onclose = () => {
      clearTimeout(timer);
      this.#upgradeFailed(probe);
    };
    probe.onerror = () => {};
    probe.onmessage = () => {};
  };

  #upgradeFailed(probe: WebSocketLike | undefined): void {
    if (probe !== undefined) {
      if (this.#probe !== probe) return;
      this.#probe = undefined;
      killSocket(probe);
    }
    this.#probeDelay = Math.min(this.#probeDelay * 2, MAX_UPGRADE_RETRY_MS);
    if (this.#state === 'connected' && this.#current > 0)
      this.#probeTimer = setTimeout(this.#tryUpgrade, this.#probeDelay);
  }

  /** Forgets the socket; `kill` drops it without a closing handshake when the runtime can. */
  #drop(kill: boolean): void {
    clearTimeout(this.#timer);
    clearTimeout(this.#probeTimer);
    const probe = this.#probe;
    this.#probe = undefined;
    if (probe !== undefined) killSocket(probe);
    const ws = this.#ws;
    this.#ws = undefined;
    if (ws === undefined) return;
    if (kill && ws.terminate) ws.terminate();
    else ws.close(DisconnectCode.NORMAL);
  }

  /** `retryAfterMs`: the refusal's Retry-After (a node shedding load), the least wait before the next attempt. */
  #gone(code: number, message: string, retryAfterMs?: number): void {
    const opened = this.#opened;
    const worked = this.#worked;
    this.#opened = false;
    this.#worked = false;
    this.#drop(true);
    const reason = { code, message };
    if (!shouldReconnect(code) && this.#o.reconnectAfter?.(code) !== true) {
      this.#link.down(reason);
      this.#set('failed', reason);
      return;
    }
    // Never worked: this transport may be blocked on the way (a proxy that refuses the upgrade,
    // or lets it through and then drops every frame), not the server down. Try the next. A
    // refusal with Retry-After is the server speaking (shedding): the transport is fine.
    if (!worked && retryAfterMs === undefined && this.#current + 1 < this.#o.transports.length) {
      if (opened) this.#link.down(undefined);
      this.#current++;
      this.#dial();
      return;
    }
    this.#link.down(undefined);
    this.#current = this.#preferred;
    if (code === DisconnectCode.DRAINING) {
      // The node asked its clients to leave, spread over its drain window: not a failure. Go at
      // once to another node (the balancer no longer sends here; with endpoints, the next one),
      // counted as a first attempt so that a miss there backs off from the start.
      this.#attempt = 0;
      this.#downSince = 0;
      this.#endpoint++;
      this.#timer = setTimeout(() => this.#dial(), 0);
      this.#set('disconnected', reason, 0);
      return;
    }
    const now = Date.now();
    if (this.#downSince === 0) this.#downSince = now;
    const suspended =
      ++this.#attempt >= this.#o.suspendAfterAttempts ||
      now - this.#downSince >= this.#o.suspendAfterMs;
    // Once suspended, every retry draws from the whole capped window. A shedding node's
    // Retry-After comes first, the jitter on top: clients refused together do not return together.
    const delay =
      (retryAfterMs ?? 0) + fullJitter(suspended ? Infinity : this.#attempt - 1, this.#o.backoff);
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

/** Drops a socket without a closing handshake when the runtime can. */
function killSocket(ws: WebSocketLike): void {
  ws.onopen = ws.onmessage = ws.onclose = null;
  if (ws.terminate) ws.terminate();
  else ws.close(DisconnectCode.NORMAL);
}
