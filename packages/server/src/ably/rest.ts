/**
 * The REST calls `Ably.Rest` (and realtime `channel.history()`) makes, without Switchboard's
 * `/v1` prefix: `/time`, channel publish and history (Link paging, backwards by default), channel
 * status, presence members (presence.ts), stats, `requestToken`, and the connectivity
 * check. Content is negotiated: JSON or msgpack by Accept / Content-Type. Errors are Ably bodies
 * with exactly `application/json` (the SDK reads no other) and `x-ably-errorcode` headers.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { channelError, MAX_MESSAGE_ID_LENGTH } from '@switchboard/protocol';
import { readRawBody } from '../api/body.js';
import type { Permission } from '../auth/auth.js';
import { ReplyError } from '../errors.js';
import {
  decodePresenceCursor,
  DEFAULT_MEMBERS_PAGE,
  encodePresenceCursor,
} from '../presence/presence.js';
import type { AblyAuthResult } from './auth.js';
import { AblyCode, ablyError, packValue, unpackValue, type AblyErrorInfo } from './codec.js';
import type { AblyContext } from './context.js';
import { toStored, type AblyMeta } from './data.js';
import { channelSerial, parseFrame } from './fanout.js';
import { PresenceAction, toPresenceMessage } from './presence.js';

const JSON_TYPE = 'application/json';
const MSGPACK_TYPE = 'application/x-msgpack';
/** REST requests answered 401 with a token error per address and key per second before 429. */
const MAX_TOKEN_ERRORS_PER_SECOND = 10;
/** How long an Authorization header that drew a token error is answered from memory. */
const STALE_HEADER_MS = 10_000;
/** Bounds of the two tables; past them the oldest entries go (or, for counters, everyone waits). */
const MAX_STALE_HEADERS = 1024;
const MAX_LIMITED = 10_000;
/** Seconds in Retry-After of a 42910: the counters are per second. */
const RETRY_AFTER_S = 1;
const MAX_HISTORY_LIMIT = 1000;

export interface AblyRestOptions {
  readonly maxBodyBytes: number;
  /** CORS: the allowed Origin for a request, null without one, or undefined when refused. */
  readonly origin: (req: IncomingMessage) => string | null | undefined;
}

class HttpError extends Error {
  readonly info: AblyErrorInfo;
  readonly retryAfterS: number | undefined;
  constructor(info: AblyErrorInfo, retryAfterS?: number) {
    super(info.message);
    this.info = info;
    this.retryAfterS = retryAfterS;
  }
}

export class AblyRest {
  readonly #ctx: AblyContext;
  readonly #o: AblyRestOptions;
  #second = 0;
  #tokenErrors = new Map<string, number>();
  /** Authorization header → its token error and the limiter's key, insertion-ordered (LRU). */
  readonly #stale = new Map<string, { info: AblyErrorInfo; until: number; key: string }>();

  constructor(ctx: AblyContext, o: AblyRestOptions) {
    this.#ctx = ctx;
    this.#o = o;
  }

