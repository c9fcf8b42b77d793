/**
 * The ISS demo as a visitor sees it, in headless Chromium against real processes: the launcher
 * (`npm run demo`), a `switchboard serve` node, Redis. The public open-notify API is pointed at a
 * closed port, so the publisher must use its offline model; the positions it sends are compared
 * with SGP4 run here for the same instant. Screenshots go to test-output/.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { launchChromium, type Browser } from '../../../packages/server/test/chromium.js';
import {
  eventually,
  freePort,
  requireBinary,
  startNodeProcess,
  startRedis,
  type NodeProcess,
  type RedisProcess,
} from '../../../packages/server/test/helpers.js';
import { distanceKm, loadOrbit, type Telemetry } from '../src/orbit.js';
import { buildPage } from '../src/page.js';

const DEMO = fileURLToPath(new URL('../src/demo.ts', import.meta.url));

interface PageState {
  offsets: number[];
  trail: Telemetry[];
  transport: string | undefined;
  state: string;
  marker: [number, number] | undefined;
}

let browser: Browser | undefined;
/** open-notify's stand-in: a port nothing listens on (the real API is unreachable here too). */
let closedPort = 0;
const cleanup: (() => Promise<unknown>)[] = [];

before(async () => {
  await buildPage();
  closedPort = await freePort();
  if (requireBinary('chromium') === false) browser = await launchChromium();
});

after(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await browser?.close();
});

interface Demo {
  readonly pageUrl: string;
  readonly nodeUrl: string;
  output(): string;
  stop(): Promise<void>;
}

/** Runs the launcher as `npm run demo` does and waits for the URL it prints. */
async function startDemo(args: string[]): Promise<Demo> {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      DEMO,
      '--port',
      '0',
      '--open-notify-url',
      `http://127.0.0.1:${closedPort}/`,
      ...args,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], cwd: fileURLToPath(new URL('..', import.meta.url)) },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    await exited;
  };
  cleanup.push(stop);
  await eventually(
    () => {
      if (child.exitCode !== null) throw new Error(`demo exited: ${out}`);
      return /ISS demo: +http/.test(out);
    },
    20_000,
    'the demo to print its URL',
  );
  const pageUrl = /ISS demo: +(\S+)/.exec(out)?.[1] ?? '';
  const nodeUrl = /node: +(\S+)/.exec(out)?.[1] ?? '';
  return { pageUrl, nodeUrl, output: () => out, stop };
}

/**
 * Waits until `expression` is true in the page. Polled from here with page.evaluate: the page's
 * CSP (no 'unsafe-eval') forbids waitForFunction's in-page evaluation of a string.
 */
async function until(
  page: import('playwright-core').Page,
  expression: string,
  timeoutMs: number,
): Promise<void> {
  await eventually(async () => (await page.evaluate(expression)) === true, timeoutMs, expression);
}

async function pageState(page: import('playwright-core').Page): Promise<PageState> {
  return page.evaluate<PageState>('window.iss');
}

