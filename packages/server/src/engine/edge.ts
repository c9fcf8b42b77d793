/**
 * The edge as the composition root sees it: one listening server for WebSocket and HTTP, on
 * either engine. `ws` is node:http + the ws library; `uws` is uWebSockets.js, which also serves
 * HTTP and brings native topics for fan-out.
 */
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server as HttpServer,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Refusal } from '../admission.js';
import type { EngineName } from '../config.js';
import type { TopicPublisher } from '../hub.js';
import type {
  Connection,
  ConnectionHandler,
  Dialect,
  RequestInfo,
  TopicBroadcaster,
} from './transport.js';
import { UwsEngine } from './uws.js';
import type { UwsRequest, UwsResponse } from './uws-http.js';
import { loadUws } from './uws-load.js';
import { WsEngine } from './ws.js';

export interface EdgeOptions {
  readonly engine: EngineName;
  readonly path: string;
  readonly maxMessageBytes: number;
  readonly maxOutboundBytes: number;
  readonly pingIntervalMs: number;
  readonly perMessageDeflate: boolean;
  readonly httpHeadersTimeoutMs: number;
  readonly logger: Logger;
  readonly accept: (conn: Connection, req: RequestInfo) => ConnectionHandler;
  readonly admit: (req: RequestInfo) => Refusal | undefined;
  /** Other WebSocket protocols, each on its own path. */
  readonly dialects?: readonly Dialect[];
  readonly onDisconnect: (code: number) => void;
  /** Every other HTTP request (REST API, SSE, long-polling). */
  readonly request: (req: IncomingMessage, res: ServerResponse) => void;
}

export interface Edge {
  readonly engine: EngineName;
  /** WebSocket connections held. */
  readonly connections: number;
  /** Native fan-out for the Hub, when the engine has it. */
  readonly topics: TopicPublisher | undefined;
  /** Raw-named native topics (dialects' fan-out), when the engine has them. */
  readonly broadcaster: TopicBroadcaster | undefined;
  /** Binds and resolves with the port bound. */
  listen(host: string, port: number): Promise<number>;
  /** Stops accepting connections; open ones stay. */
  stopAccepting(): void;
  /** The open WebSockets (each closed by its own `close(code, reason)`), for the drain. */
  openWebSockets(): { close(code: number, reason: string): void }[];
  /** Closes every WebSocket with `code`; resolves when they are gone or after `timeoutMs`. */
  closeWebSockets(code: number, reason: string, timeoutMs: number): Promise<void>;
  /** Drops whatever HTTP connections are left (idle keep-alive). */
  closeRemaining(): void;
}

/** The configured engine; uws falls back to ws, with one log line, when it does not load. */
export function createEdge(o: EdgeOptions): Edge {
  if (o.engine === 'uws') {
    const loaded = loadUws();
    if ('uws' in loaded) {
      if (o.httpHeadersTimeoutMs !== 10_000) {
        o.logger.warn(
          'httpHeadersTimeoutMs applies to the ws engine only; uWebSockets.js has a fixed 10 s HTTP timeout',
        );
      }
      o.logger.info({ build: loaded.build }, 'uWebSockets.js loaded');
      return uwsEdge(new UwsEngine(loaded.uws, { ...o, request: asUws(o.request) }));
    }
    o.logger.warn(
      { reason: loaded.error },
      'uWebSockets.js did not load; falling back to the ws engine',
    );
  }
  return wsEdge(o);
}

/**
 * The uWS engine hands the listener its node:http-shaped request and response (uws-http.ts): the
 * subset the handlers use, checked by running the whole suite on both engines.
 */
function asUws(
  listener: (req: IncomingMessage, res: ServerResponse) => void,
): (req: UwsRequest, res: UwsResponse) => void {
  return listener as unknown as (req: UwsRequest, res: UwsResponse) => void;
}

function uwsEdge(engine: UwsEngine): Edge {
  return {
    engine: 'uws',
    get connections() {
      return engine.connections;
    },
    topics: engine,
    broadcaster: engine,
    listen: (host, port) => engine.listen(host, port),
    stopAccepting: () => engine.stopListening(),
    openWebSockets: () => engine.open(),
    closeWebSockets: (code, reason) => engine.closeAll(code, reason),
    closeRemaining: () => engine.closeRemaining(),
  };
}

function wsEdge(o: EdgeOptions): Edge {
  const engine = new WsEngine(o);
  const http: HttpServer = createHttpServer(
    // Node enforces headersTimeout/requestTimeout only when it sweeps its connections, every
    // connectionsCheckingInterval (30 s by default): a slowloris socket lived up to 30 s past
    // httpHeadersTimeoutMs. Sweep often enough that the timeout holds to within a quarter of it.
    {
      connectionsCheckingInterval: Math.max(250, Math.min(30_000, o.httpHeadersTimeoutMs / 4)),
    },
    o.request,
  );
  // Against slowloris: a client must send its headers, and its whole request, in bounded time.
  http.headersTimeout = o.httpHeadersTimeoutMs;
  http.requestTimeout = 30_000;
  http.keepAliveTimeout = 5_000;
  engine.attach(http);
  return {
    engine: 'ws',
    get connections() {
      return engine.connections;
    },
    topics: undefined,
    broadcaster: undefined,
    listen: (host, port) =>
      new Promise<number>((resolve, reject) => {
        http.once('error', reject);
        // A reconnect storm is thousands of SYNs at once: node's default backlog (511) drops the
        // rest, and each dropped client waits out SYN retries (1 s, 3 s, 7 s). The kernel caps it
        // at net.core.somaxconn.
        http.listen({ port, host, backlog: 4096 }, () => {
          http.off('error', reject);
          resolve((http.address() as AddressInfo).port);
        });
      }),
    stopAccepting: () => http.close(),
    openWebSockets: () => engine.open(),
    closeWebSockets: (code, reason, timeoutMs) => engine.closeAll(code, reason, timeoutMs),
    closeRemaining: () => http.closeAllConnections(),
  };
}
