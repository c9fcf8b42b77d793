import {
  DisconnectCode,
  ErrorCode,
  OCCUPANCY_STREAM_PREFIX,
  PRESENCE_STREAM_PREFIX,
  encodeDiscontinuityEvent,
  encodeMessageHead,
  presenceStream,
  type Position,
} from '@switchboard/protocol';
import type { Logger } from 'pino';
import type {
  BridgeGap,
  Broker,
  BrokerHandler,
  HistoryOptions,
  HistoryQuery,
  HistoryResult,
  PublishResult,
  StreamPosition,
} from './broker/broker.js';
import { uniqueIds } from './broker/epoch.js';
import { PublishError } from './broker/publish-error.js';
import { ReplyError } from './errors.js';
import type { Hub, Sink } from './hub.js';
import { seconds, type Metrics } from './metrics.js';
import type { MembersPage, OpResult, PageQuery, PresenceStore } from './presence/presence.js';
import { PresenceTracker, type LocalMember } from './presence/tracker.js';
import type { ChannelDirectory } from './occupancy/directory.js';
import type { Occupancy } from './occupancy/occupancy.js';
import { BufferingSink, mergeAfter, type FrameItem, type Positioned } from './recovery.js';

export interface NodeOptions {
  readonly broker: Broker;
  readonly hub: Hub;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** History retention of a channel (by its namespace). */
  readonly historyFor: (channel: string) => HistoryOptions;
  readonly dedupeMs: number;
  /** Most messages a resume may replay; a larger gap answers recovered: false. */
  readonly recoveryMaxMessages: number;
  /** How long a subscribe waits for the broker before failing with NOT_AVAILABLE. */
  readonly subscribeTimeoutMs?: number;
  /**
   * Most bytes of messages in one history page (at least one message always): a page is one
   * frame, and one larger than a connection's outbound limit closed a client that had only asked
   * for history with "too slow". Default: unbounded.
   */
  readonly historyPageBytes?: number;
  /** Where presence is kept; with `presenceFor`. Without it no channel has presence. */
  readonly presence?: PresenceStore;
  /** Whether a channel (by its namespace) keeps presence. */
  readonly presenceFor?: (channel: string) => boolean;
  /** Whether subscribing a channel (by its namespace) enters its presence too (pre-#12 behaviour). */
  readonly autoEnterFor?: (channel: string) => boolean;
  /** How long a member outlives its node's last refresh. Default 60 s. */
  readonly presenceTtlMs?: number;
  /** Most members of one channel. Default 20,000. */
  readonly presenceMaxMembers?: number;
  /** The deployment-wide channel directory (occupancy, listing, occupied/vacated). */
  readonly directory?: ChannelDirectory;
  /**
   * Told the outcome of every publish the broker took or failed (readiness: a node whose broker
   * cannot take writes should stop receiving clients). `startedAt` is when it was sent.
   */
  readonly onWrite?: (ok: boolean, startedAt: number, error?: string) => void;
  /**
   * Told of every message this node stored (duplicates of an idempotent retry excluded): the one
   * report of it deployment-wide (webhooks).
   */
  readonly onPublished?: (input: PublishInput, published: Published, timestamp: number) => void;
}

export interface PublishInput {
  readonly channel: string;
  /** The data as JSON text (encoded once by the edge that received it). */
  readonly dataJson: string;
  readonly name?: string | undefined;
  /** Publisher-supplied id: makes the publish idempotent within the dedupe window. */
  readonly id?: string | undefined;
  /** Ably-dialect fields stored with the message (JSON object text; see encodeMessageHead). */
  readonly ably?: string | undefined;
  /** Who publishes (clientId, API key id or connection), for `publishersLastMinute`. */
  readonly publisher?: string | undefined;
}

export interface Published extends PublishResult {
  readonly id: string;
}

export interface SubscribeOptions {
  readonly since?: Position | undefined;
  readonly rewind?: number | undefined;
}

export interface Subscribed {
  /** The frames that follow on this channel are exactly those after this position. */
  readonly position: StreamPosition;
  /** Set when `since` was given: whether everything after it is replayed. */
  readonly recovered?: boolean;
  /**
   * Frames to write, in order, before any live frame (the caller does so synchronously), each with
   * its message's position for the sink (see Sink.send).
   */
  readonly replay: readonly FrameItem[];
}

