/**
 * Continuity across faults (Guarantees 2-5), SDK clients against real redis-server and switchboard
 * processes, checked by the message oracle (oracle.ts):
 *
 * (a) kill -9 of a node: its clients move to the other node and resume, nothing lost or repeated.
 * (b) Redis restarted without persistence: a new epoch; clients are told (discontinuity /
 *     recovered: false) and never falsely recovered, even once the new stream's offsets pass theirs.
 * (c) history trimmed past a client's position: recovered: false and nothing of the gap replayed.
 * (d) the connection cut after the store but before the ack: the SDK re-sends, one copy stored.
 * (e) the nodes' Redis pub/sub link killed during traffic: the node repairs the gap from the
 *     stream, subscribers get everything once, in order, without reconnecting.
 * (f) Redis frozen past the command timeout: publishes answered 118 (outcome unknown) are retried
 *     by the SDK with the same ids, and each is stored once.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import {
  eventually,
  requireBinary,
  type NodeProcess,
  type RedisProcess,
} from '../../server/test/helpers.js';
import type { Switchboard, SwitchboardOptions } from '../src/index.js';
import {
  Cleanup,
  FaultProxy,
  ResumeTally,
  metric,
  nodeFor,
  pace,
  ready,
  redisFor,
  restHistory,
  restartRedis,
  sdkClient,
  stateLog,
  tallyingWebSocket,
} from './continuity-kit.js';
import { Oracle, summarize, violations, type Stamp, type Stored } from './oracle.js';

const skip = requireBinary('redis-server') || requireBinary('redis-cli');
const PREFIX = 'cont:';

interface Rig {
  readonly cleanup: Cleanup;
  readonly oracle: Oracle;
  readonly tally: ResumeTally;
  /** SDK options: the tallying WebSocket and a short backoff. */
  readonly options: Partial<SwitchboardOptions>;
}

function rig(t: TestContext): Rig {
  const cleanup = new Cleanup();
  t.after(() => cleanup.run());
  const tally = new ResumeTally();
  return {
    cleanup,
    oracle: new Oracle(),
    tally,
    options: { WebSocket: tallyingWebSocket(tally), backoff: { baseMs: 100, capMs: 1000 } },
  };
}

/** Subscribes `client` (oracle name `name`) to `channels`, watched from the start. */
async function subscribeAll(
  oracle: Oracle,
  name: string,
  client: Switchboard,
  channels: readonly string[],
): Promise<void> {
  for (const ch of channels) {
    const channel = client.channels.get(ch);
    oracle.watch(name, ch);
    channel.on('discontinuity', (info) => oracle.discontinuity(name, ch, info));
    await channel.subscribe((m) => oracle.received(name, m));
  }
}

/** Publishes `count` stamped messages per channel through `client` at once; resolves with the acks. */
async function burst(
  oracle: Oracle,
  publisher: string,
  client: Switchboard,
  channels: readonly string[],
  count: number,
): Promise<{ stamp: Stamp; channel: string; stored: Stored }[]> {
  const sent = channels.flatMap((channel) =>
    Array.from({ length: count }, () => {
      const r = oracle.publish(publisher, channel, (data) =>
        client.channels.get(channel).publish({ name: 'n', data }),
      );
      return { channel, ...r };
    }),
  );
  const out: { stamp: Stamp; channel: string; stored: Stored }[] = [];
  for (const s of sent) {
    const stored = await s.stored;
    assert.ok(stored, `publish ${s.channel} ${s.stamp.p}#${s.stamp.s} acknowledged`);
    out.push({ stamp: s.stamp, channel: s.channel, stored });
  }
  return out;
}

/** Waits until every watched subscriber has every acknowledged message it should have. */
async function drained(
  oracle: Oracle,
  names: readonly string[],
  channels: readonly string[],
  timeoutMs = 15_000,
): Promise<void> {
  await eventually(
    () => names.every((n) => channels.every((ch) => oracle.missing(n, ch) === 0)),
    timeoutMs,
    'every subscriber to have every acknowledged message',
    50,
  );
}

