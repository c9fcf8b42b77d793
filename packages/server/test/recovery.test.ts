import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StreamPosition } from '../src/broker/broker.js';
import { Hub, type Sink } from '../src/hub.js';
import { BufferingSink, mergeAfter } from '../src/recovery.js';

const p = (offset: number): { offset: number; frame: Buffer } => ({
  offset,
  frame: Buffer.from(String(offset)),
});

describe('recovery', () => {
  describe('positions travel as data', () => {
    // A frame whose bytes say another position than the broker assigned: the sinks must get the
    // assigned one, which proves nothing reads positions back out of the frame text.
    const frame = Buffer.from(
      '{"channel":"c","message":{"offset":5,"epoch":"x"},"id":"i","timestamp":1}',
    );
    const collect = (batched: boolean) => {
      const got: [string, StreamPosition | undefined][] = [];
      const sink: Sink = {
        batched,
        send: (f, position) => got.push([f.toString(), position]),
        close: () => undefined,
      };
      return { sink, got };
    };

    it('the Hub hands each sink the position published with the frame', async () => {
      const hub = new Hub();
      const single = collect(false);
      const batched = collect(true);
      const buffer = new BufferingSink(single.sink, 10);
      hub.add('c', single.sink);
      hub.add('c', batched.sink);
      hub.add('c', buffer);
      hub.publish('c', frame, NaN, { offset: 41, epoch: 'E' });
      hub.publish('c', Buffer.from('{"event":"x"}'), NaN, undefined);
      hub.publish('c', frame, NaN, { offset: 42, epoch: 'E' });
      await hub.settled('c');
      assert.deepEqual(
        single.got.map(([, position]) => position),
        [{ offset: 41, epoch: 'E' }, undefined, { offset: 42, epoch: 'E' }],
      );
      // One batch: its position is its last message's.
      assert.deepEqual(
        batched.got.map(([, position]) => position),
        [{ offset: 42, epoch: 'E' }],
      );
      assert.deepEqual(
        buffer.frames.map((f) => f.position?.offset),
        [41, undefined, 42],
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
