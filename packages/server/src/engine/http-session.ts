/**
 * What the HTTP transports (SSE, long-polling) share: the shape of a connection held by this node,
 * its unguessable id, and the subscribes a connection opens with. A client of these
 * transports sends its commands by POST, which may reach any node; the node that holds the
 * connection receives them through the broker (http-transports.ts).
 */
import { randomBytes } from 'node:crypto';
import {
  channelError,
  decodeCommand,
  ErrorCode,
  type DecodeResult,
  type Position,
  type SubscribeCommand,
} from '@switchboard/protocol';
import type { Connection, ConnectionHandler, InboundCommand, TransportHost } from './transport.js';

/** A connection whose commands arrive over HTTP, held by this node. */
export interface HeldConnection extends Connection {
  readonly id: string;
  readonly closed: boolean;
  handler: ConnectionHandler | undefined;
  /** Hands decoded commands to the session, in order. */
  commands(commands: readonly InboundCommand[]): void;
  /** Called once per ping interval: heartbeats, idle checks. */
  tick(now: number): void;
  /** Ends the connection because its client asked to (DELETE): not a disconnect by the server. */
  release(): void;
}

/** What a held connection needs from the engine that holds it. */
export interface HeldHost extends TransportHost {
  readonly pingIntervalMs: number;
  /** The connection is gone: forget it and stop routing its commands here. */
  forget(conn: HeldConnection): void;
  /**
   * The connection ended, its client was told (or is gone), and it stays only to answer a late
   * poll again (long-polling): it no longer counts as open, so the drain does not wait for it.
   */
  ended(conn: HeldConnection): void;
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
 * The subscribes a connection opens with, as commands (never as JSON text to be parsed again):
 * the channels of its URL, and those of its Last-Event-ID with their positions (`since`), so the
 * node resumes each one. Each is labelled with its channel, which its reply names.
 */
export function openingSubscribes(
  urlChannels: readonly string[],
  resume: ReadonlyMap<string, Position | undefined> | 'overflow' | undefined,
): InboundCommand[] {
  const wanted = new Map<string, Position | undefined>();
  if (resume === 'overflow') {
    for (const c of urlChannels) wanted.set(c, { offset: 0, epoch: LOST_EPOCH });
  } else {
    for (const [c, p] of resume ?? []) wanted.set(c, p);
    for (const c of urlChannels) if (!wanted.has(c)) wanted.set(c, undefined);
  }
  const out: InboundCommand[] = [];
  for (const [channel, since] of wanted) {
    const id = `${OWN_ID_PREFIX}${out.length}`;
    // The channels of an event id were not checked as a URL's were: answered as a client's
    // subscribe with that channel would be.
    const why = channelError(channel);
    if (why !== undefined || (since !== undefined && !Number.isSafeInteger(since.offset))) {
      const decoded: DecodeResult =
        why === undefined
          ? { ok: false, id, code: ErrorCode.BAD_REQUEST, message: 'since offset out of range' }
          : { ok: false, id, code: ErrorCode.INVALID_CHANNEL, message: why };
      out.push({ decoded, bytes: 0, label: channel });
      continue;
    }
    const command: SubscribeCommand =
      since === undefined
        ? { action: 'subscribe', channel, id }
        : { action: 'subscribe', channel, id, since };
    out.push({ decoded: { ok: true, command }, bytes: 0, label: channel });
  }
  return out;
}

/**
 * Frames POSTed by a client (one command each), decoded once here on the node that holds the
 * connection; the bytes each counts as received are those the client sent.
 */
export function decodeFrames(frames: readonly string[]): InboundCommand[] {
  return frames.map((text) => ({ decoded: decodeCommand(text), bytes: Buffer.byteLength(text) }));
}
