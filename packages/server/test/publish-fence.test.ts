/**
 * The publish fence (src/publish-fence.ts): after a failed publish, a connection's later publishes
 * on the channel wait until the failed ones were sent again, oldest first; it lapses after 10 s.
 * End to end across real failovers: packages/client/test/redis-ha.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FENCE_MS, PublishFence } from '../src/publish-fence.js';

describe('PublishFence', () => {
  it('admits everything while nothing failed', () => {
    const f = new PublishFence();
    assert.equal(f.admit('c', 'a'), true);
    assert.equal(f.admit('c', undefined), true);
    assert.equal(f.size, 0);
  });

  it('refuses later publishes on the channel until the failed ones are re-sent, oldest first', () => {
    const f = new PublishFence();
    f.failed('c', 'm4', 4);
    f.failed('c', 'm5', 5);
    assert.equal(f.admit('c', 'm6'), false, 'a later one');
    f.failed('c', 'm6', 6, true);
    assert.equal(f.admit('c', 'm7'), false, 'another later one');
    assert.equal(f.admit('other', 'x'), true, 'other channels are not fenced');
    assert.equal(f.admit('c', 'm4'), true);
    assert.equal(f.admit('c', 'm7'), false, 'm5 and m6 first');
    assert.equal(f.admit('c', 'm5'), true);
    assert.equal(f.admit('c', 'm6'), true);
    assert.equal(f.admit('c', 'm7'), true);
    assert.equal(f.size, 0);
  });

  it('lets the older failed ones go when a later failed one is re-sent first (the client gave them up)', () => {
    const f = new PublishFence();
    f.failed('c', 'm4', 4);
    f.failed('c', 'm5', 5);
    f.failed('c', 'm6', 6, true);
    assert.equal(f.admit('c', 'm6'), true);
    assert.equal(f.admit('c', 'm4'), true, 'nothing fenced any more');
    assert.equal(f.size, 0);
  });

  it('keeps the send order when failures are answered out of order, and a re-sent one that fails again keeps its place', () => {
    const f = new PublishFence();
    f.failed('c', 'm5', 5);
    f.failed('c', 'm4', 4);
    assert.equal(f.admit('c', 'm9'), false);
    assert.equal(f.admit('c', 'm4'), true);
    f.failed('c', 'm4', 9); // its retry failed too
    // m4 is before m5 again: re-sending it does not let m5 go.
    assert.equal(f.admit('c', 'm4'), true);
    assert.equal(f.admit('c', 'm9'), false, 'm5 still fenced');
    assert.equal(f.admit('c', 'm5'), true);
    assert.equal(f.admit('c', 'm9'), true);
  });

  it('lapses FENCE_MS after the last failure; failures without a message id do not fence', () => {
    let now = 1000;
    const f = new PublishFence(() => now);
    f.failed('c', undefined, 1);
    assert.equal(f.admit('c', 'x'), true);
    f.failed('c', 'm1', 2);
    now += FENCE_MS - 1;
    assert.equal(f.admit('c', 'm2'), false);
    f.failed('c', 'm2', 3, true); // its own refusals do not prolong it
    now += 1;
    assert.equal(f.admit('c', 'm2'), true, 'lapsed');
  });
});
