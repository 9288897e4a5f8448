//! The Lua scripts: each changes keys of one hash slot atomically (Redis runs a script alone).

use std::sync::LazyLock;

use redis::Script;

/// Queues one notification of kind `c` or `l`: the subscription's next number, the stream entry (its id is
/// the number and the queue's tag), the index count. Every queue script has KEYS queue meta, changes,
/// lifecycle, index, and ARGV subscription, changes tag, lifecycle tag first.
const ENQUEUE_FN: &str = r"
local function put(kind, entry)
  local stream, tag = KEYS[2], ARGV[2]
  if kind == 'l' then stream, tag = KEYS[3], ARGV[3] end
  local number = redis.call('HINCRBY', KEYS[1], 'pos', 1)
  redis.call('XADD', stream, number .. '-' .. tag, 'n', entry)
  redis.call('HINCRBY', KEYS[4], kind .. ':' .. ARGV[1], 1)
end
";

/// Appends a subscription id to the registry's change log (one entry per id, scored by the newest change)
/// and keeps the newest 1,000 entries, remembering the highest score trimmed.
const LOGGED_FN: &str = r"
local function logged(id)
  local seq = redis.call('HINCRBY', KEYS[5], 'seq', 1)
  redis.call('ZADD', KEYS[4], seq, id)
  local excess = redis.call('ZCARD', KEYS[4]) - 1000
  if excess > 0 then
    local old = redis.call('ZRANGE', KEYS[4], excess - 1, excess - 1, 'WITHSCORES')
    redis.call('HSET', KEYS[5], 'trimmed', old[2])
    redis.call('ZREMRANGEBYRANK', KEYS[4], 0, excess - 1)
  end
end
";

fn script(functions: &[&str], body: &str) -> Script {
    Script::new(&format!("{}{body}", functions.concat()))
}

/// Writes one user's effects (see [`UPDATE`]) and answers `{version, stamp}`, or -1 when the record's
/// version is not `expected`. The notifications are ARGV[`first`..=`last`]. One `HSET` for the record's
/// fields, so the replica and the AOF get one command for them.
const UPDATE_FN: &str = r"
local function update(record, timers, outbox, changes, expected, facts, due, member, stamp, visible, first, last)
  local v = tonumber(redis.call('HGET', record, 'v') or '0')
  if v ~= tonumber(expected) then return -1 end
  v = v + 1
  stamp = math.max(tonumber(stamp), tonumber(redis.call('HGET', record, 's') or '0') + 1)
  local stamped = string.format('%.0f', stamp)
  local fields = { 'v', v }
  if facts ~= '' then fields[#fields + 1] = 'f'; fields[#fields + 1] = facts end
  if last >= first then fields[#fields + 1] = 's'; fields[#fields + 1] = stamped end
  if due ~= '' then
    fields[#fields + 1] = 'd'; fields[#fields + 1] = due
    redis.call('ZADD', timers, due, member)
  else
    redis.call('HDEL', record, 'd')
    redis.call('ZREM', timers, member)
  end
  redis.call('HSET', record, unpack(fields))
  if visible == '1' then redis.call('XADD', changes, 'MAXLEN', '~', 1000, '*', 'u', member) end
  for i = first, last do redis.call('XADD', outbox, '*', 'n', ARGV[i], 't', stamped) end
  return { v, stamped }
end
";

/// A user's write. KEYS: record, timers, outbox, changes. ARGV: expected version, facts (empty: keep
/// them), due (empty: none), timer member, the writer's stamp, whether the presence changed visibly (`1`:
/// the member is appended to the partition's capped stream of changes), then the notifications to stage.
/// The notifications are stamped above the record's last stamp, so one user's stamps increase whoever
/// writes. Answers the new version and the stamp used, or -1 when the record's version is not the
/// expected one.
pub(crate) static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[UPDATE_FN],
        r"
return update(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], 7, #ARGV)
",
    )
});

/// How many arguments [`UPDATE`] takes before the notifications. [`UPDATE_MANY`] takes, per user, the
/// four keys, these, and the number of notifications (11 in all) before them.
pub(crate) const UPDATE_ARGS: usize = 6;

/// Many users' writes on one node, which may span its slots (so the keys are in ARGV, and the script is
/// flagged `allow-cross-slot-keys`). ARGV, per user: record, timers, outbox, changes, then [`UPDATE`]'s
/// six arguments, the number of notifications, and the notifications. Every key is touched before the
/// first write, so a key this node does not serve (a slot that moved) fails the script before it changes
/// anything. Answers, per user, what [`UPDATE`] answers.
pub(crate) static UPDATE_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "#!lua flags=allow-cross-slot-keys\n{UPDATE_FN}{}",
        r"
