import { randomBytes } from "node:crypto";
import { Limits } from "@listings-chat/shared";
import type { Redis } from "ioredis";
import { RateLimitedError } from "../errors.ts";

/** Counts sends per user, REST and WebSocket together (CONTRACT §5: 60 a minute). */
export interface SendLimiter {
  /** Takes one send from `userId`'s allowance, or throws RateLimitedError. */
  consume(userId: number): Promise<void>;
  /** Gives one back, for a send that was counted but could not be stored. */
  refund(userId: number): Promise<void>;
}

export interface SendLimiterOptions {
  perMinute?: number;
  /** Shared counters for many instances; in-process counters without it. */
  redis?: Redis;
  keyPrefix?: string;
  /** Milliseconds since the epoch; Date.now unless a test injects its own clock. */
  now?: () => number;
  /**
   * Called for each send checked against this instance's own counts because Redis did not answer (an
   * error, or no answer within ioredis's `commandTimeout`): the limit holds per instance meanwhile.
   */
  onRedisUnavailable?: (error: unknown) => void;
}

/** After Redis failed to answer, sends are counted in this instance alone for this long before Redis is asked again. */
const LOCAL_FALLBACK_MS = 5_000;

const windowMs = 60_000;

/**
 * A sliding log: a send is allowed when fewer than `perMinute` sends of the user's were counted in the
 * last 60 s, so no 60 s span, wherever it starts, holds more than `perMinute` sends. A refused send is
 * not counted. A send at `t` stops counting at `t + 60 s` exactly.
 */
export function createSendLimiter(options: SendLimiterOptions = {}): SendLimiter {
  const limit = options.perMinute ?? Limits.sendsPerMinute;
  if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`perMinute must be a positive integer: ${limit}`);
  const now = options.now ?? Date.now;
  return options.redis
    ? redisLimiter(options.redis, `${options.keyPrefix ?? ""}send:`, limit, now, options.onRedisUnavailable)
    : memoryLimiter(limit, now);
}

/** Until the send at `oldest` leaves the window: exact, and within (0, 60 s] even if the clock stepped back. */
function retryAfter(oldest: number, at: number): number {
  return Math.min(windowMs, Math.max(1, oldest + windowMs - at));
}

interface Sent {
  at: number;
  /** The sorted-set member that stands for this send in Redis; "" in memory. */
  member: string;
}

/**
 * Each user's sends of the last 60 s, oldest first. Users are kept in the order of their latest send, so
 * the users with no send in the window are at the front and are forgotten as the clock passes them: the
 * map holds only users who sent in the last minute.
 */
class RecentSends {
  private readonly users = new Map<number, Sent[]>();

  /** The user's sends still in the window at `at`, oldest first (the log itself, not a copy). */
  inWindow(userId: number, at: number): Sent[] {
    this.forgetIdle(at);
    const sends = this.users.get(userId);
    if (!sends) return [];
    let stale = 0;
    while (stale < sends.length && sends[stale]!.at <= at - windowMs) stale++;
    if (stale > 0) sends.splice(0, stale);
    if (sends.length === 0) this.users.delete(userId);
    return sends;
  }

  add(userId: number, sent: Sent): void {
    const sends = this.users.get(userId) ?? [];
    // Re-inserted at the end: the map stays in the order of the latest send.
    this.users.delete(userId);
    // Kept in order if the clock steps back; such a send then counts a little longer, never shorter.
    sends.push({ ...sent, at: Math.max(sent.at, sends.at(-1)?.at ?? sent.at) });
    this.users.set(userId, sends);
  }

  /** Takes back the user's latest send still in the window, if there is one. */
  popLatest(userId: number, at: number): Sent | undefined {
    const sends = this.inWindow(userId, at);
    const latest = sends.pop();
    if (sends.length === 0) this.users.delete(userId);
    return latest;
  }

  private forgetIdle(at: number): void {
    for (const [userId, sends] of this.users) {
      const latest = sends.at(-1);
      if (latest && latest.at > at - windowMs) break;
      this.users.delete(userId);
    }
  }
}

function memoryLimiter(limit: number, now: () => number): SendLimiter {
  const log = new RecentSends();
  return {
    async consume(userId) {
      const at = now();
      const sends = log.inWindow(userId, at);
      // The send becomes possible when the one that keeps the count at the limit leaves the window.
      if (sends.length >= limit) throw new RateLimitedError(retryAfter(sends[sends.length - limit]!.at, at));
      log.add(userId, { at, member: "" });
    },
    async refund(userId) {
      log.popLatest(userId, now());
    },
  };
}

/**
 * KEYS[1] the user's sorted set of sends, scored by time; ARGV: now, now - 60 s, the limit, a unique member.
 * Returns {1} when the send is counted, {0, score} when refused: the score of the send whose leaving the
 * window makes room (the oldest when the set holds exactly the limit). Times come from the caller, not
 * Redis TIME, so that a test can inject its clock; instances are expected to keep their clocks in sync.
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
redis.call('PEXPIRE', key, ${windowMs})
return {1}
`;

/**
 * The limit shared by every instance through Redis. Redis is not a hard dependency of sending: when it
 * does not answer, the send is counted in this instance's own log instead (the limit then holds per
 * instance), and for the next LOCAL_FALLBACK_MS every send is, so that sends go on at full speed instead of
 * each waiting for a timeout. A refused send is still refused.
 */
function redisLimiter(
  redis: Redis,
  keyPrefix: string,
  limit: number,
  now: () => number,
  onUnavailable: (error: unknown) => void = () => {},
): SendLimiter {
  // Members unique across instances: this limiter's tag and a counter.
  const tag = randomBytes(6).toString("base64url");
  let counter = 0;
  // The members this instance added, so that a refund removes one of its own sends and nobody else's.
  const added = new RecentSends();
  const local = memoryLimiter(limit, now);
  let localUntil = Number.NEGATIVE_INFINITY;
  /** The latest send of each user was counted locally (so its refund is local too). */
  const countedLocally = new Set<number>();

  async function consumeLocally(userId: number, error: unknown) {
    onUnavailable(error);
    await local.consume(userId);
    countedLocally.add(userId);
  }

  return {
    async consume(userId) {
      const at = now();
      if (at < localUntil) return consumeLocally(userId, new Error("Redis did not answer a moment ago"));
      const member = `${at}:${tag}:${++counter}`;
      let reply: [number, string?];
      try {
        reply = (await redis.eval(
          consumeScript,
          1,
          `${keyPrefix}${userId}`,
          String(at),
          String(at - windowMs),
          String(limit),
          member,
        )) as [number, string?];
      } catch (error) {
        localUntil = now() + LOCAL_FALLBACK_MS;
        return consumeLocally(userId, error);
      }
      if (reply[0] !== 1) throw new RateLimitedError(retryAfter(Number(reply[1]), at));
      added.add(userId, { at, member });
      countedLocally.delete(userId);
    },
    async refund(userId) {
      if (countedLocally.delete(userId)) return local.refund(userId);
      const latest = added.popLatest(userId, now());
      if (!latest) return;
      // A refund that fails leaves the send counted: the limit errs on the strict side for at most 60 s.
      await redis.zrem(`${keyPrefix}${userId}`, latest.member).catch(() => {});
    },
  };
}