/** A paced publisher loop whose publishes can all be awaited. */
function steadyPublisher(
  oracle: Oracle,
  publisher: string,
  client: Switchboard,
  channels: readonly string[],
  perSecond: number,
): { stop(): Promise<void> } {
  const inflight = new Set<Promise<unknown>>();
  const loop = pace(perSecond, (n) => {
    const ch = channels[n % channels.length] as string;
    const { stored } = oracle.publish(publisher, ch, (data) =>
      client.channels.get(ch).publish({ name: 'n', data }),
    );
    inflight.add(stored);
    void stored.finally(() => inflight.delete(stored));
  });
  return {
    async stop() {
      loop.stop();
      await eventually(() => inflight.size === 0, 30_000, `${publisher}'s publishes settled`, 20);
    },
  };
}

/** Asserts the oracle found nothing wrong; returns its summary line. */
function clean(
  t: TestContext,
  oracle: Oracle,
  label: string,
  allowDiscontinuities = false,
): string {
  const report = oracle.report();
  const line = `${label}: ${summarize(report)}`;
  t.diagnostic(line);
  assert.deepEqual(
    violations(report, allowDiscontinuities),
    [],
    `${line}\nexamples:\n${report.examples.join('\n')}`,
  );
  assert.equal(report.unacknowledgedDelivered, 0, line);
  return line;
}

function numsub(redis: RedisProcess, channels: readonly string[]): number[] {
  return redis
    .cli('PUBSUB', 'NUMSUB', ...channels.map((c) => `${PREFIX}p:{${c}}`))
    .trim()
    .split('\n')
    .filter((_, i) => i % 2 === 1)
    .map(Number);
}

void test(
  '(a) kill -9 of node A while publishing continues to B: its clients move to B and resume, 0 lost, 0 duplicated',
  { skip, timeout: 60_000 },
  async (t) => {
    const { cleanup, oracle, tally, options } = rig(t);
    const redis = await redisFor(cleanup);
    const a = await nodeFor(cleanup, redis, ['--redis-prefix', PREFIX]);
    const b = await nodeFor(cleanup, redis, ['--redis-prefix', PREFIX]);
    const channels = ['kill-0', 'kill-1', 'kill-2'];
    const subs: Switchboard[] = [];
    const names: string[] = [];
    for (let i = 0; i < 20; i++) {
      const endpoints = i % 2 === 0 ? [a.wsUrl, b.wsUrl] : [b.wsUrl, a.wsUrl];
      const c = sdkClient(cleanup, { endpoints, ...options });
      subs.push(c);
      names.push(`sub${i}`);
    }
    await Promise.all(subs.map((c, i) => subscribeAll(oracle, `sub${i}`, c, channels)));
    const onA = subs.filter((c) => c.connection.url === a.wsUrl);
    assert.equal(onA.length, 10, 'half the clients on A');
    const states = onA.map((c) => stateLog(c));

    // One publisher stays on B; one starts on A and has to move too (its unacked publishes re-sent).
    const pubB = sdkClient(cleanup, { endpoints: [b.wsUrl], ...options });
    const pubA = sdkClient(cleanup, { endpoints: [a.wsUrl, b.wsUrl], ...options });
    const loops = [
      steadyPublisher(oracle, 'pubB', pubB, channels, 60),
      steadyPublisher(oracle, 'pubA', pubA, channels, 60),
    ];
    let stopped = false;
    const stopAll = async (): Promise<void> => {
      if (stopped) return;
      stopped = true;
      await Promise.all(loops.map((l) => l.stop()));
    };
    cleanup.add(stopAll);

    const flowing = (min: number): boolean =>
      names.every((n) => channels.every((ch) => oracle.deliveredTo(n, ch) >= min));
    await eventually(() => flowing(40), 10_000, 'traffic reaching every subscriber');
    const killedAt = Date.now();
    assert.equal(await a.stop('SIGKILL'), null, 'A killed by the signal');
    await eventually(
      () =>
        [...onA, pubA].every(
          (c) => c.connection.state === 'connected' && c.connection.url === b.wsUrl,
        ),
      15_000,
      "A's clients connected to B",
    );
    const movedMs = Date.now() - killedAt;
    // Keep publishing until the moved clients got a good share of messages after moving.
    const after = names.map((n) => channels.map((ch) => oracle.deliveredTo(n, ch)));
    await eventually(
      () =>
        names.every((n, i) =>
          channels.every((ch, j) => oracle.deliveredTo(n, ch) >= (after[i]?.[j] ?? 0) + 60),
        ),
      10_000,
      'traffic after the move',
    );
    await stopAll();
    await drained(oracle, names, channels);

    clean(t, oracle, '(a) kill -9');
    const resumedOnB = await metric(b, 'switchboard_resumes_total', { recovered: 'true' });
    const unrecoveredOnB = await metric(b, 'switchboard_resumes_total', { recovered: 'false' });
    t.diagnostic(
      `(a) moved in ${movedMs} ms; ${tally.summary()}; B resumes true=${resumedOnB} false=${unrecoveredOnB}`,
    );
    // The server's counters see resumes on every transport; the wire tally only WebSocket ones.
    assert.equal(tally.unrecovered, 0, tally.summary());
    assert.equal(tally.falseRecoveries, 0, tally.summary());
    assert.equal(unrecoveredOnB, 0);
    assert.ok(resumedOnB >= onA.length * channels.length, `B resumed them (${resumedOnB})`);
    for (const s of states)
      assert.ok(s.includes('disconnected(1006)'), `dropped abruptly: ${s.join(' ')}`);
  },
);

