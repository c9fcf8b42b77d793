import { positionSuffixLua } from '@switchboard/protocol';
import type { HistoryOptions, PublishRequest, PublishResult } from './broker.js';
import { newEpoch } from './epoch.js';
import { channelKeysLua, type RedisKeys } from './redis-keys.js';

/**
 * Publish batching for the Redis brokers (#10 point 4): the publishes of one event-loop turn that
 * go to the same Redis master run as ONE script call (publishBatchLua), bounded to `limit`
 * messages a call. Each message keeps its own outcome: the script runs every message under
 * `pcall`, so a message that fails gets its own error reply and the others are stored as if
 * published alone. Order inside a call is the order publish() was called, so a channel's offsets
 * follow its publishers' order exactly as with one call per message.
 */

/** The default bound of one batch (messages per script call); SWITCHBOARD_REDIS_PUBLISH_BATCH. */
export const DEFAULT_PUBLISH_BATCH = 128;

/** Per-message ARGV entries of the batch script, after the ARGV_HEAD common ones. */
const PER_MESSAGE = 4;
const ARGV_HEAD = 5;

const K = channelKeysLua;

/**
 * The publish script, for a batch of messages (one or more), fanning out with `command`
 * (PUBLISH on one Redis, SPUBLISH on Cluster: the pub/sub channel shares the channel's slot, so
 * the script may publish to it from its shard). Per message: idempotency check, epoch, offset,
 * history append, expiry and fan-out as one atomic step.
 *
 * KEYS[1]: the meta key of the batch's first message. It routes the call on Cluster; the keys of
 * every message are built here from the prefix and its channel (channelKeysLua) and must live on
 * the same master (a message whose keys do not gets its own "non local key" error and is retried
 * alone, see isNonLocalKey).
 * ARGV: epoch candidate, meta ttl ms, lineage ('<replid> <ancestor replid> ...': the current
 * master's replication id and those it descends from, '' where not tracked), gated ('1': do not
 * fan out, return the payloads), key prefix; then per message: channel, frame head, settings
 * ('<history size> <history ttl ms> <dedupe ms>'), message id ('' when dedupe ms is 0).
 *
 * The reply is flat, so that decoding it costs the node little per message (decodeBatchReply):
 * per message, in order, its signed offset (negative: a duplicate, the position it was stored
 * at), preceded by its epoch whenever that differs from the previous epoch in the reply; gated,
 * followed by the payload to fan out (for a duplicate: the stored entry's, or '' when history no
 * longer holds it). A message that failed is its own error reply in that place, and nothing else.
 *
 * The payload is `<offset> <epoch> <assigned> <frame>` so subscribers read the position without
 * parsing JSON; `<assigned>` is Redis's clock when the offset was assigned, in microseconds since
 * the epoch (publish-to-deliver latency is measured from it). Gated (redis-wait.ts), the node
 * PUBLISHes it once a WAIT confirmed the replicas hold the write, so no subscriber sees a message
 * a failover can still discard.
 *
 * Epoch: a channel without one gets the candidate (its stream, left from an earlier life, is
 * dropped); a channel last written under a master not in the lineage gets the candidate too. A
 * promoted replica continues its master's stream: what subscribers saw was replicated before it
 * was fanned out, so its offsets carry on in the same epoch. A channel written under an unrelated
 * master (a restart without persistence, a replica that resynced from scratch) may have lost a
 * tail its subscribers saw, and the offsets would be handed out again: a new epoch, so a resume
 * across it says "not recovered" instead of skipping. Decided at the channel's first message in
 * the call; a channel whose messages are all duplicates keeps its meta untouched.
 *
 * Redis calls: TIME once per call; per channel once per call the HMGET of epoch, lineage and
 * offset, one HSET of offset (+ epoch, lineage) at the end, and the two PEXPIREs; per message
 * only SET NX GET (claims the idempotency key, or reads the stored position), XADD and (S)PUBLISH.
 * Every message runs under `pcall`: one that fails gets its own error and the others are stored as
 * if published alone; a message that fails after its claim releases it and assigns no offset. The
 * deferred meta write cannot be refused: Redis checks maxmemory at a script's first write only,
 * and it runs only after a message was written.
 */
