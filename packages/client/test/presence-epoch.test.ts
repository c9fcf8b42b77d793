/**
 * The presence epoch (#12 leftover): a Redis that restarts without its data starts every
 * channel's presence offset again from 0. The events of that new life carry a new epoch, so an
 * SDK view synced at offset 5 of the old life reads the members again instead of dropping the new
 * offsets 1, 2... as already seen (a silent mismatch). Real redis-server, real server, real sockets.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import WebSocket from 'ws';
import { Switchboard, type PresenceEvent } from '../src/index.js';
import {
  eventually,
  requireBinary,
  startRedis,
  startTestServer,
} from '../../server/test/helpers.js';

const skip = requireBinary('redis-server') || requireBinary('redis-cli');
const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

function client(url: string): Switchboard {
  const c = new Switchboard({ url, WebSocket, backoff: { baseMs: 20, capMs: 200 } });
  cleanup.push(() => c.close());
  return c;
}

describe('presence epoch', { skip }, () => {
  it('a view from an earlier Redis life is read again, not silently mismatched', async () => {
    const redis = await startRedis();
    cleanup.push(() => redis.stop());
    const s = await startTestServer({
      redis: redis.url,
      presenceTtlMs: 3000,
      namespaces: { room: { presence: true } },
    });
    cleanup.push(() => s.close());
    const watcher = client(s.wsUrl);
    const room = watcher.channels.get('room:epoch');
    const seen: PresenceEvent[] = [];
    await room.presence.subscribe((e) => seen.push(e));
    const a = client(s.wsUrl).channels.get('room:epoch');
    const b = client(s.wsUrl).channels.get('room:epoch');
    await a.presence.enter('a');
    await b.presence.enter('b');
    await b.presence.leave();
    await b.presence.enter('b2');
    await b.presence.leave();
    await eventually(() => seen.length === 5, 5000, 'five events');
    assert.deepEqual(
      (await room.presence.get()).map((m) => m.data),
      ['a'],
    );
    await redis.restart();
    // The new life: a's node re-adds it when it refreshes (offset 1), then c enters (offset 2).
    const c = client(s.wsUrl).channels.get('room:epoch');
    await eventually(
      async () => {
        try {
          await c.presence.enter('c');
          return true;
        } catch {
          return false;
        }
      },
      10_000,
      'c to enter after the restart',
      200,
    );
    await eventually(
      async () => (await room.presence.get()).some((m) => m.data === 'c'),
      10_000,
      'the view to hold c',
    );
    assert.ok(
      seen.some((e) => e.action === 'enter' && e.data === 'c'),
      'c entered, told once',
    );
    assert.equal(seen.filter((e) => e.action === 'enter' && e.data === 'c').length, 1);
  });
});
