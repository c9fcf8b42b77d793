/**
 * A TCP proxy for fault injection between a client and a real server: it can cut connections,
 * refuse new ones, or silently stop forwarding (a dead link that TCP does not report).
 */
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
  toServer: boolean;
  toClient: boolean;
}

export class TcpProxy {
  readonly #server: Server;
  readonly #target: number;
  readonly #pairs = new Set<Pair>();
  /** While true, new connections are closed as soon as they are accepted. */
  refusing = false;
  /** Connections accepted so far (refused ones included). */
  accepted = 0;

  private constructor(server: Server, target: number) {
    this.#server = server;
    this.#target = target;
    server.on('connection', (socket) => this.#accept(socket));
  }

  static async start(targetPort: number): Promise<TcpProxy> {
    const server = createServer();
    const proxy = new TcpProxy(server, targetPort);
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

  /** Stops forwarding on the current connections, in one or both directions, without closing them. */
  blackhole(direction: 'both' | 'toClient' = 'both'): void {
    for (const pair of this.#pairs) {
      pair.toClient = false;
      if (direction === 'both') pair.toServer = false;
    }
  }

  /** Destroys every current connection (both sides see a reset). */
  cut(): void {
    for (const pair of this.#pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    this.#pairs.clear();
  }

  async close(): Promise<void> {
    this.cut();
    this.#server.close();
    await once(this.#server, 'close');
  }

  #accept(client: Socket): void {
    this.accepted++;
    if (this.refusing) {
      client.destroy();
      return;
    }
    const upstream = connect(this.#target, '127.0.0.1');
    const pair: Pair = { client, upstream, toServer: true, toClient: true };
    this.#pairs.add(pair);
    client.on('data', (d: Buffer) => {
      if (pair.toServer) upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (pair.toClient) client.write(d);
    });
    const end = (): void => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
  }
}
