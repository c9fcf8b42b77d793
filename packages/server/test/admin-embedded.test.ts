/**
 * When the admin API is on, and how a single embedded node guards it (#13.4): on and open by
 * default only in embedded mode without auth (with a loud log line), off with auth unless asked
 * for, a password hash, the in-memory lockout, and a bad setting refused at start. Real server
 * processes over HTTP.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, describe, test } from 'node:test';
import { hashPassword } from '../src/admin/credentials.js';
import { CLI, startNodeProcess, type NodeProcess } from './helpers.js';
import { SECRET } from './security-kit.js';

/** The parts of the answers this file reads. */
interface Answer {
  readonly code?: number;
  readonly csrf?: string;
  readonly nodes?: { readonly broker: string }[];
  readonly links?: { readonly admin: string | null };
  readonly messages?: { readonly message: unknown }[];
  readonly last?: { readonly offset: number } | null;
}

async function get(node: NodeProcess, path: string): Promise<{ status: number; body: Answer }> {
  const res = await fetch(node.url + path);
  return { status: res.status, body: (await res.json()) as Answer };
}

async function post(
  node: NodeProcess,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: Answer }> {
  const res = await fetch(node.url + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Answer };
}

describe('admin API on one embedded node', () => {
  const nodes: NodeProcess[] = [];
  after(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
  });
  const start = async (args: string[]): Promise<NodeProcess> => {
    const n = await startNodeProcess(args);
    nodes.push(n);
    return n;
  };

  test('embedded without auth: on and open, with a warning in the log', async () => {
    const n = await start([]);
    const warn = n
      .output()
      .split('\n')
      .filter((l) => l.includes('ADMIN API OPEN'))
      .map((l) => JSON.parse(l) as { level: number });
    assert.equal(warn.length, 1, n.output());
    assert.equal(warn[0]?.level, 40);
    assert.deepEqual((await get(n, '/v1/admin/session')).body, {
      authenticated: true,
      via: 'open',
      login: false,
    });
    const ov = await get(n, '/v1/admin/overview');
    assert.equal(ov.status, 200);
    assert.equal(ov.body.nodes?.length, 1);
    assert.equal(ov.body.nodes?.[0]?.broker, 'memory');
    assert.equal((await get(n, '/v1/info')).body.links?.admin, '/admin');
    const login = await post(n, '/v1/admin/login', { password: 'whatever-it-is' });
    assert.equal(login.status, 404);
    assert.equal(login.body.code, 195);
    const pub = await post(n, '/v1/admin/publish', { channel: 'demo', data: { a: 1 } });
    assert.equal(pub.status, 200);
    const bad = await post(n, '/v1/admin/publish', { channel: 'no spaces', data: 1 });
    assert.equal(bad.status, 400);
    assert.equal(typeof bad.body.code, 'number');
    const h = await get(n, '/v1/admin/channels/demo/history');
    assert.deepEqual(
      h.body.messages?.map((m) => m.message),
      [{ a: 1 }],
    );
    const one = await get(n, '/v1/admin/channels/demo');
    assert.equal(one.body.last?.offset, 1);
  });

  test('admin=false turns it off; with auth configured it is off unless asked for', async () => {
    const off = await start(['--admin', 'false']);
    const r = await get(off, '/v1/admin/overview');
    assert.equal(r.status, 404);
    assert.equal(r.body.code, 115);
    assert.equal((await get(off, '/v1/info')).body.links?.admin, null);
    const authed = await start(['--jwt-secret', SECRET]);
    assert.equal((await get(authed, '/v1/admin/overview')).status, 404);
    assert.ok(!authed.output().includes('ADMIN API OPEN'));
  });

  test('a password hash: 401 without it, a session with it, lockout after 5 failures', async () => {
    const password = 'a long enough admin password';
    const n = await start(['--admin', '--admin-password-hash', await hashPassword(password)]);
    assert.ok(!n.output().includes('ADMIN API OPEN'));
    const denied = await get(n, '/v1/admin/overview');
    assert.equal(denied.status, 401);
    assert.equal(denied.body.code, 190);
    const ok = await post(n, '/v1/admin/login', { password });
    assert.equal(ok.status, 200);
    const cookie = (ok.headers.get('set-cookie') ?? '').split(';')[0] as string;
    assert.ok(!(ok.headers.get('set-cookie') ?? '').includes('Secure'));
    // Behind a TLS proxy the cookie is Secure.
    const tls = await post(n, '/v1/admin/login', { password }, { 'x-forwarded-proto': 'https' });
    assert.match(tls.headers.get('set-cookie') ?? '', /; Secure$/);
    // A CSRF-less write with the cookie is refused, with the token it goes through.
    const body = { channel: 'x', data: 1 };
    assert.equal((await post(n, '/v1/admin/publish', body, { cookie })).body.code, 194);
    const csrf = ok.body.csrf ?? '';
    assert.equal(
      (await post(n, '/v1/admin/publish', body, { cookie, 'x-csrf-token': csrf })).status,
      200,
    );
    const out = await post(n, '/v1/admin/logout', {}, { cookie });
    assert.equal(out.status, 200);
    assert.equal((await get(n, '/v1/admin/session')).body.code, undefined);
    const gone = await fetch(`${n.url}/v1/admin/overview`, { headers: { cookie } });
    assert.equal(gone.status, 401);
    const codes: (number | undefined)[] = [];
    for (let i = 0; i < 5; i++)
      codes.push((await post(n, '/v1/admin/login', { password: `nope ${i}` })).body.code);
    assert.deepEqual(codes, [192, 192, 192, 192, 193]);
    const locked = await post(n, '/v1/admin/login', { password });
    assert.equal(locked.status, 429);
    assert.ok(Number(locked.headers.get('retry-after')) > 800);
  });

  test('parallel guesses are counted before they are checked: at most 5 per window', async () => {
    const password = 'another long admin password';
    const n = await start(['--admin', '--admin-password', password]);
    const replies = await Promise.all(
      Array.from({ length: 12 }, (_, i) => post(n, '/v1/admin/login', { password: `guess ${i}` })),
    );
    const codes = replies.map((r) => r.body.code);
    assert.equal(codes.filter((c) => c === 192).length, 4, JSON.stringify(codes));
    assert.equal(codes.filter((c) => c === 193).length, 8, JSON.stringify(codes));
    assert.equal((await post(n, '/v1/admin/login', { password })).status, 429);
  });

  test('behind a trusted proxy the lockout counts per X-Forwarded-For client, not per proxy', async () => {
    const password = 'a proxied admin password';
    // The test's requests come from 127.0.0.1: that is the proxy here.
    const n = await start([
      '--admin',
      '--admin-password',
      password,
      '--trust-proxy',
      '127.0.0.0/8',
    ]);
    const from = (xff: string): Record<string, string> => ({ 'x-forwarded-for': xff });
    const codes: (number | undefined)[] = [];
    for (let i = 0; i < 5; i++)
      codes.push(
        (await post(n, '/v1/admin/login', { password: `no ${i}` }, from('203.0.113.7'))).body.code,
      );
    assert.deepEqual(codes, [192, 192, 192, 192, 193]);
    assert.equal((await post(n, '/v1/admin/login', { password }, from('203.0.113.7'))).status, 429);
    // Another client through the same proxy is not locked out by the first one's guesses.
    assert.equal((await post(n, '/v1/admin/login', { password }, from('203.0.113.8'))).status, 200);
    // The proxy appends the peer it saw: what the client wrote on the left is not believed.
    const spoof = await post(n, '/v1/admin/login', { password }, from('203.0.113.9, 203.0.113.7'));
    assert.equal(spoof.status, 429);
    // A chain of our own proxies is walked through to the first hop that is not one.
    const chain = await post(n, '/v1/admin/login', { password }, from('203.0.113.7, 127.0.0.5'));
    assert.equal(chain.status, 429);
  });

  test('without trustProxy X-Forwarded-For is ignored: the peer is locked out', async () => {
    const password = 'an unproxied admin password';
    const n = await start(['--admin', '--admin-password', password]);
    for (let i = 0; i < 5; i++)
      await post(
        n,
        '/v1/admin/login',
        { password: `no ${i}` },
        { 'x-forwarded-for': `198.51.100.${i}` },
      );
    const r = await post(
      n,
      '/v1/admin/login',
      { password },
      { 'x-forwarded-for': '198.51.100.99' },
    );
    assert.equal(r.status, 429);
  });

  test('an unusable admin setting is refused at start, naming the key', () => {
    for (const [flag, value] of [
      ['--admin-password-hash', 'md5$abc'],
      ['--admin-password', 'short'],
      ['--trust-proxy', '10.0.0.0/33'],
    ] as const) {
      const r = spawnSync(process.execPath, [CLI, 'serve', '--port', '0', '--admin', flag, value], {
        encoding: 'utf8',
        timeout: 10_000,
      });
      assert.equal(r.status, 2, r.stderr + r.stdout);
      assert.match(
        r.stderr + r.stdout,
        {
          '--admin-password': /adminPassword/,
          '--admin-password-hash': /adminPasswordHash/,
          '--trust-proxy': /trustProxy/,
        }[flag],
      );
    }
  });
});
