/**
 * The files of the node's own web pages (built by scripts/build-web.ts into dist/public), read
 * once at start and held in memory with their ETag and, where it pays, a gzipped copy: serving
 * one is a Map lookup and one write, on either engine.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

/** Where the build puts the pages: the same place from src/web (tsx) and from dist/web. */
export const PUBLIC_DIR = fileURLToPath(new URL('../../dist/public', import.meta.url));

/**
 * The pages (the front page, the admin UI) may run only their own scripts and styles from this node, connect only back to
 * this node, and be framed by nobody. No inline script or style is allowed (none is needed).
 */
export const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
  "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export interface Asset {
  readonly type: string;
  readonly body: Buffer;
  /** The gzipped body, when the file is text and gzip makes it smaller by a tenth at least. */
  readonly gzip: Buffer | undefined;
  /** Strong ETag of the body; the gzipped variant's is the same with `-gz` inside the quotes. */
  readonly etag: string;
  readonly cacheControl: string;
}

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  // Shown as text by every browser (text/markdown is downloaded instead).
  '.md': 'text/plain; charset=utf-8',
};

/** Content-hashed names never change content: a year, without revalidation. */
const IMMUTABLE = 'public, max-age=31536000, immutable';
/** Stable names (the page, the SDK, the docs): cached, but revalidated with the ETag each time. */
const REVALIDATE = 'no-cache';

/**
 * Every file under `dir` by URL path (`/` for index.html); empty when the pages were not built.
 */
export function loadAssets(dir: string = PUBLIC_DIR): ReadonlyMap<string, Asset> {
  const assets = new Map<string, Asset>();
  if (!existsSync(dir)) return assets;
  for (const file of walk(dir)) {
    const path = '/' + relative(dir, file).split(sep).join('/');
    const body = readFileSync(file);
    const type = TYPES[extname(file)] ?? 'application/octet-stream';
    const packed = type.startsWith('text/') || type.includes('json') || type.includes('svg');
    const gz = packed && body.length > 512 ? gzipSync(body, { level: 9 }) : undefined;
    const asset: Asset = {
      type,
      body,
      gzip: gz !== undefined && gz.length < body.length * 0.9 ? gz : undefined,
      etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`,
      cacheControl: path.startsWith('/assets/') ? IMMUTABLE : REVALIDATE,
    };
    if (path === '/index.html') assets.set('/', asset);
    else if (path === '/admin/index.html') {
      // The admin SPA routes in the fragment (#/channels/...), so these two paths are all it needs.
      assets.set('/admin', asset);
      assets.set('/admin/', asset);
    } else assets.set(path, asset);
  }
  return assets;
}

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

/** Whether an Accept-Encoding header takes gzip (and does not refuse it with q=0). */
export function acceptsGzip(header: string | undefined): boolean {
  if (header === undefined) return false;
  for (const part of header.split(',')) {
    const [coding, ...params] = part.trim().toLowerCase().split(';');
    if (coding !== 'gzip' && coding !== '*') continue;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    return q === undefined || Number(q.slice(2)) > 0;
  }
  return false;
}
