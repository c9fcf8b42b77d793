import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { encodeMessageHead } from '@switchboard/protocol';
import { Redis } from 'ioredis';
import {
  PublishError,
  RedisBroker,
  RedisClusterBroker,
  createLogger,
  type Broker,
  type PublishRequest,
  type PublishResult,
} from '../src/index.js';
import {
  decodeBatchReply,
  PublishBatcher,
  type BatchReply,
  type PublishReply,
} from '../src/broker/redis-batch.js';
import type { ScriptCommands } from '../src/broker/redis.js';
import { fanoutLua, fanoutManyArgs, fanoutManyLua } from '../src/broker/redis-scripts.js';
import {
  FANOUT_BATCH,
  ReplicaGate,
  fanoutHeld,
  type HeldPayload,
} from '../src/broker/redis-wait.js';
import { eventually, requireBinary, startRedis, type RedisProcess } from './helpers.js';
import {
  logEveryCommand,
  startRedisCluster,
  topLevelCommands,
  type RedisClusterKit,
} from './redis-kit.js';

const HANDLER = { onPublication() {}, onResubscribed() {}, onControl() {} };

function request(channel: string, id: string, dedupeMs = 60_000): PublishRequest {
  return {
    channel,
    id,
    head: encodeMessageHead({ channel, dataJson: JSON.stringify({ id }), id, timestamp: 1 }),
    history: { size: 1000, ttlMs: 60_000 },
    dedupeMs,
  };
}

/** Script calls made so far on a redis-server (EVALSHA + EVAL, from INFO commandstats). */
function scriptCalls(server: { cli(...args: string[]): string }): number {
  const info = server.cli('INFO', 'commandstats');
  let n = 0;
  for (const m of info.matchAll(/^cmdstat_eval(?:sha)?:calls=(\d+)/gm)) n += Number(m[1]);
  return n;
}

/** WAIT calls made so far on a redis-server. */
function waitCalls(server: { cli(...args: string[]): string }): number {
  return Number(/^cmdstat_wait:calls=(\d+)/m.exec(server.cli('INFO', 'commandstats'))?.[1] ?? 0);
}

/** A handler recording the offsets delivered per channel. */
function recorder(): {
  handler: Omit<typeof HANDLER, 'onPublication'> & {
    onPublication(channel: string, frame: Uint8Array, offset?: number): void;
  };
  seen: Map<string, number[]>;
} {
  const seen = new Map<string, number[]>();
  return {
    seen,
    handler: {
      ...HANDLER,
      onPublication(channel: string, _frame: Uint8Array, offset?: number) {
        if (offset === undefined) return;
        const list = seen.get(channel) ?? [];
        list.push(offset);
        seen.set(channel, list);
      },
    },
  };
}

/**
 * 1,000 publishes over 20 channels issued in one turn: every channel's offsets follow call order
 * 1..50 with one epoch, and its history holds exactly those messages in that order.
 */
async function assertOrderAndOffsets(
  broker: Broker,
  prefix: string,
  published: () => void,
): Promise<void> {
  const channels = Array.from({ length: 20 }, (_, i) => `${prefix}-${i}`);
  const sent: { channel: string; id: string; result: Promise<PublishResult> }[] = [];
  for (let i = 0; i < 1000; i++) {
    const channel = channels[i % 20] as string;
    const id = `${prefix}-m${i}`;
    sent.push({ channel, id, result: broker.publish(request(channel, id)) });
  }
  const results = await Promise.all(sent.map((s) => s.result));
  published();
  for (const channel of channels) {
    const mine = sent.flatMap((s, i) => (s.channel === channel ? [{ ...s, r: results[i] }] : []));
    assert.deepEqual(
      mine.map((m) => m.r?.offset),
      Array.from({ length: 50 }, (_, i) => i + 1),
      `${channel}: offsets in call order`,
    );
    assert.equal(new Set(mine.map((m) => m.r?.epoch)).size, 1, `${channel}: one epoch`);
    assert.ok(mine.every((m) => m.r?.duplicate === false));
    const history = await broker.history(channel, { limit: 100 });
    assert.equal(history.position.offset, 50);
    assert.equal(history.position.epoch, mine[0]?.r?.epoch);
    assert.deepEqual(
      history.entries.map((e) => [e.offset, (JSON.parse(e.frame.toString()) as { id: string }).id]),
      mine.map((m, i) => [i + 1, m.id]),
      `${channel}: history in offset order`,
    );
  }
}