void test(
  '(b) Redis restarted without persistence: a new epoch; discontinuity / recovered:false, never a false recovery, also after offsets are reused',
  { skip, timeout: 60_000 },
  async (t) => {
    const { cleanup, oracle, tally, options } = rig(t);
    const redis = await redisFor(cleanup);
    const nodes = [
      await nodeFor(cleanup, redis, ['--redis-prefix', PREFIX]),
      await nodeFor(cleanup, redis, ['--redis-prefix', PREFIX]),
    ] as const;
    const [a, b] = nodes;
    const proxies = await Promise.all(nodes.map((n) => FaultProxy.start(cleanup, n.port)));
    const [pa, pb] = proxies as [FaultProxy, FaultProxy];
    const channels = ['epoch-0', 'epoch-1'];
    // "live" clients stay connected to the nodes throughout; "away" clients (behind the proxies)
    // are offline from before the restart until the new stream has passed their offsets.
    const live: string[] = [];
    const away: string[] = [];
    const awayClients: Switchboard[] = [];
    const subscribing: Promise<void>[] = [];
    for (let i = 0; i < 6; i++) {
      const direct = i % 2 === 0 ? [a.wsUrl, b.wsUrl] : [b.wsUrl, a.wsUrl];
      const c = sdkClient(cleanup, { endpoints: direct, ...options });
      live.push(`live${i}`);
      subscribing.push(subscribeAll(oracle, `live${i}`, c, channels));
      const proxied = i % 2 === 0 ? [pa.wsUrl, pb.wsUrl] : [pb.wsUrl, pa.wsUrl];
      const d = sdkClient(cleanup, { endpoints: proxied, ...options });
      away.push(`away${i}`);
      awayClients.push(d);
      subscribing.push(subscribeAll(oracle, `away${i}`, d, channels));
    }
    await Promise.all(subscribing);
    const pub = sdkClient(cleanup, { url: a.wsUrl, ...options });

    // Epoch 1: 20 messages per channel, delivered to everyone.
    // Epochs are per channel: the epoch of each channel's first life and of its second.
    const epochOf = (acks: { channel: string; stored: Stored }[]): Map<string, string> =>
      new Map(acks.map((x) => [x.channel, x.stored.epoch]));
    const first = await burst(oracle, 'pub', pub, channels, 20);
    const e1 = epochOf(first);
    await drained(oracle, [...live, ...away], channels);

    for (const p of proxies) {
      p.refusing = true;
      p.reset();
    }
    await eventually(
      () => awayClients.every((c) => c.connection.state !== 'connected'),
      5000,
      'away clients offline',
    );

    await restartRedis(redis);
    await ready(nodes);
    await eventually(
      () => numsub(redis, channels).every((n) => n === 2),
      10_000,
      'both nodes resubscribed after the restart',
    );

    // Epoch 2: more messages than the old offset, so offsets 1..20 exist again under a new epoch.
    const second = await burst(oracle, 'pub', pub, channels, 30);
    const e2 = epochOf(second);
    for (const ch of channels) {
      assert.notEqual(e2.get(ch), e1.get(ch), `${ch}: the lost stream got a new epoch`);
      const acks = second.filter((s) => s.channel === ch).map((s) => s.stored);
      assert.deepEqual(
        acks.map((s) => s.offset),
        Array.from({ length: 30 }, (_, i) => i + 1),
        `${ch}: offsets start again at 1`,
      );
      assert.ok(acks.every((s) => s.epoch === e2.get(ch)));
    }
    // Clients that stayed connected are told by the epoch change (reason "epoch").
    await eventually(
      () => live.every((n) => channels.every((ch) => oracle.discontinuitiesOf(n, ch).length > 0)),
      10_000,
      'live clients told about the new epoch',
    );
    await drained(oracle, live, channels);

    // The away clients come back holding (e1, 20) while the stream is at (e2, 30).
    for (const p of proxies) p.refusing = false;
    await eventually(
      () => away.every((n) => channels.every((ch) => oracle.discontinuitiesOf(n, ch).length > 0)),
      10_000,
      'away clients told recovered: false',
    );
    const third = await burst(oracle, 'pub', pub, channels, 10);
    await drained(oracle, [...live, ...away], channels);

    clean(t, oracle, '(b) Redis restart', true);
    t.diagnostic(
      `(b) epochs ${channels.map((ch) => `${ch} ${e1.get(ch)} -> ${e2.get(ch)}`).join(', ')}; ${tally.summary()}`,
    );
    for (const n of live)
      for (const ch of channels) {
        const d = oracle.discontinuitiesOf(n, ch);
        assert.equal(d.length, 1, `${n} ${ch}: one discontinuity, got ${JSON.stringify(d)}`);
        assert.equal(d[0]?.previous?.epoch, e1.get(ch));
        assert.equal(d[0]?.current?.epoch, e2.get(ch));
      }
    for (const n of away)
      for (const ch of channels) {
        const d = oracle.discontinuitiesOf(n, ch);
        assert.deepEqual(
          d,
          [
            {
              reason: 'unrecovered',
              previous: { offset: 20, epoch: e1.get(ch) },
              current: { offset: 30, epoch: e2.get(ch) },
            },
          ],
          `${n} ${ch}`,
        );
        // Nothing of the new stream up to its position was replayed as if it continued the old one.
        for (const s of second.filter((x) => x.channel === ch))
          assert.equal(oracle.deliveries(n, ch, s.stamp), 0, `${n} got ${ch} ${s.stamp.s} of e2`);
        for (const s of third.filter((x) => x.channel === ch))
          assert.equal(oracle.deliveries(n, ch, s.stamp), 1, `${n} got live ${ch} ${s.stamp.s}`);
      }
    // Every resume the wire tally saw (WebSocket ones) was answered recovered: false, from e1 to e2.
    assert.equal(tally.falseRecoveries, 0, tally.summary());
    assert.equal(tally.recovered, 0, `no resume from an e1 position recovered: ${tally.summary()}`);
    for (const answer of tally.answers) {
      assert.equal(answer.since.epoch, e1.get(answer.channel));
      assert.equal(answer.recovered, false);
      assert.equal(answer.position?.epoch, e2.get(answer.channel));
    }
    const counted = await Promise.all(
      nodes.map(async (n) => [
        await metric(n, 'switchboard_resumes_total', { recovered: 'true' }),
        await metric(n, 'switchboard_resumes_total', { recovered: 'false' }),
      ]),
    );
    assert.equal(
      counted.reduce((s, [yes]) => s + (yes ?? 0), 0),
      0,
      'no node recovered an e1 position',
    );
    const unrecovered = counted.reduce((s, [, no]) => s + (no ?? 0), 0);
    t.diagnostic(`(b) nodes answered ${unrecovered} resumes recovered: false, 0 recovered: true`);
    assert.ok(
      unrecovered >= away.length * channels.length,
      `every away client's channel answered recovered: false (${unrecovered})`,
    );
  },
);

