import { createHash, randomBytes } from 'node:crypto';
import {
  decodeCommand,
  DisconnectCode,
  encodeEnterReply,
  encodeError,
  encodeHistoryReply,
  encodeLeaveReply,
  encodeMemberId,
  encodeOccupancyReply,
  encodeOk,
  encodePong,
  encodePresenceReply,
  encodePresenceSubscribeReply,
  encodePublishReply,
  encodeRefreshEvent,
  encodeRevokedEvent,
  encodeSubscribeReply,
  encodeTokenReply,
  ErrorCode,
  labelReply,
  peekRequestId,
  type Command,
  type CommandError,
  type DecodeResult,
  type HistoryCommand,
  type MemberCommand,
  type PresenceCommand,
  type PresenceStreamCommand,
  type OccupancyStreamCommand,
  type PublishCommand,
  type RequestId,
  type SubscribeCommand,
  type TokenCommand,
} from '@switchboard/protocol';
import {
  ANONYMOUS,
  AuthError,
  OPEN,
  type Authenticator,
  type Credentials,
  type Permission,
} from './auth/auth.js';
import type { AuthFailureLog } from './auth/auth-log.js';
import type { AccessPolicy } from './auth/policy.js';
import type { SessionRegistry } from './auth/registry.js';
import type { RevocationStore } from './auth/revocation.js';
import type { Connection, ConnectionHandler, InboundCommand } from './engine/transport.js';
import { ReplyError, toReplyError } from './errors.js';
import { NATIVE_DIALECT, type Metrics, type TransportStats } from './metrics.js';
import type { Node } from './node.js';
import { PublishFence } from './publish-fence.js';
import {
  DEFAULT_MEMBERS_PAGE,
  decodePresenceCursor,
  encodePresenceCursor,
  memberKey,
} from './presence/presence.js';
import type { LocalMember } from './presence/tracker.js';
import { setLongTimeout, type LongTimer } from './timers.js';

/** Consecutive malformed frames after which the connection is closed with 3501. */
export const MAX_MALFORMED_IN_A_ROW = 100;
/** Frames a client may send while its token is being verified. */
const MAX_EARLY_FRAMES = 64;

/** Publish failures after which the connection's later publishes on the channel are fenced. */
const FENCED_CODES: ReadonlySet<number> = new Set([
  ErrorCode.NOT_AVAILABLE,
  ErrorCode.TOO_MANY_REQUESTS,
  ErrorCode.OUTCOME_UNKNOWN,
]);
/** Window over which refusals for the command rate are counted towards a FLOODING close. */
const FLOOD_WINDOW_MS = 10_000;

export interface SessionLimits {
  readonly maxSubscriptions: number;
  /** Commands awaiting the broker at once; more are refused with TOO_MANY_REQUESTS. */
  readonly maxInFlight: number;
  /** Token bucket: sustained commands per second and bucket size. */
  readonly commandsPerSecond: number;
  readonly commandBurst: number;
}

export interface PresenceLimits {
  /** Largest member data, in bytes of its JSON text. */
  readonly maxDataBytes: number;
  /** Most channels one connection may have entered at once (auto-enters not counted). */
  readonly maxEntersPerConnection: number;
  /** How long a member whose connection dropped waits for it to resume before it leaves. */
  readonly graceMs: number;
}

export const DEFAULT_PRESENCE_LIMITS: PresenceLimits = {
  maxDataBytes: 1024,
  maxEntersPerConnection: 100,
  graceMs: 15_000,
};

/** Everything a session needs from its node, shared by all sessions. */
export interface SessionContext {
  readonly node: Node;
  readonly metrics: Metrics;
  readonly limits: SessionLimits;
  readonly presence?: PresenceLimits;
  readonly policy: AccessPolicy;
  /** Undefined when tokens are not configured. */
  readonly authenticator: Authenticator | undefined;
  readonly revocations: RevocationStore;
  readonly registry: SessionRegistry;
  readonly authTimeoutMs: number;
  /** Where refused logins are logged (rate-limited). */
  readonly authLog?: AuthFailureLog;
  readonly tokenRefreshLeadMs: number;
  /** The clock leeway tokens were verified with: a token past its exp lives this much longer. */
  readonly tokenLeewayMs: number;
  /** Called with the client's address when it is closed for flooding (3011). */
  readonly onFlooding?: (address: string) => void;
  /** Whether the address was closed for flooding lately: its new connections get no burst. */
  readonly flooding?: (address: string) => boolean;
}

/**
 * One client: its credentials, subscriptions and command dispatch. Replies go out only to
 * commands that carry an `id` (the classic tutorial's clients send none and expect only
 * messages); errors always do. Every operation is checked against the credentials.
 */
