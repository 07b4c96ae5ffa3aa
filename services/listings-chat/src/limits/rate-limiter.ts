import { randomBytes } from "node:crypto";
import { Limits } from "@listings-chat/shared";
import type { Redis } from "ioredis";
import { RateLimitedError } from "../errors.ts";

/** The writes limited per user (CONTRACT §10), each counted in a bucket of its own. */
export type LimitedWrite = "send" | "edit" | "chat_open" | "report" | "upload" | "block";

const MINUTE = 60_000;
const HOUR = 3_600_000;

/** Each bucket's window, what its refusal names, and the contract's limit. */
const BUCKETS: Record<LimitedWrite, { windowMs: number; what: string; per: string; limit: number }> = {
  send: { windowMs: MINUTE, what: "messages", per: "a minute", limit: Limits.sendsPerMinute },
  // Edits and deletes together: both rewrite what the other side already has and push an event to them.
  edit: { windowMs: MINUTE, what: "edits and deletes", per: "a minute", limit: Limits.editsPerMinute },
  chat_open: { windowMs: HOUR, what: "new chats", per: "an hour", limit: Limits.chatOpensPerHour },
  report: { windowMs: HOUR, what: "reports", per: "an hour", limit: Limits.reportsPerHour },
  upload: { windowMs: HOUR, what: "uploads", per: "an hour", limit: Limits.uploadsPerHour },
  block: { windowMs: HOUR, what: "blocks and unblocks", per: "an hour", limit: Limits.blocksPerHour },
};

export const LIMITED_WRITES = Object.keys(BUCKETS) as LimitedWrite[];

/**
 * Counts each user's writes per bucket, REST and WebSocket together, across instances when Redis is given.
 *
 * @example
 *   await limits.consume("report", userId); // throws RateLimitedError past REPORT_LIMIT_PER_HOUR
 *   // …store; when nothing new was stored (a repeat answered 200), or storing failed:
 *   await limits.refund("report", userId);
 */
export interface RateLimiter {
  /** Takes one write from `userId`'s allowance in `write`'s bucket, or throws RateLimitedError. */
  consume(write: LimitedWrite, userId: number): Promise<void>;
  /** Gives one back, for a write that was counted but stored nothing (a repeat, a failure). */
  refund(write: LimitedWrite, userId: number): Promise<void>;
}

/**
 * Runs a write already counted in `write`'s bucket, and gives the count back when the write throws or
 * `stored` says it stored nothing (a repeat, a refusal, a change that changed nothing): only writes that
 * changed something use the allowance. The one place every counted write settles its count.
 */
export async function keptIfStored<T>(
  limits: RateLimiter,
  write: LimitedWrite,
  userId: number,
  run: () => Promise<T>,
  stored: (outcome: T) => boolean,
): Promise<T> {
  let outcome: T;
  try {
    outcome = await run();
  } catch (error) {
    await limits.refund(write, userId);
    throw error;
  }
  if (!stored(outcome)) await limits.refund(write, userId);
  return outcome;
}

export interface RateLimiterOptions {
  /** Per bucket: writes allowed per window (CONTRACT §10's limits where not given). */
  limits?: Partial<Record<LimitedWrite, number>>;
  /** Shared counters for many instances; in-process counters without it. */
  redis?: Redis;
  keyPrefix?: string;
  /** Milliseconds since the epoch; Date.now unless a test injects its own clock. */
  now?: () => number;
  /**
   * Called for each write checked against this instance's own counts because Redis did not answer (an
   * error, or no answer within ioredis's `commandTimeout`): the limit holds per instance meanwhile.
   */
  onRedisUnavailable?: (error: unknown, write: LimitedWrite) => void;
}

/** After Redis failed to answer, writes are counted in this instance alone for this long before Redis is asked again. */
const LOCAL_FALLBACK_MS = 5_000;

interface Bucket {
  write: LimitedWrite;
  limit: number;
  windowMs: number;
  /** What a refusal names: "edits and deletes (30 a minute)". */
  what: string;
}

