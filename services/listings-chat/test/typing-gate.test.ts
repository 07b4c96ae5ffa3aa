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
    // Typing again right after stopping waits for the 2 s of the last "typing": a "stopped" does not reset them.
    expect(await gate(1, 5, true)).toBe(false);
    expect(await gate(1, 5, false)).toBe(false); // and that "typing" was not relayed: nothing to stop
    expect(await gate(1, 6, false)).toBe(false); // another chat's state is its own
    now += 1_900;
    expect(await gate(1, 5, true)).toBe(true);
    expect(await gate(1, 5, false)).toBe(true);
  });

  it("relays at most 2 'typing' and 2 'stopped' of 200 frames alternating over 2 s, and 1 + 1 within 2 s", async () => {
    let now = 10_000;
    const gate = createMemoryTypingGate(2_000, () => now);
    const relayed = { typing: 0, stopped: 0 };
    // 201 frames, one each 10 ms, from 0 to 2,000 ms inclusive: the span holds two intervals' starts.
    for (let i = 0; i <= 200; i++) {
      now = 10_000 + i * 10;
      const isTyping = i % 2 === 0;
      if (await gate(3, 5, isTyping)) relayed[isTyping ? "typing" : "stopped"] += 1;
      if (i === 199) expect(relayed).toEqual({ typing: 1, stopped: 1 }); // 0–1,990 ms: within one interval
    }
    expect(relayed).toEqual({ typing: 2, stopped: 1 });
    now += 10;
    expect(await gate(3, 5, false)).toBe(true);
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
    // A "stopped" does not reset the 2 s of the last "typing", on either instance.
    expect(await b!(17, 9, true)).toBe(false);
    expect(await a!(17, 9, true)).toBe(false);
  });

  it("relays one 'typing' and one 'stopped' of 200 frames alternating from two instances within 2 s", async () => {
    const [a, b] = clients.map((redis) => createRedisTypingGate(redis, ns.keyPrefix, 2_000));
    const started = performance.now();
    const relayed = { typing: 0, stopped: 0 };
    for (let i = 0; i < 200; i++) {
      const isTyping = i % 2 === 0;
      if (await (i % 4 < 2 ? a! : b!)(27, 9, isTyping)) relayed[isTyping ? "typing" : "stopped"] += 1;
    }
    // On a machine too busy to send 200 frames within 2 s, one more pair may pass: the bound is per interval.
    const intervals = Math.floor((performance.now() - started) / 2_000) + 1;
    expect(relayed.typing).toBeGreaterThanOrEqual(1);
    expect(relayed.typing).toBeLessThanOrEqual(intervals);
    expect(relayed.stopped).toBe(relayed.typing);
  });
});
