import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ErrorCode } from '@switchboard/protocol';
import { startLoggedTestServer, startTestServer, TestClient } from './helpers.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;

describe('REST API', () => {
  let server: Server;
  let sub: TestClient;
  const post = (channel: string, body: unknown, init: RequestInit = {}): Promise<Response> =>
    fetch(`${server.url}/v1/channels/${channel}/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
      ...init,
    });

  before(async () => {
    server = await startTestServer({ maxRequestBodyBytes: 4096 });
    sub = await TestClient.open(server.wsUrl);
    await sub.subscribe('rest');
  });
  after(async () => {
    sub.close();
    await server.close();
  });

  describe('POST /v1/channels/{channel}/messages', () => {
    it('publishes one message and replies with its stored id and position', async () => {
      const res = await post('rest', { name: 'greeting', data: { hello: 'world' }, id: 'msg-1' });
      assert.equal(res.status, 200);
      const body = (await res.json()) as {
        ids: string[];
        messages: { id: string; offset: number; epoch: string }[];
      };
      assert.deepEqual(body.ids, ['msg-1']);
      assert.equal(body.messages[0]?.offset, 1);
      await sub.until(() => sub.messages('rest').length === 1);
      const m = sub.messages('rest')[0];
      assert.deepEqual(m?.['message'], { hello: 'world' });
      assert.equal(m?.['name'], 'greeting');
      assert.equal(m?.['id'], 'msg-1');
    });

    it('publishes an array in order', async () => {
      const res = await post('rest', [{ data: 'a' }, { data: 'b' }, { data: 'c' }]);
      assert.equal(res.status, 200);
      const body = (await res.json()) as { ids: string[]; messages: { offset: number }[] };
      assert.equal(body.ids.length, 3);
      assert.deepEqual(
        body.messages.map((m) => m.offset),
        [2, 3, 4],
      );
      await sub.until(() => sub.messages('rest').length === 4);
      assert.deepEqual(
        sub
          .messages('rest')
          .slice(1)
          .map((m) => m['message']),
        ['a', 'b', 'c'],
      );
    });

    it('stores a retried id once and says it was a duplicate', async () => {
      const first = (await (await post('rest', { data: 1, id: 'retry-me' })).json()) as {
        messages: { offset: number }[];
      };
      const again = (await (await post('rest', { data: 1, id: 'retry-me' })).json()) as {
        messages: { offset: number; duplicate?: boolean }[];
      };
      assert.equal(again.messages[0]?.offset, first.messages[0]?.offset);
      assert.equal(again.messages[0]?.duplicate, true);
    });

    const bad: [string, string, unknown, number, number][] = [
      ['invalid JSON', 'rest', '{"data":', 400, ErrorCode.INVALID_JSON],
      ['a missing data field', 'rest', { name: 'x' }, 400, ErrorCode.BAD_REQUEST],
      ['a non-object message', 'rest', [1], 400, ErrorCode.BAD_REQUEST],
      ['an empty array', 'rest', [], 400, ErrorCode.BAD_REQUEST],
      ['a bad id', 'rest', { data: 1, id: 7 }, 400, ErrorCode.BAD_REQUEST],
      ['a bad channel name', 'bad%20name', { data: 1 }, 400, ErrorCode.INVALID_CHANNEL],
      [
        'a body over the limit',
        'rest',
        { data: 'x'.repeat(5000) },
        413,
        ErrorCode.PAYLOAD_TOO_LARGE,
      ],
    ];
    for (const [what, channel, body, status, code] of bad) {
      it(`answers ${what} with ${status} and code ${code}`, async () => {
        const res = await post(channel, body);
        assert.equal(res.status, status);
        assert.match(res.headers.get('content-type') ?? '', /application\/json/);
        const json = (await res.json()) as { error: string; code: number };
        assert.equal(json.code, code);
        assert.equal(typeof json.error, 'string');
      });
    }

    it('answers a wrong method with 405 and an Allow header', async () => {
      const res = await fetch(`${server.url}/v1/channels/rest/messages`, { method: 'DELETE' });
      assert.equal(res.status, 405);
      assert.equal(res.headers.get('allow'), 'GET, HEAD, POST');
      assert.equal(((await res.json()) as { code: number }).code, ErrorCode.METHOD_NOT_ALLOWED);
    });
  });

  it('answers an unknown route with 404 JSON', async () => {
    const res = await fetch(`${server.url}/nope`);
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as { code: number }).code, ErrorCode.NOT_FOUND);
  });

  it('serves /healthz and /readyz', async () => {
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: 'ok' });
    const ready = await fetch(`${server.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ready', broker: 'memory' });
  });

  it('serves Prometheus metrics: process, connections, subscriptions, channels, messages in and out', async () => {
    const res = await fetch(`${server.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
    const text = await res.text();
    assert.match(text, /^process_resident_memory_bytes \d+/m);
    assert.match(text, /^switchboard_connections 1$/m);
    assert.match(text, /^switchboard_subscriptions 1$/m);
    assert.match(text, /^switchboard_channels 1$/m);
    assert.match(text, /^switchboard_messages_published_total\{source="http"\} [1-9]/m);
    assert.match(text, /^switchboard_messages_delivered_total [1-9]/m);
  });

  describe('bodies read as JSON need Content-Type: application/json', () => {
    for (const type of [
      'text/plain',
      'text/plain;charset=UTF-8',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=x',
      undefined,
    ]) {
      it(`refuses ${type ?? 'no content type'} with 415 and code 119, storing nothing`, async () => {
        const before = sub.messages('rest').length;
        const headers: Record<string, string> = type === undefined ? {} : { 'content-type': type };
        const res = await fetch(`${server.url}/v1/channels/rest/messages`, {
          method: 'POST',
          headers,
          body: type === undefined ? Buffer.from('{"data":"form"}') : '{"data":"form"}',
        });
        assert.equal(res.status, 415);
        const body = (await res.json()) as { code: number; error: string };
        assert.equal(body.code, ErrorCode.UNSUPPORTED_MEDIA_TYPE);
        assert.match(body.error, /application\/json/);
        // A marker publish after it: had the refused one been stored, it would arrive first.
        assert.equal((await post('rest', { data: 'marker' })).status, 200);
        await sub.until(() => sub.messages('rest').length > before);
        assert.deepEqual(
          sub
            .messages('rest')
            .slice(before)
            .map((m) => m['message']),
          ['marker'],
        );
      });
    }

    it('accepts application/json with a charset, in any case', async () => {
      const res = await post(
        'rest',
        { data: 1 },
        {
          headers: { 'content-type': 'Application/JSON; charset=utf-8' },
        },
      );
      assert.equal(res.status, 200);
    });
  });
});

describe('REST API: a channel that is not valid percent-encoding', () => {
  it('answers 400 with code 113 on both routes, and logs no error', async () => {
    const server = await startLoggedTestServer();
    try {
      for (const [method, path] of [
        ['GET', '/v1/channels/%ZZ/messages'],
        ['POST', '/v1/channels/%ZZ/messages'],
        ['GET', '/v1/channels/a%E0%A4%A/presence'],
      ] as const) {
        const res = await fetch(`${server.url}${path}`, {
          method,
          headers: { 'content-type': 'application/json' },
          ...(method === 'POST' && { body: '{"data":1}' }),
        });
        assert.equal(res.status, 400, `${method} ${path}`);
        assert.equal(((await res.json()) as { code: number }).code, ErrorCode.INVALID_CHANNEL);
      }
      const errors = server.logs.filter((l) => l.level >= 50);
      assert.deepEqual(errors, []);
    } finally {
      await server.close();
    }
  });
});
