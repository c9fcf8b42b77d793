/**
 * The Presence store contract: who is in a channel right now, and the events that say so. Beside
 * the Broker, not inside it (centrifuge's PresenceManager), so any broker pairs with any store.
 * This file holds only types.
 *
 * A member is one connection entered in a channel: `(clientId, connectionId)` with its `data`.
 * Every change (enter, update, leave) gets the channel's next presence offset, in the same atomic
 * step that applies it, so all nodes see one order per channel; a member listed by `page()`
 * carries the offset of its last change, so a reader that merges a snapshot with the event stream
 * keeps, per member, whichever it saw with the higher offset (never missing or doubling one).
 *
 * Entries expire unless refreshed: the node holding a member refreshes it periodically, so a member
 * whose node died disappears at most `ttlMs` after the node's last refresh. Removing an expired
 * entry emits its `leave` in the same atomic step, so exactly one `leave` is emitted however many
 * nodes sweep the channel.
 */

/**
 * One change. `key` is `clientId + "\0" + connectionId` (the store's order, so a clientId filter is
 * a key range); `owner` names the connection holding the member now (a resumed connection takes
 * it over: a late leave or refresh of the old one is then ignored).
 *
 * - `enter`: adds the member (event `enter`); for a member already there, takes it over and emits
 *   `update` only when the data changed (a resume emits nothing).
 * - `update`: like enter, but emits `update` for an existing member even with the same data.
 * - `leave`: removes the member when `owner` still holds it (event `leave`, with `dataJson` or,
 *   when that is empty, its last data).
 * - `refresh`: extends the member's life when `owner` holds it; re-adds it (event `enter`) when
 *   the store lost it.
 */
export interface MemberOp {
  readonly kind: 'enter' | 'update' | 'leave' | 'refresh';
  readonly key: string;
  readonly owner: string;
  /** `"clientId":...,"connectionId":...`: the member's identity, JSON-encoded once. */
  readonly idJson: string;
  /** The member's data as JSON text (`null` when none); '' on leave keeps the last data. */
  readonly dataJson: string;
  /** When the change was made (ms since the epoch). */
  readonly timestamp: number;
}

/**
 * `ok`: applied; `lost`: another connection holds the member now (refresh, leave); `none`: no such
 * member (leave); `full`: the channel has `maxMembers` members (enter, update, refresh).
 */
export type OpResult = 'ok' | 'lost' | 'none' | 'full';

export interface ApplyResult {
  readonly results: readonly OpResult[];
  /** The channel's presence offset after the call. */
  readonly offset: number;
  /** The life of that offset: offsets of different epochs are never comparable. */
  readonly epoch: string;
}

export interface PageQuery {
  readonly limit: number;
  /** Cursor from the previous page (the last key it listed). */
  readonly after?: string | undefined;
  readonly clientId?: string | undefined;
}

export interface MembersPage {
  /**
   * Members as JSON objects: `{"clientId","connectionId","data","timestamp","offset"}`, ordered by
   * (clientId, connectionId).
   */
  readonly members: readonly string[];
  /** The channel's presence offset when the page was read. */
  readonly offset: number;
  /** The life of that offset (see ApplyResult). */
  readonly epoch: string;
  /** The key to pass as `after` for the next page, or null when this is the last. */
  readonly next: string | null;
}

/** Presence events for `channel`, as one frame `{"channel","epoch","presence":[event...]}`. */
export type PresenceListener = (channel: string, frame: Buffer) => void;

/**
 * The events a store's own calls produced, as event object texts: each event is reported by
 * exactly one process (the one whose call made it), which webhooks rely on.
 */
export type ProducedListener = (channel: string, events: readonly string[]) => void;

export interface PresenceStore {
  readonly name: string;
  /** Reports the events this process's calls (and sweeps) produced. */
  onProduced?(listener: ProducedListener): void;
  /**
   * Applies the changes in order, as one atomic step, after removing expired members (each with
   * a `leave`). Events go to every node: published in Redis (the broker delivers them), or to the
   * listener for the in-process store.
   */
  apply(
    channel: string,
    ops: readonly MemberOp[],
    ttlMs: number,
    maxMembers: number,
  ): Promise<ApplyResult>;
  /** One page of the live members (expired ones are removed first, with their leaves). */
  page(channel: string, query: PageQuery): Promise<MembersPage>;
  /**
   * The in-process store delivers events here (a Redis store publishes them instead, and has no
   * listen).
   */
  listen?(listener: PresenceListener): void;
  /** Releases connections; entries of a Redis store stay until they expire or are removed. */
  close(): Promise<void>;
}

/** The member key of a (clientId, connectionId). */
export function memberKey(clientId: string, connectionId: string): string {
  return clientId + '\u0000' + connectionId;
}

/** The event frame for a batch of event objects (each a JSON object text). */
export function eventsFrame(channel: string, epoch: string, events: readonly string[]): Buffer {
  return Buffer.from(encodePresenceFrame(channel, epoch, events));
}

/** The opaque cursor of a members page (the last key it listed). */
export function encodePresenceCursor(key: string): string {
  return Buffer.from(key).toString('base64url');
}

/** The key a cursor names, or undefined when it is not one this server issued. */
export function decodePresenceCursor(cursor: string): string | undefined {
  if (!/^[A-Za-z0-9_-]{1,2048}$/.test(cursor)) return undefined;
  const key = Buffer.from(cursor, 'base64url').toString('utf8');
  return key.includes('\u0000') ? key : undefined;
}

/** Default and largest page of members. */
export const DEFAULT_MEMBERS_PAGE = 100;
import { encodePresenceFrame } from '@switchboard/protocol';
