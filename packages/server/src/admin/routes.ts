import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  channelError,
  DisconnectCode,
  encodeAdminHistoryBody,
  encodeAdminPresenceBody,
  encodeAdminTailLine,
  ErrorCode,
  MAX_PAGE,
  parseFrames,
  toMessage,
} from '@switchboard/protocol';
import type { Logger } from 'pino';
import { position, readJson, sendJson, toInput } from '../api/http.js';
import type { ApiKeys } from '../auth/api-keys.js';
import { AuthError, type Authenticator } from '../auth/auth.js';
import type { AuthFailureLog } from '../auth/auth-log.js';
import { parseRevocation, revocationJson, type Revocation } from '../auth/revocation.js';
import { ReplyError } from '../errors.js';
import type { StreamPosition } from '../broker/broker.js';
import type { Sink } from '../hub.js';
import type { Node } from '../node.js';
import type { ClientAddresses } from '../client-address.js';
import type { AdminCluster } from './cluster.js';
import {
  COOKIE,
  SESSION_MS,
  cookieValue,
  type AdminSession,
  type PasswordCheck,
  type SessionSigner,
} from './credentials.js';
import { MAX_FAILURES, type LockoutStore } from './lockout.js';
import {
  mergeHistograms,
  type ErrorEntry,
  type ErrorRing,
  type LatencyHistogram,
  type NodeOverview,
} from './stats.js';

/** One row of the channel list. */
export interface AdminChannelRow {
  readonly channel: string;
  readonly subscribers: number;
  readonly [more: string]: unknown;
}

/** Lists the deployment's channels (the occupancy ChannelDirectory, or the nodes' local hubs). */
export interface ChannelLister {
  list(q: {
    prefix: string;
    cursor: string | undefined;
    limit: number;
  }): Promise<{ channels: readonly AdminChannelRow[]; next: string | null }>;
}

export interface AdminOptions {
  readonly node: Node;
  /** No auth configured and no admin password: everyone who reaches the port is the admin. */
  readonly open: boolean;
  readonly apiKeys: ApiKeys;
  readonly authenticator: Authenticator | undefined;
  readonly authLog?: AuthFailureLog | undefined;
  readonly signer: SessionSigner;
  readonly password: PasswordCheck | undefined;
  readonly lockout: LockoutStore;
  readonly cluster: AdminCluster;
  readonly errors: ErrorRing;
  readonly channels: ChannelLister;
  /** The deployment-wide occupancy of a channel, when the node has a directory. */
  readonly directory?:
    { get(channel: string): Promise<{ readonly occupancy: object }> } | undefined;
  readonly revoke: (r: Revocation) => Promise<void>;
  readonly logger: Logger;
  readonly maxBodyBytes: number;
  readonly maxMessageBytes: number;
  /** The tail's outbound limit, as for any SSE client. */
  readonly maxOutboundBytes: number;
  /** Who sent a request (through trusted proxies): what the lockout counts per. */
  readonly clientAddress: ClientAddresses;
}

type Principal =
  | { readonly via: 'open' }
  | { readonly via: 'key'; readonly name: string }
  | { readonly via: 'session'; readonly session: AdminSession };

const CHANNEL_PATH = /^\/v1\/admin\/channels\/([^/]+)(\/history|\/presence)?$/;
const TAIL_PATH = /^\/v1\/admin\/tail\/([^/]+)$/;
const DEFAULT_LIST = 50;
const TAIL_PING_MS = 15_000;
/** Recent messages read to estimate a channel's rate, and over which window. */
const RATE_SAMPLE = 200;
const RATE_WINDOW_MS = 10_000;

/**
 * The admin API under /v1/admin (docs/operations.md, Admin API). Returns false for paths it does
 * not serve; throws ReplyError for the caller's error handler otherwise.
 */
