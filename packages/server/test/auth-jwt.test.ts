/**
 * The JWT attack table (issue 5; reliability S2, S3): only valid tokens are accepted, and each is
 * tried over all three ways in — the first frame, `?token=` on the upgrade, and REST Bearer. Keys
 * come from a secret, PEM, a JWK file and a JWKS URL (served here, refetched on an unknown kid,
 * never fetched from a URL found in a token). The server never writes a token to its logs.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server as HttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it, mock } from 'node:test';
import {
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type CryptoKey,
  type JWK,
  type JWTPayload,
} from 'jose';
import { DisconnectCode, ErrorCode } from '@switchboard/protocol';
import { SseTestClient } from './http-clients.js';
import {
  eventually,
  startLoggedTestServer,
  startNodeProcess,
  startTestServer,
  TestClient,
} from './helpers.js';
import { b64url, http, mint, SECRET, SECRET_KEY } from './security-kit.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;

const CAP = { 'chat:*': ['subscribe', 'publish', 'history'] };

interface Outcome {
  readonly frame: boolean;
  readonly query: boolean;
  readonly rest: boolean;
}

/** `{"action":"connect"}` as the first frame: reply ok, or error 101 then close 3500. */
async function viaFrame(server: Server, token: string): Promise<boolean> {
  const c = await TestClient.open(server.wsUrl);
  try {
    c.send({ action: 'connect', token, id: 'auth' });
    await c.until((fs) => fs.some((f) => f['reply'] === 'auth'));
    const r = c.frames.find((f) => f['reply'] === 'auth') ?? {};
    if (r['ok'] === true) {
      assert.equal(typeof r['client'], 'string');
      return true;
    }
    assert.equal(r['code'], ErrorCode.UNAUTHORIZED, JSON.stringify(r));
    assert.equal(await c.closed(), DisconnectCode.UNAUTHORIZED);
    return false;
  } finally {
    c.close();
  }
}

/** `?token=` on the upgrade: frames wait for the verdict; a ping answered means accepted. */
async function viaQuery(server: Server, token: string): Promise<boolean> {
  const c = new TestClient(`${server.wsUrl}?token=${encodeURIComponent(token)}`);
  try {
    await once(c.ws, 'open');
    c.send({ action: 'ping', id: 'p' });
    await c.until(
      (fs) => fs.some((f) => f['reply'] === 'p') || c.closeCode !== undefined,
      5000,
      'ping reply or close',
    );
    if (c.frames.some((f) => f['reply'] === 'p' && f['ok'] === true)) return true;
    assert.equal(c.closeCode, DisconnectCode.UNAUTHORIZED);
    assert.equal(c.frames[0]?.['code'], ErrorCode.UNAUTHORIZED);
    return false;
  } finally {
    c.close();
  }
}

/** REST Bearer on a history read the valid tokens' capabilities allow: 200, or 401. */
async function viaRest(server: Server, token: string): Promise<boolean> {
  const r = await http(server.port, 'GET', '/v1/channels/chat:x/messages', {
    Authorization: `Bearer ${token}`,
  });
  if (r.status === 200) return true;
  assert.equal(r.status, 401, r.body);
  assert.equal((JSON.parse(r.body) as Record<string, unknown>)['code'], ErrorCode.UNAUTHORIZED);
  return false;
}

async function tryAll(server: Server, token: string): Promise<Outcome> {
  const [frame, query, rest] = await Promise.all([
    viaFrame(server, token),
    viaQuery(server, token),
    viaRest(server, token),
  ]);
  return { frame, query, rest };
}

async function expectOutcome(server: Server, token: string, accepted: boolean): Promise<void> {
  assert.deepEqual(await tryAll(server, token), {
    frame: accepted,
    query: accepted,
    rest: accepted,
  });
}

function parts(token: string): [string, string, string] {
  return token.split('.') as [string, string, string];
}

function decodePart(part: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(part, 'base64url').toString()) as Record<string, unknown>;
}

