import type { Redis } from "ioredis";

/** Lets one typing frame per user and chat through every interval (CONTRACT §5: at most once per 2 s). */
export type TypingGate = (userId: number, chatId: number) => Promise<boolean>;

/** Per instance: enough with one chat instance. */
export function createMemoryTypingGate(intervalMs: number, now: () => number = Date.now): TypingGate {
  const last = new Map<string, number>();
  return async (userId, chatId) => {
    const t = now();
    // Forget stale entries in passing, so the map holds only the last interval's typists.
    if (last.size > 1_000) for (const [key, at] of last) if (t - at >= intervalMs) last.delete(key);
    const key = `${userId}:${chatId}`;
    if (t - (last.get(key) ?? Number.NEGATIVE_INFINITY) < intervalMs) return false;
    last.set(key, t);
    return true;
  };
}

/** Shared by every instance: a user with sockets on two instances still types at most once per interval. */
export function createRedisTypingGate(redis: Redis, keyPrefix: string, intervalMs: number): TypingGate {
  return async (userId, chatId) =>
    (await redis.set(`${keyPrefix}typing:${userId}:${chatId}`, "1", "PX", intervalMs, "NX")) === "OK";
}
