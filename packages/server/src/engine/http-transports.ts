/**
 * The HTTP transports' edge: SSE streams, long-polling, and the command POSTs of both, with no
 * sticky sessions. The node that opens a connection holds it and subscribes to its control topic
 * `conn:<id>`; a command POST or a poll may reach any node, which publishes it to that topic. The
 * broker (Redis PUBLISH) says how many nodes received it, so an unknown or closed connection is
 * answered 404 at once, with no registry to keep in step. Going through the broker even when the
 * connection is local keeps one client's sequential POSTs in order whichever nodes they reach.
 * Answers to polls that were forwarded come back on the asking node's topic `node:<id>`.
 *
 * Routes (docs/protocol.md, "SSE and long-polling"):
 *   GET    /sse                         event stream; ?channel=..., Last-Event-ID resumes
 *   POST   /poll                        opens a long-polling connection
 *   GET    /poll/{id}?cursor=n&wait=ms  one poll
 *   POST   /connections/{id}/commands   command frames, one per line
 *   DELETE /connections/{id}            closes the connection
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  channelError,
  ErrorCode,
  errorHttpStatus,
  type ErrorCodeValue,
} from '@switchboard/protocol';
import type { Logger } from 'pino';
import type { Broker } from '../broker/broker.js';
import type { Connection, ConnectionHandler } from './transport.js';
import {
  CONNECTION_ID,
  decodeFrames,
  newConnectionId,
  openingSubscribes,
  type HeldConnection,
  type HeldHost,
} from './http-session.js';
import { PollConnection, type PollResponder } from './long-polling.js';
import { SseConnection } from './sse.js';
import { decodeEventId } from './stream-state.js';
import { readBody } from '../api/body.js';
import { ReplyError } from '../errors.js';

/** A refusal at the door: HTTP status and JSON error (as admission.ts gives). */
export interface HttpRefusal {
  readonly status: number;
  readonly code: number;
  readonly message: string;
  /** Sent as `Retry-After` (seconds). */
  readonly retryAfterS?: number;
}

/** What the transports need of the node: control topics (node.ts) and the broker's publish. */
export interface ControlBus {
  onControlTopic(topic: string, handler: (payload: Buffer) => void): Promise<void>;
  offControlTopic(topic: string): void;
  readonly broker: Pick<Broker, 'publishControl'>;
}

export interface HttpTransportsOptions {
  readonly node: ControlBus;
  readonly maxMessageBytes: number;
  readonly maxBodyBytes: number;
  readonly maxOutboundBytes: number;
  readonly pingIntervalMs: number;
  readonly logger: Logger;
  /** Called for each new connection, as for WebSocket; returns what receives its frames. */
  readonly accept: (conn: Connection, req: IncomingMessage) => ConnectionHandler;
  /** Called whenever the server closes a connection, with the code. */
  readonly onDisconnect?: (code: number) => void;
  /** Checked on every request (`opening`: it opens a connection); a refusal is answered as is. */
  readonly admit?: (req: IncomingMessage, opening: boolean) => HttpRefusal | undefined;
}

/** Command frames one POST may carry. */
export const MAX_FRAMES_PER_POST = 1000;
/** Extra time an asking node gives the holder of a forwarded poll before answering 503. */
const FORWARD_GRACE_MS = 3000;

const POLL_PATH = /^\/poll\/([^/]+)$/;
const CONNECTION_PATH = /^\/connections\/([^/]+)(\/commands)?$/;

/** Messages on a connection's topic: commands, a forwarded poll, a close request. */
const COMMANDS = 'c';
const POLL = 'p';
const CLOSE = 'x';

interface Route {
  readonly method: string;
  /** Whether the request opens a connection (admission counts it). */
  readonly opens: boolean;
  readonly run: (req: IncomingMessage, res: ServerResponse) => Promise<void>;
}

interface ForwardedPoll {
  readonly respond: PollResponder;
  readonly timer: NodeJS.Timeout;
}