/** A token whose header or payload was changed after signing; the signature is kept. */
function tamper(
  token: string,
  change: { header?: Record<string, unknown>; payload?: Record<string, unknown> },
): string {
  const [h, p, s] = parts(token);
  const header = change.header ? b64url(JSON.stringify({ ...decodePart(h), ...change.header })) : h;
  const payload = change.payload
    ? b64url(JSON.stringify({ ...decodePart(p), ...change.payload }))
    : p;
  return `${header}.${payload}.${s}`;
}

/** An unsigned token: `alg` as given, no signature (or the one given). */
function unsigned(alg: string, payload: JWTPayload, signature = ''): string {
  return `${b64url(JSON.stringify({ alg, typ: 'JWT' }))}.${b64url(JSON.stringify(payload))}.${signature}`;
}

const now = (): number => Math.floor(Date.now() / 1000);

/** HS256 by hand, for headers jose refuses to produce. */
function hs256(header: Record<string, unknown>, payload: JWTPayload): string {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}

describe('JWT attack table (HS secret; iss and aud configured)', () => {
  const ISS = 'https://auth.example';
  const AUD = 'switchboard';
  let server: Server;
  const good = (extra: JWTPayload = {}): JWTPayload => ({ iss: ISS, aud: AUD, cap: CAP, ...extra });

  before(async () => {
    server = await startTestServer({ jwtSecret: SECRET, jwtIssuer: ISS, jwtAudience: AUD });
  });
  after(() => server.close());

  const table: [string, () => Promise<string> | string, boolean][] = [
    ['a valid HS256 token', () => mint('alice', good()), true],
    ['a valid HS384 token', () => mint('alice', good(), { alg: 'HS384' }), true],
    ['a valid HS512 token', () => mint('alice', good(), { alg: 'HS512' }), true],
    [
      'a valid token with an aud list holding ours',
      () => mint('alice', good({ aud: ['other', AUD] })),
      true,
    ],
    [
      'alg: none, no signature',
      () => unsigned('none', { sub: 'alice', iat: now(), exp: now() + 60, ...good() }),
      false,
    ],
    [
      'alg: none with a signature part',
      () => unsigned('none', { sub: 'alice', iat: now(), exp: now() + 60, ...good() }, 'c2ln'),
      false,
    ],
    [
      'alg: None',
      () => unsigned('None', { sub: 'alice', iat: now(), exp: now() + 60, ...good() }),
      false,
    ],
    [
      'a valid token with its alg rewritten to none and the signature dropped',
      async () => {
        const [, p] = parts(await mint('alice', good()));
        return `${b64url('{"alg":"none"}')}.${p}.`;
      },
      false,
    ],
    [
      'a tampered payload (sub changed)',
      async () => tamper(await mint('alice', good()), { payload: { sub: 'admin' } }),
      false,
    ],
    [
      'a tampered payload (capabilities widened)',
      async () =>
        tamper(await mint('alice', good()), {
          payload: { cap: { '*': ['subscribe', 'publish', 'presence', 'history'] } },
        }),
      false,
    ],
    [
      'a tampered payload (exp extended)',
      async () =>
        tamper(await mint('alice', good(), { expIn: -120 }), { payload: { exp: now() + 3600 } }),
      false,
    ],
    [
      'a tampered header (alg HS256 → HS512)',
      async () => tamper(await mint('alice', good()), { header: { alg: 'HS512' } }),
      false,
    ],
    [
      'an empty signature',
      async () => {
        const [h, p] = parts(await mint('alice', good()));
        return `${h}.${p}.`;
      },
      false,
    ],
    [
      'signed with another secret',
      () =>
        mint('alice', good(), {
          key: new TextEncoder().encode('another-secret-of-at-least-32-bytes-long!!'),
        }),
      false,
    ],
    ['expired 60 s ago', () => mint('alice', good({ exp: now() - 60 })), false],
    ['expired an hour ago', () => mint('alice', good({ exp: now() - 3600 })), false],
    ['nbf 120 s in the future', () => mint('alice', good({ nbf: now() + 120 })), false],
    ['wrong aud', () => mint('alice', good({ aud: 'someone-else' })), false],
    ['no aud', () => mint('alice', { iss: ISS, cap: CAP }), false],
    ['wrong iss', () => mint('alice', good({ iss: 'https://evil.example' })), false],
    ['no iss', () => mint('alice', { aud: AUD, cap: CAP }), false],
    ['no exp', () => mint('alice', good(), { expIn: null }), false],
    ['no sub', () => mint('', good()), false],
    ['a numeric sub', () => mint('alice', good({ sub: 42 as unknown as string })), false],
    ['cap is a string', () => mint('alice', good({ cap: 'chat:*' })), false],
    ['cap is a list', () => mint('alice', good({ cap: ['chat:*'] })), false],
    [
      'cap grants an unknown permission',
      () => mint('alice', good({ cap: { 'chat:*': ['admin'] } })),
      false,
    ],
    [
      'cap permissions not a list',
      () => mint('alice', good({ cap: { 'chat:*': 'subscribe' } })),
      false,
    ],
    [
      'cap with * inside a pattern',
      () => mint('alice', good({ cap: { 'ch*at': ['subscribe'] } })),
      false,
    ],
    ['cap with an empty pattern', () => mint('alice', good({ cap: { '': ['subscribe'] } })), false],
    [
      // jose will not sign this, so it is signed by hand with the right secret.
      'a critical header the server does not understand',
      () =>
        hs256(
          { alg: 'HS256', crit: ['x-unknown'], 'x-unknown': 1 },
          { sub: 'alice', iat: now(), exp: now() + 60, ...good() },
        ),
      false,
    ],
    [
      'a hand-signed valid token (control for the one above)',
      () => hs256({ alg: 'HS256' }, { sub: 'alice', iat: now(), exp: now() + 60, ...good() }),
      true,
    ],
    [
      // Revocations are kept maxTokenLifetimeMs: nothing would bound this token's life.
      'no iat',
      () => hs256({ alg: 'HS256' }, { sub: 'alice', exp: now() + 60, ...good() }),
      false,
    ],
    [
      'exp - iat longer than maxTokenLifetimeMs (24 h by default)',
      () => mint('alice', good({ exp: now() + 25 * 3600 })),
      false,
    ],
    ['not a JWT at all', () => 'not-a-token', false],
    ['three empty parts', () => '..', false],
    ['garbage in three parts', () => 'a.b.c', false],
  ];

  for (const [name, make, accepted] of table) {
    it(`${name}: ${accepted ? 'accepted' : 'refused'} over the first frame, ?token= and REST Bearer`, async () => {
      await expectOutcome(server, await make(), accepted);
    });
  }

  it('the accepted sub becomes the client id and expiresAt is exp in ms', async () => {
    const exp = now() + 600;
    const c = await TestClient.open(server.wsUrl);
    const r = await c.request({
      action: 'connect',
      token: await mint('alice@example', good({ exp })),
      id: 1,
    });
    assert.deepEqual(r, { reply: 1, ok: true, client: 'alice@example', expiresAt: exp * 1000 });
    c.close();
  });
});

