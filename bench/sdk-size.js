#!/usr/bin/env node
/// <reference types="node" />
/**
 * The SDK's size as a browser app ships it: packages/client/dist bundled with the protocol
 * package by esbuild (ESM, minified, browser platform), then gzip (level 6, what servers use) and
 * brotli. Prints one JSON object; README states the gzip figure. `npm run size`.
 */
import { gzipSync, brotliCompressSync } from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const entry = fileURLToPath(new URL('../packages/client/dist/index.js', import.meta.url));
const out = await build({
  entryPoints: [entry],
  bundle: true,
  minify: true,
  format: 'esm',
  platform: 'browser',
  write: false,
});
const code = out.outputFiles[0]?.contents ?? new Uint8Array();
process.stdout.write(
  JSON.stringify({
    entry: 'packages/client/dist/index.js',
    minifiedBytes: code.length,
    gzipBytes: gzipSync(code, { level: 6 }).length,
    brotliBytes: brotliCompressSync(code).length,
  }) + '\n',
);
