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
import type { Command, Position } from '@switchboard/protocol';

/** Longest id written; a larger state is written as OVERFLOW_ID (Node rejects headers over 16 KiB). */
export const MAX_EVENT_ID_LENGTH = 8000;
/** The id of a state too large to write: a resume reports `recovered: false` for every channel. */
export const OVERFLOW_ID = '!';

const CHANNEL_PREFIX = '{"channel":"';
const QUOTE = 0x22;

export class StreamState {
  /** Subscribed channels → last position, undefined until one is known. */
  readonly #channels = new Map<string, Position | undefined>();
  /** Subscribe commands awaiting their reply: JSON of the request id → channel. */
  readonly #pending = new Map<string, string>();

  get size(): number {
    return this.#channels.size;
  }

  /** Observes a command on its way to the session. */
  command(cmd: Command): void {
    if (cmd.action === 'unsubscribe') {
      this.#channels.delete(cmd.channel);
      for (const [key, ch] of this.#pending) if (ch === cmd.channel) this.#pending.delete(key);
      return;
    }
    if (cmd.action !== 'subscribe') return;
    // Without an id no reply comes back: the position is learnt from the first message.
    if (cmd.id === undefined) {
      if (!this.#channels.has(cmd.channel)) this.#channels.set(cmd.channel, undefined);
    } else if (this.#pending.size < 1024) {
      this.#pending.set(JSON.stringify(cmd.id), cmd.channel);
    }
  }

  /**
   * Observes a reply or error frame. Returns the channel it answers when it is the successful
   * reply to a tracked subscribe (the state changed), else undefined.
   */
  reply(text: string): string | undefined {
    // The server's own subscribes are answered with their channel in front (`{"channel":...`).
    if (
      this.#pending.size === 0 ||
      !(text.startsWith('{"reply":') || text.startsWith('{"channel":'))
    )
      return undefined;
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return undefined;
    }
    const key = JSON.stringify(frame['reply']);
    const channel = this.#pending.get(key);
    if (channel === undefined) return undefined;
    this.#pending.delete(key);
    if (frame['ok'] !== true) return undefined;
    const p = frame['position'] as { offset?: unknown; epoch?: unknown } | undefined;
    const position =
      typeof p?.offset === 'number' && typeof p.epoch === 'string' && p.epoch !== ''
        ? { offset: p.offset, epoch: p.epoch }
        : undefined;
    const previous = this.#channels.get(channel);
    // A message may already have moved the channel past the reply's position.
    if (position === undefined || previous === undefined || previous.epoch !== position.epoch)
      this.#channels.set(channel, position ?? previous);
    else if (previous.offset < position.offset) this.#channels.set(channel, position);
    return channel;
  }

  /**
   * Observes a message frame, or several of one channel joined by '\n', with the position of its
   * (last) message as the Hub carried it (see Sink.send). True when a position changed.
   */
  message(frame: Buffer, p: Position | undefined): boolean {
    const channel = channelOf(frame);
    if (channel === undefined) return false;
    if (p === undefined) {
      if (this.#channels.has(channel)) return false;
      this.#channels.set(channel, undefined);
      return true;
    }
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

/** The channel a message frame starts with (`{"channel":"name",...`). */
function channelOf(frame: Buffer): string | undefined {
  if (frame.toString('latin1', 0, CHANNEL_PREFIX.length) !== CHANNEL_PREFIX) return undefined;
  // Channel names hold no quote or backslash, so the next quote ends the name.
  const end = frame.indexOf(QUOTE, CHANNEL_PREFIX.length);
  if (end === -1) return undefined;
  return frame.toString('utf8', CHANNEL_PREFIX.length, end);
}