export interface HistoryPageQuery {
  readonly limit: number;
  readonly direction: 'forward' | 'backward';
  readonly since?: Position | undefined;
  readonly before?: number | undefined;
  readonly cursor?: string | undefined;
}

export interface HistoryPage {
  readonly frames: readonly Buffer[];
  /** The offset of each frame's message (its epoch is `position.epoch`), as data. */
  readonly offsets: readonly number[];
  readonly position: StreamPosition;
  /** Cursor of the next page, or null when this is the last. */
  readonly next: string | null;
}

/** What the node knows of a channel it delivers: the last position handed to the Hub. */
interface ChannelState {
  epoch: string | undefined;
  offset: number;
  /** A range is being fetched from history; live frames wait in `backlog`. */
  repairing: boolean;
  backlog: { frame: Buffer; offset: number; epoch: string; assignedAt: number }[];
  /** Resolved when the state reaches an offset (or the epoch changes). */
  waiters: { epoch: string; offset: number; resolve: () => void }[];
}

/** Frames a channel may hold back while a gap is repaired; more and its subscribers must resume. */
const MAX_BACKLOG = 10_000;
const REPAIR_RETRY_MS = 250;
/** How long a resume waits for live delivery to reach the history it read. */
const CATCH_UP_TIMEOUT_MS = 10_000;

/**
 * The rules between the edge and the broker: subscribe (with resume), unsubscribe, publish,
 * history; and keeping each channel's delivery gap-free. Knows interfaces only; the composition
 * root picks the implementations.
 */
export class Node implements BrokerHandler {
  readonly #broker: Broker;
  readonly #hub: Hub;
  readonly #log: Logger;
  readonly #metrics: Metrics;
  readonly #historyFor: (channel: string) => HistoryOptions;
  readonly #dedupeMs: number;
  readonly #recoveryMax: number;
  readonly #subscribeTimeoutMs: number;
  readonly #historyPageBytes: number;
  /** Broker subscriptions in flight, so later local subscribers wait for the same confirmation. */
  readonly #subscribing = new Map<string, Promise<void>>();
  readonly #states = new Map<string, ChannelState>();
  /** History reads shared by the resumes of one turn (see #sharedHistory). */
  readonly #historyReads = new Map<string, Promise<HistoryResult>>();
  readonly #controlHandlers = new Map<string, (payload: Buffer) => void>();
  readonly #presence: PresenceTracker | undefined;
  readonly #presenceFor: (channel: string) => boolean;
  readonly #autoEnterFor: (channel: string) => boolean;
  readonly #onWrite: (ok: boolean, startedAt: number, error?: string) => void;
  readonly #onPublished: NodeOptions['onPublished'];
  readonly #directory: ChannelDirectory | undefined;
  /** Server-assigned message ids (a UUID per publish was ~3 % of the publish path). */
  readonly #newId = uniqueIds();
  #closed = false;

  constructor(options: NodeOptions) {
    this.#broker = options.broker;
    this.#hub = options.hub;
    this.#log = options.logger;
    this.#metrics = options.metrics;
    this.#historyFor = options.historyFor;
    this.#dedupeMs = options.dedupeMs;
    this.#recoveryMax = options.recoveryMaxMessages;
    this.#subscribeTimeoutMs = options.subscribeTimeoutMs ?? 5000;
    this.#historyPageBytes = options.historyPageBytes ?? Infinity;
    this.#presence =
      options.presence === undefined
        ? undefined
        : new PresenceTracker(options.presence, {
            ttlMs: options.presenceTtlMs ?? 60_000,
            maxMembers: options.presenceMaxMembers ?? 20_000,
            log: options.logger,
            registry: options.metrics.registry,
          });
    // The in-process store hands its events over directly; a Redis store publishes them and the
    // broker delivers them like publications.
    options.presence?.listen?.((channel, frame) =>
      this.onPublication(presenceStream(channel), frame, undefined, undefined),
    );
    this.#presenceFor =
      this.#presence === undefined ? () => false : (options.presenceFor ?? (() => false));
    this.#onWrite = options.onWrite ?? (() => {});
    this.#onPublished = options.onPublished;
    this.#directory = options.directory;
    const autoEnter = options.autoEnterFor ?? (() => false);
    this.#autoEnterFor = (channel) => this.#presenceFor(channel) && autoEnter(channel);
  }

  get broker(): Broker {
    return this.#broker;
  }

  /** The channel directory, when the composition root gave one. */
  get directory(): ChannelDirectory | undefined {
    return this.#directory;
  }

