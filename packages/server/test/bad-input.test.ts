import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ErrorCode, DisconnectCode } from '@switchboard/protocol';
import { ENGINE, eventually, failCode, startTestServer, TestClient } from './helpers.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;

describe('bad input over WebSocket', () => {
  let server: Server;
  const clients: TestClient[] = [];
  const open = async (): Promise<TestClient> => {
    const c = await TestClient.open(server.wsUrl);
    clients.push(c);
    return c;
  };

  before(async () => {
    server = await startTestServer({
      maxSubscriptionsPerConnection: 3,
      maxOutboundBytes: 64 * 1024,
    });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server.close();
  });

  const cases: [string, string, number, string | number | undefined][] = [
    ['invalid JSON', '{"action": "subscribe", ', ErrorCode.INVALID_JSON, undefined],
    ['a JSON array', '[1,2]', ErrorCode.BAD_REQUEST, undefined],
    ['a JSON string', '"subscribe"', ErrorCode.BAD_REQUEST, undefined],
    ['no action', '{"channel":"x","id":1}', ErrorCode.BAD_REQUEST, 1],
    ['an unknown action', '{"action":"explode","id":2}', ErrorCode.UNKNOWN_ACTION, 2],
    ['a numeric action', '{"action":7,"id":3}', ErrorCode.BAD_REQUEST, 3],
    [
      'a channel that is not a string',
      '{"action":"subscribe","channel":42,"id":4}',
      ErrorCode.INVALID_CHANNEL,
      4,
    ],
    [
      'an empty channel',
      '{"action":"subscribe","channel":"","id":5}',
      ErrorCode.INVALID_CHANNEL,
      5,
    ],
    [
      'a channel with a glob',
      '{"action":"subscribe","channel":"news.*","id":6}',
      ErrorCode.INVALID_CHANNEL,
      6,
    ],
    [
      'a channel with spaces',
      '{"action":"publish","channel":"a b","data":1,"id":7}',
      ErrorCode.INVALID_CHANNEL,
      7,
    ],
    [
      'a 256-character channel',
      JSON.stringify({ action: 'subscribe', channel: 'c'.repeat(256), id: 8 }),
      ErrorCode.INVALID_CHANNEL,
      8,
    ],
    ['publish without data', '{"action":"publish","channel":"x","id":9}', ErrorCode.BAD_REQUEST, 9],
    [
      'a non-string name',
      '{"action":"publish","channel":"x","data":1,"name":5,"id":10}',
      ErrorCode.BAD_REQUEST,
      10,
    ],
    [
      'an empty messageId',
      '{"action":"publish","channel":"x","data":1,"messageId":"","id":11}',
      ErrorCode.BAD_REQUEST,
      11,
    ],
    ['an object as request id', '{"action":"ping","id":{"a":1}}', ErrorCode.BAD_REQUEST, undefined],
    [
      'unsubscribe from a channel never subscribed',
      '{"action":"unsubscribe","channel":"never","id":12}',
      ErrorCode.NOT_SUBSCRIBED,
      12,
    ],
  ];

  for (const [what, frame, code, id] of cases) {
    it(`answers ${what} with error code ${code} and keeps serving the connection`, async () => {
      const c = await open();
      c.send(frame);
      await c.until((fs) => fs.some((f) => f['error'] !== undefined));
      const err = c.frames.find((f) => f['error'] !== undefined);
      assert.equal(err?.['code'], code);
      assert.equal(typeof err?.['error'], 'string');
      assert.equal(err?.['reply'], id);
      assert.deepEqual(await c.request({ action: 'ping', id: 'after' }), {
        reply: 'after',
        ok: true,
        pong: true,
      });
    });
  }

  it('closes with 3501 after 100 malformed frames in a row, but not when valid ones come between', async () => {
    const patient = await open();
    for (let i = 0; i < 150; i++) {
      patient.send('nope');
      if (i % 50 === 49) await patient.request({ action: 'ping', id: i });
    }
    assert.equal((await patient.request({ action: 'ping', id: 'still' }))['ok'], true);
    const broken = await open();
    for (let i = 0; i < 100; i++) broken.send('nope');
    assert.equal(await broken.closed(), DisconnectCode.BAD_REQUEST);
    assert.equal(broken.frames.filter((f) => f['code'] === ErrorCode.INVALID_JSON).length, 100);
  });

  it('rejects binary frames with BAD_REQUEST', async () => {
    const c = await open();
    c.ws.send(Buffer.from('{"action":"ping","id":1}'), { binary: true });
    await c.until((fs) => fs.some((f) => f['error'] !== undefined));
    assert.equal(c.frames[0]?.['code'], ErrorCode.BAD_REQUEST);
    assert.equal((await c.request({ action: 'ping', id: 2 }))['ok'], true);
  });

  it('refuses a second subscribe to the same channel with ALREADY_SUBSCRIBED', async () => {
    const c = await open();
    await c.subscribe('twice');
    const again = await c.request({ action: 'subscribe', channel: 'twice', id: 'again' });
    assert.equal(again['code'], ErrorCode.ALREADY_SUBSCRIBED);
  });

  it('enforces the subscriptions-per-connection limit with LIMIT_EXCEEDED', async () => {
    const c = await open();
    for (const ch of ['l1', 'l2', 'l3']) assert.equal((await c.subscribe(ch))['ok'], true);
    const fourth = await c.request({ action: 'subscribe', channel: 'l4', id: 'four' });
    assert.equal(fourth['code'], ErrorCode.LIMIT_EXCEEDED);
    await c.request({ action: 'unsubscribe', channel: 'l1', id: 'u' });
    assert.equal((await c.subscribe('l4'))['ok'], true);
  });

  it('closes a connection that sends a frame over 64 KiB with 1009, and others carry on', async () => {
    const big = await open();
    const other = await open();
    big.send(JSON.stringify({ action: 'publish', channel: 'x', data: 'y'.repeat(70 * 1024) }));
    assert.equal(await big.closed(), failCode(DisconnectCode.MESSAGE_TOO_BIG));
    assert.equal((await other.request({ action: 'ping', id: 1 }))['ok'], true);
  });

  it('accepts a frame just under the limit', async () => {
    const c = await open();
    await c.subscribe('large');
    const ack = await c.request({
      action: 'publish',
      channel: 'large',
      data: 'z'.repeat(60 * 1024),
      id: 'big',
    });
    assert.equal(ack['ok'], true);
    await c.until(() => c.messages('large').length === 1);
  });

  it('disconnects a client that does not read with 3008 (too slow) without slowing the others', async () => {
    const slow = await open();
    const fast = await open();
    const pub = await open();
    await slow.subscribe('flood');
    await fast.subscribe('flood');
    slow.ws.pause();
    const payload = 'p'.repeat(30 * 1024);
    const total = 400; // 12 MB: more than the kernel's socket buffers plus the 64 KiB queue
    for (let i = 0; i < total; i++)
      pub.send({ action: 'publish', channel: 'flood', data: { i, payload } });
    await fast.until(
      () => fast.messages('flood').length === total,
      30_000,
      'all flood messages at the fast client',
    );
    assert.deepEqual(
      fast.messages('flood').map((m) => (m['message'] as { i: number }).i),
      Array.from({ length: total }, (_, i) => i),
    );
    // A burst this large outruns the uWS engine's 100 ms backlog check: uWS's own limit
    // (maxOutboundBytes + 4 MiB) drops the socket without a close frame, and nothing counts it.
    if (ENGINE === 'ws') {
      await eventually(
        async () =>
          /switchboard_disconnects_total\{code="3008"\} 1/.test(
            await (await fetch(`${server.url}/metrics`)).text(),
          ),
        10_000,
        'slow disconnect counted',
      );
    }
    slow.ws.resume();
    await slow.closed(10_000);
    assert.ok(
      slow.messages('flood').length < total,
      'the slow client was cut off before it got everything',
    );
  });
});
