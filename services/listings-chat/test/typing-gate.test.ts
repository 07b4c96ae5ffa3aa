import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { createMemoryTypingGate, createRedisTypingGate } from "../src/limits/typing-gate.ts";
import { redisNamespace, redisUrl } from "./support/redis.ts";

describe("typing gate in memory", () => {
  it("lets one frame per user and chat through every 2 s", async () => {
    let now = 10_000;
    const gate = createMemoryTypingGate(2_000, () => now);
    expect(await gate(1, 5)).toBe(true);
    expect(await gate(1, 5)).toBe(false);
    expect(await gate(1, 6)).toBe(true);
    expect(await gate(2, 5)).toBe(true);
    now += 1_999;
    expect(await gate(1, 5)).toBe(false);
    now += 1;
    expect(await gate(1, 5)).toBe(true);
  });
});

const url = redisUrl();

describe.runIf(url)("typing gate shared through Redis", () => {
  const ns = redisNamespace(url ?? "");
  const clients = [new Redis(url ?? ""), new Redis(url ?? "")];
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.quit()));
    await ns.drop();
  });

  it("lets one frame through per interval across instances", async () => {
    const [a, b] = clients.map((redis) => createRedisTypingGate(redis, ns.keyPrefix, 300));
    const first = await Promise.all([a!(7, 9), b!(7, 9), a!(7, 9), b!(7, 9)]);
    expect(first.filter(Boolean)).toHaveLength(1);
    expect(await b!(8, 9)).toBe(true);
    await new Promise((r) => setTimeout(r, 350));
    expect(await b!(7, 9)).toBe(true);
  });
});
