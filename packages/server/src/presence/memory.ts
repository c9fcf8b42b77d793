import {
  encodePresenceEvent,
  encodePresenceMember,
  type PresenceAction,
} from '@switchboard/protocol';
import { randomBytes } from 'node:crypto';
import {
  eventsFrame,
  type ApplyResult,
  type MemberOp,
  type MembersPage,
  type OpResult,
  type PageQuery,
  type PresenceListener,
  type ProducedListener,
  type PresenceStore,
} from './presence.js';

interface Entry {
  owner: string;
  offset: number;
  timestamp: number;
  readonly idJson: string;
  dataJson: string;
  expiresAt: number;
}

interface ChannelMembers {
  readonly members: Map<string, Entry>;
  offset: number;
  /** Keys in order, rebuilt lazily for pages. */
  sorted: string[] | undefined;
  changedAt: number;
}

const SWEEP_INTERVAL_MS = 1000;
/**
 * An empty channel's offset is kept this long after its last change (like the Redis store's
 * offset key), so a reader does not see it restart while it still listens.
 */
const EMPTY_CHANNEL_KEEP_MS = 24 * 3_600_000;

/**
 * Presence of the embedded engine: in this process, entries expiring after their TTL. Same
 * semantics as the Redis store (presence.ts); events go to the listener, synchronously within
 * apply(), so they are in offset order. Pending state is lost with the process (documented).
 */
export class MemoryPresenceStore implements PresenceStore {
  readonly name = 'memory';
  /** The epoch of every offset of this store: the process's life (offsets never go back in it). */
  readonly #epoch = randomBytes(6).toString('base64url');
  readonly #channels = new Map<string, ChannelMembers>();
  readonly #sweep: NodeJS.Timeout;
  #listener: PresenceListener | undefined;
  #produced: ProducedListener | undefined;

  constructor() {
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const [channel, ch] of this.#channels) {
        this.#emit(channel, this.#prune(channel));
        if (ch.members.size === 0 && now - ch.changedAt > EMPTY_CHANNEL_KEEP_MS)
          this.#channels.delete(channel);
      }
    }, SWEEP_INTERVAL_MS);
    this.#sweep.unref();
  }

  onProduced(listener: ProducedListener): void {
    this.#produced = listener;
  }

  listen(listener: PresenceListener): void {
    this.#listener = listener;
  }

  apply(
    channel: string,
    ops: readonly MemberOp[],
    ttlMs: number,
    maxMembers: number,
  ): Promise<ApplyResult> {
    const events = this.#prune(channel);
    let ch = this.#channels.get(channel);
    if (ch === undefined) {
      ch = { members: new Map(), offset: 0, sorted: undefined, changedAt: Date.now() };
      this.#channels.set(channel, ch);
    }
    const now = Date.now();
    const results: OpResult[] = [];
    const emit = (action: PresenceAction, e: Entry, dataJson: string, ts: number): number => {
      const offset = ++ch.offset;
      events.push(encodePresenceEvent(action, e.idJson, dataJson, ts, offset));
      return offset;
    };
    for (const op of ops) {
      const e = ch.members.get(op.key);
      if (op.kind === 'leave') {
        if (e === undefined) results.push('none');
        else if (e.owner !== op.owner) results.push('lost');
        else {
          emit('leave', e, op.dataJson === '' ? e.dataJson : op.dataJson, op.timestamp);
          ch.members.delete(op.key);
          ch.sorted = undefined;
          results.push('ok');
        }
        continue;
      }
      if (e !== undefined) {
        if (op.kind === 'refresh') {
          if (e.owner !== op.owner) results.push('lost');
          else {
            e.expiresAt = now + ttlMs;
            results.push('ok');
          }
          continue;
        }
        e.owner = op.owner;
        e.expiresAt = now + ttlMs;
        if (op.kind === 'update' || e.dataJson !== op.dataJson) {
          e.dataJson = op.dataJson;
          e.timestamp = op.timestamp;
          e.offset = emit('update', e, op.dataJson, op.timestamp);
        }
        results.push('ok');
        continue;
      }
      if (ch.members.size >= maxMembers) {
        results.push('full');
        continue;
      }
      const entry: Entry = {
        owner: op.owner,
        offset: 0,
        timestamp: op.timestamp,
        idJson: op.idJson,
        dataJson: op.dataJson,
        expiresAt: now + ttlMs,
      };
      entry.offset = emit('enter', entry, op.dataJson, op.timestamp);
      ch.members.set(op.key, entry);
      ch.sorted = undefined;
      results.push('ok');
    }
    const offset = ch.offset;
    if (events.length > 0) ch.changedAt = now;
    this.#emit(channel, events);
    return Promise.resolve({ results, offset, epoch: this.#epoch });
  }

  page(channel: string, query: PageQuery): Promise<MembersPage> {
    this.#emit(channel, this.#prune(channel));
    const ch = this.#channels.get(channel);
    if (ch === undefined)
      return Promise.resolve({ members: [], offset: 0, epoch: this.#epoch, next: null });
    const sorted = (ch.sorted ??= [...ch.members.keys()].sort(compareKeys));
    const lower = query.after ?? (query.clientId === undefined ? '' : query.clientId + '\u0000');
    let i = lowerBound(sorted, lower);
    if (query.after !== undefined && sorted[i] === query.after) i++;
    const prefix = query.clientId === undefined ? undefined : query.clientId + '\u0000';
    const members: string[] = [];
    let last: string | undefined;
    for (; i < sorted.length && members.length < query.limit; i++) {
      const key = sorted[i] as string;
      if (prefix !== undefined && !key.startsWith(prefix)) break;
      const e = ch.members.get(key) as Entry;
      members.push(memberJson(e));
      last = key;
    }
    const more =
      i < sorted.length && (prefix === undefined || (sorted[i] as string).startsWith(prefix));
    return Promise.resolve({
      members,
      offset: ch.offset,
      epoch: this.#epoch,
      next: more ? (last ?? null) : null,
    });
  }

  /** Live members of the channel (occupancy). */
  count(channel: string): number {
    const ch = this.#channels.get(channel);
    if (ch === undefined) return 0;
    const now = Date.now();
    let n = 0;
    for (const e of ch.members.values()) if (e.expiresAt > now) n++;
    return n;
  }

  /** Channels with live members (the channel directory lists them). */
  *channelNames(): IterableIterator<string> {
    for (const [channel, ch] of this.#channels) if (ch.members.size > 0) yield channel;
  }

  close(): Promise<void> {
    clearInterval(this.#sweep);
    return Promise.resolve();
  }

  /** Removes the expired members of a channel; returns their leave events. */
  #prune(channel: string): string[] {
    const events: string[] = [];
    const ch = this.#channels.get(channel);
    if (ch === undefined) return events;
    const now = Date.now();
    for (const [key, e] of ch.members) {
      if (e.expiresAt > now) continue;
      ch.members.delete(key);
      ch.sorted = undefined;
      events.push(encodePresenceEvent('leave', e.idJson, e.dataJson, now, ++ch.offset));
    }
    // The offset outlives the members, so a reader never sees it go back while the process lives.
    return events;
  }

  #emit(channel: string, events: readonly string[]): void {
    if (events.length === 0) return;
    this.#listener?.(channel, eventsFrame(channel, this.#epoch, events));
    this.#produced?.(channel, events);
  }
}

function memberJson(e: Entry): string {
  return encodePresenceMember(e.idJson, e.dataJson, e.timestamp, e.offset);
}

/** Byte order of the UTF-16 code units, as Redis orders the same keys (ASCII keys agree). */
function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function lowerBound(sorted: readonly string[], key: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid] as string) < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
