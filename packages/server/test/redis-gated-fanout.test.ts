/**
 * Gated publishes (a replica, WAIT 1) seen from a subscriber: what a confirming WAIT releases
 * arrives once each, in order, and goes out in a few fan-out script calls (fanoutManyLua), not one
 * PUBLISH per message. Real redis-server master and replica, a real `switchboard serve`, real
 * WebSocket clients; the calls are counted from the master's SLOWLOG (what the node sent).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  eventually,
  requireBinary,
  startNodeProcess,
  startRedis,
  TestClient,
  type Frame,
  type NodeProcess,
  type RedisProcess,
} from './helpers.js';
import { logEveryCommand, topLevelCommands } from './redis-kit.js';

const skip = requireBinary('redis-server') || requireBinary('redis-cli');

/** Sends every command at once, without waiting, then resolves with their replies by id. */
async function pipeline(
  client: TestClient,
  commands: (Frame & { id: number })[],
): Promise<Map<unknown, Frame>> {
  for (const cmd of commands) client.send(cmd);
  const ids = new Set(commands.map((c) => c.id));
  const count = (fs: Frame[]): number =>
    fs.filter((f) => f['reply'] !== undefined && ids.has(f['reply'] as number)).length;
  await client.until((fs) => count(fs) >= ids.size, 20_000, `${ids.size} replies`);
  const byId = new Map<unknown, Frame>();
  for (const f of client.frames) if (ids.has(f['reply'] as number)) byId.set(f['reply'], f);
  return byId;
}

void describe('redis: gated publishes fanned out after WAIT', { skip }, () => {
  let master: RedisProcess | undefined;
  let replica: RedisProcess | undefined;
  let node: NodeProcess | undefined;
  const clients: TestClient[] = [];

  before(async () => {
    master = await startRedis();
    replica = await startRedis();
    const m = master;
    replica.cli('REPLICAOF', '127.0.0.1', String(m.port));
    await eventually(
      () => /^slave0:.*state=online/m.test(m.cli('INFO', 'replication')),
      10_000,
      'the replica to sync',
    );
    node = await startNodeProcess([
      ...['--redis', m.url, '--redis-prefix', 'gf:'],
      ...['--redis-wait-replicas', '1', '--redis-wait-timeout-ms', '2000'],
    ]);
  });

  after(async () => {
    for (const c of clients) c.ws.terminate();
    await node?.stop();
    await Promise.all([replica?.stop(), master?.stop()]);
  });

  void test('1,000 pipelined publishes reach a subscriber once each, in order, in far fewer fan-out calls than messages', async (t) => {
    assert.ok(node && master, 'started');
    const m = master;
    const open = async (): Promise<TestClient> => {
      const c = await TestClient.open((node as NodeProcess).wsUrl);
      clients.push(c);
      return c;
    };
    const sub = await open();
    const publisher = await open();
    const channels = ['gf-0', 'gf-1', 'gf-2', 'gf-3'];
    for (const channel of channels) assert.equal((await sub.subscribe(channel))['ok'], true);
    // Warm-up: the node's connection loads both scripts (EVAL) before the counted run.
    const warm = await pipeline(
      publisher,
      Array.from({ length: 20 }, (_, i) => ({
        action: 'publish',
        channel: 'gf-warm',
        data: i,
        id: 10_000 + i,
      })),
    );
    assert.ok([...warm.values()].every((r) => r['ok'] === true));

    m.cli('CONFIG', 'RESETSTAT');
    logEveryCommand((...args) => m.cli(...args));
    const n = 1000;
    const replies = await pipeline(
      publisher,
      Array.from({ length: n }, (_, i) => ({
        action: 'publish',
        channel: channels[i % channels.length] as string,
        data: { n: i },
        id: i + 1,
      })),
    );
    for (let i = 0; i < n; i++)
      assert.equal(
        replies.get(i + 1)?.['ok'],
        true,
        `publish ${i}: ${JSON.stringify(replies.get(i + 1))}`,
      );

    await sub.until(
      (fs) => fs.filter((f) => f['message'] !== undefined).length >= n,
      10_000,
      `${n} messages`,
    );
    // Nothing more comes (a duplicate would arrive right behind the rest).
    await new Promise((r) => setTimeout(r, 300));
    for (const [k, channel] of channels.entries()) {
      const pushes = sub.messages(channel);
      const expected = Array.from({ length: n / channels.length }, (_, j) => ({
        n: j * channels.length + k,
      }));
      assert.deepEqual(
        pushes.map((f) => f['message']),
        expected,
        `${channel}: each once, in publish order`,
      );
      assert.deepEqual(
        pushes.map((f) => f['offset']),
        expected.map((_, j) => j + 1),
        `${channel}: consecutive offsets`,
      );
    }

    const top = await topLevelCommands(m.port);
    const stats = m.cli('INFO', 'commandstats');
    const published = Number(/^cmdstat_publish:calls=(\d+)/m.exec(stats)?.[1]);
    const waits = Number(/^cmdstat_wait:calls=(\d+)/m.exec(stats)?.[1] ?? 0);
    t.diagnostic(
      `${n} messages: ${published} PUBLISH run (any caller); top-level: ${top.publish} PUBLISH, ` +
        `${top.fanoutMany} fan-out script calls, ${top.scripts - top.fanoutMany} other script calls, ${waits} WAIT`,
    );
    assert.equal(published, n, 'each message PUBLISHed once on the master');
    const fanoutCalls = top.publish + top.fanoutMany;
    assert.ok(top.fanoutMany >= 1, 'the fan-out script carried them');
    assert.ok(
      fanoutCalls <= n / 10,
      `${n} messages went out in ${fanoutCalls} calls (${top.publish} PUBLISH, ${top.fanoutMany} fan-out scripts)`,
    );
  });
});