describe('clock leeway, to the second', () => {
  /**
   * Tokens are minted at the start of a wall-clock second S and tried at once; the attempt counts
   * only if it finished in the same second, so "exp = S - 29" and "exp = S - 31" are exact whatever
   * the scheduling (the server is in this process and reads the same clock).
   */
  async function inOneSecond(fn: (s: number) => Promise<void>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 2));
      const s = now();
      await fn(s);
      if (now() === s) return;
      assert.ok(attempt < 4, 'could not fit the checks into one second');
    }
  }

  for (const leewayMs of [30_000, 10_000]) {
    const L = leewayMs / 1000;
    it(`leeway ${L} s: exp ${L - 1} s ago accepted, ${L} s and ${L + 1} s ago refused; nbf and iat ${L} s ahead accepted, ${L + 1} s refused`, async () => {
      const server = await startTestServer({ jwtSecret: SECRET, jwtLeewayMs: leewayMs });
      try {
        await inOneSecond(async (s) => {
          const cases: [JWTPayload, boolean][] = [
            [{ exp: s - (L - 1) }, true],
            [{ exp: s - L }, false],
            [{ exp: s - (L + 1) }, false],
            [{ exp: s + 60, nbf: s + L }, true],
            [{ exp: s + 60, nbf: s + L + 1 }, false],
            // iat in the future (a token that would escape "revoke tokens issued before now")
            [{ exp: s + 60, iat: s + L }, true],
            [{ exp: s + 60, iat: s + L + 1 }, false],
          ];
          const tokens = await Promise.all(cases.map(([c]) => mint('alice', { cap: CAP, ...c })));
          const outcomes = await Promise.all(tokens.map((t) => tryAll(server, t)));
          assert.deepEqual(
            outcomes,
            cases.map(([, ok]) => ({ frame: ok, query: ok, rest: ok })),
          );
        });
      } finally {
        await server.close();
      }
    });
  }

  it('a token accepted only thanks to the leeway is asked to refresh at once, and closed with 3005 when the leeway runs out', async () => {
    const server = await startTestServer({ jwtSecret: SECRET, jwtLeewayMs: 2000 });
    const clients: TestClient[] = [];
    try {
      // At the start of a second S, exp = S - 1 is inside the 2 s leeway (S - 2 is not: above):
      // the connection lives until exp + leeway = S + 1, and may refresh meanwhile.
      await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 2));
      const s = now();
      const exp = s - 1;
      const deadline = (exp + 2) * 1000;
      for (let i = 0; i < 2; i++) {
        const c = await TestClient.open(server.wsUrl);
        clients.push(c);
        const r = await c.request({
          action: 'connect',
          token: await mint('alice', { cap: CAP, exp }),
          id: 'auth',
        });
        assert.deepEqual(r, { reply: 'auth', ok: true, client: 'alice', expiresAt: exp * 1000 });
        await c.until((fs) => fs.some((f) => f['event'] === 'refresh'), 500, 'a refresh push');
        assert.ok(Date.now() < deadline - 500, 'the refresh push came at once');
      }
      const [lapsed, refreshed] = clients as [TestClient, TestClient];
      const fresh = await refreshed.request({
        action: 'refresh',
        token: await mint('alice', { cap: CAP, exp: s + 60 }),
        id: 'r',
      });
      assert.equal(fresh['ok'], true, JSON.stringify(fresh));
      assert.equal(await lapsed.closed(3000), DisconnectCode.TOKEN_EXPIRED);
      const late = Date.now() - deadline;
      assert.ok(late >= -20 && late <= 300, `closed ${late} ms after exp + leeway`);
      // Both connections' deadlines were the same; the node ran them in one timers phase, so
      // by the time this ping is answered the refreshed one's old deadline has passed too.
      assert.equal((await refreshed.request({ action: 'ping', id: 'p' }))['ok'], true);
      assert.equal(refreshed.closeCode, undefined);
    } finally {
      for (const c of clients) c.close();
      await server.close();
    }
  });

  it('jwtRequireExp false accepts a token without exp', async () => {
    const server = await startTestServer({ jwtSecret: SECRET, jwtRequireExp: false });
    try {
      await expectOutcome(server, await mint('alice', { cap: CAP }, { expIn: null }), true);
    } finally {
      await server.close();
    }
  });
});

