/**
 * Two switchboard processes on a real Redis Cluster (3 masters + 3 replicas): the multi-node and
 * resume guarantees of redis-multinode.test.ts and resume.test.ts hold there too. Publishes on one
 * node reach subscribers of both in order, exactly once, over channels spread on every shard;
 * a client that left resumes on the other node with every missed message, and a position from
 * another epoch is answered "not recovered".
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  requireBinary,
  startNodeProcess,
  TestClient,
  type Frame,
  type NodeProcess,
} from './helpers.js';
import { startRedisCluster, type RedisClusterKit } from './redis-kit.js';

const skip = requireBinary('redis-server') || requireBinary('redis-cli');
const PREFIX = 'cn:';

void describe('redis cluster: two nodes', { skip }, () => {
  let cluster: RedisClusterKit | undefined;
  let a: NodeProcess | undefined;
  let b: NodeProcess | undefined;
  const clients: TestClient[] = [];
  const open = async (node: NodeProcess | undefined): Promise<TestClient> => {
    assert.ok(node, 'node started');
    const c = await TestClient.open(node.wsUrl);
    clients.push(c);
    return c;
  };

  before(async () => {
    cluster = await startRedisCluster();
    const args = ['--redis-cluster', cluster.seeds.slice(0, 3).join(','), '--redis-prefix', PREFIX];
    a = await startNodeProcess(args);
    b = await startNodeProcess(args);
  });
  after(async () => {
    for (const c of clients) c.ws.terminate();
    await Promise.all([a?.stop(), b?.stop()]);
    await cluster?.stop();
  });

  void test('publishes on B over 12 channels on every shard reach subscribers on A and B in order, exactly once', async () => {
    const channels = Array.from({ length: 12 }, (_, i) => `cn-${i}`);
    const shards = new Set(
      channels.map((ch) => cluster?.masterOf(cluster.slotOf(`${PREFIX}p:{${ch}}`)).port),
    );
    assert.ok(shards.size >= 2, `channels on ${shards.size} shards`);
    const onA = await open(a);
    const onB = await open(b);
    for (const ch of channels) {
      assert.equal((await onA.subscribe(ch))['ok'], true);
      assert.equal((await onB.subscribe(ch))['ok'], true);
    }
    const publisher = await open(b);
    const n = 20;
    let id = 0;
    for (let i = 0; i < n; i++)
      for (const ch of channels)
        publisher.send({ action: 'publish', channel: ch, data: i, id: ++id });
    await publisher.until(
      (fs) => fs.filter((f) => f['reply'] !== undefined && f['ok'] === true).length >= id,
      15_000,
      `${id} acknowledgements`,
    );
    for (const [name, sub] of [
      ['A', onA],
      ['B', onB],
    ] as const)
      for (const ch of channels) {
        await sub.until(
          (fs) => fs.filter((f) => f['channel'] === ch && f['message'] !== undefined).length >= n,
          10_000,
          `${ch} on ${name}`,
        );
        const pushes = sub.messages(ch);
        assert.deepEqual(
          pushes.map((f) => f['message']),
          Array.from({ length: n }, (_, i) => i),
          `${ch} on ${name}: sequence`,
        );
        assert.deepEqual(
          pushes.map((f) => f['offset']),
          Array.from({ length: n }, (_, i) => i + 1),
          `${ch} on ${name}: offsets`,
        );
      }
  });

  void test('a client resumes on the other node with every message it missed; another epoch is not recovered', async () => {
    const ch = 'cn-resume';
    const first = await open(a);
    await first.subscribe(ch);
    const publisher = await open(b);
    const publish = async (k: number): Promise<void> => {
      for (let i = 0; i < k; i++)
        assert.equal(
          (
            await publisher.request({
              action: 'publish',
              channel: ch,
              data: i,
              id: `p${Math.random()}`,
            })
          )['ok'],
          true,
        );
    };
    await publish(4);
    await first.until(() => first.messages(ch).length === 4, 10_000, 'four live messages');
    const last = first.messages(ch)[3] as Frame;
    first.ws.terminate();
    await publish(6);
    const back = await open(b);
    const reply = await back.request({
      action: 'subscribe',
      channel: ch,
      id: 'r',
      since: { offset: last['offset'], epoch: last['epoch'] },
    });
    assert.equal(reply['recovered'], true, JSON.stringify(reply));
    await back.until(() => back.messages(ch).length === 6, 10_000, 'the six missed messages');
    assert.deepEqual(
      back.messages(ch).map((f) => f['offset']),
      [5, 6, 7, 8, 9, 10],
    );
    const other = await open(a);
    const stale = await other.request({
      action: 'subscribe',
      channel: ch,
      id: 's',
      since: { offset: 2, epoch: 'not-this-epoch' },
    });
    assert.equal(stale['recovered'], false, JSON.stringify(stale));
  });
});