local starts = {}
local i = 1
while i <= #ARGV do
  starts[#starts + 1] = i
  redis.call('EXISTS', ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
  i = i + 11 + tonumber(ARGV[i + 10])
end
local answers = {}
for k, at in ipairs(starts) do
  local count = tonumber(ARGV[at + 10])
  answers[k] = update(ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5],
    ARGV[at + 6], ARGV[at + 7], ARGV[at + 8], ARGV[at + 9], at + 11, at + 10 + count)
end
return answers
"
    ))
});

/// Claims due users of one partition. KEYS: timers. ARGV: now, lease end, members. Moves each member still
/// due to the lease's end (it is not removed: a claimer that dies loses nothing) and answers those claimed.
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[],
        r"
local now = tonumber(ARGV[1])
local claimed = {}
for i = 3, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) <= now then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i])
    claimed[#claimed + 1] = ARGV[i]
  end
end
return claimed
",
    )
});

/// Queues notifications of one subscription. ARGV after the first three: pairs of kind (`c` or `l`) and
/// entry.
pub(crate) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[ENQUEUE_FN],
        r"
for i = 4, #ARGV, 2 do put(ARGV[i], ARGV[i + 1]) end
return 1
",
    )
});

/// Removes notifications of one queue by entry id and queues others. ARGV after the first three: kind, count
/// n, n entry ids, then pairs of kind and entry. An emptied stream is deleted (numbers live in the meta).
pub(crate) static ACKNOWLEDGE: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[ENQUEUE_FN],
        r"
local stream = KEYS[2]
if ARGV[4] == 'l' then stream = KEYS[3] end
local n = tonumber(ARGV[5])
local removed = 0
for i = 6, 5 + n do removed = removed + redis.call('XDEL', stream, ARGV[i]) end
local field = ARGV[4] .. ':' .. ARGV[1]
if removed > 0 then
  if redis.call('HINCRBY', KEYS[4], field, -removed) <= 0 then redis.call('HDEL', KEYS[4], field) end
  if redis.call('XLEN', stream) == 0 then redis.call('DEL', stream) end
end
for i = 6 + n, #ARGV, 2 do put(ARGV[i], ARGV[i + 1]) end
return removed
",
    )
});

/// Relays staged notifications into one queue, each once. ARGV after the first three: kind, then triples
/// of high-water field (`hw:PARTITION`), outbox entry id and entry, in each partition's outbox order.
/// Entries at or below their partition's high-water mark were relayed before; a removed subscription's
/// queue takes none. Answers how many were queued.
pub(crate) static RELAY: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[ENQUEUE_FN],
        r"
if redis.call('HEXISTS', KEYS[1], 'gone') == 1 then return 0 end
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local marks = {}
local added = 0
for i = 5, #ARGV, 3 do
  local field = ARGV[i]
  if not marks[field] then
    local hw = redis.call('HGET', KEYS[1], field)
    if hw then marks[field] = { parse(hw) } else marks[field] = { -1, -1 } end
  end
  local ms, seq = parse(ARGV[i + 1])
  local mark = marks[field]
  if ms > mark[1] or (ms == mark[1] and seq > mark[2]) then
    put(ARGV[4], ARGV[i + 2])
    marks[field] = { ms, seq }
    redis.call('HSET', KEYS[1], field, ARGV[i + 1])
    added = added + 1
  end
end
return added
",
    )
});

/// Takes or renews a delivery lease. KEYS: leases. ARGV: field, holder, now, lease end.
pub(crate) static LEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[],
        r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  local space = string.find(current, ' ', 1, true)
  local ends = tonumber(string.sub(current, 1, space - 1))
  if string.sub(current, space + 1) ~= ARGV[2] and ends > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4] .. ' ' .. ARGV[2])
return 1
",
    )
});

/// Ends a holder's lease. KEYS: leases. ARGV: field, holder.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[],
        r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current and string.sub(current, string.find(current, ' ', 1, true) + 1) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
",
    )
});

/// The registry scripts' keys, in this order: subs, versions, counts, log, meta, pending.
pub(crate) const REGISTRY_KEYS: [&str; 6] = ["subs", "versions", "counts", "log", "meta", "pending"];

/// Creates a subscription within its application's limit. ARGV: id, count field, limit, record.
pub(crate) static CREATE_SUBSCRIPTION: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[LOGGED_FN],
        r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
local count = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '0')
if count >= tonumber(ARGV[3]) then return 0 end
redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], 1)
logged(ARGV[1])
return 1
",
    )
});

