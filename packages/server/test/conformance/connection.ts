/**
 * One suite every connection type must pass (engine/transport.ts is the contract): a WebSocket on
 * the engine under test (uws where it loads, ws in the `test:engine` tier), an SSE stream and a
 * long-polling connection. The same commands get the same frames and replies whatever carries
 * them; the differences the protocol documents (how a too-slow or drained client is told) are
 * named where they are asserted. Real servers, real sockets, nothing mocked.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { get as httpGet, type ClientRequest, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { randomBytes } from 'node:crypto';
import { after, describe, it } from 'node:test';
import WebSocket from 'ws';
import { DisconnectCode, ErrorCode } from '@switchboard/protocol';
import { ENGINE, eventually, startTestServer, type Frame } from '../helpers.js';
import { Scrape } from '../metrics-kit.js';
import { OP, SECRET, frame as wsFrame, mint } from '../security-kit.js';

export type Kind = 'websocket' | 'sse' | 'long-polling';
export const KINDS: readonly Kind[] = ['websocket', 'sse', 'long-polling'];

type TestServer = Awaited<ReturnType<typeof startTestServer>>;

/** A client of any connection type, as the suite drives it. */
abstract class ConnClient {
  abstract readonly kind: Kind;
  readonly frames: Frame[] = [];
  /** Server heartbeats seen: WebSocket pings, SSE comments, long-polls answered empty. */
  heartbeats = 0;
  /** The close code the client was told (1006: the connection ended without one). */
  closedWith: number | undefined;
  /** Bytes of command text this client sent (what the node must count as received). */
  sentBytes = 0;
  readonly #waiters = new Set<() => void>();
  #next = 0;

  /** Sends one command (an object, or raw text) the transport's way. */
  abstract send(cmd: unknown): Promise<void>;
  /** Stops reading what the server sends (a slow consumer). */
  abstract pause(): void;
  abstract resume(): void;
  /** Leaves, as a client does. */
  abstract close(): Promise<void>;

  protected text(cmd: unknown): string {
    const t = typeof cmd === 'string' ? cmd : JSON.stringify(cmd);
    this.sentBytes += Buffer.byteLength(t);
    return t;
  }

  protected received(frames: Frame[]): void {
    this.frames.push(...frames);
    this.notify();
  }

  protected ended(code: number): void {
    this.closedWith ??= code;
    this.notify();
  }

  protected notify(): void {
    for (const w of [...this.#waiters]) w();
  }

  messages(channel: string): Frame[] {
    return this.frames.filter(
      (f) => 'message' in f && f['reply'] === undefined && f['channel'] === channel,
    );
  }

  async until(check: (fs: Frame[]) => boolean, timeoutMs = 5000, what = 'frames'): Promise<void> {
    if (check(this.frames)) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(w);
        reject(
          new Error(
            `${this.kind}: timed out after ${timeoutMs} ms waiting for ${what}; last: ${JSON.stringify(this.frames.slice(-3))}`,
          ),
        );
      }, timeoutMs);
      const w = (): void => {
        if (!check(this.frames)) return;
        clearTimeout(timer);
        this.#waiters.delete(w);
        resolve();
      };
      this.#waiters.add(w);
    });
  }

  /** Sends `cmd` with a fresh request id (unless it has one) and resolves with its answer. */
  async request(cmd: Frame, timeoutMs = 5000): Promise<Frame> {
    const id = (cmd['id'] as string | number | undefined) ?? `r${this.#next++}`;
    await this.send({ ...cmd, id });
    await this.until((fs) => fs.some((f) => f['reply'] === id), timeoutMs, `reply ${String(id)}`);
    return this.frames.find((f) => f['reply'] === id) as Frame;
  }

  async closed(timeoutMs = 5000): Promise<number> {
    await this.until(() => this.closedWith !== undefined, timeoutMs, 'the close');
    return this.closedWith as number;
  }
}

class WsClient extends ConnClient {
  readonly kind = 'websocket';
  readonly ws: WebSocket;

