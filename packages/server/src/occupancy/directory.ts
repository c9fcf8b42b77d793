import { EventEmitter } from 'node:events';
import {
  channelError,
  encodeOccupancyEvent,
  encodeOccupancyFields,
  ErrorCode,
} from '@switchboard/protocol';
import type { Logger } from 'pino';
import { ReplyError } from '../errors.js';
import {
  DEFAULT_LIST_LIMIT,
  MAX_LIST_LIMIT,
  decodeListCursor,
  encodeListCursor,
  type ChannelDetails,
  type ChannelList,
  type ListQuery,
  type Occupancy,
  type OccupancyStore,
  type Share,
  type Transition,
} from './occupancy.js';

export interface DirectoryOptions {
  readonly store: OccupancyStore;
  /** This node's id in the store (unique per process). */
  readonly nodeId: string;
  readonly logger: Logger;
  /** A dead node's shares are gone within this (the presence TTL). Default 60 s. */
  readonly ttlMs?: number;
  /** How long local changes gather before one write to the store. Default 100 ms. */
  readonly flushMs?: number;
  /** Shortest interval between two occupancy events of one channel. Default 1000 ms. */
  readonly eventIntervalMs?: number;
}

/** What kind of attachment a connection has to a channel. */
export type Role = 'subscriber' | 'presence';

const SUBSCRIBER = 1;
const PRESENCE = 2;
/** A publisher already written is written again after this long (keeps the 60 s window right). */
const PUBLISHER_REFRESH_MS = 10_000;
const RETRY_MS = 1000;

export interface DirectoryEvents {
  /** The channel's first subscriber anywhere in the deployment. Emitted on exactly one node. */
  occupied: [channel: string];
  /** The channel's last subscriber anywhere is gone (or its node was reaped). Exactly one node. */
  vacated: [channel: string];
}

type OccupancyPush = (frame: Buffer) => void;

interface Watch {
  readonly push: OccupancyPush;
  last: string;
  /** When the last frame went out: a slow read followed by a fast one must not shorten the gap. */
  pushedAt: number;
}

/**
 * The deployment-wide view of channels: who is in each (occupancy), a sorted, paginated listing,
 * and the occupied/vacated hook. Local counts change synchronously with subscribes; they reach
 * the store in one debounced write per channel (never per message), so the store's numbers lag
 * by about `flushMs`.
 */
