/**
 * Ably dialect, connection and channels (#14 points 1-4): the official SDK, unchanged but for its
 * options, against a real server on the engine under test, in JSON and msgpack.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { WebSocket } from 'ws';
import { after, before, describe, test } from 'node:test';
import * as Ably from 'ably';
import { startTestServer, TestClient } from './helpers.js';
import { API_KEYS, FORMATS, Inbox, KEY_SUB, ping, RawAbly, reach, realtime } from './ably-kit.js';

describe('ably dialect: connection and channels', () => {
  let server: Awaited<ReturnType<typeof startTestServer>>;
  const clients: Ably.Realtime[] = [];
  const open = (...args: Parameters<typeof realtime>): Ably.Realtime => {
    const c = realtime(...args);
    clients.push(c);
    return c;
  };

  before(async () => {
    server = await startTestServer({ apiKeys: API_KEYS });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server.close();
  });

  for (const format of FORMATS) {
    test(`the seed snippet runs unchanged (${format})`, async () => {
      const client = open(server.port, format);
      const channel = client.channels.get('iss.data');
      const inbox = new Inbox();
      await channel.subscribe(inbox.listener);
      const published = await channel.publish('position', { lat: 51.5, lon: -0.1 });
      const [m] = await inbox.count(1);
      assert.deepEqual(m?.data, { lat: 51.5, lon: -0.1 });
      assert.equal(m?.name, 'position');
      assert.equal(m?.connectionId, client.connection.id);
      assert.equal(m?.id, `${client.connection.id}:0:0`);
      assert.ok(typeof m?.timestamp === 'number');
      assert.deepEqual((published as { serials: string[] }).serials, [m?.serial]);
      assert.match(client.connection.id ?? '', /^[a-zA-Z0-9_-]+$/);
      assert.match(client.connection.key ?? '', /^[a-zA-Z0-9_!-]+$/);
      assert.equal(channel.state, 'attached');
      assert.ok(channel.modes?.includes('subscribe') && channel.modes.includes('publish'));
      assert.ok((await ping(client.connection)) >= 0);
      client.close();
      await reach(client.connection, 'closed');
    });

    test(`data types and extras both ways between a json and a msgpack client (${format} publisher)`, async () => {
      const pub = open(server.port, format);
      const subs = FORMATS.map((f) => open(server.port, f));
      const name = `types-${format}`;
      const inboxes = subs.map(() => new Inbox());
      await Promise.all(
        subs.map((s, i) => s.channels.get(name).subscribe((inboxes[i] as Inbox).listener)),
      );
      const ch = pub.channels.get(name);
      await ch.publish('s', 'text ü');
      await ch.publish('o', { a: [1, 2], b: null });
      await ch.publish('b', Buffer.from([0, 1, 2, 255]));
      await ch.publish({ name: 'x', data: 'with extras', extras: { headers: { h: 'v' } } });
      for (const inbox of inboxes) {
        const ms = await inbox.count(4);
        assert.equal(ms[0]?.data, 'text ü');
        assert.deepEqual(ms[1]?.data, { a: [1, 2], b: null });
        assert.ok(
          Buffer.isBuffer(ms[2]?.data),
          `binary arrives as a Buffer: ${JSON.stringify(ms[2]?.data)}`,
        );
        assert.deepEqual([...ms[2]?.data], [0, 1, 2, 255]);
        assert.deepEqual(ms[3]?.extras, { headers: { h: 'v' } });
      }
    });
  }

  test('a burst arrives whole and in order on every framing, echo off included', async () => {
    const pub = open(server.port, 'msgpack', { echoMessages: false });
    const subs = [open(server.port, 'json'), open(server.port, 'msgpack')];
    const inboxes = subs.map(() => new Inbox());
    await Promise.all(
      subs.map((c, i) => c.channels.get('burst').subscribe((inboxes[i] as Inbox).listener)),
    );
    const mine = new Inbox();
    await pub.channels.get('burst').subscribe(mine.listener);
    const ch = pub.channels.get('burst');
    await Promise.all(Array.from({ length: 200 }, (_, i) => ch.publish('b', String(i))));
    for (const inbox of inboxes) {
      const ms = await inbox.count(200);
      assert.deepEqual(
        ms.map((m) => Number(m.data)),
        [...Array(200).keys()],
      );
      assert.equal(new Set(ms.map((m) => m.id)).size, 200);
    }
    await subs[0]?.channels.get('burst').publish('b', 'fence');
    await mine.count(1);
    assert.deepEqual(
      mine.messages.map((m): unknown => m.data),
      ['fence'],
    );
  });

  test('the connectivity checks the SDK can be pointed at are served', async () => {
    const res = await fetch(`http://127.0.0.1:${server.port}/is-the-internet-up.txt`);
    assert.equal(res.status, 200);
    assert.equal((await res.text()).trim(), 'yes');
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws-up`);
    await once(ws, 'open');
    ws.close();
    const client = open(server.port, 'json', {
      connectivityCheckUrl: `http://127.0.0.1:${server.port}/is-the-internet-up.txt`,
      wsConnectivityCheckUrl: `ws://127.0.0.1:${server.port}/ws-up`,
    });
    await reach(client.connection, 'connected');
  });

  test('a bad key fails the connection with 40101 (never an HTTP refusal)', async () => {
    const client = open(server.port, 'json', { key: 'app.all:wrong-secret-000000' });
    await assert.rejects(
      reach(client.connection, 'connected'),
      (err: { change?: Ably.ConnectionStateChange }) => {
        assert.equal(err.change?.reason?.code, 40101);
        return true;
      },
    );
  });

  test('capability denial: publish is NACKed 40160, nothing is delivered', async () => {
    const reader = open(server.port, 'msgpack', { key: KEY_SUB });
    const watcher = open(server.port, 'json');
    const inbox = new Inbox();
    await watcher.channels.get('guarded').subscribe(inbox.listener);
    const ch = reader.channels.get('guarded');
    await ch.attach();
    assert.ok(!ch.modes?.includes('publish'));
    await assert.rejects(ch.publish('m', 'nope'), (err: Ably.ErrorInfo) => err.code === 40160);
    await watcher.channels.get('guarded').publish('fence', 'last');
    const ms = await inbox.count(1);
    assert.deepEqual(
      ms.map((m): unknown => m.data),
      ['last'],
    );
  });

  test('echoMessages:false: a client does not get its own messages, others do', async () => {
    const quiet = open(server.port, 'json', { echoMessages: false });
    const other = open(server.port, 'msgpack');
    const mine = new Inbox();
    const theirs = new Inbox();
    await quiet.channels.get('echo').subscribe(mine.listener);
    await other.channels.get('echo').subscribe(theirs.listener);
    await quiet.channels.get('echo').publish('a', 'from quiet');
    await other.channels.get('echo').publish('b', 'from other');
    await theirs.count(2);
    const got = await mine.count(1);
    assert.deepEqual(
      got.map((m): unknown => m.data),
      ['from other'],
    );
  });

  test('detach stops delivery; rewind replays the last n after ATTACHED', async () => {
    const pub = open(server.port, 'json');
    const ch = pub.channels.get('rw');
    for (const d of ['r1', 'r2', 'r3']) await ch.publish('m', d);
    const sub = open(server.port, 'msgpack');
    const inbox = new Inbox();
    const rch = sub.channels.get('rw', { params: { rewind: '2' } });
    await rch.subscribe(inbox.listener);
    assert.deepEqual(
      (await inbox.count(2)).map((m): unknown => m.data),
      ['r2', 'r3'],
    );
    await rch.detach();
    assert.equal(rch.state, 'detached');
    await ch.publish('m', 'r4');
    const probe = new Inbox();
    await pub.channels.get('rw').subscribe(probe.listener);
    await ch.publish('m', 'r5');
    await probe.count(1);
    assert.deepEqual(
      inbox.messages.map((m): unknown => m.data),
      ['r2', 'r3'],
    );
  });

  test('native subscribers and Ably subscribers see the same sequence', async () => {
    // The native protocol without auth: tokens are the native suites' business.
    const openServer = await startTestServer();
    try {
      const native = await TestClient.open(openServer.wsUrl);
      await native.subscribe('mixed');
      const ablySub = open(openServer.port, 'msgpack');
      const inbox = new Inbox();
      await ablySub.channels.get('mixed').subscribe(inbox.listener);
      const pub = open(openServer.port, 'json');
      for (let i = 0; i < 5; i++) await pub.channels.get('mixed').publish('n', { i });
      await native.request({ action: 'publish', channel: 'mixed', message: { i: 5 }, id: 'p' });
      const ms = await inbox.count(6);
      assert.deepEqual(
        ms.map((m) => (m.data as { i: number }).i),
        [0, 1, 2, 3, 4, 5],
      );
      await native.until((fs) => fs.filter((f) => f['message'] !== undefined).length === 6);
      const nat = native.messages('mixed');
      assert.deepEqual(
        nat.map((f) => (f['message'] as { i: number }).i),
        [0, 1, 2, 3, 4, 5],
      );
      assert.deepEqual(
        nat.map((f) => `${String(f['epoch'])}:${String(f['offset'])}`),
        ms.map((m) => m.serial),
      );
      native.ws.close();
      ablySub.close();
      pub.close();
    } finally {
      await openServer.close();
    }
  });

  test('bad input gets Ably ERROR frames and the node keeps serving', async () => {
    const key = `key=${encodeURIComponent('app.all:secret-all-0123456789')}`;
    const garbage = new RawAbly(server.port, key, 'msgpack');
    await garbage.frame((f) => f['action'] === 4);
    garbage.sendRaw(Buffer.from([0xc1, 0xff, 0x00]));
    const err = await garbage.frame((f) => f['action'] === 9);
    assert.equal((err['error'] as { code: number }).code, 40000);
    await garbage.closedNow();

    const odd = new RawAbly(server.port, key);
    await odd.frame((f) => f['action'] === 4);
    odd.send({ action: 99, channel: 'x' });
    const e1 = await odd.frame((f) => f['action'] === 9 && f['channel'] === 'x');
    assert.equal((e1['error'] as { code: number }).code, 40000);
    odd.send({ action: 10, channel: 'bad name with spaces' });
    const e2 = await odd.frame((f) => f['action'] === 9 && f['channel'] === 'bad name with spaces');
    assert.equal((e2['error'] as { code: number }).code, 40010);
    odd.send({ action: 15, channel: 'x', msgSerial: 0, messages: [{ data: 'x'.repeat(64_000) }] });
    const nack = await odd.frame((f) => f['action'] === 2);
    assert.equal((nack['error'] as { code: number }).code, 40009);
    odd.send({ action: 15, channel: 'x', msgSerial: 1, messages: [{ data: 5 }] });
    const nack2 = await odd.frame((f) => f['action'] === 2 && f['msgSerial'] === 1);
    assert.equal((nack2['error'] as { code: number }).code, 40013);
    odd.send({ action: 'ten' });
    await odd.frame((f) => f['action'] === 9 && f['channel'] === undefined);
    await odd.closedNow();

    const client = open(server.port, 'json');
    await reach(client.connection, 'connected');
  });
});
