import {
  BATCH_SUBPROTOCOL,
  DisconnectCode,
  ErrorCode,
  type ErrorCodeValue,
} from '@switchboard/protocol';
import { DEFAULT_BACKOFF, fullJitter, type BackoffOptions } from './backoff.js';
import { Channels, type ChannelHooks, type ChannelHost, type PositionStore } from './channel.js';
import { sessionStoragePositions } from './positions.js';
import {
  Connection,
  type ConnectionOptions,
  type Transport,
  type TransportName,
  type WebSocketConstructor,
} from './connection.js';
import {
  ConnectionClosedError,
  QueueFullError,
  SwitchboardError,
  TimeoutError,
  replyError,
  type Reason,
} from './errors.js';
import { parseFrames, toMessage, type Frame } from './frames.js';
import { watchUpgradeRefusal } from './retry-after.js';
import type { FetchLike } from './http-transport.js';
import { PollingSocket } from './long-polling.js';
import { SseSocket } from './sse.js';

export interface SwitchboardOptions {
  /** The server's WebSocket URL, e.g. `ws://localhost:8080/ws`. Give this or `endpoints`. */
  readonly url?: string;
  /** Several URLs, tried in turn: each failed attempt or dropped link moves to the next. */
  readonly endpoints?: readonly string[];
  /** The WebSocket class; default `globalThis.WebSocket`. In Node 20 pass `WebSocket` from `ws`. */
  readonly WebSocket?: WebSocketConstructor;
  /**
   * The transports to use, in order of preference. Default `['websocket', 'sse', 'long-polling']`,
   * less those the runtime lacks. One that fails before it opens hands over to the next; the one
   * that worked is used for reconnects, and the first is tried again every `upgradeRetryMs`.
   * SSE and long-polling use the WebSocket URL's host with `http(s)` and without its final `/ws`.
   */
  readonly transports?: readonly TransportName[];
  /** The `fetch` of the SSE and long-polling transports; default `globalThis.fetch`. */
  readonly fetch?: FetchLike;
  /** While on a fallback transport, try the first one again after this long (doubling while it fails). Default 60 000. */
  readonly upgradeRetryMs?: number;
  /** How long a long-poll may wait for frames (the server caps it at its ping interval). Default 20 000. */
  readonly pollWaitMs?: number;
  /** Reconnect delays: full jitter over [0, min(capMs, baseMs * 2^attempt)). */
  readonly backoff?: BackoffOptions;
  /** Ping after this long without any frame from the server. Default 15 000. */
  readonly pingIntervalMs?: number;
  /** Declare the link dead when no frame arrives this long after a ping. Default 10 000. */
  readonly pingTimeoutMs?: number;
  /** Give up an attempt whose socket is not open after this long. Default 10 000. */
  readonly connectTimeoutMs?: number;
  /** A command unanswered this long after being written to an open socket rejects with TimeoutError. Default 10 000. */
  readonly requestTimeoutMs?: number;
  /** Commands (publishes, history) that may wait for a connection; a publish beyond it rejects with QueueFullError. Default 1000. */
  readonly maxQueuedPublishes?: number;
  /**
   * Times a publish the server refused with 108 (not stored) or 118 (outcome unknown) is sent
   * again, with backoff and always with the same message id (stored at most once). Default 5.
   */
  readonly publishRetries?: number;
  /** Publishes whose frame exceeds this many UTF-8 bytes reject (server default 64 KiB). */
  readonly maxMessageBytes?: number;
  /**
   * A token sent in the first frame of every connection. Prefer `authCallback`, which can hand
   * out fresh tokens: it is asked on every (re)connect and when the server asks for a refresh.
   */
  readonly token?: string;
  /** Returns a token (from your backend); called on every connect and before the token expires. */
  readonly authCallback?: () => string | Promise<string>;
  /** GETs a token from this URL (`{"token": "..."}` or the token as text), like authCallback. */
  readonly authUrl?: string;
  /**
   * Keep every channel's position where a new client finds it, so a page reload (or a new process)
   * resumes each channel it subscribes to from where the old client stopped: missed messages
   * exactly once, or a `discontinuity`. `true` uses the browser's `sessionStorage` (one tab, kept
   * across reloads); or give your own store. Default off.
   */
  readonly recover?: boolean | PositionStore;
  /** Enter `suspended` after this many failed attempts in a row. Default 10. */
  readonly suspendAfterAttempts?: number;
  /** ... or after this long without a connection. Default 120 000. */
  readonly suspendAfterMs?: number;
}