class RouteError extends Error {
  readonly code: ErrorCodeValue;
  readonly status: number;
  readonly retryAfterS: number | undefined;
  constructor(
    code: ErrorCodeValue,
    message: string,
    status: number = errorHttpStatus[code],
    retryAfterS?: number,
  ) {
    super(message);
    this.code = code;
    this.status = status;
    this.retryAfterS = retryAfterS;
  }
}

export class HttpTransports {
  readonly #o: HttpTransportsOptions;
  readonly #held = new Map<string, HeldConnection>();
  /** Held connections that ended for their client too and stay only to answer a late poll. */
  readonly #ended = new Set<HeldConnection>();
  readonly #host: HeldHost;
  /** This node's topic for answers to polls it forwarded, subscribed on first use. */
  readonly #nodeTopic = `node:${randomBytes(9).toString('base64url')}`;
  #nodeTopicReady: Promise<void> | undefined;
  #nextRequest = 0;
  readonly #forwarded = new Map<number, ForwardedPoll>();
  #timer: NodeJS.Timeout | undefined;
  #draining = false;

  constructor(options: HttpTransportsOptions) {
    this.#o = options;
    this.#host = {
      maxOutboundBytes: options.maxOutboundBytes,
      pingIntervalMs: options.pingIntervalMs,
      forget: (conn) => this.#forget(conn),
      ended: (conn) => {
        if (this.#held.get(conn.id) === conn) this.#ended.add(conn);
      },
      disconnected: (code) => options.onDisconnect?.(code),
    };
  }

  /** Open connections held by this node (not those that ended and linger for a last poll). */
  get connections(): number {
    return this.#held.size - this.#ended.size;
  }

  /** A request listener that serves the transports' routes and passes any other request on. */
  before(
    next: (req: IncomingMessage, res: ServerResponse) => void,
  ): (req: IncomingMessage, res: ServerResponse) => void {
    return (req, res) => {
      if (!this.handle(req, res)) next(req, res);
    };
  }

  /** Starts the heartbeat and idle timer. */
  start(): void {
    this.#timer = setInterval(() => {
      const now = Date.now();
      for (const conn of this.#held.values()) conn.tick(now);
    }, this.#o.pingIntervalMs);
    this.#timer.unref();
  }

