/**
 * An HTTP proxy for fault injection between the SDK and a real server, playing the middleboxes
 * that break realtime transports: it can refuse WebSocket upgrades (403), swallow them (no answer,
 * so the client times out), buffer streaming responses until they end (as a buffering proxy does
 * to SSE), or cut every connection.
 */
import { once } from 'node:events';
import {
  createServer,
  request,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';

export type UpgradeMode = 'pass' | 'refuse' | 'hang';

export class HttpProxy {
  readonly #server: Server;
  readonly #target: number;
  readonly #sockets = new Set<Duplex>();
  upgrades: UpgradeMode = 'pass';
  /** Hold event-stream responses until they end. */
  bufferStreams = false;
  /** Upgrade requests seen, whatever their fate. */
  upgradeAttempts = 0;
  /** Requests seen per path (query stripped). */
  readonly requests = new Map<string, number>();

  private constructor(server: Server, target: number) {
    this.#server = server;
    this.#target = target;
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.#forward(req, res));
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.#upgrade(req, socket, head),
    );
    server.on('connection', (s: Socket) => this.#track(s));
  }

  static async start(targetPort: number): Promise<HttpProxy> {
    const server = createServer();
    const proxy = new HttpProxy(server, targetPort);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return proxy;
  }

  get port(): number {
    return (this.#server.address() as { port: number }).port;
  }

  wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  count(path: string): number {
    return this.requests.get(path) ?? 0;
  }

  /** Destroys every open connection (clients see a reset). */
  cut(): void {
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  async close(): Promise<void> {
    this.cut();
    this.#server.close();
    await once(this.#server, 'close');
  }

  #track(s: Duplex): void {
    this.#sockets.add(s);
    s.on('close', () => this.#sockets.delete(s));
    s.on('error', () => s.destroy());
  }

  #forward(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?', 1)[0] as string;
    this.requests.set(path, this.count(path) + 1);
    const up = request(
      {
        host: '127.0.0.1',
        port: this.#target,
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (upRes) => {
        const streaming = String(upRes.headers['content-type']).startsWith('text/event-stream');
        if (streaming && this.bufferStreams) {
          const chunks: Buffer[] = [];
          upRes.on('data', (c: Buffer) => chunks.push(c));
          upRes.on('end', () => {
            res.writeHead(upRes.statusCode ?? 502, upRes.headers).end(Buffer.concat(chunks));
          });
          upRes.on('error', () => res.destroy());
          return;
        }
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
        upRes.on('error', () => res.destroy());
      },
    );
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  }

  #upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.upgradeAttempts++;
    this.#track(socket);
    if (this.upgrades === 'refuse') {
      socket.end('HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    if (this.upgrades === 'hang') return;
    const up = connect(this.#target, '127.0.0.1');
    this.#track(up);
    up.on('connect', () => {
      let raw = `${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2)
        raw += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      up.write(raw + '\r\n');
      if (head.length > 0) up.write(head);
      socket.pipe(up).pipe(socket);
    });
    up.on('close', () => socket.destroy());
    socket.on('close', () => up.destroy());
  }
}
