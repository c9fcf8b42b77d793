/**
 * Test helpers: real servers, real Redis processes, real sockets. Nothing here mocks I/O.
 */
import { loadUws } from '../src/engine/uws-load.js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer as createNetServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { WebSocket } from 'ws';
import {
  createLogger,
  resolveConfig,
  startServer,
  type Config,
  type RunningServer,
} from '../src/index.js';

/** Limits raised for tests that are not about limits (later flags override these). */
export const TEST_LIMITS = {
  maxConnectionsPerIpPerSecond: 1_000_000,
  maxCommandsPerSecond: 1_000_000,
  commandBurst: 1_000_000,
  // Tests stop servers with clients still connected; the drain's spread has its own tests.
  drainWindowMs: 0,
  // A stop waits for every client to leave until this deadline, and a client a test cut off (or a
  // long-polling one nobody polls for) never does: with the default 15 s each such stop took 10 s
  // or more. Tests of the deadline itself set their own.
  shutdownTimeoutMs: 1000,
};

/**
 * `npm run test:soak` sets SWITCHBOARD_SOAK=1: the long variants of the chaos, parity, refresh and
 * fuzz tests run (60 s, 100,000 cases); the default run uses short variants of the same tests.
 */
export const SOAK = process.env['SWITCHBOARD_SOAK'] === '1';

/** A duration or count from `env` when set, else the soak or the default value. */
export function soakOr(env: string, soak: number, short: number): number {
  const raw = process.env[env];
  if (raw !== undefined && raw !== '') {
    const n = Number(raw);
    if (!(n > 0)) throw new Error(`${env} must be a positive number, got ${raw}`);
    return n;
  }
  return SOAK ? soak : short;
}

export const CLI = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));

/** Whether a binary exists. Under CI=true a missing binary fails the test instead of skipping it. */
export function requireBinary(name: string): string | false {
  const found = spawnSync('sh', ['-c', `command -v ${name}`]).status === 0;
  if (found) return false;
  const why = `${name} is not installed`;
  if (process.env['CI'] === 'true') throw new Error(`${why} (CI=true: required)`);
  process.stderr.write(`\n*** SKIPPING: ${why} ***\n\n`);
  return why;
}

export async function freePort(): Promise<number> {
  const srv = createNetServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  srv.close();
  await once(srv, 'close');
  return port;
}

/**
 * Resolves when `check` returns true, polling every `everyMs`; rejects after `timeoutMs`. `what`
 * may be a function, read at the timeout, to say what was seen instead.
 */
export async function eventually(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  what: string | (() => string) = 'condition',
  everyMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`,
      );
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * The engine under test: `npm test` runs the suite once per engine with SWITCHBOARD_ENGINE set;
 * spawned nodes read the same variable themselves.
 */
const TEST_ENGINE =
  process.env['SWITCHBOARD_ENGINE'] === undefined
    ? {}
    : { engine: process.env['SWITCHBOARD_ENGINE'] };

/** The engine the suite runs on: the one asked for, or the default (uws when it loads). */
export const ENGINE: 'uws' | 'ws' =
  process.env['SWITCHBOARD_ENGINE'] === 'ws' || 'error' in loadUws() ? 'ws' : 'uws';

/**
 * The close code a client sees when the server fails a connection on a protocol violation
 * (RFC 6455 7.1.7): the ws engine sends a close frame with `code` first (SHOULD); uWebSockets.js
 * drops the TCP connection without one, which clients report as 1006.
 */
export function failCode(code: number): number {
  return ENGINE === 'uws' ? 1006 : code;
}

/** An in-process server on a free port with test-friendly defaults. */
export async function startTestServer(
  overrides: Partial<Record<keyof Config, unknown>> = {},
): Promise<RunningServer & { url: string; wsUrl: string }> {
  const config = resolveConfig([
    {
      source: 'test',
      // Tests open many connections and commands at once from one address; the limits have their own tests.
      values: {
        port: 0,
        host: '127.0.0.1',
        logLevel: 'silent',
        ...TEST_ENGINE,
        ...TEST_LIMITS,
        ...overrides,
      },
    },
  ]);
  const server = await startServer(config, createLogger(config.logLevel));
  return {
    ...server,
    url: `http://127.0.0.1:${server.port}`,
    wsUrl: `ws://127.0.0.1:${server.port}/ws`,
  };
}

