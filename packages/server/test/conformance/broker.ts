/**
 * One suite every Broker implementation must pass (hono's common.case pattern): offsets, epochs,
 * history windows, idempotency, delivery only while subscribed.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { encodeMessageHead } from '@switchboard/protocol';
import type { Broker, BrokerHandler, PublishRequest } from '../../src/index.js';
import { eventually } from '../helpers.js';

interface Delivery {
  channel: string;
  frame: string;
  offset: number | undefined;
  epoch: string | undefined;
}

class RecordingHandler implements BrokerHandler {
  readonly deliveries: Delivery[] = [];
  resubscribed = 0;
  onPublication(
    channel: string,
    frame: Buffer,
    offset: number | undefined,
    epoch: string | undefined,
  ): void {
    this.deliveries.push({ channel, frame: frame.toString(), offset, epoch });
  }
  onResubscribed(): void {
    this.resubscribed++;
  }
  readonly controls: { topic: string; payload: string }[] = [];
  onControl(topic: string, payload: Buffer): void {
    this.controls.push({ topic, payload: payload.toString() });
  }
}

let seq = 0;
function request(
  channel: string,
  data: unknown,
  opts: Partial<PublishRequest> = {},
): PublishRequest {
  const id = opts.id ?? `m${++seq}`;
  return {
    channel,
    id,
    head: encodeMessageHead({ channel, dataJson: JSON.stringify(data), id, timestamp: 1 }),
    history: { size: 100, ttlMs: 60_000 },
    dedupeMs: 0,
    ...opts,
  };
}

export interface BrokerFixture {
  broker: Broker;
  /** Makes the backend forget everything, as a restart without persistence would. */
  wipe?: () => Promise<void>;
}

