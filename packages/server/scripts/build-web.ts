/**
 * Builds the node's own web pages into dist/public: the front page's and the admin UI's scripts
 * and styles under content-hashed names (so they can be cached for a year), their HTML pointing at
 * them (index.html for `/`, admin/index.html for `/admin`), and the SDK
 * as one ES module at sdk/switchboard.js (the name the front page's snippet imports). The server
 * reads dist/public once at start (src/web/assets.ts). Run by `npm run build`; tests call it too.
 */
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
export const PUBLIC_DIR = join(root, 'dist', 'public');

/** Builds everything into dist/public (replacing what was there); resolves with the file names. */
export async function buildWeb(): Promise<{ script: string; style: string }> {
  const staging = `${PUBLIC_DIR}.tmp-${process.pid}`;
  rmSync(staging, { recursive: true, force: true });
  const front = await build({
    entryPoints: [join(root, 'web', 'front.ts'), join(root, 'web', 'front.css')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    entryNames: 'assets/[name]-[hash]',
    outdir: staging,
    metafile: true,
    logLevel: 'warning',
  });
  const names = Object.keys(front.metafile.outputs).map((p) => basename(p));
  const script = names.find((n) => n.endsWith('.js'));
  const style = names.find((n) => n.endsWith('.css'));
  if (script === undefined || style === undefined) throw new Error('front page build incomplete');
  const html = readFileSync(join(root, 'web', 'index.html'), 'utf8')
    .replace('front.js', `/assets/${script}`)
    .replace('front.css', `/assets/${style}`);
  writeFileSync(join(staging, 'index.html'), html);
  await buildAdmin(staging);
  await build({
    entryPoints: [join(root, '..', 'client', 'src', 'index.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    sourcemap: false,
    outfile: join(staging, 'sdk', 'switchboard.js'),
    logLevel: 'warning',
  });
  // The docs the front page links to, readable without the repository at hand.
  const docs = join(root, '..', '..', 'docs');
  mkdirSync(join(staging, 'docs'), { recursive: true });
  for (const name of readdirSync(docs).filter((n) => n.endsWith('.md')))
    copyFileSync(join(docs, name), join(staging, 'docs', name));
  copyFileSync(join(root, '..', '..', 'README.md'), join(staging, 'docs', 'README.md'));
  mkdirSync(dirname(PUBLIC_DIR), { recursive: true });
  // Two renames, then the slow delete: a server starting meanwhile (tests run files in parallel)
  // sees the old set or the new one, never a half-deleted one; the gap between the renames is a
  // few microseconds, not the length of a recursive delete.
  const old = `${PUBLIC_DIR}.old-${process.pid}`;
  if (existsSync(PUBLIC_DIR)) renameSync(PUBLIC_DIR, old);
  renameSync(staging, PUBLIC_DIR);
  rmSync(old, { recursive: true, force: true });
  return { script, style };
}

/**
 * Builds dist/public only when it is missing or older than a source of it. Tests call this:
 * `npm test` has built it already (pretest), so parallel test files never rebuild it under a
 * starting server; a test file run alone after an edit still gets fresh assets.
 */
export async function ensureWeb(): Promise<void> {
  const built = existsSync(PUBLIC_DIR) ? statSync(PUBLIC_DIR).mtimeMs : 0;
  const newest = (dir: string): number =>
    readdirSync(dir, { withFileTypes: true }).reduce((m, e) => {
      const p = join(dir, e.name);
      return Math.max(m, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
    }, 0);
  if (built === 0 || newest(join(root, 'web')) > built) await buildWeb();
}

/** The admin SPA (web/admin/, preact + uPlot): one script and one style, both content-hashed. */
async function buildAdmin(staging: string): Promise<void> {
  const dir = join(root, 'web', 'admin');
  const admin = await build({
    entryPoints: [{ in: join(dir, 'main.tsx'), out: 'admin' }],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    jsx: 'automatic',
    jsxImportSource: 'preact',
    entryNames: 'assets/[name]-[hash]',
    outdir: staging,
    metafile: true,
    logLevel: 'warning',
  });
  const names = Object.keys(admin.metafile.outputs).map((p) => basename(p));
  const script = names.find((n) => n.endsWith('.js'));
  const style = names.find((n) => n.endsWith('.css'));
  if (script === undefined || style === undefined) throw new Error('admin build incomplete');
  mkdirSync(join(staging, 'admin'), { recursive: true });
  writeFileSync(
    join(staging, 'admin', 'index.html'),
    readFileSync(join(dir, 'index.html'), 'utf8')
      .replace('admin.js', `/assets/${script}`)
      .replace('admin.css', `/assets/${style}`),
  );
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  await buildWeb();
}
