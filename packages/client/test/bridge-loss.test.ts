/**
 * The raw-PUBLISH bridge (`--redis-bridge`) under subscriber-link loss (#16.6): two
 * `CLIENT KILL TYPE pubsub` while 2,000 raw PUBLISHes flow. Redis pub/sub is fire-and-forget, so
 * what is published while the node holds no bridge subscription reaches nobody; what must hold is
 * that nobody is left unaware: the SDK delivers every message it gets once and in order, and
 * every hole in the sequence is preceded by a `discontinuity` event (reason `lost`); the
 * tutorial-protocol client gets the same `{"event":"discontinuity"}` frame in its stream; the
 * node counts the loss windows (switchboard_bridge_*) and logs each at warn.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Redis } from 'ioredis';
import { WebSocket } from 'ws';
import {
  TestClient,
  eventually,
  requireBinary,
  startLoggedTestServer,
  startRedis,
} from '../../server/test/helpers.js';
import { Switchboard, type DiscontinuityInfo, type Message } from '../src/index.js';

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

const missing = requireBinary('redis-server');
const TOTAL = 2000;
const CHANNEL = 'iss.loss';

void test(
  'bridge: two CLIENT KILL TYPE pubsub during 2,000 raw PUBLISHes lose nothing silently',
  { skip: missing === false ? false : missing },
  async (t) => {
    const redis = await startRedis();
    cleanup.push(() => redis.stop(true));
    const s = await startLoggedTestServer({ redis: redis.url, redisBridge: ['iss.*'] });
    cleanup.push(() => s.close());
    const admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    cleanup.push(() => admin.disconnect());

    // What the SDK subscriber sees, in the order it sees it.
    const log: ({ seq: number } | { gap: DiscontinuityInfo })[] = [];
    let fence = false;
    const sdk = new Switchboard({ url: s.wsUrl, WebSocket, backoff: { baseMs: 20, capMs: 100 } });
    cleanup.push(() => sdk.close());
    const channel = sdk.channels.get(CHANNEL);
    channel.on('discontinuity', (gap) => log.push({ gap }));
    await channel.subscribe((m: Message) => {
      const data = m.data as { seq?: number; fence?: boolean };
      if (data.fence === true) fence = true;
      else if (typeof data.seq === 'number') log.push({ seq: data.seq });
    });
    const tutorial = await TestClient.open(s.wsUrl);
    cleanup.push(() => tutorial.ws.terminate());
    tutorial.send({ action: 'subscribe', channel: CHANNEL, id: 't' });
    await tutorial.until((fs) => fs.some((f) => f['reply'] === 't'), 5000, 'tutorial subscribed');

    const bridged = async (): Promise<boolean> =>
      Number(await admin.call('PUBSUB', 'NUMPAT')) === 1;
    let kills = 0;
    for (let seq = 1; seq <= TOTAL; seq++) {
      // The second kill waits for the first loss to be over, or it would kill nothing (under
      // load the resubscribe can take longer than the remaining publishes: wait for it).
      if (seq === 1300) await eventually(bridged, 5000, 'bridge subscribed after the first kill');
      if ((seq === 500 && kills === 0) || (seq === 1300 && kills === 1)) {
        const killed = Number(await admin.client('KILL', 'TYPE', 'pubsub'));
        assert.ok(killed >= 1, 'the bridge subscriber was killed');
        kills++;
      }
      await admin.publish(CHANNEL, JSON.stringify({ seq }));
    }
    assert.equal(kills, 2);
    await eventually(bridged, 5000, 'bridge subscribed again');
    // A fence after the second restore: once it is in, everything before it was delivered.
    await eventually(
      async () => {
        await admin.publish(CHANNEL, JSON.stringify({ fence: true }));
        return fence;
      },
      5000,
      'fence delivered',
    );

    const seqs = log.flatMap((e) => ('seq' in e ? [e.seq] : []));
    const gaps = log.flatMap((e) => ('gap' in e ? [e.gap] : []));
    for (let i = 1; i < seqs.length; i++)
      assert.ok((seqs[i] as number) > (seqs[i - 1] as number), `in order, once: ${seqs[i]}`);
    assert.ok(seqs.length < TOTAL, 'the kills cost messages (else the test proves nothing)');
    t.diagnostic(`received ${seqs.length} of ${TOTAL}, ${gaps.length} discontinuities`);
    // Every hole is announced right where it is, before the next message.
    let last = 0;
    let announced = false;
    for (const e of log) {
      if ('gap' in e) {
        announced = true;
        continue;
      }
      if (e.seq !== last + 1)
        assert.ok(announced, `messages ${last + 1}-${e.seq - 1} missing without a discontinuity`);
      last = e.seq;
      announced = false;
    }
    if (last !== TOTAL)
      assert.ok(announced, `the tail after ${last} missing without a discontinuity`);
    assert.ok(gaps.length >= 1 && gaps.length <= 2, `one discontinuity per loss: ${gaps.length}`);
    for (const gap of gaps) {
      assert.equal(gap.reason, 'lost');
      assert.ok(
        gap.from !== undefined && gap.until !== undefined && gap.until >= gap.from,
        JSON.stringify(gap),
      );
    }

    // The tutorial client's stream carries the same frames: messages, and the event at each hole.
    const events = tutorial.frames.filter((f) => f['event'] === 'discontinuity');
    assert.equal(events.length, gaps.length);
    for (const e of events) {
      assert.equal(e['channel'], CHANNEL);
      assert.equal(e['reason'], 'bridge');
    }
    assert.equal(tutorial.messages(CHANNEL).length, seqs.length + 1 /* the fence */);

    // The operator sees each loss window: counted, timed and logged.
    const metrics = await (await fetch(`${s.url}/metrics`)).text();
    assert.match(metrics, /^switchboard_bridge_gaps_total 2$/m);
    const seconds = Number(/^switchboard_bridge_gap_seconds_total (\S+)$/m.exec(metrics)?.[1]);
    assert.ok(seconds > 0, `loss window timed: ${seconds}`);
    const received = Number(/^switchboard_bridge_messages_total (\S+)$/m.exec(metrics)?.[1]);
    assert.ok(received >= seqs.length, `bridged messages counted: ${received}`);
    const warnings = s.logs.filter(
      (l) => l.level === 40 && String(l.msg).startsWith('redis bridge resubscribed'),
    );
    assert.equal(warnings.length, 2);
    for (const w of warnings) assert.ok(Number(w['lostMs']) >= 0);
  },
);
