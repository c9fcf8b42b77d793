import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  BINARY_REFUSED_FRAME,
  ErrorCode,
  encodeAdminHistoryBody,
  encodeAdminTailLine,
  encodeAdminPresenceBody,
  encodeBatch,
  encodeEnterReply,
  encodeError,
  encodeHistoryBody,
  encodeHistoryReply,
  encodeLeaveReply,
  encodeLongPollBody,
  encodeMemberId,
  encodeMessage,
  encodeOccupancyEvent,
  encodeOccupancyReply,
  encodeOk,
  encodePong,
  encodePositionSuffix,
  encodePresenceBody,
  encodePresenceEvent,
  encodePresenceFrame,
  encodePresenceMember,
  encodePresenceReply,
  encodePresenceSubscribeReply,
  encodePublishedMessage,
  encodePublishReply,
  encodeRefreshEvent,
  encodeRevokedEvent,
  encodeSubscribeReply,
  encodeTokenReply,
  encodeWebhookBody,
  frameKind,
  labelReply,
  parseFrames,
  presenceEventAction,
  replyIdWithPrefix,
  splitBatch,
  toMessage,
  toPosition,
  type OccupancyCounts,
  type RequestId,
} from '../src/index.js';

// The bytes the server emitted before the encoders existed (docs/protocol.md examples and the
// server's former template strings): the wire format must not change under the SDK, the
// tutorial clients or the Ably dialect.
describe('server frames: exact bytes', () => {
  const position = { offset: 7, epoch: 'e1' };
  const counts = { connections: 1, subscribers: 2, presenceMembers: 3, publishersLastMinute: 4 };
  const cases: [string, string][] = [
    [encodePong(undefined), '{"ok":true,"pong":true}'],
    [encodePong(5), '{"reply":5,"ok":true,"pong":true}'],
    [encodeOk('a'), '{"reply":"a","ok":true}'],
    [
      encodePublishReply(1, { messageId: 'm', offset: 3, epoch: 'e1', duplicate: false }),
      '{"reply":1,"ok":true,"messageId":"m","offset":3,"epoch":"e1"}',
    ],
    [
      encodePublishReply(1, { messageId: 'm', offset: 3, epoch: 'e1', duplicate: true }),
      '{"reply":1,"ok":true,"messageId":"m","offset":3,"epoch":"e1","duplicate":true}',
    ],
    [
      encodeSubscribeReply(2, { position }),
      '{"reply":2,"ok":true,"position":{"offset":7,"epoch":"e1"}}',
    ],
    [
      encodeSubscribeReply(2, { recovered: false, position }),
      '{"reply":2,"ok":true,"recovered":false,"position":{"offset":7,"epoch":"e1"}}',
    ],
    [
      encodeHistoryReply(3, { frames: ['{"a":1}', Buffer.from('{"b":2}')], position, next: 'c' }),
      '{"reply":3,"ok":true,"messages":[{"a":1},{"b":2}],"position":{"offset":7,"epoch":"e1"},"next":"c"}',
    ],
    [
      encodeHistoryBody({ frames: [], position, next: null }),
      '{"messages":[],"position":{"offset":7,"epoch":"e1"},"next":null}',
    ],
    [
      encodePresenceReply(4, {
        channel: 'c',
        members: ['{"m":1}'],
        offset: 2,
        epoch: 'e',
        next: null,
      }),
      '{"reply":4,"ok":true,"channel":"c","members":[{"m":1}],"offset":2,"epoch":"e","next":null}',
    ],
    [
      encodePresenceBody({ channel: 'c', members: [], offset: 2, epoch: 'e', next: 'n' }),
      '{"channel":"c","members":[],"offset":2,"epoch":"e","next":"n"}',
    ],
    [
      encodeEnterReply(5, { clientId: 'u', connectionId: 'k', offset: 9 }),
      '{"reply":5,"ok":true,"clientId":"u","connectionId":"k","offset":9}',
    ],
    [encodeLeaveReply(6, 10), '{"reply":6,"ok":true,"offset":10}'],
    [
      encodePresenceSubscribeReply(7, { offset: 1, epoch: 'e' }),
      '{"reply":7,"ok":true,"offset":1,"epoch":"e"}',
    ],
    [
      encodeOccupancyReply(8, counts),
      '{"reply":8,"ok":true,"occupancy":{"connections":1,"subscribers":2,"presenceMembers":3,"publishersLastMinute":4}}',
    ],
    [
      encodeTokenReply(9, { client: 'u', expiresAt: 123 }),
      '{"reply":9,"ok":true,"client":"u","expiresAt":123}',
    ],
    [
      encodeTokenReply(9, { client: 'u', expiresAt: undefined }),
      '{"reply":9,"ok":true,"client":"u","expiresAt":null}',
    ],
    [
      encodeError({ id: 1, code: ErrorCode.BAD_REQUEST, message: 'x' }),
      '{"reply":1,"error":"x","code":107}',
    ],
    [encodeError({ code: ErrorCode.BAD_REQUEST, message: 'x' }), '{"error":"x","code":107}'],
    [
      BINARY_REFUSED_FRAME,
      '{"error":"binary frames are not supported; send JSON text","code":107}',
    ],
    [
      encodeMessage({ channel: 'c', dataJson: '{"x":1}', id: 'i', timestamp: 5 }, position),
      '{"channel":"c","message":{"x":1},"id":"i","timestamp":5,"offset":7,"epoch":"e1"}',
    ],
    [
      encodeMessage({ channel: 'c', dataJson: '1', id: 'i', timestamp: 5, name: 'n' }),
      '{"channel":"c","message":1,"id":"i","timestamp":5,"name":"n"}',
    ],
    [encodePositionSuffix(7, 'e1'), ',"offset":7,"epoch":"e1"}'],
    [encodeRefreshEvent(99), '{"event":"refresh","expiresAt":99}'],
    [
      encodeRevokedEvent('unsubscribed', 'c'),
      '{"event":"unsubscribed","channel":"c","code":103,"reason":"no longer allowed by the token"}',
    ],
    [
      encodeOccupancyEvent('c', counts),
      '{"event":"occupancy","channel":"c","connections":1,"subscribers":2,"presenceMembers":3,"publishersLastMinute":4}',
    ],
    [
      encodePresenceEvent('enter', encodeMemberId('u', 'k'), 'null', 5, 1),
      '{"action":"enter","clientId":"u","connectionId":"k","data":null,"timestamp":5,"offset":1}',
    ],
    [
      encodePresenceMember(encodeMemberId('u', 'k'), '{}', 5, 1),
      '{"clientId":"u","connectionId":"k","data":{},"timestamp":5,"offset":1}',
    ],
    [encodePresenceFrame('c', 'e', ['{}']), '{"channel":"c","epoch":"e","presence":[{}]}'],
    [encodeLongPollBody(3, []), '{"cursor":3,"frames":[]}'],
    [
      encodeLongPollBody(3, ['{"a":1}'], { code: 1000, reason: 'bye' }),
      '{"cursor":3,"frames":[{"a":1}],"closed":{"code":1000,"reason":"bye"}}',
    ],
    [labelReply('{"reply":"x","ok":true}', 'c'), '{"channel":"c","reply":"x","ok":true}'],
    [
      encodeAdminHistoryBody('c', ['{}'], position),
      '{"channel":"c","messages":[{}],"position":{"offset":7,"epoch":"e1"}}',
    ],
    [
      encodeAdminTailLine(
        { id: 'i', channel: 'c', data: { x: 1 }, timestamp: 3, name: 'n' },
        position,
      ),
      '{"channel":"c","offset":7,"epoch":"e1","id":"i","data":{"x":1},"name":"n","at":3}',
    ],
    [
      encodeAdminTailLine({ id: 'i', channel: 'c', data: 1, timestamp: 3 }, undefined),
      '{"channel":"c","id":"i","data":1,"at":3}',
    ],
    [
      encodeAdminPresenceBody('c', [], 4, true),
      '{"channel":"c","members":[],"offset":4,"more":true}',
    ],
    [
      encodePublishedMessage({ id: 'i', dataJson: '2', timestamp: 1, offset: 2, epoch: 'e' }),
      '{"id":"i","data":2,"timestamp":1,"offset":2,"epoch":"e"}',
    ],
    [
      encodeWebhookBody({
        id: 'evt_1',
        type: 'channel.occupied',
        at: 1,
        channel: 'c',
        dataJson: '{}',
      }),
      '{"id":"evt_1","type":"channel.occupied","at":1,"channel":"c","data":{}}',
    ],
    [encodeBatch(['{"a":1}', '{"b":2}']), '{"a":1}\n{"b":2}'],
  ];
  for (const [got, want] of cases) {
    it(want.slice(0, 60), () => assert.equal(got, want));
  }
});

