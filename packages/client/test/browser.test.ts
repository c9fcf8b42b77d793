/**
 * The SDK in a real browser: headless Chromium (Debian's, driven by playwright-core) loads a page
 * that loads the SDK bundled by esbuild, subscribes and publishes; once with WebSocket, once with
 * `window.WebSocket` removed before the SDK loads, where it must fall back to SSE and still get
 * every message. A screenshot of each run goes to test-output/.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { build } from 'esbuild';
import type { BrowserContext } from 'playwright-core';
import { OUTPUT, launchChromium, type Browser } from '../../server/test/chromium.js';
import { requireBinary, startTestServer } from '../../server/test/helpers.js';

/** The page: shows what it does, exposes the outcome as `window.result`. */
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>Switchboard in the browser</title>
<style>
  body { font: 15px system-ui, sans-serif; margin: 24px; }
  b { font-family: monospace; }
  #log { columns: 6; font: 12px monospace; }
  .ok { color: #06702a; } .bad { color: #b00020; }
</style>
<script>
  // Before the SDK loads: a browser or network where WebSocket is not available.
  if (new URLSearchParams(location.search).get('websocket') === 'off') window.WebSocket = undefined;
</script>
<script src="/sdk.js"></script>
</head><body>
<h1>Switchboard SDK in Chromium</h1>
<p>WebSocket in this page: <b id="ws"></b></p>
<p>transport: <b id="transport">connecting…</b> · state: <b id="state"></b></p>
<p>received <b id="count">0</b> of <b id="expected"></b> messages on <b id="channel"></b>
  <span id="verdict"></span></p>
<ol id="log"></ol>
<script>
(async () => {
  const q = new URLSearchParams(location.search);
  const own = Number(q.get('own'));
  const expected = own + Number(q.get('external'));
  const $ = (id) => document.getElementById(id);
  $('ws').textContent = typeof window.WebSocket === 'function' ? 'available' : 'unavailable';
  $('expected').textContent = expected;
  $('channel').textContent = q.get('channel');
  const client = new SwitchboardSDK.Switchboard({ url: q.get('url'), connectTimeoutMs: 3000 });
  client.connection.on('change', (c) => ($('state').textContent = c.current));
  const channel = client.channels.get(q.get('channel'));
  const got = [];
  await channel.subscribe((m) => {
    got.push(m);
    $('count').textContent = got.length;
    const li = document.createElement('li');
    li.textContent = m.offset + ': ' + JSON.stringify(m.data);
    $('log').append(li);
  });
  $('transport').textContent = client.connection.transport;
  window.subscribed = true;
  const acks = [];
  for (let i = 1; i <= own; i++) acks.push((await channel.publish('from-page', i)).offset);
  while (got.length < expected) await new Promise((r) => setTimeout(r, 20));
  // A last message fences the stream: a duplicate would arrive before it.
  await channel.publish('fence', 'fence');
  while (got.at(-1)?.data !== 'fence') await new Promise((r) => setTimeout(r, 20));
  got.pop();
  const offsets = got.map((m) => m.offset);
  const ok = offsets.every((o, i) => o === i + 1) && got.length === expected;
  $('verdict').textContent = ok ? '✔ all in order, none twice' : '✘ gap or duplicate';
  $('verdict').className = ok ? 'ok' : 'bad';
  window.result = { transport: client.connection.transport, acks, offsets, data: got.map((m) => m.data) };
})().catch((err) => { window.result = { error: String(err && err.stack || err) }; });
</script>
</body></html>`;

let bundle = '';
let pages: Server | undefined;
let pagesUrl = '';
let context: BrowserContext | undefined;
let browser: Browser | undefined;
const cleanup: (() => unknown)[] = [];

before(async () => {
  if (requireBinary('chromium')) return;
  const out = await build({
    entryPoints: [fileURLToPath(new URL('../src/index.ts', import.meta.url))],
    bundle: true,
    format: 'iife',
    globalName: 'SwitchboardSDK',
    platform: 'browser',
    target: 'es2022',
    write: false,
  });
  bundle = out.outputFiles[0]?.text ?? '';
  pages = createServer((req, res) => {
    if ((req.url ?? '').startsWith('/sdk.js')) {
      res.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle);
    } else {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE);
    }
  });
  pages.listen(0, '127.0.0.1');
  await once(pages, 'listening');
  pagesUrl = `http://127.0.0.1:${(pages.address() as { port: number }).port}`;
  browser = await launchChromium({ viewport: { width: 1000, height: 700 } });
  context = browser.context;
});

after(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await browser?.close();
  if (pages !== undefined) {
    pages.close();
    pages.closeAllConnections();
  }
});

interface PageResult {
  readonly transport?: string;
  readonly acks?: number[];
  readonly offsets?: number[];
  readonly data?: unknown[];
  readonly error?: string;
}

async function run(websocket: 'on' | 'off', channel: string): Promise<PageResult> {
  const s = await startTestServer();
  cleanup.push(() => s.close());
  const page = await (context as BrowserContext).newPage();
  const own = 20;
  const external = 20;
  const params = new URLSearchParams({
    url: s.wsUrl,
    channel,
    websocket,
    own: String(own),
    external: String(external),
  });
  // The page is served from another origin than the server, as an app usually is.
  await page.goto(`${pagesUrl}/?${params}`);
  await page.waitForFunction(
    'window.subscribed === true || window.result !== undefined',
    undefined,
    { timeout: 15_000 },
  );
  // Messages from elsewhere (a backend using the REST API) reach the page too.
  for (let i = 1; i <= external; i++) {
    const r = await fetch(`${s.url}/v1/channels/${channel}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'from-server', data: `x${i}` }),
    });
    assert.equal(r.status, 200);
  }
  await page.waitForFunction('window.result !== undefined', undefined, { timeout: 20_000 });
  const result = await page.evaluate<PageResult>('window.result');
  mkdirSync(OUTPUT, { recursive: true });
  await page.screenshot({
    path: join(OUTPUT, `browser-${websocket === 'on' ? 'websocket' : 'sse-fallback'}.png`),
    fullPage: true,
  });
  await page.close();
  assert.equal(result.error, undefined, result.error);
  assert.deepEqual(
    result.offsets,
    Array.from({ length: own + external }, (_, i) => i + 1),
    'every message once, in order',
  );
  const data = result.data ?? [];
  assert.deepEqual(
    data.filter((d) => typeof d === 'number'),
    Array.from({ length: own }, (_, i) => i + 1),
  );
  assert.deepEqual(
    data.filter((d) => typeof d === 'string'),
    Array.from({ length: external }, (_, i) => `x${i + 1}`),
  );
  // The server counted the page's publishes (and its fence) under the transport it really used.
  const metrics = await (await fetch(`${s.url}/metrics`)).text();
  const source = websocket === 'on' ? 'websocket' : 'sse';
  assert.match(
    metrics,
    new RegExp(`switchboard_messages_published_total\\{source="${source}"\\} ${own + 1}\\b`),
  );
  return result;
}

describe('the SDK in headless Chromium', () => {
  it('subscribes and publishes over WebSocket', async (t) => {
    const missing = requireBinary('chromium');
    if (missing) return t.skip(missing);
    const r = await run('on', 'browser.ws');
    assert.equal(r.transport, 'websocket');
  });

  it('falls back to SSE when WebSocket is unavailable and still receives every message', async (t) => {
    const missing = requireBinary('chromium');
    if (missing) return t.skip(missing);
    const r = await run('off', 'browser.sse');
    assert.equal(r.transport, 'sse');
  });
});
