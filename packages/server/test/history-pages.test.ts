/**
 * A history page is one frame: one larger than the connection's outbound limit closed a client
 * that had only asked for history with "too slow" (3008; found by the protocol fuzz). Pages are
 * bounded to half of `maxOutboundBytes` (always at least one message), and `next` goes on.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startTestServer, TestClient, type Frame } from './helpers.js';

const OUTBOUND = 64 * 1024;
const PAGE_BYTES = OUTBOUND / 2;

describe('history pages are bounded in bytes', () => {
  let server: Awaited<ReturnType<typeof startTestServer>>;
  let c: TestClient;
  before(async () => {
    server = await startTestServer({ maxOutboundBytes: OUTBOUND });
    c = await TestClient.open(server.wsUrl);
    // Twelve ~10 KB messages, then one larger than a page on its own.
    for (let i = 0; i < 12; i++)
      await c.request({ action: 'publish', channel: 'bulky', data: 'x'.repeat(10_000), id: i });
    await c.request({ action: 'publish', channel: 'bulky', data: 'y'.repeat(40_000), id: 'big' });
  });
  after(async () => {
    c.close();
    await server.close();
  });

  const offsets = (page: Frame): number[] =>
    (page['messages'] as Frame[]).map((m) => m['offset'] as number);

  it('over WebSocket: every message once, in order, no page over the bound unless it holds one message, the connection kept', async () => {
    const pages = await c.historyPages({ channel: 'bulky', limit: 100 });
    for (const page of pages) {
      const bytes = JSON.stringify(page['messages']).length;
      if (offsets(page).length > 1) assert.ok(bytes <= PAGE_BYTES, `a page of ${bytes} bytes`);
    }
    const seen = pages.flatMap(offsets);
    const sizes = pages.map((p) => offsets(p).length);
    assert.deepEqual(
      seen,
      Array.from({ length: 13 }, (_, i) => i + 1),
    );
    assert.ok(sizes.length >= 5, `pages of ${sizes.join(', ')} messages`);
    assert.equal(sizes[sizes.length - 1], 1, 'the large message comes alone');
    assert.equal((await c.request({ action: 'ping', id: 'still' }))['ok'], true);
  });

  it('over REST: the same bound, and the cursor goes on', async () => {
    const seen: number[] = [];
    let query = 'limit=100';
    for (;;) {
      const res = await fetch(`${server.url}/v1/channels/bulky/messages?${query}`);
      assert.equal(res.status, 200);
      const body = (await res.json()) as Frame;
      const n = offsets(body).length;
      if (n > 1) assert.ok(JSON.stringify(body['messages']).length <= PAGE_BYTES);
      seen.push(...offsets(body));
      if (body['next'] === null) break;
      query = `limit=100&cursor=${body['next'] as string}`;
    }
    assert.deepEqual(
      seen,
      Array.from({ length: 13 }, (_, i) => i + 1),
    );
  });
});