void test(
  '(c) history trimmed past a client position (--history-size 10): recovered:false, nothing of the gap replayed, live messages after',
  { skip, timeout: 60_000 },
  async (t) => {
    const { cleanup, oracle, tally, options } = rig(t);
    const redis = await redisFor(cleanup);
    // XADD MAXLEN ~ trims whole stream nodes only (stream-node-max-entries, default 100), so with
    // the default a 60-entry stream is never trimmed and the gap really is still in history (the
    // server then rightly recovers it). Smaller nodes make "~ 10" trim to about 10 entries.
    redis.cli('CONFIG', 'SET', 'stream-node-max-entries', '10');
    const a = await nodeFor(cleanup, redis, ['--redis-prefix', PREFIX, '--history-size', '10']);
    const pa = await FaultProxy.start(cleanup, a.port);
    const ch = 'trimmed';
    const x = sdkClient(cleanup, { url: pa.wsUrl, ...options });
    const w = sdkClient(cleanup, { url: a.wsUrl, ...options });
    await subscribeAll(oracle, 'x', x, [ch]);
    await subscribeAll(oracle, 'witness', w, [ch]);
    const pub = sdkClient(cleanup, { url: a.wsUrl, ...options });

    const before = await burst(oracle, 'pub', pub, [ch], 5);
    const epoch = before[0]?.stored.epoch as string;
    await drained(oracle, ['x', 'witness'], [ch]);
    pa.refusing = true;
    pa.reset();
    await eventually(() => x.connection.state !== 'connected', 5000, 'x offline');
    const missed = await burst(oracle, 'pub', pub, [ch], 50);
    const oldest = redis.cli('XRANGE', `${PREFIX}s:{${ch}}`, '-', '+', 'COUNT', '1').split('\n')[0];
    const oldestOffset = Number(oldest?.split('-')[0]);
    const length = Number(redis.cli('XLEN', `${PREFIX}s:{${ch}}`).trim());
    assert.ok(oldestOffset > 6, `history trimmed past x's position 5: oldest is ${oldest}`);

    pa.refusing = false;
    await eventually(
      () => oracle.discontinuitiesOf('x', ch).length > 0,
      10_000,
      'x told recovered: false',
    );
    const live = await burst(oracle, 'pub', pub, [ch], 5);
    await drained(oracle, ['x', 'witness'], [ch]);

    clean(t, oracle, '(c) history trimmed', true);
    t.diagnostic(`(c) stream length ${length}, oldest offset ${oldestOffset}; ${tally.summary()}`);
    assert.deepEqual(oracle.discontinuitiesOf('x', ch), [
      { reason: 'unrecovered', previous: { offset: 5, epoch }, current: { offset: 55, epoch } },
    ]);
    assert.deepEqual(oracle.discontinuitiesOf('witness', ch), []);
    for (const m of missed)
      assert.equal(oracle.deliveries('x', ch, m.stamp), 0, `gap message ${m.stamp.s} replayed`);
    for (const m of [...before, ...live])
      assert.equal(oracle.deliveries('x', ch, m.stamp), 1, `message ${m.stamp.s} once`);
    assert.equal(oracle.deliveredTo('witness', ch), 60, 'the witness got all 60');
    // What the wire tally saw (a WebSocket resume) and what the node counted (any transport).
    for (const r of tally.answers)
      assert.deepEqual(
        [r.since, r.recovered, r.position],
        [{ offset: 5, epoch }, false, { offset: 55, epoch }],
      );
    assert.ok((await metric(a, 'switchboard_resumes_total', { recovered: 'false' })) >= 1);
    assert.equal(await metric(a, 'switchboard_resumes_total', { recovered: 'true' }), 0);
  },
);

