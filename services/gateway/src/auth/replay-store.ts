import type { Redis } from "ioredis";

/**
 * Remembers used ws-token ids until they expire. `claim` answers true only the first time an id is
 * seen, at this gateway or (with Redis) at any gateway sharing the store.
 */
export interface ReplayStore {
  claim(tokenId: string, ttlMs: number): Promise<boolean>;
  /** Forgets a claim, so that the id can be claimed once more. */
  release(tokenId: string): Promise<void>;
  close(): Promise<void>;
}

export function createMemoryReplayStore(now: () => number = Date.now): ReplayStore {
  const used = new Map<string, number>();
  // Expired ids are forgotten in passing; the map never holds more than a TTL's worth of tokens.
  const sweep = setInterval(() => {
    const t = now();
    for (const [id, expiresAt] of used) if (expiresAt <= t) used.delete(id);
  }, 30_000);
  sweep.unref();
  return {
    async claim(tokenId, ttlMs) {
      const t = now();
      const expiresAt = used.get(tokenId);
      if (expiresAt !== undefined && expiresAt > t) return false;
      used.set(tokenId, t + ttlMs);
      return true;
    },
    async release(tokenId) {
      used.delete(tokenId);
    },
    async close() {
      clearInterval(sweep);
      used.clear();
    },
  };
}

export function createRedisReplayStore(redis: Redis, keyPrefix: string): ReplayStore {
  return {
    async claim(tokenId, ttlMs) {
      // SET NX is atomic: of two gateways racing with the same token, exactly one gets "OK".
      const answer = await redis.set(`${keyPrefix}ws-token:${tokenId}`, "1", "PX", Math.max(1, Math.ceil(ttlMs)), "NX");
      return answer === "OK";
    },
    async release(tokenId) {
      await redis.del(`${keyPrefix}ws-token:${tokenId}`);
    },
    async close() {},
  };
}
