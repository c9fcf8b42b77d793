import type { PublishRequest } from './broker.js';
import { newEpoch } from './epoch.js';
import type { RedisKeys } from './redis-keys.js';

/**
 * Lua scripts run by RedisBroker. Kept as TypeScript strings rather than .lua files so the compiled
 * package needs no copy step and cannot ship without them.
 */

/**
 * Publish: idempotency check, epoch, offset, history append, expiry and fan-out as one atomic step.
 * KEYS: meta, stream, dedupe.
 * ARGV: pubsub channel, frame head, history size, history ttl ms, dedupe ms, epoch candidate, meta ttl ms,
 * lineage (the master's replication id, or '' where not tracked).
 * Returns {offset, epoch, duplicate (0|1)}.
 * A channel last written under another lineage (a replica was promoted since: Sentinel failover)
 * may have lost the tail its subscribers saw, and the new master would hand those offsets out
 * again: it gets a new epoch, so a resume across the switch says "not recovered" instead of
 * skipping. Offsets and stored history carry on.
 * The published payload is `<offset> <epoch> <assigned> <frame>` so subscribers read the position
 * without parsing JSON; `<assigned>` is Redis's clock when the offset was assigned, in microseconds
 * since the epoch (publish-to-deliver latency is measured from it).
 * `command` is the fan-out: PUBLISH on one Redis, SPUBLISH on Cluster (the pub/sub channel shares
 * the channel's slot, so the script may publish to it from its shard). The brokers publish in
 * batches (redis-batch.ts, the same steps per message); this single-message form is what the
 * Cluster broker retries a message with when its batch ran on a master not holding its slot.
 */
export function publishLua(command: 'PUBLISH' | 'SPUBLISH'): string {
  return `
local meta, stream, dedupe = KEYS[1], KEYS[2], KEYS[3]
local size, ttl, dedupeMs, metaTtl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7])
if dedupeMs > 0 then
  local seen = redis.call('GET', dedupe)
  if seen then
    local sep = string.find(seen, ' ', 1, true)
    return {tonumber(string.sub(seen, 1, sep - 1)), string.sub(seen, sep + 1), 1}
  end
end
local state = redis.call('HMGET', meta, 'e', 'r')
local epoch, lineage = state[1], ARGV[8]
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', meta, 'e', epoch)
  -- a stream left from an earlier life of the channel must not be read with the new epoch
  redis.call('DEL', stream)
elseif lineage ~= '' and state[2] and state[2] ~= lineage then
  epoch = ARGV[6]
  redis.call('HSET', meta, 'e', epoch)
end
if lineage ~= '' and state[2] ~= lineage then redis.call('HSET', meta, 'r', lineage) end
local offset = redis.call('HINCRBY', meta, 'o', 1)
redis.call('PEXPIRE', meta, metaTtl)
local frame = ARGV[2] .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"}'
if size > 0 then
  redis.call('XADD', stream, 'MAXLEN', '~', size, offset .. '-0', 'f', frame)
  redis.call('PEXPIRE', stream, ttl)
end
if dedupeMs > 0 then
  redis.call('SET', dedupe, offset .. ' ' .. epoch, 'PX', dedupeMs)
end
local now = redis.call('TIME')
redis.call('${command}', ARGV[1], offset .. ' ' .. epoch .. ' ' .. now[1] .. string.format('%06d', tonumber(now[2])) .. ' ' .. frame)
return {offset, epoch, 0}
`;
}

/**
 * History: the current position and a range of entries, read atomically.
 * KEYS: meta, stream. ARGV: since offset (-1 for none), limit, reverse (0|1), epoch candidate, meta ttl ms,
 * until offset (-1 for none), lineage (as for publish: a resume across a promotion reads a new epoch).
 * Returns {offset, epoch, id1, frame1, id2, frame2, ...}.
 */
export const HISTORY_LUA = `
local meta, stream = KEYS[1], KEYS[2]
local since, limit, reverse = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local state = redis.call('HMGET', meta, 'e', 'r')
local epoch, lineage = state[1], ARGV[7] or ''
if not epoch then
  epoch = ARGV[4]
  redis.call('HSET', meta, 'e', epoch, 'o', 0)
  redis.call('PEXPIRE', meta, tonumber(ARGV[5]))
  redis.call('DEL', stream)
elseif lineage ~= '' and state[2] and state[2] ~= lineage then
  epoch = ARGV[4]
  redis.call('HSET', meta, 'e', epoch)
end
if lineage ~= '' and state[2] ~= lineage then redis.call('HSET', meta, 'r', lineage) end
local top = tonumber(redis.call('HGET', meta, 'o') or '0')
local out = {top, epoch}
if limit <= 0 then return out end
local low, high = '-', '+'
if since >= 0 then low = '(' .. since .. '-0' end
local untilOffset = tonumber(ARGV[6])
if untilOffset >= 0 then
  if untilOffset <= 1 then return out end
  high = '(' .. untilOffset .. '-0'
end
local entries
if reverse then
  entries = redis.call('XREVRANGE', stream, high, low, 'COUNT', limit)
else
  entries = redis.call('XRANGE', stream, low, high, 'COUNT', limit)
end
for _, e in ipairs(entries) do
  out[#out + 1] = e[1]
  out[#out + 1] = e[2][2]
end
return out
`;

/** The arguments of the publish script (KEYS then ARGV), shared by the single and Cluster brokers. */
export type PublishArgs = [
  meta: string,
  stream: string,
  dedupe: string,
  pubsub: string,
  head: string,
  size: number,
  ttlMs: number,
  dedupeMs: number,
  epoch: string,
  metaTtlMs: number,
  lineage: string,
];

export function publishArgs(
  keys: RedisKeys,
  req: PublishRequest,
  metaTtlMs: number,
  lineage = '',
): PublishArgs {
  return [
    keys.meta(req.channel),
    keys.stream(req.channel),
    keys.dedupe(req.channel, req.id),
    keys.pubsub(req.channel),
    req.head,
    req.history.size,
    req.history.ttlMs,
    req.dedupeMs,
    newEpoch(),
    metaTtlMs,
    lineage,
  ];
}
