import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseFrames, toMessage, toPosition } from '../src/frames.js';

describe('parseFrames', () => {
  it('splits a batched WebSocket message on newlines, in order', () => {
    const text = [
      '{"reply":1,"ok":true}',
      '{"channel":"a","message":1}',
      '{"channel":"a","message":2}',
    ].join('\n');
    assert.deepEqual(parseFrames(text), [
      { reply: 1, ok: true },
      { channel: 'a', message: 1 },
      { channel: 'a', message: 2 },
    ]);
  });

  it('reads an unbatched frame, and newlines escaped inside JSON strings stay in the frame', () => {
    assert.deepEqual(parseFrames(JSON.stringify({ channel: 'a', message: 'x\ny' })), [
      { channel: 'a', message: 'x\ny' },
    ]);
  });

  it('skips empty lines, invalid JSON and non-objects without losing the other frames', () => {
    assert.deepEqual(parseFrames('{"a":1}\n\nnot json\n[1,2]\n42\nnull\n{"b":2}\n'), [
      { a: 1 },
      { b: 2 },
    ]);
  });
});

describe('toMessage', () => {
  it('maps a message push to a Message', () => {
    const m = toMessage({
      channel: 'iss.telemetry',
      message: { lat: 51.5 },
      id: 'abc',
      timestamp: 1764400000000,
      name: 'position',
      offset: 42,
      epoch: 'Qm9b',
    });
    assert.deepEqual(m, {
      id: 'abc',
      channel: 'iss.telemetry',
      data: { lat: 51.5 },
      timestamp: 1764400000000,
      name: 'position',
      offset: 42,
      epoch: 'Qm9b',
    });
  });

  it('keeps bridged messages without a position, and null data', () => {
    assert.deepEqual(toMessage({ channel: 'c', message: null, id: 'x', timestamp: 5 }), {
      id: 'x',
      channel: 'c',
      data: null,
      timestamp: 5,
    });
  });

  it('is undefined for replies, errors and pongs', () => {
    assert.equal(toMessage({ reply: 1, ok: true, channel: 'c', message: 1 }), undefined);
    assert.equal(toMessage({ reply: 2, error: 'no', code: 103 }), undefined);
    assert.equal(toMessage({ ok: true, pong: true }), undefined);
  });
});

describe('toPosition', () => {
  it('reads {offset, epoch} and rejects anything else, including an empty epoch', () => {
    assert.deepEqual(toPosition({ offset: 0, epoch: 'E' }), { offset: 0, epoch: 'E' });
    assert.equal(toPosition({ offset: 3, epoch: '' }), undefined);
    assert.equal(toPosition({ offset: '3', epoch: 'E' }), undefined);
    assert.equal(toPosition(null), undefined);
    assert.equal(toPosition([1, 'E']), undefined);
  });
});