function reply(offset: number): PublishReply {
  return { offset, epoch: 'e', duplicate: false };
}

describe('decodeBatchReply', () => {
  it('reads epochs given once, duplicates as negative offsets, errors in place, payloads when gated', () => {
    const oom = new Error('OOM command not allowed');
    assert.deepEqual(decodeBatchReply(['e1', 1, 2, -1, oom, 'e2', 7, 'e1', 3], 6, false), [
      { offset: 1, epoch: 'e1', duplicate: false },
      { offset: 2, epoch: 'e1', duplicate: false },
      { offset: 1, epoch: 'e1', duplicate: true },
      oom,
      { offset: 7, epoch: 'e2', duplicate: false },
      { offset: 3, epoch: 'e1', duplicate: false },
    ]);
    assert.deepEqual(decodeBatchReply(['e', 4, '4 e 1 {}', oom, -2, ''], 3, true), [
      { offset: 4, epoch: 'e', duplicate: false, payload: '4 e 1 {}' },
      oom,
      { offset: 2, epoch: 'e', duplicate: true, payload: '' },
    ]);
  });

  it('answers the messages a short reply left out with an error each', () => {
    const [first, second] = decodeBatchReply(['e', 1], 2, false);
    assert.deepEqual(first, { offset: 1, epoch: 'e', duplicate: false });
    assert.ok(second instanceof Error && /too short/.test(second.message), 'an error');
  });
});

describe('PublishBatcher', () => {
  /** A batcher whose calls are recorded and answered by `answer` (offsets by call order). */
  function recording(limit: number, answer?: (batch: readonly PublishRequest[]) => BatchReply) {
    const calls: { group: string; ids: string[] }[] = [];
    let offset = 0;
    const batcher = new PublishBatcher({
      limit,
      send: (group, batch) => {
        calls.push({ group, ids: batch.map((r) => r.id) });
        return Promise.resolve(answer?.(batch) ?? batch.map((): PublishReply => reply(++offset)));
      },
    });
    return { batcher, calls };
  }

  it('sends the publishes of one turn as one call per group, in call order', async () => {
    const { batcher, calls } = recording(100);
    const replies = [
      batcher.publish('a', request('x', '1')),
      batcher.publish('b', request('y', '2')),
      batcher.publish('a', request('x', '3')),
    ];
    assert.equal(calls.length, 0, 'nothing sent before the end of the turn');
    const got = await Promise.all(replies.map((r) => r.reply));
    assert.deepEqual(calls, [
      { group: 'a', ids: ['1', '3'] },
      { group: 'b', ids: ['2'] },
    ]);
    assert.deepEqual(
      got.map((r) => r.offset),
      [1, 3, 2],
    );
  });

  it('sends a batch at once when it reaches the limit, and says so by `sent`', async () => {
    const { batcher, calls } = recording(2);
    const first = batcher.publish('a', request('x', '1'));
    const second = batcher.publish('a', request('x', '2'));
    assert.deepEqual(calls, [{ group: 'a', ids: ['1', '2'] }], 'sent within the turn');
    const third = batcher.publish('a', request('x', '3'));
    let thirdSent = false;
    void third.sent.then(() => (thirdSent = true));
    await first.sent;
    await second.sent;
    assert.equal(thirdSent, false, 'the next batch waits for the end of the turn');
    await third.sent;
    assert.equal(calls.length, 2);
    assert.equal((await third.reply).offset, 3);
  });

  it('rejects each message with its own error entry, and all of a failed call', async () => {
    const perMessage = recording(10, (batch) =>
      batch.map((r, i): PublishReply | Error =>
        r.id === 'bad' ? new Error('WRONGTYPE') : reply(i + 1),
      ),
    );
    const [ok, bad] = [
      perMessage.batcher.publish('a', request('x', 'good')),
      perMessage.batcher.publish('a', request('x', 'bad')),
    ];
    assert.deepEqual(await ok.reply, reply(1));
    await assert.rejects(bad.reply, /WRONGTYPE/);

    const failing = new PublishBatcher({
      limit: 10,
      send: () => Promise.reject(new Error('connection lost')),
    });
    const both = [failing.publish('a', request('x', '1')), failing.publish('a', request('y', '2'))];
    for (const b of both) await assert.rejects(b.reply, /connection lost/);
  });
});

