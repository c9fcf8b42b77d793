import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  channelError,
  DEFAULT_HISTORY_LIMIT,
  encodeHistoryBody,
  encodePresenceBody,
  ErrorCode,
  errorHttpStatus,
  MAX_PAGE,
  messageIdError,
  messageNameError,
  type ErrorCodeValue,
} from '@switchboard/protocol';
import type { Logger } from 'pino';
import { ReplyError, toReplyError } from '../errors.js';
import { readBody } from './body.js';
import type { Metrics } from '../metrics.js';
import type { Node, PublishInput, Published } from '../node.js';
import type { ChannelDirectory } from '../occupancy/directory.js';
import {
  DEFAULT_MEMBERS_PAGE,
  decodePresenceCursor,
  encodePresenceCursor,
} from '../presence/presence.js';
import { isRefusal, type Admission } from '../admission.js';
import type { ApiKeys } from '../auth/api-keys.js';
import {
  ANONYMOUS,
  AuthError,
  OPEN,
  type Authenticator,
  type Credentials,
  type Permission,
} from '../auth/auth.js';
import type { AuthFailureLog } from '../auth/auth-log.js';
import type { AccessPolicy } from '../auth/policy.js';
import type { ReadinessState } from '../readiness.js';
import type { WebRoutes } from '../web/front-page.js';
import {
  parseRevocation,
  revocationJson,
  type Revocation,
  type RevocationStore,
} from '../auth/revocation.js';

export interface HttpApiOptions {
  readonly node: Node;
  readonly policy: AccessPolicy;
  readonly apiKeys: ApiKeys;
  readonly authenticator: Authenticator | undefined;
  readonly revocations: RevocationStore;
  readonly admission: Admission;
  /** Where refused logins are logged (rate-limited). */
  readonly authLog?: AuthFailureLog;
  /** Stores a revocation and tells every node. */
  readonly revoke: (r: Revocation) => Promise<void>;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly maxBodyBytes: number;
  readonly maxMessageBytes: number;
  /** Whether the node should receive new clients, and why not (readiness.ts). */
  readonly readiness: () => ReadinessState;
  /** The front page, its assets and GET /v1/info (web/front-page.ts). */
  readonly web?: WebRoutes;
  /** The admin API under /v1/admin (admin/routes.ts), when enabled; false: not its path. */
  readonly admin?:
    ((req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean>) | undefined;
}

/** Messages one POST may carry. */
export const MAX_BATCH = 1000;

const MESSAGES_PATH = /^\/v1\/channels\/([^/]+)\/messages$/;
const PRESENCE_PATH = /^\/v1\/channels\/([^/]+)\/presence$/;
const CHANNEL_PATH = /^\/v1\/channels\/([^/]+)$/;

/**
 * The REST API: one handler per route, JSON in and out, errors as `{"error": text, "code": n}`
 * with the code's HTTP status.
 */
export function createHttpHandler(
  options: HttpApiOptions,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    handle(options, req, res).catch((err: unknown) => {
      const e = toReplyError(err);
      if (e.code === ErrorCode.INTERNAL) options.logger.error({ err }, 'http handler failed');
      sendError(res, e.code, e.message);
    });
  };
}

