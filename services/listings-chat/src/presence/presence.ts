import type { Redis } from "ioredis";

/**
 * Who is online anywhere. The hub calls `join` on a user's first socket on this instance and
 * `leave` on their last one; both answer whether the user's state changed for everyone.
 */
export interface Presence {
  join(userId: number): Promise<boolean>;
  leave(userId: number): Promise<boolean>;
  isOnline(userId: number): Promise<boolean>;
  /** Keeps this instance's users alive in a shared store; a crashed instance's users expire. */
  refresh(userIds: Iterable<number>): Promise<void>;
}

export function createMemoryPresence(): Presence {
  const online = new Set<number>();
  return {
    async join(userId) {
      if (online.has(userId)) return false;
      online.add(userId);
      return true;
    },
    async leave(userId) {
      return online.delete(userId);
    },
    async isOnline(userId) {
      return online.has(userId);
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

/** One sorted set per user: members are instance ids, scores the time their claim expires. */
export function createRedisPresence({
  redis,
  keyPrefix,
  instanceId,
  ttlMs,
  now = Date.now,
}: RedisPresenceOptions): Presence {
  const key = (userId: number) => `${keyPrefix}presence:${userId}`;
  const liveCount = async (userId: number) => {
    const [, , [, count] = []] = (await redis
      .multi()
      .zremrangebyscore(key(userId), "-inf", now())
      .pexpire(key(userId), ttlMs)
      .zcard(key(userId))
      .exec()) as Array<[Error | null, unknown]>;
    return Number(count ?? 0);
  };
  return {
    async join(userId) {
      await redis.zadd(key(userId), now() + ttlMs, instanceId);
      return (await liveCount(userId)) === 1;
    },
    async leave(userId) {
      await redis.zrem(key(userId), instanceId);
      return (await liveCount(userId)) === 0;
    },
    async isOnline(userId) {
      return (await redis.zcount(key(userId), now(), "+inf")) > 0;
    },
    async refresh(userIds) {
      const pipeline = redis.pipeline();
      for (const userId of userIds) pipeline.zadd(key(userId), now() + ttlMs, instanceId).pexpire(key(userId), ttlMs);
      await pipeline.exec();
    },
  };
}
