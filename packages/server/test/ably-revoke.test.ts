/**
 * Ably dialect, revocation (#14 point 7): revoking a token (jti) or a user (sub, before) through
 * the admin API reaches the SDK's live connection on another node sharing Redis. A revoked token
 * is a token error (40141): the SDK renews once and carries on with a fresh token; when the
 * revocation covers every token the app can get, the SDK fails with 40101 and stops, never loops.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as Ably from 'ably';
import { startRedis, startTestServer, type RedisProcess } from './helpers.js';
import { API_KEYS, Inbox, KEY_ALL, reach, realtime, rest } from './ably-kit.js';

const ADMIN = { name: 'ops', secret: 'ops-secret-0123456789abcdef', admin: true, capabilities: {} };

type Server = Awaited<ReturnType<typeof startTestServer>>;

async function revoke(port: number, body: unknown): Promise<void> {
  const r = await fetch(`http://127.0.0.1:${port}/v1/admin/revocations`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`${ADMIN.name}:${ADMIN.secret}`).toString('base64')}`,
      'content-type': 'application/json',
    },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 200, await r.text());
}

function jtiOf(token: string): string {
  const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as {
    jti?: string;
  };
  assert.ok(typeof payload.jti === 'string', 'issued tokens carry a jti');
  return payload.jti;
}

/** A realtime client whose authCallback signs TokenRequests (for `clientId`); counts the calls. */
function tokenClient(
  port: number,
  clientId: string,
): { client: Ably.Realtime; calls: () => number; token: () => string } {
  const issuer = rest(port, 'json');
  let calls = 0;
  let last = '';
  const client = realtime(port, 'json', {
    key: undefined,
    clientId,
    disconnectedRetryTimeout: 500,
    authCallback: (_params, cb) => {
      calls++;
      issuer.auth.requestToken({ clientId }, { key: KEY_ALL }).then(
        (td) => {
          last = td.token;
          cb(null, td);
        },
        (err: Ably.ErrorInfo) => cb(err, null),
      );
    },
  });
  return { client, calls: () => calls, token: () => last };
}

describe('ably dialect: revocation', () => {
  let redis: RedisProcess;
  let a: Server;
  let b: Server;
  const clients: Ably.Realtime[] = [];
  before(async () => {
    redis = await startRedis();
    const apiKeys = [...API_KEYS, ADMIN];
    a = await startTestServer({ apiKeys, redis: redis.url });
    b = await startTestServer({ apiKeys, redis: redis.url });
  });
  after(async () => {
    for (const c of clients) c.close();
    await Promise.all([a.close(), b.close()]);
    await redis.stop();
  });

  test('a revoked token (jti, revoked on another node): 40141, one renewal, resumed, nothing lost', async () => {
    const { client, calls, token } = tokenClient(a.port, 'alice');
    clients.push(client);
    const pub = realtime(b.port, 'msgpack');
    clients.push(pub);
    const inbox = new Inbox();
    const ch = client.channels.get('revoke:jti');
    await ch.subscribe(inbox.listener);
    const id = client.connection.id;
    const jti = jtiOf(token());
    const pch = pub.channels.get('revoke:jti');
    await pch.publish('m', '0');
    await inbox.count(1);
    const dropped = new Promise<Ably.ConnectionStateChange>((resolve) =>
      client.connection.once('disconnected', resolve),
    );
    const before = calls();
    await revoke(b.port, { jti });
    const change = await dropped;
    assert.equal(change.reason?.code, 40141, JSON.stringify(change.reason));
    await pch.publish('m', '1');
    await reach(client.connection, 'connected');
    await pch.publish('m', '2');
    const ms = await inbox.count(3);
    assert.deepEqual(
      ms.map((m): unknown => m.data),
      ['0', '1', '2'],
    );
    assert.equal(client.connection.id, id, 'resumed the same connection');
    assert.equal(calls(), before + 1, 'exactly one renewal');
    assert.notEqual(jtiOf(token()), jti);
  });

  test('a revoked user whose new tokens are covered too: the SDK fails with 40101 and stops', async () => {
    const { client, calls } = tokenClient(a.port, 'mallory');
    clients.push(client);
    await reach(client.connection, 'connected');
    // Every token issued within the next hour is revoked: renewal cannot help.
    await revoke(b.port, { sub: 'mallory', before: Date.now() + 3_600_000 });
    const failed = await reach(client.connection, 'failed').catch((err: { change?: unknown }) => {
      if (err.change === undefined) throw err;
      return err.change as Ably.ConnectionStateChange;
    });
    assert.equal(client.connection.errorReason?.code, 40101, JSON.stringify(failed));
    const n = calls();
    assert.ok(n <= 3, `authCallback calls: ${n}`);
    // No retry loop: nothing more happens (the SDK would renew within disconnectedRetryTimeout).
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(calls(), n);
    assert.equal(client.connection.state, 'failed');
  });

  test('a revoked token is refused over REST with 40101', async () => {
    const issuer = rest(a.port, 'json');
    const td = await issuer.auth.requestToken({ clientId: 'carol' }, { key: KEY_ALL });
    const client = rest(a.port, 'json', { key: undefined, token: td.token });
    await client.channels.get('revoke:rest').publish('m', 'ok');
    await revoke(a.port, { sub: 'carol', before: Date.now() + 60_000 });
    await assert.rejects(
      client.channels.get('revoke:rest').publish('m', 'refused'),
      (err: Ably.ErrorInfo) => err.code === 40101,
    );
  });
});