export function publishBatchLua(command: 'PUBLISH' | 'SPUBLISH'): string {
  return `
local epochNew, metaTtl, lineage, gated, P = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1', ARGV[5]
local current = lineage
local sp = string.find(lineage, ' ', 1, true)
if sp then current = string.sub(lineage, 1, sp - 1) end
local now = redis.call('TIME')
local at = now[1] .. string.format('%06d', tonumber(now[2]))
local chans, order, sets, out = {}, {}, {}, {}
local claimed = false
local function one(i)
  local ch, set = ARGV[i], ARGV[i + 2]
  local s = sets[set]
  if not s then
    local a, b, d = string.match(set, '^(%d+) (%d+) (%d+)$')
    s = {tonumber(a), tonumber(b), tonumber(d)}
    sets[set] = s
  end
  local c = chans[ch]
  if not c then
    local meta = ${K.meta('P', 'ch')}
    local state = redis.call('HMGET', meta, 'e', 'r', 'o')
    -- stored: the epoch the meta hash holds now (what a duplicate's entry is checked against)
    c = {meta = meta, stream = ${K.stream('P', 'ch')}, pubsub = ${K.pubsub('P', 'ch')},
      stored = state[1], epoch = state[1], o = tonumber(state[3] or '0'), fresh = false,
      ttl = false, touched = false}
    if not c.epoch then
      c.epoch, c.fresh = epochNew, true
    elseif current ~= '' and state[2] and state[2] ~= current
      and not string.find(' ' .. lineage .. ' ', ' ' .. state[2] .. ' ', 1, true) then
      c.epoch = epochNew
    end
    chans[ch] = c
    order[#order + 1] = c
  end
  local offset = c.o + 1
  if s[3] > 0 then
    -- claims the id for this offset, or reads the position it was stored at
    local dedupe = ${K.dedupe('P', 'ch', 'ARGV[i + 3]')}
    local seen = redis.call('SET', dedupe, offset .. ' ' .. c.epoch, 'NX', 'GET', 'PX', s[3])
    if seen then
      local sep = string.find(seen, ' ', 1, true)
      local so, se = tonumber(string.sub(seen, 1, sep - 1)), string.sub(seen, sep + 1)
      if not gated then return -so, se end
      -- A retry of a publish answered 118: fan the stored entry out again (subscribers drop an
      -- offset they already have), as its first fan-out may never have happened.
      local payload = ''
      if c.stored == se then
        local found = redis.call('XRANGE', c.stream, so .. '-0', so .. '-0')
        if found[1] then payload = so .. ' ' .. se .. ' ' .. at .. ' ' .. found[1][2][2] end
      end
      return -so, se, payload
    end
    claimed = dedupe
  end
  if c.fresh then
    -- a stream left from an earlier life of the channel must not be read with the new epoch
    redis.call('DEL', c.stream)
    c.fresh = false
  end
  local frame = ARGV[i + 1] .. ${positionSuffixLua('offset', 'c.epoch')}
  if s[1] > 0 then
    redis.call('XADD', c.stream, 'MAXLEN', '~', s[1], offset .. '-0', 'f', frame)
    c.ttl = s[2]
  end
  c.o, c.stored, c.touched = offset, c.epoch, true
  claimed = false
  local payload = offset .. ' ' .. c.epoch .. ' ' .. at .. ' ' .. frame
  if gated then return offset, c.epoch, payload end
  redis.call('${command}', c.pubsub, payload)
  return offset, c.epoch
end
local n = (#ARGV - ${ARGV_HEAD}) / ${PER_MESSAGE}
local last = false
for k = 0, n - 1 do
  local ok, o, e, p = pcall(one, ${ARGV_HEAD + 1} + k * ${PER_MESSAGE})
  if ok then
    if e ~= last then
      out[#out + 1] = e
      last = e
    end
    out[#out + 1] = o
    if gated then out[#out + 1] = p end
  else
    -- the id was claimed for a message that was not stored: a retry must not read it as stored
    if claimed then redis.pcall('DEL', claimed) end
    claimed = false
    if type(o) == 'table' and o.err then out[#out + 1] = o else out[#out + 1] = redis.error_reply(tostring(o)) end
  end
end
for _, c in ipairs(order) do
  if c.touched then
    if current ~= '' then
      redis.call('HSET', c.meta, 'o', c.o, 'e', c.epoch, 'r', current)
    else
      redis.call('HSET', c.meta, 'o', c.o, 'e', c.epoch)
    end
    redis.call('PEXPIRE', c.meta, metaTtl)
  end
  if c.ttl then redis.call('PEXPIRE', c.stream, c.ttl) end
end
return out
`;
}

