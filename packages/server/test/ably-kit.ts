/**
 * The official `ably` SDK against a Switchboard server, through its public API only, plus a raw
 * WebSocket client speaking the Ably framing for bad input.
 */
import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import * as Ably from 'ably';
import { Packr } from 'msgpackr';
import { WebSocket } from 'ws';

/** Keys in Ably's form; secrets meet Switchboard's 16-byte minimum. */
export const KEY_ALL = 'app.all:secret-all-0123456789';
export const KEY_SUB = 'app.sub:secret-sub-0123456789';
export const API_KEYS = [
  {
    name: 'app.all',
    secret: 'secret-all-0123456789',
    capabilities: { '*': ['subscribe', 'publish', 'presence', 'history'] },
  },
  {
    name: 'app.sub',
    secret: 'secret-sub-0123456789',
    capabilities: { '*': ['subscribe', 'history'] },
  },
];

export type Format = 'json' | 'msgpack';

const packr = new Packr({ useRecords: false });
export const FORMATS: readonly Format[] = ['json', 'msgpack'];

/** Client options; `key: undefined` drops the default key (token auth). */
export type Options = Omit<Partial<Ably.ClientOptions>, 'key'> & { key?: string | undefined };

function clientOptions(port: number, format: Format, options: Options): Ably.ClientOptions {
  const o: Options = {
    key: KEY_ALL,
    endpoint: '127.0.0.1',
    port,
    tls: false,
    useBinaryProtocol: format === 'msgpack',
    logLevel: 0,
    ...options,
  };
  if (o.key === undefined) delete o.key;
  return o as Ably.ClientOptions;
}

export function realtime(port: number, format: Format, options: Options = {}): Ably.Realtime {
  return new Ably.Realtime(clientOptions(port, format, options));
}

export function rest(port: number, format: Format, options: Options = {}): Ably.Rest {
  return new Ably.Rest(clientOptions(port, format, options));
}

/**
 * `connection.ping()` with its timeout timer unref'd. The SDK (ably 2.28, utils.withTimeoutAsync)
 * races the heartbeat against a realtimeRequestTimeout (10 s) timer that it never clears, so one
 * ping kept the test process alive 10 s after its last test. The timer is made synchronously
 * inside ping(), through the SDK's own setTimeout, which is swapped for that call only.
 */
export function ping(conn: Ably.Connection): Promise<number> {
  const config = (Ably.Realtime as unknown as { Platform: { Config: { setTimeout: Timer } } })
    .Platform.Config;
  const set = config.setTimeout;
  config.setTimeout = (fn, ms) => set(fn, ms).unref();
  try {
    return conn.ping();
  } finally {
    config.setTimeout = set;
  }
}
type Timer = (fn: () => void, ms: number) => NodeJS.Timeout;

/** Resolves with the state change that reaches `state` (or rejects on failed when not asked for). */
export function reach(
  conn: Ably.Connection,
  state: Ably.ConnectionState,
  timeoutMs = 10_000,
): Promise<Ably.ConnectionStateChange | undefined> {
  if (conn.state === state) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`connection stayed ${conn.state}, wanted ${state}`)),
      timeoutMs,
    );
    const on = (change: Ably.ConnectionStateChange): void => {
      if (change.current === state) {
        clearTimeout(timer);
        conn.off(on);
        resolve(change);
      } else if (change.current === 'failed') {
        clearTimeout(timer);
        conn.off(on);
        reject(
          Object.assign(new Error(`connection failed: ${change.reason?.message}`), { change }),
        );
      }
    };
    conn.on(on);
  });
}

/** Collects a channel's messages; `next(n)` waits until n have arrived. */
export class Inbox {
  readonly messages: Ably.InboundMessage[] = [];
  #waiters: (() => void)[] = [];

  readonly listener = (m: Ably.InboundMessage): void => {
    this.messages.push(m);
    for (const w of this.#waiters) w();
  };

  async count(n: number, timeoutMs = 10_000): Promise<Ably.InboundMessage[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.messages.length < n) {
      if (Date.now() > deadline)
        throw new Error(`got ${this.messages.length} messages, wanted ${n}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 100);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
      this.#waiters = [];
    }
    return this.messages;
  }
}

/** A raw WebSocket speaking the Ably framing (bad input, the load generator's view). */
export class RawAbly {
  readonly ws: WebSocket;
  readonly frames: Record<string, unknown>[] = [];
  closed = false;
  readonly format: Format;
  #waiters: (() => void)[] = [];

  constructor(port: number, query: string, format: Format = 'json') {
    this.format = format;
    this.ws = new WebSocket(`ws://127.0.0.1:${port}/?v=6&format=${format}&${query}`);
    this.ws.on('message', (data: Buffer, isBinary: boolean) => {
      this.frames.push(
        (isBinary ? packr.unpack(data) : JSON.parse(data.toString())) as Record<string, unknown>,
      );
      for (const w of this.#waiters) w();
    });
    this.ws.on('close', () => {
      this.closed = true;
      for (const w of this.#waiters) w();
    });
  }

  send(pm: unknown): void {
    this.ws.send(this.format === 'json' ? JSON.stringify(pm) : packr.pack(pm));
  }

  sendRaw(data: string | Buffer): void {
    this.ws.send(data);
  }

  async frame(
    match: (f: Record<string, unknown>) => boolean,
    timeoutMs = 5000,
  ): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames.find(match);
      if (f !== undefined) return f;
      if (Date.now() > deadline)
        throw new Error(`no matching frame in ${JSON.stringify(this.frames)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 100);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
      this.#waiters = [];
    }
  }

  async closedNow(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error('socket still open');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  close(): void {
    this.ws.close();
  }
}

/**
 * A TCP proxy between the SDK and a node: its target can change (resume on another node), its
 * connections can all be cut at once (a transport lost under the SDK), new ones refused.
 */
export class CuttingProxy {
  readonly server: Server;
  target: number;
  /** While true, new connections are closed as soon as they are accepted. */
  refuse = false;
  /** cut() calls so far. */
  cuts = 0;
  readonly #sockets = new Set<Socket>();

  constructor(target: number) {
    this.target = target;
    this.server = createServer((client) => {
      if (this.refuse) {
        client.destroy();
        return;
      }
      const upstream = createConnection({ host: '127.0.0.1', port: this.target });
      this.#sockets.add(client).add(upstream);
      const drop = (): void => {
        client.destroy();
        upstream.destroy();
        this.#sockets.delete(client);
        this.#sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream).pipe(client);
    });
  }

  async listen(): Promise<number> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return (this.server.address() as { port: number }).port;
  }

  cut(): void {
    this.cuts++;
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  async close(): Promise<void> {
    this.cut();
    this.server.close();
    await once(this.server, 'close');
  }
}
