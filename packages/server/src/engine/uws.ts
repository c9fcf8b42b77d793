/**
 * The edge on uWebSockets.js: one native server for WebSocket and HTTP (REST API, SSE,
 * long-polling, through the node:http-shaped adapter in uws-http.ts). Fan-out uses uWS topics:
 * a subscribed socket joins its channel's topic and the Hub hands each turn's frames to the engine
 * once per channel, so a delivery costs no JavaScript at all.
 *
 * Topics are per channel and per framing: `p<channel>` for plain clients (one WebSocket message
 * per frame), `b<channel>` for `switchboard.v1` clients (a turn's frames joined by '\n').
 */
import { STATUS_CODES } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type {
  HttpRequest,
  HttpResponse,
  TemplatedApp,
  WebSocket,
  WebSocketBehavior,
  us_listen_socket,
} from 'uWebSockets.js';
import {
  BATCH_SUBPROTOCOL,
  BINARY_REFUSED_FRAME,
  DisconnectCode,
  ErrorCode,
} from '@switchboard/protocol';
import type { Refusal } from '../admission.js';
import { joinFrames, type TopicPublisher, type TopicSink } from '../hub.js';
import {
  BaseConnection,
  OutboundQueue,
  type Connection,
  type ConnectionHandler,
  type RequestInfo,
  type TopicBroadcaster,
  type TransportHost,
} from './transport.js';
import { Heartbeat, type Beating } from './heartbeat.js';
import type { UwsModule } from './uws-load.js';
import type { WsEngineOptions } from './ws.js';
import { UwsRequest, UwsResponse, pipeBody, requestInfo } from './uws-http.js';

/** The ws engine's options, plus the HTTP listener: uWS serves HTTP on the same port itself. */
export interface UwsEngineOptions extends WsEngineOptions {
  /** Every plain HTTP request, presented as node:http's request and response. */
  readonly request: (req: UwsRequest, res: UwsResponse) => void;
}

interface UserData {
  /** The upgrade request, until the session has read it (then dropped: it is ~1 KiB). */
  info: RequestInfo | undefined;
  readonly batched: boolean;
  /** The native protocol's or a dialect's (by the path upgraded). */
  readonly accept: (conn: Connection, req: RequestInfo) => ConnectionHandler;
  conn?: UwsConnection;
}

/**
 * uWS skips a socket over maxBackpressure in a topic publish, or, with closeOnBackpressureLimit,
 * drops it without a close frame. Neither is how a slow client should learn it was too slow, so
 * the engine closes it itself, with 3008, once it is past maxOutboundBytes: every 100 ms it reads
 * the backlog of up to BACKLOG_CHECKS sockets (all of them, below that count) and of every socket
 * found backlogged before. A burst cannot outrun the check: once the frames published since the
 * last sweep add up to a share of BURST_MARGIN (smaller the more rounds a sweep of every socket
 * takes), the next publish sweeps first. So every socket is looked at before it could pass uWS's
 * own limit, BURST_MARGIN above ours, where uWS would drop it without a close frame (1006, which
 * under CPU load, with late timers, is what slow clients used to see): the close with 3008 is
 * queued while there is still room for it (#15.3).
 */
const BURST_MARGIN = 4 * 1024 * 1024;
const BACKLOG_SWEEP_MS = 100;
const BACKLOG_CHECKS = 2000;
const PLAIN = 'p';
const BATCHED = 'b';

/**
 * One uWS socket as a Connection that subscribes through native topics. Its outbound queue is
 * uWS's backpressure (getBufferedAmount), which topic publishes grow without a JavaScript call:
 * the sweep reads it through backlog(), the same check as every write's.
 */
