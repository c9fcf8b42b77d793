/**
 * The front page at `/` and GET /v1/info: caching headers, gzip and a strict CSP over plain HTTP,
 * then the page in headless Chromium with no console error, its facts matching /v1/info, and its
 * two snippets run as a visitor would: the browser one in the page, the backend one in Node.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { request } from 'node:http';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { ErrorCode } from '@switchboard/protocol';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ensureWeb } from '../scripts/build-web.js';
import { ReplyError } from '../src/errors.js';
import { createWebRoutes, type NodeInfo } from '../src/web/front-page.js';
import { PAGE_CSP } from '../src/web/assets.js';
import { launchChromium, type Browser } from './chromium.js';
import { ENGINE, eventually, requireBinary, startTestServer } from './helpers.js';

type TestServer = Awaited<ReturnType<typeof startTestServer>>;

let server: TestServer;
let browser: Browser | undefined;

before(async () => {
  await ensureWeb();
  server = await startTestServer({ nodeId: 'front-test-node' });
  if (requireBinary('chromium') === false) browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server.close();
});

/** A raw GET (fetch would decompress and hide Content-Encoding). */
function get(
  path: string,
  headers: Record<string, string> = {},
  method = 'GET',
): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> {
  return new Promise((resolve, reject) => {
    // A connection per request: the uws engine closes a keep-alive connection after a HEAD answer.
    const req = request(`${server.url}${path}`, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

describe('front page over HTTP', () => {
  it('serves / with a strict CSP, an ETag, no-cache and a 304 on revalidation', async () => {
    const r = await get('/');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^text\/html/);
    assert.equal(r.headers['content-security-policy'], PAGE_CSP);
    assert.doesNotMatch(PAGE_CSP, /unsafe/);
    assert.equal(r.headers['cache-control'], 'no-cache');
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    const etag = String(r.headers['etag']);
    assert.match(etag, /^"[\w-]+"$/);
    const html = r.body.toString();
    assert.match(html, /<title>Switchboard<\/title>/);
    // No inline script: every <script> has a src on this node.
    for (const tag of html.match(/<script[^>]*>/g) ?? []) assert.match(tag, /src="\/assets\//);
    const again = await get('/', { 'if-none-match': etag });
    assert.equal(again.status, 304);
    assert.equal(again.body.length, 0);
    assert.equal(again.headers['etag'], etag);
    const head = await get('/', {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
  });

  it('gzips for clients that take it, with its own ETag and Vary', async () => {
    const plain = await get('/sdk/switchboard.js');
    const packed = await get('/sdk/switchboard.js', { 'accept-encoding': 'gzip, br' });
    assert.equal(packed.headers['content-encoding'], 'gzip');
    assert.match(String(packed.headers['vary']), /Accept-Encoding/);
    assert.notEqual(packed.headers['etag'], plain.headers['etag']);
    assert.ok(packed.body.length < plain.body.length / 2, 'smaller than half');
    assert.deepEqual(gunzipSync(packed.body), plain.body);
    const refused = await get('/sdk/switchboard.js', { 'accept-encoding': 'gzip;q=0' });
    assert.equal(refused.headers['content-encoding'], undefined);
  });

  it('caches content-hashed assets for a year and answers unknown paths as before', async () => {
    const html = (await get('/')).body.toString();
    const script = /src="(\/assets\/front-[\w]+\.js)"/.exec(html)?.[1];
    assert.ok(script !== undefined, 'the page names its hashed script');
    const r = await get(script);
    assert.equal(r.status, 200);
    assert.equal(r.headers['cache-control'], 'public, max-age=31536000, immutable');
    assert.match(String(r.headers['content-type']), /^text\/javascript/);
    const missing = await get('/assets/nope.js');
    assert.equal(missing.status, 404);
    assert.equal(
      (JSON.parse(missing.body.toString()) as { code: number }).code,
      ErrorCode.NOT_FOUND,
    );
    const post = await fetch(`${server.url}/`, { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(((await post.json()) as { code: number }).code, ErrorCode.METHOD_NOT_ALLOWED);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
  });

  it('GET /v1/info says what this node is', async () => {
    const r = await fetch(`${server.url}/v1/info`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('cache-control'), 'no-store');
    const info = (await r.json()) as NodeInfo;
    assert.equal(info.name, 'switchboard');
    assert.equal(info.nodeId, 'front-test-node');
    assert.equal(info.engine, ENGINE);
    assert.equal(info.broker, 'memory');
    assert.equal(info.auth, false);
    assert.match(info.version, /^\d+\.\d+\.\d+/);
    assert.ok(info.uptimeMs >= 0 && info.uptimeMs < 600_000);
    assert.ok(!Number.isNaN(Date.parse(info.startedAt)));
    assert.equal(info.links.metrics, '/metrics');
  });

  it('answers 503 with code 120 when the pages were not built', () => {
    const routes = createWebRoutes({ info: () => ({}) as NodeInfo, assets: new Map() });
    const req = { method: 'GET', headers: {} } as IncomingMessage;
    assert.throws(
      () => routes(req, {} as ServerResponse, '/'),
      (e: unknown) => e instanceof ReplyError && e.code === ErrorCode.WEB_NOT_BUILT,
    );
    assert.equal(routes(req, {} as ServerResponse, '/elsewhere'), false);
  });
});

describe('front page in headless Chromium', () => {
  it('loads without a console error and its snippets work against this node', async (t) => {
    const missing = requireBinary('chromium');
    if (missing) return t.skip(missing);
    const { page, errors } = await (browser as Browser).open();
    const logged: unknown[][] = [];
    page.on('console', (m) => {
      if (m.type() === 'log')
        void Promise.all(m.args().map((a) => a.jsonValue())).then((a) => logged.push(a));
    });
    await page.goto(`${server.url}/`);
    await page.waitForFunction(
      "document.getElementById('status').textContent === 'online'",
      undefined,
      { timeout: 10_000 },
    );
    assert.equal(await page.textContent('#node-id'), 'front-test-node');
    assert.equal(await page.textContent('#engine'), ENGINE);
    assert.equal(await page.textContent('#broker'), 'memory');
    const browserSnippet = (await page.textContent('#snippet-browser')) ?? '';
    const backendSnippet = (await page.textContent('#snippet-backend')) ?? '';
    assert.ok(browserSnippet.split('\n').length <= 10, 'the browser snippet fits in 10 lines');
    assert.ok(backendSnippet.split('\n').length <= 10, 'the backend snippet fits in 10 lines');
    assert.ok(browserSnippet.includes(server.url), 'the snippet names this node');
    await browser?.screenshot(page, 'front-page');

    // Pasted into the page, as into its DevTools console.
    await page.evaluate(`(async () => {\n${browserSnippet}\n})()`);
    await eventually(() => logged.some((a) => a[0] === 'stored at offset'), 10_000, 'the ack');
    // The backend snippet, saved and run with node as the page says.
    const run = await promisify(execFile)(process.execPath, [
      '--input-type=module',
      '-e',
      backendSnippet,
    ]);
    assert.match(run.stdout, /^200 /);
    await eventually(
      () =>
        logged.some(
          (a) =>
            a[0] === 'received' &&
            JSON.stringify(a[2]) === JSON.stringify({ text: 'hello from a backend' }),
        ),
      10_000,
      'the backend message in the page',
    );
    const received = logged.filter((a) => a[0] === 'received');
    assert.deepEqual(
      received.map((a) => a[1]),
      [1, 2],
      'the browser got its own message, then the backend one',
    );
    assert.ok(logged.some((a) => a[0] === 'connection' && a[1] === 'connected'));
    await page.setViewportSize({ width: 390, height: 844 });
    // Readable on a phone: nothing wider than the screen (the snippets scroll inside their box).
    assert.equal(
      await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth'),
      true,
      'no horizontal overflow at 390 px',
    );
    await browser?.screenshot(page, 'front-page-phone');
    await page.close();
    assert.deepEqual(errors, [], 'no console error');
  });
});