export function createAdminRoutes(
  o: AdminOptions,
): (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean> {
  return async (req, res, url) => {
    const path = url.pathname;
    if (!path.startsWith('/v1/admin/')) return false;
    const method = req.method ?? 'GET';
    const read = method === 'GET' || method === 'HEAD';
    if (path === '/v1/admin/login') {
      if (post(req, res)) await login(o, req, res);
      return true;
    }
    if (path === '/v1/admin/logout') {
      if (!post(req, res)) return true;
      const session = o.signer.verify(cookieValue(req.headers.cookie, COOKIE), Date.now());
      // Ended on every node, not only forgotten by this browser: a copied cookie dies too.
      if (session !== undefined)
        await o.lockout
          .endSession(session.sid, session.expires - Date.now())
          .catch((err: unknown) => {
            throw new ReplyError(ErrorCode.NOT_AVAILABLE, 'logout could not be stored, retry', {
              cause: err,
            });
          });
      res.setHeader('set-cookie', cookie(req, '', 0));
      sendJson(res, 200, { ok: true });
      return true;
    }
    if (path === '/v1/admin/session') {
      if (!get(req, res)) return true;
      const p = await principal(o, req, false).catch(() => undefined);
      sendJson(res, 200, {
        authenticated: p !== undefined,
        ...(p !== undefined && { via: p.via }),
        ...(p?.via === 'session' && { csrf: o.signer.csrf(p.session) }),
        login: o.password !== undefined,
      });
      return true;
    }
    const known =
      CHANNEL_PATH.test(path) ||
      TAIL_PATH.test(path) ||
      [
        '/v1/admin/overview',
        '/v1/admin/channels',
        '/v1/admin/latency',
        '/v1/admin/errors',
        '/v1/admin/webhooks',
        '/v1/admin/publish',
        '/v1/admin/revoke',
      ].includes(path);
    if (!known) return false;
    // Credentials before anything else, so every admin route answers 401/403 the same way.
    await principal(o, req, !read);
    if (path === '/v1/admin/publish' || path === '/v1/admin/revoke') {
      if (post(req, res)) await (path === '/v1/admin/publish' ? publish : revoke)(o, req, res);
      return true;
    }
    if (!get(req, res)) return true;
    const params = url.searchParams;
    if (path === '/v1/admin/overview') await overview(o, res);
    else if (path === '/v1/admin/latency') {
      const g = await o.cluster.gather<LatencyHistogram>('latency');
      sendJson(res, 200, {
        ...mergeHistograms(g.answers),
        nodes: g.answers.length,
        missing: g.missing,
      });
    } else if (path === '/v1/admin/errors') {
      const limit = intParam(params, 'limit', 1, 1000) ?? 100;
      const g = await o.cluster.gather<ErrorEntry[]>('errors', { limit });
      const errors = g.answers
        .flat()
        .sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0))
        .slice(0, limit);
      sendJson(res, 200, { errors, missing: g.missing });
    } else if (path === '/v1/admin/webhooks') {
      // Each node logs the attempts it made; the deployment's log is the union, newest first.
      const limit = intParam(params, 'limit', 1, 1000) ?? 100;
      const g = await o.cluster.gather<{ at: string }[]>('webhooks', { limit });
      const deliveries = g.answers
        .flat()
        .sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0))
        .slice(0, limit);
      sendJson(res, 200, { deliveries, missing: g.missing });
    } else if (path === '/v1/admin/channels') {
      const prefix = params.get('prefix') ?? '';
      if (prefix.length > 255) throw new ReplyError(ErrorCode.BAD_REQUEST, 'prefix is too long');
      const cursor = params.get('cursor') ?? undefined;
      const limit = intParam(params, 'limit', 1, MAX_PAGE) ?? DEFAULT_LIST;
      sendJson(res, 200, await o.channels.list({ prefix, cursor: cursor || undefined, limit }));
    } else {
      const tail = TAIL_PATH.exec(path);
      if (tail !== null) {
        await startTail(o, req, res, channelOf(tail[1] as string));
        return true;
      }
      const m = CHANNEL_PATH.exec(path) as RegExpExecArray;
      const channel = channelOf(m[1] as string);
      if (m[2] === '/history')
        await history(o, channel, intParam(params, 'limit', 1, MAX_PAGE), res);
      else if (m[2] === '/presence') await presence(o, channel, params, res);
      else await channelInfo(o, channel, res);
    }
    return true;
  };
}