export class ChannelDirectory extends EventEmitter<DirectoryEvents> {
  readonly #store: OccupancyStore;
  readonly #nodeId: string;
  readonly #log: Logger;
  readonly #ttlMs: number;
  readonly #flushMs: number;
  readonly #eventIntervalMs: number;
  /** channel → connection → role bits. */
  readonly #local = new Map<string, Map<object, number>>();
  readonly #dirty = new Set<string>();
  readonly #pendingPublishers = new Map<string, Set<string>>();
  /** channel → publisher → when it was last written. */
  readonly #publishersSent = new Map<string, Map<string, number>>();
  readonly #watches = new Map<string, Watch>();
  #flushTimer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> | undefined;
  #heartbeatTimer: NodeJS.Timeout | undefined;
  #watchTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: DirectoryOptions) {
    super();
    this.#store = options.store;
    this.#nodeId = options.nodeId;
    this.#log = options.logger;
    this.#ttlMs = options.ttlMs ?? 60_000;
    this.#flushMs = options.flushMs ?? 100;
    this.#eventIntervalMs = options.eventIntervalMs ?? 1000;
  }

  get storeName(): string {
    return this.#store.name;
  }

  /** Starts heart-beating and reaping. The node's shares count only once it has heart-beaten. */
  async start(): Promise<void> {
    await this.#beat();
    const every = Math.max(100, Math.min(2000, Math.floor(this.#ttlMs / 8)));
    const loop = (): void => {
      this.#heartbeatTimer = setTimeout(() => {
        void this.#beat().finally(() => {
          if (!this.#closed) loop();
        });
      }, every);
      this.#heartbeatTimer.unref();
    };
    loop();
  }

  /** Writes the last local changes and stops. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#heartbeatTimer);
    clearTimeout(this.#flushTimer);
    clearInterval(this.#watchTimer);
    await this.#flushing;
    if (this.#dirty.size > 0) await this.#flush().catch(() => {});
    await this.#store.close();
  }

  /** A connection attached to a channel (subscribe, presence events). Idempotent. */
  attached(channel: string, conn: object, role: Role): void {
    let conns = this.#local.get(channel);
    if (conns === undefined) this.#local.set(channel, (conns = new Map<object, number>()));
    const bits = conns.get(conn) ?? 0;
    const bit = role === 'subscriber' ? SUBSCRIBER : PRESENCE;
    if ((bits & bit) !== 0) return;
    conns.set(conn, bits | bit);
    this.#markDirty(channel);
  }

  /** The connection's attachment ended. Idempotent. */
  detached(channel: string, conn: object, role: Role): void {
    const conns = this.#local.get(channel);
    const bits = conns?.get(conn);
    const bit = role === 'subscriber' ? SUBSCRIBER : PRESENCE;
    if (conns === undefined || bits === undefined || (bits & bit) === 0) return;
    if (bits === bit) conns.delete(conn);
    else conns.set(conn, bits & ~bit);
    if (conns.size === 0) this.#local.delete(channel);
    this.#markDirty(channel);
  }

  /** A message was published on this node (`publishersLastMinute`). Two map reads when seen recently. */
  published(channel: string, publisher: string): void {
    let sent = this.#publishersSent.get(channel);
    const now = Date.now();
    const at = sent?.get(publisher);
    if (at !== undefined && now - at < PUBLISHER_REFRESH_MS) return;
    if (sent === undefined) this.#publishersSent.set(channel, (sent = new Map<string, number>()));
    sent.set(publisher, now);
    let pending = this.#pendingPublishers.get(channel);
    if (pending === undefined) this.#pendingPublishers.set(channel, (pending = new Set()));
    pending.add(publisher);
    this.#markDirty(channel);
  }

  /** This node's own counts of a channel (tests, metrics). */
  localCounts(channel: string): { connections: number; subscribers: number } {
    const conns = this.#local.get(channel);
    let subscribers = 0;
    for (const bits of conns?.values() ?? []) if ((bits & SUBSCRIBER) !== 0) subscribers++;
    return { connections: conns?.size ?? 0, subscribers };
  }

  /**
   * One page of the deployment's channels, sorted by name. The cursor is the last name listed,
   * so paging is stable under churn: a channel that exists throughout is listed exactly once.
   */
  async list(
    query: ListQuery = {},
    visible: (channel: string) => boolean = () => true,
  ): Promise<ChannelList> {
    const limit = query.limit ?? DEFAULT_LIST_LIMIT;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIST_LIMIT)
      throw new ReplyError(
        ErrorCode.BAD_REQUEST,
        `limit must be an integer from 1 to ${MAX_LIST_LIMIT}`,
      );
    const prefix = query.prefix ?? '';
    if (prefix !== '' && channelError(prefix) !== undefined)
      throw new ReplyError(
        ErrorCode.INVALID_CHANNEL_PREFIX,
        `prefix: ${channelError(prefix) ?? ''}`,
      );
    let after: string | undefined;
    if (query.cursor !== undefined && query.cursor !== '') {
      after = decodeListCursor(query.cursor);
      if (after === undefined)
        throw new ReplyError(ErrorCode.INVALID_LIST_CURSOR, 'cursor is not one this server issued');
    }
    const names = await this.#call(() => this.#store.names(prefix));
    const sorted = (after === undefined ? names : names.filter((n) => n > after))
      .filter((n) => channelError(n) === undefined && visible(n))
      .sort(compareNames);
    const page = sorted.slice(0, limit);
    const details = await this.#call(() => this.#store.read(page));
    return {
      channels: details.map((d) => ({ channel: d.channel, occupancy: d.occupancy })),
      next: sorted.length > limit ? encodeListCursor(page[page.length - 1] as string) : null,
    };
  }

  /** A channel's deployment-wide occupancy and top stream position. */
  async get(channel: string): Promise<ChannelDetails> {
    const [d] = await this.#call(() => this.#store.read([channel]));
    return d as ChannelDetails;
  }

  /**
   * Starts occupancy events of `channel` on this node: `push` gets an occupancy frame at most
   * once per `eventIntervalMs`, when the counts changed since the last frame (or `seen`).
   */
  watch(channel: string, push: OccupancyPush): void {
    if (this.#watches.has(channel)) return;
    this.#watches.set(channel, { push, last: '', pushedAt: 0 });
    if (this.#watchTimer === undefined) {
      this.#watchTimer = setInterval(() => this.#pollWatches(), this.#eventIntervalMs);
      this.#watchTimer.unref();
    }
  }

  /** The watchers of `channel` were told these counts (in a reply): no event repeats them. */
  seen(channel: string, occupancy: Occupancy): void {
    const w = this.#watches.get(channel);
    if (w !== undefined && w.last === '') w.last = encodeOccupancyFields(occupancy);
  }

  unwatch(channel: string): void {
    this.#watches.delete(channel);
    if (this.#watches.size === 0 && this.#watchTimer !== undefined) {
      clearInterval(this.#watchTimer);
      this.#watchTimer = undefined;
    }
  }

  /** Waits until every local change so far is in the store (tests). */
  async settled(): Promise<void> {
    while (this.#dirty.size > 0 || this.#flushing !== undefined) {
      if (this.#flushing === undefined) this.#startFlush();
      await this.#flushing;
    }
  }

  #markDirty(channel: string): void {
    this.#dirty.add(channel);
    if (this.#flushTimer === undefined && this.#flushing === undefined && !this.#closed)
      this.#schedule(this.#flushMs);
  }

  #schedule(ms: number): void {
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      this.#startFlush();
    }, ms);
  }

  #startFlush(): void {
    if (this.#flushing !== undefined) return;
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    this.#flushing = this.#flush()
      .then(
        () => {
          if (this.#dirty.size > 0 && !this.#closed) this.#schedule(this.#flushMs);
        },
        (err: unknown) => {
          this.#log.warn({ err: errorText(err) }, 'occupancy write failed, retrying');
          if (!this.#closed) this.#schedule(RETRY_MS);
        },
      )
      .finally(() => {
        this.#flushing = undefined;
      });
  }

  async #flush(): Promise<void> {
    const channels = [...this.#dirty];
    this.#dirty.clear();
    const shares: Share[] = channels.map((channel) => {
      const c = this.localCounts(channel);
      const pending = this.#pendingPublishers.get(channel);
      this.#pendingPublishers.delete(channel);
      return { channel, ...c, publishers: pending === undefined ? [] : [...pending] };
    });
    let transitions: Transition[];
    try {
      transitions = await this.#store.write(this.#nodeId, shares);
    } catch (err) {
      // Written again whole at the next attempt (a share is a value, not a delta).
      for (const s of shares) {
        this.#dirty.add(s.channel);
        if (s.publishers.length > 0) {
          let pending = this.#pendingPublishers.get(s.channel);
          if (pending === undefined) this.#pendingPublishers.set(s.channel, (pending = new Set()));
          for (const p of s.publishers) pending.add(p);
        }
      }
      throw err;
    }
    this.#emitAll(transitions);
  }

  async #beat(): Promise<void> {
    try {
      const known = await this.#store.heartbeat(this.#nodeId, Math.floor((this.#ttlMs * 2) / 3));
      if (!known)
        // Reaped while unreachable (or first start): every share is written again.
        for (const channel of this.#local.keys()) this.#markDirty(channel);
      this.#emitAll(await this.#store.reap());
    } catch (err) {
      this.#log.warn({ err: errorText(err) }, 'occupancy heartbeat failed');
    }
    const old = Date.now() - 60_000;
    for (const [channel, sent] of this.#publishersSent) {
      for (const [p, at] of sent) if (at < old) sent.delete(p);
      if (sent.size === 0) this.#publishersSent.delete(channel);
    }
  }

  #pollWatches(): void {
    const channels = [...this.#watches.keys()];
    if (channels.length === 0) return;
    this.#store.read(channels).then(
      (details) => {
        const now = Date.now();
        for (const d of details) {
          const w = this.#watches.get(d.channel);
          if (w === undefined || now - w.pushedAt < this.#eventIntervalMs) continue;
          const json = encodeOccupancyFields(d.occupancy);
          if (json === w.last) continue;
          w.last = json;
          w.pushedAt = now;
          w.push(Buffer.from(encodeOccupancyEvent(d.channel, d.occupancy)));
        }
      },
      (err: unknown) => this.#log.warn({ err: errorText(err) }, 'occupancy read failed'),
    );
  }

  #emitAll(transitions: readonly Transition[]): void {
    for (const t of transitions) {
      try {
        this.emit(t.occupied ? 'occupied' : 'vacated', t.channel);
      } catch (err) {
        this.#log.error({ err, channel: t.channel }, 'occupancy listener failed');
      }
    }
  }

  async #call<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      if (err instanceof ReplyError) throw err;
      this.#log.warn({ err: errorText(err) }, 'occupancy store call failed');
      throw new ReplyError(ErrorCode.NOT_AVAILABLE, 'channel directory unavailable, retry later', {
        cause: err,
      });
    }
  }
}

/** The counts as JSON members (no braces), in a fixed order so equal counts give equal text. */
function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
