/**
 * The publisher against a real node: positions from open-notify when it answers within 2 s
 * (a local stand-in for the public API, which this machine cannot reach), from SGP4 when it is
 * slower; a backfill only into an empty channel.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { eventually, startTestServer } from '../../../packages/server/test/helpers.js';
import type { Telemetry } from '../src/orbit.js';
import { CHANNEL, backfill, startPublisher } from '../src/publisher.js';

type TestServer = Awaited<ReturnType<typeof startTestServer>>;
let node: TestServer;
let api: Server;
let apiUrl = '';
/** How long the stand-in takes to answer. */
let delayMs = 0;

before(async () => {
  node = await startTestServer();
  api = createServer((_req, res) => {
    setTimeout(() => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          message: 'success',
          timestamp: Math.floor(Date.now() / 1000),
          iss_position: { latitude: '12.5000', longitude: '-45.2500' },
        }),
      );
    }, delayMs);
  });
  api.listen(0, '127.0.0.1');
  await once(api, 'listening');
  apiUrl = `http://127.0.0.1:${(api.address() as AddressInfo).port}/iss-now.json`;
});

after(async () => {
  api.closeAllConnections();
  api.close();
  await node.close();
});

async function positions(channel: string): Promise<Telemetry[]> {
  const r = await fetch(`${node.url}/v1/channels/${channel}/messages?limit=1000`);
  const body = (await r.json()) as { messages: { data?: Telemetry; message?: Telemetry }[] };
  return body.messages.map((m) => (m.data ?? m.message) as Telemetry);
}

describe('publisher', () => {
  it('uses open-notify when it answers within 2 s, with the model for altitude and speed', async () => {
    delayMs = 0;
    const p = startPublisher({
      url: node.url,
      channel: 'iss.live',
      openNotifyUrl: apiUrl,
      intervalMs: 100,
    });
    await eventually(() => p.published >= 3, 5000, 'three positions');
    await p.stop();
    const got = await positions('iss.live');
    assert.ok(got.length >= 3);
    for (const t of got) {
      assert.equal(t.source, 'open-notify');
      assert.equal(t.latitude, 12.5);
      assert.equal(t.longitude, -45.25);
      assert.ok(t.altitudeKm > 100 && t.speedKmh > 20_000, 'altitude and speed from the model');
    }
  });

  it('falls back to SGP4 when open-notify takes longer than 2 s', async () => {
    delayMs = 2500;
    const p = startPublisher({
      url: node.url,
      channel: 'iss.slow',
      openNotifyUrl: apiUrl,
      intervalMs: 100,
    });
    await eventually(() => p.published >= 3, 8000, 'three positions');
    await p.stop();
    const got = await positions('iss.slow');
    assert.ok(got.every((t) => t.source === 'sgp4'));
  });

  it('backfills the model into an empty channel only', async () => {
    const n = await backfill({ url: node.url, minutes: 5, stepMs: 10_000, channel: 'iss.back' });
    assert.equal(n, 30);
    const got = await positions('iss.back');
    assert.equal(got.length, 30);
    assert.ok(
      got.every((t, i) => i === 0 || t.timestamp === (got[i - 1] as Telemetry).timestamp + 10_000),
    );
    assert.equal(await backfill({ url: node.url, minutes: 5, channel: 'iss.back' }), 0);
    assert.equal(CHANNEL, 'iss.telemetry');
  });
});