  /** A request listener serving the Ably routes and passing any other request on. */
  before(
    next: (req: IncomingMessage, res: ServerResponse) => void,
  ): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => {
      const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
      if (!isAblyPath(path)) {
        next(req, res);
        return;
      }
      this.#handle(req, res, path).catch((err: unknown) => {
        const info =
          err instanceof HttpError
            ? err.info
            : err instanceof ReplyError && err.temporary
              ? ablyError(AblyCode.UNAVAILABLE, err.message, 503)
              : ablyError(AblyCode.INTERNAL, 'internal error', 500);
        if (!(err instanceof HttpError) && !(err instanceof ReplyError))
          this.#ctx.logger.error({ err, path }, 'ably REST handler failed');
        if (err instanceof HttpError && err.retryAfterS !== undefined)
          res.setHeader('retry-after', String(err.retryAfterS));
        this.#error(req, res, info);
      });
    };
  }

  async #handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = req.method ?? 'GET';
    const origin = this.#o.origin(req);
    if (origin === undefined)
      throw new HttpError(ablyError(AblyCode.OPERATION_DENIED, 'origin not allowed', 403));
    if (origin !== null) {
      // The browser SDK sends its Authorization with XHR withCredentials: the grant must name the
      // page's origin (never `*`) and allow credentials, on the preflight and the request.
      res.setHeader('access-control-allow-origin', req.headers.origin ?? origin);
      res.setHeader('access-control-allow-credentials', 'true');
      res.setHeader('access-control-expose-headers', 'Link, x-ably-errorcode, x-ably-errormessage');
      res.setHeader('vary', 'Origin');
    }
    if (method === 'OPTIONS') {
      res.setHeader('access-control-allow-methods', 'GET, POST, OPTIONS');
      res.setHeader(
        'access-control-allow-headers',
        'authorization, content-type, accept, x-ably-version, x-ably-clientid, ably-agent',
      );
      res.setHeader('access-control-max-age', '600');
      res.writeHead(204).end();
      return;
    }
    if (path === '/is-the-internet-up.txt') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('yes\n');
      return;
    }
    if (path === '/time' && method === 'GET') {
      this.#reply(req, res, 200, [Date.now()]);
      return;
    }
    const keyRoute = /^\/keys\/([^/]+)\/requestToken$/.exec(path);
    if (keyRoute !== null && method === 'POST') {
      const body = await this.#body(req);
      if (typeof body !== 'object' || body === null || Array.isArray(body))
        throw new HttpError(ablyError(AblyCode.BAD_REQUEST, 'TokenRequest must be an object', 400));
      const keyName = decode(keyRoute[1] as string);
      const out = await this.#ctx.auth.issue(body as Record<string, unknown>, keyName, Date.now());
      if ('code' in out) throw new HttpError(out as AblyErrorInfo);
      this.#reply(req, res, 200, out);
      return;
    }
    const auth = await this.#authenticate(req);
    if (path === '/stats' && method === 'GET') {
      // Switchboard keeps no per-app usage statistics: an honest empty page.
      this.#reply(req, res, 200, []);
      return;
    }
    const m = /^\/channels\/([^/]+)(\/messages|\/presence|\/presence\/history)?$/.exec(path);
    if (m === null)
      throw new HttpError(ablyError(AblyCode.BAD_REQUEST, `no route for ${method} ${path}`, 404));
    const channel = decode(m[1] as string);
    const bad = channelError(channel);
    if (bad !== undefined) throw new HttpError(ablyError(AblyCode.INVALID_CHANNEL_NAME, bad, 400));
    const sub = m[2];
    if (sub === '/messages' && method === 'POST') {
      await this.#publish(req, res, auth, channel);
      return;
    }
    if (sub === '/messages' && method === 'GET') {
      await this.#history(req, res, auth, channel);
      return;
    }
    if (sub === '/presence' && method === 'GET') {
      await this.#presence(req, res, auth, channel);
      return;
    }
    if (sub === '/presence/history' && method === 'GET') {
      // Switchboard keeps members and their live events, not a history of them: say so rather
      // than answer an empty list that reads as "nobody was ever here".
      throw new HttpError(
        ablyError(
          AblyCode.BAD_REQUEST,
          'presence history is not supported by Switchboard (members and live events only)',
          400,
        ),
      );
    }
    if (sub === undefined && method === 'GET') {
      this.#require(auth, 'subscribe', channel);
      this.#reply(req, res, 200, {
        channelId: channel,
        name: channel,
        status: {
          isActive: true,
          occupancy: { metrics: { connections: 0, publishers: 0, subscribers: 0 } },
        },
      });
      return;
    }
    throw new HttpError(ablyError(AblyCode.BAD_REQUEST, `no route for ${method} ${path}`, 405));
  }

  async #publish(
    req: IncomingMessage,
    res: ServerResponse,
    auth: Authed,
    channel: string,
  ): Promise<void> {
    this.#require(auth, 'publish', channel);
    const body = await this.#body(req);
    const list = Array.isArray(body) ? body : [body];
    if (list.length === 0 || list.length > 1000)
      throw new HttpError(ablyError(AblyCode.BAD_REQUEST, 'publish 1 to 1000 messages', 400));
    const headerClientId = req.headers['x-ably-clientid'];
    const connClientId =
      typeof headerClientId === 'string'
        ? Buffer.from(headerClientId, 'base64').toString('utf8')
        : auth.clientId !== '*'
          ? auth.clientId
          : undefined;
    const inputs = list.map((raw) => {
      if (typeof raw !== 'object' || raw === null)
        throw new HttpError(ablyError(AblyCode.BAD_REQUEST, 'each message must be an object', 400));
      const msg = raw as Record<string, unknown>;
      const stored = toStored(msg['data'], msg['encoding']);
      if (typeof stored === 'string')
        throw new HttpError(ablyError(AblyCode.INVALID_MESSAGE_DATA, stored, 400));
      const id = msg['id'];
      if (
        id !== undefined &&
        (typeof id !== 'string' || id.length === 0 || id.length > MAX_MESSAGE_ID_LENGTH)
      )
        throw new HttpError(ablyError(AblyCode.BAD_REQUEST, 'bad message id', 400));
      const meta: AblyMeta = { ...stored.meta };
      const clientId = typeof msg['clientId'] === 'string' ? msg['clientId'] : connClientId;
      if (clientId !== undefined) meta.clientId = clientId;
      if (msg['extras'] !== undefined && msg['extras'] !== null) meta.extras = msg['extras'];
      const name = typeof msg['name'] === 'string' ? msg['name'] : undefined;
      if (stored.dataJson.length > this.#ctx.maxMessageSize)
        throw new HttpError(ablyError(AblyCode.TOO_BIG, 'message too large', 400));
      return {
        channel,
        dataJson: stored.dataJson,
        ...(name !== undefined ? { name } : {}),
        // The SDK's REST ids (`<base64>:<i>`) make a retried batch idempotent.
        ...(typeof id === 'string' ? { id } : {}),
        ably: JSON.stringify(meta),
      };
    });
    const published = [];
    // In order: one publisher's messages keep their order.
    for (const input of inputs) published.push(await this.#ctx.node.publish(input, 'ably-rest'));
    this.#reply(req, res, 201, {
      channel,
      messageId: published[0]?.id ?? '',
      serials: published.map((p) => channelSerial(p.epoch, p.offset)),
    });
  }

  async #history(
    req: IncomingMessage,
    res: ServerResponse,
    auth: Authed,
    channel: string,
  ): Promise<void> {
    this.#require(auth, 'history', channel);
    const q = new URL(req.url ?? '/', 'http://x').searchParams;
    const limit = Math.min(MAX_HISTORY_LIMIT, Math.max(1, Number(q.get('limit') ?? 100) || 100));
    const direction = q.get('direction') === 'forwards' ? 'forward' : 'backward';
    const cursor = q.get('cursor') ?? undefined;
    const page = await this.#ctx.node.history(channel, {
      limit,
      direction,
      ...(cursor !== undefined ? { cursor } : {}),
    });
    const format = wantsMsgpack(req) ? 'msgpack' : 'json';
    const items = [];
    for (let i = 0; i < page.frames.length; i++) {
      const offset = page.offsets[i] as number;
      const d = parseFrame(channel, page.frames[i] as Buffer, {
        offset,
        epoch: page.position.epoch,
      });
      if (d !== undefined) items.push(d.message(format));
    }
    const dir = direction === 'forward' ? 'forwards' : 'backwards';
    const first = `<./messages?limit=${limit}&direction=${dir}>; rel="first"`;
    const current = `<./messages?${new URLSearchParams({ limit: String(limit), direction: dir, ...(cursor !== undefined ? { cursor } : {}) }).toString()}>; rel="current"`;
    const links = [first, current];
    if (page.next !== null)
      links.push(`<./messages?limit=${limit}&direction=${dir}&cursor=${page.next}>; rel="next"`);
    res.setHeader('link', links.join(', '));
    this.#reply(req, res, 200, items);
  }

  /**
   * `GET /channels/{ch}/presence` (`presence.get()` of `Ably.Rest`): the members as PRESENT
   * messages, `clientId` and `connectionId` filters, `limit` (default 100, at most 1000 read in
   * pages of the store's 100), one page of the store per answer with a `next` Link.
   */
  async #presence(
    req: IncomingMessage,
    res: ServerResponse,
    auth: Authed,
    channel: string,
  ): Promise<void> {
    if (!this.#allowed(auth, 'presence', channel)) this.#require(auth, 'subscribe', channel);
    const format = wantsMsgpack(req) ? 'msgpack' : 'json';
    const q = new URL(req.url ?? '/', 'http://x').searchParams;
    const limitText = q.get('limit');
    const limit = limitText === null ? 100 : Number(limitText);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      throw new HttpError(
        ablyError(AblyCode.INVALID_PARAMETER, 'limit must be an integer from 1 to 1000', 400),
      );
    const clientId = q.get('clientId') ?? undefined;
    const connectionId = q.get('connectionId') ?? undefined;
    const cursorText = q.get('cursor');
    const cursor = cursorText === null ? undefined : decodePresenceCursor(cursorText);
    if (cursorText !== null && cursor === undefined)
      throw new HttpError(ablyError(AblyCode.INVALID_PARAMETER, 'cursor is not valid', 400));
    if (!this.#ctx.node.presenceEnabled(channel)) {
      // A namespace that keeps no presence has no members.
      this.#reply(req, res, 200, []);
      return;
    }
    const items: Record<string, unknown>[] = [];
    let after = cursor;
    let next: string | null = null;
    try {
      while (items.length < limit) {
        const page = await this.#ctx.node.presence(channel, {
          limit: Math.min(DEFAULT_MEMBERS_PAGE, limit - items.length),
          after,
          clientId,
        });
        for (const text of page.members) {
          const m = toPresenceMessage(JSON.parse(text) as object, PresenceAction.PRESENT, format);
          if (m === undefined) continue;
          if (connectionId !== undefined && m['connectionId'] !== connectionId) continue;
          items.push(m);
        }
        next = page.next;
        if (next === null) break;
        after = next;
      }
    } catch (err) {
      throw new HttpError(
        err instanceof ReplyError && err.temporary
          ? ablyError(AblyCode.UNAVAILABLE, err.message, 503)
          : ablyError(AblyCode.INTERNAL, 'presence could not be read', 500),
      );
    }
    const params = (c?: string): string =>
      new URLSearchParams({
        limit: String(limit),
        ...(clientId !== undefined ? { clientId } : {}),
        ...(connectionId !== undefined ? { connectionId } : {}),
        ...(c !== undefined ? { cursor: c } : {}),
      }).toString();
    const links = [`<./presence?${params()}>; rel="first"`];
    if (next !== null) links.push(`<./presence?${params(encodePresenceCursor(next))}>; rel="next"`);
    res.setHeader('link', links.join(', '));
    this.#reply(req, res, 200, items);
  }

  #allowed(auth: Authed, permission: Permission, channel: string): boolean {
    const policy = this.#ctx.policy;
    return (
      policy.allows(auth.credentials, permission, channel) &&
      (auth.limit === undefined || policy.allows(auth.limit, permission, channel))
    );
  }

  async #authenticate(req: IncomingMessage): Promise<Authed> {
    const header = req.headers.authorization;
    const now = Date.now();
    const stale = header === undefined ? undefined : this.#stale.get(header);
    if (stale !== undefined) {
      // The SDK's loop resends the same header: answered without verifying it again.
      if (stale.until > now) {
        this.#tokenError(req, stale.key);
        throw new HttpError(stale.info);
      }
      this.#stale.delete(header as string);
    }
    let result: AblyAuthResult;
    let keyName = '';
    if (header === undefined) {
      result = await this.#ctx.auth.connect(null, null);
    } else if (/^basic /i.test(header)) {
      result = this.#ctx.auth.key(Buffer.from(header.slice(6).trim(), 'base64').toString('utf8'));
    } else if (/^bearer /i.test(header)) {
      // The SDK sends Bearer base64(token), even for a JWT.
      const raw = header.slice(7).trim();
      const token = raw.includes('.') ? raw : Buffer.from(raw, 'base64').toString('utf8');
      // The JWT's protected header (alg, typ, kid) is the same for every token of one key: it
      // stands for the key without decoding anything.
      keyName = token.split('.', 1)[0] ?? '';
      result = await this.#ctx.auth.token(token);
    } else {
      result = { error: ablyError(AblyCode.INVALID_CREDENTIALS, 'unsupported authorization', 401) };
    }
    if ('error' in result) {
      if (header !== undefined && result.error.code >= 40140 && result.error.code < 40150) {
        if (this.#stale.size >= MAX_STALE_HEADERS) {
          const oldest = this.#stale.keys().next().value;
          if (oldest !== undefined) this.#stale.delete(oldest);
        }
        this.#stale.set(header, { info: result.error, until: now + STALE_HEADER_MS, key: keyName });
        this.#tokenError(req, keyName);
      }
      throw new HttpError(result.error);
    }
    if (await this.#ctx.isRevoked(result.credentials))
      throw new HttpError(ablyError(AblyCode.INVALID_CREDENTIALS, 'Token revoked', 401));
    return {
      credentials: result.credentials,
      limit: result.limit,
      clientId: result.clientId,
    };
  }

  /**
   * The SDK answers a REST token error by renewing and retrying with the stale header, without
   * limit (tens of thousands of requests a minute). After a few a second from one address the
   * answer becomes 429 42910 with Retry-After, which is not a token error: the SDK's loop ends
   * with it. Counted per address and key, so one looping client does not lock out its
   * neighbours behind the same address with other keys.
   */
  #tokenError(req: IncomingMessage, keyName: string): void {
    const second = Math.floor(Date.now() / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#tokenErrors = new Map();
    }
    const who = `${req.socket.remoteAddress ?? ''} ${keyName}`;
    const n = (this.#tokenErrors.get(who) ?? 0) + 1;
    // A flood of distinct addresses within one second: everyone new waits for the next.
    if (this.#tokenErrors.size < MAX_LIMITED || this.#tokenErrors.has(who))
      this.#tokenErrors.set(who, n);
    if (n > MAX_TOKEN_ERRORS_PER_SECOND || !this.#tokenErrors.has(who))
      throw new HttpError(
        ablyError(AblyCode.RATE_LIMITED, 'too many requests with an expired token', 429),
        RETRY_AFTER_S,
      );
  }

  #require(auth: Authed, permission: 'publish' | 'subscribe' | 'history', channel: string): void {
    const policy = this.#ctx.policy;
    const ok =
      policy.allows(auth.credentials, permission, channel) &&
      (auth.limit === undefined || policy.allows(auth.limit, permission, channel));
    if (!ok)
      throw new HttpError(
        ablyError(
          AblyCode.OPERATION_DENIED,
          `Unable to perform channel operation (permission denied); channel = ${channel}`,
          401,
        ),
      );
  }

  async #body(req: IncomingMessage): Promise<unknown> {
    const limit = this.#o.maxBodyBytes;
    const raw = await readRawBody(
      req,
      limit,
      () => new HttpError(ablyError(AblyCode.TOO_BIG, `body larger than ${limit} bytes`, 413)),
    );
    const type = (req.headers['content-type'] ?? '').split(';', 1)[0]?.trim().toLowerCase();
    try {
      if (type === MSGPACK_TYPE) return unpackValue(raw);
      if (type === JSON_TYPE) return JSON.parse(raw.toString('utf8')) as unknown;
    } catch {
      throw new HttpError(ablyError(AblyCode.BAD_REQUEST, `body is not valid ${type}`, 400));
    }
    throw new HttpError(
      ablyError(AblyCode.BAD_REQUEST, `Content-Type must be ${JSON_TYPE} or ${MSGPACK_TYPE}`, 415),
    );
  }

  #reply(req: IncomingMessage, res: ServerResponse, status: number, body: unknown): void {
    if (wantsMsgpack(req)) {
      const data = packValue(body);
      res.writeHead(status, { 'content-type': MSGPACK_TYPE, 'content-length': data.length });
      res.end(data);
      return;
    }
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': JSON_TYPE, 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  #error(req: IncomingMessage, res: ServerResponse, info: AblyErrorInfo): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.setHeader('x-ably-errorcode', String(info.code));
    res.setHeader('x-ably-errormessage', encodeURIComponent(info.message));
    // Drain what the client sent, so keep-alive works after an early refusal.
    req.resume();
    this.#reply(req, res, info.statusCode, { error: info });
  }
}

interface Authed {
  readonly credentials: import('../auth/auth.js').Credentials;
  readonly limit: import('../auth/auth.js').Credentials | undefined;
  readonly clientId: string | undefined;
}

function isAblyPath(path: string): boolean {
  return (
    path === '/time' ||
    path === '/stats' ||
    path === '/is-the-internet-up.txt' ||
    path.startsWith('/channels/') ||
    path.startsWith('/keys/')
  );
}

function wantsMsgpack(req: IncomingMessage): boolean {
  return (req.headers.accept ?? '').includes(MSGPACK_TYPE);
}

function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw new HttpError(ablyError(AblyCode.BAD_REQUEST, 'bad percent-encoding in the path', 400));
  }
}
