import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as api from '../src/index.js';

// index.ts is the embedding API (docs: README "Embedding"): what examples/ and embedders use, not
// the server's internals. A new export must be added here on purpose.
describe('embedding API', () => {
  it('exports exactly the supported values', () => {
    assert.deepEqual(Object.keys(api).sort(), [
      'ConfigError',
      'DisconnectCode',
      'EVENT_ID_HEADER',
      'ErrorCode',
      'MemoryBroker',
      'PublishError',
      'RedisBroker',
      'RedisClusterBroker',
      'SIGNATURE_HEADER',
      'WEBHOOK_EVENTS',
      'createLogger',
      'defaults',
      'readConfigFile',
      'readEnv',
      'resolveConfig',
      'settings',
      'startServer',
      'verifyWebhook',
    ]);
  });

  it('starts and stops a server (memory broker without redisUrl)', async () => {
    const config = api.resolveConfig([{ source: 'test', values: { port: 0, host: '127.0.0.1' } }]);
    const server = await api.startServer(config, api.createLogger('silent'));
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/healthz`);
      assert.equal(res.status, 200);
    } finally {
      await server.close();
    }
  });
});