async function handle(o: HttpApiOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const path = url.pathname;
  let origin = o.admission.origin(req);
  // The admin UI calls the node that served it: same-origin admin requests need no allowedOrigins
  // entry (their credentials are checked by the admin API itself).
  if (
    isRefusal(origin) &&
    o.admin !== undefined &&
    path.startsWith('/v1/admin/') &&
    sameOrigin(req)
  )
    origin = null;
  if (isRefusal(origin)) throw new ReplyError(origin.code, origin.message);
  if (origin !== null) {
    res.setHeader('access-control-allow-origin', origin);
    res.setHeader('vary', 'Origin');
    if (req.method === 'OPTIONS') {
      res
        .writeHead(204, {
          'access-control-allow-methods': 'GET, HEAD, POST, OPTIONS',
          'access-control-allow-headers': 'authorization, content-type, last-event-id',
          'access-control-max-age': '600',
        })
        .end();
      return;
    }
  }
  if (path === '/healthz') {
    if (!allow(req, res, 'GET')) return;
    return sendJson(res, 200, { status: 'ok' });
  }
  if (path === '/readyz') {
    if (!allow(req, res, 'GET')) return;
    const r = o.readiness();
    return sendJson(res, r.ready ? 200 : 503, {
      status: r.ready ? 'ready' : 'not ready',
      broker: o.node.broker.name,
      ...(r.reasons.length > 0 && { reasons: r.reasons }),
      // Faults not yet counted (inside readinessGraceMs): the node is still ready.
      ...(r.faults.length > 0 && { faults: r.faults }),
    });
  }
  if (path === '/metrics' && o.metrics.enabled) {
    if (!allow(req, res, 'GET')) return;
    const body = await o.metrics.exposition();
    res.writeHead(200, { 'content-type': o.metrics.registry.contentType }).end(body);
    return;
  }
  const match = MESSAGES_PATH.exec(path);
  if (match !== null) {
    const channel = channelParam(match[1] as string);
    if (req.method === 'GET' || req.method === 'HEAD') {
      await authorize(o, req, 'history', channel);
      return history(o, channel, url.searchParams, res);
    }
    if (!allow(req, res, 'POST', 'GET, HEAD, POST')) return;
    const creds = await authorize(o, req, 'publish', channel);
    return publish(o, channel, req, res, creds.userId === '' ? undefined : 'u:' + creds.userId);
  }
  if (path === '/v1/channels') {
    if (!allow(req, res, 'GET')) return;
    return listChannels(o, req, url.searchParams, res);
  }
  const single = CHANNEL_PATH.exec(path);
  if (single !== null) {
    if (!allow(req, res, 'GET')) return;
    const channel = channelParam(single[1] as string);
    const why = channelError(channel);
    if (why !== undefined) throw new ReplyError(ErrorCode.INVALID_CHANNEL, why);
    await authorize(o, req, 'subscribe', channel);
    return sendJson(res, 200, await directoryOf(o).get(channel));
  }
  const presence = PRESENCE_PATH.exec(path);
  if (presence !== null) {
    if (!allow(req, res, 'GET')) return;
    const channel = channelParam(presence[1] as string);
    await authorize(o, req, 'presence', channel);
    return members(o, channel, url.searchParams, res);
  }
  if (path === '/v1/admin/revocations') {
    if (!allow(req, res, 'POST')) return;
    const creds = await credentials(o, req);
    if (creds.kind !== 'open' && creds.admin !== true) {
      throw new ReplyError(ErrorCode.PERMISSION_DENIED, 'an admin API key is required');
    }
    const r = parseRevocation(await readJson(req, o.maxBodyBytes), Date.now());
    if (typeof r === 'string') throw new ReplyError(ErrorCode.BAD_REQUEST, r);
    await o.revoke(r).catch((err: unknown) => {
      throw new ReplyError(ErrorCode.NOT_AVAILABLE, 'revocation could not be stored, retry', {
        cause: err,
      });
    });
    return sendJson(res, 200, { ok: true, revoked: JSON.parse(revocationJson(r)) as unknown });
  }
  if (o.admin !== undefined && (await o.admin(req, res, url))) return;
  if (o.web?.(req, res, path) === true) return;
  sendError(res, ErrorCode.NOT_FOUND, `no route for ${path}`);
}

/** Whether the request's Origin is the scheme and Host it was sent to (a page of this node). */
function sameOrigin(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  const host = req.headers.host;
  return (
    origin !== undefined &&
    host !== undefined &&
    (origin === `http://${host}` || origin === `https://${host}`)
  );
}

/**
 * The request's credentials: an API key (Basic, or Bearer name:secret), or a JWT as Bearer, or
 * anonymous without an Authorization header. Invalid credentials are refused, never downgraded.
 */
