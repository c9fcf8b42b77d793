#!/usr/bin/env node
/// <reference types="node" />
// @ts-check
/**
 * The test runner behind `npm test`: every test file of every workspace in one pool of worker
 * processes, then the slowest files, so a regression in test time shows at the end of each run.
 *
 * Tiers (docs/testing.md):
 * - every `test/*.test.ts` of a workspace runs once, on the default engine (uws where it loads);
 * - the connection suite (the files named in a workspace's `test:engine` script) runs again on ws;
 * - long variants run only with SWITCHBOARD_SOAK=1 (`npm run test:soak`), read by the tests.
 *
 * A file whose first 2,000 characters contain `switchboard-test: solo` runs with nothing else
 * alongside (say why on the same line). Files start longest-first by the durations of the last run
 * (kept in node_modules/.cache/switchboard/test-times.json), so one slow file does not end the run
 * alone. Each file's output is printed whole when it ends, never interleaved.
 *
 * Usage: node scripts/run-tests.js [--concurrency N] [--workspace DIR]... [--engine uws|ws] [FILE...]
 *   no FILE: every workspace's tiers; FILE...: just those files (paths from the current directory)
 *   on SWITCHBOARD_ENGINE or --engine. Concurrency: --concurrency, else SWITCHBOARD_TEST_CONCURRENCY,
 *   else 3.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TIMES = path.join(ROOT, 'node_modules/.cache/switchboard/test-times.json');
const SOLO = /switchboard-test: solo/;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    concurrency: { type: 'string' },
    workspace: { type: 'string', multiple: true },
    engine: { type: 'string' },
  },
});

const concurrency = Number(values.concurrency ?? process.env['SWITCHBOARD_TEST_CONCURRENCY'] ?? 3);
if (!Number.isInteger(concurrency) || concurrency < 1) {
  console.error(`concurrency must be a positive integer, got ${String(concurrency)}`);
  process.exit(2);
}

/** @typedef {{ cwd: string, file: string, engine: string | undefined, key: string }} Job */

/** @param {string} file @returns {unknown} */
function readJson(file) {
  return JSON.parse(readFileSync(file, 'utf8'));
}

/** @type {Job[]} */
const jobs = [];

/** The workspace's `test/*.test.ts` (fs.globSync is Node 22+). @param {string} cwd */
function testFiles(cwd) {
  const dir = path.join(cwd, 'test');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.test.ts'))
    .sort()
    .map((f) => `test/${f}`);
}

/** @param {string} cwd @param {string} file @param {string | undefined} engine */
function addJob(cwd, file, engine) {
  const rel = path.relative(ROOT, path.join(cwd, file));
  jobs.push({ cwd, file, engine, key: engine === undefined ? rel : `${rel} [${engine}]` });
}

if (positionals.length > 0) {
  const engine = values.engine ?? process.env['SWITCHBOARD_ENGINE'];
  for (const f of positionals) addJob(process.cwd(), f, engine);
} else {
  /** @typedef {{ workspaces?: string[], scripts?: Record<string, string> }} Pkg */
  const rootPkg = /** @type {Pkg} */ (readJson(path.join(ROOT, 'package.json')));
  /** @type {string[]} */
  const workspaces = values.workspace?.map((w) => path.resolve(w)) ?? rootPkg.workspaces ?? [];
  for (const ws of workspaces) {
    const cwd = path.resolve(ROOT, ws);
    const pkg = /** @type {Pkg} */ (readJson(path.join(cwd, 'package.json')));
    if (pkg.scripts?.['test'] === undefined) continue;
    for (const f of testFiles(cwd)) addJob(cwd, f, 'uws');
    // The connection suite: the files the workspace's `test:engine` script names, again on ws.
    const engineScript = pkg.scripts['test:engine'] ?? '';
    for (const f of engineScript.split(/\s+/).filter((t) => t.endsWith('.test.ts'))) {
      if (!existsSync(path.join(cwd, f))) throw new Error(`${ws}: test:engine names ${f}, absent`);
      addJob(cwd, f, 'ws');
    }
  }
}