  /** Stops background repairs and presence refreshes (shutdown). */
  close(): void {
    this.#closed = true;
    this.#presence?.close();
  }

  /** Whether `channel`'s namespace keeps presence. */
  presenceEnabled(channel: string): boolean {
    return this.#presenceFor(channel);
  }

  /** Whether a subscriber of `channel` enters its presence (the namespace's `autoEnter`). */
  autoEnter(channel: string): boolean {
    return this.#autoEnterFor(channel);
  }

  #tracker(channel: string): PresenceTracker {
    const tracker = this.#presence;
    if (tracker === undefined || !this.#presenceFor(channel))
      throw new ReplyError(
        ErrorCode.PRESENCE_DISABLED,
        `presence is not enabled for the namespace of ${channel}`,
      );
    return tracker;
  }

  /**
   * Enters (or updates) a member of a presence-enabled channel. Rejects with PRESENCE_DISABLED,
   * PRESENCE_CHANNEL_FULL, or NOT_AVAILABLE when the store cannot be reached. The caller checks
   * capabilities and limits. Resolves with the channel's presence offset after the change.
   */
  async enter(channel: string, member: LocalMember, kind: 'enter' | 'update'): Promise<number> {
    const tracker = this.#tracker(channel);
    const r = await this.#brokerCall(
      'presence',
      () => tracker.enter(channel, member, kind),
      'presence',
    );
    if (r.result === 'full')
      throw new ReplyError(ErrorCode.PRESENCE_CHANNEL_FULL, `${channel} has too many members`);
    return r.offset;
  }

  /** Ends a membership now; resolves with the store's result (`none`: it was not a member). */
  async leave(
    channel: string,
    key: string,
    owner: string,
    dataJson = '',
  ): Promise<{ result: OpResult; offset: number }> {
    const tracker = this.#tracker(channel);
    return this.#brokerCall(
      'presence',
      () => tracker.leave(channel, key, owner, dataJson),
      'presence',
    );
  }

  /** The member's connection ended: it leaves after `graceMs` unless resumed (tracker.detach). */
  detach(channel: string, key: string, owner: string, graceMs: number): void {
    this.#presence?.detach(channel, key, owner, graceMs);
  }

  /**
   * One page of the channel's members. Rejects with PRESENCE_DISABLED when its namespace keeps no
   * presence, NOT_AVAILABLE when the store cannot be read. The caller checks capabilities.
   */
  async presence(channel: string, query: PageQuery): Promise<MembersPage> {
    const tracker = this.#tracker(channel);
    return this.#brokerCall('presence', () => tracker.page(channel, query), 'presence');
  }

  /**
   * Streams the channel's presence events to `sink` (the caller checks capabilities). Resolves
   * with the presence offset (and its epoch) read once the stream was confirmed: every change
   * after it reaches the sink (a reader delivers those and merges the rest from a members read).
   */
  async subscribePresence(sink: Sink, channel: string): Promise<{ offset: number; epoch: string }> {
    const tracker = this.#tracker(channel);
    tracker.watch(channel);
    this.#directory?.attached(channel, sink, 'presence');
    try {
      await this.#attach(sink, presenceStream(channel));
      const page = await this.#brokerCall(
        'presence',
        () => tracker.page(channel, { limit: 1 }),
        'presence',
      );
      return { offset: page.offset, epoch: page.epoch };
    } catch (err) {
      this.#release(sink, presenceStream(channel));
      this.#directory?.detached(channel, sink, 'presence');
      tracker.unwatch(channel);
      throw err;
    }
  }

  unsubscribePresence(sink: Sink, channel: string): void {
    this.#directory?.detached(channel, sink, 'presence');
    this.#release(sink, presenceStream(channel));
    this.#presence?.unwatch(channel);
  }

  /**
   * Streams the channel's occupancy events to `sink` (the caller checks capabilities): local to
   * this node, which polls the directory once per second while any of its connections listens.
   * Resolves with the current counts.
   */
  async subscribeOccupancy(sink: Sink, channel: string): Promise<Occupancy> {
    const directory = this.#directory;
    if (directory === undefined)
      throw new ReplyError(ErrorCode.NOT_AVAILABLE, 'no channel directory on this node');
    const stream = OCCUPANCY_STREAM_PREFIX + channel;
    if (this.#hub.add(stream, sink))
      directory.watch(channel, (frame) => this.#hub.publish(stream, frame));
    try {
      const d = await directory.get(channel);
      directory.seen(channel, d.occupancy);
      return d.occupancy;
    } catch (err) {
      this.unsubscribeOccupancy(sink, channel);
      throw err;
    }
  }

  unsubscribeOccupancy(sink: Sink, channel: string): void {
    if (this.#hub.remove(OCCUPANCY_STREAM_PREFIX + channel, sink))
      this.#directory?.unwatch(channel);
  }

  /**
   * Subscribes `sink` to `channel`, resuming after `since` or rewinding when asked. On failure the
   * sink is not subscribed and a ReplyError says why. The caller writes `replay` before anything
   * else, synchronously on resolution.
   */
  async subscribe(
    sink: Sink,
    channel: string,
    options: SubscribeOptions = {},
  ): Promise<Subscribed> {
    // Counted from the request on, so an unsubscribe that overtakes the confirmation uncounts it.
    this.#directory?.attached(channel, sink, 'subscriber');
    try {
      return await this.#subscribe(sink, channel, options);
    } catch (err) {
      this.#directory?.detached(channel, sink, 'subscriber');
      throw err;
    }
  }

  async #subscribe(sink: Sink, channel: string, options: SubscribeOptions): Promise<Subscribed> {
    if (options.since === undefined && options.rewind === undefined) {
      await this.#attach(sink, channel);
      return { position: this.#positionOf(channel), replay: [] };
    }
    const proxy = new BufferingSink(sink, this.#recoveryMax + MAX_BACKLOG);
    await this.#attach(proxy, channel);
    try {
      return await this.#resume(proxy, channel, options);
    } catch (err) {
      this.#release(proxy, channel);
      throw err;
    }
  }

  /** Removes `sink` from the channel; the broker subscription goes with the last local subscriber. */
  unsubscribe(sink: Sink, channel: string): void {
    this.#directory?.detached(channel, sink, 'subscriber');
    this.#release(sink, channel);
  }

  /**
   * Publishes one message. Resolves after the broker stored it; rejects with NOT_AVAILABLE when it
   * could not, and then the message was not acknowledged.
   */
  publish(input: PublishInput, source: string): Promise<Published> {
    const id = input.id ?? this.#newId();
    const timestamp = Date.now();
    const started = seconds();
    const head = encodeMessageHead({
      channel: input.channel,
      dataJson: input.dataJson,
      id,
      timestamp,
      name: input.name,
      ably: input.ably,
    });
    // No await before broker.publish: sequential publishes from one client must reach the broker in order.
    return this.#broker
      .publish({
        channel: input.channel,
        id,
        head,
        history: this.#historyFor(input.channel),
        dedupeMs: input.id === undefined ? 0 : this.#dedupeMs,
      })
      .then(
        (result) => {
          this.#metrics.publishAcked(seconds() - started);
          this.#onWrite(true, timestamp);
          const published = {
            offset: result.offset,
            epoch: result.epoch,
            duplicate: result.duplicate,
            id,
          };
          if (!result.duplicate) {
            this.#metrics.published(source);
            this.#directory?.published(input.channel, input.publisher ?? source);
            this.#onPublished?.(input, published, timestamp);
          }
          return published;
        },
        (err: unknown) => {
          this.#metrics.brokerErrors.inc({ op: 'publish' });
          const unknown = err instanceof PublishError && err.outcome === 'unknown';
          this.#onWrite(false, timestamp, errorText(err));
          this.#log.warn(
            {
              err: errorText(err),
              channel: input.channel,
              outcome: unknown ? 'unknown' : 'not-stored',
            },
            'broker publish failed',
          );
          // A timeout is not a refusal: the message may be stored and delivered once the broker
          // answers again, so the publisher must retry with the same id rather than a new one.
          throw unknown
            ? new ReplyError(
                ErrorCode.OUTCOME_UNKNOWN,
                'the broker did not answer in time: the message may or may not be stored; retry with the same messageId',
                { cause: err },
              )
            : new ReplyError(ErrorCode.NOT_AVAILABLE, 'message could not be stored, retry later', {
                cause: err,
              });
        },
      );
  }

  /** One page of a channel's history, forwards or backwards, with a cursor for the next. */
  async history(channel: string, q: HistoryPageQuery): Promise<HistoryPage> {
    let direction = q.direction;
    let from: number | undefined = direction === 'forward' ? q.since?.offset : q.before;
    // An empty epoch means the caller did not say which stream its offset belongs to.
    let epoch = q.since?.epoch === '' ? undefined : q.since?.epoch;
    if (q.cursor !== undefined) {
      const c = decodeCursor(q.cursor);
      if (c === undefined)
        throw new ReplyError(ErrorCode.BAD_REQUEST, 'cursor is not one this server issued');
      ({ direction, offset: from, epoch } = c);
    }
    const forward = direction === 'forward';
    this.#metrics.historyReads.inc({ purpose: 'page' });
    const h = await this.#brokerCall('history', () =>
      this.#broker.history(
        channel,
        forward
          ? { sinceOffset: from ?? 0, limit: q.limit + 1 }
          : { untilOffset: from, limit: q.limit + 1, reverse: true },
      ),
    );
    if (epoch !== undefined && epoch !== h.position.epoch) {
      throw new ReplyError(
        ErrorCode.UNRECOVERABLE_POSITION,
        "the channel's stream was reset since that position (epoch changed)",
      );
    }
    let count = Math.min(q.limit, h.entries.length);
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      bytes += (h.entries[i]?.frame.length ?? 0) + 1;
      if (bytes > this.#historyPageBytes && i > 0) {
        count = i;
        break;
      }
    }
    const entries = h.entries.slice(0, count);
    const last = entries[entries.length - 1];
    const next =
      h.entries.length > count && last !== undefined
        ? encodeCursor(direction, last.offset, h.position.epoch)
        : null;
    return {
      frames: entries.map((e) => e.frame),
      offsets: entries.map((e) => e.offset),
      position: h.position,
      next,
    };
  }

  onPublication(
    channel: string,
    frame: Buffer,
    offset: number | undefined,
    epoch: string | undefined,
    assignedAt = NaN,
  ): void {
    const st = this.#states.get(channel);
    if (st === undefined || offset === undefined || epoch === undefined) {
      this.#hub.publish(
        channel,
        frame,
        assignedAt,
        offset === undefined || epoch === undefined ? undefined : { offset, epoch },
      );
      return;
    }
    if (st.repairing) {
      this.#holdBack(channel, st, frame, offset, epoch, assignedAt);
      return;
    }
    this.#accept(channel, st, frame, offset, epoch, assignedAt);
  }

  /** Registers what handles control messages of a topic (one handler per topic). */
  onControlTopic(topic: string, handler: (payload: Buffer) => void): Promise<void> {
    this.#controlHandlers.set(topic, handler);
    return this.#broker.subscribeControl(topic);
  }

  offControlTopic(topic: string): void {
    if (!this.#controlHandlers.delete(topic)) return;
    this.#broker
      .unsubscribeControl(topic)
      .catch((err: unknown) =>
        this.#log.warn({ err: errorText(err), topic }, 'control unsubscribe failed'),
      );
  }

  onControl(topic: string, payload: Buffer): void {
    const handler = this.#controlHandlers.get(topic);
    if (handler === undefined) return;
    try {
      handler(payload);
    } catch (err) {
      this.#log.error({ err, topic }, 'control handler failed');
    }
  }

  onResubscribed(channels: readonly string[]): void {
    this.#metrics.resubscribes.inc();
    this.#log.info(
      { channels: channels.length },
      'broker resubscribed: checking channels for missed messages',
    );
    for (const channel of channels) {
      const st = this.#states.get(channel);
      if (st !== undefined && st.epoch !== undefined && !st.repairing)
        this.#startRepair(channel, st);
    }
  }

  onBridgeGap(covers: (channel: string) => boolean, gap: BridgeGap): void {
    // In the live stream, at the place of the loss: the subscribers' only way to learn of it,
    // since raw messages have no offsets that a resume could compare.
    for (const channel of this.#states.keys()) {
      if (covers(channel))
        this.#hub.publish(
          channel,
          Buffer.from(encodeDiscontinuityEvent(channel, gap.from, gap.until)),
        );
    }
  }

  async #attach(sink: Sink, channel: string): Promise<void> {
    let confirmed: Promise<void> | undefined;
    if (this.#hub.add(channel, sink)) {
      const st: ChannelState = {
        epoch: undefined,
        offset: 0,
        repairing: false,
        backlog: [],
        waiters: [],
      };
      this.#states.set(channel, st);
      // A presence stream has no history: its order is the presence offset, checked by readers.
      const seeded = channel.startsWith(PRESENCE_STREAM_PREFIX)
        ? () => undefined
        : () => this.#seed(channel, st);
      confirmed = withTimeout(
        this.#broker.subscribe(channel).then(seeded),
        this.#subscribeTimeoutMs,
      );
      this.#subscribing.set(channel, confirmed);
      const clear = (): void => {
        if (this.#subscribing.get(channel) === confirmed) this.#subscribing.delete(channel);
      };
      confirmed.then(clear, clear);
    } else {
      confirmed = this.#subscribing.get(channel);
    }
    if (confirmed === undefined) return;
    try {
      await confirmed;
    } catch (err) {
      this.#metrics.brokerErrors.inc({ op: 'subscribe' });
      this.#log.warn({ err: errorText(err), channel }, 'broker subscribe failed');
      this.#release(sink, channel);
      throw new ReplyError(
        ErrorCode.NOT_AVAILABLE,
        'subscription backend unavailable, retry later',
        { cause: err },
      );
    }
  }

  /** Learns the channel's top position, unless live frames taught it first. */
  async #seed(channel: string, st: ChannelState): Promise<void> {
    this.#metrics.historyReads.inc({ purpose: 'seed' });
    const h = await this.#broker.history(channel, { limit: 0 });
    if (st.epoch === undefined) {
      st.epoch = h.position.epoch;
      st.offset = h.position.offset;
    }
  }

  #release(sink: Sink, channel: string): void {
    if (!this.#hub.remove(channel, sink)) return;
    this.#states.delete(channel);
    this.#broker.unsubscribe(channel).catch((err: unknown) => {
      this.#metrics.brokerErrors.inc({ op: 'unsubscribe' });
      this.#log.warn({ err: errorText(err), channel }, 'broker unsubscribe failed');
    });
  }

  #positionOf(channel: string): StreamPosition {
    const st = this.#states.get(channel);
    return { offset: st?.offset ?? 0, epoch: st?.epoch ?? '' };
  }

  async #resume(
    proxy: BufferingSink,
    channel: string,
    options: SubscribeOptions,
  ): Promise<Subscribed> {
    const since = options.since;
    this.#metrics.historyReads.inc({ purpose: since !== undefined ? 'resume' : 'rewind' });
    const h =
      since !== undefined
        ? await this.#brokerCall('history', () =>
            this.#sharedHistory(channel, {
              sinceOffset: since.offset,
              limit: this.#recoveryMax + 1,
            }),
          )
        : await this.#brokerCall('history', () =>
            this.#sharedHistory(channel, { limit: options.rewind ?? 0, reverse: true }),
          );
    const top = h.position;
    await this.#caughtUp(channel, top);
    await this.#hub.settled(channel);
    // From here on synchronous: no frame can reach the Hub until the caller has written the replay.
    if (proxy.closed || !this.#hub.replace(channel, proxy, proxy.target)) {
      throw new ReplyError(ErrorCode.INTERNAL, 'subscription ended while resuming');
    }
    if (proxy.overflowed) {
      proxy.target.close(DisconnectCode.INSUFFICIENT_STATE, 'too many messages while resuming');
      throw new ReplyError(ErrorCode.LIMIT_EXCEEDED, 'too many messages arrived while resuming');
    }
    const live = positioned(proxy.frames, top.epoch);
    if (since === undefined) {
      const entries = [...h.entries].reverse();
      const start = entries[0]?.offset ?? top.offset + 1;
      const merged =
        mergeAfter(start - 1, entries, live.frames) ??
        mergeAfter(top.offset, [], live.frames) ??
        [];
      return {
        position: { offset: start - 1, epoch: top.epoch },
        replay: [...items(merged, top.epoch), ...live.unpositioned],
      };
    }
    const inEpoch = since.epoch === top.epoch && since.offset <= top.offset;
    const merged =
      inEpoch && top.offset - since.offset <= this.#recoveryMax
        ? mergeAfter(since.offset, h.entries, live.frames)
        : undefined;
    if (merged !== undefined) {
      return {
        position: since,
        recovered: true,
        replay: [...items(merged, top.epoch), ...live.unpositioned],
      };
    }
    const after = mergeAfter(top.offset, [], live.frames) ?? [];
    return {
      position: top,
      recovered: false,
      replay: [...items(after, top.epoch), ...live.unpositioned],
    };
  }

  /**
   * One history read for every resume of the same channel from the same position that arrives in
   * this turn of the event loop: in a resume storm, the subscribers of a channel mostly missed
   * the same messages (10,000 reads became ~100 in bench (d)). The read is issued in the next
   * check phase, so it starts after every joiner's buffering sink was already in the Hub: the
   * result is as fresh as a read of each joiner's own would have been. Results are shared
   * read-only.
   */
  #sharedHistory(channel: string, query: HistoryQuery): Promise<HistoryResult> {
    const key = `${channel}\n${query.sinceOffset ?? ''}\n${query.limit}\n${query.reverse === true ? 1 : 0}`;
    let read = this.#historyReads.get(key);
    if (read === undefined) {
      read = new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
        this.#historyReads.delete(key);
        return this.#broker.history(channel, query);
      });
      this.#historyReads.set(key, read);
    }
    return read;
  }

  /** Resolves once the frames up to `target` were handed to the Hub (repairing if they lag). */
  #caughtUp(channel: string, target: StreamPosition): Promise<void> {
    const st = this.#states.get(channel);
    if (st === undefined)
      return Promise.reject(
        new ReplyError(ErrorCode.INTERNAL, 'subscription ended while resuming'),
      );
    if (st.epoch !== target.epoch || st.offset >= target.offset) return Promise.resolve();
    if (!st.repairing) this.#startRepair(channel, st);
    return withTimeout(
      new Promise<void>((resolve) => st.waiters.push({ ...target, resolve })),
      CATCH_UP_TIMEOUT_MS,
    ).catch((err: unknown) => {
      throw new ReplyError(
        ErrorCode.NOT_AVAILABLE,
        'could not catch up with the channel, retry later',
        { cause: err },
      );
    });
  }

  #accept(
    channel: string,
    st: ChannelState,
    frame: Buffer,
    offset: number,
    epoch: string,
    assignedAt: number,
  ): void {
    if (st.epoch !== epoch) {
      if (st.epoch !== undefined)
        this.#log.warn(
          { channel, from: st.epoch, to: epoch },
          'channel stream restarted with a new epoch',
        );
      st.epoch = epoch;
      st.offset = offset;
      this.#hub.publish(channel, frame, assignedAt, { offset, epoch });
      this.#wake(st);
      return;
    }
    if (offset <= st.offset) return;
    if (offset === st.offset + 1) {
      st.offset = offset;
      this.#hub.publish(channel, frame, assignedAt, { offset, epoch });
      if (st.waiters.length > 0) this.#wake(st);
      return;
    }
    this.#holdBack(channel, st, frame, offset, epoch, assignedAt);
    this.#startRepair(channel, st);
  }

  #holdBack(
    channel: string,
    st: ChannelState,
    frame: Buffer,
    offset: number,
    epoch: string,
    assignedAt: number,
  ): void {
    if (st.backlog.length < MAX_BACKLOG) {
      st.backlog.push({ frame, offset, epoch, assignedAt });
      return;
    }
    this.#log.error({ channel }, 'gap repair backlog overflowed: subscribers must resume');
    this.#dropSubscribers(channel, 'too far behind while repairing a gap');
  }

  #startRepair(channel: string, st: ChannelState): void {
    st.repairing = true;
    this.#repair(channel, st).catch((err: unknown) =>
      this.#log.error({ err, channel }, 'gap repair failed'),
    );
  }

  /**
   * Fills the channel's gap from history, then lets the frames held back through. Retries while the
   * broker is unreachable; when history no longer holds the gap, the channel's local subscribers are
   * closed with INSUFFICIENT_STATE so they resume (and learn recovered: false).
   */
  async #repair(channel: string, st: ChannelState): Promise<void> {
    while (!this.#closed && this.#states.get(channel) === st) {
      let h;
      try {
        this.#metrics.historyReads.inc({ purpose: 'repair' });
        h = await this.#broker.history(channel, { sinceOffset: st.offset, limit: MAX_BACKLOG });
      } catch (err) {
        this.#metrics.brokerErrors.inc({ op: 'repair' });
        this.#log.warn(
          { err: errorText(err), channel },
          'gap repair: history unavailable, retrying',
        );
        await new Promise((r) => setTimeout(r, REPAIR_RETRY_MS));
        continue;
      }
      if (this.#states.get(channel) !== st) return;
      if (h.position.epoch !== st.epoch) {
        st.epoch = undefined;
      } else {
        const merged = mergeAfter(st.offset, h.entries, []);
        if (merged === undefined || (merged.length === 0 && h.position.offset > st.offset)) {
          this.#log.warn(
            { channel, from: st.offset, top: h.position.offset },
            'gap no longer in history: subscribers must resume',
          );
          this.#metrics.gapRepairs.inc({ outcome: 'lost' });
          this.#dropSubscribers(channel, 'missed messages are no longer in history');
          st.offset = h.position.offset;
        } else {
          // No assignment time travels with history: the publishing node's timestamp stands in.
          const epoch = h.position.epoch;
          for (const e of merged)
            this.#hub.publish(channel, e.frame, frameTimestamp(e.frame), {
              offset: e.offset,
              epoch,
            });
          if (merged.length > 0) {
            this.#metrics.gapRepairs.inc({ outcome: 'repaired' });
            this.#metrics.repaired.inc(merged.length);
          }
          st.offset = Math.max(st.offset, merged[merged.length - 1]?.offset ?? st.offset);
        }
      }
      st.repairing = false;
      const backlog = st.backlog.sort((a, b) => a.offset - b.offset);
      st.backlog = [];
      for (const b of backlog) {
        if (st.repairing) st.backlog.push(b);
        else this.#accept(channel, st, b.frame, b.offset, b.epoch, b.assignedAt);
      }
      this.#wake(st);
      return;
    }
  }

  #wake(st: ChannelState): void {
    st.waiters = st.waiters.filter((w) => {
      if (w.epoch !== st.epoch || st.offset >= w.offset) {
        w.resolve();
        return false;
      }
      return true;
    });
  }

  #dropSubscribers(channel: string, reason: string): void {
    for (const sink of this.#hub.sinksOf(channel))
      sink.close(DisconnectCode.INSUFFICIENT_STATE, reason);
  }

  async #brokerCall<T>(op: string, call: () => Promise<T>, what = 'history'): Promise<T> {
    try {
      return await call();
    } catch (err) {
      if (err instanceof ReplyError) throw err;
      this.#metrics.brokerErrors.inc({ op });
      this.#log.warn({ err: errorText(err), op }, 'broker call failed');
      throw new ReplyError(ErrorCode.NOT_AVAILABLE, `${what} backend unavailable, retry later`, {
        cause: err,
      });
    }
  }
}

