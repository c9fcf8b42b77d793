/**
 * Protocol fuzz (issue 5; reliability B4): malformed or hostile commands (25,000; 100,000 under
 * `npm run test:soak`; FUZZ_CASES overrides) from fast-check generators — random JSON, wrong
 * types, random actions, huge strings, deep nesting, `__proto__`, `constructor` and `prototype`
 * keys, odd numbers, random bytes — pipelined over a few WebSocket connections to an in-process
 * server. Every case must get an error frame, a valid reply, or a close; the server never
 * crashes; Object.prototype (and friends) are untouched afterwards.
 */
import assert from 'node:assert/strict';
import { isUtf8 } from 'node:buffer';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { WebSocket } from 'ws';
import { failCode, soakOr, startTestServer, TestClient } from './helpers.js';
import { mint, SECRET } from './security-kit.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;

const CASES = soakOr('FUZZ_CASES', 100_000, 25_000);
const CONNECTIONS = 6;
/** Cases in flight per connection. */
const WINDOW = 48;
/** A valid ping after this many cases keeps a connection under the malformed-in-a-row limit. */
const PING_EVERY = 40;
const MAX_MESSAGE_BYTES = 64 * 1024;

interface Case {
  readonly text?: string;
  readonly bytes?: Buffer;
  readonly binary?: boolean;
  readonly kind: string;
}

// ---------------------------------------------------------------------------------------------
// Generators

const ACTIONS = ['subscribe', 'unsubscribe', 'publish', 'history', 'ping', 'connect', 'refresh'];
const PROTO_KEYS = ['__proto__', 'constructor', 'prototype'];

/** Values of every JSON type and some numbers JSON.parse turns into odd things. */
const oddNumberText = fc.constantFrom(
  '1e400',
  '-1e400',
  '-0',
  '1e-400',
  '9007199254740993',
  '-9007199254740993',
  '0.5',
  '1e21',
  '123456789012345678901234567890',
);
const anyJson = fc.jsonValue({ maxDepth: 3 });
const smallString = fc.string({ maxLength: 20 });
const channelLike = fc.oneof(
  fc.constantFrom('f1', 'f2', 'f3', 'chat:x', 'a:b', 'news.*', 'x y', '', '*', 'a'.repeat(256)),
  fc.string({ maxLength: 30 }),
  fc.string({ unit: 'binary', maxLength: 10 }),
  anyJson,
);
/** A field value: usually the wrong type, sometimes plausible. */
const fieldValue = fc.oneof(anyJson, smallString, fc.integer(), fc.double(), fc.boolean());

/** Text of a value, with odd number literals spliced in. */
const valueText: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fieldValue.map((v) => JSON.stringify(v)) },
  { weight: 1, arbitrary: oddNumberText },
);

