/**
 * Ably dialect, resume (#14 point 5): the SDK's transport is cut under it (a TCP proxy between
 * the SDK and the node drops every connection) while messages flow; it resumes with the same
 * connectionId, on the same node or on another one sharing Redis, and gets every message once,
 * in order. Long variant behind SWITCHBOARD_SOAK (60 s, a cut every ~3 s, 100 msg/s).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as Ably from 'ably';
import {
  eventually,
  freePort,
  soakOr,
  startRedis,
  startTestServer,
  type RedisProcess,
} from './helpers.js';
import { API_KEYS, CuttingProxy, Inbox, reach, realtime } from './ably-kit.js';

/** Waits for the connection to drop (a cut seen by the SDK) or times out quietly. */
function dropped(conn: Ably.Connection): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, 3000);
    conn.once('disconnected', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

describe('ably dialect: resume', () => {
  let redis: RedisProcess;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis.stop();
  });

  test('transport cuts while 100 msg/s flow: resumed, 0 lost, 0 duplicated, 0 reordered', async () => {
    const durationMs = soakOr('SWITCHBOARD_ABLY_RESUME_MS', 60_000, 6_000);
    const cutEveryMs = soakOr('SWITCHBOARD_ABLY_CUT_MS', 3_000, 1_000);
    const server = await startTestServer({ apiKeys: API_KEYS, redis: redis.url });
    const proxy = new CuttingProxy(server.port);
    const proxyPort = await proxy.listen();
    const sub = realtime(proxyPort, 'msgpack', { disconnectedRetryTimeout: 500 });
    const pub = realtime(server.port, 'json');
    try {
      const channel = sub.channels.get('resume:flow');
      const inbox = new Inbox();
      await channel.subscribe(inbox.listener);
      const firstId = sub.connection.id;
      const resumed: boolean[] = [];
      channel.on('attached', (change) => resumed.push(change.resumed));
      let n = 0;
      let publishing = true;
      const publisher = (async () => {
        const pch = pub.channels.get('resume:flow');
        while (publishing) {
          await pch.publish('m', String(n++));
          await new Promise((r) => setTimeout(r, 10));
        }
      })();
      const deadline = Date.now() + durationMs;
      while (Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, cutEveryMs * (0.7 + Math.random() * 0.6)));
        proxy.cut();
        await dropped(sub.connection);
        await reach(sub.connection, 'connected');
      }
      publishing = false;
      await publisher;
      const ms = await inbox.count(n, 20_000);
      const got = ms.map((m) => Number(m.data));
      assert.deepEqual(got, [...Array(n).keys()], 'every message once, in order');
      assert.equal(sub.connection.id, firstId, 'the connectionId survived every cut');
      assert.ok(proxy.cuts >= 3, `cuts: ${proxy.cuts}`);
      assert.ok(
        resumed.length > 0 && resumed.every(Boolean),
        `attached changes: ${JSON.stringify(resumed)}`,
      );
    } finally {
      sub.close();
      pub.close();
      await proxy.close();
      await server.close();
    }
  });

  test('a publish resent after a cut is stored once', async () => {
    const server = await startTestServer({ apiKeys: API_KEYS, redis: redis.url });
    const proxy = new CuttingProxy(server.port);
    const proxyPort = await proxy.listen();
    const pub = realtime(proxyPort, 'json', { disconnectedRetryTimeout: 500 });
    const watcher = realtime(server.port, 'msgpack');
    try {
      const inbox = new Inbox();
      await watcher.channels.get('resend').subscribe(inbox.listener);
      await reach(pub.connection, 'connected');
      // Cut as soon as the MESSAGE has left: the node stores it, the ACK is lost, the SDK
      // resends the same msgSerial on the resumed transport.
      const published = pub.channels.get('resend').publish('m', 'once');
      setImmediate(() => proxy.cut());
      await published;
      await pub.channels.get('resend').publish('m', 'fence');
      const ms = await inbox.count(2);
      assert.deepEqual(
        ms.map((m): unknown => m.data),
        ['once', 'fence'],
      );
    } finally {
      pub.close();
      watcher.close();
      await proxy.close();
      await server.close();
    }
  });

  test('the node goes away: the SDK resumes on another node sharing Redis', async () => {
    const a = await startTestServer({ apiKeys: API_KEYS, redis: redis.url });
    const b = await startTestServer({ apiKeys: API_KEYS, redis: redis.url });
    const proxy = new CuttingProxy(a.port);
    const proxyPort = await proxy.listen();
    const sub = realtime(proxyPort, 'msgpack', { disconnectedRetryTimeout: 500 });
    const pub = realtime(b.port, 'json');
    try {
      const ch = sub.channels.get('move');
      const inbox = new Inbox();
      await ch.subscribe(inbox.listener);
      const id = sub.connection.id;
      await pub.channels.get('move').publish('m', 'before');
      await inbox.count(1);
      proxy.target = b.port;
      await a.close();
      await pub.channels.get('move').publish('m', 'while away');
      await reach(sub.connection, 'connected');
      await pub.channels.get('move').publish('m', 'after');
      const ms = await inbox.count(3);
      assert.deepEqual(
        ms.map((m): unknown => m.data),
        ['before', 'while away', 'after'],
      );
      assert.equal(sub.connection.id, id);
    } finally {
      sub.close();
      pub.close();
      await proxy.close();
      await b.close();
    }
  });

  test('connection state is kept in Redis for connectionStateTtl: once gone, a resume is a new connection (80008) and channels still continue', async () => {
    const server = await startTestServer({ apiKeys: API_KEYS, redis: redis.url });
    const proxy = new CuttingProxy(server.port);
    const proxyPort = await proxy.listen();
    const sub = realtime(proxyPort, 'json', { disconnectedRetryTimeout: 300, clientId: 'ann' });
    const pub = realtime(server.port, 'msgpack');
    try {
      const inbox = new Inbox();
      await sub.channels.get('expiry').subscribe(inbox.listener);
      const id = sub.connection.id ?? '';
      const key = `switchboard:ably:conn:{${id}}`;
      assert.equal(redis.cli('HGET', key, 'clientId').trim(), 'ann');
      const pttl = Number(redis.cli('PTTL', key));
      assert.ok(pttl > 120_000 && pttl <= 150_000, `PTTL ${pttl}`);
      await pub.channels.get('expiry').publish('m', 'before');
      await inbox.count(1);
      // Away long enough for the state to expire: the proxy leads nowhere, the record goes.
      const live = proxy.target;
      proxy.target = await freePort();
      proxy.cut();
      await dropped(sub.connection);
      // The node saw the drop: the record now expires connectionStateTtl from it.
      await eventually(
        () => Number(redis.cli('PTTL', key)) <= 120_000,
        5000,
        'the drop to be written',
      );
      redis.cli('DEL', key);
      await pub.channels.get('expiry').publish('m', 'away');
      const connected = new Promise<Ably.ConnectionStateChange>((resolve) =>
        sub.connection.once('connected', resolve),
      );
      proxy.target = live;
      const change = await connected;
      assert.equal(change.reason?.code, 80008, JSON.stringify(change.reason));
      assert.notEqual(sub.connection.id, id, 'a new connection');
      await pub.channels.get('expiry').publish('m', 'after');
      const ms = await inbox.count(3);
      assert.deepEqual(
        ms.map((m): unknown => m.data),
        ['before', 'away', 'after'],
      );
      // CLOSE ends the connection for good: its state is deleted.
      const newKey = `switchboard:ably:conn:{${sub.connection.id ?? ''}}`;
      assert.equal(redis.cli('EXISTS', newKey).trim(), '1');
      sub.close();
      await eventually(() => redis.cli('EXISTS', newKey).trim() === '0', 5000, 'CLOSE to delete');
    } finally {
      sub.close();
      pub.close();
      await proxy.close();
      await server.close();
    }
  });

  test('the embedded engine keeps connection state in memory: a cut resumes the same connection', async () => {
    const server = await startTestServer({ apiKeys: API_KEYS });
    const proxy = new CuttingProxy(server.port);
    const proxyPort = await proxy.listen();
    const sub = realtime(proxyPort, 'msgpack', { disconnectedRetryTimeout: 300 });
    const pub = realtime(server.port, 'json');
    try {
      const inbox = new Inbox();
      await sub.channels.get('memory').subscribe(inbox.listener);
      const id = sub.connection.id;
      await pub.channels.get('memory').publish('m', 'before');
      await inbox.count(1);
      proxy.cut();
      await dropped(sub.connection);
      await pub.channels.get('memory').publish('m', 'away');
      await reach(sub.connection, 'connected');
      const ms = await inbox.count(2);
      assert.deepEqual(
        ms.map((m): unknown => m.data),
        ['before', 'away'],
      );
      assert.equal(sub.connection.id, id);
    } finally {
      sub.close();
      pub.close();
      await proxy.close();
      await server.close();
    }
  });
});
