/**
 * Presence (ARCHITECTURE guarantee 8; issue 5's `presence` capability) with auto-enter (the
 * namespace's `autoEnter`, presence as it was before #12): a connection subscribed to a channel
 * is a member; members are read over WebSocket, REST,
 * SSE/long-polling commands (and the SDK: client e2e.test.ts), each checked against the capabilities; a member leaves
 * at once when its connection ends, and a member whose node is killed with SIGKILL outlives it by
 * at most presenceTtlMs.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { ErrorCode } from '@switchboard/protocol';
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
import { PollTestClient } from './http-clients.js';
import { http, json, mint, SECRET } from './security-kit.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;

const TTL_MS = 2000;
const NAMESPACES = {
  room: { presence: true, autoEnter: true },
  lobby: { presence: true, autoEnter: true, anonymous: ['subscribe', 'presence'] },
  chat: {},
};
const CAP = { 'room:*': ['subscribe', 'presence'], 'chat:*': ['subscribe', 'presence'] };
const BACKEND = { name: 'backend', secret: 'backend-secret-0123456789' };
const BACKEND_AUTH = `Basic ${Buffer.from(`${BACKEND.name}:${BACKEND.secret}`).toString('base64')}`;

interface Member {
  clientId: string;
  connectionId: string;
}

async function wsPresence(c: TestClient, channel: string): Promise<Frame> {
  return c.request({ action: 'presence', channel, id: `p${Math.random()}` });
}

async function restPresence(
  port: number,
  channel: string,
  auth: string | null = BACKEND_AUTH,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await http(
    port,
    'GET',
    `/v1/channels/${channel}/presence`,
    auth === null ? {} : { Authorization: auth },
  );
  return { status: r.status, body: json(r) };
}

/** The members' clientIds (their token's sub), '-' for anonymous ones (clientId = connectionId). */
function users(members: unknown): string[] {
  return (members as Member[])
    .map((m) => (m.clientId === m.connectionId ? '-' : m.clientId))
    .sort();
}

async function authed(server: Server, sub: string, cap: object = CAP): Promise<TestClient> {
  const c = await TestClient.open(server.wsUrl);
  const r = await c.request({ action: 'connect', token: await mint(sub, { cap }), id: 'auth' });
  assert.equal(r['ok'], true, JSON.stringify(r));
  return c;
}