/** An object given as JSON text, so `__proto__` stays a plain own key, as a client sends it. */
function objectText(fields: [string, string][]): string {
  return `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;
}

const commandFields: fc.Arbitrary<[string, string][]> = fc
  .tuple(
    fc.constantFrom(...ACTIONS),
    fc.subarray([
      'channel',
      'data',
      'message',
      'since',
      'rewind',
      'limit',
      'direction',
      'before',
      'cursor',
      'token',
      'name',
      'messageId',
      'id',
    ]),
    fc.array(valueText, { minLength: 13, maxLength: 13 }),
  )
  .map(([action, keys, values]) => [
    ['action', JSON.stringify(action)] as [string, string],
    ...keys.map((k, i) => [k, values[i] as string] as [string, string]),
  ]);

function nested(depth: number, kind: number): string {
  const [open, close] = kind === 0 ? ['[', ']'] : kind === 1 ? ['{"a":', '}'] : ['[{"x":', '}]'];
  return open.repeat(depth) + '1' + close.repeat(depth);
}

const protoPayload = fc
  .tuple(fc.constantFrom(...PROTO_KEYS), fc.constantFrom(...PROTO_KEYS), fc.nat(3))
  .map(([k1, k2, where]) => {
    const inner = `{"${k2}":{"polluted":true,"action":"ping","offset":1,"epoch":"e"},"polluted":true}`;
    const evil = `{"${k1}":${inner}}`;
    switch (where) {
      case 0:
        return `{"${k1}":${inner},"action":"subscribe","channel":"f1"}`;
      case 1:
        return `{"action":"subscribe","channel":"f1","since":${evil}}`;
      case 2:
        return `{"action":"publish","channel":"f2","data":${evil},"name":"n"}`;
      default:
        return `{"action":"${k1}","channel":${evil},"${k2}":${evil}}`;
    }
  });

const caseArb: fc.Arbitrary<Case> = fc.oneof(
  // Any JSON value at all.
  { weight: 60, arbitrary: anyJson.map((v) => ({ kind: 'json', text: JSON.stringify(v) })) },
  // Commands with known actions and fields of random types.
  {
    weight: 150,
    arbitrary: commandFields.map((f) => ({ kind: 'fields', text: objectText(f) })),
  },
  // Channel names of every shape and type on the commands that take one.
  {
    weight: 50,
    arbitrary: fc
      .tuple(fc.constantFrom('subscribe', 'unsubscribe', 'publish', 'history'), channelLike)
      .map(([action, channel]) => ({
        kind: 'channel',
        text: JSON.stringify({ action, channel, data: 1 }),
      })),
  },
  // Random action names.
  {
    weight: 30,
    arbitrary: fc
      .tuple(fc.oneof(smallString, anyJson), fc.dictionary(smallString, anyJson, { maxKeys: 3 }))
      .map(([action, rest]) => ({
        kind: 'action',
        text: JSON.stringify({ ...rest, action }),
      })),
  },
  // Not JSON: random text, broken JSON, random bytes.
  { weight: 30, arbitrary: fc.string({ maxLength: 60 }).map((text) => ({ kind: 'text', text })) },
  {
    weight: 20,
    arbitrary: fc
      .tuple(commandFields, fc.nat(), fc.string({ maxLength: 3 }))
      .map(([f, cut, junk]) => {
        const t = objectText(f);
        return { kind: 'broken', text: t.slice(0, cut % t.length) + junk };
      }),
  },
  {
    weight: 15,
    arbitrary: fc
      .uint8Array({ minLength: 1, maxLength: 64 })
      .map((b) => ({ kind: 'bytes', bytes: Buffer.from(b) })),
  },
  {
    weight: 5,
    arbitrary: fc
      .uint8Array({ maxLength: 32 })
      .map((b) => ({ kind: 'binary', bytes: Buffer.from(b), binary: true })),
  },
  // Prototype keys.
  { weight: 40, arbitrary: protoPayload.map((text) => ({ kind: 'proto', text })) },
  // Huge strings: under the frame limit, and (rarely) over it.
  {
    weight: 10,
    arbitrary: fc
      .tuple(
        fc.constantFrom('channel', 'data', 'name', 'messageId', 'id', 'cursor', 'token'),
        fc.integer({ min: 1000, max: 60_000 }),
        fc.constantFrom(...ACTIONS.filter((a) => a !== 'connect')),
      )
      .map(([field, n, action]) => ({
        kind: 'huge',
        text: JSON.stringify({
          action,
          channel: 'big',
          data: 1,
          [field]: 'x'.repeat(n),
        }),
      })),
  },
  {
    weight: 1,
    arbitrary: fc.integer({ min: MAX_MESSAGE_BYTES + 1, max: 200_000 }).map((n) => ({
      kind: 'oversize',
      text: JSON.stringify({ action: 'ping', pad: 'x'.repeat(n) }),
    })),
  },
  // Deep nesting, as a whole frame and inside fields.
  {
    weight: 10,
    arbitrary: fc
      .tuple(
        fc.integer({ min: 100, max: 20_000 }),
        fc.nat(2),
        fc.constantFrom('data', 'channel', 'since', 'id', 'whole'),
      )
      .map(([depth, k, where]) => ({
        kind: 'deep',
        text:
          where === 'whole'
            ? nested(depth, k)
            : `{"action":"publish","channel":"big","data":1,"${where}":${nested(depth, k)}}`,
      })),
  },
  // Valid commands: the server must still work normally between the hostile ones.
  {
    weight: 40,
    arbitrary: fc.oneof(
      fc.constantFrom('f1', 'f2', 'f3').map((channel) => ({
        kind: 'valid',
        text: JSON.stringify({ action: 'subscribe', channel }),
      })),
      fc.constantFrom('f1', 'f2', 'f3').map((channel) => ({
        kind: 'valid',
        text: JSON.stringify({ action: 'unsubscribe', channel }),
      })),
      fc
        .tuple(fc.constantFrom('f1', 'f2', 'f3', 'g'), fc.jsonValue({ maxDepth: 2 }))
        .map(([channel, data]) => ({
          kind: 'valid',
          text: JSON.stringify({ action: 'publish', channel, data: data ?? 0 }),
        })),
      fc
        .tuple(fc.constantFrom('f1', 'g'), fc.integer({ min: 1, max: 20 }))
        .map(([channel, limit]) => ({
          kind: 'valid',
          text: JSON.stringify({ action: 'history', channel, limit, direction: 'backward' }),
        })),
      fc.constant({ kind: 'valid', text: '{"action":"ping"}' }),
    ),
  },
  // Tokens: garbage, and (a placeholder the driver replaces) valid ones; connect and refresh.
  {
    weight: 10,
    arbitrary: fc
      .tuple(
        fc.constantFrom('connect', 'refresh'),
        fc.oneof(
          fc.string({ minLength: 1, maxLength: 40 }),
          fc.constant('a.b.c'),
          fc.constant('VALID'),
          fc.constant('EXPIRED'),
        ),
      )
      .map(([action, token]) => ({ kind: 'token', text: JSON.stringify({ action, token }) })),
  },
);

// ---------------------------------------------------------------------------------------------
// The driver

interface Pending {
  readonly sentAt: number;
  readonly text: string;
  /** A keepalive ping of the driver, not a case. */
  readonly ping?: boolean;
}

interface Stats {
  cases: number;
  pings: number;
  /** How each case was answered. */
  replies: number;
  errors: number;
  closedAlone: number;
  /** Cases in flight when the server closed the connection for another case (expected: 0). */
  cutOff: number;
  /** What cut the first ones off: the close code and the case in flight. */
  cutOffBy: string[];
  closes: Map<number, number>;
  reconnects: number;
  latencies: number[];
}

/**
 * One connection: sends cases with an id where one can be given, matches answers by id (`reply`)
 * or, for cases whose id the server cannot read, in order; reconnects after the server closes it.
 * Cases that may close the connection are sent alone, so a close answers exactly one case.
 */
class Lane {
  #ws: WebSocket | undefined;
  #closed: Promise<number> = Promise.resolve(0);
  readonly #url: string;
  readonly #stats: Stats;
  readonly #failures: string[];
  /** JSON of an id → the case awaiting the frame that carries it as `reply`. */
  readonly #byId = new Map<string, Pending>();
  /** Cases only an error without id can answer, in the order sent. */
  readonly #anon: Pending[] = [];
  #seq = 0;
  #sinceValid = 0;
  #wake: (() => void) | undefined;
  /** The last answer received. */
  #last: Record<string, unknown> = {};
  /** A big history read was the last case sent: nothing more is sent until it is answered. */
  #heavy = false;

  constructor(url: string, stats: Stats, failures: string[]) {
    this.#url = url;
    this.#stats = stats;
    this.#failures = failures;
  }

  get #outstanding(): number {
    return this.#byId.size + this.#anon.length;
  }

  async #socket(): Promise<WebSocket> {
    if (this.#ws !== undefined) return this.#ws;
    const ws = new WebSocket(this.#url);
    this.#closed = new Promise<number>((resolve) => {
      ws.on('close', (code: number) => {
        this.#stats.closes.set(code, (this.#stats.closes.get(code) ?? 0) + 1);
        for (const p of [...this.#byId.values(), ...this.#anon]) {
          if (p.ping === true) continue;
          this.#stats.cutOff++;
          if (this.#stats.cutOffBy.length < 3)
            this.#stats.cutOffBy.push(`${code}: ${p.text.slice(0, 120)}`);
        }
        this.#byId.clear();
        this.#anon.length = 0;
        this.#ws = undefined;
        this.#sinceValid = 0;
        resolve(code);
        this.#wake?.();
      });
    });
    ws.on('error', () => {});
    ws.on('message', (data: Buffer) => this.#onFrame(data.toString()));
    await once(ws, 'open');
    this.#stats.reconnects++;
    this.#ws = ws;
    return ws;
  }

  #onFrame(text: string): void {
    let f: Record<string, unknown>;
    try {
      f = JSON.parse(text) as Record<string, unknown>;
    } catch {
      this.#failures.push(`server sent non-JSON: ${text.slice(0, 200)}`);
      return;
    }
    if ('channel' in f && 'message' in f) return; // a delivery on a fuzzed subscription
    if ('event' in f) return; // refresh / unsubscribed pushes
    let p: Pending | undefined;
    if ('reply' in f) {
      const key = JSON.stringify(f['reply']);
      p = this.#byId.get(key);
      this.#byId.delete(key);
    } else p = this.#anon.shift();
    if (p === undefined) {
      this.#failures.push(`a frame no case asked for: ${text.slice(0, 200)}`);
      return;
    }
    this.#last = f;
    this.#stats.latencies.push(performance.now() - p.sentAt);
    const ok = f['ok'] === true;
    const error = typeof f['error'] === 'string' && typeof f['code'] === 'number';
    if (!ok && !error) this.#failures.push(`neither a reply nor an error: ${text.slice(0, 200)}`);
    if (p.ping !== true) {
      if (ok) this.#stats.replies++;
      else this.#stats.errors++;
    }
    this.#wake?.();
  }

  async #waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (!cond()) {
      if (performance.now() > deadline) {
        const oldest = [...this.#byId.values(), ...this.#anon][0];
        throw new Error(
          `timed out waiting for ${what}; oldest unanswered: ${oldest?.text.slice(0, 300)}`,
        );
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        setTimeout(resolve, 50);
      });
    }
  }

  /** Sends one case, waiting while the window is full. */
  async send(c: Case, tokens: { valid: string; expired: string }): Promise<void> {
    this.#stats.cases++;
    await this.#waitFor(() => this.#outstanding < WINDOW, 'window space');
    const ws = await this.#socket();
    if (++this.#sinceValid > PING_EVERY) {
      this.#sinceValid = 0;
      this.#stats.pings++;
      const id = `keepalive-${this.#seq++}`;
      this.#byId.set(JSON.stringify(id), { sentAt: performance.now(), text: id, ping: true });
      ws.send(`{"action":"ping","id":"${id}"}`);
    }
    if (c.bytes !== undefined && c.binary === true) {
      this.#anon.push({ sentAt: performance.now(), text: `binary ${c.bytes.toString('hex')}` });
      ws.send(c.bytes, { binary: true });
      return;
    }
    if (c.bytes !== undefined && !isUtf8(c.bytes)) {
      // Invalid UTF-8 in a text frame: answered by a close (1007).
      return this.#alone(c.bytes, `bytes ${c.bytes.toString('hex')}`, failCode(1007));
    }
    let text = c.bytes !== undefined ? c.bytes.toString('utf8') : (c.text as string);
    text = text.replace('"VALID"', JSON.stringify(tokens.valid));
    text = text.replace('"EXPIRED"', JSON.stringify(tokens.expired));
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    text = this.#withId(text, parsed);
    // Measured with the id the driver adds: a case just under the limit before it is over it
    // after, and the server then closes (1009; uWS: 1006) with other cases in flight.
    if (Buffer.byteLength(text) > MAX_MESSAGE_BYTES)
      return this.#alone(text, `oversize ${text.length}`, failCode(1009));
    const obj = parsed === undefined ? undefined : (JSON.parse(text) as unknown);
    const record =
      typeof obj === 'object' && obj !== null && !Array.isArray(obj)
        ? (obj as Record<string, unknown>)
        : undefined;
    const id = record?.['id'];
    // The server echoes ids that are safe integers or strings of at most 64 characters.
    const readable =
      (typeof id === 'number' && Number.isSafeInteger(id)) ||
      (typeof id === 'string' && id.length <= 64);
    // A connect that fails closes the connection (3500): alone, like the other closing cases.
    if (record?.['action'] === 'connect' && readable)
      return this.#alone(text, text, 3500, JSON.stringify(id));
    // A history page of 'big' (messages of up to 60 KB) is up to half of maxOutboundBytes: two
    // in flight behind a reader slowed by CPU load passed the outbound limit, and the server
    // rightly closed the lane as too slow (3008, then 1006 when the backlog was not read within
    // the grace), cutting off the cases in flight (#15.2). A client reads its big replies: one
    // at a time, with nothing else waiting behind it.
    const heavy = record?.['action'] === 'history' && record['channel'] === 'big';
    if (heavy || this.#heavy)
      await this.#waitFor(() => this.#outstanding === 0, 'a big history page to be read');
    const p: Pending = { sentAt: performance.now(), text };
    if (!readable) {
      const anon = await this.#socket();
      this.#anon.push(p);
      this.#heavy = heavy;
      anon.send(text);
      return;
    }
    const key = JSON.stringify(id);
    // Two cases in flight with one id cannot be told apart: wait for the first to be answered.
    await this.#waitFor(() => !this.#byId.has(key), `the answer to id ${key}`);
    const live = await this.#socket();
    this.#byId.set(key, p);
    this.#heavy = heavy;
    live.send(text);
  }

  /** The text with a fresh id when it is an object without one, so its answer can be matched. */
  #withId(text: string, parsed: unknown): string {
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return text;
    if (Object.hasOwn(parsed, 'id')) return text;
    const id = this.#seq++;
    const body = text.slice(text.indexOf('{') + 1).trimStart();
    return body.startsWith('}') ? `{"id":${id}}` : `{"id":${id},${body}`;
  }

  /**
   * A case that may close the connection, with nothing else in flight: answered by its reply or
   * error (a connect), or by the close with `code`.
   */
  async #alone(data: string | Buffer, what: string, code: number, key?: string): Promise<void> {
    await this.#waitFor(() => this.#outstanding === 0, 'an empty window');
    const ws = await this.#socket();
    const closed = this.#closed;
    const p: Pending = { sentAt: performance.now(), text: what };
    if (key !== undefined) {
      this.#byId.set(key, p);
      ws.send(data);
      await this.#waitFor(() => !this.#byId.has(key), what);
      // A refused connect (101) is followed by the close (3500): wait for it, so that the next
      // case gets a new socket.
      if (this.#last['code'] === 101) {
        const got = await Promise.race([closed, new Promise((r) => setTimeout(r, 5000, 'none'))]);
        if (got !== code) this.#failures.push(`${what}: refused, then closed with ${String(got)}`);
      }
      return;
    }
    ws.send(data, { binary: false });
    const got = await closed;
    this.#stats.latencies.push(performance.now() - p.sentAt);
    this.#stats.closedAlone++;
    if (got !== code) this.#failures.push(`${what}: closed with ${got}, expected ${code}`);
  }

  async drain(): Promise<void> {
    await this.#waitFor(() => this.#outstanding === 0, 'the last answers', 20_000);
  }

  close(): void {
    this.#ws?.close();
  }
}

