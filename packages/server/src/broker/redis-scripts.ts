import type { HeldPayload } from './redis-wait.js';

/**
 * Lua scripts run by the Redis brokers (the publish script: redis-batch.ts). Kept as TypeScript
 * strings rather than .lua files so the compiled package needs no copy step and cannot ship
 * without them.
 */

/**
 * The channel's epoch, created with `candidate` for a channel without one (its stream, left from an
 * earlier life, is dropped), and renewed when the channel was last written under a master that is
 * not in `lineage`: '<replid> <ancestor replid> ...', the current master's replication id and those
 * of the masters it descends from (master_replid2 after a promotion, as the node saw them; '' where
 * not tracked). A promoted replica continues its master's stream: what subscribers saw was
 * replicated before it was fanned out (redis-wait.ts), so its offsets carry on in the same epoch.
 * A channel written under an unrelated master (a restart without persistence, a replica that had
 * to resync from scratch) may have lost a tail its subscribers saw, and the offsets would be handed
 * out again: a new epoch, so a resume across it says "not recovered" instead of skipping.
 * Returns the epoch and whether it was created.
 */
const LINEAGE_LUA = `
local function channelEpoch(meta, stream, candidate, lineage)
  local state = redis.call('HMGET', meta, 'e', 'r')
  local epoch, was = state[1], state[2]
  local current = lineage
  local sp = string.find(lineage, ' ', 1, true)
  if sp then current = string.sub(lineage, 1, sp - 1) end
  local created = false
  if not epoch then
    epoch, created = candidate, true
    redis.call('HSET', meta, 'e', epoch)
    -- a stream left from an earlier life of the channel must not be read with the new epoch
    redis.call('DEL', stream)
  elseif current ~= '' and was and was ~= current
    and not string.find(' ' .. lineage .. ' ', ' ' .. was .. ' ', 1, true) then
    epoch = candidate
    redis.call('HSET', meta, 'e', epoch)
  end
  if current ~= '' and was ~= current then redis.call('HSET', meta, 'r', current) end
  return epoch, created
end`;

/**
 * Whether the master still holds the entry of a payload the gate held (redis-wait.ts): the
 * channel's epoch is the payload's, and its stream holds that very entry (same offset, same
 * frame), or, without history (size 0), its offset was reached. The master the payload was stored
 * on may have been failed over without it.
 */
const STILL_HELD_LUA = `
local function stillHeld(meta, stream, p, size)
  local a = string.find(p, ' ', 1, true)
  local b = string.find(p, ' ', a + 1, true)
  local c = string.find(p, ' ', b + 1, true)
  local offset, epoch = string.sub(p, 1, a - 1), string.sub(p, a + 1, b - 1)
  if redis.call('HGET', meta, 'e') ~= epoch then return false end
  if size > 0 then
    local found = redis.call('XRANGE', stream, offset .. '-0', offset .. '-0')
    return found[1] ~= nil and found[1][2][2] == string.sub(p, c + 1)
  end
  return tonumber(redis.call('HGET', meta, 'o') or '0') >= tonumber(offset)
end`;

/**
 * Fan-out of a payload the gate held (redis-wait.ts) after the command link changed: PUBLISHed
 * only when the master still holds its entry (STILL_HELD_LUA). KEYS: meta, stream. ARGV: pubsub
 * channel, payload (`<offset> <epoch> <assigned> <frame>`), history size. Returns 1 when published.
 */
export function fanoutLua(command: 'PUBLISH' | 'SPUBLISH'): string {
  return `${STILL_HELD_LUA}
if not stillHeld(KEYS[1], KEYS[2], ARGV[2], tonumber(ARGV[3])) then return 0 end
redis.call('${command}', ARGV[1], ARGV[2])
return 1
`;
}

/**
 * Fan-out of many held payloads in one call (what one WAIT released, redis-wait.ts), in argument
 * order. ARGV[1] '0': each is PUBLISHed; KEYS[1] only routes the call (Cluster: every payload's
 * pub/sub name must be on its slot); then ARGV pubsub, payload per payload. ARGV[1] '1': each only
 * when the master still holds its entry, as fanoutLua; KEYS meta, stream and ARGV pubsub, payload,
 * history size per payload. Returns how many were published. Built by fanoutManyArgs.
 */
export function fanoutManyLua(command: 'PUBLISH' | 'SPUBLISH'): string {
  // The first line names it where Redis shows a script's text (SLOWLOG, MONITOR of an EVAL).
  return `-- switchboard fanoutManyLua
${STILL_HELD_LUA}
local n = 0
if ARGV[1] ~= '1' then
  for i = 2, #ARGV, 2 do
    redis.call('${command}', ARGV[i], ARGV[i + 1])
    n = n + 1
  end
  return n
end
for i = 1, #KEYS / 2 do
  local j = 3 * i - 1
  if stillHeld(KEYS[2 * i - 1], KEYS[2 * i], ARGV[j + 1], tonumber(ARGV[j + 2])) then
    redis.call('${command}', ARGV[j], ARGV[j + 1])
    n = n + 1
  end
end
return n
`;
}

/** The arguments of fanoutManyLua (numkeys, KEYS, ARGV) for `held`, at least one payload. */
export function fanoutManyArgs(held: readonly HeldPayload[], verify: boolean): (string | number)[] {
  if (!verify) {
    const args: (string | number)[] = [1, (held[0] as HeldPayload).meta, '0'];
    for (const h of held) args.push(h.pubsub, h.payload);
    return args;
  }
  const args: (string | number)[] = [held.length * 2];
  for (const h of held) args.push(h.meta, h.stream);
  args.push('1');
  for (const h of held) args.push(h.pubsub, h.payload, h.historySize);
  return args;
}

/**
 * History: the current position and a range of entries, read atomically.
 * KEYS: meta, stream. ARGV: since offset (-1 for none), limit, reverse (0|1), epoch candidate, meta ttl ms,
 * until offset (-1 for none), lineage (as for publish: a resume across a promotion reads a new epoch),
 * gated ('1': the node confirms the read with a WAIT before using it, see confirmedRead).
 * Returns {offset, epoch, id1, frame1, id2, frame2, ...}.
 */
export const HISTORY_LUA = `${LINEAGE_LUA}
local meta, stream = KEYS[1], KEYS[2]
local since, limit, reverse = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local epoch, created = channelEpoch(meta, stream, ARGV[4], ARGV[7] or '')
if created then
  redis.call('HSET', meta, 'o', 0)
  redis.call('PEXPIRE', meta, tonumber(ARGV[5]))
end
if ARGV[8] == '1' then
  -- Gated (redis-wait.ts): a write, value unchanged, so this call's replication offset is the
  -- master's now and the WAIT the node sends after it covers every entry read here, whoever
  -- wrote it (WAIT counts a client's own last write only).
  local ttl = redis.call('PTTL', meta)
  if ttl > 0 then redis.call('PEXPIRE', meta, ttl) end
end
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
