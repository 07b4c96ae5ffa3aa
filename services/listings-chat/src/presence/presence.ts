import type { Redis } from "ioredis";

/**
 * A user's presence at one moment. `version` grows with every change of `online` for that user, wherever
 * it happened, so that of two reports about the same user the newer one can always be told apart (a
 * snapshot read before an announcement, two announcements crossing on the bus).
 */
export interface PresenceState {
  online: boolean;
  version: number;
}

/** What `join` and `leave` report: whether the user's state changed for everyone, and the state now. */
export interface PresenceChange extends PresenceState {
  changed: boolean;
}

/**
 * Who is online anywhere. The hub calls `join` on a user's first socket on this instance and
 * `leave` on their last one.
 */
export interface Presence {
  join(userId: number): Promise<PresenceChange>;
  leave(userId: number): Promise<PresenceChange>;
  /** The states of `userIds`, in the same order, read in one round trip. */
  states(userIds: readonly number[]): Promise<PresenceState[]>;
  /** Keeps this instance's users alive in a shared store; a crashed instance's users expire. */
  refresh(userIds: Iterable<number>): Promise<void>;
}

export function createMemoryPresence(): Presence {
  const online = new Set<number>();
  const versions = new Map<number, number>();
  let clock = 0;
  const change = (userId: number, changed: boolean): PresenceChange => {
    if (changed) versions.set(userId, ++clock);
    return { changed, online: online.has(userId), version: versions.get(userId) ?? 0 };
  };
  return {
    async join(userId) {
      const changed = !online.has(userId);
      online.add(userId);
      return change(userId, changed);
    },
    async leave(userId) {
      return change(userId, online.delete(userId));
    },
    async states(userIds) {
      return userIds.map((userId) => ({ online: online.has(userId), version: versions.get(userId) ?? 0 }));
    },
    async refresh() {},
  };
}

export interface RedisPresenceOptions {
  redis: Redis;
  keyPrefix: string;
  instanceId: string;
  /** How long an instance's claim lasts without a refresh. */
  ttlMs: number;
  now?: () => number;
}

/**
 * KEYS: the user's claims, the user's version. ARGV: instance id, now (ms), ttl (ms), 1 to join or 0 to leave.
 * One script, so that of two instances changing the same user at once exactly one sees the change. The
 * version of a change is Redis's clock in microseconds (one clock for every instance), or one more than
 * the last version when that clock has not moved on; it is kept a day, and after that the clock alone
 * still orders changes.
 */
const CHANGE = `
local now, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local before = redis.call('ZCARD', KEYS[1])
if ARGV[4] == '1' then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ttl)
local after = redis.call('ZCARD', KEYS[1])
local version = tonumber(redis.call('GET', KEYS[2]) or '0')
local changed = (before == 0) ~= (after == 0)
if changed then
  local t = redis.call('TIME')
  local clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
  if clock > version then version = clock else version = version + 1 end
  redis.call('SET', KEYS[2], string.format('%.0f', version), 'PX', 86400000)
end
return { changed and 1 or 0, after > 0 and 1 or 0, string.format('%.0f', version) }
`;

/**
 * KEYS: each user's claims and version, in pairs. ARGV: now (ms). Returns online and version of each user,
 * in pairs; each pair read together, so a state and its version never come from two different moments.
 */
const STATES = `
local replies = {}
for i = 1, #KEYS, 2 do
  replies[i] = redis.call('ZCOUNT', KEYS[i], '(' .. ARGV[1], '+inf') > 0 and 1 or 0
  replies[i + 1] = redis.call('GET', KEYS[i + 1]) or '0'
end
return replies
`;

/**
 * One sorted set per user (members are instance ids, scores the time their claim expires) and one version
 * key per user, both in the user's hash slot. The change script runs by SHA (ioredis's defineCommand).
 */
export function createRedisPresence({
  redis,
  keyPrefix,
  instanceId,
  ttlMs,
  now = Date.now,
}: RedisPresenceOptions): Presence {
  const claims = (userId: number) => `${keyPrefix}presence:{${userId}}`;
  const version = (userId: number) => `${keyPrefix}presence-version:{${userId}}`;
  if (!("presenceChange" in redis)) {
    redis.defineCommand("presenceChange", { numberOfKeys: 2, lua: CHANGE });
    // One user's pair (a cluster client routes it by its keys), or everyone's (on a single Redis).
    redis.defineCommand("presenceState", { numberOfKeys: 2, lua: STATES });
    redis.defineCommand("presenceStates", { lua: STATES });
  }
  const run = redis as Redis & {
    presenceChange(...args: [string, string, string, number, number, 0 | 1]): Promise<[number, number, string]>;
    presenceState(claims: string, version: string, now: number): Promise<[number, string]>;
    presenceStates(numberOfKeys: number, ...keysThenNow: (string | number)[]): Promise<(number | string)[]>;
  };
  const change = async (userId: number, join: 0 | 1): Promise<PresenceChange> => {
    const [changed, online, v] = await run.presenceChange(
      claims(userId),
      version(userId),
      instanceId,
      now(),
      ttlMs,
      join,
    );
    return { changed: changed === 1, online: online === 1, version: Number(v) };
  };
  return {
    join: (userId) => change(userId, 1),
    leave: (userId) => change(userId, 0),
    async states(userIds) {
      if (userIds.length === 0) return [];
      const at = now();
      // A single Redis answers everyone in one script. A cluster's script may touch one hash slot only: one
      // script per user there, issued together (the client pipelines them per node).
      const replies = redis.isCluster
        ? (await Promise.all(userIds.map((userId) => run.presenceState(claims(userId), version(userId), at)))).flat()
        : await run.presenceStates(
            userIds.length * 2,
            ...userIds.flatMap((userId) => [claims(userId), version(userId)]),
            at,
          );
      return userIds.map((_, i) => ({ online: replies[2 * i] === 1, version: Number(replies[2 * i + 1]) }));
    },
    async refresh(userIds) {
      const expires = now() + ttlMs;
      await Promise.all(
        [...userIds].flatMap((userId) => [
          redis.zadd(claims(userId), expires, instanceId),
          redis.pexpire(claims(userId), ttlMs),
        ]),
      );
    },
  };
}
