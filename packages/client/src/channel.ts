import { channelError } from '@switchboard/protocol';
import { Emitter, invoke } from './emitter.js';
import { replyError, SwitchboardError, TimeoutError } from './errors.js';
import { toMessage, toPosition, type Frame, type Message, type Position } from './frames.js';
import { OccupancyStream, type ChannelOccupancy } from './occupancy.js';
import { Presence, type ChannelPresence } from './presence.js';

export type MessageListener = (message: Message) => void;

/** What a publish's acknowledgement says: the message is stored at this position. */
export interface PublishResult {
  /** The message id (the idempotency key). */
  readonly id: string;
  readonly offset: number;
  readonly epoch: string;
  /** True when the server had already stored this id (a retry); the original position is returned. */
  readonly duplicate: boolean;
}

/** A message to publish. */
export interface OutgoingMessage {
  readonly name?: string;
  /** Any JSON value; `undefined` is sent as `null`. */
  readonly data?: unknown;
  /** The idempotency key; generated when omitted. At most 128 characters. */
  readonly id?: string;
}

export interface HistoryOptions {
  /** Messages per page, 1-1000 (server default 100). */
  readonly limit?: number;
  /** `forward` (oldest first, the default) or `backward` (newest first). */
  readonly direction?: 'forward' | 'backward';
  /** Forward from after this position. */
  readonly since?: Position;
  /** Backward from before this offset. */
  readonly before?: number;
}

/** One page of history. */
export interface HistoryPage {
  readonly items: readonly Message[];
  /** The channel's current position, as the server reported it. */
  readonly position: Position | undefined;
  hasNext(): boolean;
  /** The following page, or undefined when this is the last one. */
  next(): Promise<HistoryPage | undefined>;
}

/** Emitted when the channel's stream cannot be continued seamlessly; refetch state then. */
export interface DiscontinuityInfo {
  /**
   * `unrecovered`: the server could not replay the gap; `epoch`: the stream was reset; `lost`:
   * messages without a stream position (raw Redis PUBLISHes bridged by the server) may be missing
   * here, because the server's bridge subscription or this client's connection was down.
   */
  readonly reason: 'unrecovered' | 'epoch' | 'lost';
  /** The position the SDK held, if any. */
  readonly previous: Position | undefined;
  /** The position delivery continues from, if known. */
  readonly current: Position | undefined;
  /** With `lost` from the server: when its bridge was down (ms since the Unix epoch). */
  readonly from?: number;
  readonly until?: number;
}

/**
 * Where a channel is: `initialized` (never subscribed), `subscribing` (a subscribe is on its way,
 * or waits for the connection to come back), `subscribed` (the server confirmed; messages flow),
 * `unsubscribed` (by `unsubscribe()` or `client.close()`), `failed` (the server refused it for
 * good, or the client failed; `reason` says why).
 */
export type ChannelState = 'initialized' | 'subscribing' | 'subscribed' | 'unsubscribed' | 'failed';

export interface ChannelStateChange {
  readonly previous: ChannelState;
  readonly current: ChannelState;
  /** Why, for `failed` (and `unsubscribed` when the client ended). */
  readonly reason?: SwitchboardError;
  /** On `subscribed`: true when the subscription continued from a held position without a gap. */
  readonly resumed?: boolean;
}

/** Where a new subscription starts; ignored while the channel already holds a position. */
export interface SubscribeOptions {
  /** Resume after this position (e.g. one saved by the application): missed messages first. */
  readonly since?: Position;
  /** Deliver the last `rewind` messages (1-1000) before the live ones. */
  readonly rewind?: number;
}

/**
 * Keeps each channel's position outside the client, so a new client (after a page reload, a
 * process restart) resumes where the old one stopped. `set(channel, undefined)` forgets one.
 */
export interface PositionStore {
  get(channel: string): Position | undefined;
  set(channel: string, position: Position | undefined): void;
}