/** Who is calling; throws 190/191/194 when they may not. */
async function principal(
  o: AdminOptions,
  req: IncomingMessage,
  write: boolean,
): Promise<Principal> {
  const header = req.headers.authorization;
  if (header !== undefined) {
    const key = o.apiKeys.verify(header);
    if (key !== undefined) {
      if (key.admin === true) return { via: 'key', name: key.userId };
      throw new ReplyError(ErrorCode.ADMIN_FORBIDDEN, `API key ${key.userId} is not an admin key`);
    }
    const bearer = /^Bearer\s+([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*)$/i.exec(header);
    if (bearer !== null && o.authenticator !== undefined) {
      try {
        await o.authenticator.authenticate(bearer[1] as string);
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        refused(o, req, `admin: ${err.message}`);
        throw new ReplyError(ErrorCode.ADMIN_UNAUTHENTICATED, err.message);
      }
      throw new ReplyError(ErrorCode.ADMIN_FORBIDDEN, 'client tokens cannot use the admin API');
    }
    if (!o.open) {
      refused(o, req, 'admin: invalid credentials');
      throw new ReplyError(ErrorCode.ADMIN_UNAUTHENTICATED, 'invalid credentials');
    }
  }
  const signed = o.signer.verify(cookieValue(req.headers.cookie, COOKIE), Date.now());
  const session =
    signed !== undefined &&
    !(await o.lockout.sessionEnded(signed.sid).catch((err: unknown) => {
      throw new ReplyError(ErrorCode.NOT_AVAILABLE, 'session could not be checked, retry', {
        cause: err,
      });
    }))
      ? signed
      : undefined;
  if (session !== undefined) {
    if (write && !o.signer.csrfMatches(session, req.headers['x-csrf-token']))
      throw new ReplyError(
        ErrorCode.ADMIN_CSRF,
        'X-CSRF-Token header missing or not this session’s (GET /v1/admin/session)',
      );
    return { via: 'session', session };
  }
  if (o.open) return { via: 'open' };
  throw new ReplyError(
    ErrorCode.ADMIN_UNAUTHENTICATED,
    'admin credentials required: log in (POST /v1/admin/login) or send an admin API key',
  );
}

function refused(o: AdminOptions, req: IncomingMessage, reason: string): void {
  const address = o.clientAddress.of(req);
  o.authLog?.refused(reason, { transport: 'http', address });
  o.errors.push({ code: ErrorCode.ADMIN_UNAUTHENTICATED, message: reason, address });
}

async function login(o: AdminOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (o.password === undefined)
    throw new ReplyError(
      ErrorCode.ADMIN_LOGIN_DISABLED,
      'password login is off: set adminPassword or adminPasswordHash, or use an admin API key',
    );
  const address = o.clientAddress.of(req);
  const lockedOut = (ms: number): ReplyError => {
    const s = Math.ceil(ms / 1000);
    res.setHeader('retry-after', String(s));
    o.errors.push({ code: ErrorCode.ADMIN_LOCKED_OUT, message: 'admin login locked out', address });
    return new ReplyError(
      ErrorCode.ADMIN_LOCKED_OUT,
      `too many failed logins from ${address}: try again in ${s} s`,
    );
  };
  const store = <T>(p: Promise<T>): Promise<T> =>
    p.catch((err: unknown) => {
      throw new ReplyError(ErrorCode.NOT_AVAILABLE, 'login attempts could not be counted, retry', {
        cause: err,
      });
    });
  const { attempts, resetMs } = await store(o.lockout.attempt(address));
  if (attempts > MAX_FAILURES) throw lockedOut(resetMs);
  const body = await readJson(req, Math.min(o.maxBodyBytes, 4096));
  const password = (body as { password?: unknown } | null)?.password;
  if (typeof password !== 'string' || password.length > 1024)
    throw new ReplyError(ErrorCode.BAD_REQUEST, 'expected {"password": "..."}');
  if (!(await o.password(password))) {
    o.authLog?.refused('admin: wrong password', { transport: 'http', address });
    if (attempts === MAX_FAILURES) throw lockedOut(resetMs);
    o.errors.push({ code: ErrorCode.ADMIN_BAD_PASSWORD, message: 'wrong admin password', address });
    throw new ReplyError(ErrorCode.ADMIN_BAD_PASSWORD, 'wrong password');
  }
  await store(o.lockout.clear(address));
  const { value, session } = o.signer.issue(Date.now());
  res.setHeader('set-cookie', cookie(req, value, SESSION_MS / 1000));
  o.logger.info({ address }, 'admin login');
  sendJson(res, 200, {
    csrf: o.signer.csrf(session),
    expires: new Date(session.expires).toISOString(),
  });
}

/** HTTP-only, SameSite=Strict; Secure when the client reached us over TLS (or a TLS proxy). */
function cookie(req: IncomingMessage, value: string, maxAgeS: number): string {
  const tls =
    (req.socket as { encrypted?: boolean }).encrypted === true ||
    String(req.headers['x-forwarded-proto'] ?? '')
      .split(',')[0]
      ?.trim()
      .toLowerCase() === 'https';
  return `${COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAgeS}${tls ? '; Secure' : ''}`;
}

async function overview(o: AdminOptions, res: ServerResponse): Promise<void> {
  const g = await o.cluster.gather<NodeOverview>('overview');
  const nodes = [...g.answers].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const sum = (k: keyof NodeOverview): number =>
    Math.round(nodes.reduce((a, n) => a + (n[k] as number), 0) * 100) / 100;
  sendJson(res, 200, {
    nodes,
    totals: {
      nodes: nodes.length,
      ready: nodes.filter((n) => n.ready).length,
      connections: sum('connections'),
      // Channels with a subscriber on each node, added up: a channel on two nodes counts twice.
      channels: sum('channels'),
      messagesInPerSec: sum('messagesInPerSec'),
      messagesOutPerSec: sum('messagesOutPerSec'),
      maxEventLoopLagMs: Math.max(0, ...nodes.map((n) => n.eventLoopLagMs)),
    },
    missing: g.missing,
  });
}

async function channelInfo(o: AdminOptions, channel: string, res: ServerResponse): Promise<void> {
  const [g, recent, details] = await Promise.all([
    o.cluster.gather<{ subscribers: number }>('channel', { channel }),
    o.node.broker.history(channel, { limit: RATE_SAMPLE, reverse: true }),
    o.directory?.get(channel),
  ]);
  const now = Date.now();
  let inWindow = 0;
  let last: { at: number } | undefined;
  for (const e of recent.entries) {
    const at = timestampOf(e.frame);
    last ??= { at };
    if (now - at <= RATE_WINDOW_MS) inWindow++;
  }
  const nodes = g.answers.filter((a) => a.subscribers > 0).length;
  sendJson(res, 200, {
    channel,
    subscribers: g.answers.reduce((a, n) => a + n.subscribers, 0),
    nodes,
    // Whether the namespace has presence on: the page then never asks for members it cannot have.
    presence: o.node.presenceEnabled(channel),
    ...(details !== undefined && { occupancy: details.occupancy }),
    last:
      recent.position.offset === 0
        ? null
        : {
            offset: recent.position.offset,
            epoch: recent.position.epoch,
            ...(last !== undefined && { at: new Date(last.at).toISOString() }),
          },
    messagesPerSec: Math.round((inWindow / (RATE_WINDOW_MS / 1000)) * 100) / 100,
    missing: g.missing,
  });
}

function timestampOf(frame: Buffer): number {
  const m = /"timestamp":(\d+)/.exec(frame.toString('utf8', 0, Math.min(frame.length, 512)));
  // The head puts the timestamp after the data, which may be long: parse the whole frame then.
  if (m !== null) return Number(m[1]);
  try {
    return Number((JSON.parse(frame.toString()) as { timestamp?: number }).timestamp ?? 0);
  } catch {
    return 0;
  }
}

async function history(
  o: AdminOptions,
  channel: string,
  limit: number | undefined,
  res: ServerResponse,
): Promise<void> {
  // The newest `limit`, sent oldest first, so a tail can append live messages below them.
  const page = await o.node.history(channel, { limit: limit ?? 100, direction: 'backward' });
  const frames = [...page.frames].reverse();
  const body = encodeAdminHistoryBody(channel, frames, page.position);
  res
    .writeHead(200, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    })
    .end(body);
}

