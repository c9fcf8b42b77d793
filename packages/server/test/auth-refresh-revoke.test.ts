/**
 * In-band refresh and revocation over raw WebSocket frames (issue 5, server items 4 and 5;
 * reliability S4). The SDK side of refresh is tested with the client.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { DisconnectCode, ErrorCode } from '@switchboard/protocol';
import {
  eventually,
  requireBinary,
  startNodeProcess,
  startRedis,
  startTestServer,
  TestClient,
  type Frame,
  type NodeProcess,
  type RedisProcess,
} from './helpers.js';
import { http, json, mint, SECRET } from './security-kit.js';
import { createLogger, resolveConfig, startServer } from '../src/index.js';
import type { Credentials } from '../src/auth/auth.js';
import { MemoryRevocationStore } from '../src/auth/revocation-memory.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;

const ADMIN = { name: 'ops', secret: 'ops-secret-0123456789abcdef', admin: true };
const BACKEND = { name: 'backend', secret: 'backend-secret-0123456789ab' };
const API_KEYS = [
  { ...ADMIN, capabilities: { '*': ['publish', 'history'] } },
  { ...BACKEND, capabilities: { '*': ['publish', 'history'] } },
];
const basic = (k: { name: string; secret: string }): string =>
  `Basic ${Buffer.from(`${k.name}:${k.secret}`).toString('base64')}`;

const CAP = { 'chat:*': ['subscribe', 'publish', 'history'] };
const nowS = (): number => Math.floor(Date.now() / 1000);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A client authenticated by a connect frame, recording when its socket closed. */
class Authed extends TestClient {
  closedAt: number | undefined;
  constructor(url: string) {
    super(url);
    this.ws.on('close', () => (this.closedAt = Date.now()));
  }

  static async as(url: string, token: string): Promise<Authed> {
    const c = new Authed(url);
    await once(c.ws, 'open');
    const r = await c.request({ action: 'connect', token, id: 'connect' });
    assert.equal(r['ok'], true, JSON.stringify(r));
    return c;
  }

  async alive(): Promise<boolean> {
    if (this.closeCode !== undefined) return false;
    const id = `ping-${this.frames.length}-${Math.random()}`;
    const r = await this.request({ action: 'ping', id });
    return r['ok'] === true;
  }

  events(name: string): Frame[] {
    return this.frames.filter((f) => f['event'] === name);
  }
}

async function publish(port: number, channel: string, data: unknown): Promise<void> {
  const r = await http(
    port,
    'POST',
    `/v1/channels/${channel}/messages`,
    { Authorization: basic(BACKEND) },
    JSON.stringify({ data }),
  );
  assert.equal(r.status, 200, r.body);
}

async function revoke(
  port: number,
  body: Record<string, unknown>,
  auth = basic(ADMIN),
): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await http(
    port,
    'POST',
    '/v1/admin/revocations',
    { Authorization: auth },
    JSON.stringify(body),
  );
  return { status: r.status, body: json(r) };
}

/** Connecting with `token` fails: error 101 then close 3500, over the first frame and ?token=. */
async function refusedEverywhere(wsUrl: string, port: number, token: string): Promise<void> {
  const c = new TestClient(wsUrl);
  await once(c.ws, 'open');
  c.send({ action: 'connect', token, id: 1 });
  assert.equal(await c.closed(), DisconnectCode.UNAUTHORIZED);
  assert.equal(c.frames[0]?.['code'], ErrorCode.UNAUTHORIZED);
  assert.match(String(c.frames[0]?.['error']), /revoked/);
  const q = new TestClient(`${wsUrl}?token=${token}`);
  assert.equal(await q.closed(), DisconnectCode.UNAUTHORIZED);
  const r = await http(port, 'GET', '/v1/channels/chat:x/messages', {
    Authorization: `Bearer ${token}`,
  });
  assert.equal(r.status, 401);
}