describe('algorithm allowlist', () => {
  it('jwtAlgorithms [HS256]: HS384 and HS512 tokens with the right secret are refused', async () => {
    const server = await startTestServer({ jwtSecret: SECRET, jwtAlgorithms: ['HS256'] });
    try {
      await expectOutcome(server, await mint('alice', { cap: CAP }), true);
      await expectOutcome(server, await mint('alice', { cap: CAP }, { alg: 'HS384' }), false);
      await expectOutcome(server, await mint('alice', { cap: CAP }, { alg: 'HS512' }), false);
    } finally {
      await server.close();
    }
  });

  it('refuses to start with HS* next to a public key, or a secret under 32 bytes', async () => {
    const { publicKey } = await generateKeyPair('RS256', { extractable: true });
    const pem = await exportSPKI(publicKey);
    await assert.rejects(
      startTestServer({ jwtPublicKey: pem, jwtAlgorithms: ['RS256', 'HS256'] }),
      /HS\* algorithms cannot be used with a public key/,
    );
    await assert.rejects(startTestServer({ jwtSecret: 'short' }), /at least 32 bytes/);
    await assert.rejects(
      startTestServer({ jwtSecret: SECRET, jwtAlgorithms: ['RS256'] }),
      /only works with HS256/,
    );
  });
});

