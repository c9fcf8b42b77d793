/**
 * The admin UI at /admin (#13.3, #13.5) as an operator sees it, in headless Chromium against two
 * real switchboard processes on one real Redis, with JWT auth, an admin password and API keys:
 * the login page, the lockout, the overview, a channel appearing from the other node, the live
 * tail of 100 messages published there, the publish form reaching an SDK subscriber, revoking a
 * user on both nodes, no console error anywhere, no horizontal scroll at phone width. Takes the
 * screenshots of every page (light and dark) into test-output/screenshots/.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { WebSocket } from 'ws';
import { Switchboard } from '@switchboard/client';
import { ensureWeb } from '../scripts/build-web.js';
import { SCREENSHOTS, launchChromium, type Browser } from './chromium.js';
import {
  ENGINE,
  eventually,
  requireBinary,
  startNodeProcess,
  startRedis,
  startTestServer,
  TestClient,
  type NodeProcess,
  type RedisProcess,
} from './helpers.js';
import { mint, SECRET } from './security-kit.js';

const skip = requireBinary('redis-server') || requireBinary('chromium');
const PASSWORD = 'correct horse battery staple';
const BACKEND_KEY = 'backend:plain-secret-0123456789';
const API_KEYS = JSON.stringify([
  { name: 'ops', secret: 'admin-secret-0123456789', capabilities: {}, admin: true },
  { name: 'backend', secret: 'plain-secret-0123456789', capabilities: { '*': ['publish'] } },
]);
const CAP = { 'room:*': ['subscribe', 'publish', 'history', 'presence'] };
/** What Chromium itself logs for an HTTP error answer the page expected (a wrong password). */
const EXPECTED_HTTP_ERROR =
  /^(console: Failed to load resource: the server responded with a status of (401|423|429)|http: (401|423|429) POST .*\/v1\/admin\/login$)/;

async function shoot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  for (const scheme of ['light', 'dark'] as const) {
    await page.emulateMedia({ colorScheme: scheme });
    // A frame for the charts to repaint in the scheme's colours.
    await page.waitForTimeout(150);
    await page.screenshot({ path: join(SCREENSHOTS, `${name}-${scheme}.png`) });
  }
  await page.emulateMedia({ colorScheme: 'light' });
}

