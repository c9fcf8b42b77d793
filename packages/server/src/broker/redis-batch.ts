import { positionSuffixLua } from '@switchboard/protocol';
import type { PublishRequest } from './broker.js';
import type { RedisKeys } from './redis-keys.js';
import { pushMessageArgs } from './redis-scripts.js';

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
const PER_MESSAGE = 8;
const ARGV_HEAD = 4;

/**
 * The batch publish script fanning out with `command` (PUBLISH on one Redis, SPUBLISH on Cluster).
 * KEYS[1]: the meta key of the batch's first message. It routes the call on Cluster; every key of
 * the other messages is passed in ARGV and must live on the same master (a message whose keys do
 * not gets its own "non local key" error and is retried alone, see isNonLocalKey).
 * ARGV: epoch candidate, meta ttl ms, lineage (as for publishLua: '<replid> <ancestor replid> ...',
 * '' where not tracked), gated ('1': do not fan out, return the payloads), then per message: meta,
 * stream, dedupe, pubsub channel, frame head, history size, history ttl ms, dedupe ms.
 * Returns one entry per message, in order: {offset, epoch, duplicate (0|1)} or an error reply;
 * gated, with the payload to fan out as a 4th element (for a duplicate: the stored entry's, or ''
 * when history no longer holds it), exactly as publishLua's gated reply.
 *
 * The same steps per message as the single-message script (redis-scripts.ts publishLua), with
 * fewer Redis calls: TIME once per call; per channel once per call the HMGET of epoch, lineage and
 * offset, one HSET of offset (+ epoch, lineage) at the end instead of HINCRBY per message, and the
 * two PEXPIREs; per message only SET NX GET (claims the idempotency key, or reads the stored
 * position: one call instead of GET + SET), XADD and (S)PUBLISH. A message that fails after its
 * claim releases it, and assigns no offset. The deferred meta write cannot be refused: Redis
 * checks maxmemory at a script's first write only, and it runs only after a message was written.
 * The channel's epoch is decided as LINEAGE_LUA does, at its first message stored in the call; a
 * channel whose messages are all duplicates keeps its meta untouched, as with publishLua.
 */
export function publishBatchLua(command: 'PUBLISH' | 'SPUBLISH'): string {
  return `
local epochNew, metaTtl, lineage, gated = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
local current = lineage
local sp = string.find(lineage, ' ', 1, true)
if sp then current = string.sub(lineage, 1, sp - 1) end
local now = redis.call('TIME')
local at = now[1] .. string.format('%06d', tonumber(now[2]))
local chans, order, out = {}, {}, {}
local claimed = false
local function one(i)
  local meta, stream, dedupe = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local size, dedupeMs = tonumber(ARGV[i + 5]), tonumber(ARGV[i + 7])
  local c = chans[meta]
  if not c then
    local state = redis.call('HMGET', meta, 'e', 'r', 'o')
    local o = tonumber(state[3] or '0')
    -- stored: the epoch the meta hash holds now (what a duplicate's entry is checked against)
    c = {stored = state[1], epoch = state[1], o = o, fresh = false, stream = false, ttl = 0, touched = false}
    if not c.epoch then
      c.epoch, c.fresh = epochNew, true
    elseif current ~= '' and state[2] and state[2] ~= current
      and not string.find(' ' .. lineage .. ' ', ' ' .. state[2] .. ' ', 1, true) then
      c.epoch = epochNew
    end
    chans[meta] = c
    order[#order + 1] = meta
  end
  local offset = c.o + 1
  if dedupeMs > 0 then
    -- claims the id for this offset, or reads the position it was stored at
    local seen = redis.call('SET', dedupe, offset .. ' ' .. c.epoch, 'NX', 'GET', 'PX', dedupeMs)
    if seen then
      local sep = string.find(seen, ' ', 1, true)
      local so, se = tonumber(string.sub(seen, 1, sep - 1)), string.sub(seen, sep + 1)
      if not gated then return {so, se, 1} end
      -- A retry of a publish answered 118: fan the stored entry out again (subscribers drop an
      -- offset they already have), as its first fan-out may never have happened.
      local payload = ''
      if c.stored == se then
        local found = redis.call('XRANGE', stream, so .. '-0', so .. '-0')
        if found[1] then payload = so .. ' ' .. se .. ' ' .. at .. ' ' .. found[1][2][2] end
      end
      return {so, se, 1, payload}
    end
    claimed = dedupe
  end
  if c.fresh then
    -- a stream left from an earlier life of the channel must not be read with the new epoch
    redis.call('DEL', stream)
    c.fresh = false
  end
  local frame = ARGV[i + 4] .. ${positionSuffixLua('offset', 'c.epoch')}
  if size > 0 then
    redis.call('XADD', stream, 'MAXLEN', '~', size, offset .. '-0', 'f', frame)
    c.stream, c.ttl = stream, tonumber(ARGV[i + 6])
  end
  c.o, c.stored, c.touched = offset, c.epoch, true
  claimed = false
  local payload = offset .. ' ' .. c.epoch .. ' ' .. at .. ' ' .. frame
  if gated then return {offset, c.epoch, 0, payload} end
  redis.call('${command}', ARGV[i + 3], payload)
  return {offset, c.epoch, 0}
end
local n = (#ARGV - ${ARGV_HEAD}) / ${PER_MESSAGE}
for k = 0, n - 1 do
  local ok, r = pcall(one, ${ARGV_HEAD + 1} + k * ${PER_MESSAGE})
  if ok then
    out[k + 1] = r
  else
    -- the id was claimed for a message that was not stored: a retry must not read it as stored
    if claimed then redis.pcall('DEL', claimed) end
    claimed = false
    if type(r) == 'table' and r.err then out[k + 1] = r else out[k + 1] = redis.error_reply(tostring(r)) end
  end
end
for _, meta in ipairs(order) do
  local c = chans[meta]
  if c.touched then
    if current ~= '' then
      redis.call('HSET', meta, 'o', c.o, 'e', c.epoch, 'r', current)
    else
      redis.call('HSET', meta, 'o', c.o, 'e', c.epoch)
    end
    redis.call('PEXPIRE', meta, metaTtl)
  end
  if c.stream then redis.call('PEXPIRE', c.stream, c.ttl) end
end
return out
`;
}

/** One message's script reply: offset, epoch, duplicate (0|1); gated, the payload to fan out. */
export type PublishReply = [offset: number, epoch: string, duplicate: number, payload?: string];

/** The script reply: one entry per message, a reply or the Redis error that message got. */
export type BatchReply = readonly (PublishReply | Error)[];

/**
 * The arguments of one batch call: the routing key (the first message's meta key), then ARGV.
 * `lineage` as for publishLua ('' where not tracked); `gated`: store without fanning out, the
 * replies carry the payloads (redis-wait.ts). One array per call, filled in place.
 */
export function batchArgs(
  keys: RedisKeys,
  batch: readonly PublishRequest[],
  epoch: string,
  metaTtlMs: number,
  lineage: string,
  gated: boolean,
): [string, ...(string | number)[]] {
  const args: (string | number)[] = ['', epoch, metaTtlMs, lineage, gated ? '1' : '0'];
  for (const req of batch) pushMessageArgs(args, keys, req);
  args[0] = args[1 + ARGV_HEAD] as string;
  return args as [string, ...(string | number)[]];
}

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