  private constructor(ws: WebSocket) {
    super();
    this.ws = ws;
    ws.on('message', (data: Buffer) =>
      this.received(
        data
          .toString()
          .split('\n')
          .map((l) => JSON.parse(l) as Frame),
      ),
    );
    ws.on('ping', () => {
      this.heartbeats++;
      this.notify();
    });
    ws.on('close', (code) => this.ended(code));
    ws.on('error', () => this.ended(1006));
  }

  static async open(s: TestServer, query: string): Promise<WsClient> {
    const c = new WsClient(new WebSocket(s.wsUrl + query));
    await once(c.ws, 'open');
    return c;
  }

  send(cmd: unknown): Promise<void> {
    this.ws.send(this.text(cmd));
    return Promise.resolve();
  }

  pause(): void {
    this.ws.pause();
  }

  resume(): void {
    this.ws.resume();
  }

  async close(): Promise<void> {
    if (this.closedWith !== undefined) return;
    this.ws.close();
    await this.closed();
  }
}

/** POSTs frames to a connection of the HTTP transports; the node answers 202 once forwarded. */
async function postFrames(base: string, connection: string, texts: string[]): Promise<void> {
  const r = await fetch(`${base}/connections/${connection}/commands`, {
    method: 'POST',
    body: texts.join('\n'),
  });
  await r.arrayBuffer();
  assert.equal(r.status, 202, 'commands accepted');
}

class SseClient extends ConnClient {
  readonly kind = 'sse';
  readonly #base: string;
  connection = '';
  #req: ClientRequest | undefined;
  #res: IncomingMessage | undefined;

  private constructor(base: string) {
    super();
    this.#base = base;
  }

  static async open(s: TestServer, query: string): Promise<SseClient> {
    const c = new SseClient(s.url);
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      c.#req = httpGet(`${s.url}/sse${query}`, resolve);
      c.#req.on('error', reject);
    });
    assert.equal(res.statusCode, 200, 'the stream opens');
    c.#res = res;
    c.#read(res);
    await c.until(() => c.connection !== '', 5000, 'the connected event');
    return c;
  }

  #read(res: IncomingMessage): void {
    let buffer = '';
    let type = '';
    let data: string[] = [];
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      buffer += chunk;
      let nl: number;
      while ((nl = buffer.indexOf('\n')) !== -1) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line === '') {
          if (data.length > 0) this.#event(type || 'message', data);
          type = '';
          data = [];
        } else if (line.startsWith(':')) {
          this.heartbeats++;
          this.notify();
        } else if (line.startsWith('data: ')) data.push(line.slice(6));
        else if (line.startsWith('event: ')) type = line.slice(7);
      }
    });
    const end = (): void => this.ended(1006);
    res.on('end', end);
    res.on('close', end);
    res.on('error', end);
  }

  #event(type: string, data: string[]): void {
    if (type === 'connected') {
      this.connection = (JSON.parse(data.join('\n')) as { connection: string }).connection;
      this.notify();
    } else if (type === 'close') {
      this.ended((JSON.parse(data.join('\n')) as { code: number }).code);
    } else if (type === 'message') {
      this.received(data.map((l) => JSON.parse(l) as Frame));
    }
  }

  send(cmd: unknown): Promise<void> {
    return postFrames(this.#base, this.connection, [this.text(cmd)]);
  }

  pause(): void {
    this.#res?.pause();
  }

  resume(): void {
    this.#res?.resume();
  }

  async close(): Promise<void> {
    if (this.closedWith === undefined) {
      const r = await fetch(`${this.#base}/connections/${this.connection}`, { method: 'DELETE' });
      await r.arrayBuffer();
    }
    this.#req?.destroy();
  }
}

class PollClient extends ConnClient {
  readonly kind = 'long-polling';
  readonly #base: string;
  readonly connection: string;
  cursor = 0;
  #paused: Promise<void> | undefined;
  #unpause: (() => void) | undefined;
  #stopped = false;
  #loop: Promise<void> | undefined;
  #inflight: Promise<void> | undefined;

  private constructor(base: string, connection: string) {
    super();
    this.#base = base;
    this.connection = connection;
  }