describe('admin UI in Chromium, two nodes on Redis', { skip }, () => {
  let redis: RedisProcess;
  let a: NodeProcess;
  let b: NodeProcess;
  let browser: Browser;
  let page: Page;
  /** Console errors of the logged-in page, over every view it showed. */
  let errors: string[];

  before(async () => {
    await ensureWeb();
    redis = await startRedis();
    const args = [
      ...['--redis', redis.url, '--redis-prefix', 'admui:'],
      ...['--admin', '--admin-password', PASSWORD],
      ...['--jwt-secret', SECRET, '--api-keys', API_KEYS],
      ...['--namespaces', JSON.stringify({ room: { presence: true } })],
      ...['--engine', ENGINE],
    ];
    [a, b, browser] = await Promise.all([
      startNodeProcess([...args, '--node-id', 'node-a']),
      startNodeProcess([...args, '--node-id', 'node-b']),
      launchChromium(),
    ]);
    ({ page, errors } = await browser.open());
    page.setDefaultTimeout(10_000);
  });

  after(async () => {
    await browser?.close();
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  test('without credentials the page shows the login form', async () => {
    await page.goto(`${a.url}/admin`);
    await page.getByLabel('Admin password').waitFor();
    assert.equal(await page.getByRole('button', { name: 'Log in' }).isVisible(), true);
    assert.equal(await page.getByRole('navigation').count(), 0, 'no admin pages before login');
    await shoot(page, 'admin-login');
  });

  test('a wrong password 5 times locks out, and the page says so', async () => {
    // A node of its own: the lockout counts per address, and the browser's is 127.0.0.1.
    const lone = await startTestServer({ admin: true, adminPassword: PASSWORD, jwtSecret: SECRET });
    const { page: p, errors: errs } = await browser.open();
    try {
      await p.goto(`${lone.url}/admin`);
      const field = p.getByLabel('Admin password');
      for (let i = 1; i <= 5; i++) {
        await field.fill(`wrong password ${i}`);
        await p.getByRole('button', { name: 'Log in' }).click();
        await p.getByRole('alert').waitFor();
        const text = (await p.getByRole('alert').textContent()) ?? '';
        if (i < 5) assert.match(text, /wrong password/i);
        else assert.match(text, /Locked out: too many failed logins .* try again in \d+ s/);
        await p.getByRole('button', { name: 'Log in', disabled: false }).waitFor();
      }
      // Locked out even with the right password now.
      await field.fill(PASSWORD);
      await p.getByRole('button', { name: 'Log in' }).click();
      await p.getByText(/Locked out/).waitFor();
      assert.equal(await p.getByRole('navigation').count(), 0);
      await shoot(p, 'admin-lockout');
      assert.deepEqual(
        errs.filter((e) => !EXPECTED_HTTP_ERROR.test(e)),
        [],
        'only the browser’s own notes of the refused logins',
      );
    } finally {
      await p.close();
      await lone.close();
    }
  });

  test('login works and the overview lists both nodes', async () => {
    await page.getByLabel('Admin password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('navigation', { name: 'Admin pages' }).waitFor();
    await page.locator('tr[data-node="node-a"]').waitFor();
    await page.locator('tr[data-node="node-b"]').waitFor();
    assert.match((await page.locator('h1').textContent()) ?? '', /Overview/);
    // A few seconds of traffic for the charts to draw.
    const c = await TestClient.open(`${b.wsUrl}?token=${await mint('viewer', { cap: CAP })}`);
    await c.subscribe('room:traffic');
    for (let i = 0; i < 30; i++) {
      await rest(b, 'room:traffic', { i });
      if (i % 10 === 9) await page.waitForTimeout(700);
    }
    await page.locator('.uplot').first().waitFor();
    await shoot(page, 'admin-overview');
    c.ws.close();
  });

  test('the channel list shows a channel created on the other node within 2 s', async () => {
    await page.goto(`${a.url}/admin#/channels`);
    await page.locator('#channel-list, .empty').first().waitFor();
    const c = await TestClient.open(`${b.wsUrl}?token=${await mint('lister', { cap: CAP })}`);
    try {
      await c.subscribe('room:made-on-b');
      const started = Date.now();
      await page
        .getByRole('link', { name: 'room:made-on-b' })
        .waitFor({ timeout: 2000 })
        .catch(() => assert.fail(`not listed after ${Date.now() - started} ms`));
      // The prefix search narrows the list.
      await page.getByLabel('Channel name starts with').fill('room:made');
      await page.getByRole('heading', { name: /starting with “room:made”/ }).waitFor();
      await eventually(
        async () => (await page.locator('#channel-list tbody tr').count()) === 1,
        3000,
        'one channel matches',
      );
      await shoot(page, 'admin-channels');
    } finally {
      c.ws.close();
    }
  });

  test('the live tail shows 100 of 100 messages published by REST on the other node, in order', async () => {
    const channel = 'room:tail';
    // History first: 5 messages before the page opens are shown above the live ones.
    for (let i = 1; i <= 5; i++) await rest(b, channel, { before: i });
    // A member on the other node, for the presence view.
    const member = new Switchboard({
      endpoints: [b.wsUrl],
      WebSocket,
      token: await mint('ada', { cap: CAP }),
    });
    after(() => member.close());
    await member.channels.get(channel).presence.enter({ status: 'watching the tail' });
    await page.goto(`${a.url}/admin#/channels/${encodeURIComponent(channel)}`);
    await page.getByRole('rowheader', { name: 'ada' }).waitFor({ timeout: 3000 });
    await page.locator('#tail-state', { hasText: 'live' }).waitFor();
    await eventually(
      async () => (await page.locator('#tail li[data-offset]').count()) === 5,
      3000,
      'the history above the tail',
    );
    const seen: number[] = [];
    for (let i = 1; i <= 100; i++) {
      const offset = await rest(b, channel, { n: i, text: `message ${i}` });
      // Within a second of its publish on the other node, in the page.
      await page.locator(`#tail li[data-offset="${offset}"]`).waitFor({ timeout: 1000 });
      seen.push(offset);
    }
    const offsets = await page.evaluate<number[]>(
      "[...document.querySelectorAll('#tail li[data-offset]')].map((e) => Number(e.dataset.offset))",
    );
    assert.deepEqual(
      offsets,
      Array.from({ length: 105 }, (_, i) => i + 1),
      'history then live, every one once, in order',
    );
    assert.deepEqual(seen, offsets.slice(5));
    assert.match((await page.locator('#tail li').last().textContent()) ?? '', /message 100/);
    // Filter and pretty view.
    await page.getByLabel('Filter messages').fill('"message 42"');
    await eventually(
      async () => (await page.locator('#tail li[data-offset]').count()) === 1,
      2000,
      'the filter keeps one',
    );
    await page.getByLabel('Pretty JSON').check();
    assert.match((await page.locator('#tail pre').first().textContent()) ?? '', /\n {2}"n": 42/);
    await page.getByLabel('Filter messages').fill('');
    await page.getByLabel('Pretty JSON').uncheck();
    // Paused, new messages wait; resumed, they are shown.
    await page.getByRole('button', { name: 'Pause' }).click();
    const held = await rest(b, channel, { n: 'held' });
    await page.getByRole('button', { name: 'Resume (1 new)' }).waitFor({ timeout: 1000 });
    assert.equal(await page.locator(`#tail li[data-offset="${held}"]`).count(), 0);
    await page.getByRole('button', { name: /Resume/ }).click();
    await page.locator(`#tail li[data-offset="${held}"]`).waitFor({ timeout: 1000 });
    await shoot(page, 'admin-channel-tail');
  });

  test('the publish form’s message reaches an SDK subscriber on the other node', async () => {
    const channel = 'room:from-admin';
    const client = new Switchboard({
      endpoints: [b.wsUrl],
      WebSocket,
      token: await mint('sdk', { cap: CAP }),
    });
    try {
      let resolve!: (v: unknown) => void;
      const got = new Promise((r) => (resolve = r));
      await client.channels.get(channel).subscribe((m) => resolve(m.data));
      await page.goto(`${a.url}/admin#/channels/${encodeURIComponent(channel)}`);
      await page.getByLabel('Data (JSON, or text)').fill('{"hello": "from the admin"}');
      await page.getByRole('button', { name: `Publish to ${channel}` }).click();
      await page.locator('#pub-result', { hasText: 'Published at offset 1' }).waitFor();
      assert.deepEqual(await got, { hello: 'from the admin' });
      // The page's own tail shows it too.
      await page.locator('#tail li[data-offset="1"]').waitFor({ timeout: 1000 });
    } finally {
      client.close();
    }
  });

  test('revoking a user closes its connections on both nodes', async () => {
    const token = await mint('eve', { cap: CAP, iat: Math.floor(Date.now() / 1000) - 5 });
    const [ca, cb] = await Promise.all([
      TestClient.open(`${a.wsUrl}?token=${token}`),
      TestClient.open(`${b.wsUrl}?token=${token}`),
    ]);
    await Promise.all([ca.subscribe('room:eve'), cb.subscribe('room:eve')]);
    await page.goto(`${a.url}/admin#/revoke`);
    await page.getByLabel('User id').fill('eve');
    await page.getByRole('button', { name: 'Revoke' }).click();
    await page.locator('#revoke-result').waitFor();
    await eventually(
      () => ca.closeCode !== undefined && cb.closeCode !== undefined,
      2000,
      'both connections closed',
    );
    assert.equal(ca.closeCode, 3500);
    assert.equal(cb.closeCode, 3500);
    await shoot(page, 'admin-revoke');
  });

  test('latency and errors pages render; no console error on any page', async () => {
    await page.goto(`${a.url}/admin#/latency`);
    await page.getByRole('heading', { name: 'Publish-to-deliver latency' }).waitFor();
    await page.locator('svg.histogram rect').first().waitFor();
    await shoot(page, 'admin-latency');
    await page.goto(`${a.url}/admin#/errors`);
    await page.getByRole('heading', { name: 'Errors and refusals' }).waitFor();
    await page.locator('#errors tbody tr').first().waitFor();
    await shoot(page, 'admin-errors');
    const { page: front, errors: frontErrors } = await browser.open();
    await front.goto(`${a.url}/`);
    await front.locator('#uptime', { hasNotText: '…' }).waitFor();
    await shoot(front, 'front');
    await front.close();
    assert.deepEqual(frontErrors, []);
    assert.deepEqual(errors, []);
  });

  test('keyboard: the pages are links and buttons reached with Tab', async () => {
    await page.goto(`${a.url}/admin#/`);
    await page.locator('tr[data-node]').first().waitFor();
    // From the top of the document, as after a fresh load.
    await page.evaluate('document.activeElement?.blur()');
    await page.keyboard.press('Tab');
    assert.equal(
      await page.evaluate<string | undefined>('document.activeElement?.textContent'),
      'Skip to content',
    );
    const names: string[] = [];
    for (let i = 0; i < 6; i++) {
      await page.keyboard.press('Tab');
      names.push(await page.evaluate<string>("document.activeElement?.textContent?.trim() ?? ''"));
    }
    for (const n of ['Overview', 'Channels', 'Latency', 'Errors', 'Revoke'])
      assert.ok(names.includes(n), `${n} in ${names.join(', ')}`);
    // Enter on the focused page link goes there.
    const last = names.at(-1);
    await page.keyboard.press('Enter');
    await page.waitForURL(/#\/revoke$/);
    assert.equal(last, 'Revoke');
    await page.getByLabel('User id').waitFor();
    // The focus ring is visible (an outline, not the browser's default removed).
    await page.getByLabel('User id').focus();
    const outline = await page.evaluate<string>(
      'getComputedStyle(document.activeElement).outlineStyle',
    );
    assert.equal(outline, 'solid');
  });

  test('at 390 px wide no page scrolls sideways', async () => {
    const { page: phone, errors: phoneErrors } = await browser.open({ width: 390, height: 844 });
    try {
      for (const [hash, ready, name] of [
        ['#/', 'tr[data-node]', 'admin-overview-phone'],
        ['#/channels', '#channel-list, .empty', undefined],
        [
          `#/channels/${encodeURIComponent('room:tail')}`,
          '#tail li[data-offset]',
          'admin-channel-tail-phone',
        ],
        ['#/latency', 'svg.histogram, .empty', undefined],
        ['#/errors', '#errors, .empty', undefined],
        ['#/revoke', '#revoke-value', undefined],
      ] as const) {
        await phone.goto(`${a.url}/admin${hash}`);
        await phone.locator(ready).first().waitFor();
        const width = await phone.evaluate<number>('document.documentElement.scrollWidth');
        assert.ok(width <= 390, `${hash}: page is ${width} px wide`);
        if (name !== undefined) await shoot(phone, name);
      }
      assert.deepEqual(phoneErrors, []);
    } finally {
      await phone.close();
    }
  });
});

/** Publishes one message by REST on `node` with a backend key; resolves with its offset. */
async function rest(node: NodeProcess, channel: string, data: unknown): Promise<number> {
  const r = await fetch(`${node.url}/v1/channels/${encodeURIComponent(channel)}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${BACKEND_KEY}` },
    body: JSON.stringify({ data }),
  });
  assert.equal(r.status, 200, await r.clone().text());
  const body = (await r.json()) as { messages?: { offset: number }[]; offset?: number };
  return body.messages?.[0]?.offset ?? (body.offset as number);
}
