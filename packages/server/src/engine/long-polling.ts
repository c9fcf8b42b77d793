/**
 * HTTP long-polling, for networks that buffer streaming responses. The node holding the connection
 * keeps its outbound frames, numbered 1, 2, 3, ...; a poll carries `cursor`, the number of the last
 * frame the client received, which acknowledges (and drops) every frame up to it, and gets the
 * frames after it, at once when some are pending, else when one arrives or after `wait`. Frames stay
 * until acknowledged, so a lost response costs nothing: the next poll with the same cursor gets
 * them again. Unacknowledged frames are bounded by maxOutboundBytes (then 3008, as WebSocket).
 */
import { DisconnectCode, encodeLongPollBody, ErrorCode } from '@switchboard/protocol';
import type { ConnectionHandler } from './connection.js';
import { labelOwnReply, type HeldConnection, type HeldHost } from './http-session.js';

/** How a poll is answered: an HTTP status and a JSON body. */
export type PollResponder = (status: number, body: string) => void;

interface Waiter {
  readonly cursor: number;
  readonly respond: PollResponder;
  timer: NodeJS.Timeout | undefined;
}

interface Pending {
  readonly seq: number;
  readonly frame: Buffer | string;
  readonly bytes: number;
  readonly at: number;
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

export class PollConnection implements HeldConnection {
  readonly transport = 'long-polling';
  readonly batched = false;
  readonly id: string;
  handler: ConnectionHandler | undefined;
  closed = false;
  readonly #host: HeldHost;
  readonly #own: ReadonlyMap<string, string>;
  /** Frames not yet acknowledged, in order. */
  #queue: Pending[] = [];
  #bytes = 0;
  /** Number of the last frame queued; the first is 1. */
  #seq = 0;
  /** Highest cursor acknowledged. */
  #acked = 0;
  #waiter: Waiter | undefined;
  #flushTimer: NodeJS.Timeout | undefined;
  #flushNow: NodeJS.Immediate | undefined;
  #urgent = false;
  /** When the last poll ended (or the connection opened); for the idle check. */
  #lastPoll = Date.now();
  #closeInfo: { code: number; reason: string } | undefined;

  constructor(host: HeldHost, id: string, own: ReadonlyMap<string, string>) {
    this.#host = host;
    this.id = id;
    this.#own = own;
  }

  /** Frames not yet acknowledged by a poll, in bytes. */
  get queuedBytes(): number {
    return this.#bytes;
  }

  /** Longest a poll may wait: the ping interval, so proxies' read timeouts (longer) never fire. */
  get maxWaitMs(): number {
    return this.#host.pingIntervalMs;
  }

  send(frame: Buffer): void {
    this.#push(frame, frame.length);
  }

  sendText(frame: string): void {
    const text = labelOwnReply(frame, this.#own);
    this.#urgent = true;
    this.#push(text, Buffer.byteLength(text));
  }

  commands(frames: readonly string[]): void {
    for (const frame of frames) {
      if (this.closed) return;
      this.handler?.onFrame(frame);
    }
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.#host.disconnected(code);
    this.#end(code, reason);
  }

  /** Ends the connection at once, as its client asked (DELETE). */
  release(): void {
    this.#end(DisconnectCode.NORMAL, 'closed by the client');
    this.#answer();
    this.#host.forget(this);
  }

  #end(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.#closeInfo = { code, reason };
    // As a WebSocket's close event: after the current turn, never inside the caller's own call.
    setImmediate(() => {
      this.handler?.onClose();
      this.handler = undefined;
    });
    if (this.#waiter !== undefined) this.#schedule(0);
    setTimeout(() => this.#host.forget(this), CLOSED_LINGER_MS).unref();
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
    if (cursor > this.#seq) {
      respond(
        400,
        JSON.stringify({
          error: `cursor ${cursor} was never issued (the last frame is ${this.#seq})`,
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
    if (this.#queue.length > 0) this.#ready();
  }

  tick(now: number): void {
    // A client polls again as soon as a poll ends: one silent for two intervals is gone.
    if (!this.closed && this.#waiter === undefined && now - this.#lastPoll > 2 * this.maxWaitMs)
      this.close(DisconnectCode.NO_PONG, 'no poll within two ping intervals');
  }

  #push(frame: Buffer | string, bytes: number): void {
    if (this.closed) return;
    this.#queue.push({ seq: ++this.#seq, frame, bytes, at: Date.now() });
    this.#bytes += bytes;
    if (this.#bytes > this.#host.maxOutboundBytes) {
      this.close(DisconnectCode.SLOW, 'too slow: outbound queue full');
      return;
    }
    if (this.#waiter !== undefined) this.#ready();
  }

  /** Frames are pending for a waiting poll: answer after the current turn, or after the linger. */
  #ready(): void {
    const oldest = this.#queue[0];
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
    for (const p of this.#queue) {
      if (p.seq <= waiter.cursor) continue;
      if (
        parts.length >= MAX_FRAMES_PER_POLL ||
        (bytes > 0 && bytes + p.bytes > MAX_BYTES_PER_POLL)
      )
        break;
      parts.push(typeof p.frame === 'string' ? p.frame : p.frame.toString('utf8'));
      bytes += p.bytes;
      last = p.seq;
    }
    const done = this.#closeInfo !== undefined && last === this.#seq;
    waiter.respond(200, encodeLongPollBody(last, parts, done ? this.#closeInfo : undefined));
  }

  #ack(cursor: number): void {
    if (cursor <= this.#acked) return;
    this.#acked = cursor;
    let drop = 0;
    for (const p of this.#queue) {
      if (p.seq > cursor) break;
      this.#bytes -= p.bytes;
      drop++;
    }
    if (drop > 0) this.#queue = this.#queue.slice(drop);
  }
}
