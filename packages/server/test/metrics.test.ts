/**
 * The Metrics test of #11: a scripted workload with known numbers (connections per transport,
 * messages, errors, resumes, a rate-limited client, an auth failure, a gap, a lost Redis link, a
 * slow consumer) on a node with Redis, then every documented series read from /metrics and
 * compared with what the workload did. Values are exact wherever the workload fixes them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  closeMessageFrame,
  DisconnectCode,
  encodeMessageHead,
  ErrorCode,
} from '@switchboard/protocol';
import {
  ENGINE,
  eventually,
  startRedis,
  startTestServer,
  TestClient,
  type RedisProcess,
} from './helpers.js';
import { PollTestClient, SseTestClient } from './http-clients.js';
import { documentedSeries, Scrape } from './metrics-kit.js';
import { frame, http, mint, OP, RawWs, SECRET } from './security-kit.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;

const CAP = { '*': ['subscribe', 'publish', 'presence', 'history'] };
const N = 10;
const BURST = 40;

/** A TestClient that counts the bytes it sends and receives as WebSocket payloads. */
class CountingClient extends TestClient {
  sentBytes = 0;
  receivedBytes = 0;

  constructor(url: string) {
    super(url);
    this.ws.on('message', (data: Buffer) => {
      this.receivedBytes += data.length;
    });
  }

  static async connect(url: string): Promise<CountingClient> {
    const c = new CountingClient(url);
    await new Promise<void>((resolve, reject) => {
      c.ws.once('open', resolve);
      c.ws.once('error', reject);
    });
    return c;
  }

  override send(frame: unknown): void {
    const text = typeof frame === 'string' ? frame : JSON.stringify(frame);
    this.sentBytes += Buffer.byteLength(text);
    super.send(text);
  }
}

