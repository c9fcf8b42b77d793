/**
 * Pure helpers for resuming a subscriber: reading a frame's position and merging history with the
 * live frames buffered while it was read. No I/O.
 */
import type { StreamPosition } from './broker/broker.js';
import type { Sink } from './hub.js';

const OFFSET_KEY = Buffer.from(',"offset":');

/**
 * The position a message frame ends with (`...,"offset":N,"epoch":"E"}`), or undefined for a frame
 * without one (bridged messages). Reads only the frame's tail.
 */
export function framePosition(frame: Buffer): StreamPosition | undefined {
  const at = frame.lastIndexOf(OFFSET_KEY);
  if (at === -1) return undefined;
  let i = at + OFFSET_KEY.length;
  let offset = 0;
  for (let c = frame[i]; c !== undefined && c >= 0x30 && c <= 0x39; c = frame[++i])
    offset = offset * 10 + (c - 0x30);
  // expect ,"epoch":"
  const start = i + 10;
  const end = frame.indexOf(0x22, start);
  // the position closes the frame; anything else is an "offset" key inside the data
  if (end !== frame.length - 2 || frame.toString('latin1', i, start) !== ',"epoch":"')
    return undefined;
  return { offset, epoch: frame.toString('latin1', start, end) };
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
  readonly frames: Buffer[] = [];
  readonly #max: number;
  overflowed = false;
  closed = false;

  constructor(target: Sink, max: number) {
    this.target = target;
    this.#max = max;
  }

  send(frame: Buffer): void {
    if (this.frames.length >= this.#max) {
      this.overflowed = true;
      return;
    }
    this.frames.push(frame);
  }

  close(code: number, reason: string): void {
    this.closed = true;
    this.target.close(code, reason);
  }
}
