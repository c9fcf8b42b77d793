/**
 * Capability property test (issue 5, server items 2 and 3; reliability S5): random capability
 * sets, random principals (token, anonymous, API key) and random operations on random channels,
 * over WebSocket and REST, checked against an independent model of the rules. The checker confirms
 * that no subscribe, delivery, publish or history read ever happens outside what the model allows,
 * and that everything it allows works. Presence reads are among the operations: allowed ones list
 * only connections that subscribed to the channel (and the reader itself exactly when it did), in
 * namespaces with presence on; elsewhere they are refused with 117, and denied ones show nothing.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import { ErrorCode } from '@switchboard/protocol';
import { startTestServer, TestClient, type Frame } from './helpers.js';
import { http, json, mint, SECRET } from './security-kit.js';

type Server = Awaited<ReturnType<typeof startTestServer>>;
type Perm = 'subscribe' | 'publish' | 'presence' | 'history';
type Caps = Record<string, Perm[]>;

const PERMS: Perm[] = ['subscribe', 'publish', 'presence', 'history'];

/** Namespace rules under test, in config form. */
const NAMESPACES: Record<
  string,
  { anonymous?: Perm[]; clientPublish?: boolean; presence?: boolean; autoEnter?: boolean }
> = {
  chat: { presence: true, autoEnter: true },
  pub: { anonymous: ['subscribe', 'history'], presence: true, autoEnter: true },
  feed: { clientPublish: false },
  open: {
    anonymous: ['subscribe', 'publish', 'history', 'presence'],
    presence: true,
    autoEnter: true,
  },
  // Anonymous access that includes publishing, where clients may not publish: backends only.
  ro: { anonymous: ['subscribe', 'publish'], clientPublish: false },
  '': { anonymous: ['history'] },
};

/** A small alphabet so that patterns and channels overlap a lot. */
const CHANNELS = ['chat', 'pub', 'feed', 'open', 'ro', 'a']
  .flatMap((ns) => ['a', 'ab', 'b', 'a:b'].map((n) => `${ns}:${n}`))
  .concat(['a', 'ab', 'b', 'chat']);

const patternArb = fc.oneof(
  fc.constantFrom(...CHANNELS),
  fc
    .tuple(fc.constantFrom(...CHANNELS), fc.nat())
    .map(([c, n]) => c.slice(0, n % (c.length + 1)) + '*'),
);
const capsArb: fc.Arbitrary<Caps> = fc.dictionary(
  patternArb,
  fc.subarray(PERMS, { minLength: 0 }),
  { maxKeys: 4 },
);

const API_KEY_COUNT = 12;

type Principal =
  { kind: 'token'; caps: Caps } | { kind: 'anonymous' } | { kind: 'apiKey'; key: number };

interface Op {
  readonly op:
    | 'subscribe'
    | 'publish'
    | 'history'
    | 'presence'
    | 'enter'
    | 'presence-subscribe'
    | 'occupancy-subscribe'
    | 'info';
  readonly channel: string;
}

interface Scenario {
  readonly principal: Principal;
  readonly transport: 'ws' | 'rest';
  readonly ops: Op[];
}

const channelArb = fc.constantFrom(...CHANNELS);
const wsOpArb: fc.Arbitrary<Op> = fc.record({
  op: fc.constantFrom(
    'subscribe',
    'publish',
    'history',
    'presence',
    'enter',
    'presence-subscribe',
    'occupancy-subscribe',
  ),
  channel: channelArb,
});
const restOpArb: fc.Arbitrary<Op> = fc.record({
  op: fc.constantFrom('publish', 'history', 'presence', 'info'),
  channel: channelArb,
});

