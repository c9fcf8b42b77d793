/**
 * What an SSE event `id` carries: the connection's subscribed channels and the position of the
 * last message (or subscribe reply) written for each. A browser's EventSource sends the last id
 * back as `Last-Event-ID` when it reconnects, to whichever node, and that node resumes every
 * channel from its position exactly like a WebSocket resume. Pure: no I/O.
 *
 * Encoding: entries `offset,epoch,channel` joined by `;` (`,,channel` when no position is known
 * yet). Offsets are digits and epochs base64url, so the first two commas split an entry; `;` is
 * not in the channel character set.
 */
import type { Position } from '@switchboard/protocol';

/** Longest id written; a larger state is written as OVERFLOW_ID (Node rejects headers over 16 KiB). */
export const MAX_EVENT_ID_LENGTH = 8000;
/** The id of a state too large to write: a resume reports `recovered: false` for every channel. */
export const OVERFLOW_ID = '!';

/**
 * Fed by the Session (`tracked`/`untracked`, see Connection) and by the positions the Hub carries
 * beside message frames, never by reading frames: what is written is what the node assigned.
 */
export class StreamState {
  /** Subscribed channels → last position, undefined until one is known. */
  readonly #channels = new Map<string, Position | undefined>();

  get size(): number {
    return this.#channels.size;
  }

  /** A subscribe took effect at `position`. True when the state changed. */
  subscribed(channel: string, position: Position | undefined): boolean {
    const previous = this.#channels.get(channel);
    if (!this.#channels.has(channel)) {
      this.#channels.set(channel, position);
      return true;
    }
    // A live message may already have moved the channel past the subscribe's position.
    if (position === undefined) return false;
    if (
      previous !== undefined &&
      previous.epoch === position.epoch &&
      previous.offset >= position.offset
    )
      return false;
    this.#channels.set(channel, position);
    return true;
  }

  /** The channel was left. True when it was tracked. */
  unsubscribed(channel: string): boolean {
    return this.#channels.delete(channel);
  }

  /**
   * A message frame of `channel` (or several joined by '\n') was written, with the position of its
   * (last) message as the Hub carried it (see Sink.send). True when a position changed.
   */
  message(channel: string, p: Position | undefined): boolean {
    // Unpositioned frames (bridged messages, events, occupancy and presence streams) move nothing:
    // their channel, when it is one, was tracked by its subscribe.
    if (p === undefined) return false;
    this.#channels.set(channel, { offset: p.offset, epoch: p.epoch });
    return true;
  }

  /** The event id for the current state. */
  encode(): string {
    let out = '';
    for (const [channel, p] of this.#channels) {
      if (out !== '') out += ';';
      out += p === undefined ? `,,${channel}` : `${p.offset},${p.epoch},${channel}`;
      if (out.length > MAX_EVENT_ID_LENGTH) return OVERFLOW_ID;
    }
    return out;
  }
}

/**
 * Reads an event id back: channel → position (undefined when none was known). Returns undefined
 * for an id this server did not write, and OVERFLOW_ID's meaning as 'overflow'.
 */
export function decodeEventId(
  id: string,
): Map<string, Position | undefined> | 'overflow' | undefined {
  if (id === OVERFLOW_ID) return 'overflow';
  const out = new Map<string, Position | undefined>();
  if (id === '') return out;
  if (id.length > MAX_EVENT_ID_LENGTH) return undefined;
  for (const entry of id.split(';')) {
    const m = /^(\d{0,16}),([A-Za-z0-9_-]{0,64}),(.+)$/.exec(entry);
    if (m === null) return undefined;
    const [, offset, epoch, channel] = m as unknown as [string, string, string, string];
    if (offset === '' && epoch === '') out.set(channel, undefined);
    else if (offset !== '' && epoch !== '') out.set(channel, { offset: Number(offset), epoch });
    else return undefined;
  }
  return out;
}
