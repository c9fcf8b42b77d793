/**
 * Redis that stops answering without dropping the connection (a frozen process: SIGSTOP; a long
 * fork or a stalled disk do the same). A publish whose command timed out may still be stored when
 * Redis resumes, so it must not be answered 108 "not stored" (issue 16.2): it gets 118 "outcome
 * unknown", and a retry with the same message id is stored once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ErrorCode } from '@switchboard/protocol';
import {
  eventually,
  requireBinary,
  startRedis,
  startTestServer,
  TestClient,
  type Frame,
  type RedisProcess,
} from './helpers.js';

const skip = requireBinary('redis-server') || requireBinary('redis-cli');
const TIMEOUT_MS = 300;
const GRACE_MS = 1500;

async function readyz(url: string): Promise<{ status: number; body: Frame }> {
  const res = await fetch(`${url}/readyz`);
  return { status: res.status, body: (await res.json()) as Frame };
}

type Server = Awaited<ReturnType<typeof startTestServer>>;

describe('Redis frozen (SIGSTOP) longer than redisCommandTimeoutMs', { skip }, () => {
  let redis: RedisProcess;
  let server: Server;
  const clients: TestClient[] = [];
  const open = async (): Promise<TestClient> => {
    const c = await TestClient.open(server.wsUrl);
    clients.push(c);
    return c;
  };
  const freeze = (): void => void process.kill(redis.pid, 'SIGSTOP');
  const thaw = (): void => void process.kill(redis.pid, 'SIGCONT');

  before(async () => {
    redis = await startRedis();
    server = await startTestServer({
      redis: redis.url,
      redisPrefix: 'freeze:',
      redisCommandTimeoutMs: TIMEOUT_MS,
      readinessGraceMs: GRACE_MS,
    });
  });
  after(async () => {
    thaw();
    for (const c of clients) c.ws.terminate();
    await server.close();
    await redis.stop();
  });

  it('answers 118 over WebSocket and REST; the messages appear once Redis resumes, and retries with the same ids are stored once', async () => {
    const sub = await open();
    await sub.subscribe('frozen');
    const pub = await open();
    const publish = (i: number, id: string): Frame & { id: string } => ({
      action: 'publish',
      channel: 'frozen',
      data: i,
      messageId: `m-${i}`,
      id,
    });
    freeze();
    let restStatus: number;
    let restBody: Frame;
    try {
      for (let i = 1; i <= 10; i++) pub.send(publish(i, `p${i}`));
      const rest = await fetch(`${server.url}/v1/channels/frozen/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ data: 11, id: 'm-11' }),
      });
      restStatus = rest.status;
      restBody = (await rest.json()) as Frame;
      await pub.until(
        (fs) => fs.filter((f) => String(f['reply']).startsWith('p')).length === 10,
        5000,
        '10 publish answers',
      );
    } finally {
      thaw();
    }
    const answers = pub.frames.filter((f) => String(f['reply']).startsWith('p'));
    assert.deepEqual(
      answers.map((f) => f['code']),
      Array.from({ length: 10 }, () => ErrorCode.OUTCOME_UNKNOWN),
      JSON.stringify(answers.slice(0, 2)),
    );
    assert.match(String(answers[0]?.['error']), /same messageId/);
    assert.equal(restStatus, 504);
    assert.equal(restBody['code'], ErrorCode.OUTCOME_UNKNOWN);

    // Redis runs the commands it had received: every "unknown" publish was in fact stored.
    await sub.until(() => sub.messages('frozen').length === 11, 10_000, '11 messages');
    assert.deepEqual(
      sub.messages('frozen').map((f) => f['message']),
      Array.from({ length: 11 }, (_, i) => i + 1),
    );

    // Retried with the same ids, each is stored once: the original position, nothing delivered.
    for (let i = 1; i <= 10; i++) {
      const r = await pub.request(publish(i, `retry${i}`));
      assert.equal(r['ok'], true, JSON.stringify(r));
      assert.equal(r['duplicate'], true);
      assert.equal(r['offset'], i);
    }
    const marker = await pub.request({
      action: 'publish',
      channel: 'frozen',
      data: 'end',
      id: 'm',
    });
    assert.equal(marker['offset'], 12);
    await sub.until(() => sub.messages('frozen').length === 12);
    assert.deepEqual(
      sub.messages('frozen').map((f) => f['offset']),
      Array.from({ length: 12 }, (_, i) => i + 1),
    );
  });

  it('answers 108 (not stored) when Redis refuses the write', async () => {
    const pub = await open();
    redis.cli('config', 'set', 'maxmemory', '1');
    redis.cli('config', 'set', 'maxmemory-policy', 'noeviction');
    try {
      const r = await pub.request({
        action: 'publish',
        channel: 'oom',
        data: 1,
        messageId: 'oom-1',
        id: 'o',
      });
      assert.equal(r['code'], ErrorCode.NOT_AVAILABLE, JSON.stringify(r));
    } finally {
      redis.cli('config', 'set', 'maxmemory', '0');
    }
    const sub = await open();
    const h = await sub.request({ action: 'history', channel: 'oom', id: 'h' });
    assert.deepEqual(h['messages'], []);
  });

  it('/readyz: still 200 during a blip shorter than readinessGraceMs, 503 once the freeze outlasts it, 200 again after', async () => {
    await eventually(async () => (await readyz(server.url)).status === 200, 5000, 'ready');
    freeze();
    let during: Awaited<ReturnType<typeof readyz>>;
    let sawFault = false;
    try {
      // Inside the grace period the node stays ready, and says what it sees.
      const t0 = Date.now();
      while (Date.now() - t0 < GRACE_MS - 500) {
        const r = await readyz(server.url);
        assert.equal(r.status, 200, JSON.stringify(r.body));
        if (Array.isArray(r.body['faults'])) sawFault = true;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await eventually(
        async () => (during = await readyz(server.url)).status === 503,
        GRACE_MS + 3000,
        '503 while frozen',
      );
    } finally {
      thaw();
    }
    assert.ok(sawFault, 'the fault was reported inside the grace period');
    assert.equal(during!.body['status'], 'not ready');
    assert.match(String((during!.body['reasons'] as string[])[0]), /^broker-not-writable/);
    await eventually(async () => (await readyz(server.url)).status === 200, 10_000, 'ready again');
  });

  it('/readyz: 503 while Redis refuses writes (maxmemory, noeviction), 200 once it takes them', async () => {
    await eventually(async () => (await readyz(server.url)).status === 200, 10_000, 'ready');
    redis.cli('config', 'set', 'maxmemory-policy', 'noeviction');
    redis.cli('config', 'set', 'maxmemory', '1');
    let during: Awaited<ReturnType<typeof readyz>>;
    try {
      await eventually(
        async () => (during = await readyz(server.url)).status === 503,
        GRACE_MS + 5000,
        '503 under OOM',
      );
    } finally {
      redis.cli('config', 'set', 'maxmemory', '0');
    }
    assert.match(JSON.stringify(during!.body['reasons']), /OOM/);
    await eventually(async () => (await readyz(server.url)).status === 200, 10_000, 'ready again');
  });
});