async function presence(
  o: AdminOptions,
  channel: string,
  params: URLSearchParams,
  res: ServerResponse,
): Promise<void> {
  const page = await o.node.presence(channel, {
    limit: intParam(params, 'limit', 1, MAX_PAGE) ?? 100,
  });
  const body = encodeAdminPresenceBody(channel, page.members, page.offset, page.next !== null);
  res
    .writeHead(200, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    })
    .end(body);
}

async function publish(o: AdminOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = await readJson(req, o.maxBodyBytes);
  const channel = (body as { channel?: unknown } | null)?.channel;
  if (typeof channel !== 'string')
    throw new ReplyError(ErrorCode.BAD_REQUEST, 'expected {"channel": "...", "data": ...}');
  const why = channelError(channel);
  if (why !== undefined) throw new ReplyError(ErrorCode.INVALID_CHANNEL, why);
  const input = toInput(channel, body, 'message', o.maxMessageBytes);
  const p = position(await o.node.publish(input, 'http'));
  sendJson(res, 200, { ids: [p.id], messages: [p] });
}

async function revoke(o: AdminOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = (await readJson(req, o.maxBodyBytes)) as Record<string, unknown> | null;
  if (typeof body !== 'object' || body === null)
    throw new ReplyError(ErrorCode.BAD_REQUEST, 'expected {"user"} or {"token"} or {"jti"}');
  let wire: Record<string, unknown> = body;
  if (typeof body['user'] === 'string') wire = { sub: body['user'], before: body['before'] };
  else if (typeof body['token'] === 'string') {
    if (o.authenticator === undefined)
      throw new ReplyError(ErrorCode.BAD_REQUEST, 'no token authentication is configured');
    // The token names itself: its jti, or failing that every token of its user until now.
    let creds;
    try {
      creds = await o.authenticator.authenticate(body['token']);
    } catch (err) {
      if (err instanceof AuthError)
        throw new ReplyError(ErrorCode.BAD_REQUEST, `token: ${err.message}`);
      throw err;
    }
    wire = creds.tokenId !== undefined ? { jti: creds.tokenId } : { sub: creds.userId };
  }
  const r = parseRevocation(wire, Date.now());
  if (typeof r === 'string') throw new ReplyError(ErrorCode.BAD_REQUEST, r);
  await o.revoke(r).catch((err: unknown) => {
    throw new ReplyError(ErrorCode.NOT_AVAILABLE, 'revocation could not be stored, retry', {
      cause: err,
    });
  });
  sendJson(res, 200, { ok: true, revoked: JSON.parse(revocationJson(r)) as unknown });
}