describe('asymmetric keys from PEM', () => {
  let rsa: { publicKey: CryptoKey; privateKey: CryptoKey };
  let pem: string;
  let server: Server;

  before(async () => {
    rsa = await generateKeyPair('RS256', { extractable: true });
    pem = await exportSPKI(rsa.publicKey);
    server = await startTestServer({ jwtPublicKey: pem });
  });
  after(() => server.close());

  it('a valid RS256 token is accepted', async () => {
    await expectOutcome(
      server,
      await mint('alice', { cap: CAP }, { alg: 'RS256', key: rsa.privateKey }),
      true,
    );
  });

  it('HS256 signed with the RSA public key (PEM text as the HMAC secret) is refused', async () => {
    await expectOutcome(
      server,
      await mint('alice', { cap: CAP }, { alg: 'HS256', key: new TextEncoder().encode(pem) }),
      false,
    );
    // ...and with the key's DER bytes, and with the PEM without its final newline.
    const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    await expectOutcome(
      server,
      await mint('alice', { cap: CAP }, { alg: 'HS256', key: new Uint8Array(der) }),
      false,
    );
    await expectOutcome(
      server,
      await mint(
        'alice',
        { cap: CAP },
        { alg: 'HS256', key: new TextEncoder().encode(pem.trim()) },
      ),
      false,
    );
  });

  it('RS256 signed by another key, an embedded jwk header, PS256 with the same key, a tampered payload: refused', async () => {
    const other = await generateKeyPair('RS256', { extractable: true });
    await expectOutcome(
      server,
      await mint('alice', { cap: CAP }, { alg: 'RS256', key: other.privateKey }),
      false,
    );
    await expectOutcome(
      server,
      await mint(
        'alice',
        { cap: CAP },
        { alg: 'RS256', key: other.privateKey, header: { jwk: await exportJWK(other.publicKey) } },
      ),
      false,
    );
    const ps = await generateKeyPair('PS256', { extractable: true });
    await expectOutcome(
      server,
      await mint('alice', { cap: CAP }, { alg: 'PS256', key: ps.privateKey }),
      false,
    );
    const valid = await mint('alice', { cap: CAP }, { alg: 'RS256', key: rsa.privateKey });
    await expectOutcome(server, tamper(valid, { payload: { sub: 'root' } }), false);
    await expectOutcome(server, unsigned('none', { sub: 'alice', exp: now() + 60 }), false);
  });

  for (const [alg, options] of [
    ['ES256', {}],
    ['EdDSA', { crv: 'Ed25519' }],
  ] as const) {
    it(`a valid ${alg} token is accepted; other algorithms and keys are refused`, async () => {
      const keys = await generateKeyPair(alg, { extractable: true, ...options });
      const s = await startTestServer({ jwtPublicKey: await exportSPKI(keys.publicKey) });
      try {
        await expectOutcome(
          s,
          await mint('alice', { cap: CAP }, { alg, key: keys.privateKey }),
          true,
        );
        const stranger = await generateKeyPair(alg, { extractable: true, ...options });
        await expectOutcome(
          s,
          await mint('alice', { cap: CAP }, { alg, key: stranger.privateKey }),
          false,
        );
        await expectOutcome(
          s,
          await mint('alice', { cap: CAP }, { alg: 'RS256', key: rsa.privateKey }),
          false,
        );
        await expectOutcome(
          s,
          await mint('alice', { cap: CAP }, { alg: 'HS256', key: SECRET_KEY }),
          false,
        );
      } finally {
        await s.close();
      }
    });
  }
});

