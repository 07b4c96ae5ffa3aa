import { DevDefaults } from "@listings-chat/shared";
import fc from "fast-check";
import { Webhook } from "standardwebhooks";
import { describe, expect, it } from "vitest";
import { createSigner } from "../src/webhooks/signature.ts";

describe("webhook signatures", () => {
  it("are what the standardwebhooks package signs, and verify with it", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 24, maxLength: 64 }),
        fc.integer({ min: 1, max: 2 ** 40 }),
        fc.integer({ min: 1_600_000_000, max: 2_000_000_000 }),
        fc.oneof(fc.string({ unit: "grapheme" }), fc.json()),
        (key, id, timestampS, body) => {
          const secret = `whsec_${Buffer.from(key).toString("base64")}`;
          const webhookId = `msg_${id}`;
          const reference = new Webhook(secret);
          const ours = createSigner(secret)(webhookId, timestampS, body);
          expect(ours).toBe(reference.sign(webhookId, new Date(timestampS * 1000), body));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("verify with the package within its tolerance, and not with another key or body", () => {
    const sign = createSigner(DevDefaults.webhookSecret);
    const now = Math.floor(Date.now() / 1000);
    const body = JSON.stringify({ type: "message.created", timestamp: new Date().toISOString(), data: { é: "ü😀" } });
    const headers = {
      "webhook-id": "msg_7",
      "webhook-timestamp": String(now),
      "webhook-signature": sign("msg_7", now, body),
    };
    expect(new Webhook(DevDefaults.webhookSecret).verify(body, headers)).toEqual(JSON.parse(body));
    expect(() => new Webhook(`whsec_${Buffer.alloc(32, 1).toString("base64")}`).verify(body, headers)).toThrow();
    expect(() => new Webhook(DevDefaults.webhookSecret).verify(`${body} `, headers)).toThrow();
  });
});
