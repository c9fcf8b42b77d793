/**
 * The admin REST API (#13.3 server side, #13.4): two switchboard processes on one Redis with auth
 * on, an admin password and an admin API key. What an operator's browser or script sees over
 * HTTP: 401 without credentials, 403 for client credentials, lockout, CSRF, the deployment-wide
 * overview, channel list, live tail, publish and revoke. Real redis-server, processes and sockets.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { WebSocket } from 'ws';
import { Switchboard } from '@switchboard/client';
import {
  eventually,
  requireBinary,
  startNodeProcess,
  startRedis,
  TestClient,
  type NodeProcess,
  type RedisProcess,
} from './helpers.js';
import { http, json, mint, SECRET } from './security-kit.js';

const skip = requireBinary('redis-server');
const PASSWORD = 'correct horse battery staple';
const ADMIN_KEY = 'ops:admin-secret-0123456789';
const PLAIN_KEY = 'backend:plain-secret-0123456789';
const API_KEYS = JSON.stringify([
  { name: 'ops', secret: 'admin-secret-0123456789', capabilities: {}, admin: true },
  { name: 'backend', secret: 'plain-secret-0123456789', capabilities: { '*': ['publish'] } },
]);
const CAP = { 'room:*': ['subscribe', 'publish', 'history'] };
const PCAP = { 'team:*': ['subscribe', 'presence'] };

interface Reply {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Record<string, unknown>;
}

async function call(
  node: NodeProcess,
  method: string,
  path: string,
  o: { headers?: Record<string, string>; body?: unknown } = {},
): Promise<Reply> {
  const res = await fetch(node.url + path, {
    method,
    headers: {
      ...(o.body !== undefined && { 'content-type': 'application/json' }),
      ...o.headers,
    },
    ...(o.body !== undefined && { body: JSON.stringify(o.body) }),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: JSON.parse(text) as Reply['body'] };
}

const bearer = { authorization: `Bearer ${ADMIN_KEY}` };

interface TailEvent {
  readonly event: string;
  readonly id: string | undefined;
  readonly data: Record<string, unknown>;
}

interface Tail {
  readonly events: TailEvent[];
  /** Waits until `n` message events have arrived. */
  readonly waitFor: (n: number, ms: number, what: string) => Promise<void>;
  /** Drops the connection (as a network loss would) and waits for the reader to stop. */
  readonly close: () => Promise<void>;
}

/** Reads a node's admin tail of `channel` as an EventSource would (admin API key). */
async function openTail(
  node: NodeProcess,
  channel: string,
  headers: Record<string, string> = {},
): Promise<Tail> {
  const ctl = new AbortController();
  const res = await fetch(`${node.url}/v1/admin/tail/${channel}`, {
    headers: { ...bearer, ...headers },
    signal: ctl.signal,
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
  const body = res.body as unknown as AsyncIterable<Uint8Array>;
  const decoder = new TextDecoder();
  let buffer = '';
  const events: TailEvent[] = [];
  let wake: (() => void) | undefined;
  const pump = (async () => {
    for await (const value of body) {
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = 'message';
        let data = '';
        let id: string | undefined;
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) event = line.slice(7);
          if (line.startsWith('id: ')) id = line.slice(4);
          if (line.startsWith('data: ')) data += line.slice(6);
        }
        if (data !== '')
          events.push({ event, id, data: JSON.parse(data) as Record<string, unknown> });
        wake?.();
      }
    }
  })().catch(() => undefined);
  return {
    events,
    async waitFor(n, ms, what) {
      const deadline = Date.now() + ms;
      while (events.filter((e) => e.event === 'message').length < n) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`timed out waiting for ${what}`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, left);
        });
      }
    },
    async close() {
      ctl.abort();
      await pump;
    },
  };
}

