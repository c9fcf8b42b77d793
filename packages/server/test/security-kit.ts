/**
 * Shared by the security suites: tokens minted with jose, a raw WebSocket client that writes
 * frames byte by byte (the attacker's side of the wire, so it is hand-written here on purpose),
 * and a plain HTTP request helper that sends exactly the headers it is given.
 */
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import { SignJWT, type JWTPayload } from 'jose';

/** An HMAC secret of the required length (≥ 32 bytes). */
export const SECRET = 'test-secret-of-at-least-32-bytes-long-0123456789';
export const SECRET_KEY = new TextEncoder().encode(SECRET);

export interface MintOptions {
  readonly alg?: string;
  readonly key?: Parameters<SignJWT['sign']>[0];
  /** Seconds from now; undefined: 60 s; null: no exp claim. */
  readonly expIn?: number | null;
  readonly header?: Record<string, unknown>;
  /** Leave the iat claim out. */
  readonly withoutIat?: boolean;
}

/** A token for `sub` with `claims` (e.g. `cap`, `jti`), HS256 with SECRET unless told otherwise. */
export async function mint(
  sub: string,
  claims: JWTPayload = {},
  o: MintOptions = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload: JWTPayload = { sub, iat: now, jti: randomUUID(), ...claims };
  if (o.expIn !== null && payload.exp === undefined) payload.exp = now + (o.expIn ?? 60);
  if (o.withoutIat === true) delete payload.iat;
  return new SignJWT(payload)
    .setProtectedHeader({ alg: o.alg ?? 'HS256', ...o.header })
    .sign(o.key ?? SECRET_KEY);
}

