/**
 * A Redis that stops answering (paused, partitioned) costs a write at most the command timeout, once: the
 * rate limits (every bucket) then count in this instance alone for a few seconds, so that writes go on
 * (Redis is not a hard dependency of writing), and ask Redis again afterwards.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { createRedisClient, redisCommandOptions } from "@listings-chat/shared/node";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RateLimitedError } from "../src/errors.ts";
import { createRateLimiter, type LimitedWrite } from "../src/limits/rate-limiter.ts";

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });

// A Redis of this test's own (Debian's redis-server, on CI's machine as on this one): it is paused and
// resumed, which the shared one must never be.
describe("a paused Redis", () => {
  let server: ChildProcess;
  let redis: Redis;

  beforeAll(async () => {
    const port = await freePort();
    server = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      {
        stdio: "ignore",
      },
    );
    // The client the services use, with their options.
    redis = createRedisClient(`redis://127.0.0.1:${port}`);
    redis.on("error", () => {});
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (
        await redis.ping().then(
          () => true,
          () => false,
        )
      )
        return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error("the test's redis-server did not start");
  });

  afterAll(async () => {
    server?.kill("SIGCONT");
    redis?.disconnect();
    server?.kill("SIGKILL");
  });

  it("counts sends in this instance alone while Redis does not answer, so that sends go on; then Redis again", async () => {
    const unavailable: unknown[] = [];
    const writes: LimitedWrite[] = [];
    const limits = createRateLimiter({
      limits: { send: 3, edit: 2, chat_open: 2 },
      redis,
      keyPrefix: `paused-test:${Date.now()}:`,
      onRedisUnavailable: (error, write) => {
        unavailable.push(error);
        writes.push(write);
      },
    });
    const limiter = { consume: (userId: number) => limits.consume("send", userId) };
    await limiter.consume(1); // in Redis: 1 of 3
    server.kill("SIGSTOP");
    try {
      // The first send waits for the command timeout, then is counted here.
      const started = Date.now();
      await limiter.consume(1);
      const waited = Date.now() - started;
      expect(waited).toBeGreaterThanOrEqual(redisCommandOptions.commandTimeout - 100);
      expect(waited).toBeLessThan(redisCommandOptions.commandTimeout + 1_500);
      expect(unavailable).toHaveLength(1);
      expect(String(unavailable[0])).toMatch(/timed out/i);
      // The next ones do not wait at all, and the limit still holds, per instance.
      const quick = Date.now();
      await limiter.consume(1);
      await limiter.consume(1);
      expect(Date.now() - quick).toBeLessThan(100);
      await expect(limiter.consume(1)).rejects.toBeInstanceOf(RateLimitedError);
      expect(unavailable).toHaveLength(4);
      // The other buckets fail open the same way, at once, each with its own limit, and refund locally.
      const other = Date.now();
      await limits.consume("edit", 1);
      await limits.consume("edit", 1);
      await expect(limits.consume("edit", 1)).rejects.toThrow(/too many edits and deletes/);
      await limits.consume("chat_open", 1);
      await limits.refund("chat_open", 1);
      await limits.consume("chat_open", 1);
      await limits.consume("chat_open", 1);
      await expect(limits.consume("chat_open", 1)).rejects.toThrow(/too many new chats/);
      expect(Date.now() - other).toBeLessThan(100);
      expect(writes).toEqual([
        "send",
        "send",
        "send",
        "send",
        "edit",
        "edit",
        "edit",
        "chat_open",
        "chat_open",
        "chat_open",
        "chat_open",
      ]);
    } finally {
      server.kill("SIGCONT");
    }
    // After the fallback's 5 s, Redis is asked again and answers. The send that timed out reached Redis when
    // it woke (a timeout cannot take a command back), so Redis holds 1 or 2 of the user's 3.
    await new Promise((r) => setTimeout(r, 5_100));
    let allowed = 0;
    for (let i = 0; i < 3; i++) {
      const ok = await limiter.consume(1).then(
        () => true,
        (error: unknown) => {
          if (!(error instanceof RateLimitedError)) throw error;
          return false;
        },
      );
      if (!ok) break;
      allowed += 1;
    }
    expect(allowed).toBeGreaterThanOrEqual(1);
    expect(allowed).toBeLessThanOrEqual(2);
    expect(unavailable).toHaveLength(11);
  }, 30_000);
});
