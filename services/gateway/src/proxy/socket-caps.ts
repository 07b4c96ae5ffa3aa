import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { createUserConcurrency } from "./user-concurrency.ts";

/** Open WebSocket pipes per user, with a cap (CONTRACT §3: 429 over it). */
export interface SocketCaps {
  /** Reserves a slot for `userId`: a function that gives it back, or undefined when the user is at the cap. */
  tryAcquire(userId: number): Promise<(() => void) | undefined>;
  close(): void;
}

/** Counts the pipes of this gateway only. */
export function createMemorySocketCaps(maxPerUser: number): SocketCaps {
  const open = createUserConcurrency(maxPerUser);
  return {
    async tryAcquire(userId) {
      return open.tryEnter(userId);
    },
    close() {},
  };
}

// Drops expired claims, then adds this one only if the user is under the cap. Atomic, so racing gateways
// can never let an 11th socket in.
const ACQUIRE = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1`;

export interface RedisSocketCapsOptions {
  redis: Redis;
  keyPrefix: string;
  maxPerUser: number;
  /** How long a claim lives without a refresh: a crashed gateway's sockets stop counting after it. */
  claimTtlMs?: number;
  now?: () => number;
}

/**
 * Counts a user's pipes across every gateway sharing the Redis: one sorted set per user, members are
 * this gateway's claims, scores their expiry, refreshed while the pipe is open.
 */
export function createRedisSocketCaps({
  redis,
  keyPrefix,
  maxPerUser,
  claimTtlMs = 90_000,
  now = Date.now,
}: RedisSocketCapsOptions): SocketCaps {
  const gatewayId = randomUUID();
  // By SHA (EVALSHA, falling back to EVAL once per Redis), not the script's text on every upgrade.
  if (!("socketCapAcquire" in redis)) redis.defineCommand("socketCapAcquire", { numberOfKeys: 1, lua: ACQUIRE });
  const scripts = redis as Redis & { socketCapAcquire(...args: Array<string | number>): Promise<number> };
  const live = new Map<string, number>(); // claim → user id
  const key = (userId: number) => `${keyPrefix}ws-sockets:${userId}`;
  const refresh = setInterval(() => {
    if (live.size === 0) return;
    // Plain ZADD, not XX: after a Redis restart (or a flush) the claims of live sockets are written back,
    // so they count again instead of letting the user past the cap. Issued together, pipelined by the
    // client per node (one pipeline never mixes users' hash slots, which a cluster refuses).
    const expires = now() + claimTtlMs;
    Promise.all(
      [...live].flatMap(([claim, userId]) => [
        redis.zadd(key(userId), expires, claim),
        redis.pexpire(key(userId), claimTtlMs),
      ]),
    ).catch(() => {});
  }, claimTtlMs / 3);
  refresh.unref();
  return {
    async tryAcquire(userId) {
      const claim = `${gatewayId}:${randomUUID()}`;
      const t = now();
      const granted = await scripts.socketCapAcquire(key(userId), t, t + claimTtlMs, maxPerUser, claim, claimTtlMs);
      if (granted !== 1) return undefined;
      live.set(claim, userId);
      return () => {
        if (!live.delete(claim)) return;
        redis.zrem(key(userId), claim).catch(() => {});
      };
    },
    close() {
      clearInterval(refresh);
    },
  };
}