/**
 * A sliding log per bucket: a write is allowed when fewer than `limit` writes of the user's were counted in
 * the bucket's last window, so no window-long span, wherever it starts, holds more than `limit`. A refused
 * write is not counted. A write at `t` stops counting at `t + window` exactly.
 */
export function createRateLimiter(options: RateLimiterOptions = {}): RateLimiter {
  for (const write of Object.keys(options.limits ?? {}))
    if (!Object.hasOwn(BUCKETS, write))
      throw new RangeError(`unknown limit "${write}": one of ${LIMITED_WRITES.join(", ")}`);
  const buckets = Object.fromEntries(
    LIMITED_WRITES.map((write) => {
      const { windowMs, what, per } = BUCKETS[write];
      const limit = options.limits?.[write] ?? BUCKETS[write].limit;
      if (!Number.isInteger(limit) || limit < 1)
        throw new RangeError(`the ${write} limit must be a positive integer: ${limit}`);
      return [write, { write, limit, windowMs, what: `${what} (${limit} ${per})` }];
    }),
  ) as Record<LimitedWrite, Bucket>;
  const now = options.now ?? Date.now;
  return options.redis
    ? redisLimiter(options.redis, options.keyPrefix ?? "", buckets, now, options.onRedisUnavailable)
    : memoryLimiter(buckets, now);
}

/** Until the write at `oldest` leaves the window: exact, and within (0, window] even if the clock stepped back. */
function retryAfter(bucket: Bucket, oldest: number, at: number): number {
  return Math.min(bucket.windowMs, Math.max(1, oldest + bucket.windowMs - at));
}

interface Counted {
  at: number;
  /** The sorted-set member that stands for this write in Redis; "" in memory. */
  member: string;
}

/**
 * Each user's writes of one bucket's last window, oldest first. Users are kept in the order of their latest
 * write, so the users with no write in the window are at the front and are forgotten as the clock passes
 * them: the map holds only users who wrote within the window.
 */
class RecentWrites {
  private readonly users = new Map<number, Counted[]>();
  private readonly windowMs: number;

  constructor(windowMs: number) {
    this.windowMs = windowMs;
  }

  /** The user's writes still in the window at `at`, oldest first (the log itself, not a copy). */
  inWindow(userId: number, at: number): Counted[] {
    this.forgetIdle(at);
    const writes = this.users.get(userId);
    if (!writes) return [];
    let stale = 0;
    while (stale < writes.length && writes[stale]!.at <= at - this.windowMs) stale++;
    if (stale > 0) writes.splice(0, stale);
    if (writes.length === 0) this.users.delete(userId);
    return writes;
  }

  add(userId: number, counted: Counted): void {
    const writes = this.users.get(userId) ?? [];
    // Re-inserted at the end: the map stays in the order of the latest write.
    this.users.delete(userId);
    // Kept in order if the clock steps back; such a write then counts a little longer, never shorter.
    writes.push({ ...counted, at: Math.max(counted.at, writes.at(-1)?.at ?? counted.at) });
    this.users.set(userId, writes);
  }

  /** Takes back the user's latest write still in the window, if there is one. */
  popLatest(userId: number, at: number): Counted | undefined {
    const writes = this.inWindow(userId, at);
    const latest = writes.pop();
    if (writes.length === 0) this.users.delete(userId);
    return latest;
  }

  private forgetIdle(at: number): void {
    for (const [userId, writes] of this.users) {
      const latest = writes.at(-1);
      if (latest && latest.at > at - this.windowMs) break;
      this.users.delete(userId);
    }
  }
}

function memoryLimiter(buckets: Record<LimitedWrite, Bucket>, now: () => number): RateLimiter {
  const logs = Object.fromEntries(
    LIMITED_WRITES.map((write) => [write, new RecentWrites(buckets[write].windowMs)]),
  ) as Record<LimitedWrite, RecentWrites>;
  return {
    async consume(write, userId) {
      const bucket = buckets[write];
      const at = now();
      const writes = logs[write].inWindow(userId, at);
      // The write becomes possible when the one that keeps the count at the limit leaves the window.
      if (writes.length >= bucket.limit)
        throw new RateLimitedError(retryAfter(bucket, writes[writes.length - bucket.limit]!.at, at), bucket.what);
      logs[write].add(userId, { at, member: "" });
    },
    async refund(write, userId) {
      logs[write].popLatest(userId, now());
    },
  };
}

