import { channelError } from '@switchboard/protocol';
import { Emitter, invoke } from './emitter.js';
import { replyError, SwitchboardError, TimeoutError } from './errors.js';
import { toMessage, toPosition, type Frame, type Message, type Position } from './frames.js';

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

/** One connection subscribed to a channel whose namespace keeps presence. */
export interface PresenceMember {
  /** The connection's presence id (random, stable for the connection's life). */
  readonly clientId: string;
  /** The `sub` of the connection's token; absent for anonymous connections. */
  readonly user?: string;
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

export interface ChannelEvents {
  readonly discontinuity: DiscontinuityInfo;
  /** The server refused the subscription for good (e.g. permission denied); listeners are dropped. */
  readonly error: SwitchboardError;
}

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
  register(channel: string, hooks: ChannelHooks): void;
}

/** What the client calls on a channel. */
export interface ChannelHooks {
  deliver(message: Message): void;
  up(): void;
  down(): void;
  end(err: SwitchboardError): void;
  /** The server ended the subscription (a refreshed token no longer allows it). */
  revoked(err: SwitchboardError): void;
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
  readonly #host: ChannelHost;
  #listeners: readonly { readonly name: string | undefined; readonly fn: MessageListener }[] = [];
  #attach: Attach = 'idle';
  /** Bumped whenever an attach attempt is abandoned, so its late reply is ignored. */
  #generation = 0;
  #attempt = 0;
  #position: Position | undefined;
  #since: Position | undefined;
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
    host.register(name, {
      deliver: (m) => this.#deliver(m),
      up: () => this.#send(),
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
      down: () => this.#down(),
      end: (err) => this.#settle(err),
      revoked: (err) => {
        this.#listeners = [];
        this.#reset('idle');
        this.#position = undefined;
        this.#settle(err);
        this.emit('error', err);
      },
    });
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
  subscribe(listener: MessageListener): Promise<void>;
  subscribe(name: string, listener: MessageListener): Promise<void>;
  subscribe(a: string | MessageListener, b?: MessageListener): Promise<void> {
    const [name, fn] = typeof a === 'string' ? [a, b] : [undefined, a];
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    const ended = this.#host.ended();
    if (ended) return Promise.reject(ended);
    this.#listeners = [...this.#listeners, { name, fn }];
    if (this.#attach === 'attached') return Promise.resolve();
    const confirmed = new Promise<void>((resolve, reject) =>
      this.#waiters.push({ resolve, reject }),
    );
    if (this.#attach === 'idle') {
      this.#attach = 'pending';
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
    this.#position = undefined;
    this.#settle(undefined);
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

  /**
   * Who is subscribed to the channel right now, on every node. Needs the `presence` capability
   * and a namespace with presence on; otherwise rejects with the server's error (103 or 101, or
   * 117 PRESENCE_DISABLED).
   */
  async presence(): Promise<PresenceMember[]> {
    const reply = await this.#host.request({ action: 'presence', channel: this.name }, false);
    const raw = reply['members'];
    const members: PresenceMember[] = [];
    for (const m of Array.isArray(raw) ? (raw as unknown[]) : []) {
      if (typeof m !== 'object' || m === null) continue;
      const { clientId, user } = m as Frame;
      if (typeof clientId !== 'string') continue;
      members.push(typeof user === 'string' ? { clientId, user } : { clientId });
    }
    return members;
  }

  #send(): void {
    if (this.#attach !== 'pending') return;
    const since = this.#position;
    const generation = ++this.#generation;
    const command = { action: 'subscribe', channel: this.name, ...(since && { since }) };
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
      this.#listeners = [];
      this.#reset('idle');
      this.#position = undefined;
      this.#settle(err);
      this.emit('error', err);
      return;
    }
    this.#attach = 'attached';
    this.#attempt = 0;
    const since = this.#since;
    const position = toPosition(f['position']);
    if (since && (f['recovered'] !== true || (position && position.epoch !== since.epoch))) {
      this.#position = position;
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
      this.#position = position;
    }
    this.#settle(undefined);
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
      this.#position = current;
    } else this.#unpositioned = true;
    for (const l of this.#listeners) {
      if (l.name === undefined || l.name === m.name) invoke(l.fn, m);
    }
  }

  #down(): void {
    if (this.#attach === 'attaching' || this.#attach === 'attached') this.#reset('pending');
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
