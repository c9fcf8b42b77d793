/**
 * Ably presence over Switchboard's one presence model (src/presence/): an Ably member is the
 * store's member `(clientId, connectionId)` with the Ably connectionId, so native and Ably
 * clients see the same members, in the same per-channel presence order, on every node.
 *
 * - Ids: a member event's id is `<connectionId>:<presence offset>:0`. The SDK orders the events of
 *   one member by the middle number (it reads it as a msgSerial); the channel's presence offset
 *   grows with every change and is the same on every node, so every node sends the same ids and
 *   the SDK keeps, per member, whichever of a SYNC entry and a live event is newer.
 * - Data: as for messages (data.ts). Bytes or a kept cipher chain cannot be a plain JSON value,
 *   so they are stored as `{"$ably":{encoding?,binary?},"data":…}` (what native readers see).
 * - Per connection, one fan-out per channel per node (PresenceFanout) parses each event frame
 *   once and encodes it once per framing; a connection gets nothing before its ATTACHED, then the
 *   SYNC pages, then the events it held meanwhile, then live ones.
 * - No PRESENCE frame carries a channelSerial: the SDK would take it as the message stream's
 *   position and resume from the wrong place.
 */
import { randomBytes } from 'node:crypto';
import type { Sink } from '../hub.js';
import type { Node } from '../node.js';
import { encodePresenceCursor, memberKey, type MembersPage } from '../presence/presence.js';
import type { LocalMember } from '../presence/tracker.js';
import { ReplyError } from '../errors.js';
import { encodeMemberId, ErrorCode } from '@switchboard/protocol';
import {
  Action,
  AblyCode,
  ablyError,
  encodeJson,
  encodeMsgpack,
  type AblyErrorInfo,
  type Format,
  type ProtocolMessage,
} from './codec.js';
import { toStored, toWire, type AblyMeta } from './data.js';

/** Ably wire actions of a PresenceMessage. */
export const PresenceAction = { ABSENT: 0, PRESENT: 1, ENTER: 2, LEAVE: 3, UPDATE: 4 } as const;

const EVENT_ACTIONS: Record<string, number> = {
  enter: PresenceAction.ENTER,
  leave: PresenceAction.LEAVE,
  update: PresenceAction.UPDATE,
};

/** Members per SYNC page (the store's largest page). */
export const SYNC_PAGE = 100;
/** Events a syncing connection may hold; more and it is told to re-attach. */
const MAX_HELD = 10_000;
const WRAPPER = '$ably';
/** Entries one PRESENCE message may carry. */
const MAX_ENTRIES = 100;

/** One member or event as the store lists it (the parsed JSON object). */
interface StoreEntry {
  readonly action?: string;
  readonly clientId?: unknown;
  readonly connectionId?: unknown;
  readonly data?: unknown;
  readonly timestamp?: unknown;
  readonly offset?: unknown;
}

/** Ably member data in the store's terms (JSON text), or why it cannot be taken. */
export function memberData(data: unknown, encoding: unknown): string | { error: string } {
  const stored = toStored(data, encoding);
  if (typeof stored === 'string') return { error: stored };
  const { binary, encoding: enc } = stored.meta;
  if (binary === undefined && enc === undefined) return stored.dataJson;
  const meta: AblyMeta = {};
  if (binary !== undefined) meta.binary = binary;
  if (enc !== undefined) meta.encoding = enc;
  return `{${JSON.stringify(WRAPPER)}:${JSON.stringify(meta)},"data":${stored.dataJson}}`;
}

