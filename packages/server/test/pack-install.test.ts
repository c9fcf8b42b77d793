/**
 * What a new user gets from npm: the three workspaces packed as tarballs, installed into an empty
 * project, and `npx switchboard serve` answering /healthz; the SDK importable from the same project.
 * Also checks the tarballs carry no build state (.tsbuildinfo) and no source map pointing at a file
 * the tarball lacks.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { eventually } from './helpers.js';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const WORKSPACES = ['packages/protocol', 'packages/server', 'packages/client'];

interface Packed {
  readonly name: string;
  readonly filename: string;
  readonly files: readonly { readonly path: string }[];
}

/** `npm pack --dry-run --json` reports every file; the map check reads the maps from the source tree. */
async function readMapSources(pkgDir: string, mapPath: string): Promise<string[]> {
  const { readFile } = await import('node:fs/promises');
  const map = JSON.parse(await readFile(join(pkgDir, mapPath), 'utf8')) as {
    sources: string[];
    sourcesContent?: (string | null)[];
  };
  // A map that embeds every source (the browser bundles) needs no file beside it.
  if (
    map.sourcesContent?.length === map.sources.length &&
    map.sourcesContent.every((c) => c !== null)
  )
    return [];
  return map.sources.map((s) => posix.normalize(posix.join(posix.dirname(mapPath), s)));
}

describe('npm pack + install into an empty project', { timeout: 180_000 }, () => {
  let dir: string;
  let packed: Packed[];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sb-pack-'));
    const { stdout } = await run(
      'npm',
      ['pack', '--json', '--pack-destination', dir, ...WORKSPACES.flatMap((w) => ['-w', w])],
      { cwd: ROOT, maxBuffer: 64 * 1024 * 1024 },
    );
    packed = JSON.parse(stdout) as Packed[];
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  it('packs all three packages with a licence and a README, no .tsbuildinfo', () => {
    assert.deepEqual(packed.map((p) => p.name).sort(), [
      '@switchboard/client',
      '@switchboard/protocol',
      '@switchboard/server',
    ]);
    for (const p of packed) {
      const paths = p.files.map((f) => f.path);
      assert.ok(paths.includes('LICENSE'), `${p.name} has a LICENSE`);
      assert.ok(paths.includes('README.md'), `${p.name} has a README.md`);
      if (p.name === '@switchboard/client') {
        assert.ok(paths.includes('dist/browser/switchboard.js'), 'the browser ESM bundle');
        assert.ok(paths.includes('dist/browser/switchboard.iife.js'), 'the classic-script build');
      }
      assert.deepEqual(
        paths.filter((f) => f.endsWith('.tsbuildinfo')),
        [],
        `${p.name} ships no build state`,
      );
    }
  });

  it('every source map in a tarball points at files in the same tarball', async () => {
    for (const p of packed) {
      const pkgDir = join(
        ROOT,
        WORKSPACES.find((w) => w.endsWith(p.name.split('/')[1]!))!,
      );
      const paths = new Set(p.files.map((f) => f.path));
      const maps = [...paths].filter((f) => f.endsWith('.map'));
      assert.ok(maps.length > 0, `${p.name} has source maps`);
      for (const map of maps) {
        for (const source of await readMapSources(pkgDir, map))
          assert.ok(paths.has(source), `${p.name}: ${map} points at ${source}, not in the tarball`);
      }
    }
  });

  it('installs from the tarballs; `npx switchboard serve` answers /healthz; the SDK imports', async () => {
    const project = join(dir, 'app');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(project);
    writeFileSync(
      join(project, 'package.json'),
      JSON.stringify({ name: 'sb-app', private: true, type: 'module' }),
    );
    // --prefer-offline: the npm cache usually has every dependency; the registry fills the rest.
    await run(
      'npm',
      [
        'install',
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
        ...packed.map((p) => join(dir, p.filename)),
      ],
      { cwd: project, maxBuffer: 64 * 1024 * 1024 },
    );

    const child = spawn(
      'npx',
      ['--no-install', 'switchboard', 'serve', '--port', '0', '--host', '127.0.0.1'],
      // Its own process group: npx runs the server as a grandchild, which a signal to npx alone
      // would leave running (holding our pipes open).
      { cwd: project, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      let port = 0;
      await eventually(
        () => {
          if (child.exitCode !== null) throw new Error(`serve exited ${child.exitCode}: ${out}`);
          const line = out.split('\n').find((l) => l.includes('switchboard listening'));
          if (line !== undefined) port = (JSON.parse(line) as { port: number }).port;
          return port > 0;
        },
        30_000,
        'the installed server to listen',
      );
      const res = await fetch(`http://127.0.0.1:${port}/healthz`);
      assert.equal(res.status, 200);

      // The SDK from the installed package, in Node, against the installed server.
      const script = `
        import { Switchboard } from '@switchboard/client';
        import { WebSocket } from 'ws';
        const client = new Switchboard({ endpoints: ['ws://127.0.0.1:${port}/ws'], WebSocket });
        const ch = client.channels.get('pack');
        let resolve;
        const got = new Promise((r) => (resolve = r));
        await ch.subscribe((m) => resolve(m.data));
        await ch.publish('n', { hello: 'tarball' });
        console.log(JSON.stringify(await got));
        client.close();
      `;
      const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
        cwd: project,
        timeout: 20_000,
      });
      assert.deepEqual(JSON.parse(stdout.trim()), { hello: 'tarball' });
    } finally {
      const exited = child.exitCode === null ? once(child, 'exit') : undefined;
      try {
        process.kill(-child.pid!, 'SIGTERM');
      } catch {
        // the group is gone already
      }
      await exited;
    }
  });
});