/// Changes a subscription at an expected version. ARGV: id, expected version, record, pending queue work
/// (empty: none). Answers the new version, -1 on another version, -2 when there is no such subscription.
pub(crate) static UPDATE_SUBSCRIPTION: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[LOGGED_FN],
        r"
local v = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if v == 0 then return -2 end
if v ~= tonumber(ARGV[2]) then return -1 end
v = v + 1
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], v)
logged(ARGV[1])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[6], ARGV[1] .. ':' .. v, ARGV[4]) end
return v
",
    )
});

/// Removes a subscription at an expected version, leaving its queue work (dropping the change queue,
/// queuing the farewell) pending. ARGV: id, expected version, count field, pending queue work. Answers as
/// [`UPDATE_SUBSCRIPTION`].
pub(crate) static REMOVE_SUBSCRIPTION: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[LOGGED_FN],
        r"
local v = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if v == 0 then return -2 end
if v ~= tonumber(ARGV[2]) then return -1 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('HINCRBY', KEYS[3], ARGV[3], -1) <= 0 then redis.call('HDEL', KEYS[3], ARGV[3]) end
logged(ARGV[1])
redis.call('HSET', KEYS[6], ARGV[1] .. ':rm', ARGV[4])
return v
",
    )
});

/// Every subscription with its version, and the log's cursor, at one instant.
pub(crate) static SUBSCRIPTIONS: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[],
        r"
return { redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('HGET', KEYS[5], 'seq') or '0' }
",
    )
});

/// The ids changed after a cursor, with their scores, or `false` when the log was trimmed past it.
/// ARGV: cursor.
pub(crate) static CHANGES: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[],
        r"
local trimmed = tonumber(redis.call('HGET', KEYS[5], 'trimmed') or '0')
if tonumber(ARGV[1]) < trimmed then return false end
return redis.call('ZRANGEBYSCORE', KEYS[4], '(' .. ARGV[1], '+inf', 'WITHSCORES')
",
    )
});

/// Does a subscription's pending queue work, once. KEYS: the queue keys and leases. ARGV after the first
/// three: version, removal (`1` or `0`), then pairs of kind and entry. A removal marks the
/// queues gone (relays add nothing more), drops the change queue, and queues the farewell into the
/// lifecycle queue or drops that too; an update queues its notifications unless a version as new was
/// queued already.
pub(crate) static APPLY_PENDING: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[ENQUEUE_FN],
        r"
if redis.call('HEXISTS', KEYS[1], 'gone') == 1 then return 0 end
if ARGV[5] == '1' then
  local pos = redis.call('HGET', KEYS[1], 'pos') or '0'
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'gone', ARGV[4], 'pos', pos)
  redis.call('EXPIRE', KEYS[1], 86400)
  redis.call('DEL', KEYS[2])
  redis.call('HDEL', KEYS[4], 'c:' .. ARGV[1])
  redis.call('HDEL', KEYS[5], 'c:' .. ARGV[1])
  if #ARGV < 6 then
    redis.call('DEL', KEYS[3])
    redis.call('HDEL', KEYS[4], 'l:' .. ARGV[1])
    redis.call('HDEL', KEYS[5], 'l:' .. ARGV[1])
  end
else
  local sv = tonumber(redis.call('HGET', KEYS[1], 'sv') or '0')
  if sv >= tonumber(ARGV[4]) then return 0 end
  redis.call('HSET', KEYS[1], 'sv', ARGV[4])
end
for i = 6, #ARGV, 2 do put(ARGV[i], ARGV[i + 1]) end
return 1
",
    )
});

/// Adds a user to a tenant's directory or updates its names. KEYS: the tenant's `users`, `ids`, `upns`.
/// ARGV: id, user principal name's lookup form, the user's JSON (whose `upnKey` is that form). The user's
/// previous user principal name stops finding it; the new one finds it unless another user holds it.
pub(crate) static PUT_DIRECTORY_USER: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[],
        r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old ~= ARGV[3] then
  if old then
    local was = cjson.decode(old)['upnKey']
    if was ~= ARGV[2] and redis.call('HGET', KEYS[3], was) == ARGV[1] then redis.call('HDEL', KEYS[3], was) end
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  redis.call('ZADD', KEYS[2], 0, ARGV[1])
end
redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[1])
return 1
",
    )
});

/// Raises the shared test clock. KEYS: the clock. ARGV: an instant. Answers the shared instant.
pub(crate) static TEST_CLOCK: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[],
        r"
local shared = redis.call('GET', KEYS[1])
if not shared or tonumber(ARGV[1]) > tonumber(shared) then
  redis.call('SET', KEYS[1], ARGV[1])
  return ARGV[1]
end
return shared
",
    )
});
