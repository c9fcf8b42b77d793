/** The readiness policy on its own, with a hand-driven clock (the wiring is in redis-freeze.test.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Readiness } from '../src/readiness.js';

function rig(): { r: Readiness; at: (ms: number) => void; link: { up: boolean } } {
  let now = 1_000_000;
  const link = { up: true };
  const r = new Readiness({
    graceMs: 5000,
    recoverMs: 2000,
    probeMs: 0,
    connected: () => link.up,
    now: () => now,
  });
  return { r, at: (ms) => void (now = 1_000_000 + ms), link };
}

describe('Readiness', () => {
  it('a decision (draining) counts at once', () => {
    const { r } = rig();
    assert.equal(r.ready, true);
    r.set('draining', 'shutting down');
    assert.deepEqual(r.state(), { ready: false, reasons: ['draining: shutting down'], faults: [] });
    r.set('draining', undefined);
    assert.equal(r.ready, true);
  });

  it('a failing write counts only after the grace period, from when the write was sent', () => {
    const { r, at } = rig();
    r.observeWrite(false, 1_000_000, 'Command timed out');
    at(4999);
    const s = r.state();
    assert.equal(s.ready, true);
    assert.match(s.faults[0] ?? '', /^broker-not-writable: Command timed out/);
    at(5000);
    assert.equal(r.ready, false);
  });

  it('a blip shorter than the grace period never makes the node unready', () => {
    const { r, at, link } = rig();
    link.up = false;
    assert.equal(r.ready, true);
    at(3000);
    link.up = true;
    assert.equal(r.ready, true);
    at(3100);
    assert.deepEqual(r.state(), { ready: true, reasons: [], faults: [] });
  });

  it('after a counted fault, ready again only once it has been gone for recoverMs; a new fault then counts at once', () => {
    const { r, at } = rig();
    r.observeWrite(false, 1_000_000, 'OOM');
    at(6000);
    assert.equal(r.ready, false);
    r.observeWrite(true, 1_006_000);
    at(7000);
    assert.match(r.state().reasons[0] ?? '', /^recovering/);
    r.observeWrite(false, 1_007_000, 'OOM');
    at(7100);
    assert.equal(r.ready, false, 'a flap inside the recovery window counts at once');
    r.observeWrite(true, 1_007_100);
    at(9099);
    assert.equal(r.ready, false);
    at(9100);
    assert.equal(r.ready, true);
  });
});