void test(
  '(d) connection cut after Redis stored a publish but before the ack: the SDK re-sends, one copy stored and delivered, the promise resolves once',
  { skip, timeout: 60_000 },
  async (t) => {
    const { cleanup, oracle, tally, options } = rig(t);
    const redis = await redisFor(cleanup);
    const a = await nodeFor(cleanup, redis, ['--redis-prefix', PREFIX]);
    const b = await nodeFor(cleanup, redis, ['--redis-prefix', PREFIX]);
    const ch = 'lost-ack';
    // Forwards normally, except that the first server → client chunk holding a publish reply
    // resets both sockets instead of being forwarded (its message ids are noted).
    let armed = false;
    let carry: Buffer = Buffer.alloc(0);
    const intercepted: string[] = [];
    const proxy = await FaultProxy.start(cleanup, a.port, {
      cutOnServerData: (chunk) => {
        if (!armed) return false;
        // A reply split across chunks: look at the tail of the previous chunk too.
        const text = Buffer.concat([carry, chunk]).toString('latin1');
        carry = chunk.subarray(Math.max(0, chunk.length - 64));
        if (!text.includes('"messageId"')) return false;
        for (const m of text.matchAll(/"messageId":"([^"]+)"/g)) intercepted.push(m[1] as string);
        armed = false;
        return true;
      },
    });
    const s1 = sdkClient(cleanup, { url: a.wsUrl, ...options });
    const s2 = sdkClient(cleanup, { url: b.wsUrl, ...options });
    await subscribeAll(oracle, 's1', s1, [ch]);
    await subscribeAll(oracle, 's2', s2, [ch]);
    const subStates = [stateLog(s1), stateLog(s2)];
    // After the cut the SDK moves on to the next endpoint: the re-send reaches node B, so the
    // idempotency key has to hold across nodes (it lives in Redis).
    const pub = sdkClient(cleanup, { endpoints: [proxy.wsUrl, b.wsUrl], ...options });
    const states = stateLog(pub);
    await burst(oracle, 'pub', pub, [ch], 2); // warm-up, acknowledged normally

    armed = true;
    const resolutions = new Map<string, number>();
    const sent = Array.from({ length: 5 }, () =>
      oracle.publish('pub', ch, (data) => {
        const id = `ack-${data.s}`;
        return pub.channels
          .get(ch)
          .publish({ id, name: 'n', data })
          .then((r) => {
            resolutions.set(id, (resolutions.get(id) ?? 0) + 1);
            return r;
          });
      }),
    );
    const acks = await Promise.all(sent.map((s) => s.stored));
    await drained(oracle, ['s1', 's2'], [ch]);

    clean(t, oracle, '(d) lost ack');
    t.diagnostic(
      `(d) intercepted ${intercepted.join(',')}; acks ${JSON.stringify(acks)}; states ${states.join(' ')}`,
    );
    assert.equal(proxy.resets, 1, 'the connection was cut once');
    assert.ok(intercepted.length >= 1, 'a publish reply was intercepted');
    assert.ok(states.includes('disconnected(1006)'), `publisher dropped: ${states.join(' ')}`);
    assert.equal(pub.connection.url, b.wsUrl, 'the re-send went to node B');
    for (const [i, s] of sent.entries()) {
      const id = `ack-${s.stamp.s}`;
      const ack = acks[i];
      assert.ok(ack, `${id} acknowledged`);
      assert.equal(resolutions.get(id), 1, `${id}: the promise resolved once`);
      if (intercepted.includes(id))
        assert.equal(ack.duplicate, true, `${id}: the re-send was recognised`);
    }
    const stored = await restHistory(a, ch);
    const ids = stored.map((m) => m.id);
    assert.equal(stored.length, 7, `7 messages stored: ${ids.join(',')}`);
    assert.equal(new Set(ids).size, 7, 'each id stored once');
    for (const [i, s] of sent.entries()) {
      const id = `ack-${s.stamp.s}`;
      const entry = stored.filter((m) => m.id === id);
      assert.equal(entry.length, 1, `${id} stored once`);
      assert.equal(entry[0]?.offset, acks[i]?.offset, `${id}: the ack carries the stored offset`);
      for (const sub of ['s1', 's2'])
        assert.equal(oracle.deliveries(sub, ch, s.stamp), 1, `${sub} got ${id} once`);
    }
    assert.deepEqual(subStates, [[], []], 'subscribers never had to reconnect');
    assert.equal(tally.sent, 0, 'subscribers never had to resume');
  },
);