/** A log line the server wrote, parsed (pino's JSON: level 30 info, 40 warn, 50 error). */
export type LogLine = Record<string, unknown> & { level: number; msg?: string };

/**
 * A test server whose log lines (at `logLevel`, default info) are kept in `logs` instead of
 * being printed, for tests that assert what an operator would read.
 */
export async function startLoggedTestServer(
  overrides: Partial<Record<keyof Config, unknown>> = {},
): Promise<Awaited<ReturnType<typeof startTestServer>> & { logs: LogLine[] }> {
  const logs: LogLine[] = [];
  const config = resolveConfig([
    {
      source: 'test',
      values: {
        port: 0,
        host: '127.0.0.1',
        ...TEST_ENGINE,
        ...TEST_LIMITS,
        logLevel: 'info',
        ...overrides,
      },
    },
  ]);
  const logger = pino(
    { level: config.logLevel },
    { write: (line: string) => logs.push(JSON.parse(line) as LogLine) },
  );
  const server = await startServer(config, logger);
  return {
    ...server,
    url: `http://127.0.0.1:${server.port}`,
    wsUrl: `ws://127.0.0.1:${server.port}/ws`,
    logs,
  };
}

export interface RedisProcess {
  readonly port: number;
  readonly url: string;
  readonly pid: number;
  /** Stops the server (SIGKILL when `hard`), waiting for the process to exit. */
  stop(hard?: boolean): Promise<void>;
  /** Starts it again on the same port, with no data (no persistence). */
  restart(): Promise<void>;
  /** Runs redis-cli against this server and returns its stdout. */
  cli(...args: string[]): string;
}

/** A private redis-server on a free loopback port, no persistence. Stop it by pid when done. */
export async function startRedis(): Promise<RedisProcess> {
  const port = await freePort();
  let child: ChildProcess;
  const launch = async (): Promise<void> => {
    child = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--loglevel',
        'warning',
      ],
      {
        stdio: 'ignore',
      },
    );
    try {
      await eventually(
        () =>
          spawnSync('redis-cli', ['-p', String(port), 'ping'])
            .stdout?.toString()
            .trim() === 'PONG',
        10_000,
        `redis on ${port}`,
      );
    } catch (err) {
      // Never leave a redis-server behind that the caller cannot stop.
      child.kill('SIGKILL');
      throw err;
    }
  };
  await launch();
  const cli = (...args: string[]): string => {
    const r = spawnSync('redis-cli', ['-p', String(port), ...args]);
    if (r.status !== 0)
      throw new Error(`redis-cli ${args.join(' ')} failed: ${r.stderr.toString()}`);
    return r.stdout.toString();
  };
  const stop = async (hard = false): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill(hard ? 'SIGKILL' : 'SIGTERM');
    await exited;
  };
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get pid() {
      return child.pid ?? -1;
    },
    stop,
    async restart() {
      await stop();
      await launch();
    },
    cli,
  };
}

export interface NodeProcess {
  readonly port: number;
  readonly url: string;
  readonly wsUrl: string;
  readonly child: ChildProcess;
  /** Sends SIGTERM and waits for exit; returns the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Everything the process wrote to stdout and stderr. */
  output(): string;
}