describe('in-band refresh', () => {
  let server: Server;
  const clients: TestClient[] = [];
  const track = <T extends TestClient>(c: T): T => {
    clients.push(c);
    return c;
  };

  before(async () => {
    server = await startTestServer({
      jwtSecret: SECRET,
      apiKeys: API_KEYS,
      tokenRefreshLeadMs: 1000,
    });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server.close();
  });

  it('pushes refresh before expiry, then closes with 3005 at expiry when no refresh comes', async () => {
    const exp = nowS() + 3;
    const c = track(await Authed.as(server.wsUrl, await mint('alice', { cap: CAP, exp })));
    let pushedAt = 0;
    await c.until((fs) => {
      if (fs.some((f) => f['event'] === 'refresh')) pushedAt ||= Date.now();
      return pushedAt > 0;
    }, 5000);
    assert.deepEqual(c.events('refresh')[0], { event: 'refresh', expiresAt: exp * 1000 });
    // tokenRefreshLeadMs (1 s) before exp, and never after it.
    assert.ok(pushedAt < exp * 1000, `refresh pushed ${pushedAt - exp * 1000} ms after exp`);
    assert.ok(pushedAt >= exp * 1000 - 1100, `refresh pushed ${exp * 1000 - pushedAt} ms early`);
    assert.equal(await c.closed(5000), DisconnectCode.TOKEN_EXPIRED);
    const late = (c.closedAt ?? 0) - exp * 1000;
    assert.ok(late >= -50 && late <= 1000, `closed ${late} ms after exp`);
  });

  it('a refresh with the same sub extends the connection and applies new capabilities at once', async () => {
    const exp = nowS() + 2;
    const c = track(
      await Authed.as(server.wsUrl, await mint('alice', { cap: { 'chat:*': ['subscribe'] }, exp })),
    );
    assert.equal((await c.subscribe('news:1', 's1'))['code'], ErrorCode.PERMISSION_DENIED);
    await c.until((fs) => fs.some((f) => f['event'] === 'refresh'), 5000);
    const exp2 = nowS() + 6;
    const r = await c.request({
      action: 'refresh',
      id: 'r',
      token: await mint('alice', {
        exp: exp2,
        cap: { 'chat:*': ['subscribe'], 'news:*': ['subscribe'] },
      }),
    });
    assert.deepEqual(r, { reply: 'r', ok: true, client: 'alice', expiresAt: exp2 * 1000 });
    assert.equal((await c.subscribe('news:1', 's2'))['ok'], true);
    // Past the first token's exp, still connected.
    await sleep(exp * 1000 - Date.now() + 700);
    assert.ok(await c.alive());
    assert.equal(c.closeCode, undefined);
    // The next refresh push is for the new token.
    await c.until((fs) => fs.filter((f) => f['event'] === 'refresh').length >= 2, 6000);
    assert.equal(c.events('refresh')[1]?.['expiresAt'], exp2 * 1000);
  });

  it('a refresh that drops a channel unsubscribes it with a push and stops its deliveries', async () => {
    const c = track(
      await Authed.as(server.wsUrl, await mint('bob', { cap: CAP, exp: nowS() + 60 })),
    );
    await c.subscribe('chat:keep');
    await c.subscribe('chat:drop');
    await publish(server.port, 'chat:drop', 'before');
    await publish(server.port, 'chat:keep', 'before');
    await c.until((fs) => fs.filter((f) => f['message'] === 'before').length === 2);
    const r = await c.request({
      action: 'refresh',
      id: 'narrow',
      token: await mint('bob', { cap: { 'chat:keep': ['subscribe'] }, exp: nowS() + 60 }),
    });
    assert.equal(r['ok'], true);
    const pushes = c.events('unsubscribed');
    assert.equal(pushes.length, 1);
    assert.equal(pushes[0]?.['channel'], 'chat:drop');
    assert.equal(pushes[0]?.['code'], ErrorCode.PERMISSION_DENIED);
    assert.equal(typeof pushes[0]?.['reason'], 'string');
    await publish(server.port, 'chat:drop', 'after');
    await publish(server.port, 'chat:keep', 'after');
    // Published after the one on chat:drop, so a wrongly delivered drop message would be first.
    await c.until((fs) => fs.some((f) => f['channel'] === 'chat:keep' && f['message'] === 'after'));
    assert.deepEqual(
      c.messages('chat:drop').map((f) => f['message']),
      ['before'],
    );
    // It cannot come back, and it cannot be unsubscribed twice.
    assert.equal((await c.subscribe('chat:drop', 'again'))['code'], ErrorCode.PERMISSION_DENIED);
    assert.equal(
      (await c.request({ action: 'unsubscribe', channel: 'chat:drop', id: 'u' }))['code'],
      ErrorCode.NOT_SUBSCRIBED,
    );
    // The token's new capabilities hold for publish too.
    assert.equal(
      (await c.request({ action: 'publish', channel: 'chat:keep', data: 1, id: 'p' }))['code'],
      ErrorCode.PERMISSION_DENIED,
    );
  });

  it('a refresh for another sub, with a bad signature, or expired is refused and the connection keeps its token', async () => {
    const exp = nowS() + 60;
    const c = track(await Authed.as(server.wsUrl, await mint('carol', { cap: CAP, exp })));
    await c.subscribe('chat:c');
    const refused = [
      await mint('mallory', { cap: { '*': ['subscribe', 'publish', 'history'] }, exp }),
      await mint('carol', { cap: CAP, exp }, { key: new TextEncoder().encode('x'.repeat(40)) }),
      await mint('carol', { cap: CAP, exp: nowS() - 120 }),
    ];
    for (const [i, token] of refused.entries()) {
      const r = await c.request({ action: 'refresh', id: `bad${i}`, token });
      assert.equal(r['code'], ErrorCode.UNAUTHORIZED, JSON.stringify(r));
    }
    assert.ok(await c.alive());
    assert.equal((await c.subscribe('news:x', 'n'))['code'], ErrorCode.PERMISSION_DENIED);
    await publish(server.port, 'chat:c', 'still');
    await c.until((fs) => fs.some((f) => f['message'] === 'still'));
    assert.equal(c.events('unsubscribed').length, 0);
  });

  it('refresh before connect is a bad request; a second connect too', async () => {
    const c = track(new Authed(server.wsUrl));
    await once(c.ws, 'open');
    const token = await mint('dave', { cap: CAP });
    assert.equal(
      (await c.request({ action: 'refresh', id: 1, token }))['code'],
      ErrorCode.BAD_REQUEST,
    );
    assert.equal((await c.request({ action: 'connect', id: 2, token }))['ok'], true);
    assert.equal(
      (await c.request({ action: 'connect', id: 3, token }))['code'],
      ErrorCode.BAD_REQUEST,
    );
  });
});