describe('Metrics: a scripted workload, then every documented series', () => {
  let redis: RedisProcess;
  let server: Server;
  let token: string;
  const ws: CountingClient[] = [];
  const sse: SseTestClient[] = [];
  let poll: PollTestClient;

  before(async () => {
    redis = await startRedis();
    server = await startTestServer({
      redis: redis.url,
      jwtSecret: SECRET,
      maxOutboundBytes: 64 * 1024,
      commandBurst: BURST,
      maxCommandsPerSecond: 1,
    });
    token = await mint('worker', { cap: CAP }, { expIn: 600 });
  });
  after(async () => {
    for (const c of ws) c.close();
    for (const c of sse) c.close();
    // A poller left open holds the node's stop until the drain gives up.
    if (server !== undefined) await poll?.close(server.url);
    await server?.close();
    await redis?.stop();
  });

  const scrape = (): Promise<Scrape> => Scrape.of(server.url);

  it('counts connections, messages, bytes and latencies of a known workload exactly', async () => {
    const q = `?token=${encodeURIComponent(token)}`;
    for (let i = 0; i < 3; i++) ws.push(await CountingClient.connect(server.wsUrl + q));
    for (const c of ws) assert.equal((await c.subscribe('m:load'))['ok'], true);
    for (let i = 0; i < 2; i++)
      sse.push(await SseTestClient.open(server.url, `${q}&channel=m:load`));
    poll = await PollTestClient.open(server.url, `${q}&channel=m:load`);
    await eventually(
      async () => (await scrape()).value('switchboard_subscriptions') === 6,
      5000,
      'six subscriptions',
    );
    const publisher = ws[0] as CountingClient;
    for (let i = 0; i < N; i++) {
      const r = await publisher.request({
        action: 'publish',
        channel: 'm:load',
        data: { i },
        id: `p${i}`,
      });
      assert.equal(r['ok'], true);
    }
    for (const c of ws) await c.until(() => c.messages('m:load').length === N);
    for (const c of sse)
      await c.until(
        () => c.frames.filter((f) => f['channel'] === 'm:load' && 'message' in f).length === N,
      );
    await poll.until(
      server.url,
      (fs) => fs.filter((f) => f['channel'] === 'm:load' && 'message' in f).length === N,
    );

    const s = await scrape();
    const t = (transport: string): Record<string, string> => ({ transport });
    assert.equal(s.value('switchboard_connections'), 6);
    assert.equal(
      s.value('switchboard_transport_connections', {
        transport: 'websocket',
        dialect: 'switchboard',
      }),
      3,
    );
    assert.equal(
      s.value('switchboard_transport_connections', { transport: 'sse', dialect: 'switchboard' }),
      2,
    );
    assert.equal(
      s.value('switchboard_transport_connections', {
        transport: 'long-polling',
        dialect: 'switchboard',
      }),
      1,
    );
    assert.equal(s.value('switchboard_connects_total', t('websocket')), 3);
    assert.equal(s.value('switchboard_connects_total', t('sse')), 2);
    assert.equal(s.value('switchboard_connects_total', t('long-polling')), 1);
    assert.equal(s.value('switchboard_subscriptions'), 6);
    assert.equal(s.value('switchboard_channels'), 1);
    assert.equal(s.value('switchboard_messages_published_total', { source: 'websocket' }), N);
    assert.equal(s.value('switchboard_messages_delivered_total'), 6 * N);
    assert.equal(s.value('switchboard_delivery_latency_seconds_count'), 6 * N);
    assert.equal(s.value('switchboard_delivery_latency_seconds_bucket', { le: '+Inf' }), 6 * N);
    // Loopback Redis: every delivery within a second of its assignment.
    assert.equal(s.value('switchboard_delivery_latency_seconds_bucket', { le: '1' }), 6 * N);
    assert.ok(s.value('switchboard_delivery_latency_seconds_sum') >= 0);
    assert.equal(s.value('switchboard_transport_messages_sent_total', t('websocket')), 3 * N);
    assert.equal(s.value('switchboard_transport_messages_sent_total', t('sse')), 2 * N);
    assert.equal(s.value('switchboard_transport_messages_sent_total', t('long-polling')), N);
    assert.equal(s.value('switchboard_publish_ack_latency_seconds_count'), N);
    assert.equal(
      s.value('switchboard_broker_command_duration_seconds_count', { op: 'publish' }),
      N,
    );
    assert.equal(
      s.value('switchboard_broker_command_duration_seconds_count', { op: 'subscribe' }),
      1,
    );
    // One seed of the channel's position when its first subscriber joined.
    assert.equal(s.value('switchboard_history_reads_total', { purpose: 'seed' }), 1);
    assert.equal(
      s.value('switchboard_broker_command_duration_seconds_count', { op: 'history' }),
      1,
    );
    // WebSocket bytes, both ways, are exactly the payloads the clients counted.
    assert.equal(
      s.value('switchboard_received_bytes_total', t('websocket')),
      ws.reduce((a, c) => a + c.sentBytes, 0),
    );
    assert.equal(
      s.value('switchboard_sent_bytes_total', t('websocket')),
      ws.reduce((a, c) => a + c.receivedBytes, 0),
    );
    assert.ok(s.value('switchboard_sent_bytes_total', t('sse')) > 0);
    assert.ok(s.value('switchboard_sent_bytes_total', t('long-polling')) > 0);
    // The SSE and long-polling clients sent nothing: their URL's subscribe is the server's own.
    assert.equal(s.value('switchboard_received_bytes_total', t('sse')), 0);
    assert.equal(s.value('switchboard_received_bytes_total', t('long-polling')), 0);
    assert.ok(
      s.value('switchboard_outbound_queue_bytes') >=
        s.value('switchboard_outbound_queue_max_bytes'),
    );
    assert.ok(s.value('switchboard_event_loop_active_seconds_total') > 0);
    assert.ok(s.families().has('nodejs_eventloop_lag_seconds'));
    for (const name of [
      'switchboard_resumes_total',
      'switchboard_gap_repairs_total',
      'switchboard_rate_limited_total',
    ])
      assert.equal(s.sum(name), 0, name);
    assert.equal(s.sum('switchboard_auth_failures_total'), 0);
    assert.equal(s.sum('switchboard_command_errors_total'), 0);
    assert.equal(s.sum('switchboard_disconnects_total'), 0);
  });

  it('counts errors, refused logins, rate-limit refusals, resumes and history reads', async () => {
    const [a, b, c] = ws as [CountingClient, CountingClient, CountingClient];
    // An unknown action: one error of code BAD_REQUEST.
    const bad = await a.request({ action: 'nope', id: 'bad' });
    assert.equal(bad['code'], ErrorCode.UNKNOWN_ACTION);
    // A refused login (a token signed with another key) on WebSocket and one on REST.
    const forged = await mint(
      'mallory',
      { cap: CAP },
      { key: new TextEncoder().encode('x'.repeat(40)) },
    );
    const refused = new TestClient(`${server.wsUrl}?token=${forged}`);
    assert.equal(await refused.closed(), DisconnectCode.UNAUTHORIZED);
    const rest = await http(server.port, 'POST', '/v1/channels/m:load/messages', {
      authorization: 'Bearer not.a-token',
    });
    assert.equal(rest.status, 401);
    // Resumes: one exact, one from a position of another epoch.
    const top = (await b.request({
      action: 'history',
      channel: 'm:load',
      limit: 1,
      id: 'h',
    })) as Record<string, unknown>;
    const epoch = (top['position'] as { epoch: string }).epoch;
    await b.request({ action: 'unsubscribe', channel: 'm:load', id: 'u1' });
    const ok = await b.request({
      action: 'subscribe',
      channel: 'm:load',
      since: { offset: N - 2, epoch },
      id: 'r1',
    });
    assert.equal(ok['recovered'], true);
    await c.request({ action: 'unsubscribe', channel: 'm:load', id: 'u2' });
    const lost = await c.request({
      action: 'subscribe',
      channel: 'm:load',
      since: { offset: 1, epoch: 'another-epoch' },
      id: 'r2',
    });
    assert.equal(lost['recovered'], false);
    // A client over its command rate: BURST commands served, the rest refused one by one.
    const flooder = await CountingClient.connect(
      `${server.wsUrl}?token=${encodeURIComponent(token)}`,
    );
    ws.push(flooder);
    const total = BURST + 5;
    for (let i = 0; i < total; i++) flooder.send({ action: 'ping', id: `f${i}` });
    await flooder.until(
      (fs) => fs.filter((f) => typeof f['reply'] === 'string').length === total,
      10_000,
    );
    const over = flooder.frames.filter((f) => f['code'] === ErrorCode.TOO_MANY_REQUESTS).length;
    assert.ok(over >= 1, 'some commands were refused');

    const s = await scrape();
    assert.equal(
      s.value('switchboard_command_errors_total', { code: String(ErrorCode.UNKNOWN_ACTION) }),
      1,
    );
    assert.equal(
      s.value('switchboard_command_errors_total', { code: String(ErrorCode.TOO_MANY_REQUESTS) }),
      over,
    );
    assert.equal(s.value('switchboard_rate_limited_total', { kind: 'command' }), over);
    assert.equal(s.value('switchboard_rate_limited_total', { kind: 'connection' }), 0);
    assert.equal(s.value('switchboard_auth_failures_total', { reason: 'signature' }), 1);
    assert.equal(s.value('switchboard_auth_failures_total', { reason: 'invalid_credentials' }), 1);
    assert.equal(s.sum('switchboard_auth_failures_total'), 2);
    assert.equal(
      s.value('switchboard_disconnects_total', { code: String(DisconnectCode.UNAUTHORIZED) }),
      1,
    );
    assert.equal(s.value('switchboard_resumes_total', { recovered: 'true' }), 1);
    assert.equal(s.value('switchboard_resumes_total', { recovered: 'false' }), 1);
    assert.equal(s.value('switchboard_history_reads_total', { purpose: 'resume' }), 2);
    assert.equal(s.value('switchboard_history_reads_total', { purpose: 'page' }), 1);
    assert.equal(s.value('switchboard_connects_total', { transport: 'websocket' }), 5);
  });

  it('counts a lost pub/sub link and a repaired gap; the latency histogram still counts every live delivery', async () => {
    const before = await scrape();
    redis.cli('CLIENT', 'KILL', 'TYPE', 'pubsub');
    await eventually(
      async () => (await scrape()).value('switchboard_broker_resubscribes_total') === 1,
      10_000,
      'the resubscribe',
    );
    // A gap: offset N+1 is stored without its pub/sub message, then N+2 is published normally.
    const meta = 'switchboard:m:{m:load}';
    const epoch = redis.cli('HGET', meta, 'e').trim();
    const skipped = Number(redis.cli('HINCRBY', meta, 'o', '1').trim());
    const head = encodeMessageHead({
      channel: 'm:load',
      dataJson: '"skipped"',
      id: 'gap',
      timestamp: Date.now(),
    });
    redis.cli(
      'XADD',
      'switchboard:s:{m:load}',
      `${skipped}-0`,
      'f',
      closeMessageFrame(head, skipped, epoch),
    );
    const a = ws[0] as CountingClient;
    await a.request({ action: 'publish', channel: 'm:load', data: 'after', id: 'after-gap' });
    for (const c of ws.slice(0, 3)) await c.until((fs) => fs.some((f) => f['message'] === 'after'));
    const s = await scrape();
    assert.equal(s.value('switchboard_gap_repairs_total', { outcome: 'repaired' }), 1);
    assert.equal(s.value('switchboard_gap_repairs_total', { outcome: 'lost' }), 0);
    // The repair read both the skipped message and the one published after it from history.
    assert.equal(s.value('switchboard_gap_repaired_messages_total'), 2);
    const subscribers = s.value('switchboard_subscriptions');
    assert.equal(subscribers, 6);
    const delta = (name: string): number => s.value(name) - before.value(name);
    assert.equal(delta('switchboard_messages_delivered_total'), 2 * subscribers);
    // Frames from history are measured from their publish timestamp: still one per delivery.
    assert.equal(delta('switchboard_delivery_latency_seconds_count'), 2 * subscribers);
    assert.equal(
      s.value('switchboard_delivery_latency_seconds_count'),
      s.value('switchboard_messages_delivered_total'),
    );
    assert.equal(
      delta('switchboard_history_reads_total'),
      s.value('switchboard_history_reads_total', { purpose: 'repair' }) -
        before.value('switchboard_history_reads_total', { purpose: 'repair' }),
    );
    assert.equal(s.sum('switchboard_broker_errors_total'), 0);
  });

  it('counts a slow consumer closed with 3008, and its queue in the outbound gauges', async () => {
    const slow = await RawWs.open(server.port, { path: `/ws?token=${encodeURIComponent(token)}` });
    slow.write(
      frame({ opcode: OP.TEXT, payload: '{"action":"subscribe","channel":"m:slow","id":1}' }),
    );
    await slow.until(() => slow.texts().length > 0);
    slow.socket.pause();
    const data = 'x'.repeat(16 * 1024);
    const batch = JSON.stringify(Array.from({ length: 50 }, () => ({ data })));
    let sent = 0;
    let maxQueue = 0;
    for (;;) {
      const s = await scrape();
      maxQueue = Math.max(maxQueue, s.value('switchboard_outbound_queue_max_bytes'));
      if (s.value('switchboard_slow_consumer_disconnects_total') > 0 || slow.endedAt !== undefined)
        break;
      assert.ok(sent < 40, 'never closed the slow client');
      const r = await http(
        server.port,
        'POST',
        '/v1/channels/m:slow/messages',
        { authorization: `Bearer ${token}` },
        batch,
      );
      assert.equal(r.status, 200);
      sent++;
    }
    slow.socket.resume();
    await slow.closed(3000);
    slow.destroy();
    const s = await scrape();
    const slowCloses = s.value('switchboard_slow_consumer_disconnects_total');
    assert.equal(slowCloses, s.value('switchboard_disconnects_total', { code: '3008' }));
    // uWS may drop the socket at its own limit before the engine's check closes it with 3008.
    if (ENGINE === 'ws') assert.equal(slowCloses, 1);
    else assert.ok(slowCloses <= 1);
    assert.equal(s.value('switchboard_messages_published_total', { source: 'http' }), sent * 50);
    assert.ok(maxQueue >= 0);
  });

  it('exports every series docs/operations.md documents, and documents every one it exports', async () => {
    const s = await scrape();
    const exported = [...s.families()].filter((n) => n.startsWith('switchboard_')).sort();
    const documented = [...new Set(documentedSeries())].sort();
    assert.deepEqual(exported, documented);
  });
});

describe('Metrics off (metrics: false)', () => {
  it('answers /metrics with 404 and still delivers', async () => {
    const server = await startTestServer({ metrics: false });
    try {
      const res = await fetch(`${server.url}/metrics`);
      assert.equal(res.status, 404);
      const c = await TestClient.open(server.wsUrl);
      await c.subscribe('off');
      await c.request({ action: 'publish', channel: 'off', data: 1, id: 'p' });
      await c.until(() => c.messages('off').length === 1);
      c.close();
    } finally {
      await server.close();
    }
  });
});
