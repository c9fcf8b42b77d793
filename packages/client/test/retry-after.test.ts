import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseRetryAfter } from '../src/retry-after.js';

describe('parseRetryAfter', () => {
  it('reads delay-seconds and HTTP dates, in milliseconds', () => {
    assert.equal(parseRetryAfter('5'), 5000);
    assert.equal(parseRetryAfter(' 0 '), 0);
    const now = Date.parse('2026-12-07T12:00:00Z');
    assert.equal(parseRetryAfter('Mon, 07 Dec 2026 12:00:30 GMT', now), 30_000);
    assert.equal(parseRetryAfter('Mon, 07 Dec 2026 11:59:00 GMT', now), 0, 'a past date: at once');
  });

  it('ignores what it cannot read, and caps what it can at 5 minutes', () => {
    assert.equal(parseRetryAfter(undefined), undefined);
    assert.equal(parseRetryAfter(null), undefined);
    assert.equal(parseRetryAfter('soon'), undefined);
    assert.equal(parseRetryAfter('-3'), undefined);
    assert.equal(parseRetryAfter('86400'), 300_000);
  });
});