describe('revocation in the embedded engine', () => {
  let server: Server;
  before(async () => {
    server = await startTestServer({ jwtSecret: SECRET, apiKeys: API_KEYS });
  });
  after(() => server.close());

  it('only an admin API key may revoke', async () => {
    const body = { jti: 'whatever' };
    assert.equal((await revoke(server.port, body, basic(BACKEND))).status, 403);
    assert.equal(
      (await revoke(server.port, body, `Bearer ${await mint('alice', { cap: CAP })}`)).status,
      403,
    );
    assert.equal((await revoke(server.port, body, `Basic ${'eA=='}`)).status, 401);
    assert.equal(
      (await revoke(server.port, body, `Bearer ${ADMIN.name}:${ADMIN.secret}`)).status,
      200,
    );
    assert.equal((await revoke(server.port, { nothing: 1 })).status, 400);
    assert.equal((await revoke(server.port, { sub: 'x', before: 'yesterday' })).status, 400);
  });

  it('by jti and by user: live connections closed with 3500, others stay, the tokens are refused after, newer tokens work', async () => {
    const j1 = await mint('alice', { cap: CAP, jti: 'emb-j1' });
    const j2 = await mint('alice', { cap: CAP, jti: 'emb-j2' });
    const old = await mint('carol', { cap: CAP, iat: nowS() - 10 });
    const a1 = await Authed.as(server.wsUrl, j1);
    const a1b = new Authed(`${server.wsUrl}?token=${j1}`);
    await once(a1b.ws, 'open');
    const a2 = await Authed.as(server.wsUrl, j2);
    const b = await Authed.as(server.wsUrl, await mint('bob', { cap: CAP }));
    const c1 = await Authed.as(server.wsUrl, old);
    assert.ok(await a1b.alive());

    let t0 = Date.now();
    assert.equal((await revoke(server.port, { jti: 'emb-j1' })).status, 200);
    for (const c of [a1, a1b]) {
      assert.equal(await c.closed(2000), DisconnectCode.UNAUTHORIZED);
      assert.ok((c.closedAt ?? Infinity) - t0 <= 2000);
    }
    for (const c of [a2, b, c1]) assert.ok(await c.alive());

    const T = Date.now();
    t0 = Date.now();
    assert.equal((await revoke(server.port, { sub: 'carol', before: T })).status, 200);
    assert.equal(await c1.closed(2000), DisconnectCode.UNAUTHORIZED);
    for (const c of [a2, b]) assert.ok(await c.alive());

    await refusedEverywhere(server.wsUrl, server.port, j1);
    await refusedEverywhere(server.wsUrl, server.port, old);
    // A token of carol issued after T (iat in whole seconds, so wait for the next one) works.
    await sleep(1000 - (Date.now() % 1000) + 5);
    const fresh = await Authed.as(server.wsUrl, await mint('carol', { cap: CAP }));
    assert.ok(await fresh.alive());
    for (const c of [a2, b, fresh]) c.close();
  });
});

