import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, startTestServer, TestClient } from './helpers.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;

describe('WebSocket protocol v1 (embedded engine)', () => {
  let server: Server;
  const clients: TestClient[] = [];
  const open = async (protocols: string[] = []): Promise<TestClient> => {
    const c = await TestClient.open(server.wsUrl, protocols);
    clients.push(c);
    return c;
  };

  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    for (const c of clients) c.close();
    await server.close();
  });

  it('delivers a published message to a subscriber with channel, message, id, timestamp and position', async () => {
    const sub = await open();
    const pub = await open();
    const reply = await sub.subscribe('news');
    assert.equal(reply['ok'], true);
    assert.deepEqual(
      (reply['position'] as { offset: number }).offset,
      0,
      'a new channel starts at offset 0',
    );
    const ack = await pub.request({
      action: 'publish',
      channel: 'news',
      data: { headline: 'hi' },
      name: 'story',
      id: 1,
    });
    assert.equal(ack['ok'], true);
    assert.equal(typeof ack['messageId'], 'string');
    assert.equal(ack['offset'], 1);
    await sub.until((fs) => sub.messages('news').length === 1 && fs.length > 0);
    const m = sub.messages('news')[0];
    assert.deepEqual(m?.['message'], { headline: 'hi' });
    assert.equal(m?.['name'], 'story');
    assert.equal(m?.['id'], ack['messageId']);
    assert.equal(typeof m?.['timestamp'], 'number');
    assert.equal(m?.['offset'], 1);
    assert.equal(m?.['epoch'], ack['epoch']);
  });

  it("keeps one publisher's messages in order for every subscriber", async () => {
    const subs = await Promise.all(Array.from({ length: 20 }, () => open()));
    await Promise.all(subs.map((s) => s.subscribe('ordered')));
    const pub = await open();
    for (let i = 0; i < 500; i++) pub.send({ action: 'publish', channel: 'ordered', data: i });
    for (const s of subs) {
      await s.until(() => s.messages('ordered').length === 500, 10_000, '500 messages');
      assert.deepEqual(
        s.messages('ordered').map((m) => m['message']),
        Array.from({ length: 500 }, (_, i) => i),
      );
    }
  });

  it('batches frames with "\\n" only for clients that negotiated switchboard.v1', async () => {
    const batched = await open(['switchboard.v1']);
    const plain = await open();
    assert.equal(batched.ws.protocol, 'switchboard.v1');
    assert.equal(plain.ws.protocol, '');
    await batched.subscribe('burst');
    await plain.subscribe('burst');
    const raw: string[] = [];
    plain.ws.on('message', (d: Buffer) => raw.push(d.toString()));
    const pub = await open();
    await pub.request({ action: 'publish', channel: 'burst', data: [0], id: 'x' });
    for (let i = 1; i < 200; i++) pub.send({ action: 'publish', channel: 'burst', data: i });
    await batched.until(() => batched.messages('burst').length === 200, 10_000);
    await plain.until(() => plain.messages('burst').length === 200, 10_000);
    assert.ok(
      raw.every((r) => !r.includes('\n')),
      'a plain client gets exactly one JSON object per WebSocket message',
    );
    assert.deepEqual(
      batched.messages('burst').map((m) => m['message']),
      plain.messages('burst').map((m) => m['message']),
    );
  });

  it('fans out to many channels and many subscribers, each getting only its channels', async () => {
    const subs = await Promise.all(Array.from({ length: 30 }, () => open()));
    await Promise.all(subs.map((s, i) => s.subscribe(`room:${i % 10}`)));
    const pub = await open();
    for (let r = 0; r < 10; r++)
      await pub.request({ action: 'publish', channel: `room:${r}`, data: r, id: `p${r}` });
    for (const [i, s] of subs.entries()) {
      await s.until(() => s.messages().length === 1);
      assert.equal(s.messages()[0]?.['channel'], `room:${i % 10}`);
    }
  });

  it('stops delivering after unsubscribe', async () => {
    const sub = await open();
    const pub = await open();
    await sub.subscribe('leaving');
    await pub.request({ action: 'publish', channel: 'leaving', data: 1, id: 'a' });
    await sub.until(() => sub.messages('leaving').length === 1);
    assert.deepEqual(await sub.request({ action: 'unsubscribe', channel: 'leaving', id: 'u' }), {
      reply: 'u',
      ok: true,
    });
    await sub.subscribe('marker');
    await pub.request({ action: 'publish', channel: 'leaving', data: 2, id: 'b' });
    await pub.request({ action: 'publish', channel: 'marker', data: 3, id: 'c' });
    await sub.until(() => sub.messages('marker').length === 1);
    assert.equal(sub.messages('leaving').length, 1);
  });

  it('answers a ping', async () => {
    const c = await open();
    assert.deepEqual(await c.request({ action: 'ping', id: 9 }), {
      reply: 9,
      ok: true,
      pong: true,
    });
  });

  it('speaks the classic tutorial protocol: no ids, no replies, {channel, message} frames', async () => {
    const c = await open();
    c.send({ action: 'subscribe', channel: 'iss.telemetry' });
    const pub = await open();
    // the subscription is in place once an id-carrying command sent after it is answered
    await c.request({ action: 'ping', id: 'sync' });
    await pub.request({
      action: 'publish',
      channel: 'iss.telemetry',
      data: { lat: 51.5, lon: -0.1 },
      id: 'p',
    });
    await c.until(() => c.messages('iss.telemetry').length === 1);
    const frames = c.frames.filter((f) => f['reply'] === undefined);
    assert.equal(frames.length, 1, 'the subscribe without id produced no reply');
    assert.equal(frames[0]?.['channel'], 'iss.telemetry');
    assert.deepEqual(frames[0]?.['message'], { lat: 51.5, lon: -0.1 });
  });

  it('accepts "message" as an alias of "data" when publishing', async () => {
    const c = await open();
    await c.subscribe('alias');
    await c.request({ action: 'publish', channel: 'alias', message: 'tutorial style', id: 'p' });
    await c.until(() => c.messages('alias').length === 1);
    assert.equal(c.messages('alias')[0]?.['message'], 'tutorial style');
  });

  it('returns the original position for a repeated messageId and delivers it once', async () => {
    const sub = await open();
    await sub.subscribe('idem');
    const pub = await open();
    const first = await pub.request({
      action: 'publish',
      channel: 'idem',
      data: 'x',
      messageId: 'order-1',
      id: 1,
    });
    const again = await pub.request({
      action: 'publish',
      channel: 'idem',
      data: 'x',
      messageId: 'order-1',
      id: 2,
    });
    assert.equal(first['duplicate'], undefined);
    assert.equal(again['duplicate'], true);
    assert.equal(again['offset'], first['offset']);
    assert.equal(again['messageId'], 'order-1');
    await pub.request({ action: 'publish', channel: 'idem', data: 'marker', id: 3 });
    await sub.until(() => sub.messages('idem').length === 2);
    assert.deepEqual(
      sub.messages('idem').map((m) => m['message']),
      ['x', 'marker'],
    );
  });

  it('cleans up subscriptions when a client disconnects', async () => {
    const c = await open();
    await c.subscribe('gone');
    const metrics = async (): Promise<string> => (await fetch(`${server.url}/metrics`)).text();
    assert.match(await metrics(), /switchboard_channels [1-9]/);
    const before = Number(/switchboard_subscriptions (\d+)/.exec(await metrics())?.[1]);
    c.close();
    await c.closed();
    await eventually(
      async () =>
        Number(/switchboard_subscriptions (\d+)/.exec(await metrics())?.[1]) === before - 1,
      5000,
      'subscription gone',
    );
  });
});