void test(
  '(e) Redis pub/sub link killed during traffic: node A fills the gaps from the stream, its subscribers get every message once, in order, without reconnecting',
  { skip, timeout: 60_000 },
  async (t) => {
    const { cleanup, oracle, tally, options } = rig(t);
    const redis = await redisFor(cleanup);
    const a = await nodeFor(cleanup, redis, ['--redis-prefix', PREFIX]);
    const b = await nodeFor(cleanup, redis, ['--redis-prefix', PREFIX]);
    const channels = ['repair-0', 'repair-1', 'repair-2'];
    const names = Array.from({ length: 10 }, (_, i) => `sub${i}`);
    const subs = names.map(() => sdkClient(cleanup, { url: a.wsUrl, ...options }));
    await Promise.all(subs.map((c, i) => subscribeAll(oracle, names[i] as string, c, channels)));
    const states = subs.map((c) => stateLog(c));
    const pub = sdkClient(cleanup, { url: b.wsUrl, ...options });
    const loop = steadyPublisher(oracle, 'pubB', pub, channels, 150);
    let stopped = false;
    cleanup.add(async () => {
      if (!stopped) await loop.stop();
    });

    const total = (): number =>
      names.reduce((n, s) => n + channels.reduce((m, ch) => m + oracle.deliveredTo(s, ch), 0), 0);
    const resubscribeMs: number[] = [];
    let killed = 0;
    for (let k = 0; k < 3; k++) {
      const before = total();
      await eventually(
        () => total() >= before + names.length * 30,
        10_000,
        'traffic flowing before the kill',
      );
      const t0 = Date.now();
      killed += Number(redis.cli('CLIENT', 'KILL', 'TYPE', 'pubsub').trim());
      await eventually(
        () => numsub(redis, channels).every((n) => n === 1),
        10_000,
        `A resubscribed after kill ${k + 1}`,
        10,
      );
      resubscribeMs.push(Date.now() - t0);
    }
    const before = total();
    await eventually(() => total() >= before + names.length * 30, 10_000, 'traffic after kills');
    stopped = true;
    await loop.stop();
    await drained(oracle, names, channels);

    clean(t, oracle, '(e) pub/sub link killed');
    const repaired = await metric(a, 'switchboard_gap_repaired_messages_total');
    const closed3010 = await metric(a, 'switchboard_disconnects_total', { code: '3010' });
    t.diagnostic(
      `(e) ${killed} pubsub connections killed in 3 rounds; resubscribed in ${resubscribeMs.join('/')} ms; ` +
        `A gap_repaired_messages_total=${repaired}; 3010 closes=${closed3010}; ${tally.summary()}`,
    );
    assert.ok(killed >= 3, `A's subscriber connection killed each round (${killed})`);
    assert.equal(closed3010, 0, 'no subscriber closed with 3010');
    for (const s of states) assert.deepEqual(s, [], 'no reconnect was needed');
    assert.equal(tally.sent, 0, 'no resume was needed');
    assert.ok(repaired >= 0);
    for (const n of [a, b] as NodeProcess[]) assert.equal(n.child.exitCode, null);
  },
);