describe('ISS demo', () => {
  it('npm run demo: the marker moves, positions from the offline model match SGP4', async (t) => {
    const missing = requireBinary('chromium');
    if (missing) return t.skip(missing);
    const demo = await startDemo([]);
    await eventually(() => /positions from SGP4/.test(demo.output()), 10_000, 'the offline model');
    const { page, errors } = await (browser as Browser).open();
    await page.goto(demo.pageUrl);
    await until(page, 'window.iss.marker !== undefined', 15_000);
    const first = await pageState(page);
    const shot1 = await page.screenshot();
    await browser?.screenshot(page, 'iss-demo');
    await until(
      page,
      `window.iss.trail.at(-1).timestamp >= ${first.trail.at(-1)?.timestamp ?? 0} + 2000`,
      15_000,
    );
    const second = await pageState(page);
    const shot2 = await page.screenshot();
    assert.notDeepEqual(second.marker, first.marker, 'the marker moved');
    assert.notDeepEqual(shot2, shot1, 'the screenshots differ');
    assert.equal(await page.textContent('#state'), 'connected');
    assert.equal(await page.textContent('#transport'), 'websocket');
    // Offline: every position is the model's, within 50 km of SGP4 for the same instant.
    const orbit = loadOrbit();
    assert.ok(second.trail.length >= 3);
    for (const p of second.trail) {
      assert.equal(p.source, 'sgp4');
      const ref = orbit.at(new Date(p.timestamp));
      const km = distanceKm(p, ref);
      assert.ok(km < 50, `${km.toFixed(1)} km from SGP4 at ${new Date(p.timestamp).toISOString()}`);
      assert.ok(Math.abs(p.altitudeKm - ref.altitudeKm) < 1);
    }
    // The node's front page links to the demo.
    const info = (await (await fetch(`${demo.nodeUrl}v1/info`)).json()) as {
      links: { demo: string };
    };
    assert.equal(info.links.demo, demo.pageUrl);
    await page.close();
    assert.deepEqual(errors, [], 'no console error');
  });

  describe('with Redis', () => {
    let redis: RedisProcess;
    before(async () => {
      if (requireBinary('redis-server')) return;
      redis = await startRedis();
      cleanup.push(() => redis.stop(true));
    });

    it('a node restart leaves no gap in the trail (offsets consecutive)', async (t) => {
      const missing = requireBinary('chromium') || requireBinary('redis-server');
      if (missing) return t.skip(missing);
      let node: NodeProcess = await startNodeProcess(['--redis', redis.url]);
      cleanup.push(() => node.stop('SIGKILL'));
      const demo = await startDemo(['--node-url', node.url, '--interval-ms', '250']);
      const { page, errors } = await (browser as Browser).open();
      await page.goto(demo.pageUrl);
      await until(page, 'window.iss.offsets.length >= 4', 15_000);
      const port = node.port;
      await node.stop('SIGKILL');
      await until(page, "window.iss.state !== 'connected'", 10_000);
      const before = (await pageState(page)).offsets.at(-1) ?? 0;
      await browser?.screenshot(page, 'iss-demo-node-down');
      node = await startNodeProcess(['--redis', redis.url, '--port', String(port)]);
      await until(
        page,
        `window.iss.state === 'connected' && window.iss.offsets.at(-1) >= ${before} + 12`,
        20_000,
      );
      const s = await pageState(page);
      const from = s.offsets[0] ?? 1;
      assert.deepEqual(
        s.offsets,
        Array.from({ length: s.offsets.length }, (_, i) => from + i),
        'every offset once, in order, across the restart',
      );
      assert.match((await page.textContent('#trail-info')) ?? '', /no gap/);
      await browser?.screenshot(page, 'iss-demo-after-restart');
      await page.close();
      await demo.stop();
      assert.deepEqual(
        errors.filter((e) => !/WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(e)),
        [],
        'no console error but the refused reconnects',
      );
    });

    it('without WebSocket the page runs over SSE; raw PUBLISH through --redis-bridge', async (t) => {
      const missing = requireBinary('chromium') || requireBinary('redis-server');
      if (missing) return t.skip(missing);
      const demo = await startDemo(['--redis-bridge', redis.url]);
      const { page, errors } = await (browser as Browser).open();
      await page.addInitScript('delete window.WebSocket');
      await page.goto(demo.pageUrl);
      await until(page, 'window.iss.trail.length >= 2', 15_000);
      assert.equal(await page.textContent('#transport'), 'sse');
      const s = await pageState(page);
      assert.equal(s.transport, 'sse');
      assert.deepEqual(s.offsets, [], 'bridged messages carry no offset');
      await browser?.screenshot(page, 'iss-demo-sse');
      await page.close();
      assert.deepEqual(errors, [], 'no console error');
    });
  });
});
