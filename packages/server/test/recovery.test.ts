import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { framePosition, mergeAfter } from '../src/recovery.js';

const p = (offset: number): { offset: number; frame: Buffer } => ({
  offset,
  frame: Buffer.from(String(offset)),
});

describe('recovery', () => {
  describe('framePosition', () => {
    it('reads the position a frame ends with', () => {
      assert.deepEqual(
        framePosition(
          Buffer.from(
            '{"channel":"c","message":1,"id":"i","timestamp":1,"offset":42,"epoch":"Ab-_9"}',
          ),
        ),
        { offset: 42, epoch: 'Ab-_9' },
      );
    });
    it('ignores an "offset" key inside the data of an unpositioned frame', () => {
      assert.equal(
        framePosition(
          Buffer.from('{"channel":"c","message":{"offset":5,"epoch":"x"},"id":"i","timestamp":1}'),
        ),
        undefined,
      );
    });
  });

  describe('mergeAfter', () => {
    it('joins history and live frames, dropping duplicates', () => {
      assert.deepEqual(
        mergeAfter(2, [p(3), p(4), p(5)], [p(4), p(5), p(6), p(7)])?.map((x) => x.offset),
        [3, 4, 5, 6, 7],
      );
    });
    it('drops what is at or before the position', () => {
      assert.deepEqual(
        mergeAfter(5, [p(3), p(4), p(5)], [p(6)])?.map((x) => x.offset),
        [6],
      );
    });
    it('refuses a gap at the start or in the middle', () => {
      assert.equal(mergeAfter(2, [p(4), p(5)], []), undefined);
      assert.equal(mergeAfter(2, [p(3)], [p(5)]), undefined);
    });
    it('is empty when nothing follows', () => {
      assert.deepEqual(mergeAfter(9, [], []), []);
    });
  });
});
