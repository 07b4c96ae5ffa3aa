import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { createMemorySocketCaps, createRedisSocketCaps } from "../src/proxy/socket-caps.ts";

describe("per-user socket caps in memory", () => {
  it("grants up to the cap, then refuses until a slot is given back (once)", async () => {
    const caps = createMemorySocketCaps(2);
    const first = await caps.tryAcquire(1);
    const second = await caps.tryAcquire(1);
    expect(first).toBeTypeOf("function");
    expect(second).toBeTypeOf("function");
    expect(await caps.tryAcquire(1)).toBeUndefined();
    expect(await caps.tryAcquire(2)).toBeTypeOf("function");
    first?.();
    first?.(); // a second release gives nothing more back
    expect(await caps.tryAcquire(1)).toBeTypeOf("function");
    expect(await caps.tryAcquire(1)).toBeUndefined();
  });
});

const redisUrl = process.env.REDIS_URL;
if (!redisUrl && process.env.CI) throw new Error("CI must set REDIS_URL: the shared socket cap is tested on Redis");

describe.runIf(redisUrl)("per-user socket caps shared through Redis", () => {
  const keyPrefix = `lc-test:${process.pid}:${Date.now()}:`;
  const redis = new Redis(redisUrl ?? "");
  afterAll(async () => {
    const keys = await redis.keys(`${keyPrefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    await redis.quit();
  });

  it("holds the cap across gateways, even when they race", async () => {
    const [a, b] = [1, 2].map(() => createRedisSocketCaps({ redis, keyPrefix, maxPerUser: 3 }));
    const raced = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => (i % 2 ? a! : b!).tryAcquire(77)));
    const granted = raced.filter((release) => release !== undefined);
    expect(granted).toHaveLength(3);
    expect(await b!.tryAcquire(77)).toBeUndefined();
    granted[0]?.();
    await new Promise((r) => setTimeout(r, 20));
    expect(await b!.tryAcquire(77)).toBeTypeOf("function");
    a!.close();
    b!.close();
  });

  it("forgets the claims of a gateway that stopped refreshing them", async () => {
    let now = Date.now();
    const crashed = createRedisSocketCaps({ redis, keyPrefix, maxPerUser: 1, claimTtlMs: 1_000, now: () => now });
    expect(await crashed.tryAcquire(88)).toBeTypeOf("function");
    crashed.close();
    const survivor = createRedisSocketCaps({ redis, keyPrefix, maxPerUser: 1, claimTtlMs: 1_000, now: () => now });
    expect(await survivor.tryAcquire(88)).toBeUndefined();
    now += 1_001;
    expect(await survivor.tryAcquire(88)).toBeTypeOf("function");
    survivor.close();
  });

  it("writes live claims back after Redis lost them (a restart or a flush), so they count again", async () => {
    const caps = createRedisSocketCaps({ redis, keyPrefix, maxPerUser: 1, claimTtlMs: 300 });
    const release = await caps.tryAcquire(99);
    expect(release).toBeTypeOf("function");
    await redis.del(`${keyPrefix}ws-sockets:99`);
    // The refresh runs every ttl/3: the live claim is back and the user is at the cap again.
    await new Promise((r) => setTimeout(r, 250));
    expect(await redis.zcard(`${keyPrefix}ws-sockets:99`)).toBe(1);
    expect(await caps.tryAcquire(99)).toBeUndefined();
    release?.();
    await new Promise((r) => setTimeout(r, 20));
    expect(await redis.zcard(`${keyPrefix}ws-sockets:99`)).toBe(0);
    caps.close();
  });
});
