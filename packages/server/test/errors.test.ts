import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { DisconnectCode, ErrorCode, errorHttpStatus } from '@switchboard/protocol';

const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
const documented = new Map(
  [...doc.matchAll(/^### (\d+) ([A-Z_]+)$/gm)].map((m) => [Number(m[1]), m[2]]),
);

describe('docs/errors.md', () => {
  const codes = [...Object.entries(ErrorCode), ...Object.entries(DisconnectCode)] as [
    string,
    number,
  ][];

  it('has a heading for every code, with its name', () => {
    for (const [name, code] of codes)
      assert.equal(documented.get(code), name, `code ${code} ${name} is documented`);
  });

  it('documents no code that does not exist', () => {
    const known = new Set(codes.map(([, code]) => code));
    for (const code of documented.keys())
      assert.ok(known.has(code), `documented code ${code} exists`);
  });

  it('maps every reply code to an HTTP status, stated in the doc', () => {
    for (const [name, code] of Object.entries(ErrorCode)) {
      const status = errorHttpStatus[code];
      assert.ok(status >= 400 && status < 600, `${name} has an error status`);
      const section = doc.slice(doc.indexOf(`### ${code} ${name}`)).split('\n### ')[0] ?? '';
      assert.ok(section.includes(`HTTP ${status}`), `${name}'s section says HTTP ${status}`);
    }
  });
});
