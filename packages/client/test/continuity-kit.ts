/**
 * Helpers for the continuity tests: a fault proxy that resets connections (RST, no close frame) or
 * cuts one on a server frame, a WebSocket class that tallies resumes and their answers, a cleanup
 * stack that also kills child processes if the test process dies, paced publishing, /metrics.
 * Real processes and sockets only.
 */
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { WebSocket } from 'ws';
import {
  eventually,
  startNodeProcess,
  startRedis,
  type NodeProcess,
  type RedisProcess,
} from '../../server/test/helpers.js';
import { Switchboard, type SwitchboardOptions, type WebSocketConstructor } from '../src/index.js';

// ---------------------------------------------------------------------------------------------
// Cleanup

/**
 * Pids of every child started here; killed if the test process exits (or is interrupted or
 * terminated, e.g. by the runner's timeout) before its cleanup ran.
 */
const children = new Set<number>();
function killChildren(): void {
  for (const pid of children) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
}
process.once('exit', killChildren);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killChildren();
    // Then die of the same signal, as without this handler.
    process.kill(process.pid, signal);
  });
}

/** Cleanup functions run in reverse order; every one runs even when an earlier one throws. */
export class Cleanup {
  readonly #fns: (() => unknown)[] = [];

  add(fn: () => unknown): void {
    this.#fns.push(fn);
  }

  async run(): Promise<void> {
    const errors: unknown[] = [];
    for (const fn of this.#fns.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw errors[0];
  }
}

export async function redisFor(cleanup: Cleanup): Promise<RedisProcess> {
  const redis = await startRedis();
  const pid = redis.pid;
  children.add(pid);
  cleanup.add(async () => {
    await redis.stop(true);
    children.delete(pid);
    children.delete(redis.pid);
  });
  return redis;
}

/** A switchboard process on `redis`, stopped (SIGKILL if it will not exit) at cleanup. */
export async function nodeFor(
  cleanup: Cleanup,
  redis: RedisProcess,
  args: string[] = [],
): Promise<NodeProcess> {
  const node = await startNodeProcess(['--redis', redis.url, ...args]);
  const pid = node.child.pid as number;
  children.add(pid);
  cleanup.add(async () => {
    const timer = setTimeout(() => node.child.kill('SIGKILL'), 5000);
    await node.stop();
    clearTimeout(timer);
    children.delete(pid);
  });
  return node;
}

/** Tracks the redis-server pid across restarts (restart() starts a new process). */
export async function restartRedis(redis: RedisProcess): Promise<void> {
  children.delete(redis.pid);
  await redis.restart();
  children.add(redis.pid);
}

// ---------------------------------------------------------------------------------------------
// Fault proxy

interface Pair {
  readonly client: Socket;
  readonly upstream: Socket;
}

export interface FaultProxyOptions {
  /**
   * Looks at each chunk going server → client before it is forwarded; returning true resets both
   * sockets instead of forwarding it.
   */
  readonly cutOnServerData?: (chunk: Buffer) => boolean;
}

/**
 * A TCP proxy in front of one node. `reset()` drops every connection abruptly: both sides get an
 * RST (socket.resetAndDestroy), nothing in flight is forwarded, no WebSocket close frame is sent.
 */
export class FaultProxy {
  readonly #server: Server;
  readonly #target: number;
  readonly #options: FaultProxyOptions;
  readonly #pairs = new Set<Pair>();
  /** While true, new connections are reset as soon as they are accepted. */
  refusing = false;
  accepted = 0;
  /** Connections reset by reset() or by cutOnServerData. */
  resets = 0;