/** One event per state, plus `state` for every transition. */
export type ChannelEvents = { readonly [S in ChannelState]: ChannelStateChange } & {
  readonly state: ChannelStateChange;
  readonly discontinuity: DiscontinuityInfo;
  /** The server refused the subscription for good (e.g. permission denied); listeners are dropped. */
  readonly error: SwitchboardError;
};

/** The client's side of a channel, given to it at construction. */
export interface ChannelHost {
  readonly requestTimeoutMs: number;
  /** The error to reject with when the client is closed or failed, else undefined. */
  ended(): SwitchboardError | undefined;
  /** Sends when connected (returns false otherwise); `onReply` gets the reply, or undefined if the link dropped. */
  send(command: Frame, onReply: (frame: Frame | undefined) => void): boolean;
  /** A command that survives reconnects: queued while disconnected, re-sent after a drop. */
  request(command: Frame, publish: boolean): Promise<Frame>;
  retryDelay(attempt: number): number;
  newMessageId(): string;
  /** The client's presence key (a secret kept for its life; see presence.ts). */
  readonly presenceKey: string;
  register(channel: string, hooks: ChannelHooks): void;
  readonly positions: PositionStore | undefined;
}

/** What the client calls on a channel. */
export interface ChannelHooks {
  deliver(message: Message): void;
  up(): void;
  down(): void;
  end(err: SwitchboardError): void;
  /** The server ended the subscription (a refreshed token no longer allows it). */
  revoked(err: SwitchboardError): void;
  /** Presence events of the channel (the `presence` array of an event frame, and its epoch). */
  presence(events: readonly unknown[], epoch: string | undefined): void;
  /** The server ended the channel's presence events (a refreshed token no longer allows them). */
  presenceRevoked(err: SwitchboardError): void;
  /** An occupancy event of the channel. */
  occupancy(frame: Frame): void;
  /** The server ended the channel's occupancy events. */
  occupancyRevoked(err: SwitchboardError): void;
  /** The server says unpositioned messages were lost here (its bridge was down). */
  lost(from: number | undefined, until: number | undefined): void;
}

type Attach = 'idle' | 'pending' | 'attaching' | 'attached';

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (err: SwitchboardError) => void;
}

/**
 * A named channel: subscribe, publish, history. Delivery is in offset order and exactly once
 * across reconnects: the SDK resumes from the position of the last delivered message, drops
 * duplicates, and emits `discontinuity` when the server could not fill a gap.
 */
export class Channel extends Emitter<ChannelEvents> {
  readonly name: string;
  /**
   * Presence: `enter/update/leave(data)`, `get()`, `subscribe(listener)`. Calling it (`await
   * channel.presence()`) is `get()`. Needs the `presence` capability and a namespace with presence
   * on; otherwise rejects with the server's error (103 or 101, or 117 PRESENCE_DISABLED).
   */
  readonly presence: ChannelPresence;
  /**
   * Occupancy: `subscribe(listener)` gets the channel's deployment-wide counts (connections,
   * subscribers, presenceMembers, publishersLastMinute) at most once per second when they change.
   * Needs the `subscribe` capability.
   */
  readonly occupancy: ChannelOccupancy;
  readonly #presence: Presence;
  readonly #occupancy: OccupancyStream;
  readonly #host: ChannelHost;
  #listeners: readonly { readonly name: string | undefined; readonly fn: MessageListener }[] = [];
  #attach: Attach = 'idle';
  /** Bumped whenever an attach attempt is abandoned, so its late reply is ignored. */
  #generation = 0;
  #attempt = 0;
  #position: Position | undefined;
  #state: ChannelState = 'initialized';
  #since: Position | undefined;
  /** A rewind asked for by subscribe(), sent until a reply gives the channel a position. */
  #rewind: number | undefined;
  /** Pushes that arrived before the subscribe reply; delivered (deduplicated) once it comes. */
  #early: Message[] = [];
  #waiters: Waiter[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Messages without a position were delivered: a resume cannot replay those it missed. */
  #unpositioned = false;