/** @type {Record<string, number>} */
let lastTimes = {};
try {
  lastTimes = /** @type {Record<string, number>} */ (readJson(TIMES));
} catch {
  // First run: no durations yet, files start in name order.
}
const solo = new Set(
  jobs.filter((j) => SOLO.test(readFileSync(path.join(j.cwd, j.file), 'utf8').slice(0, 2000))),
);
// Longest first; a file never timed counts as long, so a new slow file does not start last.
jobs.sort((a, b) => (lastTimes[b.key] ?? 60_000) - (lastTimes[a.key] ?? 60_000));

/** @typedef {{ job: Job, ms: number, code: number | null, signal: string | null, counts: Record<string, number> }} Result */
/** @type {Result[]} */
const results = [];

/** @param {Job} job @returns {Promise<Result>} */
function run(job) {
  const start = performance.now();
  /** @type {Record<string, string | undefined>} */
  const env = { ...process.env };
  if (job.engine !== undefined) env['SWITCHBOARD_ENGINE'] = job.engine;
  // The file runs directly (no `--test` parent per file): node:test reports and sets the exit code.
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--test-reporter=spec', '--test-reporter-destination=stdout', job.file],
    { cwd: job.cwd, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  /** @type {Buffer[]} */
  const out = [];
  child.stdout.on('data', (/** @type {Buffer} */ b) => out.push(b));
  child.stderr.on('data', (/** @type {Buffer} */ b) => out.push(b));
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      const ms = performance.now() - start;
      const text = Buffer.concat(out).toString('utf8');
      /** @type {Record<string, number>} */
      const counts = {};
      for (const m of text.matchAll(/^ℹ (tests|pass|fail|cancelled|skipped|todo) (\d+)$/gm)) {
        counts[m[1] ?? ''] = (counts[m[1] ?? ''] ?? 0) + Number(m[2]);
      }
      const ok = code === 0;
      const mark = ok ? 'ok' : `FAILED (${signal ?? `exit ${String(code)}`})`;
      process.stdout.write(`\n=== ${job.key}: ${mark} in ${(ms / 1000).toFixed(1)} s\n${text}`);
      resolve({ job, ms, code, signal, counts });
    });
  });
}

const started = performance.now();
const pending = [...jobs];
/** @type {Set<Promise<void>>} */
const running = new Set();
let soloRunning = false;

/** Starts what may start now: a solo file only when nothing runs, nothing beside a solo file. */
function fill() {
  while (running.size < concurrency && pending.length > 0 && !soloRunning) {
    const i = pending.findIndex((j) => !solo.has(j) || running.size === 0);
    if (i < 0) return;
    const [job] = pending.splice(i, 1);
    if (job === undefined) return;
    soloRunning = solo.has(job);
    const p = run(job).then((r) => {
      results.push(r);
      running.delete(p);
      if (solo.has(job)) soloRunning = false;
    });
    running.add(p);
  }
}

fill();
while (running.size > 0) {
  await Promise.race(running);
  fill();
}

const wall = performance.now() - started;
const failed = results.filter((r) => r.code !== 0);
/** @type {Record<string, number>} */
const total = {};
for (const r of results)
  for (const [k, n] of Object.entries(r.counts)) total[k] = (total[k] ?? 0) + n;

mkdirSync(path.dirname(TIMES), { recursive: true });
writeFileSync(
  TIMES,
  JSON.stringify(
    { ...lastTimes, ...Object.fromEntries(results.map((r) => [r.job.key, Math.round(r.ms)])) },
    null,
    1,
  ),
);

const slowest = [...results].sort((a, b) => b.ms - a.ms).slice(0, 15);
const busy = results.reduce((s, r) => s + r.ms, 0);
console.log(`\n=== slowest test files (of ${String(results.length)}) ===`);
for (const r of slowest) {
  console.log(
    `${(r.ms / 1000).toFixed(1).padStart(7)} s  ${r.job.key}${solo.has(r.job) ? ' (solo)' : ''}`,
  );
}
console.log(
  `=== ${String(results.length)} files in ${(wall / 1000).toFixed(1)} s wall ` +
    `(${(busy / 1000).toFixed(1)} s summed, concurrency ${String(concurrency)}); ` +
    Object.entries(total)
      .map(([k, n]) => `${k} ${String(n)}`)
      .join(', '),
);
if (failed.length > 0) {
  console.log(`=== FAILED: ${failed.map((r) => r.job.key).join(', ')}`);
  process.exitCode = 1;
}