describe('presence on the embedded engine', () => {
  let server: Server;
  const clients: TestClient[] = [];
  const track = (c: TestClient): TestClient => (clients.push(c), c);

  before(async () => {
    server = await startTestServer({
      jwtSecret: SECRET,
      namespaces: NAMESPACES,
      presenceTtlMs: TTL_MS,
      apiKeys: [{ ...BACKEND, capabilities: { '*': ['presence'] } }],
    });
  });
  after(async () => {
    for (const c of clients) c.close();
    await server.close();
  });

  it('lists a subscriber (clientId = sub, connectionId) over WebSocket, REST and long-polling until it unsubscribes', async () => {
    const alice = track(await authed(server, 'alice'));
    const bob = track(await authed(server, 'bob'));
    assert.equal((await alice.subscribe('room:1'))['ok'], true);

    const viaWs = await wsPresence(bob, 'room:1');
    assert.equal(viaWs['ok'], true, JSON.stringify(viaWs));
    assert.equal(viaWs['channel'], 'room:1');
    const members = viaWs['members'] as Member[];
    assert.deepEqual(users(members), ['alice']);
    assert.match(members[0]?.connectionId ?? '', /^[A-Za-z0-9_-]{16}$/);

    const viaRest = await restPresence(server.port, 'room:1');
    assert.equal(viaRest.status, 200);
    assert.deepEqual(viaRest.body, {
      channel: 'room:1',
      members,
      offset: 1,
      epoch: viaRest.body['epoch'],
      next: null,
    });

    // SSE and long-polling commands go through the same session code as WebSocket frames.
    const poll = await PollTestClient.open(
      server.url,
      `?token=${encodeURIComponent(await mint('carol', { cap: CAP }))}`,
    );
    await poll.post([{ action: 'presence', channel: 'room:1', id: 'lp' }], server.url);
    await poll.until(server.url, (fs) => fs.some((f) => f['reply'] === 'lp'));
    assert.deepEqual(poll.frames.find((f) => f['reply'] === 'lp')?.['members'], members);

    assert.equal((await bob.subscribe('room:1'))['ok'], true);
    assert.deepEqual(users((await wsPresence(alice, 'room:1'))['members']), ['alice', 'bob']);
    await alice.request({ action: 'unsubscribe', channel: 'room:1', id: 'u' });
    assert.deepEqual(users((await wsPresence(alice, 'room:1'))['members']), ['bob']);
    await bob.request({ action: 'unsubscribe', channel: 'room:1', id: 'u' });
    assert.deepEqual((await restPresence(server.port, 'room:1')).body['members'], []);
  });

  it('drops a member at once when its socket is destroyed or closed', async () => {
    const alice = track(await authed(server, 'alice'));
    const bob = track(await authed(server, 'bob'));
    await alice.subscribe('room:2');
    await bob.subscribe('room:2');
    let t0 = performance.now();
    alice.ws.terminate(); // no close frame: the TCP connection just ends
    await eventually(
      async () =>
        users((await restPresence(server.port, 'room:2')).body['members']).join() === 'bob',
      TTL_MS,
      'alice to leave',
      5,
    );
    const destroyedMs = performance.now() - t0;
    t0 = performance.now();
    bob.close();
    await eventually(
      async () => ((await restPresence(server.port, 'room:2')).body['members'] as []).length === 0,
      TTL_MS,
      'bob to leave',
      5,
    );
    const closedMs = performance.now() - t0;
    process.stdout.write(
      `presence (memory): left ${destroyedMs.toFixed(0)} ms after a socket destroy, ${closedMs.toFixed(0)} ms after a close\n`,
    );
    assert.ok(destroyedMs < 500 && closedMs < 500);
  });

  it('refuses without the capability (103; 101 anonymous) and where presence is off (117); the connection stays', async () => {
    const noPresence = track(await authed(server, 'dave', { 'room:*': ['subscribe'] }));
    let r = await wsPresence(noPresence, 'room:1');
    assert.equal(r['code'], ErrorCode.PERMISSION_DENIED, JSON.stringify(r));
    const alice = track(await authed(server, 'alice'));
    r = await wsPresence(alice, 'chat:1');
    assert.equal(r['code'], ErrorCode.PRESENCE_DISABLED, JSON.stringify(r));
    const anonymous = track(await TestClient.open(server.wsUrl));
    r = await wsPresence(anonymous, 'room:1');
    assert.equal(r['code'], ErrorCode.UNAUTHORIZED, JSON.stringify(r));
    // A namespace may open presence to anonymous connections; they are members without a user.
    await anonymous.subscribe('lobby:1');
    r = await wsPresence(anonymous, 'lobby:1');
    assert.deepEqual(users(r['members']), ['-']);
    for (const c of [noPresence, alice, anonymous]) {
      assert.equal((await c.request({ action: 'ping', id: 'still' }))['ok'], true);
      assert.equal(c.closeCode, undefined);
    }

    assert.equal((await restPresence(server.port, 'room:1', null)).status, 401);
    const token = await mint('dave', { cap: { 'room:*': ['subscribe'] } });
    const denied = await restPresence(server.port, 'room:1', `Bearer ${token}`);
    assert.deepEqual([denied.status, denied.body['code']], [403, ErrorCode.PERMISSION_DENIED]);
    const off = await restPresence(server.port, 'chat:1');
    assert.deepEqual([off.status, off.body['code']], [404, ErrorCode.PRESENCE_DISABLED]);
  });
});

