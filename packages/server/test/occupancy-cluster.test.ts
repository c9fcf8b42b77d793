/**
 * The channel directory on Redis Cluster (#12 point 4): occupancy keys under the channel's hash
 * tag, the listing scanning every master, counts and the occupied/vacated hook across 2 nodes.
 * A real 3-master Redis Cluster, real sockets.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { encodeMessageHead } from '@switchboard/protocol';
import { eventually, requireBinary, startTestServer, TestClient, type Frame } from './helpers.js';
import { startRedisCluster, type RedisClusterKit } from './redis-kit.js';
import type { RunningServer } from '../src/index.js';

type Server = RunningServer & { url: string; wsUrl: string };

const skip = requireBinary('redis-server') || requireBinary('redis-cli');

describe('channel directory on Redis Cluster', { skip }, () => {
  let cluster: RedisClusterKit;
  let a: Server;
  let b: Server;
  const occupied: string[] = [];
  const vacated: string[] = [];
  before(async () => {
    cluster = await startRedisCluster();
    const config = { redisCluster: cluster.seeds.join(','), presenceTtlMs: 4000 };
    a = await startTestServer(config);
    b = await startTestServer(config);
    for (const s of [a, b]) {
      s.directory.on('occupied', (c) => occupied.push(c));
      s.directory.on('vacated', (c) => vacated.push(c));
    }
  });
  after(async () => {
    await Promise.all([a?.close(), b?.close()]);
    await cluster?.stop();
  });

  test('listing spans every master; counts and the hook across nodes', async () => {
    const names = Array.from({ length: 1000 }, (_, i) => `cl:${String(i).padStart(4, '0')}`);
    await Promise.all(
      names.map((channel) =>
        a.broker.publish({
          channel,
          id: 'seed',
          head: encodeMessageHead({ channel, dataJson: '1', id: 'seed', timestamp: Date.now() }),
          history: { size: 1, ttlMs: 600_000 },
          dedupeMs: 0,
        }),
      ),
    );
    // The channels really are spread over the masters.
    const masters = new Set(
      names.slice(0, 50).map((c) => cluster.masterOf(cluster.slotOf(c)).port),
    );
    assert.ok(masters.size > 1);
    const listed: string[] = [];
    let cursor: string | null = '';
    while (cursor !== null) {
      const res = await fetch(
        `${b.url}/v1/channels?prefix=cl:&limit=300${cursor === '' ? '' : `&cursor=${cursor}`}`,
      );
      const body = (await res.json()) as Frame;
      listed.push(...(body['channels'] as { channel: string }[]).map((c) => c.channel));
      cursor = body['next'] as string | null;
    }
    assert.deepEqual(listed, names);

    const onA = await TestClient.open(a.wsUrl);
    const onB = await TestClient.open(b.wsUrl);
    await Promise.all([onA.subscribe('cl:0007'), onB.subscribe('cl:0007')]);
    await eventually(async () => (await b.directory.get('cl:0007')).occupancy.subscribers === 2);
    const d = await a.directory.get('cl:0007');
    assert.equal(d.occupancy.connections, 2);
    assert.equal(d.last?.offset, 1);
    assert.deepEqual(occupied, ['cl:0007']);
    onA.ws.close();
    onB.ws.close();
    await eventually(() => vacated.length === 1, 5000, 'vacated');
    assert.deepEqual(vacated, ['cl:0007']);
  });

  test('a dead node found in the cluster is reaped once (claim keys share a slot)', async () => {
    // What a node killed mid-flight leaves behind: a lapsed heartbeat, its channel list, a share.
    const p = 'switchboard:';
    const on = (key: string): ((...args: string[]) => string) => {
      const node = cluster.masterOf(cluster.slotOf(key));
      return (...args) => node.cli(...args);
    };
    on(`${p}oc:{cl:0099}`)('HSET', `${p}oc:{cl:0099}`, 'ghost', '1 1');
    on(`${p}occ:n:ghost`)('SADD', `${p}occ:n:ghost`, 'cl:0099');
    on(`${p}occ:{nodes}`)('ZADD', `${p}occ:{nodes}`, '0', 'ghost');
    await eventually(() => vacated.includes('cl:0099'), 5000, 'the ghost reaped');
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(vacated.filter((c) => c === 'cl:0099').length, 1);
    assert.equal((await b.directory.get('cl:0099')).occupancy.subscribers, 0);
  });
});