describe('keys from a JWK file', () => {
  const dir = mkdtempSync(join(tmpdir(), 'switchboard-jwk-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('a single JWK (ES256): its tokens are accepted, others refused', async () => {
    const keys = await generateKeyPair('ES256', { extractable: true });
    const file = join(dir, 'key.json');
    writeFileSync(file, JSON.stringify({ ...(await exportJWK(keys.publicKey)), alg: 'ES256' }));
    const s = await startTestServer({ jwtKeyFile: file });
    try {
      await expectOutcome(
        s,
        await mint('alice', { cap: CAP }, { alg: 'ES256', key: keys.privateKey }),
        true,
      );
      const stranger = await generateKeyPair('ES256', { extractable: true });
      await expectOutcome(
        s,
        await mint('alice', { cap: CAP }, { alg: 'ES256', key: stranger.privateKey }),
        false,
      );
    } finally {
      await s.close();
    }
  });

  it('a JWK Set (RS256 and EdDSA, by kid): both accepted, an unknown kid refused', async () => {
    const a = await generateKeyPair('RS256', { extractable: true });
    const b = await generateKeyPair('EdDSA', { extractable: true, crv: 'Ed25519' });
    const file = join(dir, 'set.json');
    writeFileSync(
      file,
      JSON.stringify({
        keys: [
          { ...(await exportJWK(a.publicKey)), kid: 'a', alg: 'RS256' },
          { ...(await exportJWK(b.publicKey)), kid: 'b', alg: 'EdDSA' },
        ],
      }),
    );
    const s = await startTestServer({ jwtKeyFile: file });
    try {
      const opt = (alg: string, key: CryptoKey, kid: string) => ({ alg, key, header: { kid } });
      await expectOutcome(
        s,
        await mint('alice', { cap: CAP }, opt('RS256', a.privateKey, 'a')),
        true,
      );
      await expectOutcome(
        s,
        await mint('alice', { cap: CAP }, opt('EdDSA', b.privateKey, 'b')),
        true,
      );
      await expectOutcome(
        s,
        await mint('alice', { cap: CAP }, opt('RS256', a.privateKey, 'b')),
        false,
      );
      await expectOutcome(
        s,
        await mint('alice', { cap: CAP }, opt('RS256', a.privateKey, 'zz')),
        false,
      );
    } finally {
      await s.close();
    }
  });
});

describe('keys from a JWKS URL', () => {
  /** The identity provider's JWKS endpoint, and an attacker's; both record every request. */
  let idp: HttpServer;
  let evil: HttpServer;
  const idpRequests: string[] = [];
  const evilRequests: string[] = [];
  let jwks: { keys: JWK[] } = { keys: [] };
  let idpUrl = '';
  let evilUrl = '';
  let server: Server;
  let k1: { publicKey: CryptoKey; privateKey: CryptoKey };
  let k2: { publicKey: CryptoKey; privateKey: CryptoKey };
  let attacker: { publicKey: CryptoKey; privateKey: CryptoKey };

  const listen = async (s: HttpServer): Promise<string> => {
    s.listen(0, '127.0.0.1');
    await once(s, 'listening');
    return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  };

  before(async () => {
    k1 = await generateKeyPair('RS256', { extractable: true });
    k2 = await generateKeyPair('ES256', { extractable: true });
    attacker = await generateKeyPair('RS256', { extractable: true });
    const attackerJwks = {
      keys: [{ ...(await exportJWK(attacker.publicKey)), kid: 'k1', alg: 'RS256' }],
    };
    jwks = { keys: [{ ...(await exportJWK(k1.publicKey)), kid: 'k1', alg: 'RS256' }] };
    idp = createServer((req, res) => {
      idpRequests.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks));
    });
    evil = createServer((req, res) => {
      evilRequests.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(attackerJwks));
    });
    idpUrl = await listen(idp);
    evilUrl = await listen(evil);
    server = await startTestServer({ jwtJwksUrl: `${idpUrl}/.well-known/jwks.json` });
  });
  after(async () => {
    mock.timers.reset();
    await server.close();
    idp.close();
    evil.close();
  });

  it('accepts a token signed by a published key', async () => {
    await expectOutcome(
      server,
      await mint(
        'alice',
        { cap: CAP },
        { alg: 'RS256', key: k1.privateKey, header: { kid: 'k1' } },
      ),
      true,
    );
    assert.deepEqual(idpRequests, ['/.well-known/jwks.json']);
  });

  it('never fetches a key from a URL in the token (jku, x5u), nor follows a kid path', async () => {
    const before = idpRequests.length;
    const forged = (header: Record<string, unknown>): Promise<string> =>
      mint('alice', { cap: CAP }, { alg: 'RS256', key: attacker.privateKey, header });
    // Same kid as the real key, attacker's key at jku: the signature check uses the real key.
    await expectOutcome(server, await forged({ kid: 'k1', jku: `${evilUrl}/jwks.json` }), false);
    await expectOutcome(server, await forged({ kid: 'k1', x5u: `${evilUrl}/cert.pem` }), false);
    await expectOutcome(
      server,
      await forged({ kid: 'k1', jwk: await exportJWK(attacker.publicKey) }),
      false,
    );
    await expectOutcome(server, await forged({ kid: '../../../dev/null' }), false);
    assert.deepEqual(evilRequests, [], 'the attacker URL was fetched');
    // Unknown kids cost at most a refetch of the configured URL, rate limited by a cooldown.
    assert.ok(
      idpRequests.slice(before).every((u) => u === '/.well-known/jwks.json'),
      idpRequests.join(','),
    );
    assert.ok(idpRequests.length - before <= 1, `${idpRequests.length - before} refetches`);
  });

  it('refetches the JWKS on an unknown kid (after the 30 s cooldown) and accepts the new key', async () => {
    const token2 = (): Promise<string> =>
      mint('alice', { cap: CAP }, { alg: 'ES256', key: k2.privateKey, header: { kid: 'k2' } });
    // Not yet published: refused.
    await expectOutcome(server, await token2(), false);
    // The provider rotates: k2 is published next to k1.
    jwks = {
      keys: [...jwks.keys, { ...(await exportJWK(k2.publicKey)), kid: 'k2', alg: 'ES256' }],
    };
    const fetches = idpRequests.length;
    // jose refetches on an unknown kid at most once per 30 s (so random kids cannot make the
    // server hammer the provider). Move the clock past that instead of waiting: Date only, so
    // timers and sockets run as usual; tokens are minted on the same moved clock.
    mock.timers.enable({ apis: ['Date'], now: Date.now() });
    try {
      mock.timers.tick(31_000);
      await expectOutcome(server, await token2(), true);
      assert.equal(idpRequests.length, fetches + 1, 'exactly one refetch for the new kid');
      // Cached now: more tokens with k2 and k1 cost no fetch.
      await expectOutcome(server, await token2(), true);
      await expectOutcome(
        server,
        await mint(
          'bob',
          { cap: CAP },
          { alg: 'RS256', key: k1.privateKey, header: { kid: 'k1' } },
        ),
        true,
      );
      assert.equal(idpRequests.length, fetches + 1);
    } finally {
      mock.timers.reset();
    }
  });
});