const scenarioArb: fc.Arbitrary<Scenario> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      principal: capsArb.map((caps): Principal => ({ kind: 'token', caps })),
      transport: fc.constant<'ws'>('ws'),
      ops: fc.array(wsOpArb, { minLength: 1, maxLength: 6 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      principal: capsArb.map((caps): Principal => ({ kind: 'token', caps })),
      transport: fc.constant<'rest'>('rest'),
      ops: fc.array(restOpArb, { minLength: 1, maxLength: 6 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      principal: fc.constant<Principal>({ kind: 'anonymous' }),
      transport: fc.constant<'ws'>('ws'),
      ops: fc.array(wsOpArb, { minLength: 1, maxLength: 6 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      principal: fc.constant<Principal>({ kind: 'anonymous' }),
      transport: fc.constant<'rest'>('rest'),
      ops: fc.array(restOpArb, { minLength: 1, maxLength: 6 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      principal: fc.nat(API_KEY_COUNT - 1).map((key): Principal => ({ kind: 'apiKey', key })),
      transport: fc.constant<'rest'>('rest'),
      ops: fc.array(restOpArb, { minLength: 1, maxLength: 6 }),
    }),
  },
);

// ---------------------------------------------------------------------------------------------
// The model: written from the issue and the docs, not from the server's code.

function namespaceOf(channel: string): string {
  const i = channel.indexOf(':');
  return i < 0 ? '' : channel.slice(0, i);
}

function presenceOn(channel: string): boolean {
  return NAMESPACES[namespaceOf(channel)]?.presence === true;
}

function patternMatches(pattern: string, channel: string): boolean {
  return pattern.endsWith('*') ? channel.startsWith(pattern.slice(0, -1)) : pattern === channel;
}

function modelAllows(p: Principal, perm: Perm, channel: string, apiKeyCaps: Caps[]): boolean {
  const ns = NAMESPACES[namespaceOf(channel)];
  const anonymousMay = ns?.anonymous?.includes(perm) ?? false;
  // clientPublish false: only backends (API keys) publish, whatever else is granted.
  if (perm === 'publish' && ns?.clientPublish === false && p.kind !== 'apiKey') return false;
  if (p.kind === 'anonymous') return anonymousMay;
  const caps = p.kind === 'token' ? p.caps : (apiKeyCaps[p.key] as Caps);
  const granted = Object.entries(caps).some(
    ([pattern, perms]) => perms.includes(perm) && patternMatches(pattern, channel),
  );
  // An authenticated principal has at least what anonymous connections have.
  return granted || anonymousMay;
}

/** fast-check keeps the failing assertion in `cause`; put it in the message the runner prints. */
async function withCause(p: Promise<void>): Promise<void> {
  try {
    await p;
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause;
    if (err instanceof Error && cause instanceof Error) err.message += `\ncause: ${cause.message}`;
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------

describe('capabilities: property test over WebSocket and REST', () => {
  let server: Server;
  const admin = { name: 'observer', secret: 'observer-secret-0123456789' };
  const apiKeyCaps = fc.sample(capsArb, { numRuns: API_KEY_COUNT, seed: 42 });
  const adminAuth = `Basic ${Buffer.from(`${admin.name}:${admin.secret}`).toString('base64')}`;
  const keyAuth = (i: number): string => `Bearer key${i}:key-secret-${i}-0123456789abcdef`;
  /** Publishes the model allowed and the server acknowledged: channel → markers. */
  const stored = new Map<string, Set<string>>();
  /** Every publish attempted, by marker, with the verdict. */
  let attempted = 0;
  let denied = 0;
  let delivered = 0;
  let ops = 0;
  /** Presence reads answered with members, refused by capability, refused as presence off. */
  const presence = { read: 0, denied: 0, off: 0, members: 0, entered: 0 };
  /** Occupancy streams opened (WebSocket) and channel reads answered (REST), both allowed. */
  const occupancy = { streams: 0, info: 0 };
  /** Channel → users (token subs, '-' for anonymous) that were ever subscribed to it. */
  const everSubscribed = new Map<string, Set<string>>();

  before(async () => {
    server = await startTestServer({
      jwtSecret: SECRET,
      namespaces: NAMESPACES,
      historySize: 200_000,
      apiKeys: [
        {
          ...admin,
          capabilities: { '*': ['subscribe', 'publish', 'presence', 'history'] },
        },
        ...apiKeyCaps.map((capabilities, i) => ({
          name: `key${i}`,
          secret: `key-secret-${i}-0123456789abcdef`,
          capabilities,
        })),
      ],
    });
  });
  after(() => server.close());

  async function adminPublish(channel: string, data: unknown): Promise<void> {
    const r = await http(
      server.port,
      'POST',
      `/v1/channels/${channel}/messages`,
      { Authorization: adminAuth },
      JSON.stringify({ data }),
    );
    assert.equal(r.status, 200, r.body);
  }

  function record(channel: string, marker: string): void {
    let set = stored.get(channel);
    if (set === undefined) stored.set(channel, (set = new Set()));
    set.add(marker);
  }

  function subscribedTo(channel: string, user: string): void {
    let set = everSubscribed.get(channel);
    if (set === undefined) everSubscribed.set(channel, (set = new Set()));
    set.add(user);
  }

  /**
   * An allowed presence read: refused with 117 where presence is off; elsewhere it lists only
   * users that subscribed to the channel at some point (members of earlier cases may still be
   * leaving), and `self` exactly when the reader is subscribed.
   */
  function checkPresence(
    channel: string,
    status: number,
    body: Frame,
    self: { user: string; subscribed: boolean } | undefined,
    what: string,
  ): void {
    if (!presenceOn(channel)) {
      assert.equal(body['code'], ErrorCode.PRESENCE_DISABLED, what);
      assert.equal(status, 404, what);
      assert.equal(body['members'], undefined, what);
      presence.off++;
      return;
    }
    assert.equal(status, 200, what);
    const members = body['members'] as { clientId: string; connectionId: string }[];
    assert.ok(Array.isArray(members), what);
    const allowed = everSubscribed.get(channel) ?? new Set();
    // A member's clientId is its token's sub; an anonymous one's is its connectionId.
    const userOf = (m: { clientId: string; connectionId: string }): string =>
      m.clientId === m.connectionId ? '-' : m.clientId;
    for (const m of members) {
      assert.equal(typeof m.clientId, 'string', what);
      assert.ok(allowed.has(userOf(m)), `${what}: member ${JSON.stringify(m)} never subscribed`);
    }
    if (self !== undefined && self.user !== '-') {
      assert.equal(
        members.some((m) => userOf(m) === self.user),
        self.subscribed,
        `${what}: the reader ${self.user} is listed exactly when subscribed`,
      );
    }
    presence.read++;
    presence.members += members.length;
  }

  const denialCode = (p: Principal): number =>
    p.kind === 'anonymous' ? ErrorCode.UNAUTHORIZED : ErrorCode.PERMISSION_DENIED;

  async function runWs(run: number, s: Scenario): Promise<void> {
    const p = s.principal;
    const c = new TestClient(server.wsUrl);
    try {
      await once(c.ws, 'open');
      if (p.kind === 'token') {
        const token = await mint(`u${run}`, { cap: p.caps });
        const r = await c.request({ action: 'connect', token, id: 'auth' });
        assert.equal(r['ok'], true, JSON.stringify(r));
      }
      // Pipelined, each with an id; the model walks them in the order sent.
      const subscribed = new Set<string>();
      /** Channels entered (explicitly) and whose presence events are streamed here. */
      const entered = new Set<string>();
      const streams = new Set<string>();
      const user = p.kind === 'token' ? `u${run}` : '-';
      /** The permission an op needs: enter and presence-subscribe need `presence`. */
      /** occupancy-subscribe needs `subscribe`: who is in a channel is for those who may listen. */
      const permOf = (op: Op): Perm =>
        op.op === 'enter' || op.op === 'presence-subscribe'
          ? 'presence'
          : op.op === 'occupancy-subscribe' || op.op === 'info'
            ? 'subscribe'
            : op.op;
      const occupancyStreams = new Set<string>();
      /** Presence op index → whether the reader had subscribed to its channel by then. */
      const selfListed = new Map<number, boolean>();
      for (const op of s.ops) {
        if (op.op === 'subscribe' && modelAllows(p, 'subscribe', op.channel, apiKeyCaps))
          subscribedTo(op.channel, user);
        if (op.op === 'enter' && modelAllows(p, 'presence', op.channel, apiKeyCaps))
          subscribedTo(op.channel, user);
      }
      const expected: { id: number; op: Op; allow: boolean; dup: boolean; marker: string }[] = [];
      s.ops.forEach((op, i) => {
        const allow = modelAllows(p, permOf(op), op.channel, apiKeyCaps);
        const on = presenceOn(op.channel);
        const dup =
          (op.op === 'subscribe' && allow && subscribed.has(op.channel)) ||
          (op.op === 'presence-subscribe' && allow && on && streams.has(op.channel)) ||
          (op.op === 'occupancy-subscribe' && allow && occupancyStreams.has(op.channel));
        if (op.op === 'occupancy-subscribe' && allow) occupancyStreams.add(op.channel);
        if (op.op === 'subscribe' && allow) subscribed.add(op.channel);
        if (op.op === 'enter' && allow && on) entered.add(op.channel);
        if (op.op === 'presence-subscribe' && allow && on) streams.add(op.channel);
        const marker = `${run}.${i}`;
        expected.push({ id: i, op, allow, dup, marker });
        if (op.op === 'publish')
          c.send({ action: 'publish', channel: op.channel, data: { m: marker }, id: i });
        else if (op.op === 'history')
          c.send({ action: 'history', channel: op.channel, limit: 5, id: i });
        else if (op.op === 'presence') {
          selfListed.set(i, subscribed.has(op.channel) || entered.has(op.channel));
          c.send({ action: 'presence', channel: op.channel, id: i });
        } else if (op.op === 'enter')
          c.send({ action: 'enter', channel: op.channel, data: { m: marker }, id: i });
        else if (op.op === 'presence-subscribe')
          c.send({ action: 'presence-subscribe', channel: op.channel, id: i });
        else if (op.op === 'occupancy-subscribe')
          c.send({ action: 'occupancy-subscribe', channel: op.channel, id: i });
        else c.send({ action: 'subscribe', channel: op.channel, id: i });
      });
      await c.until(
        (fs) => expected.every((e) => fs.some((f) => f['reply'] === e.id)),
        5000,
        'every reply',
      );
      for (const e of expected) {
        const r = c.frames.find((f) => f['reply'] === e.id) as Frame;
        const what = `${e.op.op} ${e.op.channel} by ${JSON.stringify(p)}: ${JSON.stringify(r)}`;
        if (!e.allow) {
          assert.equal(r['code'], denialCode(p), what);
          assert.equal(r['members'], undefined, what);
          if (e.op.op === 'publish') denied++;
          if (e.op.op === 'presence') presence.denied++;
          continue;
        }
        if (e.op.op === 'presence') {
          const subscribedThen = selfListed.get(e.id) ?? false;
          checkPresence(
            e.op.channel,
            r['ok'] === true ? 200 : 404,
            r,
            { user, subscribed: subscribedThen },
            what,
          );
          continue;
        }
        if (
          (e.op.op === 'enter' || e.op.op === 'presence-subscribe') &&
          !presenceOn(e.op.channel)
        ) {
          assert.equal(r['code'], ErrorCode.PRESENCE_DISABLED, what);
          presence.off++;
          continue;
        }
        if (e.dup) {
          assert.equal(r['code'], ErrorCode.ALREADY_SUBSCRIBED, what);
          continue;
        }
        if (e.op.op === 'enter') presence.entered++;
        assert.equal(r['ok'], true, what);
        if (e.op.op === 'publish') {
          record(e.op.channel, e.marker);
          attempted++;
        }
        if (e.op.op === 'history') {
          for (const m of r['messages'] as Frame[]) assert.equal(m['channel'], e.op.channel);
        }
        if (e.op.op === 'occupancy-subscribe') {
          assert.equal(
            typeof (r['occupancy'] as Frame | undefined)?.['subscribers'],
            'number',
            what,
          );
          occupancy.streams++;
        }
      }
      // Deliveries: a probe on every channel it tried to subscribe, refused ones first. The
      // memory broker fans out before the REST reply, so any delivery on a refused channel would
      // reach the socket before the probes on allowed ones.
      const tried = [...new Set(s.ops.filter((o) => o.op === 'subscribe').map((o) => o.channel))];
      for (const ch of tried.filter((ch) => !subscribed.has(ch)))
        await adminPublish(ch, { probe: run });
      for (const ch of tried.filter((ch) => subscribed.has(ch)))
        await adminPublish(ch, { probe: run });
      await c.until(
        (fs) =>
          [...subscribed].every((ch) =>
            fs.some(
              (f) => f['channel'] === ch && (f['message'] as Frame | undefined)?.['probe'] === run,
            ),
          ),
        5000,
        'probes on the subscribed channels',
      );
      for (const m of c.messages()) {
        assert.ok(
          subscribed.has(m['channel'] as string),
          `delivered on ${String(m['channel'])} to ${JSON.stringify(p)}`,
        );
        delivered++;
      }
      // Occupancy events reach only connections allowed to stream them.
      for (const f of c.frames)
        if (f['event'] === 'occupancy')
          assert.ok(
            occupancyStreams.has(f['channel'] as string),
            `occupancy events of ${String(f['channel'])} to ${JSON.stringify(p)}`,
          );
      // Presence events reach only connections allowed to stream them.
      for (const f of c.frames)
        if (Array.isArray(f['presence']))
          assert.ok(
            streams.has(f['channel'] as string),
            `presence events of ${String(f['channel'])} to ${JSON.stringify(p)}`,
          );
      assert.equal(c.closeCode, undefined);
    } finally {
      c.close();
    }
  }

  async function runRest(run: number, s: Scenario): Promise<void> {
    const p = s.principal;
    const headers: Record<string, string> = {};
    if (p.kind === 'token')
      headers['Authorization'] = `Bearer ${await mint(`u${run}`, { cap: p.caps })}`;
    if (p.kind === 'apiKey') headers['Authorization'] = keyAuth(p.key);
    const results = await Promise.all(
      s.ops.map(async (op, i) => {
        const marker = `${run}.${i}`;
        const r =
          op.op === 'publish'
            ? await http(
                server.port,
                'POST',
                `/v1/channels/${op.channel}/messages`,
                headers,
                JSON.stringify({ data: { m: marker } }),
              )
            : await http(
                server.port,
                'GET',
                op.op === 'presence'
                  ? `/v1/channels/${op.channel}/presence`
                  : op.op === 'info'
                    ? `/v1/channels/${op.channel}`
                    : `/v1/channels/${op.channel}/messages?limit=5`,
                headers,
              );
        return { op, marker, r };
      }),
    );
    for (const { op, marker, r } of results) {
      const perm: Perm = op.op === 'info' ? 'subscribe' : (op.op as Perm);
      const allow = modelAllows(p, perm, op.channel, apiKeyCaps);
      const what = `REST ${op.op} ${op.channel} by ${JSON.stringify(p)}: ${r.status} ${r.body}`;
      if (!allow) {
        assert.equal(r.status, p.kind === 'anonymous' ? 401 : 403, what);
        assert.equal(json(r)['code'], denialCode(p), what);
        assert.equal(json(r)['members'], undefined, what);
        if (op.op === 'publish') denied++;
        if (op.op === 'presence') presence.denied++;
        continue;
      }
      if (op.op === 'presence') {
        checkPresence(op.channel, r.status, json(r), undefined, what);
        continue;
      }
      assert.equal(r.status, 200, what);
      if (op.op === 'info') {
        assert.equal(json(r)['channel'], op.channel, what);
        occupancy.info++;
      } else if (op.op === 'publish') {
        record(op.channel, marker);
        attempted++;
      } else {
        for (const m of json(r)['messages'] as Frame[]) assert.equal(m['channel'], op.channel);
      }
    }
  }

  it('never allows more, nor less, than the model (10,000 cases), and stores only allowed publishes', async () => {
    const t0 = performance.now();
    let run = 0;
    const counts = { ws: 0, rest: 0, token: 0, anonymous: 0, apiKey: 0 };
    await withCause(
      fc.assert(
        fc.asyncProperty(scenarioArb, async (s) => {
          run++;
          ops += s.ops.length;
          counts[s.transport]++;
          counts[s.principal.kind]++;
          if (s.transport === 'ws') await runWs(run, s);
          else await runRest(run, s);
        }),
        { numRuns: 10_000 },
      ),
    );
    const caseMs = performance.now() - t0;

    // Read every channel's whole history through the observer key: exactly the acknowledged,
    // allowed publishes are stored; nothing that was refused.
    for (const channel of CHANNELS) {
      const found = new Set<string>();
      let cursor: string | null = null;
      do {
        const q: string = cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`;
        const r = await http(
          server.port,
          'GET',
          `/v1/channels/${channel}/messages?limit=1000${q}`,
          { Authorization: adminAuth },
        );
        assert.equal(r.status, 200, r.body);
        const page = json(r);
        for (const m of page['messages'] as Frame[]) {
          const marker = (m['message'] as Frame)['m'];
          if (typeof marker === 'string') {
            assert.ok(!found.has(marker), `${marker} stored twice`);
            found.add(marker);
          }
        }
        cursor = page['next'] as string | null;
      } while (cursor !== null);
      assert.deepEqual(
        [...found].sort(),
        [...(stored.get(channel) ?? [])].sort(),
        `history of ${channel}`,
      );
    }
    process.stdout.write(
      `capabilities: ${run} cases (${ops} operations; ${JSON.stringify(counts)}) in ${(caseMs / 1000).toFixed(1)} s; ${attempted} publishes stored, ${denied} refused and absent from history; ${delivered} deliveries checked; presence ${JSON.stringify(presence)}; occupancy ${JSON.stringify(occupancy)}\n`,
    );
    assert.ok(run >= 10_000);
    // The presence checks ran on every branch.
    assert.ok(presence.read > 0 && presence.denied > 0 && presence.off > 0 && presence.members > 0);
  });
});
