/**
 * The browser builds the package ships (dist/browser, made by `npm run build`), loaded as a
 * browser loads them with no bundler: the ESM bundle from a `<script type="module">` and the IIFE
 * build from a classic `<script>`, in headless Chromium. The ESM page also proves `rewind`, the
 * channel state events, and `recover: true` resuming across a page reload (sessionStorage) with
 * every message published while the page was away, exactly once.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { requireBinary, startTestServer } from '../../server/test/helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const DIST = fileURLToPath(new URL('../dist/browser/', import.meta.url));
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-sync'];

/** Shared by both pages: collects messages and channel states, reports as `window.result`. */
const COMMON = `
  const q = new URLSearchParams(location.search);
  const expect = Number(q.get('expect'));
  const got = [], states = [];
  window.report = (extra) => (window.result = { got, states, ...extra });
  window.fail = (err) => (window.result = { error: String((err && err.stack) || err) });
`;

const ESM_PAGE = `<!doctype html><meta charset="utf-8"><title>ESM</title>
<script type="module">
  import { Switchboard } from '/switchboard.js';
  ${COMMON}
  try {
    const client = new Switchboard({ url: q.get('url'), recover: true });
    const channel = client.channels.get(q.get('channel'));
    channel.on('state', (c) => states.push(c.current + (c.resumed ? ':resumed' : '')));
    await channel.subscribe((m) => {
      got.push(m.offset);
      if (got.length === expect) report({ position: channel.position });
    }, { rewind: 3 });
    window.subscribed = true;
  } catch (err) { fail(err); }
</script>`;

const IIFE_PAGE = `<!doctype html><meta charset="utf-8"><title>IIFE</title>
<script src="/switchboard.iife.js"></script>
<script>
  ${COMMON}
  (async () => {
    const client = new Switchboard.Switchboard({ url: q.get('url') });
    const channel = client.channels.get(q.get('channel'));
    channel.on('state', (c) => states.push(c.current));
    await channel.subscribe((m) => got.push(m.data));
    const ack = await channel.publish('n', 'from a classic script');
    while (got.length < 1) await new Promise((r) => setTimeout(r, 10));
    channel.unsubscribe();
    report({ ack: ack.offset, codes: Object.keys(Switchboard.ErrorCode).length > 0 });
  })().catch(fail);
</script>`;

let pages: Server | undefined;
let origin = '';
let context: BrowserContext | undefined;
let profile = '';

before(async () => {
  if (requireBinary('chromium')) return;
  const files: Record<string, string> = {
    '/switchboard.js': readFileSync(join(DIST, 'switchboard.js'), 'utf8'),
    '/switchboard.iife.js': readFileSync(join(DIST, 'switchboard.iife.js'), 'utf8'),
  };
  pages = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const js = files[path];
    if (js !== undefined) res.writeHead(200, { 'content-type': 'text/javascript' }).end(js);
    else
      res
        .writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
        .end(path === '/iife' ? IIFE_PAGE : ESM_PAGE);
  });
  pages.listen(0, '127.0.0.1');
  await once(pages, 'listening');
  origin = `http://127.0.0.1:${(pages.address() as { port: number }).port}`;
  profile = mkdtempSync(join(tmpdir(), 'switchboard-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
  });
});

after(async () => {
  await context?.close();
  if (pages !== undefined) {
    pages.close();
    pages.closeAllConnections();
  }
  if (profile !== '') rmSync(profile, { recursive: true, force: true });
});

interface Result {
  readonly got?: unknown[];
  readonly states?: string[];
  readonly position?: { offset: number; epoch: string };
  readonly ack?: number;
  readonly codes?: boolean;
  readonly error?: string;
}

async function result(page: Page): Promise<Result> {
  await page.waitForFunction('window.result !== undefined', undefined, { timeout: 20_000 });
  const r = await page.evaluate<Result>('window.result');
  assert.equal(r.error, undefined, r.error);
  return r;
}

describe('the shipped browser builds in headless Chromium', () => {
  it('ESM bundle from <script type=module>: rewind, state events, resume across a reload', async (t) => {
    const missing = requireBinary('chromium');
    if (missing) return t.skip(missing);
    const s = await startTestServer();
    try {
      const channel = 'bundle.esm';
      const publish = async (n: number): Promise<void> => {
        for (let i = 0; i < n; i++) {
          const r = await fetch(`${s.url}/v1/channels/${channel}/messages`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ data: i }),
          });
          assert.equal(r.status, 200);
        }
      };
      await publish(5);
      const page = await (context as BrowserContext).newPage();
      const url = (expect: number): string =>
        `${origin}/?${new URLSearchParams({ url: s.wsUrl, channel, expect: String(expect) })}`;

      // First visit: the last 3 stored messages (rewind), then 2 live ones.
      await page.goto(url(5));
      await page.waitForFunction('window.subscribed === true || window.result !== undefined');
      await publish(2);
      const first = await result(page);
      assert.deepEqual(first.got, [3, 4, 5, 6, 7]);
      assert.deepEqual(first.states, ['subscribing', 'subscribed']);

      // The page goes away; 2 messages are published meanwhile; the reloaded page resumes from
      // the position it kept in sessionStorage: those 2, then a live one (a duplicate of 7, or a
      // rewind instead of a resume, would show before it).
      await page.goto('about:blank');
      await publish(2);
      await page.goto(url(3));
      await page.waitForFunction('window.subscribed === true || window.result !== undefined');
      await publish(1);
      const second = await result(page);
      assert.deepEqual(second.got, [8, 9, 10]);
      assert.deepEqual(second.states, ['subscribing', 'subscribed:resumed']);
      assert.equal(second.position?.offset, 10);
      await page.close();
    } finally {
      await s.close();
    }
  });

  it('IIFE build from a classic <script> defines the global Switchboard', async (t) => {
    const missing = requireBinary('chromium');
    if (missing) return t.skip(missing);
    const s = await startTestServer();
    try {
      const page = await (context as BrowserContext).newPage();
      await page.goto(
        `${origin}/iife?${new URLSearchParams({ url: s.wsUrl, channel: 'bundle.iife' })}`,
      );
      const r = await result(page);
      assert.deepEqual(r.got, ['from a classic script']);
      assert.equal(r.ack, 1);
      assert.equal(r.codes, true);
      assert.deepEqual(r.states, ['subscribing', 'subscribed', 'unsubscribed']);
      await page.close();
    } finally {
      await s.close();
    }
  });
});
