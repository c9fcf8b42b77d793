/**
 * Ably dialect, presence (#14 point 6): the official SDK's presence API, through its public API
 * only, against 2 nodes sharing Redis, mapped onto Switchboard's one presence model: events the
 * same on both nodes, SYNC pages on attach (200 members), leave on close and after the grace
 * period, a transport cut that resumes without leave/enter, capability denial, bad input.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as Ably from 'ably';
import { startRedis, startTestServer, type RedisProcess } from './helpers.js';
import { API_KEYS, CuttingProxy, KEY_ALL, KEY_SUB, RawAbly, reach, realtime } from './ably-kit.js';

type TestServer = Awaited<ReturnType<typeof startTestServer>>;

/** Collects presence events; `until(pred)` waits for them. */
class PresenceLog {
  readonly events: Ably.PresenceMessage[] = [];
  readonly listener = (m: Ably.PresenceMessage): void => {
    this.events.push(m);
  };

  async until(
    pred: (e: readonly Ably.PresenceMessage[]) => boolean,
    timeoutMs = 10_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred(this.events)) {
      if (Date.now() > deadline)
        throw new Error(`presence events: ${JSON.stringify(this.events.map(brief))}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

function brief(m: Ably.PresenceMessage): string {
  return `${m.action}:${m.clientId}:${JSON.stringify(m.data)}`;
}

const NAMESPACES = { room: { presence: true } };
const GRACE_MS = 1500;

describe('ably dialect: presence', () => {
  let redis: RedisProcess;
  let a: TestServer;
  let b: TestServer;
  const clients: Ably.Realtime[] = [];
  const open = (...args: Parameters<typeof realtime>): Ably.Realtime => {
    const c = realtime(...args);
    clients.push(c);
    return c;
  };

  before(async () => {
    redis = await startRedis();
    const o = {
      apiKeys: API_KEYS,
      redis: redis.url,
      namespaces: NAMESPACES,
      presenceGraceMs: GRACE_MS,
    };
    a = await startTestServer(o);
    b = await startTestServer(o);
  });
  after(async () => {
    for (const c of clients) c.close();
    await a.close();
    await b.close();
    await redis.stop();
  });

  test('enter, update, leave: the same events on both nodes, echoed to the sender; get() on both', async () => {
    const alice = open(a.port, 'json', { clientId: 'alice' });
    const watchA = open(a.port, 'msgpack');
    const watchB = open(b.port, 'json');
    const logA = new PresenceLog();
    const logB = new PresenceLog();
    const own = new PresenceLog();
    await watchA.channels.get('room:1').presence.subscribe(logA.listener);
    await watchB.channels.get('room:1').presence.subscribe(logB.listener);
    const p = alice.channels.get('room:1').presence;
    await p.subscribe(own.listener);
    await p.enter({ status: 'here' });
    await p.update(Buffer.from([1, 2, 3]));
    // get() answers from the members the connection holds: wait for the update to reach node b.
    await logB.until((e) => e.length === 2);
    const membersB = await watchB.channels.get('room:1').presence.get();
    assert.equal(membersB.length, 1);
    assert.equal(membersB[0]?.clientId, 'alice');
    assert.deepEqual(Buffer.from(membersB[0]?.data as Uint8Array), Buffer.from([1, 2, 3]));
    await p.update('busy');
    await p.leave();
    for (const log of [logA, logB, own]) await log.until((e) => e.length === 4);
    assert.deepEqual(
      logA.events.map((e) => `${e.action}:${e.clientId}`),
      ['enter:alice', 'update:alice', 'update:alice', 'leave:alice'],
    );
    assert.deepEqual(logA.events[0]?.data, { status: 'here' });
    assert.deepEqual(
      logB.events.map((e) => e.data as unknown).filter((d) => typeof d === 'string'),
      ['busy', 'busy'],
    );
    const key = (e: Ably.PresenceMessage): string =>
      `${e.action} ${e.id} ${e.connectionId} ${e.timestamp}`;
    assert.deepEqual(logA.events.map(key), logB.events.map(key));
    assert.deepEqual(own.events.map(key), logA.events.map(key));
    assert.equal(logA.events[0]?.connectionId, alice.connection.id);
    assert.match(logA.events[0]?.id ?? '', new RegExp(`^${alice.connection.id}:\\d+:0$`));
    assert.deepEqual(await watchA.channels.get('room:1').presence.get(), []);
    // REST sees the same (empty) set; history is an honest refusal.
    const rest = new Ably.Rest({ key: KEY_ALL, endpoint: '127.0.0.1', port: b.port, tls: false });
    assert.deepEqual((await rest.channels.get('room:1').presence.get()).items, []);
    await assert.rejects(rest.channels.get('room:1').presence.history(), (err: Ably.ErrorInfo) => {
      assert.equal(err.code, 40000);
      return true;
    });
  });

  test('200 members across 2 nodes: a later attach gets them all in SYNC pages; REST pages them', async () => {
    // enterClient: a key without a clientId may enter any; 100 per connection (the limit).
    const onA = open(a.port, 'msgpack');
    const onB = open(b.port, 'json');
    const chA = onA.channels.get('room:200');
    const chB = onB.channels.get('room:200');
    await Promise.all([chA.attach(), chB.attach()]);
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        Promise.all([
          chA.presence.enterClient(`a${String(i).padStart(3, '0')}`, { i }),
          chB.presence.enterClient(`b${String(i).padStart(3, '0')}`, `b-${i}`),
        ]),
      ),
    );
    const late = open(b.port, 'msgpack');
    const members = await late.channels.get('room:200').presence.get();
    assert.equal(members.length, 200);
    assert.equal(new Set(members.map((m) => m.clientId)).size, 200);
    assert.deepEqual(members.find((m) => m.clientId === 'a007')?.data, { i: 7 });
    assert.equal(members.find((m) => m.clientId === 'b042')?.data, 'b-42');
    assert.ok(members.every((m) => m.action === 'present'));

    // The wire: ATTACHED with HAS_PRESENCE, then SYNC pages, the last with an empty cursor.
    const raw = new RawAbly(a.port, `key=${encodeURIComponent(KEY_ALL)}`);
    await raw.frame((f) => f['action'] === 4);
    raw.send({ action: 10, channel: 'room:200' });
    const attached = await raw.frame((f) => f['action'] === 11);
    assert.equal((attached['flags'] as number) & 1, 1);
    await raw.frame((f) => f['action'] === 16 && /^[\w-]+:$/.test(String(f['channelSerial'])));
    const syncs = raw.frames.filter((f) => f['action'] === 16);
    assert.equal(syncs.length, 2);
    assert.equal(
      raw.frames.indexOf(attached) < raw.frames.indexOf(syncs[0] as Record<string, unknown>),
      true,
    );
    const syncId = String(syncs[0]?.['channelSerial']).split(':')[0];
    assert.ok(syncs.every((f) => String(f['channelSerial']).startsWith(`${syncId}:`)));
    assert.equal(syncs.flatMap((f) => f['presence'] as unknown[]).length, 200);
    raw.close();

    const rest = new Ably.Rest({ key: KEY_ALL, endpoint: '127.0.0.1', port: a.port, tls: false });
    let page = await rest.channels.get('room:200').presence.get({ limit: 150 });
    const listed = [...page.items];
    while (page.hasNext()) {
      const next = await page.next();
      if (next === null) break;
      page = next;
      listed.push(...page.items);
    }
    assert.equal(listed.length, 200);
    const one = await rest.channels.get('room:200').presence.get({ clientId: 'b001' });
    assert.deepEqual(
      one.items.map((m): unknown[] => [m.clientId, m.data as unknown]),
      [['b001', 'b-1']],
    );
    onA.close();
    onB.close();
    // CLOSE: all 200 leave at once, on both nodes.
    const log = new PresenceLog();
    await late.channels.get('room:200').presence.subscribe(log.listener);
    await log.until((e) => e.filter((x) => x.action === 'leave').length === 200, 5000);
  });

  test('leave on close (at once) and on connection expiry (after the grace period)', async () => {
    const watch = open(b.port, 'json');
    const log = new PresenceLog();
    await watch.channels.get('room:bye').presence.subscribe(log.listener);
    const closer = open(a.port, 'json', { clientId: 'closer' });
    await closer.channels.get('room:bye').presence.enter('x');
    await log.until((e) => e.length === 1);
    const t0 = Date.now();
    closer.close();
    await log.until((e) => e.length === 2);
    assert.ok(Date.now() - t0 < GRACE_MS, 'CLOSE makes the member leave at once');
    assert.equal(brief(log.events[1] as Ably.PresenceMessage), 'leave:closer:"x"');

    // Detaching the channel ends the connection's membership there (the SDK forgets it too).
    const detacher = open(a.port, 'msgpack', { clientId: 'detacher' });
    const dch = detacher.channels.get('room:bye');
    await dch.presence.enter('d');
    await log.until((e) => e.length === 3);
    await dch.detach();
    await log.until((e) => e.length === 4);
    assert.equal(brief(log.events[3] as Ably.PresenceMessage), 'leave:detacher:"d"');
    log.events.splice(2, 2);

    // A transport that drops and never comes back: the member leaves after the grace period.
    const proxy = new CuttingProxy(a.port);
    const port = await proxy.listen();
    const gone = open(port, 'msgpack', { clientId: 'gone', disconnectedRetryTimeout: 200 });
    await gone.channels.get('room:bye').presence.enter('y');
    await log.until((e) => e.length === 3);
    proxy.refuse = true;
    const t1 = Date.now();
    proxy.cut();
    await log.until((e) => e.length === 4, GRACE_MS + 5000);
    assert.ok(Date.now() - t1 >= GRACE_MS - 100, 'the member waited out the grace period');
    assert.equal(brief(log.events[3] as Ably.PresenceMessage), 'leave:gone:"y"');
    gone.close();
    await proxy.close();
  });

  test('a transport cut (to the same node, then to the other one) keeps the member: no leave, no enter', async () => {
    const watch = open(b.port, 'msgpack');
    const log = new PresenceLog();
    await watch.channels.get('room:cut').presence.subscribe(log.listener);
    const proxy = new CuttingProxy(a.port);
    const port = await proxy.listen();
    const sticky = open(port, 'json', { clientId: 'sticky', disconnectedRetryTimeout: 200 });
    const ch = sticky.channels.get('room:cut');
    await ch.presence.enter({ n: 1 });
    await log.until((e) => e.length === 1);
    const id = sticky.connection.id;
    for (const target of [a.port, b.port]) {
      proxy.target = target;
      const reattached = ch.once('attached');
      proxy.cut();
      await reach(sticky.connection, 'disconnected');
      await reach(sticky.connection, 'connected');
      await reattached;
      assert.equal(sticky.connection.id, id);
      // Past the grace period: the old transport's member would have left by now.
      await new Promise((r) => setTimeout(r, GRACE_MS + 500));
    }
    assert.deepEqual(log.events.map(brief), ['enter:sticky:{"n":1}']);
    const members = await watch.channels.get('room:cut').presence.get();
    assert.deepEqual(members.map(brief), ['present:sticky:{"n":1}']);
    // Still the connection's own member: an update after the cuts is an update.
    await ch.presence.update({ n: 2 });
    await log.until((e) => e.length === 2);
    assert.equal(brief(log.events[1] as Ably.PresenceMessage), 'update:sticky:{"n":2}');
    sticky.close();
    await proxy.close();
  });

  test('capability denial: enter without presence is refused with 40160; nobody sees it', async () => {
    const watch = open(a.port, 'json');
    const log = new PresenceLog();
    await watch.channels.get('room:deny').presence.subscribe(log.listener);
    const denied = open(b.port, 'json', { key: KEY_SUB, clientId: 'mallory' });
    await assert.rejects(
      denied.channels.get('room:deny').presence.enter('hi'),
      (err: Ably.ErrorInfo) => {
        assert.equal(err.code, 40160);
        return true;
      },
    );
    // A subscriber still reads presence (subscribe grants presence-subscribe).
    assert.deepEqual(await denied.channels.get('room:deny').presence.get(), []);
    const ok = open(b.port, 'json', { clientId: 'ok' });
    await ok.channels.get('room:deny').presence.enter('fine');
    await log.until((e) => e.length === 1);
    assert.deepEqual(log.events.map(brief), ['enter:ok:"fine"']);
  });

  test('bad presence input: NACKs with Ably codes, an ERROR for a frame without msgSerial; the node keeps serving', async () => {
    const raw = new RawAbly(a.port, `key=${encodeURIComponent(KEY_ALL)}&clientId=raw`, 'msgpack');
    await raw.frame((f) => f['action'] === 4);
    const nack = async (msgSerial: number, pm: Record<string, unknown>): Promise<number> => {
      raw.send({ action: 14, msgSerial, ...pm });
      const f = await raw.frame((x) => x['action'] === 2 && x['msgSerial'] === msgSerial);
      return (f['error'] as { code: number }).code;
    };
    assert.equal(await nack(0, { channel: 'room:bad', presence: 'nope' }), 40000);
    assert.equal(await nack(1, { channel: 'room:bad', presence: [{ action: 9 }] }), 40000);
    assert.equal(await nack(2, { channel: 'room:bad', presence: [{ action: 2, data: 7 }] }), 40013);
    assert.equal(
      await nack(3, { channel: 'room:bad', presence: [{ action: 2, data: 'x'.repeat(2000) }] }),
      40009,
    );
    assert.equal(
      await nack(4, { channel: 'room:bad', presence: [{ action: 2, clientId: 'other' }] }),
      40012,
    );
    assert.equal(await nack(5, { channel: 'bad name', presence: [{ action: 2 }] }), 40010);
    assert.equal(await nack(6, { channel: 'plain', presence: [{ action: 2 }] }), 40000);
    const many = Array.from({ length: 101 }, () => ({ action: 4, data: 'x' }));
    assert.equal(await nack(8, { channel: 'room:bad', presence: many }), 40000);
    // A good one on the same connection is ACKed (without res) after the bad ones.
    raw.send({
      action: 14,
      msgSerial: 7,
      channel: 'room:bad',
      presence: [{ action: 2, data: 'ok' }],
    });
    const ack = await raw.frame((f) => f['action'] === 1 && f['msgSerial'] === 7);
    assert.equal(ack['res'], undefined);
    raw.send({ action: 14, channel: 'room:bad', presence: [{ action: 2 }] });
    await raw.frame((f) => f['action'] === 9 && f['channel'] === undefined);
    await raw.closedNow();
    // ERROR ended the connection: its member left at once.
    const check = open(a.port, 'json');
    await reach(check.connection, 'connected');
    assert.deepEqual(await check.channels.get('room:bad').presence.get(), []);
  });
});
