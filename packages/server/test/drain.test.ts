import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DisconnectCode } from '@switchboard/protocol';
import { SseTestClient } from './http-clients.js';
import { startTestServer, TestClient } from './helpers.js';

describe('drain', () => {
  it('asks every client to leave with 3012, spread over drainWindowMs, over WebSocket and SSE; done when the last left', async () => {
    const windowMs = 1500;
    const server = await startTestServer({ drainWindowMs: windowMs, shutdownTimeoutMs: 6000 });
    const ws = await Promise.all(Array.from({ length: 8 }, () => TestClient.open(server.wsUrl)));
    const sse = await SseTestClient.open(server.url);
    const leftAt: number[] = [];
    const wsGone = ws.map(async (c) => {
      const code = await c.closed(10_000);
      leftAt.push(Date.now());
      return code;
    });
    const sseGone = sse
      .until(() => sse.ended, 10_000, 'the close event')
      .then(() => {
        leftAt.push(Date.now());
      });
    const t0 = Date.now();
    await server.close();
    const elapsed = Date.now() - t0;
    assert.deepEqual(await Promise.all(wsGone), Array(8).fill(DisconnectCode.DRAINING));
    await sseGone;
    assert.equal(sse.closed?.code, DisconnectCode.DRAINING);
    leftAt.sort((a, b) => a - b);
    const first = (leftAt[0] as number) - t0;
    const span = (leftAt.at(-1) as number) - (leftAt[0] as number);
    // 9 clients over 1.5 s: one every 167 ms, the first at 83 ms, the last at 1417 ms. (A waiting
    // poll gets 3012 the same way: http-transports.test.ts.)
    assert.ok(first < windowMs / 2, `the first was asked after ${first} ms`);
    assert.ok(span >= windowMs / 2, `the leaves spanned ${span} ms of a ${windowMs} ms window`);
    assert.ok(elapsed < 6000, `close() resolved ${elapsed} ms after, before shutdownTimeoutMs`);
  });
});