/**
 * `GET /v1/admin/tail/{channel}`: the channel's live messages as SSE, each as one `data:` line
 * `{channel, offset, epoch, id, data, name?, at}`, in offset order. The stream subscribes like
 * any client (one Hub sink) and is closed as too slow past maxOutboundBytes. Every message and
 * the `subscribed` event carry `id: <epoch>:<offset>`, so an EventSource that reconnects sends
 * it back as Last-Event-ID and the tail resumes right after it (replayed from the channel's
 * recovery window; `subscribed` says `recovered: false` when it could not be).
 */
async function startTail(
  o: AdminOptions,
  req: IncomingMessage,
  res: ServerResponse,
  channel: string,
): Promise<void> {
  const why = channelError(channel);
  if (why !== undefined) throw new ReplyError(ErrorCode.INVALID_CHANNEL, why);
  const header = req.headers['last-event-id'];
  const since = typeof header === 'string' && header !== '' ? tailPosition(header) : undefined;
  let open = true;
  const end = (code: number, reason: string): void => {
    if (!open) return;
    open = false;
    res.end(`event: close\ndata: ${JSON.stringify({ code, reason })}\n\n`);
  };
  const write = (chunk: string): void => {
    if (!open) return;
    res.write(chunk);
    if (res.writableLength > o.maxOutboundBytes) {
      end(DisconnectCode.SLOW, 'too slow: outbound queue full');
      setTimeout(() => res.destroy(), 1000).unref();
    }
  };
  // The id comes from the position the Hub carries beside the frame (a frame whose message has
  // none, a bridged one, gets no id, so a reconnect resumes after the last positioned one).
  const sendFrame = (frame: Buffer, position?: StreamPosition): void => {
    const line = tailLine(frame, position);
    if (line === undefined) return;
    const id = position === undefined ? '' : `id: ${position.epoch}:${position.offset}\n`;
    write(`${id}data: ${line}\n\n`);
  };
  const sink: Sink = {
    batched: false,
    send: sendFrame,
    close(code, reason) {
      end(code, reason);
    },
  };
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-store',
    'x-accel-buffering': 'no',
  });
  res.write(`: tail of ${channel}\n\n`);
  const ping = setInterval(() => write(': ping\n\n'), TAIL_PING_MS).unref();
  let subscribed = false;
  res.on('close', () => {
    open = false;
    clearInterval(ping);
    if (subscribed) o.node.unsubscribe(sink, channel);
  });
  try {
    const sub = await o.node.subscribe(sink, channel, { since });
    subscribed = true;
    if (!open) {
      o.node.unsubscribe(sink, channel);
      return;
    }
    const p = sub.position;
    const recovered = sub.recovered === undefined ? {} : { recovered: sub.recovered };
    // The id is where the stream stands after the replay: a reconnect before any message resumes
    // from there. With a replay to come it has none, so a drop in the middle of the replay resumes
    // after its last message read, not past the rest of it.
    const id = sub.replay.length === 0 ? `id: ${p.epoch}:${p.offset}\n` : '';
    write(
      `event: subscribed\n${id}data: ${JSON.stringify({ channel, offset: p.offset, epoch: p.epoch, ...recovered })}\n\n`,
    );
    // Before anything live, in this same turn (the Hub holds live frames until it ends).
    for (const { frame, position } of sub.replay) sendFrame(frame, position);
  } catch (err) {
    const e = err instanceof ReplyError ? err : undefined;
    end(e?.code ?? ErrorCode.INTERNAL, e?.message ?? 'could not subscribe');
  }
}