/** A store entry as an Ably PresenceMessage in `format`; undefined when it is not one. */
export function toPresenceMessage(
  e: StoreEntry,
  action: number,
  format: Format,
): Record<string, unknown> | undefined {
  if (typeof e.clientId !== 'string' || typeof e.connectionId !== 'string') return undefined;
  const offset = typeof e.offset === 'number' ? e.offset : 0;
  let message: unknown = e.data;
  let ably: AblyMeta | undefined;
  if (typeof message === 'object' && message !== null && WRAPPER in message) {
    const w = message as Record<string, unknown>;
    if (typeof w[WRAPPER] === 'object' && w[WRAPPER] !== null) {
      ably = w[WRAPPER];
      message = w['data'];
    }
  }
  const wire = toWire(
    { message, id: '', timestamp: 0, ...(ably !== undefined ? { ably } : {}) },
    format,
  );
  const pm: Record<string, unknown> = {
    action,
    id: `${e.connectionId}:${offset}:0`,
    clientId: e.clientId,
    connectionId: e.connectionId,
    timestamp: typeof e.timestamp === 'number' ? e.timestamp : Date.now(),
  };
  if (wire.data !== undefined) pm['data'] = wire.data;
  if (wire.encoding !== undefined) pm['encoding'] = wire.encoding;
  return pm;
}

/** What the presence fan-out writes to; implemented by the Ably session. */
export interface PresenceSubscriber {
  readonly format: Format;
  write(frame: string | Buffer): void;
  /** The presence stream could not be kept whole: the connection must re-attach the channel. */
  lost(channel: string, reason: string): void;
}

/** A batch of presence events of one channel, encoded lazily once per framing. */
class Events {
  /** The highest presence offset in the batch. */
  readonly offset: number;
  readonly #channel: string;
  readonly #entries: readonly StoreEntry[];
  #json: string | undefined;
  #msgpack: Buffer | undefined;

  constructor(channel: string, entries: readonly StoreEntry[]) {
    this.#channel = channel;
    this.#entries = entries;
    let offset = 0;
    for (const e of entries)
      if (typeof e.offset === 'number' && e.offset > offset) offset = e.offset;
    this.offset = offset;
  }

  /** The events after `offset` only (a syncing connection's held events). */
  after(offset: number): Events | undefined {
    const rest = this.#entries.filter((e) => typeof e.offset !== 'number' || e.offset > offset);
    if (rest.length === 0) return undefined;
    return rest.length === this.#entries.length ? this : new Events(this.#channel, rest);
  }

