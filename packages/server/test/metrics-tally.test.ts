/**
 * The hot-path histograms (TallyHistogram) count in plain numbers and fold into prom-client's
 * records at scrape time: what a scrape shows must be exactly what prom-client's own observe()
 * shows for the same observations, with and without labels, across several scrapes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Histogram, Registry } from 'prom-client';
import { TallyHistogram } from '../src/metrics.js';

const BUCKETS = [0.001, 0.01, 0.1, 1];

function pair(labelNames: string[] = []): {
  plain: Registry;
  tally: Registry;
  h: Histogram;
  t: TallyHistogram;
} {
  const plain = new Registry();
  const tally = new Registry();
  const config = { name: 'x_seconds', help: 'x', buckets: BUCKETS, labelNames };
  const h = new Histogram({ ...config, registers: [plain] });
  const t = new TallyHistogram({ ...config, registers: [tally] });
  return { plain, tally, h, t };
}

describe('TallyHistogram', () => {
  it('scrapes exactly as prom-client observe() does, over several scrapes', async () => {
    const { plain, tally, h, t } = pair();
    const one = t.tally();
    // Powers of two: their sums are exact in any order, so the texts can be compared byte for byte
    // (the tally adds per scrape, observe() per value; other values differ in the last digit).
    const values = [0, 2 ** -11, 2 ** -10, 2 ** -9, 2 ** -5, 2 ** -4, 0.5, 1, 4, 2 ** 30];
    for (let round = 0; round < 3; round++) {
      for (const v of values) {
        h.observe(v * (round + 1));
        one.observe(v * (round + 1));
      }
      for (let i = 0; i < 7; i++) h.observe(2 ** -6);
      one.observeMany(2 ** -6, 7);
      assert.equal(await tally.metrics(), await plain.metrics());
    }
  });

  it('keeps label sets apart and shows one only once it was observed', async () => {
    const { plain, tally, h, t } = pair(['op']);
    const a = t.tally({ op: 'publish' });
    const b = t.tally({ op: 'history' });
    t.zero({ op: 'probe' });
    h.zero({ op: 'probe' });
    assert.equal(await tally.metrics(), await plain.metrics());
    a.observe(2 ** -9);
    h.observe({ op: 'publish' }, 2 ** -9);
    assert.equal(await tally.metrics(), await plain.metrics());
    b.observeMany(0.25, 3);
    a.observe(2);
    for (let i = 0; i < 3; i++) h.observe({ op: 'history' }, 0.25);
    h.observe({ op: 'publish' }, 2);
    assert.equal(await tally.metrics(), await plain.metrics());
  });

  it('ignores what observe() would refuse (NaN, no weight) without throwing on the hot path', async () => {
    const { tally, t } = pair();
    const one = t.tally();
    one.observe(Number.NaN);
    one.observeMany(0.1, 0);
    assert.match(await tally.metrics(), /x_seconds_count 0\n/);
  });
});