/** The embedded store, whose next answer can be held back after it was read. */
class HeldRevocationStore extends MemoryRevocationStore {
  #hold: { reached: () => void; release: Promise<void> } | undefined;

  /** Resolves once the next lookup has read the store; its answer waits for `release`. */
  holdNext(release: Promise<void>): Promise<void> {
    return new Promise((reached) => {
      this.#hold = { reached, release };
    });
  }

  override async isRevoked(creds: Credentials): Promise<boolean> {
    const answer = await super.isRevoked(creds);
    const hold = this.#hold;
    this.#hold = undefined;
    if (hold !== undefined) {
      hold.reached();
      await hold.release;
    }
    return answer;
  }
}

describe('revocation racing a connect', () => {
  it('a revocation that reaches the node after the store said "not revoked" but before the session registered still closes it', async () => {
    const store = new HeldRevocationStore(3_600_000);
    const config = resolveConfig([
      {
        source: 'test',
        values: { port: 0, host: '127.0.0.1', jwtSecret: SECRET, apiKeys: API_KEYS },
      },
    ]);
    const server = await startServer(config, createLogger('silent'), { revocations: store });
    const c = await TestClient.open(`ws://127.0.0.1:${server.port}/ws`);
    try {
      let release = (): void => {};
      const reached = store.holdNext(new Promise<void>((r) => (release = r)));
      c.send({ action: 'connect', token: await mint('alice', { cap: CAP, jti: 'raced' }), id: 1 });
      await reached; // the store was read before the revocation was stored: "not revoked"
      const r = await http(
        server.port,
        'POST',
        '/v1/admin/revocations',
        { Authorization: basic(ADMIN) },
        JSON.stringify({ jti: 'raced' }),
      );
      assert.equal(r.status, 200, r.body);
      release();
      await c.until((fs) => fs.some((f) => f['reply'] === 1));
      const reply = c.frames.find((f) => f['reply'] === 1) ?? {};
      assert.deepEqual([reply['code'], reply['error']], [ErrorCode.UNAUTHORIZED, 'token revoked']);
      assert.equal(await c.closed(), DisconnectCode.UNAUTHORIZED);
    } finally {
      c.close();
      await server.close();
    }
  });
});

