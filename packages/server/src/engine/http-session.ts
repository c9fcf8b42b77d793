/**
 * What the HTTP transports (SSE, long-polling) share: the shape of a connection held by this node,
 * its unguessable id, and the subscribe frames a connection opens with. A client of these
 * transports sends its commands by POST, which may reach any node; the node that holds the
 * connection receives them through the broker (http-transports.ts).
 */
import { labelReply, replyIdWithPrefix } from '@switchboard/protocol';
import { randomBytes } from 'node:crypto';
import type { Position } from '@switchboard/protocol';
import type { Connection, ConnectionHandler } from './connection.js';

/** A connection whose commands arrive over HTTP, held by this node. */
export interface HeldConnection extends Connection {
  readonly id: string;
  readonly closed: boolean;
  handler: ConnectionHandler | undefined;
  /** Hands command frames (one JSON command each) to the session, in order. */
  commands(frames: readonly string[]): void;
  /** Called once per ping interval: heartbeats, idle checks. */
  tick(now: number): void;
  /** Ends the connection because its client asked to (DELETE): not a disconnect by the server. */
  release(): void;
}

/** What a held connection needs from the engine that holds it. */
export interface HeldHost {
  readonly maxOutboundBytes: number;
  readonly pingIntervalMs: number;
  /** The connection is gone: forget it and stop routing its commands here. */
  forget(conn: HeldConnection): void;
  /** The server closed a connection with `code` (metrics). */
  disconnected(code: number): void;
}

/** 18 random bytes: 144 bits, base64url. Knowing an id is what lets a POST command that connection. */
export function newConnectionId(): string {
  return randomBytes(18).toString('base64url');
}

export const CONNECTION_ID = /^[A-Za-z0-9_-]{24}$/;

/** Prefix of the request ids of subscribes the server issues itself (URL channels, resumes). */
export const OWN_ID_PREFIX = 'sse:';

/**
 * An epoch no stream ever has: a `since` with it gets `recovered: false` and the channel's current
 * position, which is the honest answer when the position was lost.
 */
const LOST_EPOCH = '~';

/**
 * The subscribe frames a connection opens with: the channels of its URL, and those of its
 * Last-Event-ID with their positions (`since`), so the node resumes each one. Returns the frames
 * and the channel each own request id stands for.
 */
export function openingSubscribes(
  urlChannels: readonly string[],
  resume: ReadonlyMap<string, Position | undefined> | 'overflow' | undefined,
): { frames: string[]; channels: Map<string, string> } {
  const wanted = new Map<string, Position | undefined>();
  if (resume === 'overflow') {
    for (const c of urlChannels) wanted.set(c, { offset: 0, epoch: LOST_EPOCH });
  } else {
    for (const [c, p] of resume ?? []) wanted.set(c, p);
    for (const c of urlChannels) if (!wanted.has(c)) wanted.set(c, undefined);
  }
  const frames: string[] = [];
  const channels = new Map<string, string>();
  for (const [channel, since] of wanted) {
    const id = `${OWN_ID_PREFIX}${frames.length}`;
    channels.set(id, channel);
    frames.push(
      JSON.stringify(
        since === undefined
          ? { action: 'subscribe', channel, id }
          : { action: 'subscribe', channel, id, since },
      ),
    );
  }
  return { frames, channels };
}

/**
 * A reply to one of the server's own subscribes, with the channel added in front so a client that
 * never sent the command knows what it answers; other frames unchanged.
 */
export function labelOwnReply(text: string, own: ReadonlyMap<string, string>): string {
  if (own.size === 0) return text;
  const id = replyIdWithPrefix(text, OWN_ID_PREFIX);
  const channel = id === undefined ? undefined : own.get(id);
  return channel === undefined ? text : labelReply(text, channel);
}
