import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

// packages/protocol owns every byte of the wire format: a frame (or a body embedding frames) built
// by a template string in the server drifts from the encoders the SDK is tested against. This reads
// the server's sources the way a linter would and names each line that builds JSON text by hand.
const SRC = fileURLToPath(new URL('../src/', import.meta.url));

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sources(path));
    else if (entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

/** Code lines only: JSDoc and line comments may show frames as examples. */
function codeLines(text: string): [number, string][] {
  const out: [number, string][] = [];
  let inBlock = false;
  text.split('\n').forEach((line, i) => {
    const t = line.trim();
    if (inBlock) {
      if (t.includes('*/')) inBlock = false;
      return;
    }
    if (t.startsWith('/*')) {
      inBlock = !t.includes('*/');
      return;
    }
    if (t.startsWith('//') || t.startsWith('*')) return;
    out.push([i + 1, line]);
  });
  return out;
}

// A JSON object opened in a template literal, or a JSON member built with an interpolated value.
const HAND_BUILT = [/`\{"/, /`[^`]*"(offset|epoch|reply|channel)":\$\{/];

function handBuiltFrames(name: string, text: string): string[] {
  const found: string[] = [];
  for (const [n, line] of codeLines(text)) {
    if (HAND_BUILT.some((re) => re.test(line))) found.push(`${name}:${n}: ${line.trim()}`);
  }
  return found;
}

describe('wire format has one home', () => {
  it('no server source builds a frame with a template string', () => {
    const files = sources(SRC);
    assert.ok(files.length > 50, `found only ${files.length} sources under ${SRC}`);
    const found = files.flatMap((f) => handBuiltFrames(relative(SRC, f), readFileSync(f, 'utf8')));
    assert.deepEqual(found, []);
  });

  it('the check catches a hand-built frame', () => {
    const probe = [
      '/** `{"reply": id}` in a comment is fine */',
      '// so is `{"channel":${c}}` here',
      'const ok = encodeReply(id);',
      'const a = `{"reply":${id},"ok":true}`;',
      'const b = `"position":{"offset":${p.offset},"epoch":"${p.epoch}"}`;',
    ].join('\n');
    assert.deepEqual(
      handBuiltFrames('probe.ts', probe).map((l) => l.split(':', 2).join(':')),
      ['probe.ts:4', 'probe.ts:5'],
    );
  });
});