  /**
   * Serves the request when its path is one of the transports'; false leaves it to the next
   * handler (the REST API).
   */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const route = this.#routeOf(q === -1 ? url : url.slice(0, q));
    if (route === undefined) return false;
    const methods = route.method;
    const cors = corsHeaders(req);
    if (req.method === 'OPTIONS') {
      res
        .writeHead(204, {
          ...cors,
          'access-control-allow-methods': methods,
          'access-control-allow-headers': 'content-type, last-event-id',
          'access-control-max-age': '600',
        })
        .end();
      return true;
    }
    const run = async (): Promise<void> => {
      if (req.method !== methods) {
        res.setHeader('allow', `${methods}, OPTIONS`);
        throw new RouteError(
          ErrorCode.METHOD_NOT_ALLOWED,
          `${req.method ?? '?'} is not allowed here; use ${methods}`,
        );
      }
      const refusal = this.#o.admit?.(req, route.opens);
      if (refusal !== undefined)
        throw new RouteError(
          refusal.code as ErrorCodeValue,
          refusal.message,
          refusal.status,
          refusal.retryAfterS,
        );
      await route.run(req, res);
    };
    run().catch((err: unknown) => {
      if (err instanceof RouteError) {
        const headers =
          err.retryAfterS === undefined
            ? cors
            : // A browser's fetch sees Retry-After only when it is exposed.
              {
                ...cors,
                'retry-after': String(err.retryAfterS),
                'access-control-expose-headers': 'retry-after',
              };
        sendJson(res, err.status, { error: err.message, code: err.code }, headers);
        return;
      }
      if (err instanceof ReplyError) {
        sendJson(res, errorHttpStatus[err.code], { error: err.message, code: err.code }, cors);
        return;
      }
      this.#o.logger.error({ err }, 'http transport request failed');
      sendJson(res, 500, { error: 'internal error', code: ErrorCode.INTERNAL }, cors);
    });
    return true;
  }

  #routeOf(path: string): Route | undefined {
    if (path === '/sse') return { method: 'GET', opens: true, run: (q, s) => this.#openSse(q, s) };
    if (path === '/poll')
      return { method: 'POST', opens: true, run: (q, s) => this.#openPoll(q, s) };
    const poll = POLL_PATH.exec(path);
    if (poll !== null) {
      const id = poll[1] as string;
      return { method: 'GET', opens: false, run: (q, s) => this.#poll(q, s, id) };
    }
    const conn = CONNECTION_PATH.exec(path);
    if (conn === null) return undefined;
    const id = conn[1] as string;
    return conn[2] === undefined
      ? { method: 'DELETE', opens: false, run: (q, s) => this.#delete(q, s, id) }
      : { method: 'POST', opens: false, run: (q, s) => this.#commands(q, s, id) };
  }

  /**
   * Refuses new connections from now on and returns the held ones, for the drain to ask them to
   * leave one by one.
   */
  beginDrain(): { close(code: number, reason: string): void }[] {
    this.#draining = true;
    return [...this.#held.values()];
  }

  /**
   * Closes every held connection with `code` (SSE: a close event; long-polling: told to the
   * waiting poll); resolves when the streams ended and polls were answered, or after `timeoutMs`.
   */
  async closeAll(code: number, reason: string, timeoutMs: number): Promise<void> {
    this.#draining = true;
    clearInterval(this.#timer);
    for (const conn of this.#held.values()) conn.close(code, reason);
    const deadline = Date.now() + timeoutMs;
    // Until SSE streams ended and long-polls collected their close (connections counts both).
    while (Date.now() < deadline && this.connections > 0)
      await new Promise((r) => setTimeout(r, 20));
    // Give waiting polls the turn in which they are answered.
    await new Promise((r) => setTimeout(r, 10));
    for (const conn of [...this.#held.values()]) this.#forget(conn);
    for (const [id, f] of this.#forwarded) {
      clearTimeout(f.timer);
      this.#forwarded.delete(id);
      f.respond(
        503,
        JSON.stringify({ error: 'server shutting down', code: ErrorCode.NOT_AVAILABLE }),
      );
    }
  }

  async #openSse(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const params = this.#openParams(req);
    const header = req.headers['last-event-id'];
    const lastId = params.get('lastEventId') ?? (typeof header === 'string' ? header : undefined);
    const resume = lastId === undefined ? undefined : decodeEventId(lastId);
    if (lastId !== undefined && resume === undefined)
      throw new RouteError(
        ErrorCode.BAD_REQUEST,
        'Last-Event-ID is not an event id this server wrote',
      );
    const subscribes = openingSubscribes(urlChannels(params), resume);
    const conn = new SseConnection(this.#host, newConnectionId(), res);
    await this.#hold(conn);
    if (conn.closed) return; // the client left while the topic was subscribed
    conn.open(corsHeaders(req));
    conn.handler = this.#o.accept(conn, req);
    conn.commands(subscribes);
  }

  async #openPoll(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const params = this.#openParams(req);
    const subscribes = openingSubscribes(urlChannels(params), undefined);
    const conn = new PollConnection(this.#host, newConnectionId());
    await this.#hold(conn);
    conn.handler = this.#o.accept(conn, req);
    sendJson(
      res,
      200,
      { connection: conn.id, transport: 'long-polling', cursor: 0, pollTimeoutMs: conn.maxWaitMs },
      corsHeaders(req),
    );
    conn.commands(subscribes);
  }

  #openParams(req: IncomingMessage): URLSearchParams {
    if (this.#draining) throw new RouteError(ErrorCode.NOT_AVAILABLE, 'server shutting down');
    return new URL(req.url ?? '/', 'http://localhost').searchParams;
  }

  /** Registers the connection and subscribes its topic; commands can reach it once this resolves. */
  async #hold(conn: HeldConnection): Promise<void> {
    this.#held.set(conn.id, conn);
    try {
      await this.#o.node.onControlTopic(`conn:${conn.id}`, (payload) =>
        this.#onTopic(conn, payload),
      );
    } catch (err) {
      this.#forget(conn);
      this.#o.logger.warn({ err }, 'could not subscribe a connection topic');
      throw new RouteError(ErrorCode.NOT_AVAILABLE, 'broker unavailable, retry later');
    }
  }

  #forget(conn: HeldConnection): void {
    if (this.#held.get(conn.id) !== conn) return;
    this.#held.delete(conn.id);
    this.#ended.delete(conn);
    this.#o.node.offControlTopic(`conn:${conn.id}`);
  }

  /** A message for a connection this node holds. */
  #onTopic(conn: HeldConnection, payload: Buffer): void {
    const text = payload.toString('utf8');
    const kind = text[0] ?? '';
    switch (kind) {
      case COMMANDS:
        // Text between nodes; decoded once, here, where the session is.
        conn.commands(decodeFrames(text.slice(1).split('\n')));
        return;
      case CLOSE:
        conn.release();
        return;
      case POLL: {
        let p: { n: string; r: number; c: number; w: number };
        try {
          p = JSON.parse(text.slice(1)) as typeof p;
        } catch {
          return;
        }
        const answer: PollResponder = (status, body) => {
          this.#o.node.broker
            .publishControl(p.n, `${p.r}\n${status}\n${body}`)
            .catch((err: unknown) =>
              this.#o.logger.warn({ err }, 'could not answer a forwarded poll'),
            );
        };
        if (conn instanceof PollConnection && this.#held.get(conn.id) === conn)
          conn.poll(p.c, p.w, answer);
        else answer(404, JSON.stringify(unknownConnection()));
        return;
      }
      default:
        return;
    }
  }

  /** An answer to a poll this node forwarded. */
  #onNodeTopic(payload: Buffer): void {
    const text = payload.toString('utf8');
    const a = text.indexOf('\n');
    const b = text.indexOf('\n', a + 1);
    const request = Number(text.slice(0, a));
    const f = this.#forwarded.get(request);
    if (f === undefined) return;
    this.#forwarded.delete(request);
    clearTimeout(f.timer);
    f.respond(Number(text.slice(a + 1, b)), text.slice(b + 1));
  }

  async #commands(req: IncomingMessage, res: ServerResponse, id: string): Promise<void> {
    if (!CONNECTION_ID.test(id)) throw unknown();
    const body = await readBody(req, this.#o.maxBodyBytes);
    const frames = body.split('\n').filter((line) => line.trim() !== '');
    if (frames.length === 0)
      throw new RouteError(ErrorCode.BAD_REQUEST, 'no command frames in the body');
    if (frames.length > MAX_FRAMES_PER_POST)
      throw new RouteError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        `at most ${MAX_FRAMES_PER_POST} frames per request`,
      );
    for (const frame of frames) {
      if (Buffer.byteLength(frame) > this.#o.maxMessageBytes)
        throw new RouteError(
          ErrorCode.PAYLOAD_TOO_LARGE,
          `a frame is larger than maxMessageBytes (${this.#o.maxMessageBytes})`,
        );
    }
    await this.#forward(id, COMMANDS + frames.join('\n'));
    sendJson(res, 202, { ok: true, frames: frames.length }, corsHeaders(req));
  }

  async #delete(req: IncomingMessage, res: ServerResponse, id: string): Promise<void> {
    if (!CONNECTION_ID.test(id)) throw unknown();
    await this.#forward(id, CLOSE);
    sendJson(res, 200, { ok: true }, corsHeaders(req));
  }

  async #poll(req: IncomingMessage, res: ServerResponse, id: string): Promise<void> {
    if (!CONNECTION_ID.test(id)) throw unknown();
    const params = new URL(req.url ?? '/', 'http://localhost').searchParams;
    const rawCursor = params.get('cursor');
    if (rawCursor === null || !/^\d{1,15}$/.test(rawCursor))
      throw new RouteError(
        ErrorCode.BAD_REQUEST,
        'cursor must be the number of the last frame received (0 at first)',
      );
    const rawWait = params.get('wait');
    if (rawWait !== null && !/^\d{1,9}$/.test(rawWait))
      throw new RouteError(ErrorCode.BAD_REQUEST, 'wait must be a number of milliseconds');
    const cursor = Number(rawCursor);
    const wait = Math.min(
      rawWait === null ? this.#o.pingIntervalMs : Number(rawWait),
      this.#o.pingIntervalMs,
    );
    const cors = corsHeaders(req);
    let answered = false;
    const respond: PollResponder = (status, body) => {
      if (answered) return;
      answered = true;
      if (res.destroyed) return;
      res
        .writeHead(status, {
          ...cors,
          'content-type': 'application/json; charset=utf-8',
          'content-length': Buffer.byteLength(body),
          'cache-control': 'no-store',
        })
        .end(body);
    };
    const local = this.#held.get(id);
    if (local instanceof PollConnection) {
      local.poll(cursor, wait, respond);
      return;
    }
    if (local !== undefined)
      throw new RouteError(ErrorCode.BAD_REQUEST, 'not a long-polling connection');
    this.#nodeTopicReady ??= this.#o.node.onControlTopic(this.#nodeTopic, (p) =>
      this.#onNodeTopic(p),
    );
    try {
      await this.#nodeTopicReady;
    } catch {
      this.#nodeTopicReady = undefined;
      throw new RouteError(ErrorCode.NOT_AVAILABLE, 'broker unavailable, retry later');
    }
    const request = ++this.#nextRequest;
    const timer = setTimeout(() => {
      this.#forwarded.delete(request);
      respond(
        503,
        JSON.stringify({
          error: 'the node holding this connection did not answer; open a new connection',
          code: ErrorCode.NOT_AVAILABLE,
        }),
      );
    }, wait + FORWARD_GRACE_MS);
    this.#forwarded.set(request, { respond, timer });
    res.once('close', () => {
      if (!res.writableEnded) {
        clearTimeout(timer);
        this.#forwarded.delete(request);
      }
    });
    try {
      await this.#forward(
        id,
        POLL + JSON.stringify({ n: this.#nodeTopic, r: request, c: cursor, w: wait }),
      );
    } catch (err) {
      clearTimeout(timer);
      this.#forwarded.delete(request);
      throw err;
    }
  }

  /** Publishes to the connection's topic; 404 when no node holds it. */
  async #forward(id: string, payload: string): Promise<void> {
    let receivers: number;
    try {
      receivers = await this.#o.node.broker.publishControl(`conn:${id}`, payload);
    } catch (err) {
      this.#o.logger.warn({ err }, 'could not forward to a connection');
      throw new RouteError(ErrorCode.NOT_AVAILABLE, 'broker unavailable, retry later');
    }
    if (receivers === 0) throw unknown();
  }
}

function unknownConnection(): { error: string; code: number } {
  return {
    error: 'unknown connection: it was closed, timed out or never existed; open a new one',
    code: ErrorCode.NOT_FOUND,
  };
}

function unknown(): RouteError {
  return new RouteError(ErrorCode.NOT_FOUND, unknownConnection().error);
}

function urlChannels(params: URLSearchParams): string[] {
  const channels = [...new Set(params.getAll('channel'))];
  for (const c of channels) {
    const why = channelError(c);
    if (why !== undefined) throw new RouteError(ErrorCode.INVALID_CHANNEL, why);
  }
  return channels;
}

/**
 * Lets browser pages of other origins use the transports, as they may use the WebSocket (which
 * has no CORS); `admit` refuses origins that are not allowed before any of this is sent.
 */
function corsHeaders(req: IncomingMessage): Record<string, string> {
  const origin = req.headers.origin;
  return origin === undefined
    ? { 'access-control-allow-origin': '*' }
    : { 'access-control-allow-origin': origin, vary: 'origin' };
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>>,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res
    .writeHead(status, {
      ...headers,
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
      'cache-control': 'no-store',
      // A body we stopped reading (413) must not be left to poison the keep-alive connection.
      ...(status === 413 && { connection: 'close' }),
    })
    .end(text);
}
