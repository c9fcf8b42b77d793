/**
 * The node's own pages: the front page at `/` (what this node is, where to go, snippets that work
 * against it), its assets, the SDK as an ES module at /sdk/switchboard.js, the docs, and
 * GET /v1/info, the same facts as JSON. Both engines serve them through the same handler.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { ErrorCode } from '@switchboard/protocol';
import { ReplyError } from '../errors.js';
import { PAGE_CSP, acceptsGzip, loadAssets, type Asset } from './assets.js';

/** GET /v1/info: what this node is. Documented in docs/protocol.md. */
export interface NodeInfo {
  readonly name: 'switchboard';
  readonly version: string;
  readonly nodeId: string;
  readonly engine: 'uws' | 'ws';
  readonly broker: string;
  readonly startedAt: string;
  readonly uptimeMs: number;
  /** Whether credentials are checked (JWT or API keys configured). */
  readonly auth: boolean;
  /** Client connections on this node, all transports. */
  readonly connections: number;
  /** Channels with a subscriber on this node. */
  readonly channels: number;
  readonly links: {
    readonly demo: string | null;
    readonly admin: string | null;
    readonly metrics: string;
    readonly docs: string;
  };
}

export interface WebOptions {
  readonly info: () => NodeInfo;
  /** The files to serve; default: dist/public as built by scripts/build-web.ts. */
  readonly assets?: ReadonlyMap<string, Asset>;
}

/** Handles the request when its path is one of the pages'; false leaves it to the next route. */
export type WebRoutes = (req: IncomingMessage, res: ServerResponse, path: string) => boolean;

/** The server's own package version, read once. */
export const VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

export function createWebRoutes(o: WebOptions): WebRoutes {
  const assets = o.assets ?? loadAssets();
  return (req, res, path) => {
    if (path === '/v1/info') {
      readOnly(req, res);
      const body = JSON.stringify(o.info());
      res
        .writeHead(200, {
          'content-type': 'application/json; charset=utf-8',
          'content-length': Buffer.byteLength(body),
          // Uptime and counts change every moment.
          'cache-control': 'no-store',
        })
        .end(body);
      return true;
    }
    const asset = assets.get(path);
    if (asset === undefined) {
      if (path !== '/' || assets.size > 0) return false;
      throw new ReplyError(
        ErrorCode.WEB_NOT_BUILT,
        'the web pages of this node were not built: run npm run build',
      );
    }
    readOnly(req, res);
    serve(req, res, asset, asset.type.startsWith('text/html'));
    return true;
  };
}

function serve(req: IncomingMessage, res: ServerResponse, asset: Asset, page: boolean): void {
  const gzip = asset.gzip !== undefined && acceptsGzip(req.headers['accept-encoding']);
  const etag = gzip ? `${asset.etag.slice(0, -1)}-gz"` : asset.etag;
  const reply: Record<string, string | number> = {
    'cache-control': asset.cacheControl,
    etag,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
  };
  // Origin too: the API's CORS answer (set before this handler) depends on it.
  if (asset.gzip !== undefined) reply['vary'] = 'Accept-Encoding, Origin';
  if (page) reply['content-security-policy'] = PAGE_CSP;
  if (matches(req.headers['if-none-match'], etag)) {
    res.writeHead(304, reply).end();
    return;
  }
  const body = gzip && asset.gzip !== undefined ? asset.gzip : asset.body;
  reply['content-type'] = asset.type;
  reply['content-length'] = body.length;
  if (gzip) reply['content-encoding'] = 'gzip';
  res.writeHead(200, reply).end(body);
}

/** If-None-Match: `*` or a list of (possibly weak) tags. */
function matches(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false;
  if (header.trim() === '*') return true;
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

function readOnly(req: IncomingMessage, res: ServerResponse): void {
  if (req.method === 'GET' || req.method === 'HEAD') return;
  res.setHeader('allow', 'GET, HEAD');
  throw new ReplyError(
    ErrorCode.METHOD_NOT_ALLOWED,
    `${req.method ?? '?'} is not allowed here; use GET`,
  );
}
