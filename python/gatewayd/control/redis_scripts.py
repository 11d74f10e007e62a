"""The Lua scripts of the Redis control store: each multi-key write runs as one script, so
it lands whole or not at all, with times from the Redis clock (TIME inside the script)."""

NOW = """
local function now()
  local t = redis.call('TIME')
  return t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
end
"""

EPOCH = """
local function epoch_is(key, expected)
  local identity = redis.call('GET', key)
  local found = identity and cjson.decode(identity)['epoch'] or ''
  return found == expected, found
end
"""

# KEYS: version-id, versions, documents, identity. ARGV: metadata JSON, document, epoch.
# Returns the id, or {'lost', epoch found} when the store is not that epoch.
ADD_VERSION = (
    NOW
    + EPOCH
    + """
local same, found = epoch_is(KEYS[4], ARGV[3])
if not same then
  return {'lost', found}
end
local id = redis.call('INCR', KEYS[1])
if redis.call('HSETNX', KEYS[3], id, ARGV[2]) == 0 then
  return redis.error_reply('version ' .. id .. ' is already stored: the id counter is behind the registry')
end
redis.call('HSETNX', KEYS[2], id, now() .. ' ' .. ARGV[1])
return id
"""
)

# A pointer's value: "<version> <change id>", then " <candidate JSON>" during a canary.
# KEYS: pointers, changes, identity. ARGV: change JSON, channel, epoch, then (field, prev
# state, new version, new candidate JSON) per item; a state is "<version>|<candidate JSON>",
# '' standing for none. Returns {change id, time}, {0, item number, its version, its
# candidate JSON} on a lost compare-and-set, or {'lost', epoch found}.
FLIP = (
    NOW
    + EPOCH
    + """
local same, found = epoch_is(KEYS[3], ARGV[3])
if not same then
  return {'lost', found}
end
local n = (#ARGV - 3) / 4
for i = 0, n - 1 do
  local value = redis.call('HGET', KEYS[1], ARGV[4 + 4 * i])
  local version, candidate = '', ''
  if value then
    version, candidate = string.match(value, '^(%d+) %d+ ?(.*)$')
  end
  if version .. '|' .. candidate ~= ARGV[5 + 4 * i] then
    return {0, i + 1, version, candidate}
  end
end
local at = now()
local id = redis.call('RPUSH', KEYS[2], at .. ' ' .. ARGV[1])
for i = 0, n - 1 do
  local field, new, candidate = ARGV[4 + 4 * i], ARGV[6 + 4 * i], ARGV[7 + 4 * i]
  if new == '' then
    redis.call('HDEL', KEYS[1], field)
  elseif candidate == '' then
    redis.call('HSET', KEYS[1], field, new .. ' ' .. id)
  else
    redis.call('HSET', KEYS[1], field, new .. ' ' .. id .. ' ' .. candidate)
  end
end
redis.call('PUBLISH', ARGV[2], id)
return {id, at}
"""
)

# KEYS: every key of the history (identity first). ARGV: channel, last change id, then
# (op, key number, field, value) per write. Writes only if none of KEYS exists: 1, else 0.
SEED = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    return 0
  end
end
for i = 3, #ARGV, 4 do
  local op, key, field, value = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]
  if op == 'HSET' then
    redis.call('HSET', key, field, value)
  elseif op == 'SET' then
    redis.call('SET', key, value)
  else
    redis.call('RPUSH', key, value)
  end
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"""

# KEYS: hash. ARGV: field, JSON body. Stores the body stamped with the Redis time.
STAMP = NOW + "redis.call('HSET', KEYS[1], ARGV[1], now() .. ' ' .. ARGV[2])"