interface Outgoing {
  readonly id: number;
  readonly text: string;
  /** A publish: refusals that may be temporary are retried with the same message id. */
  readonly publish: boolean;
  /** A publish's channel: its publishes are stored in call order, retries included (#pump). */
  readonly channel: string | undefined;
  readonly settle: (result: Frame | SwitchboardError) => void;
  /** The reply timeout while sent, the retry pause while in backoff. */
  timer?: ReturnType<typeof setTimeout>;
  /** Sent on the current link and not answered yet. */
  sent: boolean;
  /** Waiting out a retry pause: the channel's later publishes are held behind it. */
  backoff: boolean;
  /**
   * Its retry pause is over, but an earlier publish of its channel is still unanswered: sent once
   * that one is answered (it may fail too, and must then be stored first). Holds the channel.
   */
  due: boolean;
  /** Sends refused so far (retries). */
  attempt: number;
  /** One of its sends was answered 118: it may be stored, whatever a later refusal says. */
  maybeStored: boolean;
}

/**
 * A Switchboard client: one connection, any number of channels. Connects at construction and
 * reconnects by itself until `close()`.
 *
 * @example
 * ```ts
 * const client = new Switchboard({ url: 'ws://localhost:8080/ws' });
 * const channel = client.channels.get('iss.telemetry');
 * await channel.subscribe((message) => render(message.data));
 * await channel.publish('position', { lat: 51.5, lon: -0.1 });
 * ```
 */
export class Switchboard {
  readonly connection: Connection;
  readonly channels: Channels;
  readonly #requestTimeoutMs: number;
  readonly #maxQueued: number;
  readonly #publishRetries: number;
  readonly #maxBytes: number;
  #send: ((text: string) => void) | undefined;
  #ended: SwitchboardError | undefined;
  #nextId = 0;
  readonly #auth: AuthSource | undefined;
  /** Bumped whenever the link goes down, so late token answers for an old link are dropped. */
  #link = 0;
  #authRetries = 0;
  readonly #retryDelay: (attempt: number) => number;
  readonly #replies = new Map<number, (frame: Frame | undefined) => void>();
  /** Commands not yet answered, in the order they were made; re-sent in that order on reconnect. */
  #outbox: Outgoing[] = [];
  /** Per channel, its publishes in a retry pause; while any, the channel's later publishes wait. */
  readonly #stalled = new Map<string, number>();
  readonly #hooks = new Map<string, ChannelHooks>();

  constructor(options: SwitchboardOptions) {
    const endpoints = options.endpoints ?? (options.url === undefined ? [] : [options.url]);
    if (endpoints.length === 0) throw new TypeError('one of "url" or "endpoints" is required');
    const transports = resolveTransports(options);
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.#maxQueued = options.maxQueuedPublishes ?? 1000;
    this.#publishRetries = options.publishRetries ?? 5;
    this.#maxBytes = options.maxMessageBytes ?? 65_536;
    const backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#retryDelay = (attempt) => fullJitter(attempt, backoff);
    const connection: ConnectionOptions = {
      endpoints: [...endpoints],
      transports,
      upgradeRetryMs: options.upgradeRetryMs ?? 60_000,
      backoff,
      pingIntervalMs: options.pingIntervalMs ?? 15_000,
      pingTimeoutMs: options.pingTimeoutMs ?? 10_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      suspendAfterAttempts: options.suspendAfterAttempts ?? 10,
      suspendAfterMs: options.suspendAfterMs ?? 120_000,
      // A refused token is final unless a fresh one can be fetched: try once more with it.
      reconnectAfter: (code) =>
        code === DisconnectCode.UNAUTHORIZED &&
        this.#auth?.fresh === true &&
        this.#authRetries++ < 1,
    };
    const host: ChannelHost = {
      requestTimeoutMs: this.#requestTimeoutMs,
      ended: () => this.#endedError(),
      send: (command, onReply) => this.#sendNow(command, onReply),
      request: (command, publish) => this.#request(command, publish),
      retryDelay: (attempt) => fullJitter(attempt, backoff),
      newMessageId,
      presenceKey: newPresenceKey(),
      register: (name, hooks) => this.#hooks.set(name, hooks),
      positions:
        options.recover === true
          ? sessionStoragePositions()
          : options.recover === false || options.recover === undefined
            ? undefined
            : options.recover,
    };
    this.channels = new Channels(host);
    this.#auth = authSource(options, resolveFetch(options));
    this.connection = new Connection(connection, {
      open: (send) => this.#open(send),
      frames: (text) => this.#frames(text),
      down: (end) => this.#down(end),
    });
    this.connect();
  }