  private constructor(server: Server, target: number, options: FaultProxyOptions) {
    this.#server = server;
    this.#target = target;
    this.#options = options;
    server.on('connection', (socket) => this.#accept(socket));
  }

  static async start(
    cleanup: Cleanup,
    targetPort: number,
    options: FaultProxyOptions = {},
  ): Promise<FaultProxy> {
    const server = createServer({ noDelay: true });
    const proxy = new FaultProxy(server, targetPort, options);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    cleanup.add(() => proxy.close());
    return proxy;
  }

  get port(): number {
    return (this.#server.address() as { port: number }).port;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get connections(): number {
    return this.#pairs.size;
  }

  /** Resets every current connection; returns how many. */
  reset(): number {
    const n = this.#pairs.size;
    for (const pair of [...this.#pairs]) this.#kill(pair);
    this.resets += n;
    return n;
  }

  async close(): Promise<void> {
    this.refusing = true;
    for (const pair of [...this.#pairs]) this.#kill(pair);
    this.#server.close();
    await once(this.#server, 'close');
  }

  #kill(pair: Pair): void {
    this.#pairs.delete(pair);
    pair.client.resetAndDestroy();
    pair.upstream.resetAndDestroy();
  }

  #accept(client: Socket): void {
    this.accepted++;
    if (this.refusing) {
      client.resetAndDestroy();
      return;
    }
    client.setNoDelay(true);
    const upstream = connect({ port: this.#target, host: '127.0.0.1', noDelay: true });
    const pair: Pair = { client, upstream };
    this.#pairs.add(pair);
    const end = (): void => {
      if (!this.#pairs.delete(pair)) return;
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', end);
      s.on('close', end);
    }
    client.pipe(upstream);
    const cut = this.#options.cutOnServerData;
    if (cut === undefined) {
      upstream.pipe(client);
      return;
    }
    upstream.on('data', (chunk: Buffer) => {
      if (!this.#pairs.has(pair)) return;
      if (cut(chunk)) {
        this.resets++;
        this.#kill(pair);
      } else {
        client.write(chunk);
      }
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Resume tally

/** What one resume (a subscribe with `since`) was answered. */
export interface ResumeAnswer {
  readonly channel: string;
  readonly since: { readonly offset: number; readonly epoch: string };
  readonly recovered: boolean | undefined;
  readonly position: { readonly offset: number; readonly epoch: string } | undefined;
}

/**
 * Counts, from the wire, every subscribe-with-`since` the SDK sends and the `recovered` flag of its
 * reply. A false recovery is `recovered: true` for a position of another epoch.
 */
export class ResumeTally {
  sent = 0;
  readonly answers: ResumeAnswer[] = [];
  /** Resumes answered with an error frame (e.g. temporarily unavailable). */
  errors = 0;

  get recovered(): number {
    return this.answers.filter((a) => a.recovered === true).length;
  }

  get unrecovered(): number {
    return this.answers.filter((a) => a.recovered !== true).length;
  }

  get falseRecoveries(): number {
    return this.answers.filter(
      (a) => a.recovered === true && a.position !== undefined && a.position.epoch !== a.since.epoch,
    ).length;
  }

  /** Sent but never answered: the connection dropped first. */
  get interrupted(): number {
    return this.sent - this.answers.length - this.errors;
  }

  summary(): string {
    return (
      `resumes sent=${this.sent} recovered=${this.recovered} unrecovered=${this.unrecovered} ` +
      `falseRecoveries=${this.falseRecoveries} errors=${this.errors} interrupted=${this.interrupted}`
    );
  }
}

type Pending = Map<number, { channel: string; since: { offset: number; epoch: string } }>;

const REPLY = Buffer.from('"reply"');

/** A `ws` WebSocket class whose instances report resumes and their replies to `tally`. */
export function tallyingWebSocket(tally: ResumeTally): WebSocketConstructor {
  return class Tallying extends WebSocket {
    readonly #pending: Pending = new Map();

    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      // Added before the SDK sets onmessage, so it sees each reply before the SDK acts on it.
      this.on('message', (data: Buffer) => this.#incoming(data));
    }

    override send(data: string, ...rest: unknown[]): void {
      if (data.includes('"action":"subscribe"')) {
        const cmd = JSON.parse(data) as Record<string, unknown>;
        const since = cmd['since'] as { offset: number; epoch: string } | undefined;
        if (since !== undefined && typeof cmd['id'] === 'number') {
          tally.sent++;
          this.#pending.set(cmd['id'], { channel: String(cmd['channel']), since });
        }
      }
      (super.send as (...args: unknown[]) => void).call(this, data, ...rest);
    }

    #incoming(data: Buffer): void {
      // Cheap byte checks first: nearly every message is a push, and pushes carry no "reply".
      if (this.#pending.size === 0 || !data.includes(REPLY)) return;
      for (const line of data.toString().split('\n')) {
        if (!line.includes('"reply"')) continue;
        const f = JSON.parse(line) as Record<string, unknown>;
        const id = f['reply'];
        const pending = typeof id === 'number' ? this.#pending.get(id) : undefined;
        if (pending === undefined) continue;
        this.#pending.delete(id as number);
        if (f['error'] !== undefined) {
          tally.errors++;
          continue;
        }
        const position = f['position'] as { offset: number; epoch: string } | undefined;
        tally.answers.push({
          ...pending,
          recovered: typeof f['recovered'] === 'boolean' ? f['recovered'] : undefined,
          position,
        });
      }
    }
  };
}

// ---------------------------------------------------------------------------------------------
// SDK clients

/** An SDK client on `ws`, closed at cleanup. */
export function sdkClient(cleanup: Cleanup, options: SwitchboardOptions): Switchboard {
  const c = new Switchboard({ WebSocket, ...options });
  cleanup.add(() => c.close());
  return c;
}

/** Counts a client's connection state changes from now on. */
export function stateLog(c: Switchboard): string[] {
  const log: string[] = [];
  c.connection.on('change', (x) => log.push(`${x.current}${x.reason ? `(${x.reason.code})` : ''}`));
  return log;
}

// ---------------------------------------------------------------------------------------------
// Pacing, REST, metrics

/**
 * Calls `tick` `perSecond` times a second on average until stopped (catching up after a late
 * timer, so the rate holds under load).
 */
export function pace(
  perSecond: number,
  tick: (i: number) => void,
): { stop(): void; count(): number } {
  const t0 = performance.now();
  let done = 0;
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - t0) / 1000) * perSecond);
    while (done < due) tick(done++);
  }, 5);
  return {
    stop: () => clearInterval(timer),
    count: () => done,
  };
}

/** The sum of every sample of metric `name` whose labels include `labels`, from a node's /metrics. */
export async function metric(
  node: NodeProcess,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const res = await fetch(`${node.url}/metrics`);
  const text = await res.text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m === null || m[1] !== name) continue;
    const labelText = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`)))
      sum += Number(m[3]);
  }
  return sum;
}

/** A channel's stored messages through REST (GET /v1/channels/{c}/messages), all pages. */
export async function restHistory(
  node: NodeProcess,
  channel: string,
): Promise<{ id: string; offset: number; epoch: string; message: unknown }[]> {
  const out: { id: string; offset: number; epoch: string; message: unknown }[] = [];
  let cursor: string | null = null;
  do {
    const q: string = cursor === null ? 'limit=1000' : `limit=1000&cursor=${cursor}`;
    const res = await fetch(`${node.url}/v1/channels/${encodeURIComponent(channel)}/messages?${q}`);
    if (res.status !== 200)
      throw new Error(`history ${channel}: ${res.status} ${await res.text()}`);
    const body = (await res.json()) as { messages: never[]; next: string | null };
    out.push(...body.messages);
    cursor = body.next;
  } while (cursor !== null);
  return out;
}

/** Waits until every node is ready (broker connected). */
export async function ready(nodes: readonly NodeProcess[], timeoutMs = 10_000): Promise<void> {
  for (const node of nodes)
    await eventually(
      async () => (await fetch(`${node.url}/readyz`).then((r) => r.status)) === 200,
      timeoutMs,
      `${node.url} ready`,
    );
}
