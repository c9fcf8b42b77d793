import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import type {
  ApplyResult,
  MemberOp,
  MembersPage,
  OpResult,
  PageQuery,
  PresenceStore,
} from './presence.js';

/** A member as its node holds it. */
export interface LocalMember {
  readonly key: string;
  readonly owner: string;
  readonly idJson: string;
  readonly dataJson: string;
}

interface Held extends LocalMember {
  /** Set while the member's connection is gone and it waits out the grace period. */
  grace?: NodeJS.Timeout;
}

interface Queued {
  readonly op: MemberOp;
  readonly resolve: (r: { result: OpResult; offset: number }) => void;
  readonly reject: (err: unknown) => void;
}

/** Ops per store call: a 10,000-member burst becomes ten scripts, none holding Redis long. */
const MAX_OPS_PER_CALL = 1000;

export interface TrackerOptions {
  readonly ttlMs: number;
  readonly maxMembers: number;
  readonly log: Logger;
  /** Where this tracker's series are registered (the server's registry). */
  readonly registry?: Registry;
}

/**
 * The members this node holds, kept in its store. Changes made in one turn of the event loop are
 * applied per channel in one store call (one script, one event frame); members are refreshed every
 * third of the TTL so they stay listed while their connections live, and channels this node
 * streams presence events of are swept, so an expired member (its node died) is removed with its
 * `leave` within about an eighth of the TTL after it expired (guarantee 8).
 */
export class PresenceTracker {
  readonly #store: PresenceStore;
  readonly #ttlMs: number;
  readonly #maxMembers: number;
  readonly #log: Logger;
  /** channel → member key → member. */
  readonly #members = new Map<string, Map<string, Held>>();
  /** Channels with local presence subscribers, reference-counted. */
  readonly #watched = new Map<string, number>();
  #queue = new Map<string, Queued[]>();
  /** Reads waiting for the next flush to have sent its changes. */
  #afterFlush: (() => void)[] = [];
  #scheduled = false;
  readonly #refreshTimer: NodeJS.Timeout;
  readonly #sweepTimer: NodeJS.Timeout;
  #closed = false;
  readonly #changes: Counter<'kind' | 'result'> | undefined;