class UwsConnection extends BaseConnection implements TopicSink, Beating {
  readonly transport = 'websocket';
  readonly topics = true;
  readonly batched: boolean;
  readonly #prefix: string;
  readonly ws: WebSocket<UserData>;
  readonly engine: UwsEngine;
  protected readonly outbound: OutboundQueue;
  alive = true;
  /** uWS ran its close handler: the socket object must not be touched any more. */
  gone = false;
  /** Frames received but not handled yet (see UwsEngine.#receive). */
  inbox: string[] = [];
  inboxBytes = 0;
  handledThisTurn = 0;
  busy = false;

  /** Text frames written but not handed to uWS yet (see UwsEngine.corked); in order. */
  #pending: (Buffer | string)[] = [];
  #pendingBytes = 0;

  constructor(engine: UwsEngine, ws: WebSocket<UserData>, batched: boolean) {
    super(engine);
    this.engine = engine;
    this.ws = ws;
    this.batched = batched;
    this.#prefix = batched ? BATCHED : PLAIN;
    this.outbound = new OutboundQueue(() =>
      this.gone ? 0 : ws.getBufferedAmount() + this.#pendingBytes,
    );
  }

  protected write(frame: Buffer | string): void {
    if (this.#pending.length === 0) this.engine.corked(this);
    this.#pending.push(frame);
    this.#pendingBytes += frame.length;
    if (this.#pendingBytes >= CORK_MAX_BYTES) this.flush();
  }

  /** Hands the pending frames to uWS in one corked write (one syscall, not one per frame). */
  flush(): void {
    const pending = this.#pending;
    if (pending.length === 0) return;
    this.#pending = [];
    this.#pendingBytes = 0;
    if (this.gone) return;
    if (pending.length === 1) this.ws.send(pending[0] as Buffer | string, false);
    else this.ws.cork(() => sendAll(this.ws, pending));
  }

  sendBinary(frame: Buffer): void {
    this.writeGuarded(() => {
      this.flush();
      this.ws.send(frame, true);
    });
  }

  join(channel: string): void {
    if (!this.closed) this.ws.subscribe(this.#prefix + channel);
  }

  joinTopic(topic: string): void {
    if (!this.closed) this.ws.subscribe(topic);
  }

  leaveTopic(topic: string): void {
    if (!this.closed) this.ws.unsubscribe(topic);
  }

  leave(channel: string): void {
    // uWS drops a closed socket from every topic itself.
    if (!this.closed) this.ws.unsubscribe(this.#prefix + channel);
  }

  protected end(code: number, reason: string): void {
    // What was written before the close goes out before it.
    this.flush();
    // end() runs uWS's close handler at once, inside our caller's stack (see the handler).
    this.ws.end(code, reason);
  }

  override abort(): void {
    if (!this.gone) this.ws.close();
  }

  ping(): void {
    this.ws.ping();
  }

  terminate(): void {
    if (this.closed) return;
    this.closed = true;
    this.ws.close();
  }
}

function sendAll(ws: WebSocket<UserData>, frames: readonly (Buffer | string)[]): void {
  for (const frame of frames) ws.send(frame, false);
}

/**
 * Pending bytes of one connection past which its frames are handed to uWS at once, without
 * waiting for the turn's flush: a big reply is not held back, and the backlog stays uWS's.
 */
const CORK_MAX_BYTES = 64 * 1024;

/** Frames of one connection handled per turn of the event loop. */
const FRAMES_PER_TURN = 16;
/** Characters of frames one connection may have waiting (about 1 MiB of ASCII JSON). */
const MAX_INBOX_CHARS = 1024 * 1024;

/** Held refusals at once, at most: each holds a socket. */
const MAX_HELD_REFUSALS = 256;

function refuse(res: HttpResponse, refusal: Refusal): void {
  const body = JSON.stringify({ error: refusal.message, code: refusal.code });
  res.cork(() => {
    res
      .writeStatus(`${refusal.status} ${STATUS_CODES[refusal.status] ?? ''}`)
      .writeHeader('content-type', 'application/json');
    if (refusal.retryAfterS !== undefined)
      res.writeHeader('retry-after', String(refusal.retryAfterS));
    res.end(body, true);
  });
}

/** Why a request's body framing is unacceptable, or undefined when it is fine. */
function bodyFramingError(
  length: string | string[] | undefined,
  encoding: string | string[] | undefined,
): string | undefined {
  if (length === undefined) return undefined;
  if (typeof length !== 'string' || !/^\d{1,15}$/.test(length))
    return 'Content-Length must be one decimal number';
  if (encoding !== undefined) return 'Content-Length and Transfer-Encoding cannot both be given';
  return undefined;
}

export class UwsEngine implements TopicPublisher, TopicBroadcaster, TransportHost {
  readonly maxOutboundBytes: number;
  readonly #options: UwsEngineOptions;
  readonly #app: TemplatedApp;
  readonly #connections = new Set<UwsConnection>();
  readonly #heartbeat: Heartbeat<UwsConnection>;
  #listenSocket: us_listen_socket | undefined;
  readonly #uws: UwsModule;
  readonly #sweep: NodeJS.Timeout;
  #round: UwsConnection[] = [];
  /** Connections that had frames handled in this turn of the event loop. */
  #busy: UwsConnection[] = [];
  #turnScheduled = false;
  /** Refused upgrades waiting for their answer (Refusal.holdMs). */
  #held = 0;
  /** Sockets found with a backlog: looked at every sweep until they drained. */
  readonly #backlogged = new Set<UwsConnection>();
  /** Bytes every subscriber of a topic may have gained since the last sweep. */
  #publishedSinceSweep = 0;
  /** Connections with frames written in this turn and not handed to uWS yet. */
  #corked: UwsConnection[] = [];
  #flushScheduled = false;

  constructor(uws: UwsModule, options: UwsEngineOptions) {
    this.#uws = uws;
    this.#options = options;
    this.maxOutboundBytes = options.maxOutboundBytes;
    this.#app = uws.App();
    this.#app.ws<UserData>(options.path, this.#behavior(options.accept));
    for (const d of options.dialects ?? [])
      this.#app.ws<UserData>(d.path, this.#behavior(d.accept));
    this.#app.any('/*', (res, req) => this.#http(res, req));
    this.#heartbeat = new Heartbeat(
      options.pingIntervalMs,
      () => this.#connections,
      () => options.onDisconnect?.(DisconnectCode.NO_PONG),
    );
    this.#sweep = setInterval(() => this.#checkBacklogs(), BACKLOG_SWEEP_MS);
    this.#sweep.unref();
  }

  /** One WebSocket route's handlers; `accept` makes the session (native or a dialect's). */
  #behavior(
    accept: (conn: Connection, req: RequestInfo) => ConnectionHandler,
  ): WebSocketBehavior<UserData> {
    const options = this.#options;
    return {
      maxPayloadLength: options.maxMessageBytes,
      // Our heartbeat (same as the ws engine's) decides who is dead; uWS's 4 s-granular idle
      // timer would not honour short ping intervals.
      idleTimeout: 0,
      sendPingsAutomatically: false,
      // Never skip a socket silently in a publish: past this, uWS closes it (see BACKLOG_SWEEP_MS).
      maxBackpressure: options.maxOutboundBytes + BURST_MARGIN,
      closeOnBackpressureLimit: 1,
      compression:
        options.perMessageDeflate === true
          ? this.#uws.DEDICATED_COMPRESSOR_4KB | this.#uws.DEDICATED_DECOMPRESSOR_4KB
          : this.#uws.DISABLED,
      upgrade: (res, req, context) => this.#upgrade(res, req, context, accept),
      open: (ws) => this.#open(ws),
      message: (ws, message, isBinary) => {
        const conn = ws.getUserData().conn;
        if (conn === undefined || conn.handler === undefined) return;
        if (isBinary) {
          // The ArrayBuffer is uWS's and only valid during this call: copy it.
          if (conn.handler.onBinary !== undefined)
            conn.handler.onBinary(Buffer.from(new Uint8Array(message)));
          else conn.sendText(BINARY_REFUSED_FRAME);
          return;
        }
        this.#receive(conn, Buffer.from(message).toString());
      },
      pong: (ws) => {
        const conn = ws.getUserData().conn;
        if (conn !== undefined) conn.alive = true;
      },
      close: (ws) => {
        const conn = ws.getUserData().conn;
        if (conn === undefined) return;
        conn.gone = true;
        this.#connections.delete(conn);
        this.#backlogged.delete(conn);
        if (conn.closed) {
          // We closed it, maybe from inside the session: tell the session once its call returned,
          // as the ws engine does.
          setImmediate(() => conn.handler?.onClose());
          return;
        }
        conn.closed = true;
        conn.handler?.onClose();
      },
    };
  }

  #checkBacklogs(): void {
    this.#publishedSinceSweep = 0;
    for (const conn of this.#backlogged) if (conn.backlog() === 0) this.#backlogged.delete(conn);
    if (this.#round.length === 0) this.#round = [...this.#connections];
    for (const conn of this.#round.splice(0, BACKLOG_CHECKS)) {
      if (conn.backlog() > 0) this.#backlogged.add(conn);
    }
  }

  get connections(): number {
    return this.#connections.size;
  }

  disconnected(code: number): void {
    this.#options.onDisconnect?.(code);
  }

  /**
   * `conn` has its first pending frame of the turn. uWS writes each send outside its own callbacks
   * at once (one syscall per reply: replies resolve in promise callbacks), so a connection's frames
   * of one turn are held and handed over corked, in one write, at the end of the turn (a
   * setImmediate) or before anything else could reach a socket: every topic publish flushes every
   * connection first, and a close flushes its own. So no live frame of a topic can overtake a reply
   * or replay written before it (a subscribe's reply and replay still precede the channel's frames).
   */
  corked(conn: UwsConnection): void {
    this.#corked.push(conn);
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(this.#flushTurn);
  }

  readonly #flushTurn = (): void => {
    this.#flushScheduled = false;
    this.#flush();
  };

  #flush(): void {
    if (this.#corked.length === 0) return;
    const corked = this.#corked;
    this.#corked = [];
    for (const conn of corked) conn.flush();
  }

  publishTopic(topic: string, frame: Buffer | string, binary: boolean): void {
    this.#flush();
    this.#app.publish(topic, frame, binary);
  }

  publish(channel: string, frames: readonly Buffer[]): void {
    this.#flush();
    const rounds = Math.ceil(this.#connections.size / BACKLOG_CHECKS) || 1;
    const budget = BURST_MARGIN / 2 / rounds;
    // A turn's frames may be megabytes (a batch POST): published in slices, sweeping between.
    let slice: Buffer[] = [];
    let bytes = 0;
    for (const frame of frames) {
      if (this.#publishedSinceSweep + bytes + frame.length + 1 > budget) {
        if (slice.length > 0) this.#publishNow(channel, slice);
        this.#checkBacklogs();
        slice = [];
        bytes = 0;
      }
      slice.push(frame);
      bytes += frame.length + 1;
    }
    this.#publishedSinceSweep += bytes;
    if (slice.length > 0) this.#publishNow(channel, slice);
  }

  #publishNow(channel: string, frames: readonly Buffer[]): void {
    const app = this.#app;
    const plain = PLAIN + channel;
    const batched = BATCHED + channel;
    if (frames.length === 1) {
      const frame = frames[0] as Buffer;
      app.publish(plain, frame, false);
      app.publish(batched, frame, false);
      return;
    }
    if (app.numSubscribers(batched) > 0) app.publish(batched, joinFrames(frames), false);
    if (app.numSubscribers(plain) > 0) for (const frame of frames) app.publish(plain, frame, false);
  }

  /**
   * Binds `host:port` (0 picks a free port) exclusively; resolves with the port bound. uSockets
   * sets SO_REUSEPORT by default, so a second node on a taken port used to start and split the
   * traffic with the first, each with its own state (#15.1); ws (node:http) fails instead.
   */
  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      (this.#app as unknown as ListenWithOptions).listen(
        host,
        port,
        LIBUS_LISTEN_EXCLUSIVE_PORT,
        (socket) => {
          if (socket === false) {
            bindError(host, port).then(reject, reject);
            return;
          }
          this.#listenSocket = socket;
          resolve(this.#uws.us_socket_local_port(socket));
        },
      );
    });
  }

  /** Stops accepting new connections. */
  stopListening(): void {
    if (this.#listenSocket === undefined) return;
    this.#uws.us_listen_socket_close(this.#listenSocket);
    this.#listenSocket = undefined;
  }

  /**
   * Ends every socket still open, idle HTTP keep-alive ones included, as the ws edge does with
   * closeAllConnections: without it a client's keep-alive connection outlived the stop, and so
   * did the process embedding the node (for up to the client's keep-alive timeout, 4 s in fetch).
   */
  closeRemaining(): void {
    // In the native module of every build we load, not in the typings of each.
    (this.#app as { close?: () => void }).close?.();
  }

  /** The open WebSockets, for the drain to ask them to leave one by one. */
  open(): UwsConnection[] {
    return [...this.#connections];
  }

  /** Closes every WebSocket with `code`; the close frames leave at once, nothing to wait for. */
  closeAll(code: number, reason: string): Promise<void> {
    this.#heartbeat.stop();
    clearInterval(this.#sweep);
    for (const conn of [...this.#connections]) conn.close(code, reason);
    return Promise.resolve();
  }

  #upgrade(
    res: HttpResponse,
    req: HttpRequest,
    context: unknown,
    accept: (conn: Connection, req: RequestInfo) => ConnectionHandler,
  ): void {
    const info = requestInfo(res, req);
    const key = req.getHeader('sec-websocket-key');
    const protocols = req.getHeader('sec-websocket-protocol');
    const extensions = req.getHeader('sec-websocket-extensions');
    const refusal = this.#options.admit?.(info);
    if (refusal !== undefined) {
      this.#options.onDisconnect?.(refusal.status);
      if (refusal.holdMs !== undefined && this.#held < MAX_HELD_REFUSALS) this.#hold(res, refusal);
      else refuse(res, refusal);
      return;
    }
    const batched = protocols.split(',').some((p) => p.trim() === BATCH_SUBPROTOCOL);
    const data: UserData = { info, batched, accept };
    res.upgrade(data, key, batched ? BATCH_SUBPROTOCOL : '', extensions, context as never);
  }

  /**
   * uWS hands over everything one read brought (up to 512 KiB: thousands of frames) in one go. A
   * client that sends a burst would hold the event loop for as long as its frames take while
   * every other socket waits, so each connection gets FRAMES_PER_TURN frames handled per turn of
   * the loop and the rest wait in its inbox, like the ws engine with allowSynchronousEvents off.
   * The inbox is bounded in bytes; a frame that does not fit is refused as one over the rate
   * (onDropped with its text: error 111, counted towards 3011).
   */
  #receive(conn: UwsConnection, text: string): void {
    if (conn.inbox.length === 0 && conn.handledThisTurn < FRAMES_PER_TURN) {
      if (conn.handledThisTurn++ === 0) this.#markBusy(conn);
      conn.handler?.onFrame(text);
      return;
    }
    if (conn.inboxBytes + text.length > MAX_INBOX_CHARS) {
      conn.handler?.onDropped?.(text);
      return;
    }
    conn.inbox.push(text);
    conn.inboxBytes += text.length;
    this.#markBusy(conn);
  }

  #markBusy(conn: UwsConnection): void {
    if (conn.busy) return;
    conn.busy = true;
    this.#busy.push(conn);
    if (!this.#turnScheduled) {
      this.#turnScheduled = true;
      setImmediate(this.#nextTurn);
    }
  }

  /** A new turn: every connection may have FRAMES_PER_TURN frames handled again. */
  readonly #nextTurn = (): void => {
    this.#turnScheduled = false;
    const busy = this.#busy;
    this.#busy = [];
    for (const conn of busy) {
      conn.busy = false;
      conn.handledThisTurn = 0;
      if (conn.closed) {
        conn.inbox = [];
        conn.inboxBytes = 0;
        continue;
      }
      while (conn.inbox.length > 0 && conn.handledThisTurn < FRAMES_PER_TURN) {
        const text = conn.inbox.shift() as string;
        conn.inboxBytes -= text.length;
        conn.handledThisTurn++;
        conn.handler?.onFrame(text);
      }
      if (conn.handledThisTurn > 0) this.#markBusy(conn);
    }
  };

  /** Answers `refusal` after its holdMs, unless the client gave up first. */
  #hold(res: HttpResponse, refusal: Refusal): void {
    let aborted = false;
    this.#held++;
    res.onAborted(() => {
      aborted = true;
    });
    setTimeout(() => {
      this.#held--;
      if (!aborted) refuse(res, refusal);
    }, refusal.holdMs).unref();
  }

  #open(ws: WebSocket<UserData>): void {
    const data = ws.getUserData();
    const conn = new UwsConnection(this, ws, data.batched);
    data.conn = conn;
    this.#connections.add(conn);
    const info = data.info as RequestInfo;
    data.info = undefined;
    conn.handler = data.accept(conn, info);
  }

  #http(res: HttpResponse, req: HttpRequest): void {
    const method = req.getCaseSensitiveMethod();
    const info = requestInfo(res, req);
    // An upgrade on any other path than the WebSocket one: node:http's engine answers 404 too.
    if (info.headers.upgrade !== undefined) {
      res.cork(() => {
        res.writeStatus('404 Not Found').end('', true);
      });
      return;
    }
    const length = info.headers['content-length'];
    const framing = bodyFramingError(length, info.headers['transfer-encoding']);
    if (framing !== undefined) {
      // uWS v20.30 takes these as they come; node:http and NGINX refuse them, and so do we:
      // two lengths (a joined "5, 6") or a length beside chunked encoding is how requests are
      // smuggled past a proxy that reads the other one.
      refuse(res, { status: 400, code: ErrorCode.BAD_REQUEST, message: framing });
      return;
    }
    const response = new UwsResponse(res, method === 'HEAD');
    const request = new UwsRequest(info, method);
    if (
      info.headers['transfer-encoding'] !== undefined ||
      (length !== undefined && length !== '0')
    ) {
      pipeBody(res, response, request);
    } else {
      request.push(null);
    }
    try {
      this.#options.request(request, response);
    } catch (err) {
      this.#options.logger.error({ err }, 'HTTP handler threw');
      if (!response.writableEnded) response.writeHead(500).end();
    }
  }
}

/** uSockets' listen option that leaves SO_REUSEPORT off (the typings declare it in a const enum). */
const LIBUS_LISTEN_EXCLUSIVE_PORT = 1;

/** The native listen(host, port, options, cb), which v20.30's typings omit. */
interface ListenWithOptions {
  listen(
    host: string,
    port: number,
    options: number,
    cb: (socket: us_listen_socket | false) => void,
  ): unknown;
}

/**
 * Why uWS could not bind (it only says false): the same bind through node:net names the errno,
 * so both engines fail with the same EADDRINUSE / EACCES error.
 */
function bindError(host: string, port: number): Promise<Error> {
  return new Promise((resolve) => {
    const probe = createNetServer();
    probe.once('error', (err) => resolve(err));
    probe.listen({ host, port, exclusive: true }, () =>
      probe.close(() => resolve(new Error(`listen: uWebSockets.js cannot bind ${host}:${port}`))),
    );
  });
}
