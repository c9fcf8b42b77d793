/**
 * The one decoder of server frames (docs/protocol.md), used by the SDK and the CLI. Pure: no
 * sockets, no timers. One WebSocket message may carry several JSON frames separated by '\n'
 * (subprotocol `switchboard.v1`).
 */

import { BATCH_SEPARATOR } from './server-frames.js';
import type { Position } from './frames.js';

/** A message as delivered to listeners and returned by history. */
export interface Message {
  /** The publisher's id (the idempotency key) or one the server generated. */
  readonly id: string;
  readonly channel: string;
  readonly name?: string;
  /** The published data, as published (any JSON value). */
  readonly data: unknown;
  /** Milliseconds since the Unix epoch, when the publishing node accepted it. */
  readonly timestamp: number;
  /** Position in the channel's stream; both absent for messages bridged from raw Redis PUBLISHes. */
  readonly offset?: number;
  readonly epoch?: string;
}

/** One decoded server frame: a message push, a reply, an error, an event (see frameKind). */
export type Frame = Readonly<Record<string, unknown>>;

/** Splits a WebSocket message into frames. Lines that are not JSON objects are skipped. */
export function parseFrames(text: string): Frame[] {
  const frames: Frame[] = [];
  for (const line of text.split(BATCH_SEPARATOR)) {
    if (line === '') continue;
    try {
      const value: unknown = JSON.parse(line);
      if (isObject(value)) frames.push(value);
    } catch {
      // Not JSON: a server never sends this; skipping keeps one bad line from hiding the rest.
    }
  }
  return frames;
}

/** What a frame is, by the members that tell the kinds apart. */
export type FrameKind = 'reply' | 'error' | 'message' | 'presence' | 'event' | 'unknown';

export function frameKind(frame: Frame): FrameKind {
  if ('error' in frame) return 'error';
  if ('reply' in frame || frame['ok'] === true) return 'reply';
  if (typeof frame['event'] === 'string') return 'event';
  if (typeof frame['channel'] === 'string') {
    if ('message' in frame) return 'message';
    if (Array.isArray(frame['presence'])) return 'presence';
  }
  return 'unknown';
}

/** The message a push frame (or history item) carries, or undefined when `frame` is not one. */
export function toMessage(frame: Frame): Message | undefined {
  const { channel, id, name, timestamp } = frame;
  if (typeof channel !== 'string' || !('message' in frame) || 'reply' in frame) return undefined;
  const position = toPosition(frame);
  return {
    id: typeof id === 'string' ? id : '',
    channel,
    data: frame['message'],
    timestamp: typeof timestamp === 'number' ? timestamp : 0,
    ...(typeof name === 'string' && { name }),
    ...position,
  };
}

/** A `{offset, epoch}` value, or undefined when `value` is not one (an empty epoch is unknown). */
export function toPosition(value: unknown): Position | undefined {
  if (!isObject(value)) return undefined;
  const { offset, epoch } = value;
  return typeof offset === 'number' && typeof epoch === 'string' && epoch !== ''
    ? { offset, epoch }
    : undefined;
}

function isObject(value: unknown): value is Frame {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
