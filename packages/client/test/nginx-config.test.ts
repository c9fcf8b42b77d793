/**
 * The shipped NGINX config (deploy/nginx/switchboard.conf) in front of one node: requests a node
 * cannot answer itself (the uws engine's parser drops some without an answer: issue 16.4) get an
 * answer from NGINX at once, and what NGINX passes on is a bounded, known set of headers that
 * covers every header the server reads.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { requireBinary, startTestServer } from '../../server/test/helpers.js';
import { rawHttp } from '../../server/test/security-kit.js';
import { startNginx, type Nginx } from './cluster-kit.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const CONF = readFileSync(join(ROOT, 'deploy/nginx/switchboard.conf'), 'utf8');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return path.endsWith('.ts') ? [path] : [];
  });
}

describe('deploy/nginx/switchboard.conf', () => {
  it('passes on every request header the server reads', () => {
    const forwarded = new Set(
      [...CONF.matchAll(/^\s*proxy_set_header\s+(\S+)\s/gm)].map((m) =>
        (m[1] as string).toLowerCase(),
      ),
    );
    // NGINX frames the body itself: these two are its own to send.
    const framing = new Set(['content-length', 'transfer-encoding']);
    const read = new Set<string>();
    for (const file of sources(join(ROOT, 'packages/server/src'))) {
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(
        /headers\[['"]([a-z0-9-]+)['"]\]|headers\.([a-z]+)\b(?!\()|getHeader\(['"]([a-z0-9-]+)['"]\)/g,
      ))
        read.add((m[1] ?? m[2] ?? m[3]) as string);
    }
    assert.ok(read.has('authorization') && read.has('origin'), [...read].join(','));
    const missing = [...read].filter((h) => !forwarded.has(h) && !framing.has(h));
    assert.deepEqual(missing, [], 'headers the server reads that NGINX does not pass on');
  });

  describe('in front of a node', () => {
    const skip = requireBinary('nginx');
    let server: Awaited<ReturnType<typeof startTestServer>>;
    let nginx: Nginx;
    before(async () => {
      if (skip) return;
      server = await startTestServer();
      nginx = await startNginx([server.port]);
    });
    after(async () => {
      if (skip) return;
      await nginx.stop();
      await server.close();
    });

    const get = 'GET /healthz HTTP/1.1\r\nHost: x\r\n';
    const post = (headers: string): string =>
      `POST /v1/channels/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${headers}\r\n`;
    for (const [name, request, status] of [
      [
        '60 headers',
        get + Array.from({ length: 60 }, (_, i) => `X-Extra-${i}: v\r\n`).join('') + '\r\n',
        200,
      ],
      ['HTTP/1.0 without Host', 'GET /healthz HTTP/1.0\r\n\r\n', 200],
      ['HTTP/1.1 without Host', 'GET /healthz HTTP/1.1\r\n\r\n', 400],
      ['two Content-Lengths', post('Content-Length: 10\r\nContent-Length: 11\r\n'), 400],
      ['a Content-Length that is not a number', post('Content-Length: 1x\r\n'), 400],
      ['a huge Content-Length', post('Content-Length: 99999999999\r\n'), 413],
      ['a malformed request line', 'GARBAGE\r\n\r\n', 400],
      ['no path', 'GET  HTTP/1.1\r\nHost: x\r\n\r\n', 400],
      ['an unknown HTTP version', 'GET /healthz HTTP/2.5\r\nHost: x\r\n\r\n', 505],
      ['a 20 KB header', `${get}X-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 400],
    ] as const) {
      it(`answers ${name} with ${status}, at once`, { skip }, async () => {
        const r = await rawHttp(nginx.port, request, 5000);
        assert.equal(r.timedOut, false, `answered, not left hanging: ${JSON.stringify(r)}`);
        assert.match(r.statusLine, new RegExp(`^HTTP/1\\.1 ${status} `), JSON.stringify(r));
      });
    }
  });
});
