/**
 * Ably dialect in a browser (#14 point 10): the SDK's browser build (node_modules/ably/build/
 * ably.js, unchanged) in real headless Chromium, loaded from a page on another origin: CORS on
 * REST and the connectivity check, the WebSocket connect with `transports: ['web_socket']`, a
 * subscribe/publish round trip, history over REST, and protocol heartbeats ({action:0}; a
 * browser cannot see WebSocket pings) keeping an idle connection alive past its idle timeout.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { launchChromium, type Browser } from './chromium.js';
import { requireBinary, startTestServer } from './helpers.js';
import { API_KEYS, KEY_ALL } from './ably-kit.js';

/** The browser build beside the package's Node entry (the exports map does not list it). */
const ABLY_JS = readFileSync(
  join(dirname(createRequire(import.meta.url).resolve('ably')), 'ably.js'),
  'utf8',
);

/** Counts the HEARTBEATs the page's WebSockets receive; installed before the SDK loads. */
const PAGE = `<!doctype html><meta charset="utf-8"><title>ably</title>
<script>
window.heartbeats = 0;
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) {
    super(...args);
    this.addEventListener('message', (e) => {
      if (typeof e.data === 'string' && JSON.parse(e.data).action === 0) window.heartbeats++;
    });
  }
};
</script>
<script src="/ably.js"></script>`;

describe('ably dialect: the browser SDK in Chromium', () => {
  const missing = requireBinary('chromium');
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let site: Server;
  let origin = '';
  let browser: Browser | undefined;
  before(async () => {
    site = createServer((req, res) => {
      if (req.url === '/ably.js')
        res.writeHead(200, { 'content-type': 'text/javascript' }).end(ABLY_JS);
      else res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
    });
    site.listen(0, '127.0.0.1');
    await once(site, 'listening');
    origin = `http://127.0.0.1:${(site.address() as { port: number }).port}`;
    // maxIdleInterval 1 s: the SDK gives up a connection silent for 1 s + realtimeRequestTimeout.
    server = await startTestServer({
      apiKeys: API_KEYS,
      allowedOrigins: [origin],
      pingIntervalMs: 1000,
    });
    if (missing === false) browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await server.close();
    site.close();
  });

  test(
    'CORS, WebSocket connect, round trip, REST history, heartbeats keep an idle connection',
    { skip: missing },
    async () => {
      const { page, errors } = await (browser as Browser).open();
      await page.goto(origin);
      const result = await page.evaluate(
        async ({ port, key }) => {
          const base = `http://127.0.0.1:${port}`;
          const check = await (await fetch(`${base}/is-the-internet-up.txt`)).text();
          const wsUp = await new Promise<boolean>((resolve) => {
            const ws = new WebSocket(`ws://127.0.0.1:${port}/ws-up`);
            ws.onopen = () => resolve(true);
            ws.onerror = () => resolve(false);
          });
          const A = (globalThis as unknown as { Ably: typeof import('ably') }).Ably;
          const client = new A.Realtime({
            key,
            endpoint: '127.0.0.1',
            port,
            tls: false,
            transports: ['web_socket'],
            connectivityCheckUrl: `${base}/is-the-internet-up.txt`,
            wsConnectivityCheckUrl: `ws://127.0.0.1:${port}/ws-up`,
            realtimeRequestTimeout: 2000,
          });
          const states: string[] = [];
          client.connection.on((c) => states.push(c.current));
          const ch = client.channels.get('browser:chat');
          const got = new Promise<unknown>((resolve) => {
            void ch.subscribe((m) => resolve(m.data));
          });
          await ch.attach();
          await ch.publish('hello', { from: 'chromium', n: 1 });
          const data = await got;
          const history = await ch.history();
          const time = await client.time();
          const beatsBefore = (globalThis as unknown as { heartbeats: number }).heartbeats;
          // Idle for longer than the SDK's idle timeout (maxIdleInterval + realtimeRequestTimeout).
          await new Promise((r) => setTimeout(r, 5000));
          const beats = (globalThis as unknown as { heartbeats: number }).heartbeats - beatsBefore;
          const state = client.connection.state;
          const seen = [...states];
          client.close();
          return {
            check,
            wsUp,
            data,
            history: history.items.map((m) => m.data as unknown),
            time,
            beats,
            state,
            states: seen,
          };
        },
        { port: server.port, key: KEY_ALL },
      );
      assert.equal(result.check.trim(), 'yes');
      assert.equal(result.wsUp, true);
      assert.deepEqual(result.data, { from: 'chromium', n: 1 });
      assert.deepEqual(result.history, [{ from: 'chromium', n: 1 }]);
      assert.ok(Math.abs(result.time - Date.now()) < 10_000);
      assert.ok(result.beats >= 4, `heartbeats in 5 s: ${result.beats}`);
      assert.equal(result.state, 'connected');
      assert.deepEqual(result.states, ['connecting', 'connected'], 'never dropped while idle');
      assert.deepEqual(errors, []);
    },
  );

  test('a page from an origin not allowed gets no CORS grant', { skip: missing }, async () => {
    const r = await fetch(`http://127.0.0.1:${server.port}/time`, {
      headers: { origin: 'http://evil.example' },
    });
    await r.arrayBuffer();
    assert.equal(r.headers.get('access-control-allow-origin'), null);
    assert.equal(r.status, 403);
  });
});
