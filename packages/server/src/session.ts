import {
  ErrorCode,
  decodeCommand,
  encodeError,
  encodeReply,
  type Command,
  type CommandError,
  type RequestId,
} from '@switchboard/protocol';
import type { Connection, ConnectionHandler } from './engine/connection.js';
import { ReplyError, toReplyError } from './errors.js';
import type { Metrics } from './metrics.js';
import type { Node } from './node.js';

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
      return;
    }
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
        this.#subscribe(cmd.channel, cmd.id);
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

  #subscribe(channel: string, id: RequestId | undefined): void {
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
    this.#node.subscribe(this.#conn, channel).then(
      () => {
        this.#inFlight--;
        // The client may have left, or unsubscribed, while the broker confirmed.
        if (this.#closed || !this.#channels.has(channel)) {
          this.#node.unsubscribe(this.#conn, channel);
          return;
        }
        this.#ok(id);
      },
      (err: unknown) => {
        this.#inFlight--;
        this.#channels.delete(channel);
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
