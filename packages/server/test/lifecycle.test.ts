import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { DisconnectCode } from '@switchboard/protocol';
import { startNodeProcess, startTestServer, TestClient } from './helpers.js';

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
