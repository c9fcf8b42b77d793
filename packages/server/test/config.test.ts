import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { envName, flagName, settings } from '../src/config.js';
import { ConfigError, defaults, readEnv, resolveConfig } from '../src/index.js';

describe('configuration', () => {
  it('layers defaults < file < environment < flags', () => {
    const config = resolveConfig([
      { source: 'config file', values: { port: 1000, host: '127.0.0.1', historySize: 5 } },
      {
        source: 'environment',
        values: readEnv({ SWITCHBOARD_PORT: '2000', SWITCHBOARD_REDIS_PREFIX: 'env:' }),
      },
      { source: 'flag', values: { port: '3000' } },
    ]);
    assert.equal(config.port, 3000);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.redisPrefix, 'env:');
    assert.equal(config.historySize, 5);
    assert.equal(config.maxMessageBytes, defaults.maxMessageBytes);
    assert.equal(config.redis, undefined);
  });

  it('splits list settings on commas', () => {
    const config = resolveConfig([
      { source: 'environment', values: readEnv({ SWITCHBOARD_REDIS_BRIDGE: 'iss.*, news.*' }) },
    ]);
    assert.deepEqual(config.redisBridge, ['iss.*', 'news.*']);
  });

  it('names the bad key and its source', () => {
    assert.throws(
      () =>
        resolveConfig([
          { source: 'environment', values: readEnv({ SWITCHBOARD_PING_INTERVAL_MS: 'soon' }) },
        ]),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.key === 'pingIntervalMs' &&
        /SWITCHBOARD_PING_INTERVAL_MS/.test(err.message),
    );
    assert.throws(
      () => resolveConfig([{ source: 'flag', values: { logLevel: 'loud' } }]),
      /logLevel/,
    );
    assert.throws(
      () => resolveConfig([{ source: 'flag', values: { redis: 'postgres://x' } }]),
      /redis/,
    );
    assert.throws(() => resolveConfig([{ source: 'flag', values: { port: 70000 } }]), /port/);
  });
});

describe('README configuration reference', () => {
  it('lists every setting with its flag, variable and key', () => {
    const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
    for (const key of Object.keys(settings) as (keyof typeof settings)[]) {
      assert.ok(
        readme.includes(`| \`--${flagName(key)}\` | \`${envName(key)}\` | \`${key}\` |`),
        `README documents ${key}`,
      );
    }
  });
});

describe('Redis Cluster and Sentinel settings', () => {
  it('takes host:port lists and refuses a bad entry or a half-given sentinel setup, naming the key', () => {
    const c = resolveConfig([
      { source: 'flag', values: { redisCluster: '127.0.0.1:7000, [::1]:7001' } },
    ]);
    assert.deepEqual(c.redisCluster, ['127.0.0.1:7000', '[::1]:7001']);
    assert.throws(
      () => resolveConfig([{ source: 'flag', values: { redisCluster: 'localhost' } }]),
      /redisCluster.*"localhost" is not host:port/,
    );
    assert.throws(
      () => resolveConfig([{ source: 'flag', values: { redisSentinels: '127.0.0.1:26379' } }]),
      /redisSentinels and redisSentinelName go together/,
    );
    assert.throws(
      () =>
        resolveConfig([
          {
            source: 'flag',
            values: { redisCluster: '127.0.0.1:7000', redis: 'redis://127.0.0.1:6000' },
          },
        ]),
      /exclude each other/,
    );
  });
});