  static async open(s: TestServer, query: string): Promise<PollClient> {
    const r = await fetch(`${s.url}/poll${query}`, { method: 'POST' });
    const body = (await r.json()) as { connection: string };
    assert.equal(r.status, 200, 'the connection opens');
    const c = new PollClient(s.url, body.connection);
    c.#loop = c.#run();
    return c;
  }

  /** Polls as the SDK does: the next poll as soon as one is answered, until closed. */
  async #run(): Promise<void> {
    while (!this.#stopped && this.closedWith === undefined) {
      if (this.#paused !== undefined) await this.#paused;
      if (this.#stopped) return;
      this.#inflight = this.#pollOnce();
      await this.#inflight;
    }
  }

  async #pollOnce(): Promise<void> {
    let status: number;
    let body: { cursor: number; frames: Frame[]; closed?: { code: number } };
    try {
      const r = await fetch(
        `${this.#base}/poll/${this.connection}?cursor=${this.cursor}&wait=10000`,
      );
      status = r.status;
      body = (await r.json()) as typeof body;
    } catch {
      this.ended(1006);
      return;
    }
    if (status !== 200) {
      this.ended(1006);
      return;
    }
    this.cursor = body.cursor;
    if (body.frames.length === 0 && body.closed === undefined) {
      this.heartbeats++;
      this.notify();
    }
    this.received(body.frames);
    if (body.closed !== undefined) this.ended(body.closed.code);
  }

  /**
   * Returns once a poll is certainly waiting on the node, with that poll's end. Of polls in
   * flight at once, each newer one answers the one waiting (with no frames), so whatever order
   * they arrive in, all but the last are answered: when all but one are back, that one waits.
   */
  async park(): Promise<{ readonly end: Promise<void> }> {
    this.pause();
    const polls = [this.#inflight, this.#pollOnce(), this.#pollOnce()].filter(
      (p): p is Promise<void> => p !== undefined,
    );
    const pending = new Set(polls);
    for (const p of polls) void p.then(() => pending.delete(p));
    while (pending.size > 1) await Promise.race(pending);
    // Wrapped: an async function returning the promise itself would wait for it.
    return { end: [...pending][0] ?? Promise.resolve() };
  }

  send(cmd: unknown): Promise<void> {
    return postFrames(this.#base, this.connection, [this.text(cmd)]);
  }

  pause(): void {
    this.#paused ??= new Promise((resolve) => {
      this.#unpause = resolve;
    });
  }

  resume(): void {
    this.#unpause?.();
    this.#paused = undefined;
  }

  async close(): Promise<void> {
    this.#stopped = true;
    this.resume();
    if (this.closedWith === undefined) {
      const r = await fetch(`${this.#base}/connections/${this.connection}`, { method: 'DELETE' });
      await r.arrayBuffer();
    }
    await this.#loop;
  }
}

function openClient(kind: Kind, s: TestServer, query = ''): Promise<ConnClient> {
  if (kind === 'websocket') return WsClient.open(s, query);
  if (kind === 'sse') return SseClient.open(s, query);
  return PollClient.open(s, query);
}

/** A frame with what differs from run to run (epochs, ids, times) replaced by placeholders. */
function shape(f: Frame | undefined): unknown {
  return JSON.parse(JSON.stringify(f ?? null), (key, value: unknown) => {
    if (key === 'epoch' && typeof value === 'string') return 'E';
    if (key === 'timestamp' && typeof value === 'number') return 'T';
    // Server-assigned message ids: a 16-character random prefix per process, '-', a counter.
    if ((key === 'messageId' || key === 'id') && typeof value === 'string' && value.length > 16)
      return 'M';
    return value;
  }) as unknown;
}

