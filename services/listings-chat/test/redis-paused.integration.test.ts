/**
 * A Redis that stops answering (paused, partitioned) costs a caller at most the command timeout: the send
 * limit check answers an error in about 2 s instead of hanging for as long as Redis is gone.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { createRedisClient, redisCommandOptions } from "@listings-chat/shared/node";
import type { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSendLimiter } from "../src/limits/send-limiter.ts";

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

  it("makes the send limit fail within the command timeout, and work again once Redis is back", async () => {
    const limiter = createSendLimiter({ perMinute: 60, redis, keyPrefix: "paused-test:" });
    await limiter.consume(1);
    server.kill("SIGSTOP");
    const started = Date.now();
    const outcome = await limiter.consume(1).then(
      () => "allowed",
      (error: Error) => error.message,
    );
    const waited = Date.now() - started;
    server.kill("SIGCONT");
    expect(outcome).toMatch(/timed out/i);
    expect(waited).toBeGreaterThanOrEqual(redisCommandOptions.commandTimeout - 100);
    expect(waited).toBeLessThan(redisCommandOptions.commandTimeout + 1_500);
    await limiter.consume(1);
  }, 15_000);
});
