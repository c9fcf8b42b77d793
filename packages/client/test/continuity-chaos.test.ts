/**
 * Continuity under connection chaos (Guarantees 1, 2, 4): two switchboard processes on one Redis, 100
 * SDK clients (half with endpoints [A, B], half [B, A]) subscribed to 5 channels, 4 SDK publishers
 * at 200 msg/s in total, and every ~3 s every client and publisher socket is reset abruptly (RST
 * from a TCP proxy in front of each node, no close frame). The SDKs reconnect, alternate nodes,
 * resume from their positions and re-send unacknowledged publishes.
 *
 * A message oracle (oracle.ts) checks the whole run: every acknowledged message reached every
 * subscriber exactly once, in offset order and in each publisher's order, and every resume was
 * answered `recovered: true`: no discontinuity event, no `recovered="false"` in either node's
 * /metrics (which count resumes on every transport; the wire tally sees WebSocket ones). Clients
 * use the SDK's default transports, so a reset during a handshake may move one to a fallback.
 * CHAOS_SECONDS overrides the duration (12 s; 60 s under npm run test:soak).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { eventually, requireBinary, soakOr } from '../../server/test/helpers.js';
import type { Switchboard } from '../src/index.js';
import {
  Cleanup,
  FaultProxy,
  ResumeTally,
  metric,
  nodeFor,
  pace,
  redisFor,
  restHistory,
  sdkClient,
  stateLog,
  tallyingWebSocket,
} from './continuity-kit.js';
import { Oracle, summarize, violations, type Stamp } from './oracle.js';

const skip = requireBinary('redis-server') || requireBinary('redis-cli');

/** The transport a client is on, where the SDK reports one (SDKs with fallback transports). */
function transportOf(c: Switchboard): string {
  const transport = (c.connection as { transport?: unknown }).transport;
  return typeof transport === 'string' ? transport : 'websocket';
}
const SECONDS = soakOr('CHAOS_SECONDS', 60, 12);
const CLIENTS = 100;
const CHANNELS = 5;
const PUBLISHERS = 4;
const RATE = 200;
const RESET_EVERY_MS = 3000;

