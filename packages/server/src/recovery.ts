/**
 * Pure helpers for resuming a subscriber: merging history with the live frames buffered while it
 * was read. Positions travel beside the frames as data (Hub, Sink.send); nothing here reads them
 * back out of frame bytes. No I/O.
 */
import type { StreamPosition } from './broker/broker.js';
import type { Sink } from './hub.js';

/** A frame with the stream position of its message (undefined: none, as for bridged messages). */
export interface FrameItem {
  readonly frame: Buffer;
  readonly position: StreamPosition | undefined;
}

export interface Positioned {
  readonly offset: number;
  readonly frame: Buffer;
}

/**
 * Frames after `after`: history entries first, then buffered live frames, deduplicated by offset.
 * Returns undefined when the result would not be contiguous from `after + 1` (a gap: the caller
 * must not replay a part).
 */
export function mergeAfter(
  after: number,
  history: readonly Positioned[],
  live: readonly Positioned[],
): Positioned[] | undefined {
  const out: Positioned[] = [];
  let last = after;
  for (const list of [history, live]) {
    for (const item of list) {
      if (item.offset <= last) continue;
      if (item.offset !== last + 1) return undefined;
      out.push(item);
      last = item.offset;
    }
  }
  return out;
}

/**
 * Stands in the Hub for a subscriber being resumed: holds the live frames that arrive while history
 * is read, up to a bound. Frames without a position (bridged) are kept too and delivered in order.
 */
export class BufferingSink implements Sink {
  readonly batched = false;
  readonly target: Sink;
  readonly frames: FrameItem[] = [];
  readonly #max: number;
  overflowed = false;
  closed = false;

  constructor(target: Sink, max: number) {
    this.target = target;
    this.#max = max;
  }

  send(frame: Buffer, position?: StreamPosition): void {
    if (this.frames.length >= this.#max) {
      this.overflowed = true;
      return;
    }
    this.frames.push({ frame, position });
  }

  close(code: number, reason: string): void {
    this.closed = true;
    this.target.close(code, reason);
  }
}