// Strings anywhere in Unicode, lone surrogates excluded (JSON text of those is not UTF-8).
const text = fc.string({ unit: 'grapheme', maxLength: 40 });
const id: fc.Arbitrary<RequestId> = fc.oneof(text, fc.integer());
const epoch = fc.stringMatching(/^[0-9a-z]{1,16}$/);
const offset = fc.nat();
const jsonValue = fc.jsonValue({ maxDepth: 3 });
const counts: fc.Arbitrary<OccupancyCounts> = fc.record({
  connections: fc.nat(),
  subscribers: fc.nat(),
  presenceMembers: fc.nat(),
  publishersLastMinute: fc.nat(),
});

function parse(frame: string): Record<string, unknown> {
  const frames = parseFrames(frame);
  assert.equal(frames.length, 1, frame);
  return frames[0] as Record<string, unknown>;
}

/** JSON.parse(JSON.stringify(v)): what a value looks like after a round trip (-0 becomes 0). */
function wire(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v)) as unknown;
}

describe('server frames: encode → decode round trip', () => {
  it('message pushes, positioned or not, through toMessage', () => {
    fc.assert(
      fc.property(
        text,
        jsonValue,
        text,
        fc.nat(),
        fc.option(text, { nil: undefined }),
        fc.option(fc.record({ offset, epoch }), { nil: undefined }),
        (channel, data, mid, timestamp, name, position) => {
          const frame = encodeMessage(
            { channel, dataJson: JSON.stringify(data), id: mid, timestamp, name },
            position,
          );
          const decoded = parse(frame);
          assert.equal(frameKind(decoded), 'message');
          assert.deepEqual(toMessage(decoded), {
            channel,
            data: wire(data),
            id: mid,
            timestamp,
            ...(name !== undefined && { name }),
            ...position,
          });
        },
      ),
    );
  });

  it('replies carry their id and fields', () => {
    fc.assert(
      fc.property(id, text, offset, epoch, fc.boolean(), (rid, mid, off, ep, duplicate) => {
        const ack = parse(
          encodePublishReply(rid, { messageId: mid, offset: off, epoch: ep, duplicate }),
        );
        assert.equal(frameKind(ack), 'reply');
        assert.deepEqual(ack, {
          reply: rid,
          ok: true,
          messageId: mid,
          offset: off,
          epoch: ep,
          ...(duplicate && { duplicate }),
        });
        const sub = parse(
          encodeSubscribeReply(rid, { recovered: duplicate, position: { offset: off, epoch: ep } }),
        );
        assert.deepEqual(toPosition(sub['position']), { offset: off, epoch: ep });
        assert.equal(sub['recovered'], duplicate);
        assert.deepEqual(parse(encodePong(rid)), { reply: rid, ok: true, pong: true });
        assert.deepEqual(parse(encodeOk(rid)), { reply: rid, ok: true });
        assert.deepEqual(parse(encodeLeaveReply(rid, off)), { reply: rid, ok: true, offset: off });
      }),
    );
  });

  it('history and presence pages embed stored JSON as is', () => {
    fc.assert(
      fc.property(
        id,
        text,
        fc.array(fc.tuple(text, jsonValue, fc.nat()), { maxLength: 5 }),
        fc.option(text, { nil: null }),
        offset,
        epoch,
        (rid, channel, items, next, off, ep) => {
          const frames = items.map(([mid, data, ts]) =>
            encodeMessage({ channel, dataJson: JSON.stringify(data), id: mid, timestamp: ts }),
          );
          const page = parse(
            encodeHistoryReply(rid, { frames, position: { offset: off, epoch: ep }, next }),
          );
          assert.equal(page['reply'], rid);
          assert.equal(page['next'], next);
          const messages = page['messages'] as Record<string, unknown>[];
          assert.deepEqual(
            messages.map((m) => toMessage(m)?.data),
            items.map(([, data]) => wire(data)),
          );
          const members = items.map(([who, data, ts], i) =>
            encodePresenceMember(encodeMemberId(who, channel), JSON.stringify(data), ts, i),
          );
          const pres = parse(
            encodePresenceReply(rid, { channel, members, offset: off, epoch: ep, next }),
          );
          assert.deepEqual(
            (pres['members'] as Record<string, unknown>[]).map((m) => m['clientId']),
            items.map(([who]) => who),
          );
          assert.equal(pres['channel'], channel);
        },
      ),
    );
  });

  it('errors, events and presence frames', () => {
    fc.assert(
      fc.property(
        fc.option(id, { nil: undefined }),
        text,
        text,
        counts,
        fc.constantFrom('enter', 'update', 'leave' as const),
        jsonValue,
        (rid, message, channel, c, action, data) => {
          const code = ErrorCode.BAD_REQUEST;
          const err = parse(
            encodeError(rid === undefined ? { code, message } : { id: rid, code, message }),
          );
          assert.equal(frameKind(err), 'error');
          assert.deepEqual(err, {
            ...(rid !== undefined && { reply: rid }),
            error: message,
            code: ErrorCode.BAD_REQUEST,
          });
          const occ = parse(encodeOccupancyEvent(channel, c));
          assert.equal(frameKind(occ), 'event');
          assert.deepEqual(occ, { event: 'occupancy', channel, ...c });
          assert.deepEqual(parse(encodeOccupancyReply(1, c))['occupancy'], { ...c });
          const revoked = parse(encodeRevokedEvent('presence-unsubscribed', channel));
          assert.equal(revoked['channel'], channel);
          const event = encodePresenceEvent(
            action,
            encodeMemberId(message, channel),
            JSON.stringify(data),
            1,
            2,
          );
          const pres = parse(encodePresenceFrame(channel, 'e', [event]));
          assert.equal(frameKind(pres), 'presence');
          assert.equal(presenceEventAction(event), action);
          assert.deepEqual(pres['presence'], [
            {
              action,
              clientId: message,
              connectionId: channel,
              data: wire(data),
              timestamp: 1,
              offset: 2,
            },
          ]);
          assert.deepEqual(parse(labelReply(encodeOk('x'), channel)), {
            channel,
            reply: 'x',
            ok: true,
          });
        },
      ),
    );
  });

  it('reads a prefixed reply id from the first bytes only', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[a-z0-9:.-]{0,20}$/), (rest) => {
        assert.equal(replyIdWithPrefix(encodeOk('_sb:' + rest), '_sb:'), '_sb:' + rest);
        assert.equal(replyIdWithPrefix(encodeOk(rest), '_sb:'), undefined);
      }),
    );
  });

  it('batches split back into their frames', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(text, jsonValue), { maxLength: 8 }), (items) => {
        const frames = items.map(([channel, data]) =>
          encodeMessage({ channel, dataJson: JSON.stringify(data), id: 'i', timestamp: 1 }),
        );
        const batch = encodeBatch(frames);
        assert.deepEqual(splitBatch(batch), frames);
        assert.deepEqual(
          parseFrames(batch).map((f) => toMessage(f)?.channel),
          items.map(([channel]) => channel),
        );
      }),
    );
  });

  it('long-poll bodies carry frames and the close', () => {
    fc.assert(
      fc.property(fc.nat(), fc.array(text, { maxLength: 4 }), text, (cursor, errs, reason) => {
        const frames = errs.map((m) => encodeError({ code: ErrorCode.BAD_REQUEST, message: m }));
        const body = JSON.parse(
          encodeLongPollBody(cursor, frames, { code: 1000, reason }),
        ) as Record<string, unknown>;
        assert.equal(body['cursor'], cursor);
        assert.deepEqual(
          (body['frames'] as Record<string, unknown>[]).map((f) => f['error']),
          errs,
        );
        assert.deepEqual(body['closed'], { code: 1000, reason });
      }),
    );
  });
});