async function publishRest(s: TestServer, channel: string, datas: unknown[]): Promise<Frame> {
  const r = await fetch(`${s.url}/v1/channels/${channel}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(datas.length === 1 ? { data: datas[0] } : datas.map((data) => ({ data }))),
  });
  assert.equal(r.status, 200, 'published');
  return (await r.json()) as Frame;
}

/**
 * The suite over `kinds` (all three by default; the WebSocket one on the engine under test).
 * Every test starts its own in-process node and closes its clients before stopping it.
 */
export function runConnectionSuite(kinds: readonly Kind[] = KINDS): void {
  const servers: TestServer[] = [];
  const clients: ConnClient[] = [];
  after(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    for (const s of servers) await s.close();
  });
  async function server(overrides: Record<string, unknown> = {}): Promise<TestServer> {
    const s = await startTestServer(overrides);
    servers.push(s);
    return s;
  }
  async function client(kind: Kind, s: TestServer, query = ''): Promise<ConnClient> {
    const c = await openClient(kind, s, query);
    clients.push(c);
    return c;
  }

  for (const kind of kinds) {
    const name = kind === 'websocket' ? `websocket (${ENGINE} engine)` : `${kind} (${ENGINE})`;
    describe(`connection conformance: ${name}`, () => {
      it('subscribe, publish and unsubscribe: the same replies and frames', async () => {
        const s = await server();
        const c = await client(kind, s);
        assert.deepEqual(shape(await c.request({ action: 'subscribe', channel: 'cf', id: 's1' })), {
          reply: 's1',
          ok: true,
          position: { offset: 0, epoch: 'E' },
        });
        assert.deepEqual(
          shape(await c.request({ action: 'publish', channel: 'cf', data: { n: 1 }, id: 'p1' })),
          { reply: 'p1', ok: true, messageId: 'M', offset: 1, epoch: 'E' },
        );
        await c.until((fs) => c.messages('cf').length === 1 && fs.length > 0);
        assert.deepEqual(shape(c.messages('cf')[0]), {
          channel: 'cf',
          message: { n: 1 },
          id: 'M',
          timestamp: 'T',
          offset: 1,
          epoch: 'E',
        });
        assert.deepEqual(await c.request({ action: 'unsubscribe', channel: 'cf', id: 'u1' }), {
          reply: 'u1',
          ok: true,
        });
        // After the unsubscribe nothing of `cf` arrives; `cf2`, published after it, is the barrier.
        await c.request({ action: 'subscribe', channel: 'cf2', id: 's2' });
        await publishRest(s, 'cf', ['late']);
        await publishRest(s, 'cf2', ['barrier']);
        await c.until(() => c.messages('cf2').length === 1);
        assert.equal(c.messages('cf').length, 1, 'nothing after the unsubscribe');
      });

      it('bad input: an error frame for each, and the connection and node keep serving', async () => {
        const s = await server();
        const c = await client(kind, s);
        await c.send('not json');
        await c.until((fs) => fs.some((f) => f['code'] === ErrorCode.INVALID_JSON));
        assert.deepEqual(c.frames.at(-1), {
          error: 'frame is not valid JSON',
          code: ErrorCode.INVALID_JSON,
        });
        const bad = await c.request({ action: 'subscribe', channel: 'no spaces', id: 'b1' });
        assert.equal(bad['code'], ErrorCode.INVALID_CHANNEL);
        assert.equal(typeof bad['error'], 'string');
        const unknown = await c.request({ action: 'teleport', id: 'b2' });
        assert.equal(typeof unknown['code'], 'number');
        assert.equal(unknown['ok'], undefined);
        assert.deepEqual(await c.request({ action: 'ping', id: 'b3' }), {
          reply: 'b3',
          ok: true,
          pong: true,
        });
        assert.equal(c.closedWith, undefined, 'still open');
        const other = await client(kind, s);
        assert.equal((await other.request({ action: 'ping' }))['pong'], true, 'node serves');
      });

      it('ping and heartbeat: a pong reply, and server heartbeats keep an idle connection', async () => {
        const s = await server({ pingIntervalMs: 200 });
        const c = await client(kind, s);
        assert.deepEqual(await c.request({ action: 'ping', id: 'h1' }), {
          reply: 'h1',
          ok: true,
          pong: true,
        });
        // WebSocket: pings (answered by the client); SSE: comment lines; long-polling: polls
        // answered empty after the ping interval. Over several intervals, never closed.
        await c.until(() => c.heartbeats >= 3, 5000, 'three heartbeats');
        assert.equal(c.closedWith, undefined);
      });

      it('resume with since: the messages after the position, in order, recovered', async () => {
        const s = await server();
        const first = await publishRest(s, 'rs', ['a']);
        const epoch = (first['messages'] as Frame[])[0]?.['epoch'] as string;
        await publishRest(s, 'rs', ['b', 'c']);
        const c = await client(kind, s);
        const reply = await c.request({
          action: 'subscribe',
          channel: 'rs',
          since: { offset: 1, epoch },
          id: 'r1',
        });
        assert.deepEqual(shape(reply), {
          reply: 'r1',
          ok: true,
          recovered: true,
          position: { offset: 1, epoch: 'E' },
        });
        await c.until(() => c.messages('rs').length === 2);
        assert.deepEqual(
          c.messages('rs').map((f) => [f['offset'], f['message']]),
          [
            [2, 'b'],
            [3, 'c'],
          ],
        );
      });

      it('ordering under a burst: every message once, in publish order', async () => {
        const s = await server();
        const c = await client(kind, s);
        await c.request({ action: 'subscribe', channel: 'burst' });
        const n = 600;
        // Three batches at once, so the node handles them in the same few turns.
        await Promise.all(
          [0, 1, 2].map((b) =>
            publishRest(
              s,
              'burst',
              Array.from({ length: n / 3 }, (_, i) => ({ b, i })),
            ),
          ),
        );
        await c.until(() => c.messages('burst').length >= n, 10_000, `${n} messages`);
        const got = c.messages('burst');
        assert.equal(got.length, n, 'no duplicate');
        assert.deepEqual(
          got.map((f) => f['offset']),
          Array.from({ length: n }, (_, i) => i + 1),
          'offsets in order, no gap',
        );
        for (const b of [0, 1, 2]) {
          const mine = got
            .map((f) => f['message'] as { b: number; i: number })
            .filter((m) => m.b === b);
          assert.deepEqual(
            mine.map((m) => m.i),
            Array.from({ length: n / 3 }, (_, i) => i),
            `batch ${b} in its order`,
          );
        }
      });

      it('too slow: closed with 3008 past maxOutboundBytes, its queue bounded, others unaffected; then it stops counting at once', async () => {
        const cap = 256 * 1024;
        const s = await server({ maxOutboundBytes: cap, shutdownTimeoutMs: 10_000 });
        const slow = await client(kind, s);
        await slow.request({ action: 'subscribe', channel: 'slow' });
        const fast = await client(kind, s);
        await fast.request({ action: 'subscribe', channel: 'slow' });
        slow.pause();
        // A fast HTTP client too holds up to a poll's (or a stream write's) worth of frames: the
        // batches stay well under the cap there; a WebSocket's kernel buffers take megabytes.
        const ws = kind === 'websocket';
        const data = 'x'.repeat(ws ? 16 * 1024 : 4 * 1024);
        const batch = ws ? 50 : 8;
        const batchBytes = batch * (data.length + 200);
        // uWS topic publishes grow a socket's backlog without a JavaScript call: the engine looks
        // at least every BURST_MARGIN (4 MiB) published (engine/uws.ts); the others per write.
        const slack = ws && ENGINE === 'uws' ? 4 * 1024 * 1024 : 0;
        let sent = 0;
        let maxQueued = 0;
        const closes = async (): Promise<number> => {
          const m = await Scrape.of(s.url);
          maxQueued = Math.max(maxQueued, m.value('switchboard_outbound_queue_max_bytes'));
          return m.sum('switchboard_slow_consumer_disconnects_total');
        };
        while ((await closes()) === 0) {
          assert.ok(sent < (ws ? 40 : 600), 'never closed the slow client');
          await publishRest(
            s,
            'slow',
            Array.from({ length: batch }, () => data),
          );
          sent++;
        }
        slow.resume();
        // SSE: the close event at the end of the stream (the documented equivalent of the close
        // frame); long-polling: `closed` in the next poll's answer.
        assert.equal(await slow.closed(5000), DisconnectCode.SLOW, `${kind}: told why`);
        assert.ok(
          maxQueued <= cap + batchBytes + slack,
          `the queue stayed near its cap: ${maxQueued} bytes, cap ${cap}`,
        );
        // Nothing is queued for it after its close: a batch published now never reaches it.
        await publishRest(
          s,
          'slow',
          Array.from({ length: batch }, () => data),
        );
        sent++;
        assert.ok(slow.messages('slow').length <= (sent - 1) * batch, 'nothing after the close');
        await fast.until(() => fast.messages('slow').length === sent * batch, 10_000, 'all');
        assert.equal(fast.closedWith, undefined, 'the other client is unaffected');
        await fast.close();
        // The node counts open connections only: the closed one no longer holds the drain.
        await eventually(
          async () =>
            ((await (await fetch(`${s.url}/v1/info`)).json()) as { connections: number })
              .connections === 0,
          2000,
          'no open connection',
        );
        const t0 = Date.now();
        await s.close();
        servers.splice(servers.indexOf(s), 1);
        assert.ok(Date.now() - t0 < 3000, `stopped in ${Date.now() - t0} ms, not after a linger`);
      });

      it('server stop: closed with 3012, the drain code, on every transport', async () => {
        const s = await server();
        const c = await client(kind, s);
        await c.request({ action: 'subscribe', channel: 'stop' });
        // Long-polling is told in the answer to the poll it has waiting (between two polls a
        // client finds the node gone, as a WebSocket client finds it unreachable after a drop).
        const parked = c instanceof PollClient ? await c.park() : undefined;
        await s.close();
        await parked?.end;
        servers.splice(servers.indexOf(s), 1);
        assert.equal(await c.closed(), DisconnectCode.DRAINING);
      });

      it('received bytes: what the client sent, counted once, on its own transport', async () => {
        const s = await server({ jwtSecret: SECRET });
        const token = await mint('counted', { cap: { '*': ['subscribe', 'publish'] } });
        const q = `?token=${encodeURIComponent(token)}`;
        let sent: number;
        if (kind === 'websocket') {
          // Frames in the same TCP write as the upgrade reach the session while its token is
          // still being verified: they wait, and must not be counted again when handled.
          const frames = [
            { action: 'subscribe', channel: 'rb', id: 'e1' },
            { action: 'ping', id: 'e2' },
          ].map((f) => JSON.stringify(f));
          sent = frames.reduce((n, f) => n + Buffer.byteLength(f), 0);
          await earlyFrames(s.port, `/ws${q}`, frames, ['e1', 'e2']);
        } else {
          // The URL's channel is subscribed by the server itself: nothing the client sent.
          const c = await client(kind, s, `${q}&channel=rb`);
          await c.until((fs) => fs.some((f) => f['reply'] === 'sse:0'));
          assert.equal(c.frames.find((f) => f['reply'] === 'sse:0')?.['channel'], 'rb');
          await c.request({ action: 'ping', id: 'e2' });
          await c.request({ action: 'publish', channel: 'rb', data: 'é', id: 'e3' });
          sent = c.sentBytes;
        }
        const m = await Scrape.of(s.url);
        for (const t of KINDS)
          assert.equal(
            m.value('switchboard_received_bytes_total', { transport: t }),
            t === kind ? sent : 0,
            `received bytes of ${t}`,
          );
      });
    });
  }
}

/**
 * A WebSocket whose first frames travel in the upgrade request's own TCP write; resolves once the
 * replies to `ids` arrived (the text is searched: the frames are not parsed here).
 */
async function earlyFrames(
  port: number,
  path: string,
  texts: string[],
  ids: string[],
): Promise<void> {
  const socket = connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const head = [
    `GET ${path} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
  ].join('\r\n');
  let got = '';
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no replies; got ${got}`)), 5000);
    socket.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (ids.every((id) => got.includes(`"reply":"${id}"`))) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const frames = texts.map((payload) => wsFrame({ opcode: OP.TEXT, payload }));
  if (ENGINE === 'ws') {
    socket.write(Buffer.concat([Buffer.from(head + '\r\n\r\n'), ...frames]));
  } else {
    // uWS ignores bytes that follow the upgrade request in its own read (a client must wait for
    // the 101 anyway, RFC 6455 4.1): sent the moment the 101 arrives, while the token is checked.
    socket.write(head + '\r\n\r\n');
    while (!got.includes('\r\n\r\n')) await once(socket, 'data');
    socket.write(Buffer.concat(frames));
  }
  try {
    await done;
  } finally {
    socket.destroy();
  }
}
