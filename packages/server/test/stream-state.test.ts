import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodeEventId, OVERFLOW_ID, StreamState } from '../src/engine/stream-state.js';

describe('SSE event ids (StreamState)', () => {
  it('follows subscribes, positioned messages and unsubscribes; round-trips through decodeEventId', () => {
    const s = new StreamState();
    assert.equal(s.subscribed('a', { offset: 4, epoch: 'E1' }), true);
    assert.equal(s.subscribed('b', undefined), true);
    assert.equal(s.encode(), '4,E1,a;,,b');
    assert.equal(s.message('a', { offset: 5, epoch: 'E1' }), true);
    // bridged messages and events carry no position: nothing moves, even on an untracked stream
    assert.equal(s.message('b', undefined), false);
    assert.equal(s.message('occupancy stream', undefined), false);
    assert.equal(s.unsubscribed('b'), true);
    assert.equal(s.unsubscribed('b'), false);
    assert.deepEqual(decodeEventId(s.encode()), new Map([['a', { offset: 5, epoch: 'E1' }]]));
  });

  it("a subscribe's position never moves a channel back behind a live message already written", () => {
    const s = new StreamState();
    s.message('a', { offset: 9, epoch: 'E1' });
    assert.equal(s.subscribed('a', { offset: 7, epoch: 'E1' }), false);
    assert.equal(s.encode(), '9,E1,a');
    // a new epoch is news, whatever its offset
    assert.equal(s.subscribed('a', { offset: 0, epoch: 'E2' }), true);
    assert.equal(s.encode(), '0,E2,a');
  });

  it('a state too large for a header is written as the overflow id', () => {
    const s = new StreamState();
    for (let i = 0; i < 400; i++)
      s.subscribed(`channel-with-a-long-name-${i}`, { offset: i, epoch: 'E' });
    assert.equal(s.encode(), OVERFLOW_ID);
    assert.equal(decodeEventId(OVERFLOW_ID), 'overflow');
  });
});
