/**
 * Transport parity under load, behind NGINX in front of three nodes and Redis: 300 WebSocket, 300
 * SSE and 300 long-polling SDK clients on one channel while a publisher sends 100 messages a
 * second. Every client must see exactly the publisher's acknowledged sequence: the same offsets and
 * ids, none lost, none twice. Durations and sizes can be overridden: PARITY_SECONDS (10, or 60 under npm run test:soak),
 * PARITY_CLIENTS (per transport, default 300), PARITY_RATE (messages per second, default 100).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import { eventually, requireBinary, soakOr } from '../../server/test/helpers.js';
import { Switchboard, type Message, type TransportName } from '../src/index.js';
import { startCluster } from './cluster-kit.js';

const SECONDS = soakOr('PARITY_SECONDS', 60, 10);
const CLIENTS = Number(process.env['PARITY_CLIENTS'] ?? 300);
const RATE = Number(process.env['PARITY_RATE'] ?? 100);
const CHANNEL = 'parity';

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

/** What one client saw, kept small: 900 clients × 6000 messages must fit in the test process. */
class Seen {
  readonly transport: TransportName;
  count = 0;
  last = 0;
  /** Offsets that did not follow the previous one (a gap, a repeat, a reordering). */
  jumps = 0;
  /** FNV-1a over the ids in delivery order: equal hashes, equal sequences. */
  hash = 0x811c9dc5;
  /** Delivery latency: receipt time less the publishing node's timestamp. */
  lagSum = 0;
  lagMax = 0;

  constructor(transport: TransportName) {
    this.transport = transport;
  }

  add(m: Message): void {
    if (m.offset !== this.last + 1) this.jumps++;
    this.last = m.offset ?? -1;
    this.count++;
    this.hash = fnv(this.hash, m.id);
    const lag = Date.now() - m.timestamp;
    this.lagSum += lag;
    if (lag > this.lagMax) this.lagMax = lag;
  }
}

function fnv(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

describe('transport parity behind NGINX', () => {
  it(`${CLIENTS} WebSocket + ${CLIENTS} SSE + ${CLIENTS} long-polling clients, ${RATE} msg/s for ${SECONDS} s: identical sequences, 0 lost, 0 duplicated`, async (t) => {
    const why = requireBinary('nginx') || requireBinary('redis-server');
    if (why) return t.skip(why);
    const cluster = await startCluster(3);
    cleanup.push(() => cluster.stop());
    const url = cluster.nginx.wsUrl;

    const seen: Seen[] = [];
    const clients: Switchboard[] = [];
    cleanup.push(() => clients.forEach((c) => c.close()));
    const openOne = async (transport: TransportName): Promise<void> => {
      const c = new Switchboard({
        url,
        WebSocket,
        transports: [transport],
        backoff: { baseMs: 100, capMs: 2000 },
        // A loaded machine (CI runs everything on a few cores) must slow the test, not fail it.
        requestTimeoutMs: 60_000,
      });
      clients.push(c);
      const s = new Seen(transport);
      seen.push(s);
      await c.channels.get(CHANNEL).subscribe((m) => s.add(m));
    };
    const t0 = Date.now();
    for (const transport of ['websocket', 'sse', 'long-polling'] as const) {
      for (let i = 0; i < CLIENTS; i += 25) {
        await Promise.all(
          Array.from({ length: Math.min(25, CLIENTS - i) }, () => openOne(transport)),
        );
      }
    }
    t.diagnostic(`${seen.length} clients subscribed in ${Date.now() - t0} ms`);

    const pub = new Switchboard({ url, WebSocket, requestTimeoutMs: 60_000 });
    cleanup.push(() => pub.close());
    const channel = pub.channels.get(CHANNEL);
    const acks: Promise<{ offset: number; id: string }>[] = [];
    const total = Math.round(SECONDS * RATE);
    const start = Date.now();
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        // Catch up on timer lateness, so the rate holds even when the event loop is busy.
        const due = Math.min(total, Math.floor(((Date.now() - start) / 1000) * RATE) + 1);
        while (acks.length < due) acks.push(channel.publish('n', acks.length + 1));
        if (acks.length >= total) {
          clearInterval(tick);
          resolve();
        }
      }, 10);
    });
    const issued = (Date.now() - start) / 1000;
    const published = await Promise.all(acks);
    const elapsed = (Date.now() - start) / 1000;
    t.diagnostic(
      `published ${total} messages in ${issued.toFixed(1)} s, all acknowledged after ${elapsed.toFixed(1)} s`,
    );
    assert.deepEqual(
      published.map((a) => a.offset),
      Array.from({ length: total }, (_, i) => i + 1),
      'the publisher got consecutive offsets',
    );
    const expected = published.reduce((h, a) => fnv(h, a.id), 0x811c9dc5);

    const drainStart = Date.now();
    await eventually(
      () => seen.every((s) => s.count >= total),
      60_000,
      `every client to receive ${total} messages`,
      100,
    );
    t.diagnostic(`last client caught up ${Date.now() - drainStart} ms after the last ack`);
    // A last message fences every stream: a duplicate or a straggler would come before it, so
    // each client's sequence is the publisher's plus the fence, exactly.
    const fence = await channel.publish('fence', 0);
    await eventually(
      () => seen.every((s) => s.last >= fence.offset),
      60_000,
      'every client to receive the fence',
      100,
    );
    const fenced = fnv(expected, fence.id);
    for (const transport of ['websocket', 'sse', 'long-polling'] as const) {
      const mine = seen.filter((s) => s.transport === transport);
      const mean = mine.reduce((a, s) => a + s.lagSum, 0) / mine.reduce((a, s) => a + s.count, 0);
      const max = Math.max(...mine.map((s) => s.lagMax));
      t.diagnostic(`${transport}: delivery latency mean ${mean.toFixed(0)} ms, max ${max} ms`);
      assert.equal(mine.length, CLIENTS);
      const wrong = mine.filter((s) => s.count !== total + 1 || s.jumps !== 0 || s.hash !== fenced);
      assert.equal(
        wrong.length,
        0,
        `${transport}: ${wrong.length} clients deviate; first: ${JSON.stringify(wrong[0])}`,
      );
    }
    const requests = new Map<string, number>();
    for (const line of cluster.nginx.accessLog()) {
      const m = /"(\w+) \/(\w+)/.exec(line);
      if (m !== null) requests.set(`${m[1]} /${m[2]}`, (requests.get(`${m[1]} /${m[2]}`) ?? 0) + 1);
    }
    t.diagnostic(`requests through nginx: ${JSON.stringify(Object.fromEntries(requests))}`);
    // How fast the publisher issued and got its acks is a figure of the machine, not a property
    // of the server: printed above, measured by the benchmarks, not asserted here.
  });
});
