import { invoke } from './emitter.js';
import { replyError, type SwitchboardError } from './errors.js';
import type { Frame } from './frames.js';

/** A member of a channel's presence: one connection of one client, with its data. */
export interface PresenceMember {
  /** The `sub` of the member's token; for an anonymous connection, its connectionId. */
  readonly clientId: string;
  /** The member's connection (stable across the SDK's reconnects: see `presenceKey`). */
  readonly connectionId: string;
  /** What the member entered or last updated with (any JSON value; `null` when none). */
  readonly data: unknown;
  /** When the member entered or last changed, in ms since the Unix epoch. */
  readonly timestamp: number;
  /** The channel's presence offset of the member's last change. */
  readonly offset: number;
}

export type PresenceAction = 'enter' | 'update' | 'leave';

/** A change of a channel's presence, as delivered to presence listeners. */
export interface PresenceEvent extends PresenceMember {
  readonly action: PresenceAction;
}

export type PresenceListener = (event: PresenceEvent) => void;

export interface PresenceGetOptions {
  /** Only the members of this client (its connections). */
  readonly clientId?: string;
}

/** What the presence of a channel needs from its channel and client. */
export interface PresenceHost {
  readonly channel: string;
  /** The client's presence key: kept for the client's life, sent with every enter. */
  readonly presenceKey: string;
  send(command: Frame, onReply: (frame: Frame | undefined) => void): boolean;
  request(command: Frame): Promise<Frame>;
  /** Reports a presence subscription the server refused for good. */
  failed(err: SwitchboardError): void;
}

/** `channel.presence`: callable (`await channel.presence()` is `get()`) and an object. */
export interface ChannelPresence {
  (): Promise<PresenceMember[]>;
  /**
   * Enters this connection into the channel's presence with `data`. Needs the `presence`
   * capability. After a reconnect the SDK enters again with the same data and presence key, so
   * the server takes the membership over without a leave and an enter (within its grace period).
   */
  enter(data?: unknown): Promise<void>;
  /** Changes the data (enters when not a member). */
  update(data?: unknown): Promise<void>;
  /** Leaves (with `data` for the leave event, else the last data). */
  leave(data?: unknown): Promise<void>;
  /**
   * The channel's members, on every node. While subscribed, the SDK's view kept in step with the
   * event stream (after its first complete read); otherwise every page read from the server.
   */
  get(options?: PresenceGetOptions): Promise<PresenceMember[]>;
  /**
   * Listens to enter/update/leave events (all, or one action). Resolves once the SDK's view is
   * complete: from then on each change is delivered once, in the channel's presence order, and
   * `get()` plus the events never miss or repeat one.
   */
  subscribe(listener: PresenceListener): Promise<void>;
  subscribe(action: PresenceAction, listener: PresenceListener): Promise<void>;
  /** Removes a listener (all when omitted); the last one stops the events on the server. */
  unsubscribe(listener?: PresenceListener): void;
}

const PAGE = 1000;

/**
 * The presence side of one channel: membership (re-entered after reconnects) and a synced view.
 *
 * The view: events are subscribed first, then the members are read page by page; each member
 * carries the offset of its last change, so a buffered event is applied only when newer than what
 * the snapshot held, and a leave leaves a tombstone until the read is done. After that an event
 * must carry the next offset; a jump (events lost while the link was down) reads the members
 * again and reports the differences as events.
 */
