/**
 * Webhooks on Redis Cluster: every webhook key shares the `{webhooks}` hash tag, so the scripts,
 * the consumer group reads and the due set work on one slot; two nodes deliver each event once,
 * a failed attempt comes back through the due set.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { verifyWebhook } from '../src/webhooks/signature.js';
import { eventually, requireBinary, startTestServer, TestClient } from './helpers.js';
import { startRedisCluster, type RedisClusterKit } from './redis-kit.js';
import { Receiver } from './webhook-kit.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;

const SECRET = 'webhook-secret-0123456789';
const skip = requireBinary('redis-server') || requireBinary('redis-cli');

describe('webhooks on Redis Cluster', { skip }, () => {
  let cluster: RedisClusterKit;
  let receiver: Receiver;
  const nodes: Server[] = [];

  before(async () => {
    cluster = await startRedisCluster();
    await cluster.waitHealthy();
    receiver = await Receiver.start();
    for (let i = 0; i < 2; i++)
      nodes.push(
        await startTestServer({
          redisCluster: cluster.seeds.join(','),
          webhooks: [{ url: receiver.url, events: ['message.published'], channels: '*' }],
          webhookSecret: SECRET,
          webhookRetryBaseMs: 50,
          webhookRetryMaxDelayMs: 200,
          webhookTimeoutMs: 1000,
        }),
      );
  });

  after(async () => {
    await Promise.all(nodes.map((n) => n.close()));
    await receiver.down();
    await cluster.stop();
  });

  it('delivers each event once from two nodes, retrying a failed attempt', async () => {
    receiver.status = 503;
    const c = await TestClient.open((nodes[0] as Server).wsUrl);
    const d = await TestClient.open((nodes[1] as Server).wsUrl);
    try {
      for (let i = 0; i < 10; i++) {
        const r = await (i % 2 === 0 ? c : d).request({
          action: 'publish',
          channel: `cl-${i}`,
          data: { i },
          id: `p${i}`,
        });
        assert.equal(r['error'], undefined, JSON.stringify(r));
      }
      await eventually(() => receiver.received.length >= 10, 5000, 'first attempts');
      receiver.status = 200;
      const failed = receiver.received.length;
      await eventually(
        () => new Set(receiver.received.slice(failed).map((r) => r.body.id)).size === 10,
        5000,
        'ten events after the retries',
      );
      // A node logs an attempt once the receiver's answer is read, just after the receiver saw it.
      const ok = (): number =>
        nodes.flatMap((n) => n.webhooks.log(100)).filter((e) => e.result === 'ok').length;
      await eventually(() => ok() >= 10, 5000, 'ten deliveries logged ok');
      assert.equal(ok(), 10, 'each event delivered once');
      for (const r of receiver.received)
        assert.ok(verifyWebhook(SECRET, r.raw, String(r.headers['switchboard-signature'])));
    } finally {
      c.ws.close();
      d.ws.close();
    }
  });
});
