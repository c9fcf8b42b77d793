/**
 * The SDK against a scripted socket: frame handling, positions, queueing, timeouts and the
 * connection state machine, without a server.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ConnectionClosedError,
  ErrorCode,
  QueueFullError,
  Switchboard,
  SwitchboardError,
  TimeoutError,
  type DiscontinuityInfo,
  type Message,
  type StateChange,
  type SwitchboardOptions,
  type WebSocketConstructor,
} from '../src/index.js';
import { fakeWebSocket, push, tick, type FakeSocket, type Frame } from './fake-socket.js';

async function until(check: () => boolean, what = 'condition', timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await tick(2);
  }
}

/**
 * Answers the publishes sent from the `from`-th on as stored, each once it was sent, until `n`
 * were; returns them as `channel:data` in send order.
 */
async function answerEach(socket: FakeSocket, from: number, n: number): Promise<string[]> {
  for (let i = from; i < from + n; i++) {
    await until(() => socket.commands('publish').length > i, `publish ${i + 1}`);
    const f = socket.commands('publish')[i] as Frame;
    socket.push({
      reply: f['id'],
      ok: true,
      messageId: f['messageId'],
      offset: i,
      epoch: 'E1',
      duplicate: false,
    });
  }
  return socket
    .commands('publish')
    .slice(from)
    .map((f) => `${String(f['channel'])}:${JSON.stringify(f['data'])}`);
}

function setup(options: Partial<SwitchboardOptions> = {}): {
  client: Switchboard;
  sockets: FakeSocket[];
  socket: () => FakeSocket;
  states: StateChange[];
} {
  const { WebSocket, sockets } = fakeWebSocket();
  const client = new Switchboard({
    ...(options.endpoints === undefined && { url: 'ws://test/ws' }),
    WebSocket,
    // The scripted socket plays the server; the HTTP fallbacks are tested in transports.test.ts.
    transports: ['websocket'],
    backoff: { baseMs: 1, capMs: 4 },
    ...options,
  });
  const states: StateChange[] = [];
  client.connection.on('change', (c) => states.push(c));
  const socket = (): FakeSocket => {
    const s = sockets[sockets.length - 1];
    if (s === undefined) throw new Error('no socket');
    return s;
  };
  return { client, sockets, socket, states };
}

/** Opens the current socket and subscribes `channel`, replying with `position`. */
async function subscribed(
  ctx: ReturnType<typeof setup>,
  channel: string,
  got: Message[],
  position = { offset: 0, epoch: 'E1' },
): Promise<void> {
  ctx.socket().open();
  const done = ctx.client.channels.get(channel).subscribe((m) => got.push(m));
  ctx.socket().reply('subscribe', { position });
  await done;
}

const offsets = (ms: Message[]): (number | undefined)[] => ms.map((m) => m.offset);

