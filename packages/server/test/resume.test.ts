import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ErrorCode } from '@switchboard/protocol';
import { startTestServer, TestClient, type Frame } from './helpers.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;
interface Pos {
  offset: number;
  epoch: string;
}

const offsets = (frames: Frame[]): number[] => frames.map((f) => f['offset'] as number);
const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('resume, rewind and history (embedded engine)', () => {
  let server: Server;
  let pub: TestClient;
  const clients: TestClient[] = [];
  const open = async (): Promise<TestClient> => {
    const c = await TestClient.open(server.wsUrl);
    clients.push(c);
    return c;
  };
  let seq = 0;
  const publish = async (channel: string, n: number): Promise<Frame[]> => {
    const acks = [];
    for (let i = 0; i < n; i++)
      acks.push(pub.request({ action: 'publish', channel, data: i, id: `p${++seq}` }));
    return Promise.all(acks);
  };

  before(async () => {
    server = await startTestServer({
      namespaces: { short: { historySize: 5 } },
      recoveryMaxMessages: 50,
    });
    pub = await TestClient.open(server.wsUrl);
  });
  after(async () => {
    pub.close();
    for (const c of clients) c.close();
    await server.close();
  });

  it('recovers every message missed while disconnected, exactly once and in order, then live ones', async () => {
    const a = await open();
    await a.subscribe('resume');
    await publish('resume', 5);
    await a.until(() => a.messages('resume').length === 5);
    const last = a.messages('resume')[4] as Frame;
    a.close();
    await a.closed();
    await publish('resume', 7);
    const b = await open();
    const reply = await b.request({
      action: 'subscribe',
      channel: 'resume',
      id: 'r',
      since: { offset: last['offset'], epoch: last['epoch'] },
    });
    assert.equal(reply['recovered'], true);
    assert.deepEqual(reply['position'], { offset: 5, epoch: last['epoch'] });
    await b.until(() => b.messages('resume').length === 7);
    await publish('resume', 3);
    await b.until(() => b.messages('resume').length === 10);
    assert.deepEqual(offsets(b.messages('resume')), range(6, 15));
    const replyIndex = b.frames.indexOf(reply);
    assert.ok(
      b.frames.findIndex((f) => f['channel'] === 'resume') > replyIndex,
      'the reply comes before the replay',
    );
  });

  it('recovers with nothing to replay when nothing was missed', async () => {
    const a = await open();
    const first = await a.subscribe('uptodate');
    const b = await open();
    const reply = await b.request({
      action: 'subscribe',
      channel: 'uptodate',
      id: 'r',
      since: first['position'],
    });
    assert.equal(reply['recovered'], true);
    await publish('uptodate', 1);
    await b.until(() => b.messages('uptodate').length === 1);
    assert.deepEqual(offsets(b.messages('uptodate')), [1]);
  });

  it('keeps the stream exact while messages are published during the resume', async () => {
    const a = await open();
    const first = await a.subscribe('busy');
    await publish('busy', 20);
    const b = await open();
    const resumed = b.request({
      action: 'subscribe',
      channel: 'busy',
      id: 'r',
      since: { offset: 10, epoch: (first['position'] as Pos).epoch },
    });
    const burst = publish('busy', 30);
    assert.equal((await resumed)['recovered'], true);
    await burst;
    await b.until(() => b.messages('busy').length === 40, 10_000);
    assert.deepEqual(offsets(b.messages('busy')), range(11, 50));
  });

  it('answers recovered: false and replays nothing when the epoch differs', async () => {
    const a = await open();
    await a.subscribe('epoch');
    await publish('epoch', 3);
    const b = await open();
    const reply = await b.request({
      action: 'subscribe',
      channel: 'epoch',
      id: 'r',
      since: { offset: 1, epoch: 'not-this-one' },
    });
    assert.equal(reply['recovered'], false);
    assert.equal((reply['position'] as Pos).offset, 3);
    await publish('epoch', 1);
    await b.until(() => b.messages('epoch').length >= 1);
    assert.deepEqual(
      offsets(b.messages('epoch')),
      [4],
      'only live messages after the current position',
    );
  });

  it('answers recovered: false when history was trimmed past the position (never a partial replay)', async () => {
    const a = await open();
    const first = await a.subscribe('short:trim');
    await publish('short:trim', 12);
    const b = await open();
    const reply = await b.request({
      action: 'subscribe',
      channel: 'short:trim',
      id: 'r',
      since: { offset: 2, epoch: (first['position'] as Pos).epoch },
    });
    assert.equal(reply['recovered'], false);
    assert.deepEqual((reply['position'] as Pos).offset, 12);
    await publish('short:trim', 1);
    await b.until(() => b.messages('short:trim').length >= 1);
    assert.deepEqual(offsets(b.messages('short:trim')), [13]);
  });

  it('answers recovered: false when more than recoveryMaxMessages are missing', async () => {
    const a = await open();
    const first = await a.subscribe('cap');
    await publish('cap', 60);
    const b = await open();
    const reply = await b.request({
      action: 'subscribe',
      channel: 'cap',
      id: 'r',
      since: first['position'],
    });
    assert.equal(reply['recovered'], false);
    const c = await open();
    const within = await c.request({
      action: 'subscribe',
      channel: 'cap',
      id: 'r',
      since: { offset: 10, epoch: (first['position'] as Pos).epoch },
    });
    assert.equal(within['recovered'], true);
    await c.until(() => c.messages('cap').length === 50);
  });

  it('rejects a position beyond the channel top as unrecoverable', async () => {
    const a = await open();
    const first = await a.subscribe('future');
    await publish('future', 2);
    const b = await open();
    const reply = await b.request({
      action: 'subscribe',
      channel: 'future',
      id: 'r',
      since: { offset: 99, epoch: (first['position'] as Pos).epoch },
    });
    assert.equal(reply['recovered'], false);
  });

  it('rewinds the last N messages before live ones', async () => {
    await publish('rewind', 10);
    const c = await open();
    const reply = await c.request({ action: 'subscribe', channel: 'rewind', id: 'r', rewind: 3 });
    assert.equal(reply['recovered'], undefined);
    assert.equal((reply['position'] as Pos).offset, 7);
    await c.until(() => c.messages('rewind').length === 3);
    await publish('rewind', 1);
    await c.until(() => c.messages('rewind').length === 4);
    assert.deepEqual(offsets(c.messages('rewind')), [8, 9, 10, 11]);
    const d = await open();
    await d.request({ action: 'subscribe', channel: 'rewind', id: 'r', rewind: 100 });
    await d.until(() => d.messages('rewind').length === 11);
  });

  it('pages history forwards and backwards with cursors over WebSocket', async () => {
    await publish('pages', 25);
    const c = await open();
    const pages = await c.historyPages({ channel: 'pages', limit: 10 });
    assert.deepEqual(
      pages.flatMap((p) => offsets(p['messages'] as Frame[])),
      range(1, 25),
    );
    const backPages = await c.historyPages({ channel: 'pages', limit: 10, direction: 'backward' });
    assert.deepEqual(
      backPages.flatMap((p) => offsets(p['messages'] as Frame[])),
      range(1, 25).reverse(),
    );
    const page = backPages[backPages.length - 1] as Frame;
    const since = await c.request({
      action: 'history',
      channel: 'pages',
      id: 's',
      since: { offset: 20, epoch: (page['position'] as Pos).epoch },
    });
    assert.deepEqual(offsets(since['messages'] as Frame[]), range(21, 25));
    const stale = await c.request({
      action: 'history',
      channel: 'pages',
      id: 'x',
      since: { offset: 20, epoch: 'old' },
    });
    assert.equal(stale['code'], ErrorCode.UNRECOVERABLE_POSITION);
    const garbage = await c.request({
      action: 'history',
      channel: 'pages',
      id: 'g',
      cursor: 'bm90IGEgY3Vyc29y',
    });
    assert.equal(garbage['code'], ErrorCode.BAD_REQUEST);
  });

  it('pages history over REST: GET /v1/channels/{channel}/messages', async () => {
    await publish('rest-pages', 7);
    const get = async (
      query: string,
    ): Promise<{ status: number; body: Record<string, unknown> }> => {
      const res = await fetch(`${server.url}/v1/channels/rest-pages/messages?${query}`);
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const first = await get('limit=3');
    assert.equal(first.status, 200);
    assert.deepEqual(offsets(first.body['messages'] as Frame[]), [1, 2, 3]);
    const second = await get(`limit=3&cursor=${String(first.body['next'])}`);
    assert.deepEqual(offsets(second.body['messages'] as Frame[]), [4, 5, 6]);
    const third = await get(`limit=3&cursor=${String(second.body['next'])}`);
    assert.deepEqual(offsets(third.body['messages'] as Frame[]), [7]);
    assert.equal(third.body['next'], null);
    const back = await get('limit=2&direction=backward');
    assert.deepEqual(offsets(back.body['messages'] as Frame[]), [7, 6]);
    const before = await get('limit=10&direction=backward&before=3');
    assert.deepEqual(offsets(before.body['messages'] as Frame[]), [2, 1]);
    const since = await get(`since=5&epoch=${(first.body['position'] as Pos).epoch}`);
    assert.deepEqual(offsets(since.body['messages'] as Frame[]), [6, 7]);
    for (const bad of [
      'limit=0',
      'limit=abc',
      'direction=sideways',
      'cursor=%%%',
      'since=-1',
      'epoch=a%20b',
    ]) {
      const r = await get(bad);
      assert.equal(r.status, 400, bad);
      assert.equal(typeof r.body['error'], 'string');
    }
    const stale = await get('since=1&epoch=gone');
    assert.equal(stale.status, 409);
    assert.equal(stale.body['code'], ErrorCode.UNRECOVERABLE_POSITION);
  });

  it('rejects malformed positions with BAD_REQUEST', async () => {
    const c = await open();
    for (const [i, since] of [
      [1, { offset: -1, epoch: 'e' }],
      [2, { offset: 1 }],
      [3, 'x'],
      [4, { offset: 1.5, epoch: 'e' }],
    ] as const) {
      const r = await c.request({ action: 'subscribe', channel: 'bad-pos', id: i, since });
      assert.equal(r['code'], ErrorCode.BAD_REQUEST);
    }
    const both = await c.request({
      action: 'subscribe',
      channel: 'bad-pos',
      id: 5,
      rewind: 2,
      since: { offset: 1, epoch: 'e' },
    });
    assert.equal(both['code'], ErrorCode.BAD_REQUEST);
  });
});