describe('tokens never reach the logs', () => {
  it('a `switchboard serve` process at trace level logs no token text, valid or not', async () => {
    const node = await startNodeProcess(['--jwt-secret', SECRET, '--log-level', 'trace']);
    try {
      const valid = await mint('alice', { cap: CAP });
      const forged = await mint(
        'mallory',
        { cap: CAP },
        {
          key: new TextEncoder().encode('not-the-server-secret-but-32-bytes-long'),
        },
      );
      const expired = await mint('alice', { cap: CAP, exp: now() - 3600 });
      const refresh = await mint('alice', { cap: CAP }, { expIn: 120 });
      const badRefresh = await mint('eve', { cap: CAP });
      const tokens = [valid, forged, expired, refresh, badRefresh];
      const s = {
        port: node.port,
        wsUrl: node.wsUrl,
      } as Server;
      assert.deepEqual(await tryAll(s, valid), { frame: true, query: true, rest: true });
      for (const t of [forged, expired])
        assert.deepEqual(await tryAll(s, t), { frame: false, query: false, rest: false });
      // Refresh, a refused refresh (another sub), and the token in URLs nobody routes.
      const c = new TestClient(`${node.wsUrl}?token=${valid}`);
      await once(c.ws, 'open');
      assert.equal((await c.request({ action: 'refresh', token: refresh, id: 1 }))['ok'], true);
      assert.equal(
        (await c.request({ action: 'refresh', token: badRefresh, id: 2 }))['code'],
        ErrorCode.UNAUTHORIZED,
      );
      c.close();
      await http(node.port, 'GET', `/v1/nowhere?token=${forged}`);
      const wrongPath = await http(node.port, 'GET', `/socket?token=${forged}`, {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
      }).catch(() => undefined);
      void wrongPath;
      await http(
        node.port,
        'POST',
        '/v1/channels/chat:x/messages',
        {
          Authorization: `Bearer ${forged}`,
        },
        '{"data":1}',
      );
      await node.stop();
      const out = node.output();
      assert.match(out, /switchboard listening/);
      assert.match(out, /shutdown complete/);
      for (const t of tokens) {
        const [h, p, sig] = parts(t);
        assert.ok(!out.includes(t), 'a whole token is in the logs');
        assert.ok(!out.includes(sig), 'a token signature is in the logs');
        assert.ok(!out.includes(`${h}.${p}`), 'a token header and payload are in the logs');
      }
    } finally {
      await node.stop();
    }
  });
});

