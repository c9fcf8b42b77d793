/**
 * HTTP long-polling, for networks that buffer streaming responses. The node holding the connection
 * keeps its outbound frames, numbered 1, 2, 3, ...; a poll carries `cursor`, the number of the last
 * frame the client received, which acknowledges (and drops) every frame up to it, and gets the
 * frames after it, at once when some are pending, else when one arrives or after `wait`. Frames stay
 * until acknowledged, so a lost response costs nothing: the next poll with the same cursor gets
 * them again. Unacknowledged frames are bounded by maxOutboundBytes (then 3008, as WebSocket).
 */
import { DisconnectCode, encodeLongPollBody, ErrorCode } from '@switchboard/protocol';
import { BaseConnection, OutboundQueue, type InboundCommand } from './transport.js';
import type { HeldConnection, HeldHost } from './http-session.js';

/** How a poll is answered: an HTTP status and a JSON body. */
export type PollResponder = (status: number, body: string) => void;

interface Waiter {
  readonly cursor: number;
  readonly respond: PollResponder;
  timer: NodeJS.Timeout | undefined;
}

/**
 * How long a parked poll waits after a message frame arrives before answering, so a busy channel
 * is carried in batches rather than one poll per message. Replies are not held back.
 */
export const POLL_LINGER_MS = 25;
/** Most frames, and bytes, one poll response carries; the rest go with the next poll. */
const MAX_FRAMES_PER_POLL = 1000;
const MAX_BYTES_PER_POLL = 512 * 1024;
/** How long a closed connection stays to tell its close code to the next poll. */
const CLOSED_LINGER_MS = 10_000;

/** A long-polling connection; its outbound queue holds the frames until a poll acknowledges them. */
export class PollConnection extends BaseConnection implements HeldConnection {
  readonly transport = 'long-polling';
  readonly batched = false;
  readonly id: string;
  protected readonly outbound = new OutboundQueue<Buffer | string>();
  readonly #pingIntervalMs: number;
  readonly #forget: (conn: HeldConnection) => void;
  readonly #ended: (conn: HeldConnection) => void;
  /** Highest cursor acknowledged. */
  #acked = 0;
  #waiter: Waiter | undefined;
  #flushTimer: NodeJS.Timeout | undefined;
  #flushNow: NodeJS.Immediate | undefined;
  #urgent = false;
  /** When the last poll ended (or the connection opened); for the idle check. */
  #lastPoll = Date.now();
  #closeInfo: { code: number; reason: string } | undefined;
  /** The close was told to a poll (or nobody is polling to be told): no longer open. */
  #told = false;

  constructor(host: HeldHost, id: string) {
    super(host);
    this.#pingIntervalMs = host.pingIntervalMs;
    this.#forget = (conn) => host.forget(conn);
    this.#ended = (conn) => host.ended(conn);
    this.id = id;
  }

  /** Longest a poll may wait: the ping interval, so proxies' read timeouts (longer) never fire. */
  get maxWaitMs(): number {
    return this.#pingIntervalMs;
  }

