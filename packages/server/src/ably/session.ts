/**
 * One Ably SDK connection: the ProtocolMessage state machine over the same Node the native
 * protocol uses. Credentials come in the upgrade's query (`key=` or `access_token=`), and every
 * refusal is an ERROR frame on the accepted socket: refusing the upgrade makes the SDK retry
 * forever instead of failing.
 */
import { channelError, MAX_MESSAGE_ID_LENGTH, MAX_NAME_LENGTH } from '@switchboard/protocol';
import type { Logger } from 'pino';
import { ANONYMOUS, type Credentials, type Permission } from '../auth/auth.js';
import type { Revocable } from '../auth/registry.js';
import type { Connection, ConnectionHandler, RequestInfo } from '../engine/transport.js';
import { ReplyError } from '../errors.js';
import {
  Action,
  AblyCode,
  Flag,
  MODE_MASK,
  ablyError,
  decodeFrame,
  encodeJson,
  encodeMsgpack,
  type AblyErrorInfo,
  type Format,
  type ProtocolMessage,
} from './codec.js';
import type { AblyMeta } from './data.js';
import { toStored } from './data.js';
import {
  channelSerial,
  parseChannelSerial,
  type AblySubscriber,
  type ChannelFanout,
} from './fanout.js';
import type { AblyContext } from './context.js';
import { ConnectionMembers, type PresenceFanout, type PresenceSubscriber } from './presence.js';

/** Publishes one connection may have waiting for the broker; more are NACKed with 42910. */
const MAX_PENDING_PUBLISHES = 1024;
/** Channels one connection may attach at once (the native limit applies the same way). */
const PROTOCOL_VERSION = '6';

interface Attachment {
  /** The modes granted (ATTACHED flags). */
  modes: number;
  fanout: ChannelFanout | undefined;
  /** Set while the connection receives the channel's presence (SYNC, then events). */
  presence: PresenceFanout | undefined;
  /** Bumped by every ATTACH/DETACH so a slow attach that was overtaken does nothing. */
  generation: number;
}

interface Publishing {
  readonly msgSerial: number;
  readonly count: number;
  readonly result: Promise<{ serials: string[] } | AblyErrorInfo>;
}