/** A held payload of offset `n` (the gate and fanoutHeld only pass it on). */
function held(n: number): HeldPayload {
  return { pubsub: 'p', payload: `${n} e 1 {}`, meta: 'm', stream: 's', historySize: 10 };
}

describe('ReplicaGate#sendMany', () => {
  it('holds a batch as one send, fans its payloads out in order after the WAIT, and bounds by messages', async () => {
    const out: string[] = [];
    let fanouts = 0;
    let release: (acks: number) => void = () => {};
    const gate = new ReplicaGate(
      {
        wait: () => new Promise<number>((resolve) => (release = resolve)),
        fanout: (held) => {
          fanouts++;
          out.push(...held.map((h) => h.payload));
          return Promise.resolve([]);
        },
        ready: () => true,
      },
      { needed: () => 1, timeoutMs: 100, maxHeld: 4 },
    );
    assert.equal(gate.room, 4);
    const { stored, replicated } = gate.sendMany(
      3,
      () => Promise.resolve([1, 2, 3]),
      (offsets) => offsets.map(held),
    );
    assert.equal(gate.room, 1, 'the batch counts as 3 messages');
    assert.throws(
      () =>
        gate.sendMany(
          2,
          () => Promise.resolve([]),
          () => [],
        ),
      (err: unknown) => err instanceof PublishError && err.outcome === 'not-stored',
    );
    await stored;
    assert.equal(gate.held, 3);
    // The WAIT is sent in the turn after the send.
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(out, [], 'nothing out before the WAIT confirmed');
    release(1);
    await replicated;
    assert.deepEqual(out, ['1 e 1 {}', '2 e 1 {}', '3 e 1 {}']);
    assert.equal(fanouts, 1, 'what one WAIT released goes out in one fan-out call');
    assert.equal(gate.room, 4);
    gate.close();
  });

  it('fans out what one WAIT released in calls of FANOUT_BATCH at most, in order; what a call did not send is held again and checked at the next WAIT', async () => {
    const calls: { payloads: number[]; verify: boolean }[] = [];
    let acks: ((n: number) => void)[] = [];
    // The first call leaves its last two payloads unsent (their link dropped).
    const gate = new ReplicaGate(
      {
        wait: () => new Promise<number>((resolve) => acks.push(resolve)),
        fanout: (held, verify) => {
          calls.push({ payloads: held.map((h) => Number(h.payload.split(' ')[0])), verify });
          return Promise.resolve(calls.length === 1 ? held.slice(-2) : []);
        },
        ready: () => true,
      },
      { needed: () => 1, timeoutMs: 100, maxHeld: 1000 },
    );
    const n = FANOUT_BATCH * 2 + 10;
    const offsets = Array.from({ length: n }, (_, i) => i + 1);
    const first = gate.sendMany(
      n,
      () => Promise.resolve(offsets),
      (o) => o.map(held),
    );
    await first.stored;
    await eventually(() => acks.length === 1, 2000, 'the WAIT');
    acks[0]?.(1);
    await first.replicated;
    assert.deepEqual(
      calls.map((c) => [c.payloads.length, c.verify]),
      [
        [FANOUT_BATCH, false],
        [FANOUT_BATCH, false],
        [10, false],
      ],
    );
    assert.deepEqual(
      calls.flatMap((c) => c.payloads),
      offsets,
      'in storage order',
    );
    await eventually(() => gate.held === 2, 2000, 'the unsent two held again');
    // The link is back ('ready' kicks the gate): the next WAIT sends them with the entry check.
    acks = [];
    gate.kick();
    await eventually(() => acks.length === 1, 2000, 'the next WAIT');
    acks[0]?.(1);
    await eventually(() => calls.length === 4, 2000, 'their fan-out');
    assert.deepEqual(calls[3], { payloads: [FANOUT_BATCH - 1, FANOUT_BATCH], verify: true });
    assert.equal(gate.held, 0);
    gate.close();
  });
});

