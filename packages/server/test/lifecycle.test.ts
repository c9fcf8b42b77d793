import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { DisconnectCode } from '@switchboard/protocol';
import { CLI, ENGINE, startNodeProcess, startTestServer, TestClient } from './helpers.js';

describe('lifecycle', () => {
  it('on SIGTERM closes clients with 3012 (draining), stops accepting and exits 0', async () => {
    const node = await startNodeProcess();
    const clients = await Promise.all(Array.from({ length: 5 }, () => TestClient.open(node.wsUrl)));
    await Promise.all(clients.map((c) => c.subscribe('bye')));
    const code = node.stop('SIGTERM');
    const closes = await Promise.all(clients.map((c) => c.closed()));
    assert.deepEqual(closes, Array(5).fill(DisconnectCode.DRAINING));
    assert.equal(await code, 0);
    assert.match(node.output(), /shutdown complete/);
    await assert.rejects(fetch(`${node.url}/healthz`));
  });

  it(`closes idle HTTP keep-alive connections when it stops (${ENGINE})`, async () => {
    const server = await startTestServer();
    const socket = connect(server.port, '127.0.0.1');
    await once(socket, 'connect');
    socket.write('GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n');
    await once(socket, 'data');
    const closed = once(socket, 'close');
    await server.close();
    // Before the fix uws kept the connection (and the process) until its 10 s HTTP idle timeout.
    const gone = await Promise.race([
      closed.then(() => true),
      new Promise<boolean>((r) => setTimeout(r, 3000, false).unref()),
    ]);
    socket.destroy();
    assert.ok(gone, 'the keep-alive connection was still open 3 s after the stop');
  });

  it('terminates a peer that stops answering pings', async () => {
    const server = await startTestServer({ pingIntervalMs: 200 });
    try {
      const deaf = new WebSocket(server.wsUrl, { autoPong: false });
      const alive = await TestClient.open(server.wsUrl);
      const closed = new Promise<number>((resolve) => deaf.on('close', (c) => resolve(c)));
      assert.equal(
        await closed,
        1006,
        'the server dropped the silent peer without a close handshake',
      );
      assert.equal((await alive.request({ action: 'ping', id: 1 }))['ok'], true);
      alive.close();
    } finally {
      await server.close();
    }
  });

  it(`fails to start on a port already in use (${ENGINE}), like the ws engine: EADDRINUSE`, async () => {
    const first = await startTestServer();
    try {
      // In-process: startServer rejects with the errno, as node:http does.
      await assert.rejects(startTestServer({ port: first.port }), { code: 'EADDRINUSE' });
      // The CLI: exits 1 saying why, instead of serving half of the port's traffic (#15.1).
      const child = spawn(
        process.execPath,
        [CLI, 'serve', '--host', '127.0.0.1', '--port', String(first.port)],
        { env: { ...process.env, SWITCHBOARD_ENGINE: ENGINE }, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const [code] = (await once(child, 'exit')) as [number | null];
      assert.equal(code, 1, out);
      assert.match(out, /EADDRINUSE/);
      assert.doesNotMatch(out, /switchboard listening/);
      // Every connection still reaches the one server that holds the port.
      const clients = await Promise.all(
        Array.from({ length: 8 }, () => TestClient.open(first.wsUrl)),
      );
      await Promise.all(clients.map((c) => c.subscribe('port-owner')));
      const metrics = await (await fetch(`${first.url}/metrics`)).text();
      assert.match(metrics, /^switchboard_subscriptions 8$/m);
      for (const c of clients) c.close();
    } finally {
      await first.close();
    }
  });

  it('refuses upgrades on other paths with 404', async () => {
    const server = await startTestServer();
    try {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/elsewhere`);
      const status = await new Promise<number>((resolve) =>
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)),
      );
      assert.equal(status, 404);
    } finally {
      await server.close();
    }
  });
});