function snapshot(o: object): string[] {
  return Object.getOwnPropertyNames(o)
    .sort()
    .map((k) => {
      const d = Object.getOwnPropertyDescriptor(o, k);
      const v = d?.value as unknown;
      return `${k}:${typeof v}:${typeof v === 'function' ? (v as { name: string }).name : String(v)}:${String(d?.writable)}${String(d?.enumerable)}${String(d?.configurable)}:${typeof d?.get}:${typeof d?.set}`;
    });
}

describe('protocol fuzz', () => {
  let server: Server;
  before(async () => {
    server = await startTestServer({
      jwtSecret: SECRET,
      // Anonymous connections may do everything on channels without a namespace, so the fuzz
      // reaches past the permission checks; namespaced channels exercise the refusals.
      namespaces: { '': { anonymous: ['subscribe', 'publish', 'history', 'presence'] } },
      maxMessageBytes: MAX_MESSAGE_BYTES,
      historySize: 100,
    });
  });
  after(() => server.close());

  it(`${CASES.toLocaleString('en')} malformed commands: each answered or closed, no crash, prototypes untouched`, async () => {
    const prototypes = [Object.prototype, Array.prototype, Function.prototype, String.prototype];
    const before = prototypes.map(snapshot);
    const tokens = {
      valid: await mint(
        'fuzzer',
        { cap: { 'f*': ['subscribe', 'publish', 'history'] } },
        { expIn: 3600 },
      ),
      expired: await mint('fuzzer', {}, { expIn: -3600 }),
    };
    const stats: Stats = {
      cases: 0,
      pings: 0,
      replies: 0,
      errors: 0,
      closedAlone: 0,
      cutOff: 0,
      cutOffBy: [],
      closes: new Map(),
      reconnects: 0,
      latencies: [],
    };
    const failures: string[] = [];
    const lanes = Array.from(
      { length: CONNECTIONS },
      () => new Lane(server.wsUrl, stats, failures),
    );
    const seed = Number(process.env['FUZZ_SEED'] ?? Date.now() % 2 ** 31);
    const t0 = performance.now();
    const kinds = new Map<string, number>();
    const CHUNK = 1000;
    for (let chunk = 0; chunk * CHUNK < CASES; chunk++) {
      const cases = fc.sample(caseArb, { numRuns: CHUNK, seed: seed + chunk });
      for (const c of cases) kinds.set(c.kind, (kinds.get(c.kind) ?? 0) + 1);
      // Each lane takes every CONNECTIONS-th case, pipelined.
      await Promise.all(
        lanes.map(async (lane, i) => {
          for (let k = i; k < cases.length; k += CONNECTIONS)
            await lane.send(cases[k] as Case, tokens);
        }),
      );
      assert.deepEqual(failures.slice(0, 5), [], `seed ${seed}`);
    }
    await Promise.all(lanes.map((l) => l.drain()));
    const seconds = (performance.now() - t0) / 1000;
    for (const l of lanes) l.close();

    assert.deepEqual(failures.slice(0, 10), [], `seed ${seed}`);
    assert.equal(stats.cases, CASES);
    // Every case was answered: a reply, an error, or (for the ones that must close) a close.
    assert.equal(
      stats.cutOff,
      0,
      `cases cut off by a close they did not cause (${stats.cutOffBy.join(' | ')}; seed ${seed})`,
    );
    assert.equal(stats.replies + stats.errors + stats.closedAlone, CASES);

    const after = prototypes.map(snapshot);
    assert.deepEqual(after, before, 'a prototype changed');
    for (const k of ['polluted', 'action', 'offset', 'epoch', 'x', 'a'])
      assert.equal(({} as Record<string, unknown>)[k], undefined, `Object.prototype.${k}`);

    // The server still serves a normal client.
    const c = await TestClient.open(server.wsUrl);
    assert.equal((await c.request({ action: 'ping', id: 'after' }))['ok'], true);
    assert.equal((await c.subscribe('f9'))['ok'], true);
    c.close();

    const lat = [...stats.latencies].sort((a, b) => a - b);
    const pct = (q: number): string => (lat[Math.floor(q * (lat.length - 1))] ?? 0).toFixed(1);
    process.stdout.write(
      `fuzz: ${stats.cases} cases (+${stats.pings} keepalive pings) in ${seconds.toFixed(1)} s = ${Math.round(stats.cases / seconds)} cases/s over ${CONNECTIONS} connections; ${stats.replies} replies, ${stats.errors} errors, ${stats.closedAlone} answered by a close; closes by code ${JSON.stringify(Object.fromEntries(stats.closes))}, ${stats.reconnects} reconnects; answer latency p50 ${pct(0.5)} ms p99 ${pct(0.99)} ms max ${pct(1)} ms (pipelined, ${WINDOW} in flight per connection); seed ${seed}; kinds ${JSON.stringify(Object.fromEntries(kinds))}\n`,
    );
  });
});