  constructor(store: PresenceStore, options: TrackerOptions) {
    this.#store = store;
    const registry = options.registry;
    if (registry !== undefined) {
      const members = this.#members;
      new Gauge({
        name: 'switchboard_presence_members_held',
        help: 'Presence members whose connections are on this node (those in their grace period included)',
        registers: [registry],
        collect() {
          let n = 0;
          for (const m of members.values()) n += m.size;
          this.set(n);
        },
      });
      this.#changes = new Counter({
        name: 'switchboard_presence_changes_total',
        help: 'Presence changes this node sent to the store, by kind (enter, update, leave, refresh) and result (ok, lost, none, full, error)',
        labelNames: ['kind', 'result'],
        registers: [registry],
      });
    }
    this.#ttlMs = options.ttlMs;
    this.#maxMembers = options.maxMembers;
    this.#log = options.log;
    this.#refreshTimer = setInterval(
      () => this.#refresh(),
      Math.max(100, Math.floor(this.#ttlMs / 3)),
    );
    this.#refreshTimer.unref();
    this.#sweepTimer = setInterval(
      () => this.#sweep(),
      Math.min(5000, Math.max(250, Math.floor(this.#ttlMs / 8))),
    );
    this.#sweepTimer.unref();
  }

  /**
   * Enters (or updates) a member; resolves with the store's result and the offset after it.
   * The member is held (refreshed) from now on; `full` or a failure drops it again.
   */
  async enter(
    channel: string,
    m: LocalMember,
    kind: 'enter' | 'update',
  ): Promise<{ result: OpResult; offset: number }> {
    let members = this.#members.get(channel);
    if (members === undefined) this.#members.set(channel, (members = new Map<string, Held>()));
    const before = members.get(m.key);
    if (before?.grace !== undefined) clearTimeout(before.grace);
    const held: Held = { ...m };
    members.set(m.key, held);
    try {
      const r = await this.#op(channel, { kind, ...m, timestamp: Date.now() });
      if (r.result !== 'ok') this.#forget(channel, held);
      return r;
    } catch (err) {
      this.#forget(channel, held);
      throw err;
    }
  }

  /** Ends a membership now (when `owner` still holds it). */
  leave(
    channel: string,
    key: string,
    owner: string,
    dataJson = '',
  ): Promise<{ result: OpResult; offset: number }> {
    const held = this.#members.get(channel)?.get(key);
    if (held === undefined || held.owner !== owner)
      return Promise.resolve({ result: 'none', offset: 0 });
    this.#forget(channel, held);
    return this.#op(channel, {
      kind: 'leave',
      key,
      owner,
      idJson: held.idJson,
      dataJson,
      timestamp: Date.now(),
    });
  }

  /**
   * The member's connection ended: it leaves after `graceMs` unless a connection with the same key
   * enters meanwhile (on this node: enter() replaces it; on another: the store's owner changes and
   * this leave is ignored). Kept refreshed meanwhile.
   */
  detach(channel: string, key: string, owner: string, graceMs: number): void {
    const held = this.#members.get(channel)?.get(key);
    if (held === undefined || held.owner !== owner) return;
    if (graceMs <= 0) {
      this.#leaveLogged(channel, key, owner);
      return;
    }
    held.grace = setTimeout(() => this.#leaveLogged(channel, key, owner), graceMs);
    held.grace.unref();
  }

  /**
   * One page of members, read after this node's pending changes of the channel were sent: a
   * connection's subscribe (auto-enter) or enter followed by a read sees itself. The store applies
   * calls in the order they were sent (one Redis connection).
   */
  async page(channel: string, query: PageQuery): Promise<MembersPage> {
    if (this.#queue.has(channel))
      await new Promise<void>((resolve) => this.#afterFlush.push(resolve));
    return this.#store.page(channel, query);
  }

  /** Sweep this channel for expired members while someone here listens to its events. */
  watch(channel: string): void {
    this.#watched.set(channel, (this.#watched.get(channel) ?? 0) + 1);
  }

  unwatch(channel: string): void {
    const n = (this.#watched.get(channel) ?? 0) - 1;
    if (n <= 0) this.#watched.delete(channel);
    else this.#watched.set(channel, n);
  }

  /** Members held on this node (for metrics and the memory-per-member figure). */
  get size(): number {
    let n = 0;
    for (const m of this.#members.values()) n += m.size;
    return n;
  }

  /**
   * Stops refreshing and sweeping. Members waiting out their grace period leave now: this node
   * will not refresh them, and their clients are reconnecting elsewhere anyway (a resume there
   * takes the member over first, or it is a real leave).
   */
  close(): void {
    this.#closed = true;
    clearInterval(this.#refreshTimer);
    clearInterval(this.#sweepTimer);
    for (const [channel, members] of this.#members)
      for (const held of [...members.values()])
        if (held.grace !== undefined) {
          clearTimeout(held.grace);
          this.#leaveLogged(channel, held.key, held.owner);
        }
  }

  #leaveLogged(channel: string, key: string, owner: string): void {
    this.leave(channel, key, owner).catch((err: unknown) =>
      this.#warn(err, channel, 'presence leave failed'),
    );
  }

  #forget(channel: string, held: Held): void {
    const members = this.#members.get(channel);
    if (members?.get(held.key) !== held) return;
    if (held.grace !== undefined) clearTimeout(held.grace);
    members.delete(held.key);
    if (members.size === 0) this.#members.delete(channel);
  }

  #op(channel: string, op: MemberOp): Promise<{ result: OpResult; offset: number }> {
    return new Promise((resolve, reject) => {
      let q = this.#queue.get(channel);
      if (q === undefined) this.#queue.set(channel, (q = []));
      q.push({ op, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#scheduled = false;
    const queue = this.#queue;
    this.#queue = new Map();
    for (const [channel, items] of queue) {
      for (let i = 0; i < items.length; i += MAX_OPS_PER_CALL) {
        const chunk = items.slice(i, i + MAX_OPS_PER_CALL);
        this.#store
          .apply(
            channel,
            chunk.map((q) => q.op),
            this.#ttlMs,
            this.#maxMembers,
          )
          .then(
            (r: ApplyResult) =>
              chunk.forEach((q, j) => {
                const result = r.results[j] ?? 'none';
                this.#changes?.inc({ kind: q.op.kind, result });
                q.resolve({ result, offset: r.offset });
              }),
            (err: unknown) =>
              chunk.forEach((q) => {
                this.#changes?.inc({ kind: q.op.kind, result: 'error' });
                q.reject(err);
              }),
          );
      }
    }
    const waiting = this.#afterFlush;
    this.#afterFlush = [];
    for (const resolve of waiting) resolve();
  }

  #refresh(): void {
    if (this.#closed) return;
    // One warning per round, not one per member, while the store is away.
    let warned = false;
    for (const [channel, members] of this.#members) {
      for (const held of members.values()) {
        this.#op(channel, { kind: 'refresh', ...held, timestamp: Date.now() }).then(
          ({ result }) => {
            // Another connection took the member over (a resume elsewhere), or the channel
            // filled up while the store had lost it: this node stops holding it.
            if (result === 'lost' || result === 'full') this.#forget(channel, held);
          },
          (err: unknown) => {
            if (warned) return;
            warned = true;
            this.#warn(err, channel, 'presence refresh failed');
          },
        );
      }
    }
  }

  #sweep(): void {
    if (this.#closed) return;
    for (const channel of this.#watched.keys()) {
      this.#store
        .apply(channel, [], this.#ttlMs, this.#maxMembers)
        .catch((err: unknown) => this.#warn(err, channel, 'presence sweep failed'));
    }
  }

  #warn(err: unknown, channel: string, what: string): void {
    this.#log.warn({ err: err instanceof Error ? err.message : String(err), channel }, what);
  }
}
