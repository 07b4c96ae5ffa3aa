import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { createMemoryTypingGate, createRedisTypingGate } from "../src/limits/typing-gate.ts";
import { redisNamespace, redisUrl } from "./support/redis.ts";

describe("typing gate in memory", () => {
  it("lets one frame per user and chat through every 2 s", async () => {
    let now = 10_000;
    const gate = createMemoryTypingGate(2_000, () => now);
    expect(await gate(1, 5, true)).toBe(true);
    expect(await gate(1, 5, true)).toBe(false);
    expect(await gate(1, 6, true)).toBe(true);
    expect(await gate(2, 5, true)).toBe(true);
    now += 1_999;
    expect(await gate(1, 5, true)).toBe(false);
    now += 1;
    expect(await gate(1, 5, true)).toBe(true);
  });

  it("lets 'stopped typing' through at once, once, and only after a 'typing' that went out", async () => {
    let now = 10_000;
    const gate = createMemoryTypingGate(2_000, () => now);
    expect(await gate(1, 5, false)).toBe(false); // nothing to stop
    expect(await gate(1, 5, true)).toBe(true);
    now += 100;
    expect(await gate(1, 5, false)).toBe(true); // within the 2 s of the "typing": a change of state
    expect(await gate(1, 5, false)).toBe(false); // a flood of "stopped" relays nothing more
    expect(await gate(1, 5, true)).toBe(true); // typing again right after stopping goes out at once
    expect(await gate(1, 6, false)).toBe(false); // another chat's state is its own
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
    const first = await Promise.all([a!(7, 9, true), b!(7, 9, true), a!(7, 9, true), b!(7, 9, true)]);
    expect(first.filter(Boolean)).toHaveLength(1);
    expect(await b!(8, 9, true)).toBe(true);
    await new Promise((r) => setTimeout(r, 350));
    expect(await b!(7, 9, true)).toBe(true);
  });

  it("relays one 'stopped typing' after a 'typing', from whichever instance, and then 'typing' at once", async () => {
    const [a, b] = clients.map((redis) => createRedisTypingGate(redis, ns.keyPrefix, 2_000));
    expect(await a!(17, 9, false)).toBe(false);
    expect(await a!(17, 9, true)).toBe(true);
    const stops = await Promise.all([a!(17, 9, false), b!(17, 9, false), b!(17, 9, false)]);
    expect(stops.filter(Boolean)).toHaveLength(1);
    expect(await b!(17, 9, true)).toBe(true);
    expect(await a!(17, 9, true)).toBe(false);
  });
});
