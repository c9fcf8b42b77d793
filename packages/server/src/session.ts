import {
  DisconnectCode,
  ErrorCode,
  decodeCommand,
  encodeError,
  encodeReply,
  type Command,
  type CommandError,
  type HistoryCommand,
  type RequestId,
  type SubscribeCommand,
} from '@switchboard/protocol';
import type { Connection, ConnectionHandler } from './engine/connection.js';
import { ReplyError, toReplyError } from './errors.js';
import type { Metrics } from './metrics.js';
import type { Node } from './node.js';

/** Consecutive malformed frames after which the connection is closed with 3501. */
export const MAX_MALFORMED_IN_A_ROW = 100;

export interface SessionLimits {
  readonly maxSubscriptions: number;
  /** Commands awaiting the broker at once; more are refused with TOO_MANY_REQUESTS. */
  readonly maxInFlight: number;
}

/**
 * One client: its subscriptions and command dispatch. Replies go out only to commands that carry
 * an `id` (the classic tutorial's clients send none and expect only messages); errors always do.
 */
export class Session implements ConnectionHandler {
  readonly #node: Node;
  readonly #conn: Connection;
  readonly #metrics: Metrics;
  readonly #limits: SessionLimits;
  /** Channels subscribed or being subscribed. */
  readonly #channels = new Set<string>();
  #inFlight = 0;
  /** Malformed frames since the last valid one. */
  #malformed = 0;
  #closed = false;

  constructor(node: Node, conn: Connection, metrics: Metrics, limits: SessionLimits) {
    this.#node = node;
    this.#conn = conn;
    this.#metrics = metrics;
    this.#limits = limits;
  }

  onFrame(text: string): void {
    const decoded = decodeCommand(text);
    if (!decoded.ok) {
      this.#sendError(decoded);
      // A client that only ever sends garbage is broken, not unlucky: stop spending on it.
      if (++this.#malformed >= MAX_MALFORMED_IN_A_ROW) {
        this.#conn.close(DisconnectCode.BAD_REQUEST, 'too many malformed frames');
      }
      return;
    }
    this.#malformed = 0;
    this.#dispatch(decoded.command);
  }

  onClose(): void {
    this.#closed = true;
    for (const channel of this.#channels) this.#node.unsubscribe(this.#conn, channel);
    this.#channels.clear();
  }

  #dispatch(cmd: Command): void {
    switch (cmd.action) {
      case 'ping':
        this.#conn.sendText(
          cmd.id === undefined ? '{"ok":true,"pong":true}' : encodeReply(cmd.id, '"pong":true'),
        );
        return;
      case 'subscribe':
        this.#subscribe(cmd);
        return;
      case 'history':
        this.#history(cmd);
        return;
      case 'unsubscribe':
        if (!this.#channels.delete(cmd.channel)) {
          this.#fail(
            cmd.id,
            new ReplyError(ErrorCode.NOT_SUBSCRIBED, `not subscribed to ${cmd.channel}`),
          );
          return;
        }
        this.#node.unsubscribe(this.#conn, cmd.channel);
        this.#ok(cmd.id);
        return;
      case 'publish': {
        if (!this.#admit(cmd.id)) return;
        const id = cmd.id;
        this.#node
          .publish(
            { channel: cmd.channel, dataJson: cmd.dataJson, name: cmd.name, id: cmd.messageId },
            'websocket',
          )
          .then(
            (r) => {
              this.#inFlight--;
              if (id !== undefined) {
                this.#reply(
                  id,
                  `"messageId":${JSON.stringify(r.id)},"offset":${r.offset},"epoch":"${r.epoch}"${r.duplicate ? ',"duplicate":true' : ''}`,
                );
              }
            },
            (err: unknown) => {
              this.#inFlight--;
              this.#fail(id, toReplyError(err));
            },
          );
        return;
      }
    }
  }

  #subscribe(cmd: SubscribeCommand): void {
    const { channel, id } = cmd;
    if (this.#channels.has(channel)) {
      this.#fail(
        id,
        new ReplyError(ErrorCode.ALREADY_SUBSCRIBED, `already subscribed to ${channel}`),
      );
      return;
    }
    if (this.#channels.size >= this.#limits.maxSubscriptions) {
      this.#fail(
        id,
        new ReplyError(
          ErrorCode.LIMIT_EXCEEDED,
          `at most ${this.#limits.maxSubscriptions} subscriptions per connection`,
        ),
      );
      return;
    }
    if (!this.#admit(id)) return;
    this.#channels.add(channel);
    this.#node.subscribe(this.#conn, channel, { since: cmd.since, rewind: cmd.rewind }).then(
      (sub) => {
        this.#inFlight--;
        // The client may have left, or unsubscribed, while the broker confirmed.
        if (this.#closed || !this.#channels.has(channel)) {
          this.#node.unsubscribe(this.#conn, channel);
          // Still answered when an unsubscribe overtook the confirmation: both commands took effect
          // in the order sent, and a command with an id always gets a reply (#reply skips closed
          // connections). Returning silently left the client waiting for this reply forever.
          this.#ok(id);
          return;
        }
        if (sub.recovered !== undefined)
          this.#metrics.resumes.inc({ recovered: String(sub.recovered) });
        // The reply goes first, then the replay, in this same turn: the Hub cannot interleave live frames.
        if (id !== undefined) {
          const recovered = sub.recovered === undefined ? '' : `"recovered":${sub.recovered},`;
          this.#reply(
            id,
            `${recovered}"position":{"offset":${sub.position.offset},"epoch":${JSON.stringify(sub.position.epoch)}}`,
          );
        }
        for (const frame of sub.replay) this.#conn.send(frame);
      },
      (err: unknown) => {
        this.#inFlight--;
        this.#channels.delete(channel);
        this.#fail(id, toReplyError(err));
      },
    );
  }

  #history(cmd: HistoryCommand): void {
    if (!this.#admit(cmd.id)) return;
    const id = cmd.id;
    this.#node.history(cmd.channel, cmd).then(
      (page) => {
        this.#inFlight--;
        if (id === undefined || this.#closed) return;
        const next = page.next === null ? 'null' : JSON.stringify(page.next);
        const position = `{"offset":${page.position.offset},"epoch":${JSON.stringify(page.position.epoch)}}`;
        this.#reply(
          id,
          `"messages":[${page.frames.join(',')}],"position":${position},"next":${next}`,
        );
      },
      (err: unknown) => {
        this.#inFlight--;
        this.#fail(id, toReplyError(err));
      },
    );
  }

  #admit(id: RequestId | undefined): boolean {
    if (this.#inFlight >= this.#limits.maxInFlight) {
      this.#fail(
        id,
        new ReplyError(
          ErrorCode.TOO_MANY_REQUESTS,
          `at most ${this.#limits.maxInFlight} commands in flight`,
        ),
      );
      return false;
    }
    this.#inFlight++;
    return true;
  }

  #ok(id: RequestId | undefined): void {
    if (id !== undefined) this.#reply(id, '');
  }

  #reply(id: RequestId, fields: string): void {
    if (!this.#closed) this.#conn.sendText(encodeReply(id, fields));
  }

  #fail(id: RequestId | undefined, err: ReplyError): void {
    this.#sendError(
      id === undefined
        ? { code: err.code, message: err.message }
        : { id, code: err.code, message: err.message },
    );
  }

  #sendError(err: CommandError): void {
    this.#metrics.errors.inc({ code: err.code });
    if (!this.#closed) this.#conn.sendText(encodeError(err));
  }
}