/** A `switchboard serve` process (the built CLI) on a free port. */
export async function startNodeProcess(
  args: string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<NodeProcess> {
  const port = await freePort();
  const child = spawn(
    process.execPath,
    [
      // Node flags for the spawned servers, e.g. SWITCHBOARD_TEST_NODE_ARGS=--cpu-prof when profiling.
      ...(process.env['SWITCHBOARD_TEST_NODE_ARGS']?.split(' ').filter(Boolean) ?? []),
      CLI,
      'serve',
      ...['--port', String(port), '--host', '127.0.0.1', '--log-level', 'info'],
      ...Object.entries(TEST_LIMITS).flatMap(([k, v]) => [
        `--${k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())}`,
        String(v),
      ]),
      ...args,
    ],
    {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  try {
    await eventually(
      () => {
        if (child.exitCode !== null)
          throw new Error(`switchboard exited with ${child.exitCode}: ${out}`);
        return out.includes('switchboard listening');
      },
      10_000,
      'switchboard to listen',
    );
  } catch (err) {
    // The caller gets no handle to stop a server that failed to start: never leave it running.
    child.kill('SIGKILL');
    throw err;
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    child,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      const exited = once(child, 'exit');
      child.kill(signal);
      const [code] = (await exited) as [number | null];
      return code;
    },
    output: () => out,
  };
}

export type Frame = Record<string, unknown>;

/** A WebSocket test client that records every frame (split on '\n' when batched) for awaiting. */
export class TestClient {
  readonly ws: WebSocket;
  readonly frames: Frame[] = [];
  closeCode: number | undefined;
  closeReason = '';
  readonly #waiters = new Set<() => void>();
  #pageId = 0;

  constructor(url: string, protocols: string[] = []) {
    this.ws = new WebSocket(url, protocols);
    this.ws.on('message', (data: Buffer) => {
      for (const line of data.toString().split('\n')) this.frames.push(JSON.parse(line) as Frame);
      this.#notify();
    });
    this.ws.on('close', (code, reason) => {
      this.closeCode = code;
      this.closeReason = reason.toString();
      this.#notify();
    });
    this.ws.on('error', () => this.#notify());
  }

  static async open(url: string, protocols: string[] = []): Promise<TestClient> {
    const c = new TestClient(url, protocols);
    await once(c.ws, 'open');
    return c;
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** Message pushes received for `channel`. */
  messages(channel?: string): Frame[] {
    return this.frames.filter(
      (f) =>
        f['message'] !== undefined &&
        f['channel'] !== undefined &&
        (channel === undefined || f['channel'] === channel),
    );
  }

  /** Waits until `predicate` holds over the frames received so far. */
  async until(
    predicate: (frames: Frame[]) => boolean,
    timeoutMs = 5000,
    what = 'frames',
  ): Promise<void> {
    if (predicate(this.frames)) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(check);
        reject(
          new Error(
            `timed out after ${timeoutMs} ms waiting for ${what}; got ${JSON.stringify(this.frames.slice(-5))}`,
          ),
        );
      }, timeoutMs);
      const check = (): void => {
        if (predicate(this.frames)) {
          clearTimeout(timer);
          this.#waiters.delete(check);
          resolve();
        }
      };
      this.#waiters.add(check);
    });
  }

  /** Sends a command with request id `id` and resolves with its reply or error frame. */
  async request(cmd: Frame & { id: string | number }, timeoutMs = 5000): Promise<Frame> {
    this.send(cmd);
    await this.until(
      (fs) => fs.some((f) => f['reply'] === cmd.id),
      timeoutMs,
      `reply to ${String(cmd.id)}`,
    );
    return this.frames.find((f) => f['reply'] === cmd.id) as Frame;
  }

  /**
   * Every page of a history read, following `next` until it is null. `cmd` is the first
   * request's fields (no id: each page gets a fresh one); later pages send `limit` and `cursor`.
   */
  async historyPages(cmd: Frame & { channel: string }): Promise<Frame[]> {
    const pages: Frame[] = [];
    let page = await this.request({ ...cmd, action: 'history', id: `history-${this.#pageId++}` });
    for (;;) {
      pages.push(page);
      if (page['next'] === null || page['next'] === undefined) return pages;
      page = await this.request({
        action: 'history',
        channel: cmd.channel,
        ...(cmd['limit'] === undefined ? {} : { limit: cmd['limit'] }),
        cursor: page['next'],
        id: `history-${this.#pageId++}`,
      });
    }
  }

  async subscribe(channel: string, id: string | number = `sub-${channel}`): Promise<Frame> {
    return this.request({ action: 'subscribe', channel, id });
  }

  async closed(timeoutMs = 5000): Promise<number> {
    await this.until(() => this.closeCode !== undefined, timeoutMs, 'close');
    return this.closeCode as number;
  }

  close(): void {
    this.ws.close();
  }

  #notify(): void {
    for (const w of [...this.#waiters]) w();
  }
}