describe('fanoutHeld', () => {
  const replyError = (message: string): Error =>
    Object.assign(new Error(message), { name: 'ReplyError' });

  it('sends many in one call; when Redis refuses it, payload by payload, returning those not sent in order', async () => {
    const payloads = [1, 2, 3, 4].map(held);
    const one: string[] = [];
    assert.deepEqual(
      await fanoutHeld(
        payloads,
        () => Promise.resolve(4),
        () => Promise.reject(new Error('not used')),
      ),
      [],
    );
    const unsent = await fanoutHeld(
      payloads,
      () => Promise.reject(replyError('ERR Script attempted to access a non local key')),
      (h) => {
        one.push(h.payload);
        return h.payload.startsWith('2') || h.payload.startsWith('4')
          ? Promise.reject(replyError('WRONGTYPE'))
          : Promise.resolve(1);
      },
    );
    assert.deepEqual(
      one,
      payloads.map((h) => h.payload),
    );
    assert.deepEqual(unsent, [payloads[1], payloads[3]]);
  });

  it('rejects, sending nothing alone, when the call failed with its link', async () => {
    let alone = 0;
    await assert.rejects(
      fanoutHeld(
        [1, 2].map(held),
        () => Promise.reject(new Error('the Redis link was lost with the command in flight')),
        () => {
          alone++;
          return Promise.resolve(1);
        },
      ),
      /link was lost/,
    );
    assert.equal(alone, 0);
  });
});

