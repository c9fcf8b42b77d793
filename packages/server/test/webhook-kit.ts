/**
 * A real HTTP webhook receiver for the webhook tests: records every request (headers and the raw
 * body, as a receiver would verify it), answers with the status it is told, can hang (never
 * answer) or be taken down and brought back on the same port.
 */
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { Socket } from 'node:net';

export interface Received {
  readonly headers: IncomingHttpHeaders;
  readonly raw: string;
  readonly body: {
    id: string;
    type: string;
    at: number;
    channel: string;
    data: Record<string, unknown>;
  };
}

export class Receiver {
  readonly received: Received[] = [];
  /** Status to answer; 0 = never answer (the request hangs until the client gives up). */
  status = 200;
  port = 0;
  /** Requests open now (received, not yet answered or given up by the client), and the most seen. */
  inFlight = 0;
  maxInFlight = 0;
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();

  static async start(): Promise<Receiver> {
    const r = new Receiver();
    await r.up();
    return r;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  /** Starts listening (on the same port as before, after down()). */
  async up(): Promise<void> {
    const server = createServer((req, res) => {
      this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
      res.on('close', () => this.inFlight--);
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        this.received.push({
          headers: req.headers,
          raw,
          body: JSON.parse(raw) as Received['body'],
        });
        if (this.status !== 0) res.writeHead(this.status).end();
      });
    });
    server.on('connection', (s: Socket) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
    server.listen(this.port, '127.0.0.1');
    await once(server, 'listening');
    this.port = (server.address() as { port: number }).port;
    this.#server = server;
  }

  /** Stops listening and drops every connection: requests are refused until up(). */
  async down(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    this.#server = undefined;
    for (const s of this.#sockets) s.destroy();
    server.close();
    await once(server, 'close');
  }

  /** Received bodies of one type (optionally on one channel). */
  of(type: string, channel?: string): Received[] {
    return this.received.filter(
      (r) => r.body.type === type && (channel === undefined || r.body.channel === channel),
    );
  }

  /** How often each event id arrived. */
  counts(): Map<string, number> {
    const m = new Map<string, number>();
    for (const r of this.received) m.set(r.body.id, (m.get(r.body.id) ?? 0) + 1);
    return m;
  }
}
