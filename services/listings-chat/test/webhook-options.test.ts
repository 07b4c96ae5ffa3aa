import { DevDefaults } from "@listings-chat/shared";
import { describe, expect, it } from "vitest";
import { ConfigError, loadChatConfig } from "../src/env.ts";
import { isWebhookSecret, retryDelayMs, splitCredentials } from "../src/webhooks/options.ts";
import { rowIdOf, webhookIdOf } from "../src/webhooks/outbox.ts";
import { describeFailure, leaseMsFor } from "../src/webhooks/sender.ts";

describe("webhook options", () => {
  it("waits about 5 s, then twice as long per failure up to 1 h, jittered between half and all of it", () => {
    const low = () => 0;
    const high = () => 1;
    expect([1, 2, 3, 4].map((n) => retryDelayMs(n, 5_000, 3_600_000, high))).toEqual([5_000, 10_000, 20_000, 40_000]);
    expect([1, 2, 3, 4].map((n) => retryDelayMs(n, 5_000, 3_600_000, low))).toEqual([2_500, 5_000, 10_000, 20_000]);
    // Capped: the 11th wait and every later one is at most an hour, and at least half of it.
    for (const n of [11, 12, 40, 1_000]) {
      expect(retryDelayMs(n, 5_000, 3_600_000, high)).toBe(3_600_000);
      expect(retryDelayMs(n, 5_000, 3_600_000, low)).toBe(1_800_000);
    }
    // Jitter spreads deliveries that failed together.
    const spread = new Set(Array.from({ length: 50 }, () => retryDelayMs(3, 5_000, 3_600_000)));
    expect(spread.size).toBeGreaterThan(10);
  });

  it("accepts Standard Webhooks secrets only", () => {
    expect(isWebhookSecret(DevDefaults.webhookSecret)).toBe(true);
    expect(isWebhookSecret(`whsec_${Buffer.alloc(32, 7).toString("base64")}`)).toBe(true);
    expect(isWebhookSecret(Buffer.alloc(32, 7).toString("base64"))).toBe(false);
    expect(isWebhookSecret(`whsec_${Buffer.alloc(8, 7).toString("base64")}`)).toBe(false);
    expect(isWebhookSecret("whsec_not base64!")).toBe(false);
  });

  it("reads the variables, requires a real secret in production, and refuses a maximum below the minimum", () => {
    const env = {
      WEBHOOK_URL: "https://monolith.example/hooks",
      WEBHOOK_RETRY_MIN_MS: "200",
      WEBHOOK_RETRY_MAX_MS: "2000",
    };
    const dev = loadChatConfig(env);
    expect(dev.webhooks).toMatchObject({
      url: "https://monolith.example/hooks",
      secret: DevDefaults.webhookSecret,
      timeoutMs: 5_000,
      maxAgeS: 86_400,
      notifyUnreadAfterS: 60,
      concurrency: 16,
      retryMinMs: 200,
      retryMaxMs: 2_000,
    });
    expect(dev.warnings.join(" ")).toMatch(/WEBHOOK_SECRET is not set/);
    expect(loadChatConfig({}).webhooks).toBeUndefined();
    const production = {
      NODE_ENV: "production",
      DATABASE_URL: "postgres://db/chat",
      INTERNAL_TOKEN: "x".repeat(40),
      WEBHOOK_URL: "https://monolith.example/hooks",
    };
    expect(() => loadChatConfig(production)).toThrow(/WEBHOOK_SECRET \(or WEBHOOK_SECRET_FILE\) is required/);
    expect(() => loadChatConfig({ ...production, WEBHOOK_SECRET: DevDefaults.webhookSecret })).toThrow(
      /development secret/,
    );
    expect(() => loadChatConfig({ ...env, WEBHOOK_SECRET: "secret" })).toThrow(ConfigError);
    expect(() => loadChatConfig({ ...env, WEBHOOK_RETRY_MAX_MS: "100" })).toThrow(/WEBHOOK_RETRY_MAX_MS \(100\)/);
    expect(() => loadChatConfig({ ...env, WEBHOOK_MAX_AGE_S: "0" })).toThrow(/WEBHOOK_MAX_AGE_S/);
    expect(() => loadChatConfig({ ...env, NOTIFY_UNREAD_AFTER_S: "0" })).toThrow(/NOTIFY_UNREAD_AFTER_S/);
    expect(() => loadChatConfig({ WEBHOOK_URL: "ftp://x/" })).toThrow(/WEBHOOK_URL/);
  });

  it("names deliveries msg_<id> and reads them back, nothing else", () => {
    expect(webhookIdOf(42)).toBe("msg_42");
    expect(rowIdOf("msg_42")).toBe(42);
    for (const bad of ["msg_0", "msg_-1", "42", "msg_4x", "msg_01", `msg_${"9".repeat(17)}`]) {
      expect(rowIdOf(bad), bad).toBeUndefined();
    }
  });

  it("leases a claim past its time-out, and words failures for the dead list", () => {
    expect(leaseMsFor(5_000)).toBe(20_000);
    expect(describeFailure(Object.assign(new Error("x"), { name: "TimeoutError" }), 500, false)).toBe(
      "timeout: no answer within 500 ms",
    );
    expect(describeFailure(Object.assign(new Error("x"), { cause: { code: "ECONNREFUSED" } }), 500, false)).toMatch(
      /connection refused/,
    );
    expect(
      describeFailure(Object.assign(new Error("other side closed"), { code: "UND_ERR_SOCKET" }), 500, false),
    ).toMatch(/closed the connection/);
    expect(describeFailure(new Error("x"), 500, true)).toMatch(/instance stopped/);
  });
});

describe("webhook URL credentials", () => {
  it("go as Basic authorization, and the URL without them", () => {
    expect(splitCredentials("https://hooks.example/chat?x=1")).toEqual({ url: "https://hooks.example/chat?x=1" });
    expect(splitCredentials("https://chat:p%40ss%3Aword@hooks.example:8443/in?x=1")).toEqual({
      url: "https://hooks.example:8443/in?x=1",
      authorization: `Basic ${Buffer.from("chat:p@ss:word").toString("base64")}`,
    });
  });
});
