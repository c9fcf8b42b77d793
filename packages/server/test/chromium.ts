/**
 * Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) for the tests of the
 * pages people look at: a fresh profile per launch, every console error and uncaught exception
 * kept, so a test can assert the page ran clean (a CSP violation is a console error too). The one
 * place that knows how to launch it: every browser test (server, client, examples) comes here.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';
/** Screenshots go here (the repository's test-output/, ignored by git). */
export const OUTPUT = fileURLToPath(new URL('../../../test-output/', import.meta.url));

/** Screenshots meant for people (the README links copies of them): test-output/screenshots/. */
export const SCREENSHOTS = join(OUTPUT, 'screenshots');

/** Headless, no sandbox (containers), and nothing of Chrome's own that would phone home. */
export const FLAGS: readonly string[] = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export interface Browser {
  readonly context: BrowserContext;
  /** A new page whose console errors and page errors are collected in `errors`. */
  open(viewport?: { width: number; height: number }): Promise<{ page: Page; errors: string[] }>;
  /** Saves a full-page screenshot as test-output/<name>.png and returns its path. */
  screenshot(page: Page, name: string): Promise<string>;
  close(): Promise<void>;
}

export async function launchChromium(
  o: { viewport?: { width: number; height: number } } = {},
): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'switchboard-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...FLAGS],
    viewport: o.viewport ?? { width: 1280, height: 800 },
  });
  return {
    context,
    async open(viewport) {
      const page = await context.newPage();
      if (viewport !== undefined) await page.setViewportSize(viewport);
      const errors: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(`console: ${m.text()}`);
      });
      page.on('pageerror', (e) => errors.push(`page: ${e.message}`));
      // Chromium's console note of an HTTP error does not say which URL: this line does.
      page.on('response', (r) => {
        if (r.status() >= 400)
          errors.push(`http: ${r.status()} ${r.request().method()} ${r.url()}`);
      });
      return { page, errors };
    },
    async screenshot(page, name) {
      mkdirSync(OUTPUT, { recursive: true });
      const path = join(OUTPUT, `${name}.png`);
      await page.screenshot({ path, fullPage: true });
      return path;
    },
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
