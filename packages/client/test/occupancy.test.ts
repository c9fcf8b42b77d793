/**
 * Occupancy through the SDK (#12 point 4): `channel.occupancy.subscribe(listener)` resolves with
 * the current counts and then gets changes, at most one per second; a new listener after the last
 * one left starts again from the current counts. And the presence leftover: a refreshed token that no longer allows presence ends the
 * channel's presence subscription with an `error` event (the `presence-unsubscribed` push).
 * Real server, real sockets.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import WebSocket from 'ws';
import {
  Switchboard,
  type OccupancyEvent,
  type SwitchboardError,
  type SwitchboardOptions,
} from '../src/index.js';
import { eventually, startTestServer } from '../../server/test/helpers.js';

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

function client(options: SwitchboardOptions): Switchboard {
  const c = new Switchboard({ WebSocket, backoff: { baseMs: 20, capMs: 200 }, ...options });
  cleanup.push(() => c.close());
  return c;
}

const SECRET = 'sdk-occupancy-test-secret-32-bytes!';
const KEY = new TextEncoder().encode(SECRET);

function mint(sub: string, ttlSeconds: number, cap: Record<string, string[]>): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ cap })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setIssuedAt(now)
    .setExpirationTime(now + ttlSeconds)
    .sign(KEY);
}

describe('SDK occupancy', () => {
  it('subscribe resolves with the counts, then changes arrive at most once per second', async () => {
    const s = await startTestServer({ namespaces: { room: { presence: true } } });
    cleanup.push(() => s.close());
    const watcher = client({ url: s.wsUrl });
    const seen: OccupancyEvent[] = [];
    const at: number[] = [];
    const room = watcher.channels.get('room:occ');
    const initial = await room.occupancy.subscribe((e) => {
      seen.push(e);
      at.push(Date.now());
    });
    assert.deepEqual(initial, {
      connections: 0,
      subscribers: 0,
      presenceMembers: 0,
      publishersLastMinute: 0,
    });
    const others = [client({ url: s.wsUrl }), client({ url: s.wsUrl }), client({ url: s.wsUrl })];
    for (const o of others) {
      await o.channels.get('room:occ').subscribe(() => {});
      await new Promise((r) => setTimeout(r, 300));
    }
    await eventually(() => seen.at(-1)?.subscribers === 3, 5000, 'three subscribers');
    assert.equal(seen.at(-1)?.channel, 'room:occ');
    assert.equal(room.occupancy.current?.subscribers, 3);
    for (let i = 1; i < at.length; i++)
      assert.ok((at[i] as number) - (at[i - 1] as number) >= 900, `gaps ${at.join(',')}`);
    // The last listener stops the stream; a new one starts it again with the current counts.
    room.occupancy.unsubscribe();
    const again: OccupancyEvent[] = [];
    const now = await room.occupancy.subscribe((e) => again.push(e));
    assert.equal(now.subscribers, 3);
    others[0]?.channels.get('room:occ').unsubscribe();
    await eventually(() => again.at(-1)?.subscribers === 2, 5000, 'two subscribers');
  });

  it('a refreshed token without presence ends the presence subscription with an error event', async () => {
    const s = await startTestServer({
      jwtSecret: SECRET,
      jwtLeewayMs: 0,
      tokenRefreshLeadMs: 2500,
      namespaces: { room: { presence: true } },
    });
    cleanup.push(() => s.close());
    let calls = 0;
    const c = client({
      url: s.wsUrl,
      authCallback: () =>
        mint(
          'u1',
          calls++ === 0 ? 3 : 60,
          calls === 1 ? { 'room:*': ['subscribe', 'presence'] } : { 'room:*': ['subscribe'] },
        ),
    });
    const room = c.channels.get('room:p');
    const errors: SwitchboardError[] = [];
    room.on('error', (e) => errors.push(e));
    const events: unknown[] = [];
    await room.presence.subscribe((e) => events.push(e));
    await room.presence.enter({ here: true });
    await eventually(() => errors.length === 1, 8000, 'the presence error');
    assert.equal(errors[0]?.code, 103);
    // The subscription ended on both sides: a new subscribe is refused for the same reason.
    await assert.rejects(
      room.presence.subscribe(() => {}),
      (e: SwitchboardError) => e.code === 103,
    );
  });
});