export function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface HttpResult {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** One HTTP request with exactly these headers (no implicit Origin), body as text. */
export async function http(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<HttpResult> {
  const req = httpRequest({
    host: '127.0.0.1',
    port,
    method,
    path,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
    agent: false,
  });
  req.end(body);
  const [res] = (await once(req, 'response')) as [import('node:http').IncomingMessage];
  let text = '';
  res.setEncoding('utf8');
  for await (const chunk of res) text += chunk as string;
  return { status: res.statusCode ?? 0, headers: res.headers, body: text };
}

/**
 * Writes `request` as raw bytes and resolves with what came back: the status line (or '' when
 * the server answered nothing) once the server closed, or after `timeoutMs` ('timeout').
 */
export async function rawHttp(
  port: number,
  request: string,
  timeoutMs = 3000,
): Promise<{ statusLine: string; ms: number; timedOut: boolean }> {
  const t0 = Date.now();
  const socket = connect(port, '127.0.0.1');
  let data = '';
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => {
    data += chunk;
    // One answer is all we wait for: a keep-alive server would hold the socket open.
    if (data.includes('\r\n\r\n')) socket.destroy();
  });
  socket.on('error', () => {});
  socket.write(request);
  const timedOut = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(true), timeoutMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
  socket.destroy();
  return { statusLine: data.split('\r\n', 1)[0] ?? '', ms: Date.now() - t0, timedOut };
}

export function json(r: HttpResult): Record<string, unknown> {
  return JSON.parse(r.body) as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket

export const OP = {
  CONT: 0x0,
  TEXT: 0x1,
  BINARY: 0x2,
  CLOSE: 0x8,
  PING: 0x9,
  PONG: 0xa,
} as const;

export interface FrameSpec {
  readonly opcode: number;
  readonly payload?: Buffer | string;
  readonly fin?: boolean;
  /** RSV1-3 as a 3-bit number (4 = RSV1). */
  readonly rsv?: number;
  /** Clients must mask; false sends the payload unmasked. */
  readonly mask?: boolean;
  /** Announce this length instead of the payload's real one (64-bit form when > 65535). */
  readonly length?: bigint;
}

/** Encodes one frame exactly as specified, however wrong. */
export function frame(spec: FrameSpec): Buffer {
  const payload =
    typeof spec.payload === 'string'
      ? Buffer.from(spec.payload)
      : (spec.payload ?? Buffer.alloc(0));
  const length = spec.length ?? BigInt(payload.length);
  const masked = spec.mask ?? true;
  const head: number[] = [((spec.fin ?? true) ? 0x80 : 0) | ((spec.rsv ?? 0) << 4) | spec.opcode];
  const m = masked ? 0x80 : 0;
  let ext = Buffer.alloc(0);
  if (length < 126n) head.push(m | Number(length));
  else if (length < 65536n) {
    head.push(m | 126);
    ext = Buffer.alloc(2);
    ext.writeUInt16BE(Number(length));
  } else {
    head.push(m | 127);
    ext = Buffer.alloc(8);
    ext.writeBigUInt64BE(length);
  }
  if (!masked) return Buffer.concat([Buffer.from(head), ext, payload]);
  const key = randomBytes(4);
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] = (body[i] as number) ^ (key[i % 4] as number);
  return Buffer.concat([Buffer.from(head), ext, key, body]);
}

export function closePayload(code: number, reason = ''): Buffer {
  const b = Buffer.alloc(2 + Buffer.byteLength(reason));
  b.writeUInt16BE(code);
  b.write(reason, 2);
  return b;
}

export interface ServerFrame {
  readonly fin: boolean;
  readonly rsv: number;
  readonly opcode: number;
  readonly payload: Buffer;
}

/**
 * A WebSocket client on a bare TCP socket: performs the opening handshake by hand, then parses
 * what the server sends (frames, its close code, the moment the socket ends).
 */
export class RawWs {
  readonly socket: Socket;
  readonly status: number;
  readonly headers: Record<string, string>;
  /** The response body when the upgrade was refused. */
  readonly body: string;
  readonly frames: ServerFrame[] = [];
  /** Code of the server's close frame (1005 when it had none), once received. */
  closeCode: number | undefined;
  closeReason = '';
  /** performance.now() when the close frame arrived / the socket ended. */
  closeAt: number | undefined;
  endedAt: number | undefined;
  #buf: Buffer;
  readonly #waiters = new Set<() => void>();

  private constructor(
    socket: Socket,
    status: number,
    headers: Record<string, string>,
    rest: Buffer,
    body: string,
  ) {
    this.socket = socket;
    this.status = status;
    this.headers = headers;
    this.body = body;
    this.#buf = rest;
    socket.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      this.#parse();
    });
    const ended = (): void => {
      this.endedAt ??= performance.now();
      this.#notify();
    };
    socket.on('close', ended);
    socket.on('end', ended);
    socket.on('error', ended);
    this.#parse();
  }

  /** Opens a TCP connection and sends an upgrade request with `headers` added. */
  static async open(
    port: number,
    o: { path?: string; headers?: Record<string, string> } = {},
  ): Promise<RawWs> {
    const socket = connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    await once(socket, 'connect');
    const lines = [
      `GET ${o.path ?? '/ws'} HTTP/1.1`,
      `Host: 127.0.0.1:${port}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
      'Sec-WebSocket-Version: 13',
      ...Object.entries(o.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
    ];
    socket.write(lines.join('\r\n') + '\r\n\r\n');
    let buf = Buffer.alloc(0);
    for (;;) {
      const [chunk] = (await Promise.race([
        once(socket, 'data'),
        once(socket, 'close').then(() => {
          throw new Error(`socket closed during the handshake: ${buf.toString()}`);
        }),
      ])) as [Buffer];
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) continue;
      const [statusLine, ...headerLines] = buf.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number((statusLine ?? '').split(' ')[1]);
      const headers: Record<string, string> = {};
      for (const l of headerLines) {
        const c = l.indexOf(':');
        headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
      }
      let rest = buf.subarray(end + 4);
      let body = '';
      if (status !== 101) {
        // A refusal: read the body up to content-length (the server closes after it).
        const want = Number(headers['content-length'] ?? 0);
        while (rest.length < want) {
          const r = (await Promise.race([once(socket, 'data'), once(socket, 'close')])) as [
            Buffer | boolean,
          ];
          if (!Buffer.isBuffer(r[0])) break;
          rest = Buffer.concat([rest, r[0]]);
        }
        body = rest.toString('utf8');
        rest = Buffer.alloc(0);
      }
      socket.removeAllListeners('data');
      return new RawWs(socket, status, headers, rest, body);
    }
  }

  write(...frames: Buffer[]): void {
    this.socket.write(Buffer.concat(frames));
  }

  /** Text frames received, as strings. */
  texts(): string[] {
    return this.frames.filter((f) => f.opcode === OP.TEXT).map((f) => f.payload.toString('utf8'));
  }

  /** Resolves with the server's close code once its close frame arrives (or the socket ends). */
  async closed(timeoutMs = 5000): Promise<number | undefined> {
    await this.until(() => this.closeCode !== undefined || this.endedAt !== undefined, timeoutMs);
    return this.closeCode;
  }

  async until(check: () => boolean, timeoutMs = 5000): Promise<void> {
    if (check()) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(w);
        reject(new Error(`raw ws: timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      const w = (): void => {
        if (!check()) return;
        clearTimeout(timer);
        this.#waiters.delete(w);
        resolve();
      };
      this.#waiters.add(w);
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  #parse(): void {
    for (;;) {
      const b = this.#buf;
      if (b.length < 2) break;
      const b0 = b[0] as number;
      const b1 = b[1] as number;
      let len = b1 & 0x7f;
      let off = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        len = Number(b.readBigUInt64BE(2));
        off = 10;
      }
      if (b1 & 0x80) off += 4; // a server must not mask, but parse it anyway
      if (b.length < off + len) break;
      const f: ServerFrame = {
        fin: (b0 & 0x80) !== 0,
        rsv: (b0 >> 4) & 7,
        opcode: b0 & 0x0f,
        payload: Buffer.from(b.subarray(off, off + len)),
      };
      this.#buf = b.subarray(off + len);
      this.frames.push(f);
      if (f.opcode === OP.CLOSE && this.closeCode === undefined) {
        this.closeAt = performance.now();
        this.closeCode = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
        this.closeReason = f.payload.subarray(2).toString('utf8');
      }
    }
    this.#notify();
  }

  #notify(): void {
    for (const w of [...this.#waiters]) w();
  }
}
