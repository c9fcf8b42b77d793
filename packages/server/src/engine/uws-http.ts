/**
 * The HTTP side of the uWebSockets.js engine: each uWS request is presented to the server's
 * request listener (REST API, SSE, long-polling) as the part of node:http's request and response
 * that those handlers use, so both engines run the same handler code.
 *
 * uWS rules this has to respect: the HttpRequest lives only during the route callback (everything
 * needed is copied out at once); the HttpResponse must have an abort handler before the callback
 * returns and must not be touched after it was aborted or ended; writes from outside the callback
 * go in a cork so headers and body leave in one syscall.
 */
import { EventEmitter } from 'node:events';
import { STATUS_CODES, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import type { RequestInfo } from './transport.js';

const IPV4_MAPPED = '0000:0000:0000:0000:0000:ffff:';

/** uWS reports IPv4 peers as IPv4-mapped IPv6 in full hex; node:http reports them dotted. */
export function remoteAddress(res: HttpResponse): string {
  const text = Buffer.from(res.getRemoteAddressAsText()).toString();
  if (!text.startsWith(IPV4_MAPPED)) return text;
  const hex = text.slice(IPV4_MAPPED.length).replace(':', '');
  const n = Number.parseInt(hex, 16);
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** Copies what the handlers need out of the stack-allocated uWS request. */
export function requestInfo(
  res: HttpResponse,
  req: HttpRequest,
): RequestInfo & { readonly url: string; readonly socket: { readonly remoteAddress: string } } {
  const headers: IncomingHttpHeaders = {};
  req.forEach((key, value) => {
    const had = headers[key];
    // node:http joins repeated headers with ', ' (set-cookie aside, which requests do not carry).
    headers[key] = had === undefined ? value : `${String(had)}, ${value}`;
  });
  const query = req.getQuery();
  return {
    url: query === '' ? req.getUrl() : `${req.getUrl()}?${query}`,
    headers,
    socket: { remoteAddress: remoteAddress(res) },
  };
}

/** The request as a readable body stream with node:http's fields. */
export class UwsRequest extends Readable implements RequestInfo {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly socket: { readonly remoteAddress: string };

  constructor(info: ReturnType<typeof requestInfo>, method: string) {
    super();
    this.method = method;
    this.url = info.url;
    this.headers = info.headers;
    this.socket = info.socket;
  }

  override _read(): void {
    // Body chunks are pushed as uWS hands them over; uWS has no per-request pause.
  }
}

/** The response with the subset of node:http's ServerResponse the handlers use. */
export class UwsResponse extends EventEmitter {
  statusCode = 200;
  headersSent = false;
  writableEnded = false;
  destroyed = false;
  readonly #res: HttpResponse;
  readonly #head: boolean;
  readonly #headers = new Map<string, string>();
  /** Bytes written since uWS last reported backpressure; 0 while the socket keeps up. */
  #backlog = 0;
  #closed = false;

  constructor(res: HttpResponse, head: boolean) {
    super();
    this.#res = res;
    this.#head = head;
    res.onAborted(() => {
      this.destroyed = true;
      this.#gone();
    });
  }

  /** Bytes the client has not taken yet (node's writableLength, as far as uWS tells). */
  get writableLength(): number {
    return this.#backlog;
  }

  setHeader(name: string, value: string | number | readonly string[]): this {
    this.#headers.set(name.toLowerCase(), Array.isArray(value) ? value.join(', ') : String(value));
    return this;
  }

  writeHead(status: number, headers?: OutgoingHttpHeaders): this {
    this.statusCode = status;
    if (headers !== undefined) {
      for (const [name, value] of Object.entries(headers)) {
        if (value !== undefined) this.setHeader(name, value);
      }
    }
    return this;
  }

  write(chunk: string | Buffer): boolean {
    if (this.destroyed || this.writableEnded) return false;
    let ok = true;
    this.#res.cork(() => {
      this.#sendHead();
      ok = this.#res.write(chunk);
    });
    if (!ok) {
      if (this.#backlog === 0) {
        this.#res.onWritable(() => {
          this.#backlog = 0;
          this.emit('drain');
          return true;
        });
      }
      this.#backlog += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
    }
    return ok;
  }

  end(body?: string | Buffer): this {
    if (this.destroyed || this.writableEnded) return this;
    this.writableEnded = true;
    const close = this.#headers.get('connection') === 'close';
    this.#res.cork(() => {
      if (this.#head) {
        const length = this.#headers.get('content-length');
        this.#headers.delete('content-length');
        this.#sendHead();
        this.#res.endWithoutBody(
          length !== undefined ? Number(length) : body === undefined ? 0 : Buffer.byteLength(body),
          close,
        );
      } else {
        this.#sendHead();
        this.#res.end(body, close);
      }
    });
    this.#gone();
    return this;
  }

  /** Drops the connection at once, as node's res.destroy() does. */
  destroy(): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    if (!this.writableEnded) this.#res.close();
    this.#gone();
    return this;
  }

  #sendHead(): void {
    if (this.headersSent) return;
    this.headersSent = true;
    this.#res.writeStatus(`${this.statusCode} ${STATUS_CODES[this.statusCode] ?? ''}`);
    for (const [name, value] of this.#headers) {
      // uWS writes Content-Length itself (or chunked encoding) and manages keep-alive.
      if (name === 'content-length' || name === 'connection' || name === 'transfer-encoding')
        continue;
      this.#res.writeHeader(name, value);
    }
  }

  #gone(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.emit('close');
  }
}

/** Feeds the request body from uWS into `req`. Must be called before the route callback returns. */
export function pipeBody(res: HttpResponse, response: UwsResponse, req: UwsRequest): void {
  let done = false;
  res.onData((chunk, isLast) => {
    // uWS reuses the chunk's memory after this callback: copy it.
    if (chunk.byteLength > 0) req.push(Buffer.from(chunk.slice(0)));
    if (isLast) {
      done = true;
      req.push(null);
    }
  });
  response.once('close', () => {
    if (done) return;
    // An 'error' nobody listens to would throw; a reader that is waiting has a listener.
    if (req.listenerCount('error') > 0) req.destroy(new Error('request aborted'));
    else req.destroy();
  });
}