/**
 * KEYS[1] the user's sorted set of writes in one bucket, scored by time; ARGV: now, now - window, the limit,
 * a unique member, the window. Returns {1} when the write is counted, {0, score} when refused: the score of
 * the write whose leaving the window makes room (the oldest when the set holds exactly the limit). Times
 * come from the caller, not Redis TIME, so that a test can inject its clock; instances are expected to keep
 * their clocks in sync. One key: a Redis Cluster routes it by that key.
 */
const consumeScript = `
local key = KEYS[1]
local kind = redis.call('TYPE', key).ok
if kind ~= 'zset' and kind ~= 'none' then redis.call('DEL', key) end
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[2])
local count = redis.call('ZCARD', key)
local limit = tonumber(ARGV[3])
if count >= limit then
  local blocking = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
  return {0, blocking[2]}
end
redis.call('ZADD', key, ARGV[1], ARGV[4])
redis.call('PEXPIRE', key, ARGV[5])
return {1}
`;

/**
 * The limits shared by every instance through Redis, one sorted set per user and bucket
 * (`<prefix><bucket>:<user id>`, e.g. `listings-chat:edit:42`). Redis is not a hard dependency of writing:
 * when it does not answer, the write is counted in this instance's own log instead (the limit then holds per
 * instance), and for the next LOCAL_FALLBACK_MS every write is, so that writes go on at full speed instead of
 * each waiting for a timeout. A refused write is still refused.
 */
function redisLimiter(
  redis: Redis,
  keyPrefix: string,
  buckets: Record<LimitedWrite, Bucket>,
  now: () => number,
  onUnavailable: (error: unknown, write: LimitedWrite) => void = () => {},
): RateLimiter {
  // Members unique across instances: this limiter's tag and a counter.
  const tag = randomBytes(6).toString("base64url");
  let counter = 0;
  // The members this instance added, so that a refund removes one of its own writes and nobody else's.
  const added = Object.fromEntries(
    LIMITED_WRITES.map((write) => [write, new RecentWrites(buckets[write].windowMs)]),
  ) as Record<LimitedWrite, RecentWrites>;
  const local = memoryLimiter(buckets, now);
  let localUntil = Number.NEGATIVE_INFINITY;
  /** `<bucket>:<user>` whose latest write was counted locally (so its refund is local too). */
  const countedLocally = new Set<string>();
  const keyOf = (write: LimitedWrite, userId: number) => `${keyPrefix}${write}:${userId}`;

  async function consumeLocally(write: LimitedWrite, userId: number, error: unknown) {
    onUnavailable(error, write);
    await local.consume(write, userId);
    countedLocally.add(`${write}:${userId}`);
  }

  return {
    async consume(write, userId) {
      const bucket = buckets[write];
      const at = now();
      if (at < localUntil) return consumeLocally(write, userId, new Error("Redis did not answer a moment ago"));
      const member = `${at}:${tag}:${++counter}`;
      let reply: [number, string?];
      try {
        reply = (await redis.eval(
          consumeScript,
          1,
          keyOf(write, userId),
          String(at),
          String(at - bucket.windowMs),
          String(bucket.limit),
          member,
          String(bucket.windowMs),
        )) as [number, string?];
      } catch (error) {
        localUntil = now() + LOCAL_FALLBACK_MS;
        return consumeLocally(write, userId, error);
      }
      if (reply[0] !== 1) throw new RateLimitedError(retryAfter(bucket, Number(reply[1]), at), bucket.what);
      added[write].add(userId, { at, member });
      countedLocally.delete(`${write}:${userId}`);
    },
    async refund(write, userId) {
      if (countedLocally.delete(`${write}:${userId}`)) return local.refund(write, userId);
      const latest = added[write].popLatest(userId, now());
      if (!latest) return;
      // A refund that fails leaves the write counted: the limit errs on the strict side for one window at most.
      await redis.zrem(keyOf(write, userId), latest.member).catch(() => {});
    },
  };
}
