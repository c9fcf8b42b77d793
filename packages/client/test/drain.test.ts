// switchboard-test: solo - it asserts how evenly 300 reconnects spread over the drain window, second by second.
/**
 * A rolling update in miniature: SDK clients behind real NGINX (deploy/nginx/switchboard.conf) on
 * three `switchboard serve` processes with a real Redis, 100 messages a second; one node gets
 * SIGTERM. Its clients must move to the other two with nothing lost or repeated, their reconnects
 * spread over the drain window, the node gone within the window + 5 s, and its readiness false
 * before the first client was asked to leave. The size (1,000 clients, 10 s window) runs
 * under SWITCHBOARD_SOAK; the default run uses 300 clients and a 7 s window (the least that keeps
 * an even spread under 20% a second with margin).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { DisconnectCode } from '@switchboard/protocol';
import { eventually, requireBinary, soakOr } from '../../server/test/helpers.js';
import { Switchboard, type Message } from '../src/index.js';
import { startCluster } from './cluster-kit.js';

const CLIENTS = soakOr('SWITCHBOARD_DRAIN_CLIENTS', 1000, 300);
const WINDOW_MS = soakOr('SWITCHBOARD_DRAIN_WINDOW_MS', 10_000, 7000);
const CHANNELS = 10;
const RATE_PER_S = 100;

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

interface Subscriber {
  readonly client: Switchboard;
  readonly channel: string;
  readonly got: Message[];
  /** When the node asked it to leave (3012), and when it was connected again. */
  askedAt?: number;
  backAt?: number;
}

/** The JSON log lines of a node's output with this message. */
function logLines(output: string, msg: string): Record<string, unknown>[] {
  return output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l['msg'] === msg);
}

describe('drain behind NGINX', () => {
  it(`SIGTERM moves ${CLIENTS} clients, spread over ${WINDOW_MS} ms, none lost or repeated`, async (t) => {
    const missing = requireBinary('nginx') || requireBinary('redis-server');
    if (missing) return t.skip(missing);
    const cluster = await startCluster(3, [
      '--drain-window-ms',
      String(WINDOW_MS),
      '--shutdown-timeout-ms',
      String(WINDOW_MS + 3000),
    ]);
    cleanup.push(() => cluster.stop());
    const victim = cluster.nodes[1];
    assert.ok(victim);
    const subs: Subscriber[] = [];
    for (let i = 0; i < CLIENTS; i++) {
      const client = new Switchboard({
        url: cluster.nginx.wsUrl,
        WebSocket,
        transports: ['websocket'],
      });
      cleanup.push(() => client.close());
      const s: Subscriber = { client, channel: `drain.${i % CHANNELS}`, got: [] };
      client.connection.on('disconnected', (c) => {
        if (c.reason?.code === DisconnectCode.DRAINING && s.askedAt === undefined)
          s.askedAt = Date.now();
      });
      client.connection.on('connected', () => {
        if (s.askedAt !== undefined && s.backAt === undefined) s.backAt = Date.now();
      });
      subs.push(s);
    }
    // Subscribed in batches: 300 handshakes at once would be a storm of their own.
    for (let i = 0; i < subs.length; i += 50)
      await Promise.all(
        subs
          .slice(i, i + 50)
          .map((s) => s.client.channels.get(s.channel).subscribe((m) => s.got.push(m))),
      );
    // The publisher talks to a node that stays, so its own moves do not blur the count.
    const pub = new Switchboard({ url: cluster.nodes[0]?.wsUrl ?? '', WebSocket });
    cleanup.push(() => pub.close());
    const acked = new Map<string, number[]>();
    let seq = 0;
    const publishes: Promise<void>[] = [];
    const ticker = setInterval(() => {
      const channel = `drain.${seq % CHANNELS}`;
      const data = seq++;
      publishes.push(
        pub.channels
          .get(channel)
          .publish('n', data)
          .then((ack) => {
            const list = acked.get(channel) ?? [];
            list[ack.offset - 1] = data;
            acked.set(channel, list);
          }),
      );
    }, 1000 / RATE_PER_S);
    // A second of traffic before, then the drain under traffic.
    await new Promise((r) => setTimeout(r, 1000));
    const sigtermAt = Date.now();
    const exitCode = await victim.stop('SIGTERM');
    const exitedAt = Date.now();
    clearInterval(ticker);
    await Promise.all(publishes);
    const moved = subs.filter((s) => s.askedAt !== undefined);
    await eventually(
      () => moved.every((s) => s.backAt !== undefined),
      10_000,
      'every moved client connected again',
    );
    // Fences: one last message per channel; once every client has it, anything missing is lost.
    for (let c = 0; c < CHANNELS; c++) {
      const channel = `drain.${c}`;
      const ack = await pub.channels.get(channel).publish('n', 'fence');
      (acked.get(channel) ?? [])[ack.offset - 1] = -1;
    }
    await eventually(
      () => subs.every((s) => s.got.at(-1)?.name === 'n' && s.got.at(-1)?.data === 'fence'),
      20_000,
      'every client to receive its fence',
    );

    assert.equal(exitCode, 0, 'the drained node exits 0');
    assert.ok(
      exitedAt - sigtermAt <= WINDOW_MS + 5000,
      `exited ${exitedAt - sigtermAt} ms after SIGTERM (window ${WINDOW_MS} ms + 5 s)`,
    );
    assert.ok(
      moved.length >= CLIENTS / 6,
      `${moved.length} of ${CLIENTS} clients were on the drained node`,
    );
    let lost = 0;
    let duplicated = 0;
    for (const s of subs) {
      const want = (acked.get(s.channel) ?? []).map((d) => (d === -1 ? 'fence' : d));
      const got = s.got.map((m) => m.data);
      const offsets = s.got.map((m) => m.offset);
      duplicated += offsets.length - new Set(offsets).size;
      lost += want.length - new Set(offsets).size;
      assert.deepEqual(got, want, `${s.channel}: every acknowledged message once, in order`);
    }
    assert.equal(lost, 0);
    assert.equal(duplicated, 0);
    // Reconnects of the moved clients, in 1-second buckets from the SIGTERM.
    const buckets = new Map<number, number>();
    for (const s of moved) {
      const b = Math.floor(((s.backAt as number) - sigtermAt) / 1000);
      buckets.set(b, (buckets.get(b) ?? 0) + 1);
    }
    const busiest = Math.max(...buckets.values());
    assert.ok(
      busiest <= 0.2 * moved.length,
      `busiest second held ${busiest} of ${moved.length} reconnects: ${JSON.stringify([...buckets].sort((a, b) => a[0] - b[0]))}`,
    );
    // Readiness turned false (the node logs it after the switch) before anyone was asked to go.
    const out = victim.output();
    const draining = logLines(
      out,
      'draining: not ready, not accepting; asking clients to reconnect elsewhere',
    )[0];
    const first = logLines(out, 'draining: first client asked to leave')[0];
    assert.ok(draining && first, 'the drain logged its start and its first close');
    assert.equal(draining['ready'], false);
    assert.equal(draining['connections'], moved.length);
    assert.ok((draining['time'] as number) <= (first['at'] as number));
    const firstAsked = Math.min(...moved.map((s) => s.askedAt as number));
    assert.ok(
      (draining['time'] as number) <= firstAsked,
      'no client was asked to leave before the node was not ready',
    );
    t.diagnostic(
      `moved ${moved.length}, exit after ${exitedAt - sigtermAt} ms, reconnects per second ${JSON.stringify([...buckets].sort((a, b) => a[0] - b[0]))}`,
    );
  });
});
