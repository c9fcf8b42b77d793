/**
 * What the SDK does with the two ways a node says "not here, not now": a drain (close code 3012:
 * reconnect at once, elsewhere, resume) and a shed connection (503 + Retry-After: wait at least
 * that long). Real servers in-process, real sockets; the many-client drain behind NGINX is
 * drain.test.ts.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { DisconnectCode } from '@switchboard/protocol';
import {
  eventually,
  requireBinary,
  startRedis,
  startTestServer,
} from '../../server/test/helpers.js';
import {
  Switchboard,
  type Message,
  type StateChange,
  type SwitchboardOptions,
  type TransportName,
} from '../src/index.js';

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

function client(options: SwitchboardOptions): Switchboard {
  const c = new Switchboard({ WebSocket, backoff: { baseMs: 20, capMs: 100 }, ...options });
  cleanup.push(() => c.close());
  return c;
}

describe('SDK and a shedding node', () => {
  for (const transport of ['websocket', 'sse', 'long-polling'] as TransportName[]) {
    it(`${transport}: waits at least Retry-After before trying again, then connects`, async () => {
      const s = await startTestServer({ maxConnections: 1, shedRetryAfterMs: 1000 });
      cleanup.push(() => s.close());
      const first = client({ url: s.wsUrl, transports: [transport] });
      await first.channels.get('x').subscribe(() => {});
      const second = client({ url: s.wsUrl, transports: [transport] });
      const refused = new Promise<StateChange>((resolve) =>
        second.connection.once('disconnected', resolve),
      );
      second.connect();
      const change = await refused;
      // The backoff of this client alone is 20-100 ms; the node asked for 1 s.
      assert.ok(
        (change.retryInMs ?? 0) >= 1000,
        `retry in ${change.retryInMs} ms after a 503 with Retry-After: 1`,
      );
      first.close();
      await eventually(() => second.connection.state === 'connected', 5000, 'connected');
    });
  }
});

describe('SDK and a draining node', () => {
  it('reconnects at once to the next endpoint and resumes: nothing lost or repeated', async (t) => {
    const missing = requireBinary('redis-server');
    if (missing) return t.skip(missing);
    const redis = await startRedis();
    cleanup.push(() => redis.stop(true));
    const a = await startTestServer({ redis: redis.url });
    const b = await startTestServer({ redis: redis.url });
    cleanup.push(() => b.close());
    const sub = client({ endpoints: [a.wsUrl, b.wsUrl], transports: ['websocket'] });
    const pub = client({ url: b.wsUrl });
    const got: Message[] = [];
    await sub.channels.get('move').subscribe((m) => got.push(m));
    assert.equal(sub.connection.url, a.wsUrl);
    const down = new Promise<StateChange>((resolve) =>
      sub.connection.once('disconnected', resolve),
    );
    await pub.channels.get('move').publish('n', 1);
    await eventually(() => got.length === 1, 5000, 'the first message');
    const closing = a.close();
    const change = await down;
    assert.equal(change.reason?.code, DisconnectCode.DRAINING);
    assert.equal(change.retryInMs, 0, 'no backoff after a drain');
    // Published while the subscriber moves: the resume on b brings them.
    for (let i = 2; i <= 5; i++) await pub.channels.get('move').publish('n', i);
    await eventually(() => sub.connection.state === 'connected', 5000, 'connected again');
    assert.equal(sub.connection.url, b.wsUrl);
    await pub.channels.get('move').publish('n', 6);
    await eventually(() => got.length >= 6, 5000, 'six messages');
    assert.deepEqual(
      got.map((m) => m.data),
      [1, 2, 3, 4, 5, 6],
    );
    await closing;
  });
});