  /** Opens the connection again after `close()` or a terminal failure; channels resubscribe. */
  connect(): void {
    this.connection.connect();
  }

  /** Closes the connection; pending and queued commands reject with ConnectionClosedError. */
  close(): void {
    this.connection.close();
  }

  #open(send: (text: string) => void): void {
    const auth = this.#auth;
    if (auth === undefined) {
      this.#ready(send);
      return;
    }
    const link = ++this.#link;
    auth.get().then(
      (token) => {
        if (link !== this.#link) return;
        // The server runs what follows a connect frame with its credentials, so no need to wait.
        send(JSON.stringify({ action: 'connect', token, id: ++this.#nextId }));
        this.#replies.set(this.#nextId, (frame) => {
          if (frame !== undefined && replyError(frame) === undefined) this.#authRetries = 0;
        });
        this.#ready(send);
      },
      (err: unknown) => {
        if (link !== this.#link) return;
        // No token to send: drop the link as if it had expired, so backoff retries the callback.
        this.connection.abort(
          DisconnectCode.TOKEN_EXPIRED,
          `auth: ${err instanceof Error ? err.message : String(err)}`,
        );
      },
    );
  }

  #ready(send: (text: string) => void): void {
    this.#send = send;
    for (const hooks of this.#hooks.values()) hooks.up();
    // No retry pause survives a link (#down), so this is every channel's queue, in order.
    for (const entry of this.#outbox) this.#transmit(entry);
  }

  /** The server asked for a fresh token before the current one expires. */
  #refresh(): void {
    const auth = this.#auth;
    if (auth === undefined || !auth.fresh) return;
    const link = this.#link;
    auth.get().then(
      (token) => {
        if (link === this.#link) this.#sendNow({ action: 'refresh', token }, () => {});
      },
      () => {
        // The server closes with 3005 at expiry; the reconnect then asks for a token again.
      },
    );
  }

  #frames(text: string): void {
    for (const frame of parseFrames(text)) {
      const id = frame['reply'];
      if (id !== undefined) {
        const handler = typeof id === 'number' ? this.#replies.get(id) : undefined;
        if (handler) {
          this.#replies.delete(id as number);
          handler(frame);
        }
        continue;
      }
      const event = frame['event'];
      if (event === 'refresh') {
        this.#refresh();
        continue;
      }
      if (event === 'discontinuity' && typeof frame['channel'] === 'string') {
        const { from, until } = frame;
        this.#hooks
          .get(frame['channel'])
          ?.lost(
            typeof from === 'number' ? from : undefined,
            typeof until === 'number' ? until : undefined,
          );
        continue;
      }
      if (event === 'unsubscribed' && typeof frame['channel'] === 'string') {
        const code = (
          typeof frame['code'] === 'number' ? frame['code'] : ErrorCode.PERMISSION_DENIED
        ) as ErrorCodeValue;
        const reason =
          typeof frame['reason'] === 'string' ? frame['reason'] : 'unsubscribed by the server';
        this.#hooks.get(frame['channel'])?.revoked(new SwitchboardError(code, reason));
        continue;
      }
      if (
        (event === 'presence-unsubscribed' || event === 'occupancy-unsubscribed') &&
        typeof frame['channel'] === 'string'
      ) {
        const code = (
          typeof frame['code'] === 'number' ? frame['code'] : ErrorCode.PERMISSION_DENIED
        ) as ErrorCodeValue;
        const reason =
          typeof frame['reason'] === 'string' ? frame['reason'] : 'unsubscribed by the server';
        const hooks = this.#hooks.get(frame['channel']);
        const err = new SwitchboardError(code, reason);
        if (event === 'presence-unsubscribed') hooks?.presenceRevoked(err);
        else hooks?.occupancyRevoked(err);
        continue;
      }
      if (event === 'occupancy' && typeof frame['channel'] === 'string') {
        this.#hooks.get(frame['channel'])?.occupancy(frame);
        continue;
      }
      const presence = frame['presence'];
      if (Array.isArray(presence) && typeof frame['channel'] === 'string') {
        const epoch = frame['epoch'];
        this.#hooks
          .get(frame['channel'])
          ?.presence(presence, typeof epoch === 'string' ? epoch : undefined);
        continue;
      }
      const message = toMessage(frame);
      if (message) this.#hooks.get(message.channel)?.deliver(message);
    }
  }

  #down(end: Reason | undefined): void {
    this.#link++;
    this.#send = undefined;
    const handlers = [...this.#replies.values()];
    this.#replies.clear();
    for (const handler of handlers) handler(undefined);
    for (const entry of this.#outbox) {
      clearTimeout(entry.timer);
      entry.sent = false;
      entry.backoff = false;
      entry.due = false;
    }
    this.#stalled.clear();
    for (const hooks of this.#hooks.values()) hooks.down();
    if (end === undefined) return;
    const err = (this.#ended = new ConnectionClosedError(end));
    const outbox = this.#outbox;
    this.#outbox = [];
    for (const entry of outbox) entry.settle(err);
    for (const hooks of this.#hooks.values()) hooks.end(err);
  }

  /** The error that ended the connection, while it is closed or failed. */
  #endedError(): SwitchboardError | undefined {
    const state = this.connection.state;
    return state === 'closed' || state === 'failed' ? this.#ended : undefined;
  }

  #sendNow(command: Frame, onReply: (frame: Frame | undefined) => void): boolean {
    const send = this.#send;
    if (send === undefined) return false;
    const id = ++this.#nextId;
    this.#replies.set(id, onReply);
    send(JSON.stringify({ ...command, id }));
    return true;
  }

  #request(command: Frame, publish: boolean): Promise<Frame> {
    const ended = this.#endedError();
    if (ended) return Promise.reject(ended);
    if (publish && this.#send === undefined && this.#outbox.length >= this.#maxQueued) {
      return Promise.reject(new QueueFullError(this.#maxQueued));
    }
    const id = ++this.#nextId;
    const text = JSON.stringify({ ...command, id });
    if (
      text.length * 3 > this.#maxBytes &&
      new TextEncoder().encode(text).length > this.#maxBytes
    ) {
      return Promise.reject(
        new SwitchboardError(
          ErrorCode.PAYLOAD_TOO_LARGE,
          `the frame exceeds maxMessageBytes (${this.#maxBytes})`,
        ),
      );
    }
    return new Promise<Frame>((resolve, reject) => {
      const channel =
        publish && typeof command['channel'] === 'string' ? command['channel'] : undefined;
      const entry: Outgoing = {
        id,
        text,
        publish,
        channel,
        sent: false,
        backoff: false,
        due: false,
        attempt: 0,
        maybeStored: false,
        settle: (result) => {
          clearTimeout(entry.timer);
          const i = this.#outbox.indexOf(entry);
          if (i !== -1) this.#outbox.splice(i, 1);
          if (result instanceof SwitchboardError) reject(result);
          else resolve(result);
        },
      };
      this.#outbox.push(entry);
      // Held (sent later by #pump) while an earlier publish of the channel waits to be retried.
      if (this.#send && (channel === undefined || !this.#stalled.has(channel)))
        this.#transmit(entry);
    });
  }

  /**
   * Sends the channel's unsent publishes in call order, up to the first one in a retry pause, or
   * the first retry with an earlier publish of the channel still unanswered. A retried publish is
   * thus never stored after a later one of the same channel from this client (the Cluster broker
   * fails the publishes queued behind a failed one unsent, so they come back here and queue
   * behind it again). Nor before an earlier one still in flight: that one may be refused too
   * (its refusal may already be on the way), and must then be stored first; the server cannot
   * tell (its publish fence takes the later one's re-send for the earlier one given up).
   */
  #pump(channel: string): void {
    if (this.#send === undefined) return;
    let inFlight = false;
    for (const entry of this.#outbox) {
      if (entry.channel !== channel) continue;
      if (entry.backoff) return;
      if (entry.sent) {
        inFlight = true;
        continue;
      }
      if (entry.due) {
        if (inFlight) return;
        entry.due = false;
        this.#unstall(channel);
      }
      this.#transmit(entry);
      inFlight = true;
    }
  }

  /** One publish of `channel` no longer holds the channel's later ones. */
  #unstall(channel: string): void {
    const left = (this.#stalled.get(channel) ?? 1) - 1;
    if (left > 0) this.#stalled.set(channel, left);
    else this.#stalled.delete(channel);
  }

  #transmit(entry: Outgoing): void {
    entry.sent = true;
    this.#replies.set(entry.id, (frame) => {
      if (frame === undefined) return;
      entry.sent = false;
      const attempt = entry.attempt;
      let err = replyError(frame);
      if (err?.code === ErrorCode.OUTCOME_UNKNOWN) entry.maybeStored = true;
      // Refused unsent (108) after an attempt whose outcome was unknown: still unknown.
      else if (err?.code === ErrorCode.NOT_AVAILABLE && entry.maybeStored)
        err = new SwitchboardError(
          ErrorCode.OUTCOME_UNKNOWN,
          `${err.message} (an earlier attempt may have stored it)`,
        );
      // Too many commands in flight (e.g. a backlog re-sent after a reconnect): the server stored
      // nothing, so send it again after a pause instead of failing the application's publish.
      // A publish refused as not stored (108) or whose outcome the server does not know (118):
      // sent again unchanged, so with the same message id, which the server stores at most once.
      const retry =
        err?.code === ErrorCode.TOO_MANY_REQUESTS
          ? attempt < MAX_BUSY_RETRIES
          : entry.publish &&
            (err?.code === ErrorCode.NOT_AVAILABLE || err?.code === ErrorCode.OUTCOME_UNKNOWN) &&
            attempt < this.#publishRetries;
      if (retry) {
        clearTimeout(entry.timer);
        entry.attempt = attempt + 1;
        const channel = entry.channel;
        if (channel === undefined) {
          entry.timer = setTimeout(() => {
            if (this.#send !== undefined && this.#outbox.includes(entry)) this.#transmit(entry);
          }, this.#retryDelay(attempt));
          return;
        }
        entry.backoff = true;
        this.#stalled.set(channel, (this.#stalled.get(channel) ?? 0) + 1);
        entry.timer = setTimeout(() => {
          entry.backoff = false;
          // Still holds the channel until sent (#pump): it may have to wait for an earlier one.
          entry.due = true;
          this.#pump(channel);
        }, this.#retryDelay(attempt));
        return;
      }
      entry.settle(err ?? frame);
      // A retry of the channel may have waited for this answer.
      if (entry.channel !== undefined && this.#stalled.has(entry.channel))
        this.#pump(entry.channel);
    });
    entry.timer = setTimeout(() => {
      this.#replies.delete(entry.id);
      entry.settle(new TimeoutError(this.#requestTimeoutMs));
      if (entry.channel !== undefined && this.#stalled.has(entry.channel))
        this.#pump(entry.channel);
    }, this.#requestTimeoutMs);
    this.#send?.(entry.text);
  }
}

/** Retries of one command the server refused as too many in flight (111). */
const MAX_BUSY_RETRIES = 20;

const DEFAULT_TRANSPORTS: readonly TransportName[] = ['websocket', 'sse', 'long-polling'];

/** The transports asked for (or all), less those the runtime cannot provide. */
function resolveTransports(options: SwitchboardOptions): Transport[] {
  const g = globalThis as { WebSocket?: WebSocketConstructor; fetch?: FetchLike };
  const WebSocket = options.WebSocket ?? g.WebSocket;
  const fetch = options.fetch ?? (g.fetch === undefined ? undefined : g.fetch.bind(globalThis));
  const pollWaitMs = options.pollWaitMs ?? 20_000;
  const out: Transport[] = [];
  for (const name of options.transports ?? DEFAULT_TRANSPORTS) {
    if (name === 'websocket' && WebSocket !== undefined) {
      out.push({
        name,
        open: (url) => {
          const ws = new WebSocket(url, [BATCH_SUBPROTOCOL]);
          watchUpgradeRefusal(ws);
          return ws;
        },
      });
    } else if (name === 'sse' && fetch !== undefined) {
      out.push({ name, open: (url) => new SseSocket(url, fetch) });
    } else if (name === 'long-polling' && fetch !== undefined) {
      out.push({ name, open: (url) => new PollingSocket(url, fetch, pollWaitMs) });
    }
  }
  if (out.length === 0) {
    throw new TypeError(
      'no transport available: no global WebSocket or fetch (in Node 20 pass options.WebSocket from "ws")',
    );
  }
  return out;
}

/** A message id: a UUID where the runtime offers one (secure contexts, Node), else 128 random bits. */
function newMessageId(): string {
  const crypto = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (typeof crypto?.randomUUID === 'function') return crypto.randomUUID();
  let id = '';
  for (let i = 0; i < 4; i++) id += Math.floor(Math.random() * 2 ** 32).toString(36);
  return id;
}

/**
 * The client's presence key: 192 random bits, kept for the client's life and sent with its
 * enters, so a reconnected connection takes its memberships over (the server derives the
 * connectionId from it and the token's sub).
 */
function newPresenceKey(): string {
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } })
    .crypto;
  const bytes = new Uint8Array(24);
  if (typeof crypto?.getRandomValues === 'function') crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  let key = '';
  for (const b of bytes) key += b.toString(16).padStart(2, '0');
  return key;
}

interface AuthSource {
  /** Whether each call may return a new token (callback or URL), not a fixed one. */
  readonly fresh: boolean;
  get(): Promise<string>;
}

function resolveFetch(options: SwitchboardOptions): FetchLike | undefined {
  const g = globalThis as { fetch?: FetchLike };
  return options.fetch ?? (g.fetch === undefined ? undefined : g.fetch.bind(globalThis));
}

/** Where tokens come from: a callback, a URL, a fixed token, or nowhere. */
function authSource(
  options: SwitchboardOptions,
  fetch: FetchLike | undefined,
): AuthSource | undefined {
  const { authCallback, authUrl, token } = options;
  if (authCallback !== undefined) return { fresh: true, get: async () => authCallback() };
  if (authUrl !== undefined) {
    if (fetch === undefined)
      throw new TypeError('authUrl needs fetch (options.fetch or a global fetch)');
    return {
      fresh: true,
      async get() {
        const res = await fetch(authUrl, { method: 'GET', credentials: 'include' });
        const text = await res.text();
        if (!res.ok) throw new Error(`authUrl answered ${res.status}`);
        const trimmed = text.trim();
        if (!trimmed.startsWith('{')) return trimmed;
        const body = JSON.parse(trimmed) as { token?: unknown };
        if (typeof body.token !== 'string') throw new Error('authUrl JSON has no token');
        return body.token;
      },
    };
  }
  if (token !== undefined) return { fresh: false, get: () => Promise.resolve(token) };
  return undefined;
}
