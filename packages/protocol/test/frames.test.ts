import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  ErrorCode,
  channelError,
  channelNamespace,
  closeMessageFrame,
  decodeCommand,
  peekRequestId,
  encodeError,
  encodeMessageHead,
  encodeReply,
  shouldReconnect,
} from '../src/index.js';

describe('decodeCommand', () => {
  it('decodes the classic tutorial subscribe', () => {
    assert.deepEqual(decodeCommand('{"action":"subscribe","channel":"iss.telemetry"}'), {
      ok: true,
      command: { action: 'subscribe', channel: 'iss.telemetry' },
    });
  });

  it('keeps the request id, string or integer', () => {
    assert.deepEqual(decodeCommand('{"action":"ping","id":"a"}'), {
      ok: true,
      command: { action: 'ping', id: 'a' },
    });
    assert.deepEqual(decodeCommand('{"action":"ping","id":3}'), {
      ok: true,
      command: { action: 'ping', id: 3 },
    });
  });

  it('encodes publish data once, as JSON text, accepting "message" as an alias', () => {
    const r = decodeCommand(
      '{"action":"publish","channel":"c","data":{"a":[1,2]},"name":"n","messageId":"k","id":1}',
    );
    assert.deepEqual(r, {
      ok: true,
      command: {
        action: 'publish',
        channel: 'c',
        dataJson: '{"a":[1,2]}',
        name: 'n',
        messageId: 'k',
        id: 1,
      },
    });
    const alias = decodeCommand('{"action":"publish","channel":"c","message":"hi"}');
    assert.ok(alias.ok && alias.command.action === 'publish' && alias.command.dataJson === '"hi"');
  });

  it('reports errors with the request id when it could be read', () => {
    assert.deepEqual(decodeCommand('nope'), {
      ok: false,
      code: ErrorCode.INVALID_JSON,
      message: 'frame is not valid JSON',
    });
    const r = decodeCommand('{"action":"subscribe","channel":"a b","id":5}');
    assert.ok(!r.ok && r.code === ErrorCode.INVALID_CHANNEL && r.id === 5);
    const fractional = decodeCommand('{"action":"ping","id":1.5}');
    assert.ok(
      !fractional.ok && fractional.id === undefined && fractional.code === ErrorCode.BAD_REQUEST,
    );
  });

  it('ignores __proto__ keys and never touches Object.prototype', () => {
    const r = decodeCommand(
      '{"action":"publish","channel":"c","data":{"__proto__":{"polluted":1}},"__proto__":{"x":1}}',
    );
    assert.ok(r.ok);
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
    assert.equal(({} as Record<string, unknown>)['x'], undefined);
  });
});

describe('channel names', () => {
  it('accepts the safe set up to 255 characters', () => {
    assert.equal(channelError('chat:room-1/a.b@c=d,e~f_g'), undefined);
    assert.equal(channelError('x'.repeat(255)), undefined);
  });
  it('rejects globs, braces, spaces, empty and long names', () => {
    for (const bad of ['a*', 'a?', '[a]', '{a}', 'a b', '', 'x'.repeat(256), 'é'])
      assert.notEqual(channelError(bad), undefined, bad);
  });
  it('takes the namespace before the first colon', () => {
    assert.equal(channelNamespace('chat:room:1'), 'chat');
    assert.equal(channelNamespace('plain'), '');
  });
});

describe('frame encoding', () => {
  it('builds message frames the tutorial clients can read', () => {
    const head = encodeMessageHead({
      channel: 'c',
      dataJson: '{"v":1}',
      id: 'i',
      timestamp: 5,
      name: 'n',
    });
    assert.deepEqual(JSON.parse(closeMessageFrame(head, 7, 'E1')), {
      channel: 'c',
      message: { v: 1 },
      id: 'i',
      timestamp: 5,
      name: 'n',
      offset: 7,
      epoch: 'E1',
    });
  });
  it('builds replies and errors', () => {
    assert.deepEqual(JSON.parse(encodeReply('r', '"x":1')), { reply: 'r', ok: true, x: 1 });
    assert.deepEqual(JSON.parse(encodeError({ code: 107, message: 'bad "thing"' })), {
      error: 'bad "thing"',
      code: 107,
    });
    assert.deepEqual(JSON.parse(encodeError({ id: 2, code: 107, message: 'm' })), {
      reply: 2,
      error: 'm',
      code: 107,
    });
  });
  it('classifies close codes by range', () => {
    assert.equal(shouldReconnect(3008), true);
    assert.equal(shouldReconnect(1001), true);
    assert.equal(shouldReconnect(3501), false);
    assert.equal(shouldReconnect(4600), false);
    assert.equal(shouldReconnect(1000), false);
  });
});

describe('peekRequestId', () => {
  it('finds the id last (as the SDK sends it), first, or anywhere in a short frame', () => {
    assert.equal(peekRequestId('{"action":"publish","channel":"a","data":{"id":1},"id":7}'), 7);
    assert.equal(peekRequestId('{ "id" : "r-1" , "action":"ping"}'), 'r-1');
    assert.equal(peekRequestId('{"action":"ping","id":-3 }\n'), -3);
    assert.equal(peekRequestId('{"action":"ping","id":"x","channel":"a"}'), 'x');
    assert.equal(peekRequestId(`{"data":"${'x'.repeat(600)}","id":"y","z":1}`), undefined);
  });

  it('finds nothing where there is no top-level id', () => {
    for (const text of [
      '',
      'garbage',
      '{"action":"publish","channel":',
      '{"data":{"id":5}}',
      '{"data":"\\"id\\":5"}',
      '{"a":"b\\","id":1.5}',
      '{"id":99999999999999999}',
      `{"id":"${'i'.repeat(65)}"}`,
      '[{"id":1}]',
    ])
      assert.equal(peekRequestId(text), undefined, text);
  });

  it('never disagrees with JSON.parse on a JSON object (fast-check)', () => {
    const idArb = fc.oneof(
      fc.integer({ min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }),
      fc.string({ maxLength: 64 }),
    );
    const valueArb = fc.jsonValue({ maxDepth: 3 });
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.string().filter((k) => k !== 'id'),
          valueArb,
          { maxKeys: 5 },
        ),
        fc.option(idArb, { nil: undefined }),
        fc.nat(6),
        fc.boolean(),
        (fields, id, at, spaced) => {
          const entries: [string, unknown][] = Object.entries(fields);
          if (id !== undefined) entries.splice(Math.min(at, entries.length), 0, ['id', id]);
          const obj = Object.fromEntries(entries);
          const text = spaced ? JSON.stringify(obj, null, 1) : JSON.stringify(obj);
          const peeked = peekRequestId(text);
          if (peeked !== undefined) assert.equal(peeked, id, text);
          // Integer-like keys come first whatever the insertion order: ask the object.
          const keys = Object.keys(obj);
          const first = keys[0] === 'id';
          const last = keys[keys.length - 1] === 'id';
          // Found at either end unless it is a string with escapes (left to the parse).
          const plain = typeof id === 'number' || JSON.stringify(id) === `"${id}"`;
          if (id !== undefined && (((first || last) && plain) || text.length <= 512))
            assert.equal(peeked, id, text);
        },
      ),
      { numRuns: 5000 },
    );
  });
});