  protected write(frame: Buffer | string): void {
    // Replies are not held back by the linger.
    if (typeof frame === 'string') this.#urgent = true;
    this.outbound.hold(frame, typeof frame === 'string' ? Buffer.byteLength(frame) : frame.length);
    if (this.#waiter !== undefined) this.#ready();
  }

  commands(commands: readonly InboundCommand[]): void {
    for (const c of commands) {
      if (this.closed) return;
      this.handler?.onCommand?.(c);
    }
  }

  /** Ends the connection at once, as its client asked (DELETE). */
  release(): void {
    if (!this.closed) {
      this.closed = true;
      this.end(DisconnectCode.NORMAL, 'closed by the client');
    }
    this.#answer();
    this.#forget(this);
  }

  protected end(code: number, reason: string): void {
    this.#closeInfo = { code, reason };
    // Closed for not polling: nobody will collect the close, so it stops counting now.
    if (code === DisconnectCode.NO_PONG) this.#tell();
    // As a WebSocket's close event: after the current turn, never inside the caller's own call.
    setImmediate(() => {
      this.handler?.onClose();
      this.handler = undefined;
    });
    if (this.#waiter !== undefined) this.#schedule(0);
    setTimeout(() => this.#forget(this), CLOSED_LINGER_MS).unref();
  }

  /**
   * A poll: acknowledges the frames up to `cursor` and answers with those after it, now or within
   * `waitMs`. A newer poll answers an older one still waiting (with no frames).
   */
  poll(cursor: number, waitMs: number, respond: PollResponder): void {
    if (cursor < this.#acked) {
      respond(
        409,
        JSON.stringify({
          error: `cursor ${cursor} was already acknowledged (frames up to ${this.#acked} are gone); poll with cursor ${this.#acked} or later`,
          code: ErrorCode.UNRECOVERABLE_POSITION,
          cursor: this.#acked,
        }),
      );
      return;
    }
    if (cursor > this.outbound.seq) {
      respond(
        400,
        JSON.stringify({
          error: `cursor ${cursor} was never issued (the last frame is ${this.outbound.seq})`,
          code: ErrorCode.BAD_REQUEST,
          cursor: this.#acked,
        }),
      );
      return;
    }
    this.#ack(cursor);
    this.#lastPoll = Date.now();
    const previous = this.#waiter;
    if (previous !== undefined) {
      clearTimeout(previous.timer);
      previous.respond(200, encodeLongPollBody(previous.cursor, []));
    }
    const waiter: Waiter = { cursor, respond, timer: undefined };
    this.#waiter = waiter;
    if (this.closed || waitMs <= 0) {
      this.#schedule(0);
      return;
    }
    waiter.timer = setTimeout(() => this.#answer(), Math.min(waitMs, this.maxWaitMs));
    if (this.outbound.items.length > 0) this.#ready();
  }

  tick(now: number): void {
    // A client polls again as soon as a poll ends: one silent for two intervals is gone.
    if (this.#waiter !== undefined || now - this.#lastPoll <= 2 * this.maxWaitMs) return;
    if (!this.closed) this.close(DisconnectCode.NO_PONG, 'no poll within two ping intervals');
    else this.#tell();
  }

  /**
   * The connection has ended for its client too: it stays (CLOSED_LINGER_MS) only to answer a
   * repeated poll, and no longer counts as open, so a drain does not wait for it.
   */
  #tell(): void {
    if (this.#told) return;
    this.#told = true;
    this.#ended(this);
  }

  /** Frames are pending for a waiting poll: answer after the current turn, or after the linger. */
  #ready(): void {
    const oldest = this.outbound.items[0];
    if (this.#urgent || oldest === undefined) this.#schedule(0);
    else this.#schedule(Math.max(0, oldest.at + POLL_LINGER_MS - Date.now()));
  }

  #schedule(delayMs: number): void {
    if (delayMs > 0) {
      this.#flushTimer ??= setTimeout(() => this.#answer(), delayMs);
      return;
    }
    // After the current turn: frames written in it (a subscribe reply and its replay) go together.
    this.#flushNow ??= setImmediate(() => this.#answer());
  }

  #answer(): void {
    clearTimeout(this.#flushTimer);
    clearImmediate(this.#flushNow);
    this.#flushTimer = undefined;
    this.#flushNow = undefined;
    const waiter = this.#waiter;
    if (waiter === undefined) return;
    this.#waiter = undefined;
    clearTimeout(waiter.timer);
    this.#urgent = false;
    this.#lastPoll = Date.now();
    const parts: string[] = [];
    let last = waiter.cursor;
    let bytes = 0;
    for (const p of this.outbound.items) {
      if (p.seq <= waiter.cursor) continue;
      if (
        parts.length >= MAX_FRAMES_PER_POLL ||
        (bytes > 0 && bytes + p.bytes > MAX_BYTES_PER_POLL)
      )
        break;
      parts.push(typeof p.item === 'string' ? p.item : p.item.toString('utf8'));
      bytes += p.bytes;
      last = p.seq;
    }
    const done = this.#closeInfo !== undefined && last === this.outbound.seq;
    waiter.respond(200, encodeLongPollBody(last, parts, done ? this.#closeInfo : undefined));
    if (done) this.#tell();
  }

  #ack(cursor: number): void {
    if (cursor <= this.#acked) return;
    this.#acked = cursor;
    this.outbound.ack(cursor);
  }
}