async function credentials(o: HttpApiOptions, req: IncomingMessage): Promise<Credentials> {
  if (!o.policy.enabled) return OPEN;
  const header = req.headers.authorization;
  if (header === undefined) return ANONYMOUS;
  const key = o.apiKeys.verify(header);
  if (key !== undefined) return key;
  const refused = (reason: string, user?: string): ReplyError => {
    o.authLog?.refused(reason, { transport: 'http', address: req.socket.remoteAddress, user });
    return new ReplyError(ErrorCode.UNAUTHORIZED, reason);
  };
  const bearer = /^Bearer\s+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)$/i.exec(header);
  if (bearer !== null && o.authenticator !== undefined) {
    let user: string | undefined;
    try {
      const creds = await o.authenticator.authenticate(bearer[1] as string);
      user = creds.userId;
      if (await o.revocations.isRevoked(creds)) throw new AuthError('token revoked');
      return creds;
    } catch (err) {
      if (err instanceof AuthError) throw refused(err.message, user);
      throw new ReplyError(ErrorCode.NOT_AVAILABLE, 'credentials could not be checked, retry', {
        cause: err,
      });
    }
  }
  throw refused('invalid credentials', apiKeyName(header));
}

/** The key name of a Basic or Bearer `name:secret` header, for the log (never the secret). */
function apiKeyName(header: string): string | undefined {
  const m = /^(Basic|Bearer)\s+(\S+)$/i.exec(header);
  if (m === null) return undefined;
  const text =
    m[1]?.toLowerCase() === 'basic'
      ? Buffer.from(m[2] as string, 'base64').toString()
      : (m[2] as string);
  const colon = text.indexOf(':');
  if (colon <= 0 || colon > 64) return undefined;
  return text.slice(0, colon);
}

async function authorize(
  o: HttpApiOptions,
  req: IncomingMessage,
  permission: Permission,
  channel: string,
): Promise<Credentials> {
  const creds = await credentials(o, req);
  if (o.policy.allows(creds, permission, channel)) return creds;
  if (creds.kind === 'anonymous')
    throw new ReplyError(
      ErrorCode.UNAUTHORIZED,
      `credentials required to ${permission} on ${channel}`,
    );
  throw new ReplyError(ErrorCode.PERMISSION_DENIED, `not allowed to ${permission} on ${channel}`);
}

function directoryOf(o: HttpApiOptions): ChannelDirectory {
  const d = o.node.directory;
  if (d === undefined) throw new ReplyError(ErrorCode.NOT_FOUND, 'no channel directory');
  return d;
}

/**
 * `GET /v1/channels?prefix&cursor&limit`: one page of the deployment's channels, sorted by name,
 * `{"channels": [{"channel", "occupancy"}...], "next"}`. Lists only channels the credentials may
 * subscribe to (filtered before the page is cut, so pages stay full).
 */
async function listChannels(
  o: HttpApiOptions,
  req: IncomingMessage,
  params: URLSearchParams,
  res: ServerResponse,
): Promise<void> {
  const creds = await credentials(o, req);
  const limitText = params.get('limit');
  const limit = limitText === null ? undefined : Number(limitText);
  if (limit !== undefined && !/^\d{1,4}$/.test(limitText ?? ''))
    throw new ReplyError(ErrorCode.BAD_REQUEST, `limit must be an integer from 1 to 1000`);
  const visible = (channel: string): boolean => o.policy.allows(creds, 'subscribe', channel);
  if (creds.kind === 'anonymous' && !o.policy.anonymousAnywhere)
    throw new ReplyError(ErrorCode.UNAUTHORIZED, 'credentials required to list channels');
  const page = await directoryOf(o).list(
    {
      prefix: params.get('prefix') ?? undefined,
      cursor: params.get('cursor') ?? undefined,
      limit,
    },
    visible,
  );
  sendJson(res, 200, page);
}