void test(
  `chaos: ${CLIENTS} clients on 2 nodes, ${RATE} msg/s, sockets reset every ~3 s for ${SECONDS} s: 0 lost, 0 duplicated, order kept, every resume recovered`,
  { skip, timeout: (SECONDS + 120) * 1000 },
  async (t) => {
    assert.ok(SECONDS > 0, `CHAOS_SECONDS must be a positive number, got ${SECONDS}`);
    const cleanup = new Cleanup();
    t.after(() => cleanup.run());
    const redis = await redisFor(cleanup);
    const args = ['--redis-prefix', 'chaos:'];
    const nodes = [await nodeFor(cleanup, redis, args), await nodeFor(cleanup, redis, args)];
    const proxies = await Promise.all(nodes.map((n) => FaultProxy.start(cleanup, n.port)));
    const [pa, pb] = proxies as [FaultProxy, FaultProxy];
    const endpoints = (i: number): string[] =>
      i % 2 === 0 ? [pa.wsUrl, pb.wsUrl] : [pb.wsUrl, pa.wsUrl];
    const oracle = new Oracle();
    const tally = new ResumeTally();
    const options = {
      WebSocket: tallyingWebSocket(tally),
      backoff: { baseMs: 100, capMs: 1000 },
    };
    const channels = Array.from({ length: CHANNELS }, (_, i) => `chaos-${i}`);

    // Subscribers: every client on every channel, watched by the oracle from the start.
    const subscribers: Switchboard[] = [];
    const channelErrors: string[] = [];
    const states: string[][] = [];
    for (let i = 0; i < CLIENTS; i++) {
      const c = sdkClient(cleanup, { endpoints: endpoints(i), ...options });
      subscribers.push(c);
      states.push(stateLog(c));
    }
    await Promise.all(
      subscribers.map(async (c, i) => {
        const name = `sub${i}`;
        for (const ch of channels) {
          const channel = c.channels.get(ch);
          oracle.watch(name, ch);
          channel.on('discontinuity', (info) => oracle.discontinuity(name, ch, info));
          // A refused (re)subscription ends delivery on the channel: record it, it must not happen.
          channel.on('error', (err) =>
            channelErrors.push(`${name} ${ch}: ${err.code} ${err.message}`),
          );
          await channel.subscribe((m) => oracle.received(name, m));
        }
      }),
    );

    // Publishers: paced, round-robin over the channels, through the same proxies.
    const publishers = Array.from({ length: PUBLISHERS }, (_, i) =>
      sdkClient(cleanup, {
        endpoints: endpoints(i),
        ...options,
        // A publish is re-sent after every reconnect; only give up on one that is truly stuck.
        requestTimeoutMs: 30_000,
      }),
    );
    const inflight = new Set<Promise<unknown>>();
    const t0 = Date.now();
    const loops = publishers.map((c, i) =>
      pace(RATE / PUBLISHERS, (n) => {
        const ch = channels[n % CHANNELS] as string;
        const { stored } = oracle.publish(`pub${i}`, ch, (data) =>
          c.channels.get(ch).publish({ name: 'chaos', data }),
        );
        inflight.add(stored);
        void stored.finally(() => inflight.delete(stored));
      }),
    );

    // Chaos: reset every socket on both proxies every ~3 s (jittered ±20%). Every other round on
    // average, one proxy is reset again 50-400 ms later, catching clients in the middle of
    // reconnecting and resuming (the resume is then interrupted and must be redone).
    let rounds = 0;
    let resets = 0;
    let chaosTimer: ReturnType<typeof setTimeout> | undefined;
    let tapTimer: ReturnType<typeof setTimeout> | undefined;
    const scheduleChaos = (): void => {
      chaosTimer = setTimeout(
        () => {
          rounds++;
          for (const p of proxies) resets += p.reset();
          if (Math.random() < 0.5) {
            const p = proxies[Math.floor(Math.random() * proxies.length)] as FaultProxy;
            tapTimer = setTimeout(() => (resets += p.reset()), 50 + 350 * Math.random());
          }
          scheduleChaos();
        },
        RESET_EVERY_MS * (0.8 + 0.4 * Math.random()),
      );
    };
    scheduleChaos();
    try {
      await new Promise((r) => setTimeout(r, SECONDS * 1000));
    } finally {
      clearTimeout(chaosTimer);
      clearTimeout(tapTimer);
      for (const l of loops) l.stop();
    }
    const publishSeconds = (Date.now() - t0) / 1000;

    // Drain: every publish settled, then a fence per channel that every subscriber must receive.
    await eventually(() => inflight.size === 0, 60_000, 'every publish acknowledged', 50);
    const fences: [string, Stamp][] = [];
    for (const ch of channels) {
      const { stamp, stored } = oracle.publish('fence', ch, (data) =>
        (publishers[0] as Switchboard).channels.get(ch).publish({ name: 'fence', data }),
      );
      fences.push([ch, stamp]);
      await stored;
    }
    const fenced = (i: number): boolean =>
      fences.every(([ch, stamp]) => oracle.deliveries(`sub${i}`, ch, stamp) > 0);
    await eventually(
      () => subscribers.every((_, i) => fenced(i)),
      60_000,
      'every subscriber to receive the fences',
      100,
    ).catch(async (err: Error) => {
      // Say who is stuck where and what the nodes saw, so a failure can be diagnosed from the
      // output alone.
      const stuck = subscribers.flatMap((c, i) =>
        fenced(i)
          ? []
          : [
              `sub${i} ${c.connection.state} ${c.connection.url} ${transportOf(c)} ` +
                channels
                  .map(
                    (ch) =>
                      `${ch}@${JSON.stringify(c.channels.get(ch).position)} missing ${oracle.missing(`sub${i}`, ch)}`,
                  )
                  .join(', ') +
                ` states ${(states[i] as string[]).slice(-6).join(' ')}`,
            ],
      );
      const numsub = redis.cli('PUBSUB', 'NUMSUB', ...channels.map((c) => `chaos:p:{${c}}`));
      const nodeReports = await Promise.all(
        nodes.map(async (n, i) => {
          const counts = new Map<string, number>();
          for (const line of n.output().split('\n')) {
            const m = /"level":(40|50|60).*"msg":"([^"]*)"/.exec(line);
            if (m !== null) counts.set(m[2] as string, (counts.get(m[2] as string) ?? 0) + 1);
          }
          const t0 = Date.now();
          const ready = await fetch(`${n.url}/readyz`).then((r) => r.status, String);
          const history = await restHistory(n, channels[0] as string).then(
            (h) => `${h.length} entries`,
            String,
          );
          return (
            `node ${i}: readyz ${ready}, history ${history} in ${Date.now() - t0} ms, ` +
            `warnings ${JSON.stringify(Object.fromEntries(counts))}`
          );
        }),
      );
      const report = oracle.report();
      throw new Error(
        `${err.message}: ${stuck.length} subscribers stuck\n${stuck.slice(0, 10).join('\n')}\n` +
          `channel errors: ${channelErrors.slice(0, 10).join('; ')}\n${summarize(report)}\n` +
          `examples: ${report.examples.slice(0, 6).join('; ')}\n` +
          `redis PING ${redis.cli('PING').trim()}, PUBSUB NUMSUB ${numsub.trim().split('\n').join(' ')}\n` +
          nodeReports.join('\n'),
      );
    });
    const report = oracle.report();

    const resumesTrue = (await Promise.all(
      nodes.map((n) => metric(n, 'switchboard_resumes_total', { recovered: 'true' })),
    )) as [number, number];
    const resumesFalse = (await Promise.all(
      nodes.map((n) => metric(n, 'switchboard_resumes_total', { recovered: 'false' })),
    )) as [number, number];
    const transports = new Map<string, number>();
    for (const c of [...subscribers, ...publishers])
      transports.set(transportOf(c), (transports.get(transportOf(c)) ?? 0) + 1);
    const reconnects = states.reduce((n, s) => n + s.filter((x) => x === 'connected').length, 0);
    const summary =
      `chaos summary: ${publishSeconds.toFixed(1)} s, ${CLIENTS} clients x ${CHANNELS} channels, ` +
      `${rounds} reset rounds, ${resets} connections reset, ${reconnects} subscriber reconnects, ` +
      `transports at the end ${JSON.stringify(Object.fromEntries(transports))}; ` +
      `${summarize(report)}; ${tally.summary()}; ` +
      `metrics resumes recovered=true A=${resumesTrue[0]} B=${resumesTrue[1]}, ` +
      `recovered=false A=${resumesFalse[0]} B=${resumesFalse[1]}`;
    t.diagnostic(summary);

    assert.deepEqual(channelErrors, [], 'no subscription refused');
    assert.deepEqual(
      violations(report),
      [],
      `${summary}\nexamples:\n${report.examples.join('\n')}`,
    );
    assert.equal(report.acknowledged, report.published, 'every publish acknowledged');
    assert.equal(report.unacknowledgedDelivered, 0);
    assert.equal(report.expected, CLIENTS * report.acknowledged, 'every message expected by all');
    assert.ok(rounds >= Math.floor(SECONDS / 4), `${rounds} reset rounds`);
    assert.ok(reconnects >= (CLIENTS * rounds) / 2, `clients reconnected after resets`);
    // The wire tally sees WebSocket resumes only; the nodes' counters see every transport.
    assert.equal(tally.unrecovered, 0, 'every resume seen on the wire answered recovered: true');
    assert.equal(tally.falseRecoveries, 0);
    assert.equal(resumesFalse[0] + resumesFalse[1], 0, 'no recovered=false resume on any node');
    assert.ok(resumesTrue[0] > 0 && resumesTrue[1] > 0, 'both nodes resumed clients');
    assert.ok(
      resumesTrue[0] + resumesTrue[1] >= tally.recovered,
      'the nodes counted every resume the clients saw answered',
    );
    for (const n of nodes) assert.equal(n.child.exitCode, null, 'node still running');
  },
);