  constructor(name: string, host: ChannelHost) {
    super();
    this.name = name;
    this.#host = host;
    this.#presence = new Presence({
      channel: name,
      presenceKey: host.presenceKey,
      send: (command, onReply) => host.send(command, onReply),
      request: (command) => host.request(command, false),
      failed: (err) => this.emit('error', err),
    });
    this.presence = this.#presence.api();
    this.#occupancy = new OccupancyStream({
      channel: name,
      send: (command, onReply) => host.send(command, onReply),
      request: (command) => host.request(command, false),
      failed: (err) => this.emit('error', err),
    });
    this.occupancy = this.#occupancy.api();
    this.#position = host.positions?.get(name);
    host.register(name, {
      deliver: (m) => this.#deliver(m),
      presence: (events, epoch) => this.#presence.events(events, epoch),
      presenceRevoked: (err) => this.#presence.revoked(err),
      occupancy: (frame) => this.#occupancy.event(frame),
      occupancyRevoked: (err) => this.#occupancy.revoked(err),
      up: () => {
        this.#send();
        this.#presence.up();
        this.#occupancy.up();
      },
      lost: (from, until) => {
        if (this.#attach !== 'attached' && this.#attach !== 'attaching') return;
        const p = this.#position;
        this.emit('discontinuity', {
          reason: 'lost',
          previous: p,
          current: p,
          ...(from !== undefined && { from }),
          ...(until !== undefined && { until }),
        });
      },
      down: () => {
        this.#down();
        this.#presence.down();
      },
      end: (err) => {
        this.#settle(err);
        if (this.#state === 'subscribing' || this.#state === 'subscribed')
          this.#setState(err.code === 1000 ? 'unsubscribed' : 'failed', { reason: err });
      },
      revoked: (err) => this.#fail(err),
    });
  }

  /** Where the channel is; every change is also an event (`subscribed`, ..., and `state`). */
  get state(): ChannelState {
    return this.#state;
  }

  /** The position of the last message delivered (or of the subscribe reply), if known. */
  get position(): Position | undefined {
    return this.#position;
  }

  /**
   * Adds a listener (for every message, or only those named `name`) and subscribes the channel if
   * needed. Resolves when the server confirmed the subscription (at once if it already had, or
   * if `unsubscribe()` cancelled it); rejects when the server refuses it, when no reply comes
   * within `requestTimeoutMs` of the command being sent (the subscription is still pursued), or
   * when the client is closed.
   */
  subscribe(listener: MessageListener, options?: SubscribeOptions): Promise<void>;
  subscribe(name: string, listener: MessageListener, options?: SubscribeOptions): Promise<void>;
  subscribe(
    a: string | MessageListener,
    b?: MessageListener | SubscribeOptions,
    c?: SubscribeOptions,
  ): Promise<void> {
    const [name, fn, options] =
      typeof a === 'string' ? [a, b as MessageListener | undefined, c] : [undefined, a, b];
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    const { since, rewind } = (options ?? {}) as SubscribeOptions;
    if (rewind !== undefined && !(Number.isSafeInteger(rewind) && rewind >= 1 && rewind <= 1000))
      throw new TypeError('rewind must be an integer from 1 to 1000');
    if (
      since !== undefined &&
      (!Number.isSafeInteger(since.offset) || typeof since.epoch !== 'string')
    )
      throw new TypeError('since must be a position {offset, epoch}');
    const ended = this.#host.ended();
    if (ended) return Promise.reject(ended);
    if (this.#attach === 'idle' && this.#position === undefined) {
      if (since !== undefined) this.#setPosition({ offset: since.offset, epoch: since.epoch });
      else this.#rewind = rewind;
    }
    this.#listeners = [...this.#listeners, { name, fn }];
    if (this.#attach === 'attached') return Promise.resolve();
    const confirmed = new Promise<void>((resolve, reject) =>
      this.#waiters.push({ resolve, reject }),
    );
    if (this.#attach === 'idle') {
      this.#attach = 'pending';
      this.#setState('subscribing');
      this.#send();
    }
    return confirmed;
  }

  /**
   * Removes `listener` (every listener when omitted). When none is left the channel is
   * unsubscribed on the server and its position forgotten.
   */
  unsubscribe(listener?: MessageListener): void {
    this.#listeners = listener ? this.#listeners.filter((l) => l.fn !== listener) : [];
    if (this.#listeners.length > 0 || this.#attach === 'idle') return;
    const wasSent = this.#attach === 'attaching' || this.#attach === 'attached';
    this.#reset('idle');
    this.#setPosition(undefined);
    this.#rewind = undefined;
    this.#settle(undefined);
    this.#setState('unsubscribed');
    if (wasSent) this.#host.send({ action: 'unsubscribe', channel: this.name }, ignore);
  }

  /**
   * Publishes a message; resolves when the server stored it. While disconnected the publish is
   * queued (at most `maxQueuedPublishes`). The message gets its id once (yours, `id`, or a
   * generated one) and keeps it through every retry: a publish whose acknowledgement was lost is
   * re-sent after reconnecting, and one refused with 108 or 118 is re-sent after a backoff (up to
   * `publishRetries` times), and the server stores it once. A rejection carries the id
   * (`err.messageId`): publish again with it to retry safely.
   */
  publish(name: string, data?: unknown): Promise<PublishResult>;
  publish(message: OutgoingMessage): Promise<PublishResult>;
  publish(a: string | OutgoingMessage, data?: unknown): Promise<PublishResult> {
    const m: OutgoingMessage = typeof a === 'string' ? { name: a, data } : a;
    const command = {
      action: 'publish',
      channel: this.name,
      ...(m.name !== undefined && { name: m.name }),
      data: m.data === undefined ? null : m.data,
      messageId: m.id ?? this.#host.newMessageId(),
    };
    return this.#host.request(command, true).then(
      (f) => ({
        id: typeof f['messageId'] === 'string' ? f['messageId'] : command.messageId,
        offset: Number(f['offset']),
        epoch: typeof f['epoch'] === 'string' ? f['epoch'] : '',
        duplicate: f['duplicate'] === true,
      }),
      (err: unknown) => {
        if (err instanceof SwitchboardError) err.messageId = command.messageId;
        throw err;
      },
    );
  }

  /** Fetches one page of the channel's stored messages. */
  history(options: HistoryOptions = {}): Promise<HistoryPage> {
    const { limit, direction, since, before } = options;
    const base = {
      action: 'history',
      channel: this.name,
      ...(limit !== undefined && { limit }),
      ...(direction !== undefined && { direction }),
    };
    return this.#history(base, {
      ...base,
      ...(since !== undefined && { since }),
      ...(before !== undefined && { before }),
    });
  }

  async #history(base: Frame, command: Frame): Promise<HistoryPage> {
    const reply = await this.#host.request(command, false);
    const raw = reply['messages'];
    const items: Message[] = [];
    for (const f of Array.isArray(raw) ? (raw as unknown[]) : []) {
      const m = typeof f === 'object' && f !== null ? toMessage(f as Frame) : undefined;
      if (m) items.push(m);
    }
    const cursor = reply['next'];
    const more = cursor !== undefined && cursor !== null;
    return {
      items,
      position: toPosition(reply['position']),
      hasNext: () => more,
      next: () => (more ? this.#history(base, { ...base, cursor }) : Promise.resolve(undefined)),
    };
  }

  #send(): void {
    if (this.#attach !== 'pending') return;
    this.#setState('subscribing');
    const since = this.#position;
    const generation = ++this.#generation;
    const rewind = since === undefined ? this.#rewind : undefined;
    const command = {
      action: 'subscribe',
      channel: this.name,
      ...(since && { since }),
      ...(rewind !== undefined && { rewind }),
    };
    if (!this.#host.send(command, (f) => this.#replied(generation, f))) return;
    this.#attach = 'attaching';
    this.#since = since;
    this.#early = [];
    const ms = this.#host.requestTimeoutMs;
    this.#timer = setTimeout(() => this.#settle(new TimeoutError(ms)), ms);
  }

  #replied(generation: number, f: Frame | undefined): void {
    if (generation !== this.#generation || f === undefined) return;
    clearTimeout(this.#timer);
    const err = replyError(f);
    if (err) {
      if (err.temporary) {
        this.#attach = 'pending';
        setTimeout(() => this.#send(), this.#host.retryDelay(this.#attempt++));
        return;
      }
      this.#fail(err);
      return;
    }
    this.#attach = 'attached';
    this.#attempt = 0;
    this.#rewind = undefined;
    const since = this.#since;
    const position = toPosition(f['position']);
    const gap = since && (f['recovered'] !== true || (position && position.epoch !== since.epoch));
    if (gap) {
      this.#setPosition(position);
      this.emit('discontinuity', { reason: 'unrecovered', previous: since, current: position });
    } else if (since && this.#unpositioned) {
      this.emit('discontinuity', { reason: 'lost', previous: since, current: position });
    }
    // Pushes sent before the reply (a plain subscribe lets live messages through while the
    // server confirms) follow the old position; the reply's position is the floor after them.
    const early = this.#early;
    this.#early = [];
    for (const m of early) this.#deliver(m);
    const p = this.#position;
    if (position && (!p || p.epoch !== position.epoch || p.offset < position.offset)) {
      this.#setPosition(position);
    }
    this.#settle(undefined);
    this.#setState('subscribed', { resumed: since !== undefined && !gap });
  }

  #deliver(m: Message): void {
    if (this.#attach === 'attaching') {
      this.#early.push(m);
      return;
    }
    if (this.#attach !== 'attached') return;
    const { offset, epoch } = m;
    if (offset !== undefined && epoch !== undefined) {
      const previous = this.#position;
      const current = { offset, epoch };
      if (previous && previous.epoch === epoch) {
        if (offset <= previous.offset) return;
      } else if (previous) {
        this.emit('discontinuity', { reason: 'epoch', previous, current });
      }
      this.#setPosition(current);
    } else this.#unpositioned = true;
    for (const l of this.#listeners) {
      if (l.name === undefined || l.name === m.name) invoke(l.fn, m);
    }
  }

  #down(): void {
    if (this.#attach === 'attaching' || this.#attach === 'attached') {
      this.#reset('pending');
      this.#setState('subscribing');
    }
  }

  /** The server refused the channel for good: listeners and position are dropped. */
  #fail(err: SwitchboardError): void {
    this.#listeners = [];
    this.#reset('idle');
    this.#setPosition(undefined);
    this.#rewind = undefined;
    this.#settle(err);
    this.#setState('failed', { reason: err });
    this.emit('error', err);
  }

  #setPosition(position: Position | undefined): void {
    this.#position = position;
    this.#host.positions?.set(this.name, position);
  }

  #setState(
    current: ChannelState,
    detail: { reason?: SwitchboardError; resumed?: boolean } = {},
  ): void {
    const previous = this.#state;
    if (previous === current) return;
    this.#state = current;
    const change: ChannelStateChange = { previous, current, ...detail };
    this.emit(current, change);
    this.emit('state', change);
  }

  #reset(state: Attach): void {
    clearTimeout(this.#timer);
    this.#generation++;
    this.#attach = state;
    this.#early = [];
  }

  /** Resolves (no error) or rejects every pending subscribe() call. */
  #settle(err: SwitchboardError | undefined): void {
    clearTimeout(this.#timer);
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) {
      if (err) w.reject(err);
      else w.resolve();
    }
  }
}

/** `client.channels`: one Channel object per name. */
export class Channels {
  readonly #host: ChannelHost;
  readonly #channels = new Map<string, Channel>();

  constructor(host: ChannelHost) {
    this.#host = host;
  }

  /** The channel named `name`; throws a TypeError when the name is not valid. */
  get(name: string): Channel {
    let channel = this.#channels.get(name);
    if (channel === undefined) {
      const why = channelError(name);
      if (why !== undefined) throw new TypeError(why);
      channel = new Channel(name, this.#host);
      this.#channels.set(name, channel);
    }
    return channel;
  }
}

function ignore(): void {}
