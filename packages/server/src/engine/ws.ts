import { STATUS_CODES, type IncomingMessage, type Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { BATCH_SUBPROTOCOL, BINARY_REFUSED_FRAME, DisconnectCode } from '@switchboard/protocol';
import type { Logger } from 'pino';
import type { Refusal } from '../admission.js';
import {
  BaseConnection,
  OutboundQueue,
  type Connection,
  type ConnectionHandler,
  type Dialect,
  type RequestInfo,
  type TransportHost,
} from './transport.js';
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

const TEXT = { binary: false } as const;
const BINARY = { binary: true } as const;

/** One ws socket as a Connection; its outbound queue is the socket's bufferedAmount. */
class WsConnection extends BaseConnection implements Beating {
  readonly transport = 'websocket';
  readonly batched: boolean;
  readonly ws: WebSocket;
  alive = true;
  readonly engine: WsEngine;
  protected readonly outbound: OutboundQueue;
  #resumeTimer: NodeJS.Timeout | undefined;

  /** The TCP socket under `ws`, corked around a burst so that it leaves in one write. */
  readonly #socket: Duplex;

  constructor(engine: WsEngine, ws: WebSocket, socket: Duplex) {
    super(engine);
    this.engine = engine;
    this.ws = ws;
    this.#socket = socket;
    this.batched = ws.protocol === BATCH_SUBPROTOCOL;
    this.outbound = new OutboundQueue(() => ws.bufferedAmount);
  }

  protected write(frame: Buffer | string): void {
    if (typeof frame === 'string') this.ws.send(frame);
    else this.ws.send(frame, TEXT);
  }

  /** A turn's frames for a plain (one message per frame) client: one syscall, not one each. */
  protected override writeMany(frames: readonly Buffer[]): void {
    this.#socket.cork();
    for (const frame of frames) this.ws.send(frame, TEXT);
    this.#socket.uncork();
  }

  sendBinary(frame: Buffer): void {
    this.writeGuarded(() => this.ws.send(frame, BINARY));
  }

  protected end(code: number, reason: string): void {
    // A paused socket would never read the client's answering close frame.
    this.#resume();
    this.ws.close(code, reason);
  }

  override abort(): void {
    this.ws.terminate();
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
export class WsEngine implements TransportHost {
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