async function publish(
  o: HttpApiOptions,
  channel: string,
  req: IncomingMessage,
  res: ServerResponse,
  publisher?: string,
): Promise<void> {
  const why = channelError(channel);
  if (why !== undefined) throw new ReplyError(ErrorCode.INVALID_CHANNEL, why);
  const body = await readJson(req, o.maxBodyBytes);
  const items = Array.isArray(body) ? body : [body];
  if (items.length === 0) throw new ReplyError(ErrorCode.BAD_REQUEST, 'no messages to publish');
  if (items.length > MAX_BATCH)
    throw new ReplyError(ErrorCode.LIMIT_EXCEEDED, `at most ${MAX_BATCH} messages per request`);
  const inputs = items.map((item, i) => ({
    ...toInput(
      channel,
      item,
      Array.isArray(body) ? `messages[${i}]` : 'message',
      o.maxMessageBytes,
    ),
    publisher,
  }));
  // Issued in order without awaiting in between: the broker keeps their order.
  const results = await Promise.allSettled(inputs.map((input) => o.node.publish(input, 'http')));
  if (results.every((r): r is PromiseFulfilledResult<Published> => r.status === 'fulfilled')) {
    const messages = results.map((r) => position(r.value));
    return sendJson(res, 200, { ids: messages.map((m) => m.id), messages });
  }
  const first = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  const err = toReplyError(first?.reason);
  sendJson(res, errorHttpStatus[err.code], {
    error: err.message,
    code: err.code,
    messages: results.map((r) =>
      r.status === 'fulfilled' ? position(r.value) : { error: toReplyError(r.reason).message },
    ),
  });
}

async function history(
  o: HttpApiOptions,
  channel: string,
  params: URLSearchParams,
  res: ServerResponse,
): Promise<void> {
  const why = channelError(channel);
  if (why !== undefined) throw new ReplyError(ErrorCode.INVALID_CHANNEL, why);
  const int = (name: string, min: number, max: number): number | undefined => {
    const raw = params.get(name);
    if (raw === null) return undefined;
    const n = /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
    if (!(n >= min && n <= max))
      throw new ReplyError(
        ErrorCode.BAD_REQUEST,
        `${name} must be an integer from ${min} to ${max}`,
      );
    return n;
  };
  const limit = int('limit', 1, MAX_PAGE) ?? DEFAULT_HISTORY_LIMIT;
  const direction = params.get('direction') ?? 'forward';
  if (direction !== 'forward' && direction !== 'backward')
    throw new ReplyError(ErrorCode.BAD_REQUEST, 'direction must be forward or backward');
  const sinceOffset = int('since', 0, Number.MAX_SAFE_INTEGER);
  const epoch = params.get('epoch') ?? undefined;
  if (epoch !== undefined && !/^[A-Za-z0-9_-]{1,64}$/.test(epoch))
    throw new ReplyError(ErrorCode.BAD_REQUEST, 'epoch is not a valid epoch');
  const cursor = params.get('cursor') ?? undefined;
  const page = await o.node.history(channel, {
    limit,
    direction,
    since: sinceOffset === undefined ? undefined : { offset: sinceOffset, epoch: epoch ?? '' },
    before: int('before', 1, Number.MAX_SAFE_INTEGER),
    cursor,
  });
  const body = encodeHistoryBody({ frames: page.frames, position: page.position, next: page.next });
  res
    .writeHead(200, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    })
    .end(body);
}

/**
 * `GET /v1/channels/{channel}/presence?limit&cursor&clientId`: one page of members,
 * `{"channel", "members": [{"clientId", "connectionId", "data", "timestamp", "offset"}...],
 * "offset", "next"}` (`next`: the cursor of the following page, or null).
 */
async function members(
  o: HttpApiOptions,
  channel: string,
  params: URLSearchParams,
  res: ServerResponse,
): Promise<void> {
  const why = channelError(channel);
  if (why !== undefined) throw new ReplyError(ErrorCode.INVALID_CHANNEL, why);
  const limitText = params.get('limit');
  const limit = limitText === null ? DEFAULT_MEMBERS_PAGE : Number(limitText);
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_PAGE)
    throw new ReplyError(ErrorCode.BAD_REQUEST, `limit must be an integer from 1 to ${MAX_PAGE}`);
  const cursor = params.get('cursor');
  const after = cursor === null || cursor === '' ? undefined : decodePresenceCursor(cursor);
  if (cursor !== null && cursor !== '' && after === undefined)
    throw new ReplyError(ErrorCode.BAD_REQUEST, 'cursor is not one this server issued');
  const page = await o.node.presence(channel, {
    limit,
    after,
    clientId: params.get('clientId') ?? undefined,
  });
  const body = encodePresenceBody({
    channel,
    members: page.members,
    offset: page.offset,
    epoch: page.epoch,
    next: page.next === null ? null : encodePresenceCursor(page.next),
  });
  res
    .writeHead(200, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    })
    .end(body);
}