/** A tail event id, `<epoch>:<offset>`, as the position to resume after. */
function tailPosition(id: string): { epoch: string; offset: number } {
  const i = id.lastIndexOf(':');
  const offset = i > 0 && /^\d{1,15}$/.test(id.slice(i + 1)) ? Number(id.slice(i + 1)) : NaN;
  if (!Number.isSafeInteger(offset) || id.length > 200)
    throw new ReplyError(ErrorCode.BAD_REQUEST, 'Last-Event-ID is not an id this tail sent');
  return { epoch: id.slice(0, i), offset };
}

/** A message frame as the tail's JSON line; undefined for other frames (events). */
function tailLine(frame: Buffer, position: StreamPosition | undefined): string | undefined {
  const [f] = parseFrames(frame.toString());
  const m = f === undefined ? undefined : toMessage(f);
  return m === undefined ? undefined : encodeAdminTailLine(m, position);
}

function channelOf(segment: string): string {
  let channel: string;
  try {
    channel = decodeURIComponent(segment);
  } catch {
    throw new ReplyError(
      ErrorCode.INVALID_CHANNEL,
      'channel in the path is not valid percent-encoding',
    );
  }
  const why = channelError(channel);
  if (why !== undefined) throw new ReplyError(ErrorCode.INVALID_CHANNEL, why);
  return channel;
}

function intParam(
  params: URLSearchParams,
  name: string,
  min: number,
  max: number,
): number | undefined {
  const raw = params.get(name);
  if (raw === null || raw === '') return undefined;
  const n = /^\d{1,9}$/.test(raw) ? Number(raw) : NaN;
  if (!(n >= min && n <= max))
    throw new ReplyError(ErrorCode.BAD_REQUEST, `${name} must be an integer from ${min} to ${max}`);
  return n;
}

function post(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method === 'POST') return true;
  res.setHeader('allow', 'POST');
  sendJson(res, 405, {
    error: `${req.method ?? '?'} is not allowed here; use POST`,
    code: ErrorCode.METHOD_NOT_ALLOWED,
  });
  return false;
}

function get(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method === 'GET' || req.method === 'HEAD') return true;
  res.setHeader('allow', 'GET, HEAD');
  sendJson(res, 405, {
    error: `${req.method ?? '?'} is not allowed here; use GET`,
    code: ErrorCode.METHOD_NOT_ALLOWED,
  });
  return false;
}
