import { STATUS_CODES, type IncomingMessage, type Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { BATCH_SUBPROTOCOL, BINARY_REFUSED_FRAME, DisconnectCode } from '@switchboard/protocol';
import type { Logger } from 'pino';
import type { Refusal } from '../admission.js';
import type { Connection, ConnectionHandler, Dialect, RequestInfo } from './connection.js';
import { Heartbeat, type Beating } from './heartbeat.js';

export interface WsEngineOptions {
  readonly path: string;
  readonly maxMessageBytes: number;
  readonly maxOutboundBytes: number;
  readonly pingIntervalMs: number;
  readonly logger: Logger;
  /** Called for each new connection; returns what receives its frames. */
  readonly accept: (conn: Connection, req: RequestInfo) => ConnectionHandler;
  /** Called whenever the server closes a connection, with the code. */
  readonly onDisconnect?: (code: number) => void;
  /** Checked before the upgrade: a refusal is answered with its HTTP status and a JSON body. */
  readonly admit?: (req: RequestInfo) => Refusal | undefined;
  /** Compression; off by default, and bounded when on. */
  readonly perMessageDeflate?: boolean;
  /** Other WebSocket protocols, each on its own path. */
  readonly dialects?: readonly Dialect[];
}

/** A slow client gets this long to take its close frame before the socket is destroyed. */
const SLOW_CLOSE_GRACE_MS = 2000;
const TEXT = { binary: false } as const;
const BINARY = { binary: true } as const;

/** One ws socket as a Connection. */
class WsConnection implements Connection, Beating {
  readonly transport = 'websocket';
  readonly batched: boolean;
  readonly ws: WebSocket;
  handler: ConnectionHandler | undefined;
  alive = true;
  closed = false;
  readonly engine: WsEngine;
  #resumeTimer: NodeJS.Timeout | undefined;

  /** The TCP socket under `ws`, corked around a burst so that it leaves in one write. */
  readonly #socket: Duplex;

  constructor(engine: WsEngine, ws: WebSocket, socket: Duplex) {
    this.engine = engine;
    this.ws = ws;
    this.#socket = socket;
    this.batched = ws.protocol === BATCH_SUBPROTOCOL;
  }

  get queuedBytes(): number {
    return this.ws.bufferedAmount;
  }

  send(frame: Buffer): void {
    if (this.closed) return;
    this.ws.send(frame, TEXT);
    if (this.ws.bufferedAmount > this.engine.maxOutboundBytes) this.#tooSlow();
  }

  /** A turn's frames for a plain (one message per frame) client: one syscall, not one each. */
  sendMany(frames: readonly Buffer[]): void {
    if (this.closed) return;
    this.#socket.cork();
    for (const frame of frames) this.ws.send(frame, TEXT);
    this.#socket.uncork();
    if (this.ws.bufferedAmount > this.engine.maxOutboundBytes) this.#tooSlow();
  }

  sendText(frame: string): void {
    if (this.closed) return;
    this.ws.send(frame);
    if (this.ws.bufferedAmount > this.engine.maxOutboundBytes) this.#tooSlow();
  }

  sendBinary(frame: Buffer): void {
    if (this.closed) return;
    this.ws.send(frame, BINARY);
    if (this.ws.bufferedAmount > this.engine.maxOutboundBytes) this.#tooSlow();
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.engine.disconnected(code);
    // A paused socket would never read the client's answering close frame.
    this.#resume();
    this.ws.close(code, reason);
  }

  ping(): void {
    this.ws.ping();
  }

  terminate(): void {
    this.ws.terminate();
  }

  pauseReading(ms: number): void {
    if (this.closed || this.#resumeTimer !== undefined) return;
    this.ws.pause();
    this.#resumeTimer = setTimeout(() => this.#resume(), ms);
  }

  #resume(): void {
    if (this.#resumeTimer === undefined) return;
    clearTimeout(this.#resumeTimer);
    this.#resumeTimer = undefined;
    this.ws.resume();
  }

  #tooSlow(): void {
    this.close(DisconnectCode.SLOW, 'too slow: outbound queue full');
    // The close frame sits behind everything the client has not read; do not wait 30 s for it.
    setTimeout(terminate, SLOW_CLOSE_GRACE_MS, this.ws).unref();
  }
}

function terminate(ws: WebSocket): void {
  ws.terminate();
}

const owners = new WeakMap<WebSocket, WsConnection>();

function socketOnMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  const conn = owners.get(this);
  if (conn === undefined || conn.handler === undefined) return;
  if (isBinary) {
    if (conn.handler.onBinary !== undefined) conn.handler.onBinary(data);
    else conn.sendText(BINARY_REFUSED_FRAME);
    return;
  }
  conn.handler.onFrame(data.toString());
}

function socketOnPong(this: WebSocket): void {
  const conn = owners.get(this);
  if (conn !== undefined) conn.alive = true;
}

function socketOnClose(this: WebSocket): void {
  const conn = owners.get(this);
  if (conn === undefined) return;
  conn.closed = true;
  owners.delete(this);
  conn.engine.forget(conn);
  conn.handler?.onClose();
}

function socketOnError(this: WebSocket): void {
  // ws closes the socket itself (1002, 1007, 1009, ...) and then emits 'close'; nothing else to do.
}

/**
 * The WebSocket edge on the `ws` library: upgrades on `path`, text frames in, pre-encoded frames
 * out, one heartbeat timer for all sockets.
 */
export class WsEngine {
  readonly maxOutboundBytes: number;
  readonly #options: WsEngineOptions;
  readonly #wss: WebSocketServer;
  readonly #connections = new Set<WsConnection>();
  #heartbeat: Heartbeat<WsConnection> | undefined;

  constructor(options: WsEngineOptions) {
    this.#options = options;
    this.maxOutboundBytes = options.maxOutboundBytes;
    this.#wss = new WebSocketServer({
      noServer: true,
      maxPayload: options.maxMessageBytes,
      // Compression costs memory per socket and CPU per frame, and inflating is a bomb vector:
      // off unless asked for, then bounded (maxPayload also bounds the inflated size).
      perMessageDeflate:
        options.perMessageDeflate === true
          ? {
              threshold: 1024,
              concurrencyLimit: 10,
              serverMaxWindowBits: 12,
              clientMaxWindowBits: 12,
              zlibDeflateOptions: { memLevel: 7 },
            }
          : false,
      clientTracking: false,
      // One message per socket per turn of the event loop: a client that sends a 64 KiB chunk
      // of tiny frames (a flood) cannot hold the loop for tens of milliseconds while every other
      // socket waits; its frames are interleaved with everyone else's I/O (flood.test.ts).
      allowSynchronousEvents: false,
      handleProtocols: (protocols) =>
        protocols.has(BATCH_SUBPROTOCOL) ? BATCH_SUBPROTOCOL : false,
    });
  }

  get connections(): number {
    return this.#connections.size;
  }

  /** Handles upgrades of `server` on the engine's path; other upgrade requests get 404. */
  attach(server: HttpServer): void {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const path = (req.url ?? '/').split('?', 1)[0];
      const dialect = this.#options.dialects?.find((d) => d.path === path);
      if (path !== this.#options.path && dialect === undefined) {
        socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      const refusal = this.#options.admit?.(req);
      if (refusal !== undefined) {
        const body = JSON.stringify({ error: refusal.message, code: refusal.code });
        socket.end(
          `HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status] ?? ''}\r\nConnection: close\r\nContent-Type: application/json\r\n${refusal.retryAfterS === undefined ? '' : `Retry-After: ${refusal.retryAfterS}\r\n`}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
        );
        this.#options.onDisconnect?.(refusal.status);
        return;
      }
      const accept = dialect?.accept ?? this.#options.accept;
      this.#wss.handleUpgrade(req, socket, head, (ws) =>
        this.#onConnection(ws, req, socket, accept),
      );
    });
    this.#heartbeat = new Heartbeat(
      this.#options.pingIntervalMs,
      () => this.#connections,
      () => this.#options.onDisconnect?.(DisconnectCode.NO_PONG),
    );
  }

  forget(conn: WsConnection): void {
    this.#connections.delete(conn);
  }

  disconnected(code: number): void {
    this.#options.onDisconnect?.(code);
  }

  /** The open WebSockets, for the drain to ask them to leave one by one. */
  open(): WsConnection[] {
    return [...this.#connections];
  }

  /** Closes every connection with `code`; resolves when all are gone or after `timeoutMs`. */
  async closeAll(code: number, reason: string, timeoutMs: number): Promise<void> {
    this.#heartbeat?.stop();
    const open = [...this.#connections];
    const gone = open.map(
      (conn) =>
        new Promise<void>((resolve) => {
          if (conn.ws.readyState === conn.ws.CLOSED) resolve();
          else conn.ws.once('close', () => resolve());
        }),
    );
    for (const conn of open) conn.close(code, reason);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(gone),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    for (const conn of this.#connections) conn.ws.terminate();
    this.#wss.close();
  }

  #onConnection(
    ws: WebSocket,
    req: IncomingMessage,
    socket: Duplex,
    accept: (conn: Connection, req: RequestInfo) => ConnectionHandler,
  ): void {
    const conn = new WsConnection(this, ws, socket);
    owners.set(ws, conn);
    this.#connections.add(conn);
    ws.on('message', socketOnMessage);
    ws.on('pong', socketOnPong);
    ws.on('error', socketOnError);
    ws.on('close', socketOnClose);
    conn.handler = accept(conn, req);
  }
}
