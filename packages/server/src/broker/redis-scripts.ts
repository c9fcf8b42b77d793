/**
 * Lua scripts run by RedisBroker. Kept as TypeScript strings rather than .lua files so the compiled
 * package needs no copy step and cannot ship without them.
 */

/**
 * Publish: idempotency check, epoch, offset, history append, expiry and fan-out as one atomic step.
 * KEYS: meta, stream, dedupe.
 * ARGV: pubsub channel, frame head, history size, history ttl ms, dedupe ms, epoch candidate, meta ttl ms.
 * Returns {offset, epoch, duplicate (0|1)}.
 * The published payload is `<offset> <epoch> <assigned> <frame>` so subscribers read the position
 * without parsing JSON; `<assigned>` is Redis's clock when the offset was assigned, in microseconds
 * since the epoch (publish-to-deliver latency is measured from it).
 */
export const PUBLISH_LUA = publishLua('PUBLISH');

/**
 * The publish script fanning out with `command`: PUBLISH on one Redis, SPUBLISH on Cluster (the
 * pub/sub channel shares the channel's slot, so the script may publish to it from its shard).
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
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', meta, 'e', epoch)
  -- a stream left from an earlier life of the channel must not be read with the new epoch
  redis.call('DEL', stream)
end
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
 * until offset (-1 for none).
 * Returns {offset, epoch, id1, frame1, id2, frame2, ...}.
 */
export const HISTORY_LUA = `
local meta, stream = KEYS[1], KEYS[2]
local since, limit, reverse = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3] == '1'
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('HSET', meta, 'e', epoch, 'o', 0)
  redis.call('PEXPIRE', meta, tonumber(ARGV[5]))
  redis.call('DEL', stream)
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
