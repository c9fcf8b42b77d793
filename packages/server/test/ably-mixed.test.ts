/**
 * Ably dialect beside the native protocol (#14 "Mixed", point 6 interop): on 2 nodes sharing
 * Redis, Ably SDK subscribers (JSON and msgpack), Switchboard SDK subscribers and tutorial-protocol
 * subscribers (`{"action":"subscribe"}`) of the same channel see the same messages in the same
 * order with the same positions, whoever published them; and presence is one set: a member
 * entered through one protocol is listed and streamed through the other.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as Ably from 'ably';
import { WebSocket } from 'ws';
import { Switchboard, type Message, type PresenceEvent } from '@switchboard/client';
import { startRedis, startTestServer, TestClient, type RedisProcess } from './helpers.js';
import { Inbox, realtime } from './ably-kit.js';

type TestServer = Awaited<ReturnType<typeof startTestServer>>;

async function until(what: string, pred: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('ably dialect: mixed with the native protocol', () => {
  let redis: RedisProcess;
  let a: TestServer;
  let b: TestServer;
  const cleanup: (() => unknown)[] = [];

  before(async () => {
    redis = await startRedis();
    // No keys: native clients connect anonymously (tokens are the native suites' business).
    const o = { redis: redis.url, namespaces: { room: { presence: true } } };
    a = await startTestServer(o);
    b = await startTestServer(o);
  });
  after(async () => {
    for (const f of cleanup.reverse()) await f();
    await a.close();
    await b.close();
    await redis.stop();
  });

  const ably = (...args: Parameters<typeof realtime>): Ably.Realtime => {
    const c = realtime(...args);
    cleanup.push(() => c.close());
    return c;
  };
  const native = (server: TestServer): Switchboard => {
    const c = new Switchboard({ WebSocket, url: server.wsUrl });
    cleanup.push(() => c.close());
    return c;
  };

  test('Ably, Switchboard SDK and tutorial subscribers see identical sequences from all three kinds of publisher', async () => {
    const channel = 'room:mix';
    const ablyInboxes = [new Inbox(), new Inbox()];
    const ablySubs = [ably(a.port, 'json'), ably(b.port, 'msgpack')];
    await Promise.all(
      ablySubs.map((c, i) => c.channels.get(channel).subscribe((ablyInboxes[i] as Inbox).listener)),
    );
    const sdkSeen: Message[][] = [[], []];
    const sdkSubs = [native(a), native(b)];
    await Promise.all(
      sdkSubs.map((c, i) => c.channels.get(channel).subscribe((m) => sdkSeen[i]?.push(m))),
    );
    const tutorial = [await TestClient.open(a.wsUrl), await TestClient.open(b.wsUrl)];
    cleanup.push(() => tutorial.forEach((t) => t.close()));
    await Promise.all(tutorial.map((t) => t.subscribe(channel)));

    const ablyPub = ably(b.port, 'msgpack').channels.get(channel);
    const sdkPub = native(a).channels.get(channel);
    const rawPub = await TestClient.open(b.wsUrl);
    cleanup.push(() => rawPub.close());
    const N = 15;
    for (let i = 0; i < N; i++) {
      const data = { i, from: ['ably', 'sdk', 'tutorial'][i % 3] };
      if (i % 3 === 0) await ablyPub.publish('m', data);
      else if (i % 3 === 1) await sdkPub.publish('m', data);
      else await rawPub.request({ action: 'publish', channel, name: 'm', data, id: `p${i}` });
    }

    const seqs: string[][] = [];
    for (const inbox of ablyInboxes) {
      const ms = await inbox.count(N);
      seqs.push(ms.map((m) => `${m.serial} ${m.name} ${JSON.stringify(m.data)}`));
    }
    for (const seen of sdkSeen) {
      await until('SDK deliveries', () => seen.length >= N);
      seqs.push(seen.map((m) => `${m.epoch}:${m.offset} ${m.name} ${JSON.stringify(m.data)}`));
    }
    for (const t of tutorial) {
      await t.until(
        (fs) => fs.filter((f) => f['channel'] === channel && 'offset' in f).length >= N,
      );
      seqs.push(
        t
          .messages(channel)
          .map(
            (f) =>
              `${String(f['epoch'])}:${String(f['offset'])} ${String(f['name'])} ${JSON.stringify(f['message'] ?? f['data'])}`,
          ),
      );
    }
    const first = seqs[0] as string[];
    assert.equal(first.length, N);
    assert.deepEqual(
      first.map((s) => (JSON.parse(s.split(' ').slice(2).join(' ')) as { i: number }).i),
      Array.from({ length: N }, (_, i) => i),
    );
    for (const s of seqs) assert.deepEqual(s, first);
  });

  test('presence is one set: native members in Ably get(), Ably members in the native get(), events both ways', async () => {
    const channel = 'room:both';
    const nat = native(a);
    const natEvents: PresenceEvent[] = [];
    await nat.channels.get(channel).presence.subscribe((e) => natEvents.push(e));
    const ablyWatch = ably(b.port, 'msgpack');
    const ablyEvents: Ably.PresenceMessage[] = [];
    await ablyWatch.channels.get(channel).presence.subscribe((m) => ablyEvents.push(m));

    await nat.channels.get(channel).presence.enter({ who: 'native' });
    const ablyMember = ably(b.port, 'json', { clientId: 'ably-1' });
    await ablyMember.channels.get(channel).presence.enter({ who: 'ably' });
    await until('Ably sees both', () => ablyEvents.length === 2);
    await until('native sees both', () => natEvents.length === 2);

    const fromAbly = await ablyWatch.channels.get(channel).presence.get();
    assert.deepEqual(fromAbly.map((m) => JSON.stringify(m.data)).sort(), [
      '{"who":"ably"}',
      '{"who":"native"}',
    ]);
    const natMember = natEvents.find((e) => (e.data as { who: string }).who === 'native');
    const seenByAbly = fromAbly.find((m) => (m.data as { who: string }).who === 'native');
    assert.equal(seenByAbly?.clientId, natMember?.clientId);
    assert.equal(seenByAbly?.connectionId, natMember?.connectionId);

    const fromNative = await nat.channels.get(channel).presence.get();
    const ablyInNative = fromNative.find((m) => m.clientId === 'ably-1');
    assert.deepEqual(ablyInNative?.data, { who: 'ably' });
    assert.equal(ablyInNative?.connectionId, ablyMember.connection.id);

    // Same order both ways: the channel's one presence order.
    await ablyMember.channels.get(channel).presence.leave();
    await nat.channels.get(channel).presence.leave();
    await until('Ably sees the leaves', () => ablyEvents.length === 4);
    await until('native sees the leaves', () => natEvents.length === 4);
    assert.deepEqual(
      ablyEvents.map((m) => `${m.action} ${m.clientId}`),
      natEvents.map((e) => `${e.action} ${e.clientId}`),
    );
    // The Ably id's middle part is the native presence offset.
    assert.deepEqual(
      ablyEvents.map((m) => Number(m.id.split(':')[1])),
      natEvents.map((e) => e.offset),
    );
  });
});