export class Presence {
  readonly #host: PresenceHost;
  /** The data of a confirmed enter/update, re-entered after a reconnect. */
  #entered: { readonly data: unknown } | undefined;
  #listeners: readonly {
    readonly action: PresenceAction | undefined;
    readonly fn: PresenceListener;
  }[] = [];
  /** Whether the application listens to events (the server streams them, or is asked to). */
  #streaming = false;
  #members = new Map<string, PresenceMember>();
  /** The last offset applied to the view. */
  #offset = 0;
  #synced = false;
  /** Whether the next sync is the first since subscribe() (it delivers the changes, not a diff). */
  #initial = true;
  #buffer: Buffered[] = [];
  /**
   * The life of the view's offsets (the server names it with every read and event frame): events
   * of another epoch come from a new life of the channel's presence (e.g. Redis lost its data),
   * whose offsets say nothing about the view's, so the view is read again.
   */
  #epoch: string | undefined;
  /** Bumped when the link goes down: a read begun before is stale. */
  #generation = 0;
  #running = false;
  #again = false;
  #waiters: { resolve: () => void; reject: (err: unknown) => void }[] = [];

  constructor(host: PresenceHost) {
    this.#host = host;
  }

  /** The callable `channel.presence` object. */
  api(): ChannelPresence {
    const fn = (() => this.get()) as ChannelPresence;
    fn.enter = (data) => this.#member('enter', data);
    fn.update = (data) => this.#member('update', data);
    fn.leave = (data) => this.#member('leave', data);
    fn.get = (options) => this.get(options);
    fn.subscribe = (a: PresenceAction | PresenceListener, b?: PresenceListener) =>
      this.subscribe(a, b);
    fn.unsubscribe = (listener) => this.unsubscribe(listener);
    return fn;
  }

  async #member(action: PresenceAction, data: unknown): Promise<void> {
    const command = {
      action,
      channel: this.#host.channel,
      ...(data !== undefined && { data }),
      presenceKey: this.#host.presenceKey,
    };
    // A leave is final at once: a reconnect meanwhile must not enter again.
    if (action === 'leave') this.#entered = undefined;
    await this.#host.request(command);
    if (action !== 'leave') this.#entered = { data: data === undefined ? null : data };
  }

  async get(options: PresenceGetOptions = {}): Promise<PresenceMember[]> {
    if (this.#streaming) {
      await this.#sync();
      const all = [...this.#members.values()];
      return options.clientId === undefined
        ? all
        : all.filter((m) => m.clientId === options.clientId);
    }
    return (await this.#readAll(undefined, options.clientId)).members;
  }

  subscribe(a: PresenceAction | PresenceListener, b?: PresenceListener): Promise<void> {
    const [action, fn] = typeof a === 'function' ? [undefined, a] : [a, b];
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    this.#listeners = [...this.#listeners, { action, fn }];
    if (!this.#streaming) {
      this.#streaming = true;
      this.#synced = false;
      this.#initial = true;
      this.#members = new Map();
    }
    return this.#sync();
  }

  unsubscribe(listener?: PresenceListener): void {
    this.#listeners = listener ? this.#listeners.filter((l) => l.fn !== listener) : [];
    if (this.#listeners.length > 0 || !this.#streaming) return;
    this.#streaming = false;
    this.#synced = false;
    this.#generation++;
    this.#members = new Map();
    this.#buffer = [];
    this.#host.send({ action: 'presence-unsubscribe', channel: this.#host.channel }, () => {});
  }

  /**
   * The server ended this channel's presence on the connection (a refreshed token no longer
   * allows it): the events stop, the membership is gone (the server made it leave, so it is not
   * entered again after a reconnect), pending subscribes reject, and the channel emits `error`.
   */
  revoked(err: SwitchboardError): void {
    this.#entered = undefined;
    const streaming = this.#streaming;
    this.#streaming = false;
    this.#synced = false;
    this.#generation++;
    this.#listeners = [];
    this.#members = new Map();
    this.#buffer = [];
    const waiters = this.#waiters.splice(0);
    for (const w of waiters) w.reject(err);
    if (streaming || waiters.length > 0) this.#host.failed(err);
  }

  /** The link is up again: enter again, stream again and read the members again. */
  up(): void {
    const entered = this.#entered;
    if (entered !== undefined) {
      this.#host.send(
        {
          action: 'enter',
          channel: this.#host.channel,
          data: entered.data,
          presenceKey: this.#host.presenceKey,
        },
        () => {},
      );
    }
    if (this.#streaming) this.#kick();
  }

  down(): void {
    // Events may be lost while the link is down: the view is read again when it is back.
    this.#generation++;
    this.#synced = false;
    this.#buffer = [];
  }

  /** Events from the server, in the channel's presence order, with their frame's epoch. */
  events(raw: readonly unknown[], epoch?: string): void {
    if (!this.#streaming) return;
    for (const e of raw) {
      const event = toEvent(e);
      if (event === undefined) continue;
      if (!this.#synced) {
        this.#buffer.push({ event, epoch });
        continue;
      }
      if (epoch !== undefined && this.#epoch !== undefined && epoch !== this.#epoch) {
        // Another life of the channel's offsets: read everything again, keep only its events.
        this.#synced = false;
        this.#buffer = [{ event, epoch }];
        this.#kick();
        continue;
      }
      if (event.offset <= this.#offset) continue;
      if (event.offset > this.#offset + 1) {
        // A gap: read everything again (the differences are delivered as events).
        this.#synced = false;
        this.#buffer.push({ event, epoch });
        this.#kick();
        continue;
      }
      this.#offset = event.offset;
      this.#apply(event);
      this.#emit(event);
    }
  }

  #sync(): Promise<void> {
    if (this.#synced) return Promise.resolve();
    const done = new Promise<void>((resolve, reject) => this.#waiters.push({ resolve, reject }));
    this.#kick();
    return done;
  }

  #kick(): void {
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = true;
    void (async () => {
      do {
        this.#again = false;
        let done = false;
        try {
          done = await this.#resync(this.#generation);
        } catch (err) {
          this.#streaming = false;
          this.#listeners = [];
          const waiters = this.#waiters.splice(0);
          for (const w of waiters) w.reject(err);
          this.#host.failed(err as SwitchboardError);
          break;
        }
        if (done) {
          const waiters = this.#waiters.splice(0);
          for (const w of waiters) w.resolve();
        }
      } while (this.#again && this.#streaming && !this.#synced);
      this.#running = false;
    })();
  }

  /** One read of the members merged with the buffered events; false when the link dropped. */
  async #resync(generation: number): Promise<boolean> {
    const reply = await new Promise<Frame | undefined>((resolve) => {
      if (!this.#host.send({ action: 'presence-subscribe', channel: this.#host.channel }, resolve))
        resolve(undefined);
    });
    if (reply === undefined || generation !== this.#generation) return false;
    const err = replyError(reply);
    // Already streaming on this connection (a resync after a gap) is fine.
    if (err !== undefined && err.code !== 105) throw err;
    // Changes after this offset happened after the events were streamed to us: delivered.
    const from = typeof reply['offset'] === 'number' ? reply['offset'] : this.#offset;
    const read = await this.#readAll(generation, undefined);
    if (generation !== this.#generation) return false;
    const subscribedIn = typeof reply['epoch'] === 'string' ? reply['epoch'] : undefined;
    if (
      read.epoch === null ||
      (subscribedIn !== undefined && read.epoch !== undefined && subscribedIn !== read.epoch)
    ) {
      // The offsets' life changed during the read: its offsets cannot be merged. Again.
      this.#again = true;
      return false;
    }
    const members = new Map<string, PresenceMember>();
    for (const m of read.members) members.set(keyOf(m), m);
    // Offsets of members that left, while the buffered events are merged.
    const tombstones = new Map<string, number>();
    let offset = Math.max(read.offset, from);
    const buffered = this.#buffer
      .filter((b) => b.epoch === undefined || read.epoch === undefined || b.epoch === read.epoch)
      .map((b) => b.event)
      .sort((x, y) => x.offset - y.offset);
    this.#buffer = [];
    const fresh: PresenceEvent[] = [];
    for (const e of buffered) {
      offset = Math.max(offset, e.offset);
      if (e.offset > from) fresh.push(e);
      const key = keyOf(e);
      const known = members.get(key)?.offset ?? tombstones.get(key) ?? 0;
      if (e.offset <= known) continue;
      if (e.action === 'leave') {
        members.delete(key);
        tombstones.set(key, e.offset);
      } else members.set(key, stripAction(e));
    }
    const previous = this.#members;
    this.#members = members;
    this.#offset = offset;
    this.#epoch = read.epoch;
    this.#synced = true;
    if (this.#initial) {
      this.#initial = false;
      for (const e of fresh) this.#emit(e);
      return true;
    }
    // A resync after a reconnect or a gap: the differences with the view before become events.
    for (const [key, m] of members) {
      const before = previous.get(key);
      if (before === undefined) this.#emit({ action: 'enter', ...m });
      else if (before.offset !== m.offset) this.#emit({ action: 'update', ...m });
    }
    for (const [key, m] of previous)
      if (!members.has(key)) this.#emit({ action: 'leave', ...m, timestamp: Date.now() });
    return true;
  }

  async #readAll(
    generation: number | undefined,
    clientId: string | undefined,
  ): Promise<{ members: PresenceMember[]; offset: number; epoch: string | undefined | null }> {
    const members: PresenceMember[] = [];
    let cursor: string | undefined;
    let offset = 0;
    let first = true;
    // null: the pages came from different epochs (the read must be done again).
    let epoch: string | undefined | null;
    do {
      const reply = await this.#host.request({
        action: 'presence',
        channel: this.#host.channel,
        limit: PAGE,
        ...(cursor !== undefined && { cursor }),
        ...(clientId !== undefined && { clientId }),
      });
      if (generation !== undefined && generation !== this.#generation) break;
      const pageEpoch = typeof reply['epoch'] === 'string' ? reply['epoch'] : undefined;
      if (first) {
        offset = Number(reply['offset'] ?? 0);
        epoch = pageEpoch;
      } else if (epoch !== null && pageEpoch !== epoch) epoch = null;
      first = false;
      const raw = reply['members'];
      for (const m of Array.isArray(raw) ? (raw as unknown[]) : []) {
        const member = toMember(m);
        if (member !== undefined) members.push(member);
      }
      const next = reply['next'];
      cursor = typeof next === 'string' ? next : undefined;
    } while (cursor !== undefined);
    return { members, offset, epoch };
  }

  #apply(e: PresenceEvent): void {
    const key = keyOf(e);
    if (e.action === 'leave') this.#members.delete(key);
    else this.#members.set(key, stripAction(e));
  }

  #emit(e: PresenceEvent): void {
    for (const l of this.#listeners)
      if (l.action === undefined || l.action === e.action) invoke(l.fn, e);
  }
}

interface Buffered {
  readonly event: PresenceEvent;
  readonly epoch: string | undefined;
}

function keyOf(m: PresenceMember): string {
  return m.clientId + '\u0000' + m.connectionId;
}

function stripAction(e: PresenceEvent): PresenceMember {
  return {
    clientId: e.clientId,
    connectionId: e.connectionId,
    data: e.data,
    timestamp: e.timestamp,
    offset: e.offset,
  };
}

function toMember(value: unknown): PresenceMember | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { clientId, connectionId, data, timestamp, offset } = value as Frame;
  if (typeof clientId !== 'string' || typeof connectionId !== 'string') return undefined;
  return {
    clientId,
    connectionId,
    data: data === undefined ? null : data,
    timestamp: typeof timestamp === 'number' ? timestamp : 0,
    offset: typeof offset === 'number' ? offset : 0,
  };
}

function toEvent(value: unknown): PresenceEvent | undefined {
  const m = toMember(value);
  const action = (value as Frame | null)?.['action'];
  if (m === undefined || (action !== 'enter' && action !== 'update' && action !== 'leave'))
    return undefined;
  return { action, ...m };
}