/**
 * One message's outcome: its position, whether it was a duplicate, and (gated) the payload to
 * fan out ('' when there is none). Ungated it is the PublishResult the broker resolves with.
 */
export interface PublishReply extends PublishResult {
  readonly payload?: string;
}

/** One entry per message of a batch, in order: its reply, or the Redis error that message got. */
export type BatchReply = readonly (PublishReply | Error)[];

/** What the batch script answers, before decodeBatchReply. */
export type RawBatchReply = readonly (string | number | Error)[];

/** The script's flat reply (see publishBatchLua) as one entry per message of the `count` sent. */
export function decodeBatchReply(raw: RawBatchReply, count: number, gated: boolean): BatchReply {
  const out = new Array<PublishReply | Error>(count);
  let epoch = '';
  let k = 0;
  for (let i = 0; i < raw.length && k < count;) {
    const v = raw[i++] as string | number | Error;
    if (typeof v === 'string') epoch = v;
    else if (v instanceof Error) out[k++] = v;
    else {
      const offset = v < 0 ? -v : v;
      // Ungated, exactly a PublishResult: what Broker.publish resolves with, as it is.
      if (!gated) out[k++] = { offset, epoch, duplicate: v < 0 };
      else {
        const payload = raw[i++];
        out[k++] = {
          offset,
          epoch,
          duplicate: v < 0,
          payload: typeof payload === 'string' ? payload : '',
        };
      }
    }
  }
  while (k < count) out[k++] = new Error('publish batch reply too short');
  return out;
}

/** The script as the brokers define it on their ioredis clients. */
export interface BatchCommand {
  sbPublishBatch(key: string, ...argv: string[]): Promise<RawBatchReply>;
}

/**
 * Runs the batch script for `batch` on `cmd`. `lineage` ('' where not tracked); `gated`: store
 * without fanning out, the replies carry the payloads (redis-wait.ts). A new epoch candidate per
 * call: it becomes the epoch of the channels that have none.
 */
export function runBatch(
  cmd: BatchCommand,
  keys: RedisKeys,
  batch: readonly PublishRequest[],
  metaTtlMs: number,
  lineage: string,
  gated: boolean,
): Promise<BatchReply> {
  const first = batch[0];
  if (first === undefined) return Promise.resolve([]);
  // One array per call, filled in place; every argument a string (ioredis converts nothing).
  const args: string[] = [
    keys.meta(first.channel),
    newEpoch(),
    String(metaTtlMs),
    lineage,
    gated ? '1' : '0',
    keys.prefix,
  ];
  for (const req of batch)
    args.push(req.channel, req.head, settingsOf(req), req.dedupeMs > 0 ? req.id : '');
  return cmd
    .sbPublishBatch(...(args as [string, ...string[]]))
    .then((raw) => decodeBatchReply(raw, batch.length, gated));
}