/** `lossy`: the fixture provides wipe(), so the suite also proves the epoch changes on a lost stream. */
export function runBrokerSuite(
  name: string,
  make: () => Promise<BrokerFixture>,
  options: { lossy: boolean },
): void {
  describe(`${name} (broker conformance)`, () => {
    let fx: BrokerFixture;
    let handler: RecordingHandler;
    let n = 0;
    const fresh = (): string => `conf-${process.pid}-${Date.now().toString(36)}-${++n}`;

    before(async () => {
      fx = await make();
      handler = new RecordingHandler();
      await fx.broker.start(handler);
    });
    after(async () => {
      await fx.broker.close();
    });

    it('assigns consecutive offsets from 1 within one epoch', async () => {
      const ch = fresh();
      const results = [];
      for (let i = 0; i < 5; i++) results.push(await fx.broker.publish(request(ch, i)));
      assert.deepEqual(
        results.map((r) => r.offset),
        [1, 2, 3, 4, 5],
      );
      assert.equal(new Set(results.map((r) => r.epoch)).size, 1);
      assert.ok(results.every((r) => !r.duplicate));
    });

    it('keeps offsets per channel', async () => {
      const a = fresh();
      const b = fresh();
      await fx.broker.publish(request(a, 1));
      await fx.broker.publish(request(a, 2));
      const rb = await fx.broker.publish(request(b, 1));
      assert.equal(rb.offset, 1);
    });

    it('delivers to the handler only while subscribed, with offset and epoch in the frame', async () => {
      const ch = fresh();
      await fx.broker.publish(request(ch, 'before'));
      await fx.broker.subscribe(ch);
      const r = await fx.broker.publish(request(ch, 'during'));
      await eventually(() => handler.deliveries.some((d) => d.channel === ch), 5000, 'delivery');
      await fx.broker.unsubscribe(ch);
      await fx.broker.publish(request(ch, 'after'));
      // a marker on another subscribed channel proves later deliveries would have arrived by now
      const marker = fresh();
      await fx.broker.subscribe(marker);
      await fx.broker.publish(request(marker, 'm'));
      await eventually(() => handler.deliveries.some((d) => d.channel === marker), 5000, 'marker');
      await fx.broker.unsubscribe(marker);
      const got = handler.deliveries.filter((d) => d.channel === ch);
      assert.equal(got.length, 1);
      const d = got[0] as Delivery;
      assert.equal(d.offset, r.offset);
      assert.equal(d.epoch, r.epoch);
      const frame = JSON.parse(d.frame) as Record<string, unknown>;
      assert.equal(frame['message'], 'during');
      assert.equal(frame['offset'], r.offset);
      assert.equal(frame['epoch'], r.epoch);
      assert.equal(frame['channel'], ch);
    });

    it('returns history forwards, backwards and since an offset', async () => {
      const ch = fresh();
      for (let i = 1; i <= 10; i++) await fx.broker.publish(request(ch, i));
      const all = await fx.broker.history(ch, { limit: 100 });
      assert.deepEqual(
        all.entries.map((e) => e.offset),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
      );
      assert.equal(all.position.offset, 10);
      assert.equal(
        (JSON.parse(all.entries[0]?.frame.toString() ?? '') as { message: number }).message,
        1,
      );
      const since = await fx.broker.history(ch, { sinceOffset: 7, limit: 100 });
      assert.deepEqual(
        since.entries.map((e) => e.offset),
        [8, 9, 10],
      );
      const firstTwo = await fx.broker.history(ch, { limit: 2 });
      assert.deepEqual(
        firstTwo.entries.map((e) => e.offset),
        [1, 2],
      );
      const lastThree = await fx.broker.history(ch, { limit: 3, reverse: true });
      assert.deepEqual(
        lastThree.entries.map((e) => e.offset),
        [10, 9, 8],
      );
      const before = await fx.broker.history(ch, { untilOffset: 4, limit: 100, reverse: true });
      assert.deepEqual(
        before.entries.map((e) => e.offset),
        [3, 2, 1],
      );
      const window = await fx.broker.history(ch, { sinceOffset: 2, untilOffset: 6, limit: 100 });
      assert.deepEqual(
        window.entries.map((e) => e.offset),
        [3, 4, 5],
      );
      const none = await fx.broker.history(ch, { untilOffset: 1, limit: 100, reverse: true });
      assert.deepEqual(none.entries, []);
      const top = await fx.broker.history(ch, { limit: 0 });
      assert.deepEqual(top.entries, []);
      assert.equal(top.position.offset, 10);
      assert.equal(top.position.epoch, all.position.epoch);
    });

    it('gives an unknown channel a stable epoch at offset 0', async () => {
      const ch = fresh();
      const a = await fx.broker.history(ch, { limit: 10 });
      const b = await fx.broker.history(ch, { limit: 10 });
      assert.equal(a.position.offset, 0);
      assert.equal(a.position.epoch, b.position.epoch);
      const r = await fx.broker.publish(request(ch, 1));
      assert.equal(r.epoch, a.position.epoch);
      assert.equal(r.offset, 1);
    });

    it('trims history to its size (offsets keep growing)', async () => {
      const ch = fresh();
      for (let i = 1; i <= 30; i++)
        await fx.broker.publish(request(ch, i, { history: { size: 5, ttlMs: 60_000 } }));
      const h = await fx.broker.history(ch, { limit: 100 });
      assert.equal(h.position.offset, 30);
      // Redis trims approximately (MAXLEN ~); both keep at least the last 5, and never more than 30.
      const offsets = h.entries.map((e) => e.offset);
      assert.ok(offsets.length >= 5 && offsets.length <= 30, `kept ${offsets.length}`);
      assert.deepEqual(offsets.slice(-5), [26, 27, 28, 29, 30]);
    });

    it('expires history after its ttl but keeps the epoch and offset', async () => {
      const ch = fresh();
      const r1 = await fx.broker.publish(request(ch, 1, { history: { size: 10, ttlMs: 1000 } }));
      await eventually(
        async () => (await fx.broker.history(ch, { limit: 10 })).entries.length === 0,
        5000,
        'history expiry',
        100,
      );
      const h = await fx.broker.history(ch, { limit: 10 });
      assert.equal(h.position.offset, 1);
      assert.equal(h.position.epoch, r1.epoch);
      const r2 = await fx.broker.publish(request(ch, 2));
      assert.equal(r2.offset, 2);
    });

    it('stores a repeated id once inside the dedupe window and returns the original offset', async () => {
      const ch = fresh();
      const first = await fx.broker.publish(request(ch, 'a', { id: 'same', dedupeMs: 60_000 }));
      const again = await fx.broker.publish(request(ch, 'a', { id: 'same', dedupeMs: 60_000 }));
      const other = await fx.broker.publish(request(ch, 'b', { id: 'other', dedupeMs: 60_000 }));
      assert.equal(first.duplicate, false);
      assert.equal(again.duplicate, true);
      assert.equal(again.offset, first.offset);
      assert.equal(again.epoch, first.epoch);
      assert.equal(other.offset, first.offset + 1);
      const h = await fx.broker.history(ch, { limit: 10 });
      assert.equal(h.entries.length, 2);
    });

    it('does not dedupe when the window is 0', async () => {
      const ch = fresh();
      const a = await fx.broker.publish(request(ch, 'a', { id: 'x' }));
      const b = await fx.broker.publish(request(ch, 'a', { id: 'x' }));
      assert.equal(b.duplicate, false);
      assert.equal(b.offset, a.offset + 1);
    });

    it('keeps order of concurrent publishes issued in sequence', async () => {
      const ch = fresh();
      await fx.broker.subscribe(ch);
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) => fx.broker.publish(request(ch, i))),
      );
      assert.deepEqual(
        results.map((r) => r.offset),
        Array.from({ length: 50 }, (_, i) => i + 1),
      );
      await eventually(
        () => handler.deliveries.filter((d) => d.channel === ch).length === 50,
        5000,
        '50 deliveries',
      );
      const data = handler.deliveries
        .filter((d) => d.channel === ch)
        .map((d) => (JSON.parse(d.frame) as { message: number }).message);
      assert.deepEqual(
        data,
        Array.from({ length: 50 }, (_, i) => i),
      );
      await fx.broker.unsubscribe(ch);
    });

    it('delivers control messages only on subscribed topics', async () => {
      const topic = fresh();
      assert.equal(await fx.broker.publishControl(topic, 'unheard'), 0, 'no receiver yet');
      await fx.broker.subscribeControl(topic);
      assert.equal(await fx.broker.publishControl(topic, 'heard'), 1, 'one receiver');
      await eventually(
        () => handler.controls.some((c) => c.topic === topic),
        5000,
        'control message',
      );
      await fx.broker.unsubscribeControl(topic);
      assert.equal(await fx.broker.publishControl(topic, 'after'), 0, 'no receiver after');
      const marker = fresh();
      await fx.broker.subscribeControl(marker);
      await fx.broker.publishControl(marker, 'm');
      await eventually(() => handler.controls.some((c) => c.topic === marker), 5000, 'marker');
      assert.deepEqual(
        handler.controls.filter((c) => c.topic === topic).map((c) => c.payload),
        ['heard'],
      );
    });

    if (options.lossy)
      it('starts a new epoch when the backend lost the stream', async () => {
        assert.ok(fx.wipe, 'a lossy fixture provides wipe()');
        const ch = fresh();
        const before = await fx.broker.publish(request(ch, 1));
        await fx.wipe?.();
        const afterWipe = await eventually(
          async () => {
            try {
              await fx.broker.publish(request(ch, 2));
              return true;
            } catch {
              return false;
            }
          },
          10_000,
          'publish after wipe',
          100,
        ).then(() => fx.broker.history(ch, { limit: 10 }));
        assert.notEqual(afterWipe.position.epoch, before.epoch);
        assert.equal(afterWipe.position.offset, 1);
      });
  });
}
