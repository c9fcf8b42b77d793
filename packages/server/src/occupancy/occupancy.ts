/**
 * Occupancy and the channel directory: types shared by the stores and the ChannelDirectory.
 *
 * Each node counts its own connections and subscribers per channel and writes its share to the
 * store, debounced (never per message); the store sums the shares of every node. A channel is
 * occupied while the deployment-wide `subscribers` is above zero; a store write that moves the
 * sum across zero reports the transition, and since that write is one atomic step, exactly one
 * node sees each transition. Shares of a node that stopped heart-beating are removed by any
 * surviving node (reap), which reports the transitions the same way.
 */
import type { StreamPosition } from '../broker/broker.js';

/** Deployment-wide counts of one channel. */
export interface Occupancy {
  /** Connections attached to the channel (subscribed to it or to its presence events). */
  readonly connections: number;
  /** Subscriptions to the channel's messages. */
  readonly subscribers: number;
  /** Presence members entered in the channel. */
  readonly presenceMembers: number;
  /** Distinct publishers (clientId, API key, or connection) in the last 60 s. */
  readonly publishersLastMinute: number;
}

export interface ChannelSummary {
  readonly channel: string;
  readonly occupancy: Occupancy;
}

export interface ChannelDetails extends ChannelSummary {
  /** The channel's top stream position, or null when no stream position is kept for it. */
  readonly last: StreamPosition | null;
}

export interface ListQuery {
  /** Only channels whose name starts with this (a plain prefix, never a pattern). */
  readonly prefix?: string | undefined;
  /** Cursor from the previous page. */
  readonly cursor?: string | undefined;
  /** Channels per page (1-1000, default 100). */
  readonly limit?: number | undefined;
}

export interface ChannelList {
  readonly channels: readonly ChannelSummary[];
  /** Cursor of the next page, or null when this is the last. */
  readonly next: string | null;
}

/** A node's share of one channel, as written to the store. */
export interface Share {
  readonly channel: string;
  readonly connections: number;
  readonly subscribers: number;
  /** Publishers seen on this node since its previous write. */
  readonly publishers: readonly string[];
}

/** A channel crossed zero subscribers deployment-wide in a store write. */
export interface Transition {
  readonly channel: string;
  readonly occupied: boolean;
}

export interface OccupancyStore {
  readonly name: string;
  /** Replaces this node's shares of these channels; resolves with the transitions it caused. */
  write(node: string, shares: readonly Share[]): Promise<Transition[]>;
  /**
   * Marks the node alive for `ttlMs`. Resolves false when the node had been reaped meanwhile (its
   * shares are gone: the caller writes them all again).
   */
  heartbeat(node: string, ttlMs: number): Promise<boolean>;
  /** Removes the shares of nodes whose heartbeat lapsed; resolves with the transitions. */
  reap(): Promise<Transition[]>;
  /** The counts and top position of each channel. */
  read(channels: readonly string[]): Promise<ChannelDetails[]>;
  /**
   * Every channel name starting with `prefix` that is occupied, has presence members, or has a
   * stream position kept (history, or the epoch kept a day after the last publish). Unordered.
   */
  names(prefix: string): Promise<string[]>;
  close(): Promise<void>;
}

export const DEFAULT_LIST_LIMIT = 100;
export const MAX_LIST_LIMIT = 1000;
/** Window of `publishersLastMinute`. */
export const PUBLISHERS_WINDOW_MS = 60_000;

/** The opaque cursor of a listing page: the last channel it listed. */
export function encodeListCursor(channel: string): string {
  return Buffer.from(channel).toString('base64url');
}

/** The channel a cursor names, or undefined when it is not one this server issued. */
export function decodeListCursor(cursor: string): string | undefined {
  if (!/^[A-Za-z0-9_-]{1,400}$/.test(cursor)) return undefined;
  const channel = Buffer.from(cursor, 'base64url').toString('utf8');
  return channel.length > 0 && channel.length <= 255 ? channel : undefined;
}