export class Session implements ConnectionHandler {
  readonly #ctx: SessionContext;
  readonly #node: Node;
  readonly #conn: Connection;
  /** Channels subscribed or being subscribed. */
  readonly #channels = new Set<string>();
  #credentials: Credentials;
  /** #publisherId's answer, for #publisherCreds. */
  #publisher: string | undefined;
  #publisherCreds: Credentials | undefined;
  #inFlight = 0;
  /** Publishes received, numbering them for the fence. */
  #publishSeq = 0;
  /** Created on this connection's first publish. */
  #fence: PublishFence | undefined;
  /** Malformed frames since the last valid one. */
  #malformed = 0;
  #closed = false;
  /** Frames received while a token is verified; handled in order once it is. */
  #early: (string | InboundCommand)[] | undefined;
  /** Request ids of the server's own subscribes → the channel their answer is labelled with. */
  readonly #labels = new Map<RequestId, string>();
  #tokens: number;
  #tokensAt = Date.now();
  /** Commands refused for the rate since `#refusedSince`. */
  #refused = 0;
  /** Closed with 3011 already. */
  #flooding = false;
  #refusedSince = 0;
  /** Whether the client was told it is over its rate since it last had a command served. */
  #toldOverRate = false;
  /**
   * The connection's presence connection id, fixed on first use: derived from the client's
   * presence key when it sent one (so a resumed connection gets the same id), else random. Not
   * its transport id (a secret).
   */
  #connectionId: string | undefined;
  #presenceKey: string | undefined;
  /** Names this connection as the holder of its members (random, never sent). */
  #owner: string | undefined;
  /** Channels entered: whether by subscribing (auto-enter) or by enter. */
  readonly #entered = new Map<string, { readonly auto: boolean }>();
  /** Channels whose presence events this connection receives. */
  readonly #presenceStreams = new Set<string>();
  /** Channels whose occupancy events this connection receives. */
  readonly #occupancyStreams = new Set<string>();
  #authTimer: NodeJS.Timeout | undefined;
  #refreshTimer: LongTimer | undefined;
  #expiryTimer: LongTimer | undefined;

  readonly #address: string | undefined;
  readonly #stats: TransportStats;

