/**
 * One suite every PresenceStore must pass: add, refresh, remove, expiry by TTL, channels apart.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { PresenceStore } from '../../src/presence/presence.js';
import { eventually } from '../helpers.js';

const member = (id: string, user?: string): string =>
  JSON.stringify(user === undefined ? { clientId: id } : { clientId: id, user });

const ids = (list: string[]): string[] =>
  list.map((m) => (JSON.parse(m) as { clientId: string }).clientId).sort();

export function runPresenceSuite(name: string, make: () => PresenceStore): void {
  describe(`${name} (presence conformance)`, () => {
    let store: PresenceStore;
    let n = 0;
    const channel = (): string => `pc:${name}-${++n}`;
    before(() => {
      store = make();
    });
    after(() => store.close());

    it('lists members added, returns their JSON verbatim, and forgets removed ones', async () => {
      const ch = channel();
      assert.deepEqual(await store.get(ch), []);
      await store.add(ch, 'a', member('a', 'alice'), 60_000);
      await store.add(ch, 'b', member('b'), 60_000);
      assert.deepEqual((await store.get(ch)).sort(), [member('a', 'alice'), member('b')].sort());
      await store.remove(ch, 'a');
      assert.deepEqual(await store.get(ch), [member('b')]);
      await store.remove(ch, 'a');
      await store.remove(ch, 'b');
      assert.deepEqual(await store.get(ch), []);
    });

    it('keeps channels apart, and adding again replaces the info', async () => {
      const [x, y] = [channel(), channel()];
      await store.add(x, 'a', member('a'), 60_000);
      await store.add(y, 'b', member('b'), 60_000);
      await store.add(x, 'a', member('a', 'alice'), 60_000);
      assert.deepEqual(await store.get(x), [member('a', 'alice')]);
      assert.deepEqual(await store.get(y), [member('b')]);
    });

    it('drops a member not refreshed within its TTL, keeps one that is', async () => {
      const ch = channel();
      const t0 = Date.now();
      await store.add(ch, 'gone', member('gone'), 300);
      await store.add(ch, 'kept', member('kept'), 300);
      const refresh = setInterval(() => {
        store.add(ch, 'kept', member('kept'), 300).catch(() => {});
      }, 100);
      try {
        await eventually(
          async () => ids(await store.get(ch)).join() === 'kept',
          3000,
          'the unrefreshed member to expire',
          10,
        );
        const expiredAfter = Date.now() - t0;
        assert.ok(expiredAfter >= 290, `expired after ${expiredAfter} ms, before its TTL`);
        assert.ok(expiredAfter <= 600, `expired after ${expiredAfter} ms`);
      } finally {
        clearInterval(refresh);
      }
    });
  });
}
