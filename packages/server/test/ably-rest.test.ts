/**
 * Ably dialect, REST and auth (#14 points 7-9): `Ably.Rest` and realtime history through the
 * public SDK API, JSON and msgpack; tokens from TokenRequests signed per key; in-band renewal.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as Ably from 'ably';
import { soakOr, startTestServer } from './helpers.js';
import { API_KEYS, FORMATS, Inbox, KEY_ALL, KEY_SUB, reach, realtime, rest } from './ably-kit.js';

describe('ably dialect: REST and auth', () => {
  let server: Awaited<ReturnType<typeof startTestServer>>;
  const clients: Ably.Realtime[] = [];
  before(async () => {
    server = await startTestServer({ apiKeys: API_KEYS });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server.close();
  });

  for (const format of FORMATS) {
    test(`time, publish (single, batch, idempotent), history paging backwards (${format})`, async () => {
      const client = rest(server.port, format);
      const t = await client.time();
      assert.ok(Math.abs(t - Date.now()) < 5000);
      const ch = client.channels.get(`rest-chan/${format}`);
      const r = await ch.publish('one', { n: 1 });
      assert.equal(r.serials.length, 1);
      await ch.publish([
        { name: 'two', data: 'b' },
        { name: 'three', data: Buffer.from([7, 8]) },
      ]);
      await ch.publish([{ id: `fixed-${format}`, name: 'four', data: 'd' }]);
      await ch.publish([{ id: `fixed-${format}`, name: 'four', data: 'd' }]);
      const first = await ch.history({ limit: 2 });
      assert.deepEqual(
        first.items.map((m) => m.name),
        ['four', 'three'],
      );
      assert.ok(first.hasNext());
      const second = await first.next();
      assert.deepEqual(
        second?.items.map((m) => m.name),
        ['two', 'one'],
      );
      assert.deepEqual(second?.items[1]?.data, { n: 1 });
      const fw = await ch.history({ direction: 'forwards', limit: 10 });
      assert.deepEqual(
        fw.items.map((m) => m.name),
        ['one', 'two', 'three', 'four'],
      );
      assert.deepEqual([...(fw.items[2]?.data as Buffer)], [7, 8]);
      const status = await ch.status();
      assert.equal(status.channelId, `rest-chan/${format}`);
      const stats = await client.stats();
      assert.deepEqual(stats.items, []);
      // Switchboard's channel charset has no space: refused with Ably's invalid-channel code.
      await assert.rejects(
        client.channels.get('with space').publish('m', 'x'),
        (err: Ably.ErrorInfo) => err.code === 40010,
      );
    });
  }

  test('REST and realtime meet: a REST publish reaches a realtime subscriber; realtime history', async () => {
    const sub = realtime(server.port, 'msgpack');
    clients.push(sub);
    const inbox = new Inbox();
    const rch = sub.channels.get('meet');
    await rch.subscribe(inbox.listener);
    await rest(server.port, 'json').channels.get('meet').publish('r', 'from rest');
    const [m] = await inbox.count(1);
    assert.equal(m?.data, 'from rest');
    const h = await rch.history();
    assert.deepEqual(
      h.items.map((x): unknown => x.data),
      ['from rest'],
    );
  });

  test('REST errors are Ably errors: capability denial 40160, bad key 40101', async () => {
    await assert.rejects(
      rest(server.port, 'json', { key: KEY_SUB }).channels.get('x').publish('m', 'no'),
      (err: Ably.ErrorInfo) => err.code === 40160 && err.statusCode === 401,
    );
    await assert.rejects(
      rest(server.port, 'msgpack', { key: 'app.all:nope-nope-nope-nope' })
        .channels.get('x')
        .history(),
      (err: Ably.ErrorInfo) => err.code === 40101,
    );
  });

  test('token auth: authCallback with a TokenRequest, clientId from the token, capability enforced', async () => {
    const issuer = rest(server.port, 'json');
    const client = realtime(server.port, 'msgpack', {
      key: undefined,
      authCallback: (_params, cb) => {
        issuer.auth
          .createTokenRequest(
            { clientId: 'alice', capability: { 'tok:*': ['subscribe', 'publish'] } },
            { key: KEY_ALL },
          )
          .then(
            (tr) => cb(null, tr),
            (err: Ably.ErrorInfo) => cb(err, null),
          );
      },
    });
    clients.push(client);
    await reach(client.connection, 'connected');
    assert.equal(client.auth.clientId, 'alice');
    const inbox = new Inbox();
    await client.channels.get('tok:a').subscribe(inbox.listener);
    await client.channels.get('tok:a').publish('m', 'hi');
    const [m] = await inbox.count(1);
    assert.equal(m?.clientId, 'alice');
    await assert.rejects(
      client.channels.get('other').attach(),
      (err: Ably.ErrorInfo) => err.code === 40160,
    );
  });

  test('10 s tokens are renewed in band while messages flow (20 s; 60 s under SWITCHBOARD_SOAK): none lost', async () => {
    const durationMs = soakOr('SWITCHBOARD_ABLY_TOKEN_MS', 60_000, 20_000);
    const ttl = 10_000;
    const issuer = rest(server.port, 'json');
    let issued = 0;
    const client = realtime(server.port, 'json', {
      key: undefined,
      authCallback: (_params, cb) => {
        issued++;
        issuer.auth.createTokenRequest({ ttl }, { key: KEY_ALL }).then(
          (tr) => cb(null, tr),
          (err: Ably.ErrorInfo) => cb(err, null),
        );
      },
    });
    clients.push(client);
    const pub = realtime(server.port, 'msgpack');
    clients.push(pub);
    const inbox = new Inbox();
    await client.channels.get('renew').subscribe(inbox.listener);
    const pch = pub.channels.get('renew');
    let n = 0;
    const end = Date.now() + durationMs;
    while (Date.now() < end) {
      await pch.publish('m', String(n++));
      await new Promise((r) => setTimeout(r, 20));
    }
    const ms = await inbox.count(n);
    assert.deepEqual(
      ms.map((m) => Number(m.data)),
      [...Array(n).keys()],
    );
    assert.ok(issued >= 2, `tokens issued: ${issued}`);
    assert.equal(client.connection.state, 'connected');
  });

  test("the SDK's REST token-error loop is answered from memory and cut off with 42910 + Retry-After", async () => {
    const issuer = rest(server.port, 'json');
    const tokens: string[] = [];
    const client = rest(server.port, 'json', {
      key: undefined,
      authCallback: (_params, cb) => {
        issuer.auth.requestToken({ ttl: 1000 }, { key: KEY_ALL }).then(
          (td) => {
            tokens.push(td.token);
            cb(null, td);
          },
          (err: Ably.ErrorInfo) => cb(err, null),
        );
      },
    });
    await client.channels.get('loop').publish('m', 'fresh');
    await new Promise((r) => setTimeout(r, 2100)); // the token expires
    // The SDK renews, then resends the stale header without limit; the node ends it.
    await assert.rejects(
      client.channels.get('loop').publish('m', 'stale'),
      (err: Ably.ErrorInfo) => err.code === 42910 && err.statusCode === 429,
    );
    assert.ok(tokens.length <= 25, `authCallback calls: ${tokens.length}`);
    const header = `Bearer ${Buffer.from(tokens[0] ?? '').toString('base64')}`;
    let limited: Response | undefined;
    for (let i = 0; i < 30 && limited === undefined; i++) {
      const r = await fetch(`http://127.0.0.1:${server.port}/channels/loop/messages`, {
        headers: { authorization: header, accept: 'application/json' },
      });
      await r.arrayBuffer();
      if (r.status === 429) limited = r;
      else assert.equal(r.headers.get('x-ably-errorcode'), '40142');
    }
    assert.ok(limited !== undefined, 'rate-limited within 30 requests');
    assert.equal(limited.headers.get('retry-after'), '1');
    assert.equal(limited.headers.get('x-ably-errorcode'), '42910');
    // Other credentials from the same address are not held up.
    await rest(server.port, 'json').channels.get('loop').publish('m', 'other key');
  });
});