  /**
   * `token`: from the connection request (query parameter), verified before any frame is handled.
   * `address`: the client's, for the flooding penalty.
   */
  constructor(ctx: SessionContext, conn: Connection, token?: string, address?: string) {
    this.#ctx = ctx;
    this.#address = address;
    this.#node = ctx.node;
    this.#conn = conn;
    this.#stats = ctx.metrics.stats(conn.transport);
    // The Hub adds this connection's deliveries to its transport's tally.
    if (ctx.metrics.enabled) conn.stats = this.#stats;
    ctx.metrics.opened(conn.transport, NATIVE_DIALECT, conn);
    // A flooder that reconnects does not get a fresh burst of commands with each connection.
    this.#tokens =
      address !== undefined && ctx.flooding?.(address) === true ? 0 : ctx.limits.commandBurst;
    this.#credentials = ctx.policy.enabled ? ANONYMOUS : OPEN;
    if (token !== undefined && token !== '') {
      this.#early = [];
      this.#verify('connect', token, undefined).then(
        () => this.#drainEarly(),
        () => {},
      );
    } else if (ctx.policy.enabled && !ctx.policy.anonymousAnywhere) {
      this.#authTimer = setTimeout(() => {
        this.#loginRefused('authentication timed out', undefined);
        this.#conn.close(DisconnectCode.UNAUTHORIZED, 'authentication timed out');
      }, ctx.authTimeoutMs);
    }
  }

  get credentials(): Credentials {
    return this.#credentials;
  }

  /** Ends the session because its credentials were revoked. */
  revoke(reason: string): void {
    this.#conn.close(DisconnectCode.UNAUTHORIZED, reason);
  }

  /** A text frame as the client sent it (WebSocket). */
  onFrame(text: string): void {
    this.#stats.received += Buffer.byteLength(text);
    this.#take(text);
  }

  /** A command the transport decoded (SSE and long-polling POSTs, the server's own subscribes). */
  onCommand(command: InboundCommand): void {
    this.#stats.received += command.bytes;
    this.#take(command);
  }

  /** Every inbound command, whichever entry it came by; received bytes are counted already. */
  #take(inbound: string | InboundCommand): void {
    if (this.#early !== undefined) {
      if (this.#early.length >= MAX_EARLY_FRAMES)
        this.#conn.close(DisconnectCode.BAD_REQUEST, 'too many frames before authentication');
      else this.#early.push(inbound);
      return;
    }
    if (typeof inbound !== 'string' && inbound.label !== undefined) {
      // Whatever answers it (a reply, an error, a refusal over the rate) names the channel.
      const id = idOf(inbound.decoded);
      if (id !== undefined) this.#labels.set(id, inbound.label);
    }
    if (!this.#takeToken()) {
      this.#refuse(typeof inbound === 'string' ? peekRequestId(inbound) : idOf(inbound.decoded));
      return;
    }
    this.#toldOverRate = false;
    const decoded = typeof inbound === 'string' ? decodeCommand(inbound) : inbound.decoded;
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
    this.#ctx.metrics.closed(this.#conn.transport, NATIVE_DIALECT, this.#conn);
    clearTimeout(this.#authTimer);
    this.#refreshTimer?.clear();
    this.#expiryTimer?.clear();
    if (this.#credentials.kind === 'token')
      this.#ctx.registry.untrack(this, this.#credentials.userId);
    for (const channel of this.#channels) this.#node.unsubscribe(this.#conn, channel);
    this.#channels.clear();
    for (const channel of this.#presenceStreams)
      this.#node.unsubscribePresence(this.#conn, channel);
    this.#presenceStreams.clear();
    for (const channel of this.#occupancyStreams)
      this.#node.unsubscribeOccupancy(this.#conn, channel);
    this.#occupancyStreams.clear();
    // A member that can be resumed (its client holds a presence key) waits out the grace period;
    // one with a random id cannot come back, so it leaves now.
    const grace = this.#presenceKey === undefined ? 0 : this.#presenceLimits.graceMs;
    for (const channel of this.#entered.keys())
      this.#node.detach(channel, this.#memberKey(), this.#ownerId(), grace);
    this.#entered.clear();
  }

  get #presenceLimits(): PresenceLimits {
    return this.#ctx.presence ?? DEFAULT_PRESENCE_LIMITS;
  }

  /** Unsubscribes on the node and ends an auto-entered membership. */
  #leave(channel: string): void {
    this.#node.unsubscribe(this.#conn, channel);
    this.#conn.untracked?.(channel);
    if (this.#entered.get(channel)?.auto === true) {
      this.#entered.delete(channel);
      this.#node
        .leave(channel, this.#memberKey(), this.#ownerId())
        .catch((err: unknown) => this.#ctx.metrics.errors.inc({ code: toReplyError(err).code }));
    }
  }

  #dispatch(cmd: Command): void {
    switch (cmd.action) {
      case 'ping':
        this.#write(encodePong(cmd.id));
        return;
      case 'connect':
      case 'refresh':
        this.#token(cmd);
        return;
      case 'subscribe':
        this.#subscribe(cmd);
        return;
      case 'history':
        this.#history(cmd);
        return;
      case 'presence':
        this.#presence(cmd);
        return;
      case 'enter':
      case 'update':
      case 'leave':
        this.#memberCommand(cmd);
        return;
      case 'presence-subscribe':
      case 'presence-unsubscribe':
        this.#presenceStream(cmd);
        break;
      case 'occupancy-subscribe':
      case 'occupancy-unsubscribe':
        this.#occupancyStream(cmd);
        return;
      case 'unsubscribe':
        if (!this.#channels.delete(cmd.channel)) {
          this.#fail(
            cmd.id,
            new ReplyError(ErrorCode.NOT_SUBSCRIBED, `not subscribed to ${cmd.channel}`),
          );
          return;
        }
        this.#leave(cmd.channel);
        this.#ok(cmd.id);
        return;
      case 'publish':
        this.#publish(cmd);
        return;
    }
  }

  #allowed(permission: Permission, channel: string, id: RequestId | undefined): boolean {
    if (this.#ctx.policy.allows(this.#credentials, permission, channel)) return true;
    const anonymous = this.#credentials.kind === 'anonymous';
    this.#fail(
      id,
      new ReplyError(
        anonymous ? ErrorCode.UNAUTHORIZED : ErrorCode.PERMISSION_DENIED,
        anonymous
          ? `authenticate to ${permission} on ${channel}`
          : `not allowed to ${permission} on ${channel}`,
      ),
    );
    return false;
  }

  #publish(cmd: PublishCommand): void {
    if (!this.#allowed('publish', cmd.channel, cmd.id)) return;
    const seq = ++this.#publishSeq;
    // One publisher's order across a failover: see publish-fence.ts.
    const fence = (this.#fence ??= new PublishFence());
    if (!fence.admit(cmd.channel, cmd.messageId)) {
      fence.failed(cmd.channel, cmd.messageId, seq, true);
      this.#fail(
        cmd.id,
        new ReplyError(
          ErrorCode.NOT_AVAILABLE,
          `an earlier publish on ${cmd.channel} failed: send it again first (not stored)`,
        ),
      );
      return;
    }
    if (!this.#admit(cmd.id)) {
      fence.failed(cmd.channel, cmd.messageId, seq);
      return;
    }
    const id = cmd.id;
    this.#node
      .publish(
        {
          channel: cmd.channel,
          dataJson: cmd.dataJson,
          name: cmd.name,
          id: cmd.messageId,
          publisher: this.#publisherId(),
        },
        this.#conn.transport,
      )
      .then(
        (r) => {
          this.#inFlight--;
          if (id !== undefined) {
            this.#send(
              encodePublishReply(id, {
                messageId: r.id,
                offset: r.offset,
                epoch: r.epoch,
                duplicate: r.duplicate,
              }),
            );
          }
        },
        (err: unknown) => {
          this.#inFlight--;
          const reply = toReplyError(err);
          if (FENCED_CODES.has(reply.code)) fence.failed(cmd.channel, cmd.messageId, seq);
          this.#fail(id, reply);
        },
      );
  }

  #subscribe(cmd: SubscribeCommand): void {
    const { channel, id } = cmd;
    if (!this.#allowed('subscribe', channel, id)) return;
    if (this.#channels.has(channel)) {
      this.#fail(
        id,
        new ReplyError(ErrorCode.ALREADY_SUBSCRIBED, `already subscribed to ${channel}`),
      );
      return;
    }
    if (!this.#underSubscriptionLimit(id)) return;
    if (!this.#admit(id)) return;
    this.#channels.add(channel);
    const options = { since: cmd.since, rewind: cmd.rewind };
    // A member enters before the broker subscription, not after: the subscription's replay must
    // be written in the turn it resolves, and a member listed a moment early is harmless. An
    // auto-enter never fails a subscribe (a store fault is logged; the refresh retries it).
    const autoEnter = this.#node.autoEnter(channel) && !this.#entered.has(channel);
    if (autoEnter) this.#entered.set(channel, { auto: true });
    const subscribed = autoEnter
      ? this.#node
          .enter(channel, this.#localMember('null'), 'enter')
          .catch(() => undefined)
          .then(() => this.#node.subscribe(this.#conn, channel, options))
      : this.#node.subscribe(this.#conn, channel, options);
    subscribed.then(
      (sub) => {
        this.#inFlight--;
        // The client may have left, or unsubscribed, while the broker confirmed.
        if (this.#closed || !this.#channels.has(channel)) {
          this.#leave(channel);
          // Still answered when an unsubscribe overtook the confirmation: both commands took effect
          // in the order sent, and a command with an id always gets a reply (#send skips closed
          // connections). Returning silently left the client waiting for this reply forever.
          this.#ok(id);
          return;
        }
        if (sub.recovered !== undefined)
          this.#ctx.metrics.resumes.inc({ recovered: String(sub.recovered) });
        this.#conn.tracked?.(channel, sub.position);
        // The reply goes first, then the replay, in this same turn: the Hub cannot interleave live frames.
        if (id !== undefined) {
          this.#send(
            this.#label(
              id,
              encodeSubscribeReply(id, { recovered: sub.recovered, position: sub.position }),
            ),
          );
        }
        for (const { frame, position } of sub.replay) {
          this.#conn.send(frame, position, channel);
          this.#stats.bytes += frame.length;
        }
        this.#stats.messages += sub.replay.length;
      },
      (err: unknown) => {
        this.#inFlight--;
        if (this.#channels.delete(channel) && autoEnter && this.#entered.get(channel)?.auto) {
          this.#entered.delete(channel);
          this.#node.leave(channel, this.#memberKey(), this.#ownerId()).catch(() => undefined);
        }
        this.#fail(id, toReplyError(err));
      },
    );
  }

  /** The member's clientId: the token's `sub`, or for a connection without one its connection id. */
  #clientId(): string {
    const user = this.#credentials.userId;
    return user !== '' ? user : this.#connId();
  }

  #connId(): string {
    return (this.#connectionId ??= randomBytes(12).toString('base64url'));
  }

  /**
   * Who publishes, for occupancy: the user, or this connection's owner id (not the presence
   * connection id: that one is fixed on first use). Built once per credentials, not per publish:
   * a string made anew each time is hashed anew in every map it is looked up in.
   */
  #publisherId(): string {
    const creds = this.#credentials;
    if (this.#publisher === undefined || this.#publisherCreds !== creds) {
      this.#publisherCreds = creds;
      this.#publisher = creds.userId !== '' ? 'u:' + creds.userId : 'c:' + this.#ownerId();
    }
    return this.#publisher;
  }

  #ownerId(): string {
    return (this.#owner ??= randomBytes(12).toString('base64url'));
  }

  #memberKey(): string {
    return memberKey(this.#clientId(), this.#connId());
  }

  /**
   * Adopts the client's presence key: the connection id is derived from it and the clientId, so
   * only the holder of the key gets that id back. False (and answered) when the connection already
   * has another id.
   */
  #adoptKey(key: string | undefined, id: RequestId | undefined): boolean {
    if (key === undefined) return true;
    const derived = createHash('sha256')
      .update(this.#credentials.userId + '\u0000' + key)
      .digest('base64url')
      .slice(0, 16);
    if (this.#connectionId === undefined) {
      this.#connectionId = derived;
      this.#presenceKey = key;
      return true;
    }
    if (this.#connectionId === derived) return true;
    this.#fail(
      id,
      new ReplyError(
        ErrorCode.PRESENCE_KEY_MISMATCH,
        'this connection already has a presence identity (another presenceKey, or none)',
      ),
    );
    return false;
  }

  #memberCommand(cmd: MemberCommand): void {
    const { channel, id } = cmd;
    if (!this.#allowed('presence', channel, id)) return;
    if (!this.#node.presenceEnabled(channel)) {
      this.#fail(
        id,
        new ReplyError(
          ErrorCode.PRESENCE_DISABLED,
          `presence is not enabled for the namespace of ${channel}`,
        ),
      );
      return;
    }
    const limits = this.#presenceLimits;
    const dataJson = cmd.dataJson ?? (cmd.action === 'leave' ? '' : 'null');
    if (Buffer.byteLength(dataJson) > limits.maxDataBytes) {
      this.#fail(
        id,
        new ReplyError(
          ErrorCode.PRESENCE_DATA_TOO_LARGE,
          `member data is larger than ${limits.maxDataBytes} bytes`,
        ),
      );
      return;
    }
    if (!this.#adoptKey(cmd.presenceKey, id)) return;
    const entered = this.#entered.get(channel);
    if (cmd.action === 'leave') {
      if (entered === undefined) {
        this.#fail(id, new ReplyError(ErrorCode.PRESENCE_NOT_ENTERED, `not entered in ${channel}`));
        return;
      }
      if (!this.#admit(id)) return;
      this.#entered.delete(channel);
      this.#node.leave(channel, this.#memberKey(), this.#ownerId(), dataJson).then(
        (r) => {
          this.#inFlight--;
          if (id !== undefined) this.#send(encodeLeaveReply(id, r.offset));
        },
        (err: unknown) => {
          this.#inFlight--;
          this.#fail(id, toReplyError(err));
        },
      );
      return;
    }
    if (entered === undefined && this.#enteredExplicitly() >= limits.maxEntersPerConnection) {
      this.#fail(
        id,
        new ReplyError(
          ErrorCode.PRESENCE_TOO_MANY_ENTERS,
          `at most ${limits.maxEntersPerConnection} channels entered per connection`,
        ),
      );
      return;
    }
    if (!this.#admit(id)) return;
    const mark = { auto: false };
    this.#entered.set(channel, mark);
    this.#node.enter(channel, this.#localMember(dataJson), cmd.action).then(
      (offset) => {
        this.#inFlight--;
        if (this.#closed) return;
        if (id !== undefined)
          this.#send(
            encodeEnterReply(id, {
              clientId: this.#clientId(),
              connectionId: this.#connId(),
              offset,
            }),
          );
      },
      (err: unknown) => {
        this.#inFlight--;
        if (this.#entered.get(channel) === mark && entered === undefined)
          this.#entered.delete(channel);
        this.#fail(id, toReplyError(err));
      },
    );
  }

  #enteredExplicitly(): number {
    let n = 0;
    for (const e of this.#entered.values()) if (!e.auto) n++;
    return n;
  }

  #localMember(dataJson: string): LocalMember {
    return {
      key: this.#memberKey(),
      owner: this.#ownerId(),
      idJson: encodeMemberId(this.#clientId(), this.#connId()),
      dataJson,
    };
  }

  /**
   * Channels, presence streams and occupancy streams share one per-connection budget: each holds a
   * subscription and a slot in the fan-out. Fails the command with 106 when it is spent.
   */
  #underSubscriptionLimit(id: RequestId | undefined): boolean {
    const max = this.#ctx.limits.maxSubscriptions;
    if (this.#channels.size + this.#presenceStreams.size + this.#occupancyStreams.size < max)
      return true;
    this.#fail(
      id,
      new ReplyError(ErrorCode.LIMIT_EXCEEDED, `at most ${max} subscriptions per connection`),
    );
    return false;
  }

  #presenceStream(cmd: PresenceStreamCommand): void {
    const { channel, id } = cmd;
    if (cmd.action === 'presence-unsubscribe') {
      if (!this.#presenceStreams.delete(channel)) {
        this.#fail(
          id,
          new ReplyError(ErrorCode.NOT_SUBSCRIBED, `not subscribed to the presence of ${channel}`),
        );
        return;
      }
      this.#node.unsubscribePresence(this.#conn, channel);
      this.#ok(id);
      return;
    }
    if (!this.#allowed('presence', channel, id)) return;
    if (this.#presenceStreams.has(channel)) {
      this.#fail(
        id,
        new ReplyError(
          ErrorCode.ALREADY_SUBSCRIBED,
          `already subscribed to the presence of ${channel}`,
        ),
      );
      return;
    }
    if (!this.#underSubscriptionLimit(id)) return;
    if (!this.#admit(id)) return;
    this.#presenceStreams.add(channel);
    this.#node.subscribePresence(this.#conn, channel).then(
      ({ offset, epoch }) => {
        this.#inFlight--;
        if (this.#closed || !this.#presenceStreams.has(channel)) {
          this.#node.unsubscribePresence(this.#conn, channel);
        }
        if (id !== undefined) this.#send(encodePresenceSubscribeReply(id, { offset, epoch }));
      },
      (err: unknown) => {
        this.#inFlight--;
        this.#presenceStreams.delete(channel);
        this.#fail(id, toReplyError(err));
      },
    );
  }

  #occupancyStream(cmd: OccupancyStreamCommand): void {
    const { channel, id } = cmd;
    if (cmd.action === 'occupancy-unsubscribe') {
      if (!this.#occupancyStreams.delete(channel)) {
        this.#fail(
          id,
          new ReplyError(ErrorCode.NOT_SUBSCRIBED, `not subscribed to the occupancy of ${channel}`),
        );
        return;
      }
      this.#node.unsubscribeOccupancy(this.#conn, channel);
      this.#ok(id);
      return;
    }
    // Who is in a channel is for those who may listen to it.
    if (!this.#allowed('subscribe', channel, id)) return;
    if (this.#occupancyStreams.has(channel)) {
      this.#fail(
        id,
        new ReplyError(
          ErrorCode.ALREADY_SUBSCRIBED,
          `already subscribed to the occupancy of ${channel}`,
        ),
      );
      return;
    }
    if (!this.#underSubscriptionLimit(id)) return;
    if (!this.#admit(id)) return;
    this.#occupancyStreams.add(channel);
    this.#node.subscribeOccupancy(this.#conn, channel).then(
      (occupancy) => {
        this.#inFlight--;
        if (this.#closed || !this.#occupancyStreams.has(channel)) {
          this.#node.unsubscribeOccupancy(this.#conn, channel);
        }
        if (id !== undefined) this.#send(encodeOccupancyReply(id, occupancy));
      },
      (err: unknown) => {
        this.#inFlight--;
        this.#occupancyStreams.delete(channel);
        this.#fail(id, toReplyError(err));
      },
    );
  }

  #presence(cmd: PresenceCommand): void {
    if (!this.#allowed('presence', cmd.channel, cmd.id)) return;
    const after = cmd.cursor === undefined ? undefined : decodePresenceCursor(cmd.cursor);
    if (cmd.cursor !== undefined && after === undefined) {
      this.#fail(
        cmd.id,
        new ReplyError(ErrorCode.BAD_REQUEST, 'cursor is not one this server issued'),
      );
      return;
    }
    if (!this.#admit(cmd.id)) return;
    const id = cmd.id;
    this.#node
      .presence(cmd.channel, {
        limit: cmd.limit ?? DEFAULT_MEMBERS_PAGE,
        after,
        clientId: cmd.clientId,
      })
      .then(
        (page) => {
          this.#inFlight--;
          if (id === undefined || this.#closed) return;
          this.#send(
            encodePresenceReply(id, {
              channel: cmd.channel,
              members: page.members,
              offset: page.offset,
              epoch: page.epoch,
              next: page.next === null ? null : encodePresenceCursor(page.next),
            }),
          );
        },
        (err: unknown) => {
          this.#inFlight--;
          this.#fail(id, toReplyError(err));
        },
      );
  }

  #history(cmd: HistoryCommand): void {
    if (!this.#allowed('history', cmd.channel, cmd.id)) return;
    if (!this.#admit(cmd.id)) return;
    const id = cmd.id;
    this.#node.history(cmd.channel, cmd).then(
      (page) => {
        this.#inFlight--;
        if (id === undefined || this.#closed) return;
        this.#send(
          encodeHistoryReply(id, { frames: page.frames, position: page.position, next: page.next }),
        );
      },
      (err: unknown) => {
        this.#inFlight--;
        this.#fail(id, toReplyError(err));
      },
    );
  }

  #token(cmd: TokenCommand): void {
    if (this.#ctx.authenticator === undefined) {
      // Tokens are not configured: every connection is already allowed everything.
      this.#ok(cmd.id);
      return;
    }
    const connected = this.#credentials.kind === 'token';
    if (cmd.action === 'connect' && connected) {
      this.#fail(
        cmd.id,
        new ReplyError(
          ErrorCode.BAD_REQUEST,
          'already authenticated; use refresh to replace the token',
        ),
      );
      return;
    }
    if (cmd.action === 'refresh' && !connected) {
      this.#fail(cmd.id, new ReplyError(ErrorCode.BAD_REQUEST, 'nothing to refresh; use connect'));
      return;
    }
    if (!this.#admit(cmd.id)) return;
    // Commands sent right behind a connect must run with its credentials, not as anonymous.
    if (cmd.action === 'connect') this.#early = [];
    this.#verify(cmd.action, cmd.token, cmd.id).then(
      () => {
        this.#inFlight--;
        if (cmd.action === 'connect') this.#drainEarly();
      },
      () => this.#inFlight--,
    );
  }

  /**
   * Verifies a token and makes it the session's credentials. A failed connect ends the connection
   * with 3500 (the client must get other credentials); a failed refresh keeps the current ones.
   */
  async #verify(
    action: 'connect' | 'refresh',
    token: string,
    id: RequestId | undefined,
  ): Promise<void> {
    const authenticator = this.#ctx.authenticator;
    let creds: Credentials;
    let user: string | undefined;
    try {
      if (authenticator === undefined) throw new AuthError('tokens are not configured');
      creds = await authenticator.authenticate(token);
      user = creds.userId;
      // A revocation applied to this node's sessions while the store is read (its store write
      // raced the read) would otherwise miss this one, which is not registered yet.
      const watch = this.#ctx.registry.watch(creds);
      let revoked: boolean;
      try {
        revoked = (await this.#ctx.revocations.isRevoked(creds)) || watch.revoked;
      } finally {
        watch.end();
      }
      if (revoked) throw new AuthError('token revoked');
    } catch (err) {
      if (this.#closed) throw err;
      const message = err instanceof AuthError ? err.message : 'token could not be verified';
      const code = err instanceof AuthError ? ErrorCode.UNAUTHORIZED : ErrorCode.NOT_AVAILABLE;
      if (code === ErrorCode.UNAUTHORIZED)
        this.#loginRefused(action === 'connect' ? message : `refresh: ${message}`, user);
      this.#fail(id, new ReplyError(code, message));
      if (action === 'connect')
        this.#conn.close(
          code === ErrorCode.UNAUTHORIZED ? DisconnectCode.UNAUTHORIZED : DisconnectCode.SHUTDOWN,
          message,
        );
      throw err;
    }
    if (this.#closed) return;
    const previous = this.#credentials;
    if (action === 'refresh' && creds.userId !== previous.userId) {
      this.#fail(
        id,
        new ReplyError(ErrorCode.UNAUTHORIZED, 'a refreshed token must be for the same sub'),
      );
      return;
    }
    if (previous.kind !== 'token' && !this.#ctx.registry.track(this, creds.userId)) {
      this.#fail(
        id,
        new ReplyError(ErrorCode.LIMIT_EXCEEDED, 'too many connections for this user'),
      );
      this.#conn.close(DisconnectCode.TOO_MANY_CONNECTIONS, 'too many connections for this user');
      return;
    }
    this.#credentials = creds;
    clearTimeout(this.#authTimer);
    this.#scheduleExpiry(creds);
    if (action === 'refresh') this.#dropForbiddenSubscriptions();
    if (id !== undefined) {
      this.#send(encodeTokenReply(id, { client: creds.userId, expiresAt: creds.expiresAt }));
    }
  }

  #loginRefused(reason: string, user: string | undefined): void {
    this.#ctx.authLog?.refused(reason, {
      transport: this.#conn.transport,
      address: this.#address,
      user,
    });
  }

  #drainEarly(): void {
    const early = this.#early ?? [];
    this.#early = undefined;
    // Counted as received when they arrived: not again.
    for (const inbound of early) this.#take(inbound);
  }

  /** Asks for a refresh before the token expires; ends the connection with 3005 if none comes. */
  #scheduleExpiry(creds: Credentials): void {
    this.#refreshTimer?.clear();
    this.#expiryTimer?.clear();
    if (creds.expiresAt === undefined) return;
    const remaining = creds.expiresAt - Date.now();
    const lead = Math.min(this.#ctx.tokenRefreshLeadMs, Math.max(0, remaining / 2));
    // A token accepted only thanks to the clock leeway (its exp already past on our clock) lives
    // out the rest of the leeway, and is asked for a refresh at once: closing it at once left a
    // client whose clock is a little behind ours no chance to refresh.
    const life = remaining > 0 ? remaining : remaining + this.#ctx.tokenLeewayMs;
    this.#refreshTimer = setLongTimeout(
      () => this.#write(encodeRefreshEvent(creds.expiresAt)),
      remaining - lead,
    );
    this.#expiryTimer = setLongTimeout(
      () => this.#conn.close(DisconnectCode.TOKEN_EXPIRED, 'token expired'),
      life,
    );
  }

  /** After a refresh: channels the new token no longer allows are left, with a push saying why. */
  #dropForbiddenSubscriptions(): void {
    for (const channel of [...this.#occupancyStreams]) {
      if (this.#ctx.policy.allows(this.#credentials, 'subscribe', channel)) continue;
      this.#occupancyStreams.delete(channel);
      this.#node.unsubscribeOccupancy(this.#conn, channel);
      this.#write(encodeRevokedEvent('occupancy-unsubscribed', channel));
    }
    for (const channel of [...this.#channels]) {
      if (this.#ctx.policy.allows(this.#credentials, 'subscribe', channel)) continue;
      this.#channels.delete(channel);
      this.#leave(channel);
      this.#write(encodeRevokedEvent('unsubscribed', channel));
    }
    // Presence the new token no longer allows: the events stop and explicit members leave.
    for (const channel of new Set([...this.#presenceStreams, ...this.#entered.keys()])) {
      if (this.#ctx.policy.allows(this.#credentials, 'presence', channel)) continue;
      if (this.#presenceStreams.delete(channel))
        this.#node.unsubscribePresence(this.#conn, channel);
      const entered = this.#entered.get(channel);
      if (entered !== undefined && !entered.auto) {
        this.#entered.delete(channel);
        this.#node.leave(channel, this.#memberKey(), this.#ownerId()).catch(() => undefined);
      }
      this.#write(encodeRevokedEvent('presence-unsubscribed', channel));
    }
  }

  #takeToken(): boolean {
    const now = Date.now();
    const { commandsPerSecond, commandBurst } = this.#ctx.limits;
    this.#tokens = Math.min(
      commandBurst,
      this.#tokens + ((now - this.#tokensAt) * commandsPerSecond) / 1000,
    );
    this.#tokensAt = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /**
   * A command over the client's rate, refused without decoding it. Its request id is read cheaply
   * (peekRequestId) so that the client can match the refusal instead of waiting for a timeout;
   * commands without an id share one 111 per stretch over the rate: nobody waits on them, and an
   * error per frame cost the node a socket write per frame. A client that keeps sending over its
   * rate (more than twice its bucket refused within 10 s) is closed with 3011 FLOODING.
   */
  #refuse(id: RequestId | undefined): void {
    this.#ctx.metrics.commandRefused();
    const { commandsPerSecond } = this.#ctx.limits;
    if (id !== undefined || !this.#toldOverRate) {
      this.#toldOverRate = true;
      const message = `more than ${commandsPerSecond} commands per second`;
      this.#sendError(
        id === undefined
          ? { code: ErrorCode.TOO_MANY_REQUESTS, message }
          : { id, code: ErrorCode.TOO_MANY_REQUESTS, message },
      );
    }
    if (!this.#countRefusal()) this.#throttle();
  }

  /**
   * A frame the engine had no room for (the uws engine cannot stop reading a socket): refused
   * like one over the rate, so that the client hears of it and a flooder reaches 3011.
   */
  onDropped(text: string): void {
    this.#refuse(peekRequestId(text));
  }

  /**
   * Counts one command refused for the rate; closes the connection with 3011 (and reports its
   * address) once it is flooding. True when it closed.
   */
  #countRefusal(): boolean {
    const now = Date.now();
    if (now - this.#refusedSince > FLOOD_WINDOW_MS) {
      this.#refusedSince = now;
      this.#refused = 0;
    }
    if (++this.#refused <= Math.max(100, 2 * this.#ctx.limits.commandBurst)) return false;
    if (this.#flooding) return true;
    this.#flooding = true;
    this.#conn.close(DisconnectCode.FLOODING, 'too many commands over the rate limit');
    if (this.#address !== undefined) this.#ctx.onFlooding?.(this.#address);
    return true;
  }

  /**
   * Over its rate, a client is also stopped from sending more for a while: refusing each frame
   * still cost this node parsing and an error reply per frame, so one flooding client took most
   * of a core and raised everyone's latency (flood.test.ts). Reading resumes once the bucket has
   * refilled a quarter of a second's worth of commands (at most 1 s later); what the client sends
   * meanwhile waits in its own socket buffers.
   */
  #throttle(): void {
    const { commandsPerSecond, commandBurst } = this.#ctx.limits;
    const target = Math.max(1, Math.min(commandBurst, commandsPerSecond / 4));
    const ms = Math.min(1000, Math.ceil(((target - this.#tokens) * 1000) / commandsPerSecond));
    this.#conn.pauseReading?.(ms);
  }

  #admit(id: RequestId | undefined): boolean {
    if (this.#inFlight >= this.#ctx.limits.maxInFlight) {
      this.#fail(
        id,
        new ReplyError(
          ErrorCode.TOO_MANY_REQUESTS,
          `at most ${this.#ctx.limits.maxInFlight} commands in flight`,
        ),
      );
      return false;
    }
    this.#inFlight++;
    return true;
  }

  #ok(id: RequestId | undefined): void {
    if (id !== undefined) this.#send(this.#label(id, encodeOk(id)));
  }

  /** A reply frame (from the protocol encoders); none once the session closed. */
  #send(frame: string): void {
    if (this.#closed) return;
    this.#write(frame);
  }

  /** An answer to one of the server's own subscribes names its channel (see InboundCommand). */
  #label(id: RequestId | undefined, frame: string): string {
    if (id === undefined || this.#labels.size === 0) return frame;
    const channel = this.#labels.get(id);
    if (channel === undefined) return frame;
    this.#labels.delete(id);
    return labelReply(frame, channel);
  }

  #fail(id: RequestId | undefined, err: ReplyError): void {
    this.#sendError(
      id === undefined
        ? { code: err.code, message: err.message }
        : { id, code: err.code, message: err.message },
    );
  }

  /** Every control frame leaves through here, so its bytes are counted for its transport. */
  #write(text: string): void {
    this.#stats.bytes += Buffer.byteLength(text);
    this.#conn.sendText(text);
  }

  #sendError(err: CommandError): void {
    this.#ctx.metrics.errors.inc({ code: err.code });
    if (this.#closed) return;
    this.#write(this.#label(err.id, encodeError(err)));
  }
}

function idOf(decoded: DecodeResult): RequestId | undefined {
  return decoded.ok ? decoded.command.id : decoded.id;
}