const missing = requireBinary('redis-server');
if (missing === false) {
  describe('RedisBroker publish batching', () => {
    let redis: RedisProcess;
    let broker: RedisBroker;
    before(async () => {
      redis = await startRedis();
      broker = new RedisBroker({ url: redis.url, prefix: 'b:', logger: createLogger('silent') });
      await broker.start(HANDLER);
    });
    after(async () => {
      await broker.close();
      await redis.stop();
    });

    it('keeps per-channel order and offsets for 1,000 concurrent publishes in few script calls', async () => {
      redis.cli('CONFIG', 'RESETSTAT');
      let calls = 0;
      await assertOrderAndOffsets(broker, 'order', () => (calls = scriptCalls(redis)));
      // 1,000 publishes of one turn at the default bound of 128 → 8 calls (+1 when the script
      // was not cached yet: EVALSHA's NOSCRIPT and its EVAL).
      assert.ok(calls <= 10, `1,000 publishes took ${calls} script calls`);
    });

    it('answers a duplicate id inside one batch with the position of the first', async () => {
      const [a, b, c] = await Promise.all([
        broker.publish(request('dup', 'same')),
        broker.publish(request('dup', 'other')),
        broker.publish(request('dup', 'same')),
      ]);
      assert.deepEqual(a, { offset: 1, epoch: a.epoch, duplicate: false });
      assert.deepEqual(b, { offset: 2, epoch: a.epoch, duplicate: false });
      assert.deepEqual(c, { offset: 1, epoch: a.epoch, duplicate: true });
      const history = await broker.history('dup', { limit: 10 });
      assert.deepEqual(
        history.entries.map((e) => e.offset),
        [1, 2],
      );
      // And across batches, as before.
      assert.deepEqual(await broker.publish(request('dup', 'other')), { ...b, duplicate: true });
    });

    it('fails one bad message alone, with its own error, and stores the rest of its batch', async () => {
      // A channel whose stream key holds a string: its XADD fails with WRONGTYPE after the
      // message claimed its idempotency key.
      await broker.publish(request('bad', 'first'));
      redis.cli('DEL', 'b:s:{bad}');
      redis.cli('SET', 'b:s:{bad}', 'not a stream');
      const outcomes = await Promise.allSettled([
        broker.publish(request('good', 'g1')),
        broker.publish(request('bad', 'b1')),
        broker.publish(request('good', 'g2')),
      ]);
      assert.equal(outcomes[0]?.status, 'fulfilled');
      assert.equal(outcomes[2]?.status, 'fulfilled');
      const failed = outcomes[1];
      assert.equal(failed?.status, 'rejected');
      assert.ok(failed.reason instanceof PublishError);
      assert.equal(failed.reason.outcome, 'not-stored');
      assert.match(failed.reason.message, /WRONGTYPE/);
      const good = outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value.offset] : []));
      assert.deepEqual(good, [1, 2]);
      // The failed message assigned no offset and released its id: once the key is fixed, the
      // retry with the same id is stored (not answered as a duplicate) at the next offset.
      redis.cli('DEL', 'b:s:{bad}');
      const retry = await broker.publish(request('bad', 'b1'));
      assert.equal(retry.duplicate, false);
      assert.equal(retry.offset, 2);
    });

    it('publishes with batching off (redisPublishBatch 1), one call per message', async () => {
      const single = new RedisBroker({
        url: redis.url,
        prefix: 'one:',
        publishBatch: 1,
        logger: createLogger('silent'),
      });
      await single.start(HANDLER);
      try {
        redis.cli('CONFIG', 'RESETSTAT');
        const results = await Promise.all(
          Array.from({ length: 30 }, (_, i) => single.publish(request('solo', `s${i}`))),
        );
        assert.deepEqual(
          results.map((r) => r.offset),
          Array.from({ length: 30 }, (_, i) => i + 1),
        );
        assert.ok(scriptCalls(redis) >= 30);
      } finally {
        await single.close();
      }
    });

    it('fans many held payloads out in one call, in order, with the entry check of fanoutLua', async () => {
      const conn = new Redis({ port: redis.port, host: '127.0.0.1' }) as Redis &
        Pick<ScriptCommands, 'sbFanout' | 'sbFanoutMany'>;
      conn.defineCommand('sbFanout', { numberOfKeys: 2, lua: fanoutLua('PUBLISH') });
      conn.defineCommand('sbFanoutMany', { lua: fanoutManyLua('PUBLISH') });
      const sub = new Redis({ port: redis.port, host: '127.0.0.1' });
      const got: string[] = [];
      sub.on('message', (_channel: string, payload: string) => got.push(payload));
      try {
        await sub.subscribe('fm:p');
        await conn.hset('fm:m', 'e', 'E', 'o', 3);
        await conn.xadd('fm:s', '1-0', 'f', 'frame1');
        await conn.xadd('fm:s', '2-0', 'f', 'frame2');
        const h = (payload: string, historySize: number): HeldPayload => ({
          pubsub: 'fm:p',
          payload,
          meta: 'fm:m',
          stream: 'fm:s',
          historySize,
        });
        const held = [
          h('1 E 100 frame1', 10), // its entry: published
          h('2 E 100 other', 10), // another frame at that offset: not
          h('2 X 100 frame2', 10), // another epoch: not
          h('3 E 100 f3', 0), // no history, offset reached: published
          h('4 E 100 f4', 0), // no history, offset not reached: not
        ];
        const alone = [];
        for (const p of held)
          alone.push(await conn.sbFanout(p.meta, p.stream, p.pubsub, p.payload, p.historySize));
        assert.deepEqual(alone, [1, 0, 0, 1, 0]);
        await eventually(() => got.length === 2, 2000, 'the checked ones, one by one');
        got.length = 0;
        assert.equal(await conn.sbFanoutMany(...fanoutManyArgs(held, true)), 2);
        await eventually(() => got.length === 2, 2000, 'the checked ones, in one call');
        assert.deepEqual(got, ['1 E 100 frame1', '3 E 100 f3'], 'the same ones, in order');
        got.length = 0;
        assert.equal(await conn.sbFanoutMany(...fanoutManyArgs(held, false)), 5);
        await eventually(() => got.length === 5, 2000, 'all, unchecked');
        assert.deepEqual(
          got,
          held.map((p) => p.payload),
        );
      } finally {
        sub.disconnect();
        conn.disconnect();
      }
    });

    it('rejects a bad batch bound', () => {
      assert.throws(
        () =>
          new RedisBroker({
            url: redis.url,
            prefix: 'x:',
            publishBatch: 0,
            logger: createLogger('silent'),
          }),
        /^RangeError: The publish batch limit must be a positive integer$/,
      );
    });
  });

  describe('RedisBroker gated publish batching (a replica, WAIT 1)', () => {
    let master: RedisProcess;
    let replica: RedisProcess;
    let broker: RedisBroker;
    const { handler, seen } = recorder();
    before(async () => {
      master = await startRedis();
      replica = await startRedis();
      replica.cli('REPLICAOF', '127.0.0.1', String(master.port));
      await eventually(
        () => /^slave0:.*state=online/m.test(master.cli('INFO', 'replication')),
        10_000,
        'the replica to sync',
      );
      broker = new RedisBroker({
        url: master.url,
        prefix: 'g:',
        waitReplicas: 1,
        waitTimeoutMs: 300,
        logger: createLogger('silent'),
      });
      await broker.start(handler);
    });
    after(async () => {
      process.kill(replica.pid, 'SIGCONT');
      await broker.close();
      await Promise.all([replica.stop(), master.stop()]);
    });

    it('keeps per-channel order and offsets for 1,000 concurrent publishes in few script calls, fanned out after WAIT in order', async () => {
      for (let i = 0; i < 20; i++) await broker.subscribe(`gorder-${i}`);
      master.cli('CONFIG', 'RESETSTAT');
      logEveryCommand((...args) => master.cli(...args));
      let scripts = 0;
      let waits = 0;
      await assertOrderAndOffsets(broker, 'gorder', () => {
        scripts = scriptCalls(master);
        waits = waitCalls(master);
      });
      assert.ok(waits >= 1 && waits <= 10, `1,000 gated publishes took ${waits} WAITs`);
      await eventually(
        () =>
          Array.from({ length: 20 }, (_, i) => seen.get(`gorder-${i}`)?.length === 50).every(
            Boolean,
          ),
        5000,
        'every message delivered',
      );
      for (let i = 0; i < 20; i++)
        assert.deepEqual(
          seen.get(`gorder-${i}`),
          Array.from({ length: 50 }, (_, k) => k + 1),
          `gorder-${i}: delivered once each, in offset order`,
        );
      // Less the fan-out script's calls (what the WAITs released; all sent before the last ack).
      const calls = scripts - (await topLevelCommands(master.port)).fanoutMany;
      assert.ok(calls <= 10, `1,000 gated publishes took ${calls} publish script calls`);
    });

    it('answers 118 while the replica is stopped, fans the batch out in order once it confirms, and a retry is a duplicate', async () => {
      await broker.subscribe('gstop');
      await broker.publish(request('gstop', 'first'));
      await eventually(() => seen.get('gstop')?.length === 1, 2000, 'the first delivered');
      // SIGSTOP: the replica stays "online" for the master, but no longer acknowledges.
      process.kill(replica.pid, 'SIGSTOP');
      let stopped = true;
      try {
        const outcomes = await Promise.allSettled(
          Array.from({ length: 10 }, (_, i) => broker.publish(request('gstop', `s${i}`))),
        );
        for (const o of outcomes) {
          assert.equal(o.status, 'rejected');
          assert.ok(o.reason instanceof PublishError, String(o.reason));
          assert.equal(o.reason.outcome, 'unknown', o.reason.message);
        }
        // Not a settle: a window in which a fan-out before the replica confirmed would show.
        await new Promise((r) => setTimeout(r, 400));
        assert.deepEqual(seen.get('gstop'), [1], 'not fanned out before a replica holds it');
        process.kill(replica.pid, 'SIGCONT');
        stopped = false;
        // Held, not dropped: they go out at the next confirming WAIT, in order, without a retry.
        await eventually(() => seen.get('gstop')?.length === 11, 5000, 'the held batch delivered');
        assert.deepEqual(
          seen.get('gstop'),
          Array.from({ length: 11 }, (_, k) => k + 1),
        );
      } finally {
        if (stopped) process.kill(replica.pid, 'SIGCONT');
      }
      // The retries (same ids, one batch) are stored once: the original positions come back.
      let retried: PublishResult[] | undefined;
      await eventually(
        async () => {
          retried = await Promise.all(
            Array.from({ length: 10 }, (_, i) => broker.publish(request('gstop', `s${i}`))),
          ).catch((err: unknown) => {
            assert.ok(err instanceof PublishError && err.outcome === 'not-stored', String(err));
            return undefined;
          });
          return retried !== undefined;
        },
        15_000,
        'the retries to be acknowledged',
        100,
      );
      assert.deepEqual(
        retried?.map((r) => [r.offset, r.duplicate]),
        Array.from({ length: 10 }, (_, k) => [k + 2, true]),
      );
      // A retry fans the stored entries out again (subscribers drop an offset they have): each
      // offset first arrives right after the one before it, and nothing new was stored.
      const after = await broker.publish(request('gstop', 'next'));
      assert.equal(after.offset, 12);
      await eventually(() => seen.get('gstop')?.includes(12) === true, 2000, 'the next delivered');
      const got = seen.get('gstop') ?? [];
      let top = 0;
      for (const o of got) {
        if (o <= top) continue;
        assert.equal(o, top + 1, `in order: ${got.join(',')}`);
        top = o;
      }
      assert.equal(top, 12);
    });

    it('fails one bad message of a gated batch alone and fans out the rest', async () => {
      await broker.subscribe('ggood');
      await broker.publish(request('gbad', 'first'));
      master.cli('DEL', 'g:s:{gbad}');
      master.cli('SET', 'g:s:{gbad}', 'not a stream');
      const outcomes = await Promise.allSettled([
        broker.publish(request('ggood', 'g1')),
        broker.publish(request('gbad', 'b1')),
        broker.publish(request('ggood', 'g2')),
      ]);
      const failed = outcomes[1];
      assert.equal(failed?.status, 'rejected');
      assert.ok(failed.reason instanceof PublishError);
      assert.equal(failed.reason.outcome, 'not-stored');
      assert.match(failed.reason.message, /WRONGTYPE/);
      assert.deepEqual(
        outcomes.flatMap((o) => (o.status === 'fulfilled' ? [o.value.offset] : [])),
        [1, 2],
      );
      await eventually(() => seen.get('ggood')?.length === 2, 2000, 'the good ones delivered');
      assert.deepEqual(seen.get('ggood'), [1, 2]);
      master.cli('DEL', 'g:s:{gbad}');
      const retry = await broker.publish(request('gbad', 'b1'));
      assert.deepEqual([retry.offset, retry.duplicate], [2, false]);
    });
  });

  describe('RedisClusterBroker publish batching', () => {
    let cluster: RedisClusterKit;
    let broker: RedisClusterBroker;
    before(async () => {
      cluster = await startRedisCluster();
      broker = new RedisClusterBroker({
        seeds: cluster.seeds.slice(0, 2),
        prefix: 'cb:',
        logger: createLogger('silent'),
        // The slot map is re-read only on MOVED: the migration below leaves it stale.
        topologyCheckMs: 600_000,
        // Batching applies to publishes not gated by WAIT (redis-wait.ts).
        waitReplicas: 0,
      });
      await broker.start(HANDLER);
    });
    after(async () => {
      await broker.close();
      await cluster.stop();
    });

    it('batches per shard and keeps per-channel order and offsets across the 3 shards', async () => {
      const shards = new Set(
        Array.from({ length: 20 }, (_, i) => cluster.masterOf(cluster.slotOf(`cb:m:{cl-${i}}`))),
      );
      assert.equal(shards.size, 3, 'the 20 channels span the 3 shards');
      for (const n of cluster.nodes) n.cli('CONFIG', 'RESETSTAT');
      let calls = 0;
      await assertOrderAndOffsets(
        broker,
        'cl',
        () => (calls = cluster.nodes.reduce((n, node) => n + scriptCalls(node), 0)),
      );
      // One publish per channel in flight (Cluster order lanes): 50 rounds, a few calls each.
      assert.ok(calls < 1000 / 3, `1,000 publishes took ${calls} script calls`);
    });

    it('batches gated publishes (WAIT 1, the default) per shard, in order, fanned out after WAIT', async () => {
      const { handler, seen } = recorder();
      const gated = new RedisClusterBroker({
        seeds: cluster.seeds.slice(0, 2),
        prefix: 'cg:',
        logger: createLogger('silent'),
      });
      await gated.start(handler);
      try {
        for (let i = 0; i < 20; i++) await gated.subscribe(`cg-${i}`);
        for (const n of cluster.nodes) n.cli('CONFIG', 'RESETSTAT');
        let calls = 0;
        await assertOrderAndOffsets(
          gated,
          'cg',
          () => (calls = cluster.nodes.reduce((n, node) => n + scriptCalls(node), 0)),
        );
        assert.ok(calls < 1000 / 3, `1,000 gated publishes took ${calls} script calls`);
        await eventually(
          () =>
            Array.from({ length: 20 }, (_, i) => seen.get(`cg-${i}`)?.length === 50).every(Boolean),
          5000,
          'every message delivered',
        );
        for (let i = 0; i < 20; i++)
          assert.deepEqual(
            seen.get(`cg-${i}`),
            Array.from({ length: 50 }, (_, k) => k + 1),
          );
      } finally {
        await gated.close();
      }
    });

    it('retries alone a message whose slot moved under a batch grouped by a stale slot map', async () => {
      // Two channels on one master; the slot of the first moves to another master.
      const a = 'mv-a';
      const slotA = cluster.slotOf(`cb:m:{${a}}`);
      const from = cluster.masterOf(slotA);
      let b = '';
      for (let i = 0; b === ''; i++)
        if (cluster.masterOf(cluster.slotOf(`cb:m:{mv-b${i}}`)) === from && i < 10_000)
          b = `mv-b${i}`;
      await Promise.all([broker.publish(request(a, 'a0')), broker.publish(request(b, 'b0'))]);
      const to = cluster.nodes.find(
        (n) => n.alive && n !== from && n.cli('ROLE').startsWith('master'),
      );
      assert.ok(to, 'another master');
      cluster.migrateSlot(slotA, to);
      // Grouped as one batch for `from` (stale map), routed by a's key: MOVED sends it to `to`,
      // where b's keys are not local; b is retried alone.
      const [ra, rb] = await Promise.all([
        broker.publish(request(a, 'a1')),
        broker.publish(request(b, 'b1')),
      ]);
      assert.equal(ra.offset, 2);
      assert.equal(rb.offset, 2);
      assert.equal(ra.duplicate || rb.duplicate, false);
      const [ha, hb] = await Promise.all([
        broker.history(a, { limit: 10 }),
        broker.history(b, { limit: 10 }),
      ]);
      assert.deepEqual(
        ha.entries.map((e) => e.offset),
        [1, 2],
      );
      assert.deepEqual(
        hb.entries.map((e) => e.offset),
        [1, 2],
      );
    });
  });
}