describe('revocation across 2 nodes and Redis', { skip: requireBinary('redis-server') }, () => {
  let redis: RedisProcess;
  const nodes: NodeProcess[] = [];
  const clients: TestClient[] = [];
  const args = (): string[] => [
    '--redis',
    redis.url,
    '--jwt-secret',
    SECRET,
    '--api-keys',
    JSON.stringify(API_KEYS),
  ];

  before(async () => {
    redis = await startRedis();
    nodes.push(...(await Promise.all([startNodeProcess(args()), startNodeProcess(args())])));
  });
  after(async () => {
    for (const c of clients) c.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis.stop();
  });

  it('closes revoked connections on both nodes within 2 s, keeps the others, and refuses the tokens everywhere after', async () => {
    const [A, B] = nodes as [NodeProcess, NodeProcess];
    const tokens = {
      j1: await mint('alice', { cap: CAP, jti: 'multi-j1' }),
      j2: await mint('alice', { cap: CAP, jti: 'multi-j2' }),
      bob: await mint('bob', { cap: CAP }),
      carolOld: await mint('carol', { cap: CAP, iat: nowS() - 10 }),
      carolOld2: await mint('carol', { cap: CAP, iat: nowS() - 5 }),
    };
    const on = async (n: NodeProcess, token: string): Promise<Authed> => {
      const c = await Authed.as(n.wsUrl, token);
      clients.push(c);
      return c;
    };
    const conns = {
      j1: [await on(A, tokens.j1), await on(B, tokens.j1)],
      j2: [await on(A, tokens.j2), await on(B, tokens.j2)],
      bob: [await on(A, tokens.bob), await on(B, tokens.bob)],
      carol: [await on(A, tokens.carolOld), await on(B, tokens.carolOld2)],
    };
    // Subscribed connections get deliveries from the other node until they are revoked.
    for (const c of [...conns.j2, ...conns.bob]) await c.subscribe('chat:live');

    // Revoke one token through node A.
    let t0 = Date.now();
    assert.equal((await revoke(A.port, { jti: 'multi-j1' })).status, 200);
    await Promise.all(conns.j1.map((c) => c.closed(3000)));
    const jtiLatency = Math.max(...conns.j1.map((c) => (c.closedAt ?? Infinity) - t0));
    for (const c of conns.j1) assert.equal(c.closeCode, DisconnectCode.UNAUTHORIZED);
    assert.ok(jtiLatency <= 2000, `jti revocation took ${jtiLatency} ms`);
    for (const c of [...conns.j2, ...conns.bob, ...conns.carol]) assert.ok(await c.alive());

    // Revoke every token of carol issued before T through node B.
    const T = Date.now();
    t0 = Date.now();
    assert.equal((await revoke(B.port, { sub: 'carol', before: T })).status, 200);
    await Promise.all(conns.carol.map((c) => c.closed(3000)));
    const userLatency = Math.max(...conns.carol.map((c) => (c.closedAt ?? Infinity) - t0));
    for (const c of conns.carol) assert.equal(c.closeCode, DisconnectCode.UNAUTHORIZED);
    assert.ok(userLatency <= 2000, `user revocation took ${userLatency} ms`);
    process.stdout.write(
      `revocation across 2 nodes: jti ${jtiLatency} ms, user ${userLatency} ms to close every connection\n`,
    );

    // The others are untouched and still get messages from either node.
    await publish(B.port, 'chat:live', 'after-revocations');
    for (const c of [...conns.j2, ...conns.bob]) {
      await c.until((fs) => fs.some((f) => f['message'] === 'after-revocations'));
      assert.equal(c.closeCode, undefined);
    }

    // Reconnecting with a revoked token fails on both nodes, and on a node started afterwards
    // (the revocations live in Redis).
    const C = await startNodeProcess(args());
    nodes.push(C);
    for (const n of [A, B, C]) {
      await refusedEverywhere(n.wsUrl, n.port, tokens.j1);
      await refusedEverywhere(n.wsUrl, n.port, tokens.carolOld);
    }
    // A token issued after T works everywhere; so does alice's other token.
    await sleep(1000 - (Date.now() % 1000) + 5);
    const carolNew = await mint('carol', { cap: CAP });
    for (const n of [A, B, C]) {
      const c = await on(n, carolNew);
      assert.ok(await c.alive());
      const j2 = await on(n, tokens.j2);
      assert.ok(await j2.alive());
    }
    await eventually(
      () => redis.cli('--scan', '--pattern', '*rv:*').trim().split('\n').length >= 2,
    );
  });
});

