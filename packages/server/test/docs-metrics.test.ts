/**
 * Every series a node exports is documented in docs/operations.md (#15.5: some were not), the
 * way test/errors.test.ts keeps error codes and docs/errors.md together.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { requireBinary, startRedis, startTestServer } from './helpers.js';

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

const OPERATIONS = readFileSync(new URL('../../../docs/operations.md', import.meta.url), 'utf8');
const missing = requireBinary('redis-server');

void test(
  'every switchboard_* metric of a node (Redis, bridge on) is in docs/operations.md',
  { skip: missing === false ? false : missing },
  async () => {
    const redis = await startRedis();
    cleanup.push(() => redis.stop(true));
    const server = await startTestServer({ redis: redis.url, redisBridge: ['docs.*'] });
    cleanup.push(() => server.close());
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const names = [...new Set([...text.matchAll(/^# TYPE (switchboard_\w+)/gm)].map((m) => m[1]))];
    assert.ok(names.length >= 10, `metrics found: ${names.join(', ')}`);
    assert.ok(names.includes('switchboard_bridge_gaps_total'), 'the bridge series are exported');
    const undocumented = names.filter((n) => n !== undefined && !OPERATIONS.includes('`' + n));
    assert.deepEqual(undocumented, [], 'metrics missing from docs/operations.md');
  },
);