/** Buffered live frames split by the positions the Hub carried with them. */
function positioned(
  list: readonly FrameItem[],
  epoch: string,
): { frames: Positioned[]; unpositioned: FrameItem[] } {
  const out: Positioned[] = [];
  const unpositioned: FrameItem[] = [];
  for (const item of list) {
    const p = item.position;
    if (p === undefined) unpositioned.push(item);
    else if (p.epoch === epoch) out.push({ offset: p.offset, frame: item.frame });
  }
  return { frames: out, unpositioned };
}

const TIMESTAMP = Buffer.from('"timestamp":');

/**
 * A frame's top-level `timestamp` (ms): the last occurrence of the key, since the data comes
 * before it and only a JSON string (the name, where a quote is always escaped) after it.
 */
function frameTimestamp(frame: Buffer): number {
  const at = frame.lastIndexOf(TIMESTAMP);
  if (at < 0) return NaN;
  let end = at + TIMESTAMP.length;
  while (end < frame.length && (frame[end] as number) >= 0x30 && (frame[end] as number) <= 0x39)
    end++;
  return Number(frame.toString('latin1', at + TIMESTAMP.length, end)) || NaN;
}

function items(list: readonly Positioned[], epoch: string): FrameItem[] {
  return list.map((p) => ({ frame: p.frame, position: { offset: p.offset, epoch } }));
}

function encodeCursor(direction: 'forward' | 'backward', offset: number, epoch: string): string {
  return Buffer.from(`${direction === 'forward' ? 'f' : 'b'}:${offset}:${epoch}`).toString(
    'base64url',
  );
}

function decodeCursor(
  cursor: string,
): { direction: 'forward' | 'backward'; offset: number; epoch: string } | undefined {
  const m = /^([fb]):(\d{1,16}):([A-Za-z0-9_-]{1,64})$/.exec(
    Buffer.from(cursor, 'base64url').toString('latin1'),
  );
  if (m === null) return undefined;
  return {
    direction: m[1] === 'f' ? 'forward' : 'backward',
    offset: Number(m[2]),
    epoch: m[3] as string,
  };
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