describe('token lifetime and revocation retention (maxTokenLifetimeMs)', () => {
  // Revocations are kept for maxTokenLifetimeMs. A token that could live longer than that would
  // be refused while its revocation is kept and accepted again once it is dropped (issue 16.1).
  const MAX_S = 3;
  let server: Server;
  before(async () => {
    server = await startTestServer({
      jwtSecret: SECRET,
      apiKeys: API_KEYS,
      maxTokenLifetimeMs: MAX_S * 1000,
      jwtLeewayMs: 0,
    });
  });
  after(() => server.close());

  it('refuses a token whose exp - iat exceeds maxTokenLifetimeMs, and one without iat', async () => {
    for (const token of [
      await mint('alice', { cap: CAP, exp: nowS() + 3600 }),
      await mint('alice', { cap: CAP, iat: nowS() - 2, exp: nowS() + MAX_S }),
      await mint('alice', { cap: CAP, exp: nowS() + 2 }, { withoutIat: true }),
    ]) {
      const c = new TestClient(server.wsUrl);
      await once(c.ws, 'open');
      c.send({ action: 'connect', token, id: 1 });
      assert.equal(await c.closed(), DisconnectCode.UNAUTHORIZED);
      assert.equal(c.frames[0]?.['code'], ErrorCode.UNAUTHORIZED);
      assert.match(String(c.frames[0]?.['error']), /lifetime|iat/);
      const r = await http(server.port, 'GET', '/v1/channels/chat:x/messages', {
        Authorization: `Bearer ${token}`,
      });
      assert.equal(r.status, 401, r.body);
    }
  });

  it('a revoked token is never accepted again, also after its revocation is dropped', async () => {
    const token = await mint('alice', { cap: CAP, exp: nowS() + MAX_S, jti: 'short-lived' });
    const c = await Authed.as(server.wsUrl, token);
    assert.equal((await revoke(server.port, { jti: 'short-lived' })).status, 200);
    assert.equal(await c.closed(2000), DisconnectCode.UNAUTHORIZED);
    await refusedEverywhere(server.wsUrl, server.port, token);
    // Past the retention the revocation is gone; the token, which cannot outlive it, is too.
    await sleep(MAX_S * 1000 + 1100);
    const late = new TestClient(server.wsUrl);
    await once(late.ws, 'open');
    late.send({ action: 'connect', token, id: 1 });
    assert.equal(await late.closed(), DisconnectCode.UNAUTHORIZED);
    assert.match(String(late.frames[0]?.['error']), /expired/);
  });
});

describe('tokens without exp (jwtRequireExp false) live at most maxTokenLifetimeMs from iat', () => {
  let server: Server;
  before(async () => {
    server = await startTestServer({
      jwtSecret: SECRET,
      jwtRequireExp: false,
      maxTokenLifetimeMs: 2000,
      tokenRefreshLeadMs: 500,
      jwtLeewayMs: 0,
    });
  });
  after(() => server.close());

  it('is asked to refresh, then closed with 3005 at iat + maxTokenLifetimeMs', async () => {
    const iat = nowS();
    const c = await Authed.as(server.wsUrl, await mint('nina', { cap: CAP, iat }, { expIn: null }));
    assert.equal(await c.closed(5000), DisconnectCode.TOKEN_EXPIRED);
    assert.equal(c.events('refresh')[0]?.['expiresAt'], iat * 1000 + 2000);
    const late = (c.closedAt ?? 0) - (iat * 1000 + 2000);
    assert.ok(late >= -50 && late <= 1000, `closed ${late} ms after iat + max`);
  });
});

describe('tokens that expire more than 24.8 days ahead (setTimeout overflow)', () => {
  let server: Server;
  before(async () => {
    server = await startTestServer({
      jwtSecret: SECRET,
      maxTokenLifetimeMs: 365 * 24 * 3_600_000,
    });
  });
  after(() => server.close());

  it('stay connected instead of being closed with 3005 at once', async () => {
    const exp = nowS() + 40 * 24 * 3600;
    const c = await Authed.as(server.wsUrl, await mint('long', { cap: CAP, exp }));
    // Past the turn in which an overflowed timer (clamped to 1 ms by Node) would have fired.
    await sleep(50);
    assert.ok(await c.alive());
    assert.equal(c.events('refresh').length, 0);
    c.close();
  });
});
