/**
 * The SDK with auth on: first-frame tokens, in-band refresh under traffic, expiry and
 * revocation. Real server, real sockets.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { WebSocket } from 'ws';
import { eventually, SOAK, soakOr, startTestServer } from '../../server/test/helpers.js';
import { Switchboard, type Message, type StateChange } from '../src/index.js';

const SECRET = 'sdk-auth-test-secret-of-32-bytes!!';
const KEY = new TextEncoder().encode(SECRET);
const API_KEY = {
  name: 'backend',
  secret: 'backend-secret-0123456789',
  capabilities: { '*': ['publish', 'history'] },
  admin: true,
};
const BASIC = 'Basic ' + Buffer.from(`${API_KEY.name}:${API_KEY.secret}`).toString('base64');

let jtiSeq = 0;
async function mint(
  sub: string,
  ttlSeconds: number,
  cap: Record<string, string[]> = { 'room:*': ['subscribe', 'publish'] },
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ cap })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + ttlSeconds)
    .setJti(`jti-${++jtiSeq}`)
    .sign(KEY);
}

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

async function server(
  overrides: Record<string, unknown> = {},
): Promise<Awaited<ReturnType<typeof startTestServer>>> {
  const s = await startTestServer({
    jwtSecret: SECRET,
    apiKeys: [API_KEY],
    jwtLeewayMs: 0,
    ...overrides,
  });
  cleanup.push(() => s.close());
  return s;
}

function client(url: string, authCallback: () => Promise<string>): Switchboard {
  const c = new Switchboard({ url, WebSocket, authCallback, backoff: { baseMs: 20, capMs: 200 } });
  cleanup.push(() => c.close());
  return c;
}

async function publishRest(base: string, channel: string, data: unknown): Promise<void> {
  const res = await fetch(`${base}/v1/channels/${channel}/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: BASIC },
    body: JSON.stringify({ data }),
  });
  assert.equal(res.status, 200, await res.text());
}

describe('SDK auth', () => {
  it('sends the token in the first frame and gets the capabilities it grants', async () => {
    const s = await server();
    const c = client(s.wsUrl, () => mint('alice', 60));
    const got: Message[] = [];
    await c.channels.get('room:1').subscribe((m) => got.push(m));
    await assert.rejects(
      c.channels.get('private').subscribe(() => {}),
      (err: { code?: number }) => err.code === 103,
    );
    const ack = await c.channels.get('room:1').publish('hello', 'world');
    assert.equal(typeof ack.offset, 'number');
    await eventually(() => got.length === 1);
  });

  it('refreshes short-lived tokens in band under traffic: 0 lost, 0 disconnects', async () => {
    // 4-second tokens for 8 s (the soak run: 10-second tokens for 60 s); the server asks for a
    // refresh at half a token's remaining life, so each client refreshes a few times either way.
    const seconds = soakOr('REFRESH_SECONDS', 60, 8);
    const tokenSeconds = SOAK ? 10 : 4;
    const s = await server();
    const clients = 50;
    let fetched = 0;
    const received = Array.from({ length: clients }, () => [] as number[]);
    const states: StateChange[] = [];
    const sbs: Switchboard[] = [];
    for (let i = 0; i < clients; i++) {
      const c = client(s.wsUrl, () => {
        fetched++;
        return mint(`user-${i}`, tokenSeconds);
      });
      c.connection.on('change', (change) => states.push(change));
      sbs.push(c);
      await c.channels.get('room:traffic').subscribe((m) => received[i]?.push(m.data as number));
    }
    let sent = 0;
    const end = Date.now() + seconds * 1000;
    while (Date.now() < end) {
      await publishRest(s.url, 'room:traffic', sent++);
      await new Promise((r) => setTimeout(r, 50)); // the traffic's pace: ~20 msg/s
    }
    await eventually(
      () => received.every((r) => r.length === sent),
      10_000,
      'every client received every message',
    );
    for (const r of received)
      assert.deepEqual(
        r,
        Array.from({ length: sent }, (_, i) => i),
      );
    const drops = states.filter((c) => c.previous === 'connected');
    assert.equal(
      drops.length,
      0,
      `no client was disconnected: ${JSON.stringify(drops.slice(0, 3))}`,
    );
    // each client fetched a first token and at least one refresh per token lifetime
    assert.ok(
      fetched >= clients * (1 + Math.floor(seconds / tokenSeconds)),
      `tokens fetched: ${fetched}`,
    );
  });

  it('reconnects with a new token when one expires unrefreshed (3005), resuming without loss', async () => {
    // The callback can only offer the same 3-second token until it expires (below), so the
    // in-band refresh cannot extend it and the server closes the connection with 3005 at expiry.
    const s = await server({ tokenRefreshLeadMs: 100 });
    const first = await mint('bob', 3);
    const firstExpiry =
      (
        JSON.parse(Buffer.from(first.split('.')[1] ?? '', 'base64url').toString()) as {
          exp: number;
        }
      ).exp * 1000;
    // Until it expires, the callback can only offer the same token, so the refresh cannot extend it.
    const c = client(s.wsUrl, () =>
      Date.now() < firstExpiry ? Promise.resolve(first) : mint('bob', 60),
    );
    const got: number[] = [];
    const closes: StateChange[] = [];
    c.connection.on('change', (ch) => closes.push(ch));
    const seen = (): string =>
      JSON.stringify(closes.map((ch) => [ch.previous, ch.current, ch.reason?.code]));
    await c.channels.get('room:expiry').subscribe((m) => got.push(m.data as number));
    let n = 0;
    await eventually(
      async () => {
        await publishRest(s.url, 'room:expiry', n++);
        return closes.some((ch) => ch.reason?.code === 3005) && c.connection.state === 'connected';
      },
      25_000,
      () => `expiry and reconnect; state ${c.connection.state}, changes ${seen()}`,
      100,
    );
    await publishRest(s.url, 'room:expiry', n++);
    await eventually(
      () => got.length === n,
      5000,
      () => `every message after the reconnect: got ${got.length} of ${n}; changes ${seen()}`,
    );
    assert.deepEqual(
      got,
      Array.from({ length: n }, (_, i) => i),
    );
  });

  it('fails with 3500 when the token is revoked and the new one is refused too', async () => {
    const s = await server();
    const c = client(s.wsUrl, () => mint('mallory', 60));
    await c.channels.get('room:x').subscribe(() => {});
    const res = await fetch(`${s.url}/v1/admin/revocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: BASIC },
      body: JSON.stringify({ sub: 'mallory', before: Date.now() + 60_000 }),
    });
    assert.equal(res.status, 200);
    await eventually(() => c.connection.state === 'failed', 10_000, 'failed state');
  });
});