describe('refused logins are logged (issue 16.10)', () => {
  const API_KEY = { name: 'backend', secret: 'backend-secret-0123456789ab', capabilities: {} };

  it('at info, with the reason, transport and address, never the token or secret, on every transport', async () => {
    const server = await startLoggedTestServer({ jwtSecret: SECRET, apiKeys: [API_KEY] });
    try {
      const forged = await mint(
        'mallory',
        { cap: CAP },
        { key: new TextEncoder().encode('f'.repeat(40)) },
      );
      const expired = await mint('alice', { cap: CAP, exp: now() - 3600 });
      assert.equal(await viaFrame(server, forged), false);
      assert.equal(await viaQuery(server, expired), false);
      assert.equal(await viaRest(server, forged), false);
      const badKey = await http(server.port, 'GET', '/v1/channels/chat:x/messages', {
        Authorization: `Basic ${Buffer.from('backend:wrong-secret-xyz').toString('base64')}`,
      });
      assert.equal(badKey.status, 401);
      const sse = await SseTestClient.open(server.url, `?token=${expired}`);
      await sse.until(() => sse.closed !== undefined || sse.ended, 5000, 'the SSE close');
      await eventually(
        () => server.logs.filter((l) => l.msg === 'login refused').length >= 5,
        5000,
        'five refusals logged',
      );
      const refusals = server.logs.filter((l) => l.msg === 'login refused');
      assert.ok(
        refusals.every((l) => l.level === 30),
        'logged at info',
      );
      assert.deepEqual(refusals.map((l) => [l['transport'], l['reason']]).sort(), [
        ['http', 'invalid credentials'],
        ['http', 'token signature is invalid'],
        ['sse', 'token expired'],
        ['websocket', 'token expired'],
        ['websocket', 'token signature is invalid'],
      ]);
      assert.ok(refusals.every((l) => l['address'] === '127.0.0.1'));
      assert.equal(
        refusals.find((l) => l['reason'] === 'invalid credentials')?.['user'],
        'backend',
      );
      const text = JSON.stringify(server.logs);
      for (const secret of [forged, expired, 'wrong-secret-xyz', forged.split('.')[2] as string])
        assert.ok(!text.includes(secret), 'no token or secret in the logs');
    } finally {
      await server.close();
    }
  });

  it('at most 10 lines a second; the rest are counted in a summary line', async () => {
    const server = await startLoggedTestServer({ jwtSecret: SECRET });
    try {
      const forged = await mint(
        'mallory',
        { cap: CAP },
        { key: new TextEncoder().encode('f'.repeat(40)) },
      );
      const attempts = 60;
      await Promise.all(Array.from({ length: attempts }, () => viaRest(server, forged)));
      const counted = (): number =>
        server.logs.reduce(
          (n, l) =>
            n +
            (l.msg === 'login refused'
              ? 1
              : typeof l['suppressed'] === 'number'
                ? l['suppressed']
                : 0),
          0,
        );
      await eventually(() => counted() === attempts, 3000, 'every refusal logged or counted');
      const perSecond = new Map<number, number>();
      for (const l of server.logs.filter((x) => x.msg === 'login refused')) {
        const s = Math.floor((l['time'] as number) / 1000);
        perSecond.set(s, (perSecond.get(s) ?? 0) + 1);
      }
      assert.ok(Math.max(...perSecond.values()) <= 10, JSON.stringify([...perSecond]));
      assert.ok(server.logs.some((l) => typeof l['suppressed'] === 'number'));
    } finally {
      await server.close();
    }
  });
});
