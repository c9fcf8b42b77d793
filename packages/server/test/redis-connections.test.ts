/**
 * What docs/redis.md says a node costs Redis: four connections, whatever the number of channels
 * and clients (#15.5: the docs said two while four were open).
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { requireBinary, startRedis, startTestServer, TestClient } from './helpers.js';

const cleanup: (() => unknown)[] = [];
after(async () => {
  for (const fn of cleanup.reverse()) await fn();
});

const missing = requireBinary('redis-server');

/** The names of the clients connected to Redis, apart from redis-cli itself. */
function clientNames(cli: (...args: string[]) => string): string[] {
  return cli('CLIENT', 'LIST')
    .split('\n')
    .filter((line) => line.includes('addr=') && !line.includes('cmd=client|list'))
    .map((line) => /(?:^| )name=(\S*)/.exec(line)?.[1] ?? '')
    .sort();
}

void test(
  'a node holds four Redis connections, with 0 or 40 channels subscribed',
  { skip: missing === false ? false : missing },
  async () => {
    const redis = await startRedis();
    cleanup.push(() => redis.stop(true));
    const server = await startTestServer({ redis: redis.url });
    cleanup.push(() => server.close());
    const expected = [
      'switchboard',
      'switchboard',
      'switchboard-presence',
      'switchboard-revocations',
    ];
    assert.deepEqual(
      clientNames((...a) => redis.cli(...a)),
      expected,
    );
    const clients = await Promise.all(
      Array.from({ length: 4 }, () => TestClient.open(server.wsUrl)),
    );
    for (const [i, c] of clients.entries()) {
      cleanup.push(() => c.close());
      for (let k = 0; k < 10; k++) assert.equal((await c.subscribe(`count-${i}-${k}`))['ok'], true);
    }
    assert.deepEqual(
      clientNames((...a) => redis.cli(...a)),
      expected,
    );
  },
);