describe('Switchboard (scripted socket)', () => {
  describe('connecting', () => {
    it('offers the switchboard.v1 subprotocol and reaches connected', () => {
      const ctx = setup();
      assert.equal(ctx.client.connection.state, 'connecting');
      assert.deepEqual(ctx.socket().protocols, ['switchboard.v1']);
      ctx.socket().open();
      assert.equal(ctx.client.connection.state, 'connected');
      assert.deepEqual(
        ctx.states.map((s) => s.current),
        ['connected'],
      );
      ctx.client.close();
    });

    it('accepts the DOM WebSocket type (checked at compile time)', () => {
      const dom: WebSocketConstructor | undefined = (
        globalThis as { WebSocket?: typeof globalThis.WebSocket }
      ).WebSocket;
      assert.ok(dom === undefined || typeof dom === 'function');
    });

    it('throws a TypeError without url/endpoints or without any usable transport', () => {
      assert.throws(() => new Switchboard({}), /one of "url" or "endpoints" is required/);
      // Node 20 has fetch but no global WebSocket: only a WebSocket-only client has no transport.
      // (Node 22+ has one; constructing the client there would connect and keep running.)
      if (typeof (globalThis as { WebSocket?: unknown }).WebSocket === 'undefined')
        assert.throws(
          () => new Switchboard({ url: 'ws://x', transports: ['websocket'] }),
          /no transport available/,
        );
    });

    it('rejects an invalid channel name synchronously', () => {
      const ctx = setup();
      assert.throws(() => ctx.client.channels.get('bad channel!'), TypeError);
      assert.equal(ctx.client.channels.get('ok'), ctx.client.channels.get('ok'));
      ctx.client.close();
    });
  });

  describe('frames and positions', () => {
    it('resolves subscribe on the reply and delivers a batch of pushes in order', async () => {
      const ctx = setup();
      const got: Message[] = [];
      await subscribed(ctx, 'c', got);
      assert.deepEqual(ctx.socket().last('subscribe'), {
        action: 'subscribe',
        channel: 'c',
        id: 1,
      });
      ctx.socket().push(push('c', 1), push('c', 2), push('other', 9), push('c', 3));
      assert.deepEqual(offsets(got), [1, 2, 3]);
      assert.deepEqual(ctx.client.channels.get('c').position, { offset: 3, epoch: 'E1' });
      ctx.client.close();
    });

    it('drops duplicates and never delivers out of order', async () => {
      const ctx = setup();
      const got: Message[] = [];
      await subscribed(ctx, 'c', got, { offset: 10, epoch: 'E1' });
      ctx.socket().push(push('c', 9), push('c', 10), push('c', 11), push('c', 11), push('c', 12));
      ctx.socket().push(push('c', 11), push('c', 13));
      assert.deepEqual(offsets(got), [11, 12, 13]);
      ctx.client.close();
    });

    it('delivers bridged messages (no offset) as they come', async () => {
      const ctx = setup();
      const got: Message[] = [];
      await subscribed(ctx, 'c', got, { offset: 5, epoch: 'E1' });
      ctx
        .socket()
        .push(push('c', undefined, 'E1', 'a'), push('c', 6), push('c', undefined, 'E1', 'b'));
      assert.deepEqual(
        got.map((m) => m.data),
        ['a', 6, 'b'],
      );
      assert.deepEqual(ctx.client.channels.get('c').position, { offset: 6, epoch: 'E1' });
      ctx.client.close();
    });

    it('filters by name with subscribe(name, listener)', async () => {
      const ctx = setup();
      ctx.socket().open();
      const ch = ctx.client.channels.get('c');
      const named: Message[] = [];
      const done = ch.subscribe('position', (m) => named.push(m));
      ctx.socket().reply('subscribe', { position: { offset: 0, epoch: 'E1' } });
      await done;
      ctx
        .socket()
        .push({ ...push('c', 1), name: 'position' }, push('c', 2), { ...push('c', 3), name: 'x' });
      assert.deepEqual(offsets(named), [1]);
      assert.deepEqual(ch.position, { offset: 3, epoch: 'E1' });
      ctx.client.close();
    });

    it('delivers pushes that precede the reply of a first subscribe, then takes the reply position', async () => {
      const ctx = setup();
      ctx.socket().open();
      const got: Message[] = [];
      const ch = ctx.client.channels.get('c');
      const done = ch.subscribe((m) => got.push(m));
      ctx.socket().push(push('c', 4), push('c', 5));
      assert.deepEqual(got, [], 'nothing delivered before the reply');
      ctx.socket().reply('subscribe', { position: { offset: 5, epoch: 'E1' } });
      await done;
      ctx.socket().push(push('c', 5), push('c', 6));
      assert.deepEqual(offsets(got), [4, 5, 6]);
      ctx.client.close();
    });

    it('emits discontinuity and continues when a push carries a new epoch', async () => {
      const ctx = setup();
      const got: Message[] = [];
      await subscribed(ctx, 'c', got, { offset: 7, epoch: 'E1' });
      const infos: DiscontinuityInfo[] = [];
      ctx.client.channels.get('c').on('discontinuity', (i) => infos.push(i));
      ctx.socket().push(push('c', 8), push('c', 1, 'E2'), push('c', 2, 'E2'), push('c', 9, 'E1'));
      assert.deepEqual(
        got.map((m) => `${m.epoch}:${m.offset}`),
        ['E1:8', 'E2:1', 'E2:2', 'E1:9'],
      );
      assert.deepEqual(infos[0], {
        reason: 'epoch',
        previous: { offset: 8, epoch: 'E1' },
        current: { offset: 1, epoch: 'E2' },
      });
      ctx.client.close();
    });

    it('resumes with since after a drop and drops the replayed duplicates', async () => {
      const ctx = setup();
      const got: Message[] = [];
      await subscribed(ctx, 'c', got, { offset: 0, epoch: 'E1' });
      const infos: DiscontinuityInfo[] = [];
      ctx.client.channels.get('c').on('discontinuity', (i) => infos.push(i));
      ctx.socket().push(push('c', 1), push('c', 2));
      ctx.socket().drop(1006);
      assert.equal(ctx.client.connection.state, 'disconnected');
      await until(() => ctx.sockets.length === 2, 'a reconnect');
      ctx.socket().open();
      assert.deepEqual(ctx.socket().last('subscribe')['since'], { offset: 2, epoch: 'E1' });
      ctx.socket().push({
        reply: ctx.socket().last('subscribe')['id'],
        ok: true,
        recovered: true,
        position: { offset: 2, epoch: 'E1' },
      });
      ctx.socket().push(push('c', 2), push('c', 3), push('c', 4));
      assert.deepEqual(offsets(got), [1, 2, 3, 4]);
      assert.deepEqual(infos, []);
      ctx.client.close();
    });

    it('emits discontinuity on recovered:false and continues after the new position', async () => {
      const ctx = setup();
      const got: Message[] = [];
      await subscribed(ctx, 'c', got, { offset: 0, epoch: 'E1' });
      ctx.socket().push(push('c', 1));
      const infos: DiscontinuityInfo[] = [];
      ctx.client.channels.get('c').on('discontinuity', (i) => infos.push(i));
      ctx.socket().drop(3008, 'too slow');
      await until(() => ctx.sockets.length === 2, 'a reconnect');
      ctx.socket().open();
      ctx.socket().reply('subscribe', { recovered: false, position: { offset: 50, epoch: 'E1' } });
      ctx.socket().push(push('c', 50), push('c', 51));
      assert.deepEqual(infos, [
        {
          reason: 'unrecovered',
          previous: { offset: 1, epoch: 'E1' },
          current: { offset: 50, epoch: 'E1' },
        },
      ]);
      assert.deepEqual(offsets(got), [1, 51]);
      ctx.client.close();
    });

    it('retries a subscribe refused with a temporary error', async () => {
      const ctx = setup();
      ctx.socket().open();
      const done = ctx.client.channels.get('c').subscribe(() => {});
      const first = ctx.socket().last('subscribe');
      ctx
        .socket()
        .push({ reply: first['id'], error: 'broker down', code: ErrorCode.NOT_AVAILABLE });
      await until(() => ctx.socket().commands('subscribe').length === 2, 'a second subscribe');
      ctx.socket().reply('subscribe', { position: { offset: 0, epoch: 'E1' } });
      await done;
      ctx.client.close();
    });

    it('rejects subscribe, emits error and drops listeners on a permanent error', async () => {
      const ctx = setup();
      ctx.socket().open();
      const ch = ctx.client.channels.get('c');
      const errors: SwitchboardError[] = [];
      ch.on('error', (e) => errors.push(e));
      const done = ch.subscribe(() => assert.fail('no message expected'));
      ctx.socket().push({
        reply: ctx.socket().last('subscribe')['id'],
        error: 'denied',
        code: ErrorCode.PERMISSION_DENIED,
      });
      await assert.rejects(done, (e: unknown) => {
        assert.ok(e instanceof SwitchboardError);
        assert.equal(e.code, 103);
        assert.equal(e.temporary, false);
        return true;
      });
      assert.equal(errors.length, 1);
      ctx.socket().push(push('c', 1));
      ctx.client.close();
    });

    it('channel states: subscribing, subscribed, subscribing again over a drop, failed on refusal', async () => {
      const ctx = setup();
      ctx.socket().open();
      const ch = ctx.client.channels.get('c');
      const states: string[] = [];
      ch.on('state', (c) => states.push(c.current + (c.resumed === true ? ':resumed' : '')));
      const failed: (number | undefined)[] = [];
      ch.on('failed', (c) => failed.push(c.reason?.code));
      assert.equal(ch.state, 'initialized');
      const done = ch.subscribe(() => {});
      ctx.socket().reply('subscribe', { position: { offset: 0, epoch: 'E1' } });
      await done;
      ctx.socket().drop(1006);
      await until(() => ctx.sockets.length === 2, 'a reconnect');
      ctx.socket().open();
      ctx.socket().reply('subscribe', { recovered: true, position: { offset: 0, epoch: 'E1' } });
      await until(() => ch.state === 'subscribed', 'resubscribed');
      // A refreshed token no longer allows the channel: the server ends the subscription.
      ctx.socket().push({ event: 'unsubscribed', channel: 'c', code: 103, reason: 'denied' });
      assert.deepEqual(states, [
        'subscribing',
        'subscribed',
        'subscribing',
        'subscribed:resumed',
        'failed',
      ]);
      assert.deepEqual(failed, [103]);
      ctx.client.close();
    });

    it('subscribe({since}) resumes from a given position; {rewind} asks for the last n', async () => {
      const ctx = setup();
      ctx.socket().open();
      const got: Message[] = [];
      const a = ctx.client.channels
        .get('a')
        .subscribe((m) => got.push(m), { since: { offset: 7, epoch: 'E1' }, rewind: 3 });
      assert.deepEqual(ctx.socket().last('subscribe')['since'], { offset: 7, epoch: 'E1' });
      assert.equal(ctx.socket().last('subscribe')['rewind'], undefined);
      ctx.socket().reply('subscribe', { recovered: true, position: { offset: 7, epoch: 'E1' } });
      await a;
      ctx.socket().push(push('a', 7), push('a', 8));
      assert.deepEqual(offsets(got), [8]);
      const b = ctx.client.channels.get('b').subscribe(() => {}, { rewind: 3 });
      assert.equal(ctx.socket().last('subscribe')['rewind'], 3);
      assert.equal(ctx.socket().last('subscribe')['since'], undefined);
      ctx.socket().reply('subscribe', { position: { offset: 4, epoch: 'E1' } });
      await b;
      assert.throws(
        () => ctx.client.channels.get('x').subscribe(() => {}, { rewind: 0 }),
        TypeError,
      );
      ctx.client.close();
    });

    it('recover: a PositionStore carries positions to a new client, which resumes from them', async () => {
      const saved = new Map<string, { offset: number; epoch: string }>();
      const recover = {
        get: (c: string) => saved.get(c),
        set: (c: string, p: { offset: number; epoch: string } | undefined) =>
          p === undefined ? saved.delete(c) : saved.set(c, p),
      };
      const first = setup({ recover });
      await subscribed(first, 'c', [], { offset: 0, epoch: 'E1' });
      first.socket().push(push('c', 1), push('c', 2));
      assert.deepEqual(saved.get('c'), { offset: 2, epoch: 'E1' });
      first.client.close();
      const second = setup({ recover });
      second.socket().open();
      void second.client.channels.get('c').subscribe(() => {}, { rewind: 10 });
      assert.deepEqual(second.socket().last('subscribe')['since'], { offset: 2, epoch: 'E1' });
      second.client.channels.get('c').unsubscribe();
      assert.equal(saved.has('c'), false, 'unsubscribe forgets the position');
      second.client.close();
    });

    it('unsubscribe() sends unsubscribe when the last listener goes and ignores later pushes', async () => {
      const ctx = setup();
      const got: Message[] = [];
      await subscribed(ctx, 'c', got);
      const ch = ctx.client.channels.get('c');
      const other = (): void => {};
      await ch.subscribe(other);
      assert.equal(ctx.socket().commands('subscribe').length, 1, 'one server subscription');
      ch.unsubscribe(other);
      assert.equal(ctx.socket().commands('unsubscribe').length, 0);
      ch.unsubscribe();
      assert.deepEqual(ctx.socket().last('unsubscribe')['channel'], 'c');
      ctx.socket().push(push('c', 1));
      assert.deepEqual(got, []);
      assert.equal(ch.position, undefined);
      ctx.client.close();
    });

    it('ignores a late subscribe reply after unsubscribe and resubscribe', async () => {
      const ctx = setup();
      ctx.socket().open();
      const ch = ctx.client.channels.get('c');
      const first = ch.subscribe(() => {});
      const firstId = ctx.socket().last('subscribe')['id'];
      ch.unsubscribe();
      await first; // cancelled subscriptions resolve
      const got: Message[] = [];
      const second = ch.subscribe((m) => got.push(m));
      ctx.socket().push({ reply: firstId, ok: true, position: { offset: 100, epoch: 'E1' } });
      ctx.socket().reply('subscribe', { position: { offset: 3, epoch: 'E1' } });
      await second;
      ctx.socket().push(push('c', 4));
      assert.deepEqual(offsets(got), [4]);
      ctx.client.close();
    });
  });

  describe('publish', () => {
    it('sends a messageId and resolves with the ack fields', async () => {
      const ctx = setup();
      ctx.socket().open();
      const ch = ctx.client.channels.get('c');
      const acked = ch.publish('position', { lat: 1 });
      const cmd = ctx.socket().last('publish');
      assert.equal(cmd['channel'], 'c');
      assert.equal(cmd['name'], 'position');
      assert.deepEqual(cmd['data'], { lat: 1 });
      assert.match(String(cmd['messageId']), /^[0-9a-f-]{36}$/);
      ctx.socket().reply('publish', { messageId: cmd['messageId'], offset: 7, epoch: 'E1' });
      assert.deepEqual(await acked, {
        id: cmd['messageId'],
        offset: 7,
        epoch: 'E1',
        duplicate: false,
      });
      const own = ch.publish({ data: null, id: 'mine' });
      assert.equal(ctx.socket().last('publish')['messageId'], 'mine');
      assert.equal('name' in ctx.socket().last('publish'), false);
      ctx.socket().reply('publish', { messageId: 'mine', offset: 8, epoch: 'E1', duplicate: true });
      assert.equal((await own).duplicate, true);
      ctx.client.close();
    });

    it('rejects with the server error code and the message id, once its retries are spent', async () => {
      const ctx = setup({ publishRetries: 0 });
      ctx.socket().open();
      const p = ctx.client.channels.get('c').publish('n', 1);
      const sent = ctx.socket().last('publish');
      ctx.socket().push({ reply: sent['id'], error: 'not stored', code: 108 });
      await assert.rejects(
        p,
        (e: unknown) =>
          e instanceof SwitchboardError &&
          e.code === 108 &&
          e.temporary &&
          e.messageId === sent['messageId'],
      );
      ctx.client.close();
    });

    it('sends a publish refused with 118 (outcome unknown) or 108 again with the same message id', async () => {
      const ctx = setup({ publishRetries: 3 });
      ctx.socket().open();
      const p = ctx.client.channels.get('c').publish('n', 1);
      const first = ctx.socket().last('publish');
      ctx.socket().push({ reply: first['id'], error: 'unknown', code: ErrorCode.OUTCOME_UNKNOWN });
      await until(() => ctx.socket().commands('publish').length === 2, 'a second publish');
      ctx.socket().push({ reply: first['id'], error: 'not stored', code: ErrorCode.NOT_AVAILABLE });
      await until(() => ctx.socket().commands('publish').length === 3, 'a third publish');
      const sent = ctx.socket().commands('publish');
      assert.deepEqual(new Set(sent.map((c) => c['messageId'])), new Set([first['messageId']]));
      ctx.socket().push({
        reply: first['id'],
        ok: true,
        messageId: first['messageId'],
        offset: 4,
        epoch: 'E1',
        duplicate: true,
      });
      const r = await p;
      assert.equal(r.id, first['messageId']);
      assert.equal(r.offset, 4);
      ctx.client.close();
    });

    it('holds later publishes of a channel behind a retrying one, so they are stored in call order', async () => {
      const ctx = setup({ publishRetries: 3 });
      ctx.socket().open();
      const ch = ctx.client.channels.get('c');
      const a = ch.publish('n', 'a');
      const b = ch.publish('n', 'b');
      const [sentA, sentB] = ctx.socket().commands('publish') as [Frame, Frame];
      // Both refused as not stored (the Cluster broker fails the one queued behind a failed one).
      ctx.socket().push({ reply: sentA['id'], error: 'not stored', code: ErrorCode.NOT_AVAILABLE });
      ctx.socket().push({ reply: sentB['id'], error: 'not stored', code: ErrorCode.NOT_AVAILABLE });
      const c = ch.publish('n', 'c');
      const other = ctx.client.channels.get('d').publish('n', 'd');
      // Each retry goes out once the one before it was answered (see the next test).
      const order = await answerEach(ctx.socket(), 2, 4);
      // d is not held by c's channel; a, b, c go out again in call order whatever the pauses drew.
      assert.deepEqual(
        order.filter((x) => x.startsWith('c:')),
        ['c:"a"', 'c:"b"', 'c:"c"'],
      );
      assert.equal(order.indexOf('d:"d"'), 0, 'another channel is not held');
      await Promise.all([a, b, c, other]);
      ctx.client.close();
    });

    it('re-sends a refused publish only after the earlier ones of its channel were answered', async () => {
      // a is still in flight when b, sent after it, is refused: a retry of b sent now could be
      // stored before a, should a fail too (its refusal may already be on the way back, and the
      // server's fence then takes b's re-send for a given up).
      const ctx = setup({ publishRetries: 3 });
      ctx.socket().open();
      const ch = ctx.client.channels.get('c');
      const a = ch.publish('n', 'a');
      const b = ch.publish('n', 'b');
      const [sentA, sentB] = ctx.socket().commands('publish') as [Frame, Frame];
      ctx.socket().push({ reply: sentB['id'], error: 'not stored', code: ErrorCode.NOT_AVAILABLE });
      const c = ch.publish('n', 'c');
      await tick(30); // b's retry pause (at most 4 ms here) is long over
      assert.equal(
        ctx.socket().commands('publish').length,
        2,
        'b is not sent again while a is in flight',
      );
      ctx.socket().push({ reply: sentA['id'], error: 'unknown', code: ErrorCode.OUTCOME_UNKNOWN });
      assert.deepEqual(await answerEach(ctx.socket(), 2, 3), ['c:"a"', 'c:"b"', 'c:"c"']);
      await Promise.all([a, b, c]);
      ctx.client.close();
    });

    it('rejects with 118, not 108, when an earlier attempt was answered outcome unknown', async () => {
      const ctx = setup({ publishRetries: 1 });
      ctx.socket().open();
      const p = ctx.client.channels.get('c').publish('n', 1);
      const first = ctx.socket().last('publish');
      ctx.socket().push({ reply: first['id'], error: 'unknown', code: ErrorCode.OUTCOME_UNKNOWN });
      await until(() => ctx.socket().commands('publish').length === 2, 'a second publish');
      ctx.socket().push({ reply: first['id'], error: 'not stored', code: ErrorCode.NOT_AVAILABLE });
      await assert.rejects(
        p,
        (e: unknown) => e instanceof SwitchboardError && e.code === ErrorCode.OUTCOME_UNKNOWN,
      );
      ctx.client.close();
    });

    it('does not retry a publish refused for good (permission denied)', async () => {
      const ctx = setup({ publishRetries: 3 });
      ctx.socket().open();
      const p = ctx.client.channels.get('c').publish('n', 1);
      const first = ctx.socket().last('publish');
      ctx.socket().push({ reply: first['id'], error: 'no', code: ErrorCode.PERMISSION_DENIED });
      await assert.rejects(p, (e: unknown) => e instanceof SwitchboardError && e.code === 103);
      assert.equal(ctx.socket().commands('publish').length, 1);
      ctx.client.close();
    });

    it('queues while disconnected, bounded by maxQueuedPublishes', async () => {
      const ctx = setup({ maxQueuedPublishes: 2 });
      const ch = ctx.client.channels.get('c');
      const a = ch.publish('a', 1);
      const b = ch.publish('b', 2);
      await assert.rejects(
        ch.publish('c', 3),
        (e: unknown) => e instanceof QueueFullError && e.code === 106,
      );
      assert.equal(ctx.socket().sent.length, 0);
      ctx.socket().open();
      assert.deepEqual(
        ctx
          .socket()
          .commands('publish')
          .map((f) => f['name']),
        ['a', 'b'],
      );
      for (const f of ctx.socket().commands('publish')) {
        ctx
          .socket()
          .push({ reply: f['id'], ok: true, messageId: f['messageId'], offset: 1, epoch: 'E' });
      }
      await Promise.all([a, b]);
      ctx.client.close();
    });

    it('re-sends unacknowledged publishes with the same messageId, in order, before newer ones', async () => {
      const ctx = setup();
      ctx.socket().open();
      const ch = ctx.client.channels.get('c');
      const first = [ch.publish('1', 1), ch.publish('2', 2)];
      const ids = ctx
        .socket()
        .commands('publish')
        .map((f) => f['messageId']);
      ctx.socket().drop(1006);
      const later = ch.publish('3', 3);
      await until(() => ctx.sockets.length === 2, 'a reconnect');
      ctx.socket().open();
      const resent = ctx.socket().commands('publish');
      assert.deepEqual(
        resent.map((f) => f['name']),
        ['1', '2', '3'],
      );
      assert.deepEqual(
        resent.slice(0, 2).map((f) => f['messageId']),
        ids,
      );
      let settled = 0;
      for (const [i, f] of resent.entries()) {
        const reply = {
          reply: f['id'],
          ok: true,
          messageId: f['messageId'],
          offset: i + 1,
          epoch: 'E',
          duplicate: i < 2,
        };
        ctx.socket().push(reply);
        ctx.socket().push(reply); // a second reply to the same id changes nothing
      }
      const results = await Promise.all(
        [...first, later].map((p) => p.then((r) => (settled++, r))),
      );
      assert.equal(settled, 3);
      assert.deepEqual(
        results.map((r) => r.duplicate),
        [true, true, false],
      );
      ctx.client.close();
    });

    it('rejects with TimeoutError when no reply comes within requestTimeoutMs', async () => {
      const ctx = setup({ requestTimeoutMs: 30 });
      ctx.socket().open();
      const t0 = Date.now();
      await assert.rejects(ctx.client.channels.get('c').publish('n', 1), (e: unknown) => {
        assert.ok(e instanceof TimeoutError);
        assert.equal(e.temporary, true);
        return true;
      });
      assert.ok(Date.now() - t0 >= 25);
      ctx.client.close();
    });

    it('rejects a frame larger than maxMessageBytes with code 114', async () => {
      const ctx = setup({ maxMessageBytes: 1000 });
      ctx.socket().open();
      await assert.rejects(
        ctx.client.channels.get('c').publish('big', 'é'.repeat(600)),
        (e: unknown) => e instanceof SwitchboardError && e.code === ErrorCode.PAYLOAD_TOO_LARGE,
      );
      assert.equal(ctx.socket().commands('publish').length, 0);
      ctx.client.close();
    });
  });

  describe('history', () => {
    it('sends the history command and pages with the cursor', async () => {
      const ctx = setup();
      ctx.socket().open();
      const ch = ctx.client.channels.get('c');
      const p1 = ch.history({ limit: 2, direction: 'backward' });
      assert.deepEqual(ctx.socket().last('history'), {
        action: 'history',
        channel: 'c',
        limit: 2,
        direction: 'backward',
        id: 1,
      });
      ctx.socket().reply('history', {
        messages: [push('c', 5), push('c', 4)],
        position: { offset: 5, epoch: 'E1' },
        next: 'cur1',
      });
      const page1 = await p1;
      assert.deepEqual(offsets([...page1.items]), [5, 4]);
      assert.equal(page1.hasNext(), true);
      const p2 = page1.next();
      assert.deepEqual(ctx.socket().last('history'), {
        action: 'history',
        channel: 'c',
        limit: 2,
        direction: 'backward',
        cursor: 'cur1',
        id: 2,
      });
      ctx.socket().reply('history', {
        messages: [push('c', 3)],
        position: { offset: 5, epoch: 'E1' },
        next: null,
      });
      const page2 = await p2;
      assert.equal(page2?.hasNext(), false);
      assert.equal(await page2?.next(), undefined);
      ctx.client.close();
    });
  });

  describe('heartbeats', () => {
    it('pings after pingIntervalMs of silence only', async () => {
      const ctx = setup({ pingIntervalMs: 60, pingTimeoutMs: 1000 });
      ctx.socket().open();
      const chatter = setInterval(() => ctx.socket().push({ ok: true, pong: true }), 15);
      await tick(150);
      clearInterval(chatter);
      assert.equal(ctx.socket().commands('ping').length, 0, 'no ping while frames arrive');
      await until(() => ctx.socket().commands('ping').length === 1, 'a ping');
      assert.deepEqual(ctx.socket().last('ping'), { action: 'ping', id: 'hb' });
      ctx.client.close();
    });

    it('declares the link dead within interval + timeout and reconnects', async () => {
      const ctx = setup({ pingIntervalMs: 40, pingTimeoutMs: 40 });
      ctx.socket().open();
      const dead = ctx.socket();
      const t0 = Date.now();
      await until(
        () => ctx.client.connection.state !== 'connected',
        'the link to be declared dead',
      );
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= 75 && elapsed < 200, `detected after ${elapsed} ms`);
      assert.equal(dead.terminated, true, 'the socket is dropped without a handshake');
      const change = ctx.states.find((s) => s.current === 'disconnected');
      assert.equal(change?.reason?.code, 3002);
      await until(() => ctx.sockets.length === 2, 'a reconnect');
      ctx.client.close();
    });

    it('does not declare a link dead that answers the ping', async () => {
      const ctx = setup({ pingIntervalMs: 30, pingTimeoutMs: 30 });
      ctx.socket().open();
      const s = ctx.socket();
      let answered = 0;
      const pong = setInterval(() => {
        if (s.commands('ping').length === answered) return;
        answered++;
        s.push({ reply: 'hb', ok: true, pong: true });
      }, 5);
      await tick(200);
      clearInterval(pong);
      assert.equal(ctx.client.connection.state, 'connected');
      assert.ok(s.commands('ping').length >= 2);
      ctx.client.close();
    });
  });

  describe('connection states', () => {
    it('rotates endpoints, and enters suspended after suspendAfterAttempts failures', async () => {
      const ctx = setup({ endpoints: ['ws://a/ws', 'ws://b/ws'], suspendAfterAttempts: 3 });
      for (let i = 1; i <= 4; i++) {
        await until(() => ctx.sockets.length === i, `attempt ${i}`);
        ctx.socket().drop(1006);
      }
      assert.deepEqual(
        ctx.sockets.map((s) => s.url),
        ['ws://a/ws', 'ws://b/ws', 'ws://a/ws', 'ws://b/ws'],
      );
      await until(() => ctx.sockets.length === 5, 'a fifth attempt');
      assert.deepEqual(
        ctx.states.map((s) => s.current),
        [
          'disconnected',
          'connecting',
          'disconnected',
          'connecting',
          'suspended',
          'connecting',
          'suspended',
          'connecting',
        ],
      );
      const retry = ctx.states.find((s) => s.current === 'suspended');
      assert.ok(retry?.retryInMs !== undefined && retry.retryInMs >= 0 && retry.retryInMs < 4);
      ctx.socket().open();
      assert.equal(ctx.client.connection.state, 'connected');
      ctx.client.close();
    });

    it('times out a connect attempt after connectTimeoutMs', async () => {
      const ctx = setup({ connectTimeoutMs: 30 });
      const first = ctx.socket();
      await until(() => ctx.sockets.length === 2, 'a second attempt');
      assert.equal(first.terminated, true);
      assert.equal(ctx.states[0]?.reason?.message, 'connect timeout');
      ctx.client.close();
    });

    it('fails on a terminal close code, rejects pending work and does not reconnect', async () => {
      const ctx = setup();
      ctx.socket().open();
      const ch = ctx.client.channels.get('c');
      const pub = ch.publish('n', 1);
      const sub = ch.subscribe(() => {});
      ctx.socket().drop(3501, 'fix the client');
      const isClosed = (e: unknown): boolean =>
        e instanceof ConnectionClosedError && e.code === 3501 && e.message === 'fix the client';
      await assert.rejects(pub, isClosed);
      await assert.rejects(sub, isClosed);
      assert.equal(ctx.client.connection.state, 'failed');
      assert.deepEqual(ctx.states[ctx.states.length - 1], {
        previous: 'connected',
        current: 'failed',
        reason: { code: 3501, message: 'fix the client' },
      });
      await assert.rejects(ch.publish('n', 2), ConnectionClosedError);
      await tick(30);
      assert.equal(ctx.sockets.length, 1);
      ctx.client.connect();
      assert.equal(ctx.sockets.length, 2, 'connect() starts again');
      ctx.client.close();
    });

    it('treats 4500-4999 as terminal and 4000-4499 as retryable', async () => {
      const ctx = setup();
      ctx.socket().open();
      ctx.socket().drop(4000);
      assert.equal(ctx.client.connection.state, 'disconnected');
      await until(() => ctx.sockets.length === 2, 'a reconnect');
      ctx.socket().open();
      ctx.socket().drop(4500);
      assert.equal(ctx.client.connection.state, 'failed');
      ctx.client.close();
    });

    it('close() closes the socket with 1000 and rejects queued publishes', async () => {
      const ctx = setup();
      ctx.socket().open();
      ctx.socket().drop(1006);
      const queued = ctx.client.channels.get('c').publish('n', 1);
      ctx.client.close();
      await assert.rejects(
        queued,
        (e: unknown) => e instanceof ConnectionClosedError && e.code === 1000,
      );
      assert.equal(ctx.client.connection.state, 'closed');
      await tick(20);
      assert.equal(ctx.sockets.length, 1, 'no retry after close()');
      const ctx2 = setup();
      ctx2.socket().open();
      ctx2.client.close();
      assert.equal(ctx2.socket().closedWith, 1000);
    });
  });
});