const missing = requireBinary('redis-server');
describe('presence across 2 nodes on Redis', { skip: missing }, () => {
  let redis: RedisProcess;
  let a: NodeProcess;
  let b: NodeProcess;
  const clients: TestClient[] = [];
  const track = (c: TestClient): TestClient => (clients.push(c), c);
  const args = (): string[] => [
    ...['--redis', redis.url, '--redis-prefix', 'pt:'],
    ...['--namespaces', JSON.stringify(NAMESPACES), '--presence-ttl-ms', String(TTL_MS)],
  ];

  before(async () => {
    redis = await startRedis();
    [a, b] = await Promise.all([startNodeProcess(args()), startNodeProcess(args())]);
  });
  after(async () => {
    for (const c of clients) c.close();
    await Promise.all([a.stop(), b.stop()]);
    await redis.stop();
  });

  const ids = async (port: number, channel: string): Promise<string[]> => {
    const r = await restPresence(port, channel, null);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return (r.body['members'] as Member[]).map((m) => m.connectionId).sort();
  };

  it('joins and leaves are seen on the other node over WebSocket and REST; every key has a TTL', async () => {
    const onA = track(await TestClient.open(a.wsUrl));
    const onB = track(await TestClient.open(b.wsUrl));
    await onA.subscribe('room:x');
    await onB.subscribe('room:x');
    const fromB = await wsPresence(onB, 'room:x');
    assert.equal((fromB['members'] as Member[]).length, 2, JSON.stringify(fromB));
    const both = (fromB['members'] as Member[]).map((m) => m.connectionId).sort();
    assert.deepEqual(await ids(a.port, 'room:x'), both);
    for (const key of ['pt:pz:{room:x}', 'pt:ph:{room:x}', 'pt:pl:{room:x}']) {
      const ttl = Number(redis.cli('PTTL', key).trim());
      assert.ok(ttl > 0 && ttl <= TTL_MS, `${key} PTTL ${ttl}`);
    }

    await onA.request({ action: 'unsubscribe', channel: 'room:x', id: 'u' });
    assert.equal((await ids(b.port, 'room:x')).length, 1);
    const t0 = performance.now();
    onB.ws.terminate();
    await eventually(async () => (await ids(a.port, 'room:x')).length === 0, TTL_MS, 'empty', 5);
    const leftMs = performance.now() - t0;
    process.stdout.write(`presence (redis): left ${leftMs.toFixed(0)} ms after a socket destroy\n`);
    assert.ok(leftMs < 500, `left ${leftMs} ms after its socket was destroyed`);
    assert.equal(redis.cli('EXISTS', 'pt:pz:{room:x}').trim(), '0');
  });

  it('members of a node killed with SIGKILL linger at most presenceTtlMs', async () => {
    const ghosts = await Promise.all([1, 2, 3].map(() => TestClient.open(a.wsUrl)));
    clients.push(...ghosts);
    for (const g of ghosts) await g.subscribe('room:k');
    const live = track(await TestClient.open(b.wsUrl));
    await live.subscribe('room:k');
    // Let the node refresh at least once, so the ghosts' expiry is set by a refresh, not the join.
    await new Promise((r) => setTimeout(r, TTL_MS / 2));
    assert.equal((await ids(b.port, 'room:k')).length, 4);
    const exited = once(a.child, 'exit');
    const killedAt = performance.now();
    a.child.kill('SIGKILL');
    await exited;
    const afterKill = (await ids(b.port, 'room:k')).length;
    await eventually(
      async () => (await ids(b.port, 'room:k')).length === 1,
      TTL_MS + 2000,
      'the ghosts to expire',
      10,
    );
    const ghostMs = performance.now() - killedAt;
    process.stdout.write(
      `presence (redis): ${afterKill - 1} ghosts of a SIGKILLed node gone ${ghostMs.toFixed(0)} ms after the kill (TTL ${TTL_MS} ms)\n`,
    );
    assert.equal(afterKill, 4, 'the dead node left its members behind (they are ghosts now)');
    assert.ok(ghostMs <= TTL_MS + 100, `ghosts outlived the node by ${ghostMs} ms`);
    assert.deepEqual(
      users((await wsPresence(live, 'room:k'))['members']),
      ['-'],
      'the live member stays',
    );
  });
});