describe('admin API, two nodes on Redis', { skip }, () => {
  let redis: RedisProcess;
  let a: NodeProcess;
  let b: NodeProcess;

  before(async () => {
    redis = await startRedis();
    const args = [
      '--redis',
      redis.url,
      '--redis-prefix',
      'adm:',
      '--admin',
      '--admin-password',
      PASSWORD,
      '--jwt-secret',
      SECRET,
      '--api-keys',
      API_KEYS,
      '--namespaces',
      JSON.stringify({ team: { presence: true } }),
    ];
    [a, b] = await Promise.all([
      startNodeProcess([...args, '--node-id', 'node-a']),
      startNodeProcess([...args, '--node-id', 'node-b']),
    ]);
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.stop();
  });

  test('without credentials every admin endpoint answers 401 with a JSON code', async () => {
    const gets = [
      '/v1/admin/overview',
      '/v1/admin/channels',
      '/v1/admin/channels/room:x',
      '/v1/admin/channels/room:x/history',
      '/v1/admin/channels/room:x/presence',
      '/v1/admin/tail/room:x',
      '/v1/admin/latency',
      '/v1/admin/errors',
      '/v1/admin/webhooks',
    ];
    for (const path of gets) {
      const r = await call(a, 'GET', path);
      assert.equal(r.status, 401, path);
      assert.equal(r.body['code'], 190, path);
      assert.equal(typeof r.body['error'], 'string');
    }
    for (const path of ['/v1/admin/publish', '/v1/admin/revoke']) {
      const r = await call(a, 'POST', path, { body: { channel: 'room:x', data: 1 } });
      assert.equal(r.status, 401, path);
      assert.equal(r.body['code'], 190, path);
    }
    const s = await call(a, 'GET', '/v1/admin/session');
    assert.deepEqual(s.body, { authenticated: false, login: true });
    // The front page links to the admin when it is on.
    const info = await call(a, 'GET', '/v1/info');
    assert.equal((info.body['links'] as Record<string, unknown>)['admin'], '/admin');
  });

  test('client tokens and non-admin keys are refused with 403', async () => {
    const token = await mint('alice', { cap: CAP });
    for (const authorization of [`Bearer ${token}`, `Bearer ${PLAIN_KEY}`]) {
      const r = await call(a, 'GET', '/v1/admin/overview', { headers: { authorization } });
      assert.equal(r.status, 403);
      assert.equal(r.body['code'], 191);
    }
    const bad = await call(a, 'GET', '/v1/admin/overview', {
      headers: { authorization: 'Bearer ops:wrong-secret-0000000000' },
    });
    assert.equal(bad.status, 401);
  });

  test('password login sets a signed cookie; writes need the CSRF token', async () => {
    const login = await call(b, 'POST', '/v1/admin/login', { body: { password: PASSWORD } });
    assert.equal(login.status, 200);
    const setCookie = login.headers.get('set-cookie') ?? '';
    assert.match(setCookie, /^sb_admin=[^;]+; Path=\/; HttpOnly; SameSite=Strict; Max-Age=\d+$/);
    const cookie = setCookie.split(';')[0] as string;
    const csrf = login.body['csrf'] as string;
    // The session is good on the other node too (same configuration, same key).
    const s = await call(a, 'GET', '/v1/admin/session', { headers: { cookie } });
    assert.deepEqual(s.body, { authenticated: true, via: 'session', csrf, login: true });
    const ov = await call(a, 'GET', '/v1/admin/overview', { headers: { cookie } });
    assert.equal(ov.status, 200);
    const publish = { channel: 'room:csrf', data: { n: 1 } };
    const without = await call(a, 'POST', '/v1/admin/publish', {
      headers: { cookie },
      body: publish,
    });
    assert.equal(without.status, 403);
    assert.equal(without.body['code'], 194);
    const wrong = await call(a, 'POST', '/v1/admin/publish', {
      headers: { cookie, 'x-csrf-token': 'A'.repeat(43) },
      body: publish,
    });
    assert.equal(wrong.status, 403);
    const ok = await call(a, 'POST', '/v1/admin/publish', {
      headers: { cookie, 'x-csrf-token': csrf },
      body: publish,
    });
    assert.equal(ok.status, 200);
    // A forged or tampered cookie is nobody's.
    const forged = cookie.slice(0, -2) + (cookie.endsWith('AA') ? 'BB' : 'AA');
    const f = await call(a, 'GET', '/v1/admin/overview', { headers: { cookie: forged } });
    assert.equal(f.status, 401);
    const out = await call(a, 'POST', '/v1/admin/logout', { headers: { cookie } });
    assert.match(out.headers.get('set-cookie') ?? '', /sb_admin=; .*Max-Age=0/);
    // Logout ends the session on every node, not only in this browser.
    const after = await call(b, 'GET', '/v1/admin/overview', { headers: { cookie } });
    assert.equal(after.status, 401);
  });

  test('the admin page may call its own node: same origin allowed, other origins refused', async () => {
    const body = JSON.stringify({ password: PASSWORD });
    const headers = (origin: string): Record<string, string> => ({
      host: `127.0.0.1:${a.port}`,
      origin,
      'content-type': 'application/json',
    });
    const same = await http(a.port, 'POST', '/v1/admin/login', headers(a.url), body);
    assert.equal(same.status, 200, same.body);
    const other = await http(
      a.port,
      'POST',
      '/v1/admin/login',
      headers('http://evil.example'),
      body,
    );
    assert.equal(other.status, 403);
    assert.equal(json(other)['code'], 103);
    // A page of the node itself passes the origin check on every route (admission.ts), so the
    // REST route asks for credentials instead; a foreign origin is still refused first.
    const rest = await http(a.port, 'GET', '/v1/channels/room:x/messages', headers(a.url));
    assert.equal(rest.status, 401);
    const foreign = await http(
      a.port,
      'GET',
      '/v1/channels/room:x/messages',
      headers('http://evil.example'),
    );
    assert.equal(foreign.status, 403);
  });

  test('a wrong password 5 times locks the address out on every node', async () => {
    for (let i = 1; i <= 4; i++) {
      const r = await call(i % 2 === 0 ? a : b, 'POST', '/v1/admin/login', {
        body: { password: `wrong ${i}` },
      });
      assert.equal(r.status, 401, `attempt ${i}`);
      assert.equal(r.body['code'], 192);
    }
    const fifth = await call(a, 'POST', '/v1/admin/login', { body: { password: 'wrong 5' } });
    assert.equal(fifth.status, 429);
    assert.equal(fifth.body['code'], 193);
    assert.ok(Number(fifth.headers.get('retry-after')) > 0);
    // Even the right password, on the other node: the count is in Redis.
    const right = await call(b, 'POST', '/v1/admin/login', { body: { password: PASSWORD } });
    assert.equal(right.status, 429);
    assert.equal(right.body['code'], 193);
    // An admin key still works (the lockout is about password guessing).
    assert.equal((await call(b, 'GET', '/v1/admin/overview', { headers: bearer })).status, 200);
    // The refusals show up in the errors view.
    const errors = await call(a, 'GET', '/v1/admin/errors?limit=50', { headers: bearer });
    const codes = (errors.body['errors'] as { code: number }[]).map((e) => e.code);
    assert.ok(codes.includes(193) && codes.includes(192), JSON.stringify(codes));
  });

  test('overview lists both nodes with the numbers of /metrics', async () => {
    const c = await TestClient.open(`${b.wsUrl}?token=${await mint('ov', { cap: CAP })}`);
    try {
      await c.subscribe('room:ov');
      const r = await call(a, 'GET', '/v1/admin/overview', { headers: bearer });
      assert.equal(r.status, 200);
      const nodes = r.body['nodes'] as Record<string, unknown>[];
      assert.deepEqual(
        nodes.map((n) => n['id']),
        ['node-a', 'node-b'],
      );
      for (const n of nodes) {
        for (const k of ['connections', 'channels', 'messagesInPerSec', 'messagesOutPerSec'])
          assert.equal(typeof n[k], 'number', k);
        assert.equal(n['broker'], 'redis');
        assert.equal(n['ready'], true);
        assert.ok(typeof n['eventLoopLagMs'] === 'number' && (n['uptimeS'] as number) >= 0);
      }
      const nb = nodes[1] as Record<string, number>;
      const metrics = await (await fetch(`${b.url}/metrics`)).text();
      const gauge = (name: string): number =>
        Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(metrics)?.[1]);
      assert.equal(nb['connections'], gauge('switchboard_connections'));
      assert.equal(nb['channels'], gauge('switchboard_channels'));
      const totals = r.body['totals'] as Record<string, number>;
      assert.equal(totals['nodes'], 2);
      assert.ok(totals['connections']! >= 1);
    } finally {
      c.ws.close();
    }
  });

  test('a channel created on the other node appears in the list within 2 s', async () => {
    const c = await TestClient.open(`${b.wsUrl}?token=${await mint('ls', { cap: CAP })}`);
    try {
      const t0 = Date.now();
      await c.subscribe('room:listed-1');
      await eventually(
        async () => {
          const r = await call(a, 'GET', '/v1/admin/channels?prefix=room:listed', {
            headers: bearer,
          });
          const rows = r.body['channels'] as { channel: string; subscribers: number }[];
          return rows.some((x) => x.channel === 'room:listed-1' && x.subscribers === 1);
        },
        2000,
        'the channel in the list',
      );
      assert.ok(Date.now() - t0 < 2000);
      const one = await call(a, 'GET', '/v1/admin/channels/room:listed-1', { headers: bearer });
      assert.equal(one.body['subscribers'], 1);
      assert.equal(one.body['presence'], false, 'room has no presence');
      const team = await call(a, 'GET', '/v1/admin/channels/team:p', { headers: bearer });
      assert.equal(team.body['presence'], true, 'team has presence');
      // Pagination: limit and cursor.
      await c.subscribe('room:listed-2');
      await c.subscribe('room:listed-3');
      const seen: string[] = [];
      let cursor = '';
      for (let i = 0; i < 5; i++) {
        const r = await call(
          a,
          'GET',
          `/v1/admin/channels?prefix=room:listed&limit=2&cursor=${cursor}`,
          { headers: bearer },
        );
        seen.push(...(r.body['channels'] as { channel: string }[]).map((x) => x.channel));
        if (r.body['next'] === null) break;
        cursor = r.body['next'] as string;
      }
      assert.deepEqual(seen, ['room:listed-1', 'room:listed-2', 'room:listed-3']);
      // A channel with history and no subscriber is listed too (the directory scans streams).
      const pub = await call(b, 'POST', '/v1/channels/room:listed-0/messages', {
        headers: { authorization: `Bearer ${PLAIN_KEY}` },
        body: { data: 'stored' },
      });
      assert.equal(pub.status, 200);
      await eventually(
        async () => {
          const r = await call(a, 'GET', '/v1/admin/channels?prefix=room:listed-0', {
            headers: bearer,
          });
          return (r.body['channels'] as { channel: string }[]).length === 1;
        },
        2000,
        'the stored channel in the list',
      );
    } finally {
      c.ws.close();
    }
  });

  test('the tail gets 100 of 100 messages published by REST on the other node, in order', async () => {
    const tail = await openTail(a, 'room:tail');
    const { events, waitFor } = tail;
    try {
      await eventually(() => events.some((e) => e.event === 'subscribed'), 5000, 'subscribed');
      for (let i = 0; i < 100; i++) {
        const t0 = Date.now();
        const r = await call(b, 'POST', '/v1/channels/room:tail/messages', {
          headers: { authorization: `Bearer ${PLAIN_KEY}` },
          body: { name: 'tick', data: { i } },
        });
        assert.equal(r.status, 200);
        await waitFor(i + 1, 1000, `message ${i} on the tail within 1 s`);
        assert.ok(Date.now() - t0 < 1000);
      }
      const got = events.filter((e) => e.event === 'message').map((e) => e.data);
      assert.equal(got.length, 100);
      assert.deepEqual(
        got.map((m) => (m['data'] as { i: number }).i),
        Array.from({ length: 100 }, (_, i) => i),
      );
      const offsets = got.map((m) => m['offset'] as number);
      assert.deepEqual(
        offsets,
        offsets.map((_, i) => (offsets[0] as number) + i),
      );
      assert.equal(got[0]?.['channel'], 'room:tail');
      assert.equal(got[0]?.['name'], 'tick');
      assert.equal(typeof got[0]?.['at'], 'number');
      assert.equal(typeof got[0]?.['epoch'], 'string');
      // History of the channel, for the page to show above the tail: oldest first.
      const h = await call(a, 'GET', '/v1/admin/channels/room:tail/history?limit=3', {
        headers: bearer,
      });
      assert.deepEqual(
        (h.body['messages'] as { message: { i: number } }[]).map((m) => m.message.i),
        [97, 98, 99],
      );
      const lat = await call(a, 'GET', '/v1/admin/latency', { headers: bearer });
      assert.ok((lat.body['count'] as number) >= 100, JSON.stringify(lat.body));
      const buckets = lat.body['buckets'] as { le: number | string; count: number }[];
      assert.equal(buckets.at(-1)?.le, '+Inf');
      assert.equal(buckets.at(-1)?.count, lat.body['count']);
    } finally {
      await tail.close();
    }
  });

  test('a tail dropped mid-stream resumes from Last-Event-ID: no gap, no duplicate', async () => {
    const publish = (i: number): Promise<Reply> =>
      call(b, 'POST', '/v1/channels/room:resume/messages', {
        headers: { authorization: `Bearer ${PLAIN_KEY}` },
        body: { data: { i } },
      });
    const first = await openTail(a, 'room:resume');
    let second: Tail | undefined;
    try {
      await eventually(
        () => first.events.some((e) => e.event === 'subscribed'),
        5000,
        'subscribed',
      );
      const N = 40;
      let published = 0;
      const publisher = (async () => {
        for (; published < N; published++) assert.equal((await publish(published)).status, 200);
      })();
      await first.waitFor(10, 5000, 'ten messages before the drop');
      await first.close();
      const before = first.events.filter((e) => e.event === 'message');
      const lastId = before.at(-1)?.id ?? '';
      assert.match(lastId, /^.+:\d+$/, 'every message carries an SSE id');
      assert.ok(published < N, 'the drop came while messages were still being published');
      await publisher;
      second = await openTail(a, 'room:resume', { 'last-event-id': lastId });
      await second.waitFor(N - before.length, 5000, 'the rest after the resume');
      const sub = second.events.find((e) => e.event === 'subscribed');
      assert.equal(sub?.data['recovered'], true, JSON.stringify(sub));
      const after = second.events.filter((e) => e.event === 'message');
      const all = [...before, ...after].map((e) => (e.data['data'] as { i: number }).i);
      assert.deepEqual(
        all,
        Array.from({ length: N }, (_, i) => i),
        'every message once, in order',
      );
      for (const e of after)
        assert.equal(e.id, `${String(e.data['epoch'])}:${String(e.data['offset'])}`);
    } finally {
      await first.close();
      await second?.close();
    }
    const bad = await fetch(`${a.url}/v1/admin/tail/room:resume`, {
      headers: { ...bearer, 'last-event-id': 'not-an-id' },
    });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: string }).error, /Last-Event-ID/);
  });

  test('presence members of a channel on the other node', async () => {
    const c = await TestClient.open(`${b.wsUrl}?token=${await mint('pam', { cap: PCAP })}`);
    try {
      const r = await c.request({
        action: 'enter',
        channel: 'team:p',
        data: { mood: 'ok' },
        id: 'e1',
      });
      assert.equal(r['error'], undefined, JSON.stringify(r));
      await eventually(
        async () => {
          const p = await call(a, 'GET', '/v1/admin/channels/team:p/presence', { headers: bearer });
          const members = p.body['members'] as { clientId: string; data: unknown }[];
          return members.length === 1 && members[0]?.clientId === 'pam';
        },
        2000,
        'the member listed',
      );
    } finally {
      c.ws.close();
    }
  });

  test('admin publish reaches an SDK subscriber on the other node', async () => {
    const client = new Switchboard({
      endpoints: [b.wsUrl],
      WebSocket,
      token: await mint('sdk', { cap: CAP }),
    });
    try {
      const ch = client.channels.get('room:sdk');
      let resolve!: (v: unknown) => void;
      const got = new Promise((r) => (resolve = r));
      await ch.subscribe((m) => resolve(m.data));
      const r = await call(a, 'POST', '/v1/admin/publish', {
        headers: bearer,
        body: { channel: 'room:sdk', data: { hello: 'admin' } },
      });
      assert.equal(r.status, 200);
      assert.equal((r.body['messages'] as { offset: number }[])[0]?.offset, 1);
      assert.deepEqual(await got, { hello: 'admin' });
    } finally {
      client.close();
    }
  });

  test('revoking a user closes its connections on both nodes', async () => {
    const token = await mint('eve', { cap: CAP, iat: Math.floor(Date.now() / 1000) - 5 });
    const [ca, cb] = await Promise.all([
      TestClient.open(`${a.wsUrl}?token=${token}`),
      TestClient.open(`${b.wsUrl}?token=${token}`),
    ]);
    await Promise.all([ca.subscribe('room:eve'), cb.subscribe('room:eve')]);
    const r = await call(b, 'POST', '/v1/admin/revoke', { headers: bearer, body: { user: 'eve' } });
    assert.equal(r.status, 200);
    await eventually(
      () => ca.closeCode !== undefined && cb.closeCode !== undefined,
      2000,
      'both connections closed',
    );
    assert.equal(ca.closeCode, 3500);
    assert.equal(cb.closeCode, 3500);
  });
  test('a frozen node is reported missing; the overview still answers in time', async () => {
    b.child.kill('SIGSTOP');
    try {
      const t0 = Date.now();
      const r = await call(a, 'GET', '/v1/admin/overview', { headers: bearer });
      const ms = Date.now() - t0;
      assert.equal(r.status, 200);
      assert.deepEqual(
        (r.body['nodes'] as { id: string }[]).map((n) => n.id),
        ['node-a'],
      );
      assert.equal(r.body['missing'], 1);
      assert.ok(ms < 3000, `answered after ${ms} ms`);
    } finally {
      b.child.kill('SIGCONT');
    }
    await eventually(
      async () => {
        const r = await call(a, 'GET', '/v1/admin/overview', { headers: bearer });
        return (r.body['nodes'] as unknown[]).length === 2;
      },
      5000,
      'node-b back in the overview',
    );
  });
});
