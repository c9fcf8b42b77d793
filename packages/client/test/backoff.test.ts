import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { fullJitter } from '../src/index.js';

describe('fullJitter', () => {
  it('draws from [0, base * 2^attempt) before the cap', () => {
    const opts = { baseMs: 100, capMs: 1_000_000 };
    for (let attempt = 0; attempt < 8; attempt++) {
      const window = 100 * 2 ** attempt;
      assert.equal(
        fullJitter(attempt, opts, () => 0),
        0,
      );
      assert.equal(
        fullJitter(attempt, opts, () => 0.5),
        window / 2,
      );
      assert.equal(
        fullJitter(attempt, opts, () => 0.999999),
        Math.floor(window * 0.999999),
      );
      assert.ok(fullJitter(attempt, opts, () => 0.999999) < window);
    }
  });

  it('never exceeds the cap, however many attempts', () => {
    const opts = { baseMs: 100, capMs: 5000 };
    for (const attempt of [6, 7, 20, 100, 2000, Infinity]) {
      const d = fullJitter(attempt, opts, () => 0.999999);
      assert.ok(d < 5000 && d >= 4999, `attempt ${attempt}: ${d}`);
      assert.equal(
        fullJitter(attempt, opts, () => 0.5),
        2500,
      );
    }
  });

  it('spreads real random draws over the whole window (full, not equal, jitter)', () => {
    const opts = { baseMs: 1000, capMs: 8000 };
    const draws = Array.from({ length: 2000 }, () => fullJitter(3, opts));
    assert.ok(draws.every((d) => Number.isInteger(d) && d >= 0 && d < 8000));
    assert.ok(Math.min(...draws) < 400, 'some draws near 0');
    assert.ok(Math.max(...draws) > 7600, 'some draws near the cap');
    const mean = draws.reduce((a, b) => a + b, 0) / draws.length;
    assert.ok(mean > 3600 && mean < 4400, `mean ${mean} near half the window`);
  });

  it('uses base 500 and cap 30 000 by default, and treats negative attempts as 0', () => {
    assert.equal(
      fullJitter(0, {}, () => 0.5),
      250,
    );
    assert.equal(
      fullJitter(50, {}, () => 0.5),
      15_000,
    );
    assert.equal(
      fullJitter(-3, { baseMs: 100 }, () => 0.5),
      50,
    );
  });
});