void test(
  '(f) Redis frozen (SIGSTOP) past redisCommandTimeoutMs: the SDK retries the publishes answered 118 with their ids; every one is stored exactly once',
  { skip, timeout: 60_000 },
  async (t) => {
    const { cleanup } = rig(t);
    const redis = await redisFor(cleanup);
    const node = await nodeFor(cleanup, redis, [
      '--redis-prefix',
      PREFIX,
      '--redis-command-timeout-ms',
      '300',
    ]);
    const pub = sdkClient(cleanup, {
      url: node.wsUrl,
      backoff: { baseMs: 100, capMs: 300 },
      publishRetries: 100,
    });
    const channel = pub.channels.get('frozen-sdk');
    await channel.publish('warm-up', 0);
    process.kill(redis.pid, 'SIGSTOP');
    cleanup.add(() => process.kill(redis.pid, 'SIGCONT'));
    const acks = Array.from({ length: 20 }, (_, i) => channel.publish('n', i + 1));
    try {
      // Every one of them was answered 118 at least once while Redis was frozen.
      await eventually(
        async () => (await metric(node, 'switchboard_command_errors_total', { code: '118' })) >= 20,
        10_000,
        '20 answers of 118',
      );
    } finally {
      process.kill(redis.pid, 'SIGCONT');
    }
    const results = await Promise.all(acks);
    const stored = await restHistory(node, 'frozen-sdk');
    t.diagnostic(
      `(f) ${results.filter((r) => r.duplicate).length} of 20 acknowledged as duplicates (stored by an attempt answered 118)`,
    );
    assert.deepEqual(
      stored.map((m) => m.message),
      Array.from({ length: 21 }, (_, i) => i),
      'each message stored once, in order',
    );
    assert.deepEqual(
      results.map((r) => r.offset),
      stored.slice(1).map((m) => m.offset),
      'each publish resolved with its stored position',
    );
    assert.deepEqual(
      results.map((r) => r.id),
      stored.slice(1).map((m) => m.id),
    );
  },
);
