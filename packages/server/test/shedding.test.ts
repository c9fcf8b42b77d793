// switchboard-test: solo - a 400 ms event-loop-lag threshold must not be crossed by the stalls of a loaded machine.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { describe, it } from 'node:test';
import { ErrorCode } from '@switchboard/protocol';
import { eventually, startTestServer, TestClient } from './helpers.js';

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** A WebSocket upgrade as a user agent sends it: 101, or the refusal's status, headers and body. */
function upgrade(port: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({
      port,
      host: '127.0.0.1',
      path: '/ws',
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: '' });
    });
    req.on('response', (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function readyz(url: string): Promise<{ status: number; reasons: string[] }> {
  const res = await fetch(`${url}/readyz`);
  const body = (await res.json()) as { reasons?: string[] };
  return { status: res.status, reasons: body.reasons ?? [] };
}

describe('load shedding', () => {
  it('at maxConnections: 503 + Retry-After on every transport, not ready, connected clients served, accepts again when one leaves', async () => {
    const server = await startTestServer({ maxConnections: 3, shedRetryAfterMs: 2500 });
    try {
      const held = await Promise.all([1, 2, 3].map(() => TestClient.open(server.wsUrl)));
      const ws = await upgrade(server.port);
      assert.equal(ws.status, 503);
      assert.equal(ws.headers['retry-after'], '3', 'Retry-After: shedRetryAfterMs rounded up');
      const body = JSON.parse(ws.body) as { code: number; error: string };
      assert.equal(body.code, ErrorCode.NOT_AVAILABLE);
      assert.match(body.error, /connection limit/);
      for (const [path, method] of [
        ['/sse', 'GET'],
        ['/poll', 'POST'],
      ] as const) {
        const res = await fetch(`${server.url}${path}`, { method });
        assert.equal(res.status, 503, `${method} ${path}`);
        assert.equal(res.headers.get('retry-after'), '3');
        assert.equal(((await res.json()) as { code: number }).code, ErrorCode.NOT_AVAILABLE);
      }
      const ready = await readyz(server.url);
      assert.equal(ready.status, 503);
      assert.ok(
        ready.reasons.some((r) => r.startsWith('shedding: at its connection limit')),
        JSON.stringify(ready),
      );
      // The clients already connected are served as before.
      const [a, b] = held as [TestClient, TestClient];
      await b.subscribe('shed');
      const ack = await a.request({ action: 'publish', channel: 'shed', data: 'still', id: 'p' });
      assert.equal(ack['error'], undefined, JSON.stringify(ack));
      await b.until((fs) => fs.some((f) => f['channel'] === 'shed' && f['message'] === 'still'));
      // One leaves: the next upgrade is accepted, and the node is ready again.
      held[2]?.close();
      await held[2]?.closed();
      await eventually(async () => (await upgrade(server.port)).status === 101, 3000, 'a 101');
      // Ready again once that test upgrade's socket is gone too.
      await eventually(async () => (await readyz(server.url)).status === 200, 3000, 'ready');
      for (const c of held) c.close();
    } finally {
      await server.close();
    }
  });

  it('over shedMemoryBytes: refuses new connections and reports it in /readyz', async () => {
    // Any process is over one byte: the threshold is crossed from the first sample on.
    const server = await startTestServer({ shedMemoryBytes: 1 });
    try {
      const ws = await upgrade(server.port);
      assert.equal(ws.status, 503);
      assert.equal(ws.headers['retry-after'], '5');
      const ready = await readyz(server.url);
      assert.equal(ready.status, 503);
      assert.ok(ready.reasons.some((r) => /^shedding: resident memory \d+ bytes/.test(r)));
    } finally {
      await server.close();
    }
  });

  it('over shedEventLoopLagMs: sheds while the loop lagged, then accepts again', async () => {
    // Well above the stalls of a busy shared machine (tens of ms, at times a few hundred).
    const server = await startTestServer({ shedEventLoopLagMs: 400 });
    try {
      assert.equal((await upgrade(server.port)).status, 101);
      // A lag monitor counts a stall only once its timer has run (a stall right after enable()
      // is missed). The node reads its monitor's current window on each check, so waiting until a
      // monitor enabled after the node's has counted is enough: the node's, due first, has too.
      const probe = monitorEventLoopDelay({ resolution: 10 });
      probe.enable();
      while (probe.count === 0) await new Promise((r) => setImmediate(r));
      probe.disable();
      // Hold this process's event loop (the server's too) well past the threshold.
      const until = Date.now() + 700;
      while (Date.now() < until);
      await eventually(
        async () => (await readyz(server.url)).reasons.some((r) => r.includes('event-loop lag')),
        3000,
        'shedding for lag',
      );
      await eventually(async () => (await upgrade(server.port)).status === 101, 5000, 'a 101');
      await eventually(async () => (await readyz(server.url)).status === 200, 3000, 'ready');
    } finally {
      await server.close();
    }
  });
});