export function position(p: Published): {
  id: string;
  offset: number;
  epoch: string;
  duplicate?: true;
} {
  return p.duplicate
    ? { id: p.id, offset: p.offset, epoch: p.epoch, duplicate: true }
    : { id: p.id, offset: p.offset, epoch: p.epoch };
}

export function toInput(
  channel: string,
  item: unknown,
  where: string,
  maxBytes: number,
): PublishInput {
  if (typeof item !== 'object' || item === null || Array.isArray(item)) {
    throw new ReplyError(ErrorCode.BAD_REQUEST, `${where} must be an object {name?, data, id?}`);
  }
  const m = item as Record<string, unknown>;
  if (m['data'] === undefined)
    throw new ReplyError(ErrorCode.BAD_REQUEST, `${where}.data is required`);
  const id = m['id'];
  const name = m['name'];
  if (id !== undefined) {
    const bad = messageIdError(id);
    if (bad !== undefined) throw new ReplyError(ErrorCode.BAD_REQUEST, `${where}.${bad}`);
  }
  if (name !== undefined) {
    const bad = messageNameError(name);
    if (bad !== undefined) throw new ReplyError(ErrorCode.BAD_REQUEST, `${where}.${bad}`);
  }
  let dataJson: string;
  try {
    dataJson = JSON.stringify(m['data']);
  } catch {
    // Nested too deeply to serialize (RangeError): the client's fault, not a 500.
    throw new ReplyError(ErrorCode.BAD_REQUEST, `${where}.data is nested too deeply`);
  }
  if (dataJson.length > maxBytes)
    throw new ReplyError(
      ErrorCode.PAYLOAD_TOO_LARGE,
      `${where}.data is larger than ${maxBytes} bytes`,
    );
  return { channel, dataJson, id: id as string | undefined, name: name as string | undefined };
}

/** The channel named by a path segment; bad percent-encoding is the client's error (400). */
function channelParam(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new ReplyError(
      ErrorCode.INVALID_CHANNEL,
      'channel in the path is not valid percent-encoding',
    );
  }
}

/**
 * A JSON request body. Only `application/json` is read as JSON: the content types an HTML form
 * can send cross-site without a CORS preflight (text/plain, urlencoded, multipart) are refused,
 * so a page of another site cannot publish through a visitor's browser when auth is off.
 */
export async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const type = req.headers['content-type'];
  const media = type?.split(';', 1)[0]?.trim().toLowerCase();
  if (media !== 'application/json')
    throw new ReplyError(
      ErrorCode.UNSUPPORTED_MEDIA_TYPE,
      `request body must be application/json (got ${type === undefined ? 'no content-type' : JSON.stringify(type.slice(0, 100))})`,
    );
  const text = await readBody(req, limit);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new ReplyError(ErrorCode.INVALID_JSON, 'request body is not valid JSON');
  }
}

function allow(
  req: IncomingMessage,
  res: ServerResponse,
  method: string,
  allowed = method === 'GET' ? 'GET, HEAD' : method,
): boolean {
  if (req.method === method || (method === 'GET' && req.method === 'HEAD')) return true;
  res.setHeader('allow', allowed);
  sendError(
    res,
    ErrorCode.METHOD_NOT_ALLOWED,
    `${req.method ?? '?'} is not allowed here; use ${method}`,
  );
  return false;
}

export function sendError(res: ServerResponse, code: ErrorCodeValue, message: string): void {
  if (code === ErrorCode.UNAUTHORIZED)
    res.setHeader('www-authenticate', 'Basic realm="switchboard", Bearer');
  sendJson(res, errorHttpStatus[code], { error: message, code });
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  // A body we stopped reading (413) must not be left to poison the keep-alive connection.
  if (status === 413 || status === 415) res.setHeader('connection', 'close');
  res
    .writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
    })
    .end(text);
}