/** '<history size> <history ttl ms> <dedupe ms>', made once per namespace's history options. */
function settingsOf(req: PublishRequest): string {
  let byDedupe = settingsCache.get(req.history);
  if (byDedupe === undefined)
    settingsCache.set(req.history, (byDedupe = new Map<number, string>()));
  let s = byDedupe.get(req.dedupeMs);
  if (s === undefined) {
    s = `${req.history.size} ${req.history.ttlMs} ${req.dedupeMs}`;
    byDedupe.set(req.dedupeMs, s);
  }
  return s;
}

const settingsCache = new WeakMap<HistoryOptions, Map<number, string>>();

/** Whether a message's error says its keys are not on the master the batch ran on (Cluster). */
export function isNonLocalKey(err: unknown): boolean {
  return err instanceof Error && /non local key|not hash to the same slot/i.test(err.message);
}

/** A publish waiting in a batch. */
interface Pending<R> {
  readonly req: PublishRequest;
  readonly resolve: (reply: R) => void;
  readonly reject: (err: Error) => void;
}

/** The open batch of one group (one Redis master). */
interface Batch<R> {
  readonly group: string;
  readonly items: Pending<R>[];
  /** Resolves once the batch's script call was written to the connection. */
  readonly sent: Promise<void>;
  readonly markSent: () => void;
}

export interface PublishBatcherOptions<R = PublishReply> {
  /** At most this many messages per script call; a full batch is sent at once. */
  readonly limit: number;
  /**
   * Runs the script for `batch` (all in `group`) and resolves with one entry per message, in
   * order (a reply, or the error of that message); it must write the command before it returns
   * (ioredis does, when connected).
   */
  readonly send: (
    group: string,
    batch: readonly PublishRequest[],
  ) => Promise<readonly (R | Error)[]>;
}

/** What publish() hands back: the message's reply, and when its script call left. */
export interface Batched<R = PublishReply> {
  readonly reply: Promise<R>;
  /** Resolves once the call carrying the message was written (a WAIT sent after it covers it). */
  readonly sent: Promise<void>;
}

/**
 * Gathers publishes per group until the end of the event-loop turn (setImmediate) or until a
 * group holds `limit` messages, then runs one script call per batch.
 */
export class PublishBatcher<R = PublishReply> {
  readonly #o: PublishBatcherOptions<R>;
  readonly #open = new Map<string, Batch<R>>();
  #scheduled = false;

  constructor(options: PublishBatcherOptions<R>) {
    if (!Number.isInteger(options.limit) || options.limit < 1)
      throw new RangeError('The publish batch limit must be a positive integer');
    this.#o = options;
  }

  publish(group: string, req: PublishRequest): Batched<R> {
    let batch = this.#open.get(group);
    if (batch === undefined) {
      let markSent = noop;
      const sent = new Promise<void>((resolve) => (markSent = resolve));
      batch = { group, items: [], sent, markSent };
      this.#open.set(group, batch);
    }
    const open = batch;
    const reply = new Promise<R>((resolve, reject) => open.items.push({ req, resolve, reject }));
    if (open.items.length >= this.#o.limit) {
      this.#open.delete(group);
      this.#send(open);
    } else if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => this.#flush());
    }
    return { reply, sent: open.sent };
  }

  #flush(): void {
    this.#scheduled = false;
    const batches = [...this.#open.values()];
    this.#open.clear();
    for (const b of batches) this.#send(b);
  }

  #send(batch: Batch<R>): void {
    const items = batch.items;
    let call: Promise<readonly (R | Error)[]>;
    try {
      call = this.#o.send(
        batch.group,
        items.map((p) => p.req),
      );
    } catch (err) {
      call = Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    batch.markSent();
    call.then(
      (replies) => {
        for (let i = 0; i < items.length; i++) {
          const p = items[i] as Pending<R>;
          const r = replies[i];
          if (r instanceof Error) p.reject(r);
          else if (r === undefined) p.reject(new Error('publish batch reply too short'));
          else p.resolve(r);
        }
      },
      (err: unknown) => {
        const e = err instanceof Error ? err : new Error(String(err));
        for (const p of items) p.reject(e);
      },
    );
  }
}

function noop(): void {}