  frame(format: Format): string | Buffer {
    if (format === 'json') return (this.#json ??= encodeJson(this.#pm('json')));
    return (this.#msgpack ??= encodeMsgpack(this.#pm('msgpack')));
  }

  #pm(format: Format): ProtocolMessage {
    const presence: Record<string, unknown>[] = [];
    for (const e of this.#entries) {
      const action = EVENT_ACTIONS[e.action ?? ''];
      if (action === undefined) continue;
      const m = toPresenceMessage(e, action, format);
      if (m !== undefined) presence.push(m);
    }
    return { action: Action.PRESENCE, channel: this.#channel, timestamp: Date.now(), presence };
  }
}

function parseEvents(channel: string, frame: Buffer): Events | undefined {
  try {
    const v = JSON.parse(frame.toString()) as { presence?: unknown };
    if (!Array.isArray(v.presence)) return undefined;
    return new Events(channel, v.presence as StoreEntry[]);
  } catch {
    return undefined;
  }
}

interface Watcher {
  /** Events that arrived while its SYNC was being sent; undefined once live. */
  held: Events[] | undefined;
}

/**
 * The Ably presence subscribers of one channel on this node, behind one presence subscription
 * of the Node (the same stream native presence subscribers read).
 */
export class PresenceFanout implements Sink {
  readonly batched = false;
  readonly channel: string;
  readonly #node: Node;
  readonly #watchers = new Map<PresenceSubscriber, Watcher>();
  readonly #onEmpty: () => void;
  #subscribed: Promise<{ offset: number; epoch: string }> | undefined;
  #closed = false;

  constructor(node: Node, channel: string, onEmpty: () => void) {
    this.#node = node;
    this.channel = channel;
    this.#onEmpty = onEmpty;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Joins `sub` (events are held for it from now on) once the node streams the channel's
   * presence here. The caller sends ATTACHED with HAS_PRESENCE, then calls `sync`.
   */
  async join(sub: PresenceSubscriber): Promise<void> {
    this.#watchers.set(sub, { held: [] });
    try {
      this.#subscribed ??= this.#node.subscribePresence(this, this.channel);
      await this.#subscribed;
    } catch (err) {
      this.leave(sub);
      throw err;
    }
  }

  /**
   * Sends the members as SYNC pages (`<syncId>:<cursor>`, the last with an empty cursor), then
   * the events held meanwhile that are newer than the first page, then goes live. Resolves false
   * when the sub left or the store could not be read (the sub was then told to re-attach).
   */
  async sync(sub: PresenceSubscriber): Promise<boolean> {
    const syncId = randomBytes(6).toString('hex');
    // A re-attach meanwhile starts another sync with a new watcher: this one then stops.
    const mine = this.#watchers.get(sub);
    if (mine === undefined) return false;
    let after: string | undefined;
    let first: number | undefined;
    try {
      for (;;) {
        const page: MembersPage = await this.#node.presence(this.channel, {
          limit: SYNC_PAGE,
          after,
        });
        if (this.#watchers.get(sub) !== mine) return false;
        first ??= page.offset;
        const cursor = page.next === null ? '' : encodePresenceCursor(page.next);
        const presence: Record<string, unknown>[] = [];
        for (const text of page.members) {
          const m = toPresenceMessage(
            JSON.parse(text) as StoreEntry,
            PresenceAction.PRESENT,
            sub.format,
          );
          if (m !== undefined) presence.push(m);
        }
        const pm: ProtocolMessage = {
          action: Action.SYNC,
          channel: this.channel,
          channelSerial: `${syncId}:${cursor}`,
          presence,
        };
        sub.write(sub.format === 'json' ? encodeJson(pm) : encodeMsgpack(pm));
        if (page.next === null) break;
        after = page.next;
      }
    } catch {
      if (this.#watchers.get(sub) !== mine) return false;
      this.leave(sub);
      sub.lost(this.channel, 'presence backend unavailable, retry later');
      return false;
    }
    if (this.#watchers.get(sub) !== mine) return false;
    // A page lists each member with its last change up to the moment it was read, so an event at
    // or below the first page's offset is in the SYNC already; later ones may be too, and the
    // SDK, comparing ids, ignores those.
    for (const ev of mine.held ?? []) {
      const rest = ev.after(first ?? 0);
      if (rest !== undefined) sub.write(rest.frame(sub.format));
    }
    mine.held = undefined;
    return true;
  }

  leave(sub: PresenceSubscriber): void {
    if (!this.#watchers.delete(sub)) return;
    if (this.#watchers.size > 0 || this.#closed) return;
    this.#closed = true;
    this.#node.unsubscribePresence(this, this.channel);
    this.#onEmpty();
  }

  send(frame: Buffer): void {
    const ev = parseEvents(this.channel, frame);
    if (ev === undefined) return;
    for (const [sub, w] of this.#watchers) {
      if (w.held === undefined) {
        sub.write(ev.frame(sub.format));
        continue;
      }
      if (w.held.length < MAX_HELD) {
        w.held.push(ev);
        continue;
      }
      this.leave(sub);
      sub.lost(this.channel, 'too many presence changes while syncing');
    }
  }

  /** The node could not keep the presence stream whole: every watcher re-attaches (a new SYNC). */
  close(_code: number, reason: string): void {
    for (const sub of [...this.#watchers.keys()]) {
      this.leave(sub);
      sub.lost(this.channel, reason);
    }
  }
}

/** What the members of one connection need from its session. */
export interface MemberSession {
  readonly connectionId: string;
  /** The connection's clientId now (it is known once authenticated). */
  clientId(): string | undefined;
  allows(channel: string): boolean;
}

export interface MemberLimits {
  readonly maxDataBytes: number;
  readonly maxEntersPerConnection: number;
  /** How long a member of a dropped connection waits for a resume before it leaves. */
  readonly graceMs: number;
}

/**
 * The members one Ably connection entered (it may enter several clientIds with `enterClient`).
 * The owner is per session: a resumed connection (a new session, the same connectionId) takes
 * its members over when the SDK re-enters them, silently when the data is the same.
 */
export class ConnectionMembers {
  readonly #node: Node;
  readonly #session: MemberSession;
  readonly #limits: MemberLimits;
  readonly #owner = randomBytes(12).toString('base64url');
  /** channel → member keys entered. */
  readonly #entered = new Map<string, Set<string>>();
  #count = 0;

  constructor(node: Node, session: MemberSession, limits: MemberLimits) {
    this.#node = node;
    this.#session = session;
    this.#limits = limits;
  }

  /**
   * Applies a PRESENCE ProtocolMessage; resolves (never rejects) when the store accepted every
   * change (`{serials:[]}`: ACK) or with the error to NACK.
   */
  apply(pm: ProtocolMessage): Promise<{ serials: string[] } | AblyErrorInfo> {
    const channel = pm.channel as string;
    if (!this.#session.allows(channel))
      return Promise.resolve(
        ablyError(
          AblyCode.OPERATION_DENIED,
          `Unable to perform presence operation (permission denied); channel = ${channel}`,
          401,
        ),
      );
    if (!this.#node.presenceEnabled(channel))
      return Promise.resolve(
        ablyError(
          AblyCode.BAD_REQUEST,
          `presence is not enabled for the namespace of ${channel}`,
          400,
        ),
      );
    if (!Array.isArray(pm.presence) || pm.presence.length === 0)
      return Promise.resolve(
        ablyError(AblyCode.BAD_REQUEST, 'PRESENCE needs a presence array', 400),
      );
    // One store op each: bounded, so one frame cannot queue unbounded work (the SDK sends one).
    if (pm.presence.length > MAX_ENTRIES)
      return Promise.resolve(
        ablyError(AblyCode.BAD_REQUEST, `at most ${MAX_ENTRIES} presence entries per message`, 400),
      );
    const ops: { kind: 'enter' | 'update' | 'leave'; clientId: string; dataJson: string }[] = [];
    for (const raw of pm.presence) {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
        return Promise.resolve(
          ablyError(AblyCode.BAD_REQUEST, 'each presence message must be an object', 400),
        );
      const m = raw as Record<string, unknown>;
      const kind =
        m['action'] === PresenceAction.ENTER
          ? 'enter'
          : m['action'] === PresenceAction.UPDATE
            ? 'update'
            : m['action'] === PresenceAction.LEAVE
              ? 'leave'
              : undefined;
      if (kind === undefined)
        return Promise.resolve(
          ablyError(
            AblyCode.BAD_REQUEST,
            'presence action must be 2 (enter), 3 (leave) or 4 (update)',
            400,
          ),
        );
      const own = this.#session.clientId();
      const given = m['clientId'];
      if (given !== undefined && given !== null && typeof given !== 'string')
        return Promise.resolve(ablyError(AblyCode.BAD_REQUEST, 'clientId must be a string', 400));
      const clientId = typeof given === 'string' ? given : own;
      if (clientId === undefined || clientId === '' || clientId === '*')
        return Promise.resolve(
          ablyError(AblyCode.PRESENCE_NO_CLIENT_ID, 'presence needs a clientId', 400),
        );
      if (own !== undefined && clientId !== own)
        return Promise.resolve(
          ablyError(
            AblyCode.CLIENT_ID_MISMATCH,
            `clientId ${JSON.stringify(clientId)} does not match the connection's`,
            400,
          ),
        );
      let dataJson: string;
      if (kind === 'leave' && (m['data'] === undefined || m['data'] === null)) dataJson = '';
      else {
        const d = memberData(m['data'], m['encoding']);
        if (typeof d !== 'string')
          return Promise.resolve(ablyError(AblyCode.INVALID_MESSAGE_DATA, d.error, 400));
        dataJson = d;
      }
      if (Buffer.byteLength(dataJson) > this.#limits.maxDataBytes)
        return Promise.resolve(
          ablyError(
            AblyCode.TOO_BIG,
            `member data is larger than ${this.#limits.maxDataBytes} bytes`,
            400,
          ),
        );
      ops.push({ kind, clientId, dataJson });
    }
    const results = ops.map((op) => this.#one(channel, op.kind, op.clientId, op.dataJson));
    return Promise.all(results).then(
      () => ({ serials: [] }),
      (err: unknown) => toAblyError(err),
    );
  }

  async #one(
    channel: string,
    kind: 'enter' | 'update' | 'leave',
    clientId: string,
    dataJson: string,
  ): Promise<void> {
    const connectionId = this.#session.connectionId;
    const key = memberKey(clientId, connectionId);
    let keys = this.#entered.get(channel);
    if (kind === 'leave') {
      if (keys?.delete(key) === true) {
        this.#count--;
        if (keys.size === 0) this.#entered.delete(channel);
      }
      await this.#node.leave(channel, key, this.#owner, dataJson);
      return;
    }
    const fresh = keys?.has(key) !== true;
    if (fresh && this.#count >= this.#limits.maxEntersPerConnection)
      throw new ReplyError(
        ErrorCode.PRESENCE_TOO_MANY_ENTERS,
        `at most ${this.#limits.maxEntersPerConnection} members per connection`,
      );
    if (keys === undefined) this.#entered.set(channel, (keys = new Set()));
    if (fresh) {
      keys.add(key);
      this.#count++;
    }
    const member: LocalMember = {
      key,
      owner: this.#owner,
      idJson: encodeMemberId(clientId, connectionId),
      dataJson,
    };
    try {
      await this.#node.enter(channel, member, kind);
    } catch (err) {
      if (fresh && keys.delete(key)) {
        this.#count--;
        if (keys.size === 0) this.#entered.delete(channel);
      }
      throw err;
    }
  }

  /**
   * The connection's members of `channel` leave now: it detached the channel (the SDK forgets its
   * members there), or it may no longer enter it (a renewed token without `presence`).
   */
  leaveChannel(channel: string): void {
    const keys = this.#entered.get(channel);
    if (keys === undefined) return;
    this.#entered.delete(channel);
    this.#count -= keys.size;
    for (const key of keys) this.#node.detach(channel, key, this.#owner, 0);
  }

  /** Channels the connection has members in. */
  channels(): string[] {
    return [...this.#entered.keys()];
  }

  /**
   * The connection ended. `now`: an explicit end (CLOSE, a failed connection) — the members leave
   * at once; else they wait `graceMs` for a resume that re-enters them.
   */
  end(now: boolean): void {
    const grace = now ? 0 : this.#limits.graceMs;
    for (const [channel, keys] of this.#entered)
      for (const key of keys) this.#node.detach(channel, key, this.#owner, grace);
    this.#entered.clear();
    this.#count = 0;
  }
}

function toAblyError(err: unknown): AblyErrorInfo {
  if (err instanceof ReplyError) {
    if (err.code === ErrorCode.PRESENCE_CHANNEL_FULL)
      return ablyError(AblyCode.PRESENCE_FULL, err.message, 400);
    if (err.code === ErrorCode.PRESENCE_TOO_MANY_ENTERS)
      return ablyError(AblyCode.RATE_LIMITED, err.message, 429);
    if (err.code === ErrorCode.PRESENCE_DISABLED)
      return ablyError(AblyCode.BAD_REQUEST, err.message, 400);
    if (err.temporary) return ablyError(AblyCode.UNAVAILABLE, err.message, 503);
  }
  return ablyError(AblyCode.INTERNAL, 'presence change could not be stored', 500);
}
