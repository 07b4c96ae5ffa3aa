import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";

/** REDIS_URL when set; in CI it must be, so that fan-out tests never pass by being skipped. */
export function redisUrl(): string | undefined {
  const url = process.env.REDIS_URL;
  if (!url && process.env.CI) throw new Error("CI must set REDIS_URL: fan-out is tested against a real Redis");
  return url;
}

/** A key prefix of this run's own, and a function that deletes every key under it. */
export function redisNamespace(url: string) {
  const keyPrefix = `lc-test:${process.pid}:${randomBytes(4).toString("hex")}:`;
  return {
    keyPrefix,
    async drop() {
      const redis = new Redis(url);
      try {
        let cursor = "0";
        do {
          const [next, keys] = await redis.scan(cursor, "MATCH", `${keyPrefix}*`, "COUNT", 500);
          if (keys.length > 0) await redis.del(...keys);
          cursor = next;
        } while (cursor !== "0");
      } finally {
        await redis.quit();
      }
    },
  };
}
