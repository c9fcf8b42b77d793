/**
 * The official `ably` SDK behind real NGINX (deploy/nginx/switchboard.conf, round-robin, no
 * sticky sessions) in front of two `switchboard serve` processes on Redis (#14 point 5): the node
 * holding both the subscriber's and the publisher's connections is killed with SIGKILL while
 * 100 msg/s flow. Both resume on the other node with their connectionIds (the connection state
 * is in Redis); the subscriber gets every message once, in order; the publishes the SDK resends
 * after the cut are stored once.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type * as Ably from 'ably';
import { eventually, requireBinary } from '../../server/test/helpers.js';
import { Inbox, reach, realtime } from '../../server/test/ably-kit.js';
import { startCluster, type Cluster } from './cluster-kit.js';

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

async function connectionsOf(url: string): Promise<number> {
  const r = await fetch(`${url}/v1/info`);
  return ((await r.json()) as { connections: number }).connections;
}

describe('ably SDK behind nginx', () => {
  const missing = requireBinary('nginx') || requireBinary('redis-server');
  it(
    'kill -9 of the SDK node at 100 msg/s: resumed on the other node, 0 lost, 0 duplicated, 0 reordered, stored once',
    { skip: missing },
    async () => {
      const cluster: Cluster = await startCluster(2);
      cleanup.push(() => cluster.stop());
      const port = cluster.nginx.port;
      const opts = { disconnectedRetryTimeout: 300 };
      const sub = realtime(port, 'msgpack', opts);
      cleanup.push(() => sub.close());
      const inbox = new Inbox();
      const ch = sub.channels.get('nginx:flow');
      await ch.subscribe(inbox.listener);
      const counts = await Promise.all(cluster.nodes.map((n) => connectionsOf(n.url)));
      const victim = cluster.nodes[counts.indexOf(1)];
      assert.ok(victim !== undefined, `connections per node: ${JSON.stringify(counts)}`);
      // The publisher on the same node: its in-flight publishes are resent after the kill.
      let pub: Ably.Realtime | undefined;
      for (let i = 0; i < 4 && pub === undefined; i++) {
        const c = realtime(port, 'json', opts);
        cleanup.push(() => c.close());
        await reach(c.connection, 'connected');
        if ((await connectionsOf(victim.url)) === 2) pub = c;
        else c.close();
        await eventually(async () => (await connectionsOf(victim.url)) <= 2, 5000, 'close');
      }
      assert.ok(pub !== undefined, 'a publisher on the subscriber’s node');
      const subId = sub.connection.id;
      const pubId = pub.connection.id;
      const pch = pub.channels.get('nginx:flow');
      let n = 0;
      let publishing = true;
      const failures: string[] = [];
      const publisher = (async () => {
        while (publishing) {
          const data = String(n++);
          // Not awaited one by one: several publishes are in flight when the node dies.
          pch
            .publish('m', data)
            .catch((err: Ably.ErrorInfo) => failures.push(`${data}: ${err.message}`));
          await new Promise((r) => setTimeout(r, 10));
        }
      })();
      await inbox.count(100, 20_000);
      await victim.stop('SIGKILL');
      await reach(sub.connection, 'disconnected', 10_000).catch(() => undefined);
      await reach(sub.connection, 'connected', 20_000);
      await reach(pub.connection, 'connected', 20_000);
      await inbox.count(n + 100, 30_000);
      publishing = false;
      await publisher;
      const ms = await inbox.count(n, 30_000);
      assert.deepEqual(failures, []);
      assert.deepEqual(
        ms.map((m) => Number(m.data)),
        [...Array(n).keys()],
        'every message once, in order',
      );
      assert.equal(sub.connection.id, subId, 'the subscriber resumed its connection');
      assert.equal(pub.connection.id, pubId, 'the publisher resumed its connection');
      // Stored once: history (its newest part, as far as the stream is kept) holds each value
      // once and in order; a resent publish stored twice would also have reached the subscriber.
      const page = await ch.history({ limit: 500 });
      const newest = page.items.map((m) => Number(m.data));
      assert.deepEqual(
        newest,
        [...Array(n).keys()].slice(n - 500).reverse(),
        'the newest 500 stored once each, in order',
      );
    },
  );
});