export class AblySession
  implements ConnectionHandler, AblySubscriber, PresenceSubscriber, Revocable
{
  #id = '';
  readonly format: Format;
  readonly echo: boolean;
  readonly heartbeats: boolean;
  readonly #ctx: AblyContext;
  readonly #conn: Connection;
  readonly #log: Logger;
  #creds: Credentials | undefined;
  /** The credentials the session is registered under (revocations, per-user limit). */
  #tracked: Credentials | undefined;
  /** The key that signed the token: the connection may do only what both allow. */
  #limit: Credentials | undefined;
  #clientId: string | undefined;
  readonly #channels = new Map<string, Attachment>();
  /** ACKs go out in msgSerial order: the SDK completes every message below an ACKed serial. */
  #acks: Publishing[] = [];
  #closed = false;
  #renewTimer: NodeJS.Timeout | undefined;
  #expiryTimer: NodeJS.Timeout | undefined;
  /** The presence members this connection entered. */
  readonly #members: ConnectionMembers;

  constructor(ctx: AblyContext, conn: Connection, req: RequestInfo) {
    this.#ctx = ctx;
    this.#conn = conn;
    this.#log = ctx.logger;
    const q = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
    this.format = q.get('format') === 'msgpack' ? 'msgpack' : 'json';
    this.echo = q.get('echo') !== 'false';
    this.heartbeats = q.get('heartbeats') === 'true';
    const resumeKey = q.get('resume') ?? q.get('recover') ?? undefined;
    // The connectionId is known once authenticated (a resume may bring it back): read lazily.
    const id = (): string => this.#id;
    this.#members = new ConnectionMembers(
      ctx.node,
      {
        get connectionId() {
          return id();
        },
        clientId: () => this.#clientId,
        allows: (channel) => this.#allows('presence', channel),
      },
      ctx.presence,
    );
    const v = q.get('v');
    if (v !== null && v !== PROTOCOL_VERSION && v !== '5') {
      this.#fail(
        ablyError(
          AblyCode.UNSUPPORTED_VERSION,
          `protocol version ${v} is not supported; this server speaks v6`,
          400,
        ),
      );
      return;
    }
    const requestedClientId = q.get('clientId') ?? undefined;
    void this.#start(q, requestedClientId, resumeKey).catch((err: unknown) => {
      this.#log.error({ err }, 'ably connection start failed');
      this.#fail(ablyError(AblyCode.INTERNAL, 'internal error', 500));
    });
  }

  get connectionId(): string {
    return this.#id;
  }

  async #start(
    q: URLSearchParams,
    requestedClientId: string | undefined,
    resumeKey: string | undefined,
  ): Promise<void> {
    const ctx = this.#ctx;
    const ok = await this.#authenticate(q, requestedClientId);
    if (!ok || this.#closed) return;
    const resumed = resumeKey === undefined ? undefined : await this.#resumable(resumeKey);
    if (this.#closed) return;
    this.#id = resumed ?? ctx.connections.newId();
    ctx.add(this);
    ctx.store
      .save(this.#id, { clientId: this.#clientId, serverId: ctx.serverId }, ctx.liveTtlMs)
      .catch((err: unknown) => this.#log.warn({ err }, 'ably connection state not saved'));
    const details: Record<string, unknown> = {
      connectionKey: ctx.connections.keyFor(this.#id),
      maxMessageSize: ctx.maxMessageSize,
      maxInboundRate: ctx.maxInboundRate,
      maxFrameSize: ctx.maxMessageSize,
      connectionStateTtl: ctx.connectionStateTtlMs,
      maxIdleInterval: ctx.maxIdleIntervalMs,
      serverId: ctx.serverId,
    };
    if (this.#clientId !== undefined) details['clientId'] = this.#clientId;
    const connected: ProtocolMessage = {
      action: Action.CONNECTED,
      connectionId: this.#id,
      connectionDetails: details,
    };
    if (resumeKey !== undefined && resumed === undefined) {
      // The SDK sees the new connectionId and resets; channels still re-attach with their
      // channelSerial, and each is resumed on its own when history holds the gap.
      connected.error = ablyError(
        AblyCode.CONNECTION_EXPIRED,
        'Unable to recover connection: connection expired or not recognised',
        400,
      );
    }
    this.#send(connected);
  }

  /**
   * The connectionId a resume or recover key gets back: the key must be one this cluster issued
   * (its HMAC) and the connection must still exist in the shared store (not expired, not
   * CLOSEd) under the same clientId. With the store unreachable the key alone decides: a resume
   * then still works, it only cannot tell an expired connection.
   */
  async #resumable(key: string): Promise<string | undefined> {
    const id = this.#ctx.connections.verify(key);
    if (id === undefined) return undefined;
    let record;
    try {
      record = await this.#ctx.store.get(id);
    } catch (err) {
      this.#log.warn({ err }, 'ably connection state unavailable; resuming on the key alone');
      return id;
    }
    if (record === undefined) return undefined;
    if ((record.clientId ?? undefined) !== this.#clientId) return undefined;
    return id;
  }

  get clientId(): string | undefined {
    return this.#clientId;
  }

  async #authenticate(q: URLSearchParams, requestedClientId: string | undefined): Promise<boolean> {
    const auth = await this.#ctx.auth.connect(q.get('key'), q.get('access_token'));
    if (this.#closed) return false;
    if ('error' in auth) {
      this.#fail(auth.error);
      return false;
    }
    const refused = await this.#admit(auth.credentials);
    if (refused !== undefined) {
      this.#fail(refused);
      return false;
    }
    this.#creds = auth.credentials;
    this.#limit = auth.limit;
    this.#armExpiry();
    const granted = auth.clientId;
    if (
      granted !== undefined &&
      granted !== '*' &&
      requestedClientId !== undefined &&
      requestedClientId !== granted
    ) {
      this.#fail(
        ablyError(
          AblyCode.INCOMPATIBLE_CLIENT_ID,
          `clientId ${requestedClientId} does not match the token's ${granted}`,
          401,
        ),
      );
      return false;
    }
    this.#clientId = granted === '*' || granted === undefined ? requestedClientId : granted;
    return true;
  }

  /**
   * Registers the credentials for revocation. A revoked token at connect (or in AUTH) fails the
   * connection with 40101, not a token error: the SDK would renew and retry for as long as the
   * app hands it tokens the revocation covers.
   */
  async #admit(creds: Credentials): Promise<AblyErrorInfo | undefined> {
    const why = await this.#ctx.admit(this, creds);
    if (why === undefined) {
      if (creds.kind !== 'token') return undefined;
      if (this.#closed) {
        this.#ctx.release(this, creds);
        return undefined;
      }
      // Registered under the new user first: the same user keeps its one entry.
      if (this.#tracked !== undefined && this.#tracked.userId !== creds.userId)
        this.#ctx.release(this, this.#tracked);
      this.#tracked = creds;
      return undefined;
    }
    if (why === 'revoked') return ablyError(AblyCode.INVALID_CREDENTIALS, 'Token revoked', 401);
    if (why === 'unavailable')
      return ablyError(AblyCode.UNAVAILABLE, 'credentials could not be checked, retry', 503);
    return ablyError(AblyCode.RATE_LIMITED, 'too many connections for this user', 429);
  }

  get credentials(): Credentials {
    return this.#creds ?? ANONYMOUS;
  }

  /**
   * The credentials were revoked (on any node). DISCONNECTED 40141 is a token error: the SDK
   * asks its authCallback/authUrl for a new token once and resumes with it; a token the
   * revocation also covers is then refused with 40101 and the SDK fails instead of looping.
   */
  revoke(reason: string): void {
    this.disconnect(ablyError(AblyCode.TOKEN_REVOKED, `Token revoked (${reason})`, 401));
  }

  // ---- frames in ----

  onFrame(text: string): void {
    this.#handle(text);
  }

  onBinary(data: Buffer): void {
    this.#handle(data);
  }

  onClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#teardown('keep');
  }

  #handle(data: string | Buffer): void {
    if (this.#closed) return;
    const pm = decodeFrame(data);
    if (typeof pm === 'string') {
      this.#fail(ablyError(AblyCode.BAD_REQUEST, `invalid ProtocolMessage: ${pm}`, 400));
      return;
    }
    if (this.#creds === undefined) {
      // Nothing is due before CONNECTED; the SDK sends nothing either.
      if (pm.action === Action.CLOSE || pm.action === Action.DISCONNECT) this.#end(pm.action);
      return;
    }
    switch (pm.action) {
      case Action.HEARTBEAT:
        this.#send(pm.id === undefined ? { action: 0 } : { action: 0, id: pm.id });
        return;
      case Action.CLOSE:
      case Action.DISCONNECT:
        this.#end(pm.action);
        return;
      case Action.ATTACH:
        this.#attach(pm);
        return;
      case Action.DETACH:
        this.#detach(pm);
        return;
      case Action.MESSAGE:
        this.#publish(pm);
        return;
      case Action.AUTH:
        this.#reauth(pm);
        return;
      case Action.PRESENCE:
        this.#presence(pm);
        return;
      default:
        this.#channelOrConnectionError(
          pm,
          ablyError(AblyCode.BAD_REQUEST, `unexpected action ${pm.action}`, 400),
        );
    }
  }

  // ---- channels ----

  #attach(pm: ProtocolMessage): void {
    const channel = pm.channel;
    const bad = channelError(channel);
    if (channel === undefined || bad !== undefined) {
      this.#channelOrConnectionError(
        pm,
        ablyError(AblyCode.INVALID_CHANNEL_NAME, bad ?? 'channel is required', 400),
      );
      return;
    }
    const granted = this.#modesFor(channel);
    const requested =
      typeof pm.flags === 'number' && (pm.flags & MODE_MASK) !== 0
        ? pm.flags & MODE_MASK
        : MODE_MASK;
    const modes = granted & requested;
    if (granted === 0) {
      this.#send({
        action: Action.ERROR,
        channel,
        error: ablyError(
          AblyCode.CHANNEL_DENIED,
          `Channel denied access based on given capability; channel = ${channel}`,
          401,
        ),
      });
      return;
    }
    let att = this.#channels.get(channel);
    if (att === undefined) {
      if (this.#channels.size >= this.#ctx.maxChannels) {
        this.#send({
          action: Action.ERROR,
          channel,
          error: ablyError(
            AblyCode.RATE_LIMITED,
            `at most ${this.#ctx.maxChannels} channels per connection`,
            429,
          ),
        });
        return;
      }
      att = { modes, fanout: undefined, presence: undefined, generation: 0 };
      this.#channels.set(channel, att);
    } else {
      att.fanout?.leave(this);
      att.fanout = undefined;
      att.presence?.leave(this);
      att.presence = undefined;
    }
    att.modes = modes;
    const generation = ++att.generation;
    const presence = this.#joinPresence(channel, att, modes);
    const params = pm.params ?? {};
    const rewind = Number.parseInt(params['rewind'] ?? '0', 10);
    const since = parseChannelSerial(pm.channelSerial);
    if ((modes & Flag.SUBSCRIBE) === 0) {
      // No messages to deliver: answer with the channel's current position.
      void Promise.all([this.#ctx.node.broker.history(channel, { limit: 0 }), presence]).then(
        ([h, hasPresence]) => {
          if (att.generation !== generation || this.#closed) return;
          this.#attached(
            channel,
            modes,
            channelSerial(h.position.epoch, h.position.offset),
            hasPresence ? Flag.HAS_PRESENCE : 0,
            params,
          );
          if (hasPresence) this.#sync(att);
        },
        () => this.#attachFailed(channel, att, generation),
      );
      return;
    }
    const fanout = this.#ctx.fanout(channel);
    att.fanout = fanout;
    Promise.all([
      fanout.join(
        this,
        since,
        Number.isFinite(rewind) && rewind > 0 ? rewind : 0,
        this.#ctx.maxReplay,
      ),
      presence,
    ]).then(
      ([r, hasPresence]) => {
        if (att.generation !== generation || this.#closed) {
          fanout.leave(this);
          return;
        }
        let flags = hasPresence ? Flag.HAS_PRESENCE : 0;
        if (since !== undefined && r.resumed) flags |= Flag.RESUMED;
        if (rewind > 0 && r.replay.length > 0) flags |= Flag.HAS_BACKLOG;
        this.#attached(
          channel,
          modes,
          channelSerial(r.position.epoch, r.position.offset),
          flags,
          params,
        );
        for (const d of r.replay) {
          if (!this.echo && d.publisher === this.connectionId) continue;
          this.write(d.frame(this.format));
        }
        fanout.live(this);
        if (hasPresence) this.#sync(att);
      },
      (err: unknown) => {
        if (att.fanout === fanout) att.fanout = undefined;
        this.#log.debug({ err, channel }, 'ably attach failed');
        this.#attachFailed(channel, att, generation);
      },
    );
  }

  /**
   * Joins the channel's presence when the connection may read it and the namespace keeps it;
   * resolves whether ATTACHED carries HAS_PRESENCE (a SYNC follows it). Events are held from now
   * until the SYNC is sent. Never rejects: a store that cannot be reached fails the attach.
   */
  #joinPresence(channel: string, att: Attachment, modes: number): Promise<boolean> {
    if ((modes & Flag.PRESENCE_SUBSCRIBE) === 0 || !this.#ctx.node.presenceEnabled(channel))
      return Promise.resolve(false);
    const pf = this.#ctx.presenceFanout(channel);
    att.presence = pf;
    const generation = att.generation;
    return pf.join(this).then(
      () => {
        // Overtaken by a DETACH or another ATTACH, or the connection ended meanwhile.
        if (att.generation !== generation || this.#closed || att.presence !== pf) {
          pf.leave(this);
          return false;
        }
        return true;
      },
      (err: unknown) => {
        if (att.presence === pf) att.presence = undefined;
        throw err;
      },
    );
  }

  #sync(att: Attachment): void {
    void att.presence?.sync(this);
  }

  #attached(
    channel: string,
    modes: number,
    serial: string,
    flags: number,
    params: Record<string, string>,
  ): void {
    const pm: ProtocolMessage = {
      action: Action.ATTACHED,
      channel,
      channelSerial: serial,
      flags: modes | flags,
    };
    if (Object.keys(params).length > 0) pm.params = params;
    this.#send(pm);
  }

  #attachFailed(channel: string, att: Attachment, generation: number): void {
    if (att.generation !== generation || this.#closed) return;
    att.fanout?.leave(this);
    att.presence?.leave(this);
    this.#channels.delete(channel);
    // DETACHED with an error sends an attached channel back to attaching, an attaching one to
    // suspended: the SDK retries later, which is right for a broker that is briefly down.
    this.#send({
      action: Action.DETACHED,
      channel,
      error: ablyError(AblyCode.UNAVAILABLE, 'channel backend unavailable, retry later', 503),
    });
  }

  #detach(pm: ProtocolMessage): void {
    const channel = pm.channel;
    if (typeof channel !== 'string') {
      this.#channelOrConnectionError(
        pm,
        ablyError(AblyCode.BAD_REQUEST, 'channel is required', 400),
      );
      return;
    }
    const att = this.#channels.get(channel);
    if (att !== undefined) {
      att.generation++;
      att.fanout?.leave(this);
      att.presence?.leave(this);
      this.#channels.delete(channel);
    }
    // Ably semantics: a detached channel's members of this connection leave.
    this.#members.leaveChannel(channel);
    this.#send({ action: Action.DETACHED, channel });
  }

  /** The channel's stream could not be kept whole: the SDK re-attaches with its channelSerial. */
  lost(channel: string, reason: string): void {
    const att = this.#channels.get(channel);
    if (att === undefined) return;
    att.generation++;
    att.fanout?.leave(this);
    att.fanout = undefined;
    att.presence?.leave(this);
    att.presence = undefined;
    this.#channels.delete(channel);
    this.#send({
      action: Action.DETACHED,
      channel,
      error: ablyError(AblyCode.UNAVAILABLE, reason, 503),
    });
  }

  #modesFor(channel: string): number {
    let modes = 0;
    if (this.#allows('subscribe', channel)) modes |= Flag.SUBSCRIBE;
    if (this.#allows('publish', channel)) modes |= Flag.PUBLISH;
    if (this.#allows('presence', channel)) modes |= Flag.PRESENCE;
    if (this.#allows('subscribe', channel) || this.#allows('presence', channel))
      modes |= Flag.PRESENCE_SUBSCRIBE;
    return modes;
  }

  #allows(permission: Permission, channel: string): boolean {
    const creds = this.#creds;
    if (creds === undefined || !this.#ctx.policy.allows(creds, permission, channel)) return false;
    return this.#limit === undefined || this.#ctx.policy.allows(this.#limit, permission, channel);
  }

  // ---- publish ----

  #publish(pm: ProtocolMessage): void {
    const channel = pm.channel;
    const msgSerial = pm.msgSerial;
    if (typeof msgSerial !== 'number') {
      this.#fail(ablyError(AblyCode.BAD_REQUEST, 'MESSAGE without msgSerial', 400));
      return;
    }
    const bad = channelError(channel);
    if (channel === undefined || bad !== undefined) {
      this.#nack(pm, ablyError(AblyCode.INVALID_CHANNEL_NAME, bad ?? 'channel is required', 400));
      return;
    }
    if (!this.#allows('publish', channel)) {
      this.#nack(
        pm,
        ablyError(
          AblyCode.OPERATION_DENIED,
          `Unable to perform channel operation (permission denied); channel = ${channel}`,
          401,
        ),
      );
      return;
    }
    if (!Array.isArray(pm.messages) || pm.messages.length === 0) {
      this.#nack(pm, ablyError(AblyCode.BAD_REQUEST, 'MESSAGE needs a messages array', 400));
      return;
    }
    if (this.#acks.length >= MAX_PENDING_PUBLISHES) {
      this.#nack(pm, ablyError(AblyCode.RATE_LIMITED, 'too many publishes in flight', 429));
      return;
    }
    const inputs = [];
    let size = 0;
    for (const [i, raw] of pm.messages.entries()) {
      const m =
        typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>) : undefined;
      const err = m === undefined ? 'each message must be an object' : undefined;
      if (err !== undefined || m === undefined) {
        this.#nack(pm, ablyError(AblyCode.BAD_REQUEST, err ?? 'bad message', 400));
        return;
      }
      const stored = toStored(m['data'], m['encoding']);
      if (typeof stored === 'string') {
        this.#nack(pm, ablyError(AblyCode.INVALID_MESSAGE_DATA, stored, 400));
        return;
      }
      const name = m['name'];
      if (
        name !== undefined &&
        name !== null &&
        (typeof name !== 'string' || name.length > MAX_NAME_LENGTH)
      ) {
        this.#nack(
          pm,
          ablyError(
            AblyCode.BAD_REQUEST,
            `name must be a string of at most ${MAX_NAME_LENGTH} characters`,
            400,
          ),
        );
        return;
      }
      const id = m['id'];
      if (
        id !== undefined &&
        id !== null &&
        (typeof id !== 'string' || id.length === 0 || id.length > MAX_MESSAGE_ID_LENGTH)
      ) {
        this.#nack(
          pm,
          ablyError(
            AblyCode.BAD_REQUEST,
            `id must be a string of 1-${MAX_MESSAGE_ID_LENGTH} characters`,
            400,
          ),
        );
        return;
      }
      const clientId = m['clientId'];
      if (clientId !== undefined && clientId !== null) {
        if (
          typeof clientId !== 'string' ||
          (this.#clientId !== undefined && clientId !== this.#clientId)
        ) {
          this.#nack(
            pm,
            ablyError(
              40012,
              `clientId ${JSON.stringify(clientId)} does not match the connection's`,
              400,
            ),
          );
          return;
        }
      }
      const meta: AblyMeta = { ...stored.meta, connectionId: this.connectionId };
      const who = typeof clientId === 'string' ? clientId : this.#clientId;
      if (who !== undefined) meta.clientId = who;
      if (m['extras'] !== undefined && m['extras'] !== null) meta.extras = m['extras'];
      const ably = JSON.stringify(meta);
      size += stored.dataJson.length + ably.length + (typeof name === 'string' ? name.length : 0);
      inputs.push({
        channel,
        dataJson: stored.dataJson,
        ...(typeof name === 'string' ? { name } : {}),
        // The dedupe key: a publish the SDK resends after a resume carries the same msgSerial,
        // so it is stored once and ACKed with the original serial.
        id: typeof id === 'string' ? id : `${this.connectionId}:${msgSerial}:${i}`,
        ably,
      });
    }
    if (size > this.#ctx.maxMessageSize) {
      this.#nack(
        pm,
        ablyError(
          AblyCode.TOO_BIG,
          `messages exceed maxMessageSize ${this.#ctx.maxMessageSize}`,
          400,
        ),
      );
      return;
    }
    const node = this.#ctx.node;
    const result = Promise.all(inputs.map((input) => node.publish(input, 'ably'))).then(
      (published) => ({
        serials: published.map((p) => channelSerial(p.epoch, p.offset)),
      }),
      (err: unknown) =>
        err instanceof ReplyError && err.temporary
          ? ablyError(AblyCode.UNAVAILABLE, err.message, 503)
          : ablyError(AblyCode.INTERNAL, 'message could not be stored', 500),
    );
    this.#queueAck({ msgSerial, count: 1, result });
  }

  /** ENTER/UPDATE/LEAVE: ACKed once the store applied every change (the echo comes from it). */
  #presence(pm: ProtocolMessage): void {
    if (typeof pm.msgSerial !== 'number') {
      this.#fail(ablyError(AblyCode.BAD_REQUEST, 'PRESENCE without msgSerial', 400));
      return;
    }
    const channel = pm.channel;
    const bad = channelError(channel);
    if (channel === undefined || bad !== undefined) {
      this.#nack(pm, ablyError(AblyCode.INVALID_CHANNEL_NAME, bad ?? 'channel is required', 400));
      return;
    }
    if (this.#acks.length >= MAX_PENDING_PUBLISHES) {
      this.#nack(pm, ablyError(AblyCode.RATE_LIMITED, 'too many publishes in flight', 429));
      return;
    }
    this.#queueAck({ msgSerial: pm.msgSerial, count: 1, result: this.#members.apply(pm) });
  }

  #nack(pm: ProtocolMessage, error: AblyErrorInfo): void {
    if (typeof pm.msgSerial !== 'number') {
      this.#channelOrConnectionError(pm, error);
      return;
    }
    this.#queueAck({ msgSerial: pm.msgSerial, count: 1, result: Promise.resolve(error) });
  }

  #queueAck(p: Publishing): void {
    this.#acks.push(p);
    if (this.#acks.length === 1) void this.#drainAcks();
  }

  async #drainAcks(): Promise<void> {
    while (this.#acks.length > 0) {
      const head = this.#acks[0] as Publishing;
      const r = await head.result;
      this.#acks.shift();
      if (this.#closed) continue;
      if ('serials' in r) {
        const ack: ProtocolMessage = {
          action: Action.ACK,
          msgSerial: head.msgSerial,
          count: head.count,
        };
        // A presence change has no serials (the SDK needs no `res` for it).
        if (r.serials.length > 0) ack.res = [{ serials: r.serials }];
        this.#send(ack);
      } else {
        this.#send({ action: Action.NACK, msgSerial: head.msgSerial, count: head.count, error: r });
      }
    }
  }

  // ---- auth ----

  #reauth(pm: ProtocolMessage): void {
    const token = pm.auth?.accessToken;
    void this.#ctx.auth.connect(null, typeof token === 'string' ? token : null).then((auth) => {
      if (this.#closed) return;
      if ('error' in auth) {
        this.#fail(auth.error);
        return;
      }
      if (
        auth.clientId !== undefined &&
        auth.clientId !== '*' &&
        this.#clientId !== undefined &&
        auth.clientId !== this.#clientId
      ) {
        this.#fail(
          ablyError(AblyCode.INCOMPATIBLE_CLIENT_ID, 'the new token has another clientId', 401),
        );
        return;
      }
      void this.#admit(auth.credentials).then((refused) => {
        if (this.#closed) return;
        if (refused !== undefined) {
          this.#fail(refused);
          return;
        }
        this.#renewed(auth);
      });
    });
  }

  #renewed(auth: { credentials: Credentials; limit?: Credentials | undefined }): void {
    this.#creds = auth.credentials;
    this.#limit = auth.limit;
    this.#armExpiry();
    // Members the new token no longer allows leave (as on the native protocol).
    for (const channel of this.#members.channels())
      if (!this.#allows('presence', channel)) this.#members.leaveChannel(channel);
    // The SDK does not adopt the key of an AUTH reply (it resumes with the older one): the key
    // is derived from the connectionId, so both are the same.
    const details: Record<string, unknown> = {
      connectionKey: this.#ctx.connections.keyFor(this.connectionId),
      maxMessageSize: this.#ctx.maxMessageSize,
      connectionStateTtl: this.#ctx.connectionStateTtlMs,
      maxIdleInterval: this.#ctx.maxIdleIntervalMs,
      serverId: this.#ctx.serverId,
    };
    if (this.#clientId !== undefined) details['clientId'] = this.#clientId;
    this.#send({
      action: Action.CONNECTED,
      connectionId: this.connectionId,
      connectionDetails: details,
    });
  }

  // ---- frames out ----

  joinTopic(topic: string): boolean {
    if (this.#closed || this.#conn.joinTopic === undefined) return false;
    this.#conn.joinTopic(topic);
    return true;
  }

  leaveTopic(topic: string): void {
    if (!this.#closed) this.#conn.leaveTopic?.(topic);
  }

  write(frame: string | Buffer): void {
    if (this.#closed) return;
    if (typeof frame === 'string') this.#conn.sendText(frame);
    else this.#conn.sendBinary?.(frame);
  }

  #send(pm: ProtocolMessage): void {
    this.write(this.format === 'json' ? encodeJson(pm) : encodeMsgpack(pm));
  }

  /** Heartbeat for browsers (heartbeats=true): they cannot see WebSocket pings. */
  heartbeat(): void {
    if (this.#creds !== undefined) this.#send({ action: Action.HEARTBEAT });
  }

  #channelOrConnectionError(pm: ProtocolMessage, error: AblyErrorInfo): void {
    if (typeof pm.channel === 'string' && pm.channel !== '') {
      this.#send({ action: Action.ERROR, channel: pm.channel, error });
      return;
    }
    this.#fail(error);
  }

  /** A connection-level ERROR: the SDK goes `failed` (or renews on 4014x); the socket ends. */
  #fail(error: AblyErrorInfo): void {
    if (this.#closed) return;
    this.#send({ action: Action.ERROR, error });
    this.#closed = true;
    // A failed connection is never resumed: its members leave now.
    this.#teardown('drop');
    this.#conn.close(1000, 'error');
  }

  #end(action: number): void {
    if (action === Action.CLOSE) this.#send({ action: Action.CLOSED });
    this.#closed = true;
    // CLOSE is an explicit end (the SDK will not resume): its members leave now.
    this.#teardown(action === Action.CLOSE ? 'drop' : 'keep');
    this.#conn.close(1000, action === Action.CLOSE ? 'closed' : 'disconnected');
  }

  /** Server-side DISCONNECTED (shutdown, another transport took the connection over). */
  disconnect(error: AblyErrorInfo): void {
    if (this.#closed) return;
    this.#send({ action: Action.DISCONNECTED, error });
    this.#closed = true;
    this.#teardown('keep');
    this.#conn.close(1000, 'disconnected');
  }

  /**
   * A token connection is asked for a new token (AUTH) ahead of expiry, and is DISCONNECTED with
   * 40142 when it expires without one: the SDK renews and resumes.
   */
  #armExpiry(): void {
    clearTimeout(this.#renewTimer);
    clearTimeout(this.#expiryTimer);
    const exp = this.#creds?.expiresAt;
    if (exp === undefined) return;
    const left = exp - Date.now();
    // Past setTimeout's range (24.8 days) a timer would fire at once; such a token is refused
    // by nothing here, but the connection is not asked to renew it either.
    if (left > 2_000_000_000) return;
    const lead = Math.min(30_000, Math.floor(left / 3));
    this.#renewTimer = setTimeout(
      () => this.#send({ action: Action.AUTH }),
      Math.max(0, left - lead),
    );
    this.#expiryTimer = setTimeout(
      () => this.disconnect(ablyError(AblyCode.TOKEN_EXPIRED, 'Token expired', 401)),
      Math.max(0, left),
    );
  }

  /**
   * `keep`: the transport is gone but the connection lives on for connectionStateTtl (a resume
   * may come to any node) and its presence members wait presenceGraceMs for it; `drop`: CLOSE or
   * a fatal ERROR ended the connection itself and its members leave at once.
   */
  #teardown(state: 'keep' | 'drop'): void {
    const ctx = this.#ctx;
    if (this.#id !== '' && ctx.sessions.get(this.#id) === this) {
      const write =
        state === 'keep'
          ? ctx.store.refresh([this.#id], ctx.connectionStateTtlMs)
          : ctx.store.delete(this.#id);
      write.catch((err: unknown) => this.#log.warn({ err }, 'ably connection state not written'));
    }
    clearTimeout(this.#renewTimer);
    clearTimeout(this.#expiryTimer);
    for (const att of this.#channels.values()) {
      att.generation++;
      att.fanout?.leave(this);
      att.presence?.leave(this);
    }
    this.#members.end(state === 'drop');
    this.#channels.clear();
    this.#acks = [];
    if (this.#tracked !== undefined) this.#ctx.release(this, this.#tracked);
    this.#tracked = undefined;
    this.#ctx.remove(this);
  }
}
