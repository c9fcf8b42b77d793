/**
 * Builds the demo page with esbuild (the SDK, d3-geo and the world outlines in one bundle) and
 * serves it with a strict CSP that lets it talk to one node only.
 */
import { readFileSync, writeFileSync, mkdirSync, readdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const PAGE_SRC = fileURLToPath(new URL('../page/', import.meta.url));
export const PAGE_DIR = fileURLToPath(new URL('../dist/page/', import.meta.url));

export async function buildPage(): Promise<void> {
  await build({
    entryPoints: [join(PAGE_SRC, 'main.ts'), join(PAGE_SRC, 'main.css')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    outdir: PAGE_DIR,
    logLevel: 'warning',
  });
  mkdirSync(PAGE_DIR, { recursive: true });
  writeFileSync(join(PAGE_DIR, 'index.html'), readFileSync(join(PAGE_SRC, 'index.html')));
}

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
};

export interface PageServer {
  readonly url: string;
  /** Points the page at a node (the page's CSP lets it connect there only). */
  setNode(nodeUrl: string): void;
  close(): Promise<void>;
}

/** Serves the built page on `port` (0: any); `setNode` says which node it shows. */
export async function servePage(o: {
  port: number;
  host: string;
  channel: string;
}): Promise<PageServer> {
  await buildPage();
  const files = new Map<string, Buffer>();
  for (const name of readdirSync(PAGE_DIR))
    files.set(`/${name}`, readFileSync(join(PAGE_DIR, name)));
  files.set('/', files.get('/index.html') as Buffer);
  let csp = '';
  const setNode = (nodeUrl: string): void => {
    const node = new URL(nodeUrl);
    const ws = `${node.protocol === 'https:' ? 'wss:' : 'ws:'}//${node.host}`;
    files.set(
      '/config.json',
      Buffer.from(JSON.stringify({ nodeUrl: node.origin, channel: o.channel })),
    );
    csp =
      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
      `connect-src 'self' ${node.origin} ${ws}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`;
  };
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const body = files.get(path);
    if (body === undefined || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    res
      .writeHead(200, {
        'content-type':
          path === '/config.json' ? 'application/json' : (TYPES[extname(path)] ?? TYPES['.html']),
        'cache-control': 'no-cache',
        'content-security-policy': csp,
        'x-content-type-options': 'nosniff',
      })
      .end(body);
  });
  server.listen(o.port, o.host);
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${o.host}:${port}/`,
    setNode,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
